import CMicroHTTPD
import LifeguardMetrics
import Synchronization

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
public final class MetricsServer: Sendable {
    /// The address asked for, as given (an IP literal or a host name).
    public let host: String
    /// The port asked for; 0 lets the system choose (see ``port``).
    public let requestedPort: Int
    /// Connections served at once; further ones wait in the listen backlog until one closes.
    public let maxConnections: Int
    /// Idle time after which libmicrohttpd closes a connection.
    public let connectionTimeout: Duration

    private let handler: RequestHandler
    private let state = Mutex<State>(.stopped)

    private enum State {
        case stopped
        case running(Running)
    }

    /// A started daemon. The pointers are only touched under `state`'s lock or after being taken out of it.
    private struct Running: @unchecked Sendable {
        var daemon: OpaquePointer
        var handler: Unmanaged<RequestHandler>
        var port: Int
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
    public init(
        host: String = "127.0.0.1",
        port: Int,
        maxConnections: Int = 32,
        connectionTimeout: Duration = .seconds(10),
        metrics: LifeguardMetrics,
        readiness: @escaping @Sendable () -> Readiness
    ) {
        self.host = host
        self.requestedPort = port
        self.maxConnections = maxConnections
        self.connectionTimeout = connectionTimeout
        self.handler = RequestHandler(metrics: metrics, readiness: readiness)
    }

    deinit {
        self.stop()
    }

    /// The port being listened on while started, `nil` otherwise.
    public var port: Int? {
        self.state.withLock { state in
            guard case .running(let running) = state else { return nil }
            return running.port
        }
    }

    /// Connections libmicrohttpd holds open now (0 when stopped).
    public var openConnections: Int {
        self.state.withLock { state in
            guard case .running(let running) = state else { return 0 }
            return Int(lifeguard_mhd_current_connections(running.daemon))
        }
    }

    /// Binds `host:port`, starts libmicrohttpd's thread and returns the bound port.
    ///
    /// - Throws: ``MetricsServerError`` naming the address when it cannot be resolved or bound, or when the server
    ///   is already started.
    @discardableResult
    public func start() throws(MetricsServerError) -> Int {
        try self.state.withLock { state throws(MetricsServerError) in
            if case .running(let running) = state {
                throw MetricsServerError(.alreadyStarted, host: self.host, port: running.port)
            }
            let listener = try Listener.make(host: self.host, port: self.requestedPort)
            let handler = Unmanaged.passRetained(self.handler)
            let flags = MHD_USE_INTERNAL_POLLING_THREAD.rawValue | MHD_USE_EPOLL.rawValue | MHD_USE_ERROR_LOG.rawValue
            let timeout = self.connectionTimeout.components
            let timeoutSeconds = timeout.seconds + (timeout.attoseconds > 0 ? 1 : 0)
            guard
                let daemon = lifeguard_mhd_start_daemon(
                    flags,
                    listener.fd,
                    UInt32(clamping: max(self.maxConnections, 1)),
                    UInt32(clamping: max(timeoutSeconds, 1)),
                    handleRequest,
                    handler.toOpaque()
                )
            else {
                handler.release()
                close(listener.fd)
                throw MetricsServerError(.daemonFailed, host: self.host, port: listener.port)
            }
            state = .running(Running(daemon: daemon, handler: handler, port: listener.port))
            return listener.port
        }
    }

    /// Stops answering and closes the listening socket. Returns once libmicrohttpd's thread has ended; calling it
    /// when stopped does nothing. The server may be started again.
    public func stop() {
        let running = self.state.withLock { state -> Running? in
            guard case .running(let running) = state else { return nil }
            state = .stopped
            return running
        }
        guard let running else { return }
        // Outside the lock: MHD_stop_daemon joins the thread that runs the request callback.
        MHD_stop_daemon(running.daemon)
        // Only now is no callback left that could use the handler.
        running.handler.release()
    }
}

/// Why the metrics server could not start.
public struct MetricsServerError: Error, CustomStringConvertible, Sendable {
    enum Code: Sendable {
        case cannotResolve(String)
        case cannotBind(Int32)
        case cannotListen(Int32)
        case daemonFailed
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
        case .alreadyStarted:
            return "metrics server: already started on \(self.address)"
        }
    }
}
