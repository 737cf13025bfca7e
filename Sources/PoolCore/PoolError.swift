/// Why a server connection failed or broke; the `reason` label of `lifeguard_pool_connection_errors_total`.
public enum ConnectionErrorReason: String, CaseIterable, Sendable {
    /// The TCP connection could not be made or was refused.
    case connect
    /// TLS could not be set up: the server refused it, or its certificate failed a check (unknown CA, expired, name
    /// mismatch).
    case tls
    /// The server rejected the credentials.
    case auth
    /// Connecting or a check took too long.
    case timeout
    /// The server answered with an error that may pass (too many connections, starting up).
    case server
    /// The server refused the login for good: the database does not exist, the role may not connect, and the like.
    case rejected
    /// An open connection stopped working (closed by the server, a failed read or write).
    case broken
}

/// Why the pool closed a server connection; the `reason` label of `lifeguard_pool_connections_closed_total`.
public enum CloseReason: String, CaseIterable, Sendable {
    /// Older than `pool_recycle`.
    case recycle
    /// Idle longer than `idle_timeout` while above `min_size`.
    case idle
    /// The pre-ping check failed.
    case pingFailed = "ping_failed"
    /// Reported broken.
    case error
    /// Given back unfit for another client: replies still owed (its client left mid-query), inside COPY, or a
    /// command was still running.
    case dirty
    /// The commands that reset it for the next client (`ROLLBACK`, `reset_query`, `DEALLOCATE ALL`) failed.
    case resetFailed = "reset_failed"
    /// Not needed: `pool_size` connections are already idle, or the pool is above its (reduced) limit.
    case overflow
    /// The pool is shutting down.
    case shutdown
}

/// A failed attempt to open a server connection, as reported by the connection factory.
public struct ConnectError: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: ConnectionErrorReason
    /// What went wrong, safe to show to a client (no password).
    public var message: String
    /// The SQLSTATE of the server's ErrorResponse, when the server refused the connection with one.
    public var sqlState: String?
    /// The same attempt would fail the same way (a wrong password, a database that does not exist): clients
    /// waiting for a connection are told at once instead of waiting out the retries.
    public var isPermanent: Bool

    public init(reason: ConnectionErrorReason, message: String, sqlState: String? = nil, isPermanent: Bool = false) {
        self.reason = reason
        self.message = message
        self.sqlState = sqlState
        self.isPermanent = isPermanent
    }

    public var description: String { "\(self.reason.rawValue): \(self.message)" }
}

/// Why a client's request for a server connection failed. ``message`` is what the client sees.
public struct PoolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kind of failure, for the proxy to choose a SQLSTATE.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case timeout
            case connectFailed
            case shuttingDown
            case cancelled
            case refused
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// No connection became available within `pool_timeout`.
        public static let timeout = Code(.timeout)
        /// `pool_timeout` passed while connecting to the server kept failing; ``PoolError/connectError`` says why.
        public static let connectFailed = Code(.connectFailed)
        /// The pool is shutting down and hands out nothing.
        public static let shuttingDown = Code(.shuttingDown)
        /// The request was cancelled by its owner (the client went away).
        public static let cancelled = Code(.cancelled)
        /// The server refused a new connection for good (``ConnectError/isPermanent``); ``PoolError/connectError``
        /// carries its SQLSTATE and message.
        public static let refused = Code(.refused)

        public var description: String { self.base.rawValue }
    }

    public var code: Code
    /// A complete sentence naming the pool and the setting to change.
    public var message: String
    /// The last connect error, for ``Code/connectFailed`` and ``Code/refused``.
    public var connectError: ConnectError?

    public init(code: Code, message: String, connectError: ConnectError? = nil) {
        self.code = code
        self.message = message
        self.connectError = connectError
    }

    public var description: String { self.message }
}
