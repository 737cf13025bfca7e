import CMicroHTTPD
import LifeguardMetrics
import Synchronization
import WebConfig

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What `/readyz` answers.
public enum Readiness: Sendable, Hashable {
    /// 200 "ready".
    case ready
    /// 503 with the reason in the body.
    case notReady(reason: String)
}

/// The HTTP endpoint for Prometheus and the orchestrator's probes, served by libmicrohttpd on its own thread (epoll),
/// so that it keeps answering when the data path is saturated.
///
/// Routes: `GET /metrics` (the exposition of ``LifeguardMetrics``), `GET /healthz` (200 "ok" while the process
/// serves), `GET /readyz` (200 "ready" or 503 with the reason from the readiness closure). `HEAD` is answered like
/// `GET` without a body; other methods get 405 with `Allow: GET, HEAD`; other paths 404.
///
/// A ``WebConfiguration`` adds HTTPS (libmicrohttpd's GnuTLS: certificate, key, client CA, TLS versions, the client
/// certificate policy enforced in the handshake) and basic authentication on every path, probes included. A new one
/// (``update(webConfiguration:)``) starts a new daemon on the same listening socket, so that no connection attempt is
/// refused meanwhile; connections of the old daemon are closed.
public final class MetricsServer: Sendable {
    /// The address asked for, as given (an IP literal or a host name).
    public let host: String
    /// The port asked for; 0 lets the system choose (see ``port``).
    public let requestedPort: Int
    /// Connections served at once; further ones wait in the listen backlog until one closes.
    public let maxConnections: Int
    /// Idle time after which libmicrohttpd closes a connection.
    public let connectionTimeout: Duration

    private let metrics: LifeguardMetrics
    private let readiness: @Sendable () -> Readiness
    private let state: Mutex<State>

    private struct State {
        var webConfiguration: WebConfiguration?
        var phase: Phase = .stopped
    }

    private enum Phase {
        case stopped
        case running(Running)
    }

    /// A started daemon. The pointers are only touched under `state`'s lock or after being taken out of it.
    private struct Running: @unchecked Sendable {
        var daemon: OpaquePointer
        var handler: Unmanaged<RequestHandler>
        var port: Int
        /// C copies of the TLS material, freed after the daemon stops (libmicrohttpd keeps the pointers).
        var strings: [UnsafeMutablePointer<CChar>]

        func release() {
            self.handler.release()
            for string in self.strings {
                // The key is among them.
                memset(string, 0, strlen(string))
                free(string)
            }
        }
    }

    /// - Parameters:
    ///   - host: address to listen on; loopback by default so that nothing outside the pod or host sees it unless
    ///     configured.
    ///   - port: port to listen on; 0 lets the system choose.
    ///   - maxConnections: connections served at once (`MHD_OPTION_CONNECTION_LIMIT`); at the limit libmicrohttpd stops
    ///     accepting, so further connections wait in the listen backlog until one closes.
    ///   - connectionTimeout: idle time before a connection is closed (`MHD_OPTION_CONNECTION_TIMEOUT`, whole seconds,
    ///     rounded up).
    ///   - metrics: what `/metrics` renders.
    ///   - readiness: what `/readyz` answers. Called on libmicrohttpd's thread for every `/readyz` request: it must
    ///     return at once (a cached result), never block on I/O.
    ///   - webConfiguration: HTTPS and basic authentication; nil serves plain HTTP to anyone.
    public init(
        host: String = "127.0.0.1",
        port: Int,
        maxConnections: Int = 32,
        connectionTimeout: Duration = .seconds(10),
        metrics: LifeguardMetrics,
        readiness: @escaping @Sendable () -> Readiness,
        webConfiguration: WebConfiguration? = nil
    ) {
        self.host = host
        self.requestedPort = port
        self.maxConnections = maxConnections
        self.connectionTimeout = connectionTimeout
        self.metrics = metrics
        self.readiness = readiness
        self.state = Mutex(State(webConfiguration: webConfiguration))
    }

    deinit {
        self.stop()
    }

    /// The port being listened on while started, `nil` otherwise.
    public var port: Int? {
        self.state.withLock { state in
            guard case .running(let running) = state.phase else { return nil }
            return running.port
        }
    }

