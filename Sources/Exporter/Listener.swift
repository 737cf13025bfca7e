#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A bound, listening, non-blocking TCP socket handed to libmicrohttpd (`MHD_OPTION_LISTEN_SOCKET`), which closes it
/// in `MHD_stop_daemon`.
///
/// Binding here rather than in libmicrohttpd gives the errno, so a failure can name the address and the reason.
struct Listener {
    let fd: Int32
    let port: Int

    static func make(host: String, port: Int) throws(MetricsServerError) -> Listener {
        guard (0...65535).contains(port) else {
            throw MetricsServerError(.cannotResolve("port out of range"), host: host, port: port)
        }
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var results: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &results)
        guard status == 0, let first = results else {
            throw MetricsServerError(.cannotResolve(String(cString: gai_strerror(status))), host: host, port: port)
        }
        defer { freeaddrinfo(first) }

        // The first address that binds wins; remember the last error to report if none does.
        var lastError = MetricsServerError(.cannotBind(EADDRNOTAVAIL), host: host, port: port)
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let info = next {
            next = info.pointee.ai_next
            do {
                return try Self.make(info.pointee, host: host, port: port)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    private static func make(_ info: addrinfo, host: String, port: Int) throws(MetricsServerError) -> Listener {
        let fd = socket(info.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw MetricsServerError(.cannotBind(errno), host: host, port: port) }
        var one: Int32 = 1
        // A restarted sidecar must get its port back while old connections sit in TIME_WAIT.
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.ai_addr, info.ai_addrlen) == 0 else {
            let error = errno
            close(fd)
            throw MetricsServerError(.cannotBind(error), host: host, port: port)
        }
        guard listen(fd, SOMAXCONN) == 0 else {
            let error = errno
            close(fd)
            throw MetricsServerError(.cannotListen(error), host: host, port: port)
        }
        // libmicrohttpd's epoll loop accepts until EAGAIN.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return Listener(fd: fd, port: Self.localPort(fd) ?? port)
    }

    private static func localPort(_ fd: Int32) -> Int? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard status == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: storage) { Int(UInt16(bigEndian: $0.load(as: sockaddr_in.self).sin_port)) }
        case AF_INET6:
            return withUnsafeBytes(of: storage) { Int(UInt16(bigEndian: $0.load(as: sockaddr_in6.self).sin6_port)) }
        default:
            return nil
        }
    }
}
