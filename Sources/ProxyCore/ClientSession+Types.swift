import NIOCore
import PGWire
import PoolCore

/// A server connection as the session sees it: an opaque reference that the actions hand back to the I/O layer.
public typealias ServerReference = AnyObject & Sendable

/// What a logged-in client is doing, for the client gauges: holding a server connection, waiting for one, or neither.
public enum ClientActivity: Sendable, Equatable {
    case active
    case waiting
    case idle
}

/// Why a client was turned away, for `lifeguard_client_rejected_total{reason}`.
public enum ClientRejection: Sendable, Equatable {
    case maxClientConn
    case auth
    case `protocol`
}

/// What the I/O layer found out about a client's StartupMessage: may it log in, and how.
public enum ClientAdmission: Sendable {
    /// Lifeguard is shutting down.
    case draining
    /// `max_client_conn` clients are logged in already.
    case tooManyClients(max: Int)
    /// No pool serves this database (the message says why).
    case noRoute(database: String, message: String)
    /// `auth_type = cert`: no client certificate, or one for another user (the message says which).
    case certificateRefused(message: String)
    /// The user's secret could not be looked up (`auth_query`: its database unreachable, the query failing); the
    /// message says why, without a secret, and the client gets it as a FATAL 08006.
    case lookupFailed(message: String)
    /// Refused for a reason of the I/O layer's (a database `DISABLE`d on the admin console): FATAL with this SQLSTATE.
    case refused(sqlState: String, message: String)
    /// Admitted to its pool. Boxed: the login is large, and the I/O layer queues admissions with its other events.
    indirect case admitted(ClientLogin)
}

/// The pool a client was admitted to and how it authenticates.
public struct ClientLogin: Sendable {
    public var mode: PoolMode
    public var authentication: PGServerAuthenticationStateMachine
    /// The startup ParameterStatus set of the pool's servers, once one reported it: in transaction and statement
    /// mode a client is greeted with it without waiting for a server connection.
    public var cachedParameters: [(name: String, value: String)]?
    /// How the pool's server spells values clients asked for (parameter → asked → reported, ``ParameterSpellings``):
    /// a client greeted from ``cachedParameters`` is told what PostgreSQL would have said (`UTF8` for `utf8`).
    public var spellings: ParameterSpellings
    /// The BackendKeyData Lifeguard gives the client (its CancelRequest finds the server connection it holds).
    public var cancelKey: PGCancelRequest
    public var resetQuery: String?
    /// A login to the admin console (the virtual database `pgbouncer`) instead of a pool; nil for pool clients.
    public var console: ConsoleLogin?
    /// The pool's encoded greetings, shared by its clients; nil: each greeting is encoded.
    public var greetings: GreetingCache?

    public init(
        mode: PoolMode,
        authentication: PGServerAuthenticationStateMachine,
        cachedParameters: [(name: String, value: String)]?,
        spellings: ParameterSpellings = ParameterSpellings(),
        cancelKey: PGCancelRequest,
        resetQuery: String?,
        console: ConsoleLogin? = nil,
        greetings: GreetingCache? = nil
    ) {
        self.console = console
        self.greetings = greetings
        self.spellings = spellings
        self.mode = mode
        self.authentication = authentication
        self.cachedParameters = cachedParameters
        self.cancelKey = cancelKey
        self.resetQuery = resetQuery
    }
}

/// How a client of the admin console goes on once it authenticated (as any client does).
public enum ConsoleLogin: Sendable {
    /// Greeted with these ParameterStatus values; each query then goes to the I/O layer
    /// (``ClientAction/consoleQuery(_:)``), one at a time, and its answer comes back through
    /// ``ClientSession/consoleAnswered(_:into:)``.
    case allowed(greeting: [(name: String, value: String)])
    /// Refused once authenticated (FATAL 28000 with this message): the user is in neither `admin_users` nor
    /// `stats_users`. Checked after authentication, so that the refusal tells nothing to who cannot log in.
    case refused(message: String)
}

/// A server connection the pool handed to the client, as the I/O layer describes it.
public struct GrantedServer: Sendable {
    public var server: any ServerReference
    /// The lease: names the connection's release to the pool.
    public var request: RequestID
    /// The ParameterStatus set of the server's startup, with its current values.
    public var parameters: [(name: String, value: String)]
    /// The `SET`s that bring the server's run-time parameters to the client's (``ServerParameters/changes(toMatch:)``).
    public var changes: [(name: String, value: String)]
    /// The statements Lifeguard prepared on this connection (transaction and statement mode).
    public var preparedStatements: ServerStatements

    public init(
        server: any ServerReference,
        request: RequestID,
        parameters: [(name: String, value: String)],
        changes: [(name: String, value: String)],
        preparedStatements: ServerStatements
    ) {
        self.server = server
        self.request = request
        self.parameters = parameters
        self.changes = changes
        self.preparedStatements = preparedStatements
    }
}

/// A leased server connection and what it owes.
public struct ServerLease: Sendable {
    public let server: any ServerReference
    public let request: RequestID
    public internal(set) var ledger = ServerLedger()

