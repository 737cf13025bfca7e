/// `state` of `lifeguard_pool_connections`.
public enum PoolConnectionState: String, Sendable, CaseIterable {
    case idle
    case used
}

/// `state` of `lifeguard_client_connections`.
public enum ClientConnectionState: String, Sendable, CaseIterable {
    /// Holding a server connection.
    case active
    /// Waiting for a server connection.
    case waiting
    /// Connected, between transactions, holding nothing.
    case idle

    /// The position in `allCases`.
    public var index: Int {
        switch self {
        case .active: 0
        case .waiting: 1
        case .idle: 2
        }
    }
}

/// `reason` of `lifeguard_pool_connection_errors_total`.
public enum ConnectionErrorReason: String, Sendable, CaseIterable {
    /// The TCP connection to the server could not be made.
    case connect
    /// TLS to the server failed: refused by the server, or a certificate check failed (unknown CA, expired, name
    /// mismatch). The log and the waiting client get the reason in words.
    case tls
    /// The server refused the credentials.
    case auth
    /// Connecting took longer than the connect timeout.
    case timeout
    /// The server answered with an error that may pass (too many connections, starting up, shutting down).
    case server
    /// The server refused the login for good: the database does not exist, the role may not connect (3D000, 42501,
    /// ...). Clients are told at once.
    case rejected
    /// An established connection broke (reset, unexpected EOF, protocol error).
    case broken
}

/// `reason` of `lifeguard_pool_connections_closed_total`.
public enum ConnectionCloseReason: String, Sendable, CaseIterable {
    /// Older than `pool_recycle`.
    case recycle
    /// Unused for `idle_timeout`.
    case idle
    /// Failed the `pre_ping` check.
    case pingFailed = "ping_failed"
    /// Broken (also counted in `lifeguard_pool_connection_errors_total`).
    case error
    /// Given back unfit for another client: replies still owed (its client left mid-query), inside COPY.
    case dirty
    /// The commands that reset it for the next client failed.
    case resetFailed = "reset_failed"
    /// An overflow connection returned when the pool no longer needed it.
    case overflow
    /// Closed while draining or shutting down.
    case shutdown
}

/// `reason` of `lifeguard_client_rejected_total`.
public enum ClientRejectReason: String, Sendable, CaseIterable {
    /// `max_client_conn` client connections were already open.
    case maxClientConn = "max_client_conn"
    /// The client failed authentication.
    case auth
    /// The client spoke something that is not the PostgreSQL protocol, or a refused part of it.
    case `protocol`
}

/// `reason` of `lifeguard_metrics_requests_rejected_total`: why the metrics endpoint answered 401.
public enum MetricsRejectReason: String, Sendable, CaseIterable {
    /// The request carried no basic-auth credentials.
    case noCredentials = "no_credentials"
    /// The user is unknown or the password wrong (the two are not told apart, as in the answer).
    case unauthorized
}