    /// Connections libmicrohttpd holds open now (0 when stopped).
    public var openConnections: Int {
        self.state.withLock { state in
            guard case .running(let running) = state.phase else { return 0 }
            return Int(lifeguard_mhd_current_connections(running.daemon))
        }
    }

    /// The web configuration in force.
    public var webConfiguration: WebConfiguration? {
        self.state.withLock { $0.webConfiguration }
    }

    /// Binds `host:port`, starts libmicrohttpd's thread and returns the bound port.
    ///
    /// - Throws: ``MetricsServerError`` naming the address when it cannot be resolved or bound, when libmicrohttpd
    ///   refuses the TLS material, or when the server is already started.
    @discardableResult
    public func start() throws(MetricsServerError) -> Int {
        try self.state.withLock { state throws(MetricsServerError) in
            if case .running(let running) = state.phase {
                throw MetricsServerError(.alreadyStarted, host: self.host, port: running.port)
            }
            try self.checkTLS(state.webConfiguration, port: self.requestedPort)
            let listener = try Listener.make(host: self.host, port: self.requestedPort)
            // The daemon listens on a duplicate of the socket.
            defer { close(listener.fd) }
            let running = try self.startDaemon(on: listener.fd, port: listener.port, state.webConfiguration)
            state.phase = .running(running)
            return listener.port
        }
    }

    /// Puts a new web configuration in force. While started, a new daemon takes over the listening socket
    /// (`MHD_quiesce_daemon`) and the old one stops, closing its connections: libmicrohttpd cannot swap TLS material
    /// in a running daemon. If libmicrohttpd refuses the new configuration, the old one goes on serving and this
    /// throws. Nothing happens when the configuration is unchanged.
    public func update(webConfiguration: WebConfiguration?) throws(MetricsServerError) {
        let retired = try self.state.withLock { state throws(MetricsServerError) -> Running? in
            guard state.webConfiguration != webConfiguration else { return nil }
            guard case .running(let old) = state.phase else {
                state.webConfiguration = webConfiguration
                return nil
            }
            // Before anything changes: what GnuTLS refuses leaves the daemon in service alone.
            try self.checkTLS(webConfiguration, port: old.port)
            let fd = MHD_quiesce_daemon(old.daemon)
            guard fd >= 0 else {
                throw MetricsServerError(.daemonFailed, host: self.host, port: old.port)
            }
            // Quiesced, the old daemon no longer owns the socket; the new one listens on a duplicate.
            defer { close(fd) }
            do throws(MetricsServerError) {
                let running = try self.startDaemon(on: fd, port: old.port, webConfiguration)
                state.phase = .running(running)
                state.webConfiguration = webConfiguration
                return old
            } catch {
                // The old daemon no longer accepts: serve its configuration from a new one.
                if let fallback = try? self.startDaemon(on: fd, port: old.port, state.webConfiguration) {
                    state.phase = .running(fallback)
                } else {
                    state.phase = .stopped
                }
                MHD_stop_daemon(old.daemon)
                old.release()
                throw error
            }
        }
        guard let retired else { return }
        // Outside the lock: MHD_stop_daemon joins the thread that runs the request callback.
        MHD_stop_daemon(retired.daemon)
        retired.release()
    }

    /// Throws ``MetricsServerError`` when GnuTLS refuses the certificate, key, client CA or TLS versions.
    private func checkTLS(_ webConfiguration: WebConfiguration?, port: Int) throws(MetricsServerError) {
        guard let tls = webConfiguration?.tls else { return }
        let status = lifeguard_gnutls_check(
            tls.certificate.pem,
            tls.privateKey.pem,
            tls.clientCA?.pem,
            tls.gnuTLSPriorities
        )
        guard status == 0 else {
            throw MetricsServerError(
                .tlsRefused(String(cString: gnutls_strerror(status))),
                host: self.host,
                port: port
            )
        }
    }