    init(_ granted: GrantedServer) {
        self.server = granted.server
        self.request = granted.request
    }

    func isSame(as other: ServerLease) -> Bool { self.request == other.request && self.server === other.server }
}

/// Why the session ran a command of its own on the server connection it holds.
public enum ServerCommandPurpose: Sendable, Equatable {
    /// `SET`s that bring the server's parameters to the client's, before the lease is used.
    case applyParameters([(name: String, value: String)])
    /// Statement mode: the transaction block the client opened is rolled back, and refused.
    case refuseTransactionBlock
    /// Too many prepared statements at the end of a transaction: `DEALLOCATE ALL` before it goes back.
    case deallocate

    public static func == (lhs: Self, rhs: Self) -> Bool {
        switch (lhs, rhs) {
        case (.applyParameters(let a), .applyParameters(let b)):
            a.count == b.count && zip(a, b).allSatisfy { $0.name == $1.name && $0.value == $1.value }
        case (.refuseTransactionBlock, .refuseTransactionBlock), (.deallocate, .deallocate): true
        default: false
        }
    }

    /// The SQL that carries it out.
    public var sql: String {
        switch self {
        case .applyParameters(let changes): SessionParameters.setStatement(changes)
        case .refuseTransactionBlock: "ROLLBACK"
        case .deallocate: "DEALLOCATE ALL"
        }
    }
}

/// How a command the session ran on its server connection ended.
public enum ServerCommandOutcome: Sendable {
    /// It ran: the first ErrorResponse, if any, the final transaction status, and for ``ServerCommandPurpose/applyParameters(_:)``
    /// the values the server reports now for the parameters that were set (its normalized spelling).
    case finished(error: PGErrorFields?, status: PGTransactionStatus, reported: [(name: String, value: String)])
    /// The connection broke.
    case failed
}

/// What the I/O layer does for the session, in order. See ``ClientSession``.
/// What `client_tls_sslmode` asks of a client.
public enum ClientTLSPolicy: Sendable, Equatable {
    /// No TLS configured (`disable`): SSLRequest is answered `N`.
    case unavailable
    /// TLS when the client asks (`allow`, `prefer`).
    case optional
    /// No login without TLS (`require`, `verify-ca`, `verify-full`).
    case required
}

public enum ClientAction: Sendable {
    /// Write ``ClientSession/takeClientOutput()`` to the client and flush.
    case flushClient
    /// Start the TLS handshake with the client (after the `S` that was flushed); answer with
    /// ``ClientSession/tlsEstablished()``.
    case startTLS
    /// Write ``ClientSession/takeServerOutput()`` to the server connection of `lease` and flush.
    case flushServer(ServerLease)
    /// Check the StartupMessage's user and database against `max_client_conn` and the routes, and find the user's
    /// secret; answer with ``ClientSession/admissionDecided(_:into:)``, at once or later (the session waits in
    /// `admitting`).
    case admit(user: String, database: String)
    /// Count a rejected client.
    case rejected(ClientRejection)
    /// Log a failed authentication (never with a secret).
    case authenticationFailed(user: String, reason: String)
    /// The client proved the secret this credential comes from: its pool may log in to PostgreSQL with it when no
    /// password is configured for the user (pass-through). Comes before the first ``requestLease(token:)``.
    case passThrough(PGLoginCredential)
    /// Forward a CancelRequest to the server connection the key's client holds.
    case forwardCancel(PGCancelRequest)
    /// Ask the pool for a server connection; answer with ``ClientSession/leaseRequested(token:request:into:)`` and
    /// then ``ClientSession/leaseGranted(token:_:into:)`` or ``ClientSession/leaseFailed(token:_:into:)``.
    case requestLease(token: UInt64)
    /// The request is no longer wanted.
    case cancelLease(RequestID)
    /// Route what the server sends to this session (``ClientSession/serverFrames(_:_:into:)``) until the lease is
    /// given back or a command runs.
    case attach(ServerLease)
    /// Stop routing the server's messages here and run `purpose`'s SQL; answer with
    /// ``ClientSession/serverCommandFinished(_:_:into:)``.
    case runCommand(ServerLease, ServerCommandPurpose)
    /// Give the server connection back by `plan` (stop routing its messages first), with the statements prepared on
    /// it (server names) for its next client.
    case giveBack(ServerLease, ReturnPlan, preparedStatements: ServerStatements)
    /// Cancel requests for this client now reach this server connection (nil: none).
    case cancelTarget((any ServerReference)?)
    /// The client gauges.
    case activity(ClientActivity)
    /// Add to the pool's transaction and query counters.
    case count(transactions: Int, queries: Int)
    /// Backpressure: stop or resume reading from the server connection (the client is not taking what it sends).
    case pauseServerReads(ServerLease)
    case resumeServerReads(ServerLease)
    /// Backpressure: stop or resume reading from the client.
    case pauseClientReads
    case resumeClientReads
    /// An admin console client sent this simple-protocol query; answer with ``ClientSession/consoleAnswered(_:into:)``.
    /// The client's further messages wait until then.
    case consoleQuery(String)
    /// Write what is left for the client, then close its connection. Nothing is sent to the client afterwards.
    case close
}
