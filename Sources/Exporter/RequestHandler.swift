import CMicroHTTPD
import LifeguardMetrics

/// What the request callback needs, passed to libmicrohttpd as its `cls` pointer. Immutable: the callback runs on
/// libmicrohttpd's thread and takes no lock of the server's.
final class RequestHandler: Sendable {
    let metrics: LifeguardMetrics
    let readiness: @Sendable () -> Readiness

    init(metrics: LifeguardMetrics, readiness: @escaping @Sendable () -> Readiness) {
        self.metrics = metrics
        self.readiness = readiness
    }

    /// A response before it is handed to libmicrohttpd.
    struct Response {
        var status: UInt32
        var contentType: String
        var body: [UInt8]
        var headers: [(String, String)] = []

        static func text(_ status: UInt32, _ text: String, headers: [(String, String)] = []) -> Response {
            Response(status: status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8), headers: headers)
        }
    }

    static let routes: Set<String> = ["/metrics", "/healthz", "/readyz"]

    /// Routes one request. `HEAD` is answered like `GET`; libmicrohttpd leaves the body out.
    func respond(method: String, path: String) -> Response {
        guard Self.routes.contains(path) else {
            return .text(404, "not found\n")
        }
        guard method == "GET" || method == "HEAD" else {
            return .text(405, "method not allowed\n", headers: [("Allow", "GET, HEAD")])
        }
        switch path {
        case "/metrics":
            var body: [UInt8] = []
            body.reserveCapacity(16 * 1024)
            self.metrics.render(into: &body)
            return Response(status: 200, contentType: LifeguardMetrics.contentType, body: body)
        case "/readyz":
            switch self.readiness() {
            case .ready:
                return .text(200, "ready\n")
            case .notReady(let reason):
                return .text(503, "not ready: \(reason)\n")
            }
        default:
            return .text(200, "ok\n")
        }
    }
}

/// libmicrohttpd's access handler. A C function pointer cannot capture, so the handler comes through `cls`.
///
/// libmicrohttpd calls it first with the headers only: queuing a response then would make it answer with
/// `Connection: close`, so the first call only marks `*con_cls` and the answer goes out on the next one, which keeps
/// scrapes on one connection. Request bodies are read and ignored.
let handleRequest: MHD_AccessHandlerCallback = { cls, connection, url, method, _, _, uploadDataSize, conCls in
    guard let cls, let connection, let url, let method, let conCls else { return .NO }
    if conCls.pointee == nil {
        // Any non-null value will do: nothing is allocated, so there is nothing to free on completion.
        conCls.pointee = UnsafeMutableRawPointer(bitPattern: 1)
        return .YES
    }
    if let uploadDataSize, uploadDataSize.pointee != 0 {
        uploadDataSize.pointee = 0
        return .YES
    }
    let handler = Unmanaged<RequestHandler>.fromOpaque(cls).takeUnretainedValue()
    let response = handler.respond(method: String(cString: method), path: String(cString: url))
    return queue(response, on: connection)
}

private func queue(_ response: RequestHandler.Response, on connection: OpaquePointer) -> MHD_Result {
    let mhdResponse = response.body.withUnsafeBytes { bytes in
        MHD_create_response_from_buffer(
            bytes.count,
            UnsafeMutableRawPointer(mutating: bytes.baseAddress),
            .RESPMEM_MUST_COPY
        )
    }
    guard let mhdResponse else { return .NO }
    defer { MHD_destroy_response(mhdResponse) }
    _ = MHD_add_response_header(mhdResponse, "Content-Type", response.contentType)
    for (name, value) in response.headers {
        _ = MHD_add_response_header(mhdResponse, name, value)
    }
    return MHD_queue_response(connection, response.status, mhdResponse)
}