    /// Starts libmicrohttpd on a duplicate of `fd`, which the daemon closes when stopped (unless quiesced first);
    /// `fd` itself stays the caller's.
    private func startDaemon(
        on fd: Int32,
        port: Int,
        _ webConfiguration: WebConfiguration?
    ) throws(MetricsServerError) -> Running {
        let owned = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard owned >= 0 else { throw MetricsServerError(.cannotListen(errno), host: self.host, port: port) }
        let handler = Unmanaged.passRetained(
            RequestHandler(metrics: self.metrics, readiness: self.readiness, webConfiguration: webConfiguration)
        )
        // MHD_USE_ITC: needed by MHD_quiesce_daemon, which hands the socket to the next daemon on reload.
        var flags =
            MHD_USE_INTERNAL_POLLING_THREAD.rawValue | MHD_USE_EPOLL.rawValue | MHD_USE_ERROR_LOG.rawValue
            | MHD_USE_ITC.rawValue
        let timeout = self.connectionTimeout.components
        let timeoutSeconds = UInt32(clamping: max(timeout.seconds + (timeout.attoseconds > 0 ? 1 : 0), 1))
        let limit = UInt32(clamping: max(self.maxConnections, 1))
        var strings: [UnsafeMutablePointer<CChar>] = []
        let daemon: OpaquePointer?
        if let tls = webConfiguration?.tls {
            flags |= MHD_USE_TLS.rawValue
            let certificate = strdup(tls.certificate.pem)!
            let key = strdup(tls.privateKey.pem)!
            let priorities = strdup(tls.gnuTLSPriorities)!
            let trust = tls.clientCA.map { strdup($0.pem)! }
            strings = [certificate, key, priorities] + (trust.map { [$0] } ?? [])
            daemon = lifeguard_mhd_start_tls_daemon(
                flags,
                owned,
                limit,
                timeoutSeconds,
                handleRequest,
                handler.toOpaque(),
                certificate,
                key,
                trust,
                priorities,
                RequestHandler.clientAuth(tls.clientAuthType)
            )
        } else {
            daemon = lifeguard_mhd_start_daemon(flags, owned, limit, timeoutSeconds, handleRequest, handler.toOpaque())
        }
        guard let daemon else {
            // Some failures close the socket given, some do not (checkTLS makes any of them unlikely).
            if fcntl(owned, F_GETFD) != -1 { close(owned) }
            handler.release()
            for string in strings {
                memset(string, 0, strlen(string))
                free(string)
            }
            throw MetricsServerError(
                webConfiguration?.tls == nil ? .daemonFailed : .tlsFailed,
                host: self.host,
                port: port
            )
        }
        return Running(daemon: daemon, handler: handler, port: port, strings: strings)
    }

    /// Stops answering and closes the listening socket. Returns once libmicrohttpd's thread has ended; calling it
    /// when stopped does nothing. The server may be started again.
    public func stop() {
        let running = self.state.withLock { state -> Running? in
            guard case .running(let running) = state.phase else { return nil }
            state.phase = .stopped
            return running
        }
        guard let running else { return }
        // Outside the lock: MHD_stop_daemon joins the thread that runs the request callback.
        MHD_stop_daemon(running.daemon)
        // Only now is no callback left that could use the handler.
        running.release()
    }
}

/// Why the metrics server could not start.
public struct MetricsServerError: Error, CustomStringConvertible, Sendable {
    enum Code: Sendable {
        case cannotResolve(String)
        case cannotBind(Int32)
        case cannotListen(Int32)
        case daemonFailed
        case tlsFailed
        case tlsRefused(String)
        case alreadyStarted
    }

    let code: Code
    /// The address asked for.
    public let host: String
    public let port: Int

    init(_ code: Code, host: String, port: Int) {
        self.code = code
        self.host = host
        self.port = port
    }

    /// `host:port`, with IPv6 literals bracketed.
    public var address: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }

    public var description: String {
        switch self.code {
        case .cannotResolve(let reason):
            return "metrics server: cannot resolve listen address \(self.address): \(reason)"
        case .cannotBind(let error):
            return "metrics server: cannot bind \(self.address): \(String(cString: strerror(error)))"
        case .cannotListen(let error):
            return "metrics server: cannot listen on \(self.address): \(String(cString: strerror(error)))"
        case .daemonFailed:
            return "metrics server: libmicrohttpd failed to start on \(self.address)"
        case .tlsRefused(let reason):
            return "metrics server: GnuTLS refused the web configuration's TLS material for \(self.address): \(reason)"
        case .tlsFailed:
            return "metrics server: libmicrohttpd (GnuTLS) refused the certificate, key or client CA on \(self.address)"
        case .alreadyStarted:
            return "metrics server: already started on \(self.address)"
        }
    }
}
