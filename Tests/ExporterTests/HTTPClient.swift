import Glibc

/// A minimal HTTP/1.1 client over a blocking loopback socket: enough to see exactly what the server sends (status,
/// headers, body, whether the connection stays open).
final class HTTPConnection {
    struct Response {
        var status: Int
        /// Header names lowercased.
        var headers: [String: String]
        var body: String
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        /// Nothing arrived within the receive timeout.
        var timedOut = false
    }

    private let fd: Int32
    private var buffered: [UInt8] = []

    init(port: Int, receiveTimeout: Duration = .seconds(5)) throws {
        self.fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard self.fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        self.setReceiveTimeout(receiveTimeout)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(self.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard status == 0 else {
            let error = errno
            close(self.fd)
            throw Failure(description: "connect to 127.0.0.1:\(port): \(String(cString: strerror(error)))")
        }
    }

    /// How long a read waits before giving up (whole seconds).
    func setReceiveTimeout(_ timeout: Duration) {
        var value = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        _ = setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        close(self.fd)
    }

    /// Sends one request and reads one response. `HEAD` responses have no body whatever Content-Length says.
    func request(_ method: String, _ path: String, body: String = "") throws -> Response {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if !body.isEmpty { request += "Content-Length: \(body.utf8.count)\r\n" }
        request += "\r\n\(body)"
        try self.send(request)
        return try self.readResponse(hasBody: method != "HEAD")
    }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes {
                Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard count > 0 else { throw Failure(description: "send: \(String(cString: strerror(errno)))") }
            sent += count
        }
    }

    /// True when the server has closed the connection (EOF or reset) within the receive timeout.
    func isClosedByServer() -> Bool {
        (try? self.fill()) == false
    }

    /// True when nothing arrives (and the connection stays open) for the receive timeout.
    func staysSilent() -> Bool {
        do {
            _ = try self.fill()
            return false
        } catch {
            return error.timedOut
        }
    }

    /// Reads the response to a request sent earlier.
    func response() throws -> Response {
        try self.readResponse(hasBody: true)
    }

    private func readResponse(hasBody: Bool) throws -> Response {
        let separator = Array("\r\n\r\n".utf8)
        var headerEnd: Int?
        while headerEnd == nil {
            headerEnd = self.buffered.indices.dropLast(3).first { Array(self.buffered[$0..<$0 + 4]) == separator }
            if headerEnd == nil, try !self.fill() { throw Failure(description: "connection closed before headers") }
        }
        let head = String(decoding: self.buffered[..<headerEnd!], as: UTF8.self)
        self.buffered.removeFirst(headerEnd! + 4)
        var lines = head.split(separator: "\r\n").map(String.init)
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else {
            throw Failure(description: "bad status line in \(head)")
        }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let value = line[line.index(after: colon)...].drop { $0 == " " }
            headers[line[..<colon].lowercased()] = String(value)
        }
        var body: [UInt8] = []
        if hasBody {
            if let length = headers["content-length"].flatMap(Int.init) {
                while self.buffered.count < length {
                    guard try self.fill() else { throw Failure(description: "connection closed inside the body") }
                }
                body = Array(self.buffered.prefix(length))
                self.buffered.removeFirst(length)
            } else {
                while try self.fill() {}
                body = self.buffered
                self.buffered = []
            }
        }
        return Response(status: status, headers: headers, body: String(decoding: body, as: UTF8.self))
    }

    /// Reads more bytes; false on EOF or reset.
    private func fill() throws(Failure) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let count = chunk.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
        if count > 0 {
            self.buffered.append(contentsOf: chunk[..<count])
            return true
        }
        let error = errno
        if count == 0 || error == ECONNRESET { return false }
        throw Failure(
            description: "recv: \(String(cString: strerror(error)))",
            timedOut: error == EAGAIN || error == EWOULDBLOCK
        )
    }

    /// One request on a fresh connection.
    static func get(port: Int, _ path: String, method: String = "GET") throws -> Response {
        try HTTPConnection(port: port).request(method, path)
    }
}
