import CMicroHTTPD
import LifeguardMetrics
import WebConfig

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the request callback needs, passed to libmicrohttpd as its `cls` pointer. Immutable (one per daemon: a new
/// web configuration starts a new daemon with a new handler): the callback runs on libmicrohttpd's thread and takes no
/// lock of the server's.
final class RequestHandler: Sendable {
    let metrics: LifeguardMetrics
    let readiness: @Sendable () -> Readiness
    /// nil: no `basic_auth_users`, every request is answered.
    let authenticator: BasicAuthenticator?
    /// The `client_auth_type` the handshake enforced, checked once more per request.
    let clientAuth: lifeguard_client_auth

    init(
        metrics: LifeguardMetrics,
        readiness: @escaping @Sendable () -> Readiness,
        webConfiguration: WebConfiguration? = nil
    ) {
        self.metrics = metrics
        self.readiness = readiness
        let users = webConfiguration?.basicAuthUsers ?? [:]
        self.authenticator = users.isEmpty ? nil : BasicAuthenticator(users: users)
        self.clientAuth = webConfiguration?.tls.map { Self.clientAuth($0.clientAuthType) } ?? LIFEGUARD_CLIENT_AUTH_NONE
    }

    static func clientAuth(_ type: ClientAuthType) -> lifeguard_client_auth {
        switch type {
        case .noClientCert: LIFEGUARD_CLIENT_AUTH_NONE
        case .requestClientCert: LIFEGUARD_CLIENT_AUTH_REQUEST
        case .requireAnyClientCert: LIFEGUARD_CLIENT_AUTH_REQUIRE_ANY
        case .verifyClientCertIfGiven: LIFEGUARD_CLIENT_AUTH_VERIFY_IF_GIVEN
        case .requireAndVerifyClientCert: LIFEGUARD_CLIENT_AUTH_REQUIRE_AND_VERIFY
        }
    }

    /// Why a request with these basic-auth credentials (nil: none sent) is refused, or nil to answer it. Every path
    /// is protected, the probes included, as in exporter-toolkit. A refusal is counted.
    func refusal(user: String?, password: String?) -> MetricsRejectReason? {
        guard let authenticator = self.authenticator else { return nil }
        guard let user, let password else {
            self.metrics.metricsRequestRejected(reason: .noCredentials)
            return .noCredentials
        }
        guard authenticator.check(user: user, password: password) else {
            self.metrics.metricsRequestRejected(reason: .unauthorized)
            return .unauthorized
        }
        return nil
    }

    /// The realm of `WWW-Authenticate: Basic realm="..."`.
    static let realm = "Lifeguard"

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
    // The handshake enforced client_auth_type already; a connection that slipped through is closed unanswered.
    guard lifeguard_mhd_client_certificate_ok(connection, handler.clientAuth) != 0 else { return .NO }
    if handler.authenticator != nil {
        var password: UnsafeMutablePointer<CChar>? = nil
        let user = MHD_basic_auth_get_username_password(connection, &password)
        defer {
            if let password {
                // Scrub the copy libmicrohttpd made before giving it back.
                memset(password, 0, strlen(password))
                MHD_free(password)
            }
            if let user { MHD_free(user) }
        }
        if handler.refusal(user: user.map { String(cString: $0) }, password: password.map { String(cString: $0) })
            != nil
        {
            return queueUnauthorized(on: connection)
        }
    }
    let response = handler.respond(method: String(cString: method), path: String(cString: url))
    return queue(response, on: connection)
}

/// 401 with `WWW-Authenticate: Basic realm="Lifeguard"`, added by libmicrohttpd.
private func queueUnauthorized(on connection: OpaquePointer) -> MHD_Result {
    let body = Array("unauthorized\n".utf8)
    let mhdResponse = body.withUnsafeBytes { bytes in
        MHD_create_response_from_buffer(
            bytes.count,
            UnsafeMutableRawPointer(mutating: bytes.baseAddress),
            .RESPMEM_MUST_COPY
        )
    }
    guard let mhdResponse else { return .NO }
    defer { MHD_destroy_response(mhdResponse) }
    _ = MHD_add_response_header(mhdResponse, "Content-Type", "text/plain; charset=utf-8")
    return MHD_queue_basic_auth_fail_response(connection, RequestHandler.realm, mhdResponse)
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
