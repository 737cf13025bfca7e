import NIOCore
import PGWire
import PoolCore

/// One client connection as a pure state machine: startup, authentication, login, then relaying to the server
/// connections its pool lends it, by pool mode. No I/O: every event is a method that appends the actions to run
/// (``ClientAction``), and what is to be written is collected in the session's output buffers until an action asks
/// for it to be flushed. A transition is complete before any action runs, so an event raised by an action (a write
/// that fails at once) is fed afterwards and sees the new state.
///
/// States (``State``):
/// - `startup` → `admitting` (StartupMessage) | `closed`
/// - `admitting` → `authenticating` (admitted) | `closed` (refused, drain, the client left)
/// - `authenticating` → `loggingIn` (authenticated) | `closed`
/// - `loggingIn` → `ready` (greeted: ParameterStatus, BackendKeyData, ReadyForQuery) | `closed`
/// - `ready` → `closed` (Terminate, the client left, an error that ends the session, drain)
///
/// In `loggingIn` and `ready`, ``Link`` says what the client holds of a server connection:
/// `none` → `waiting` (asked the pool) → `preparing` (`SET`s) → `active` (relaying) → `cleaning` (a command before it
/// goes back) → `none`; any → `none` when the server connection breaks or goes back.
public struct ClientSession: Sendable {
    public enum State: Sendable {
        case startup
        /// The StartupMessage asked for admission (``ClientAction/admit(user:database:)``), which the I/O layer may
        /// decide later (an `auth_query` lookup): the client's further bytes wait unread until it is decided.
        case admitting
        /// Boxed: the machine is large, and every other state is copied on the relay's hot path.
        indirect case authenticating(PGServerAuthenticationStateMachine)
        case loggingIn(Link)
        case ready(Link)
        /// Final: nothing is sent to the client any more, and nothing is held.
        case closed
    }

    /// The client's hold on a server connection.
    public enum Link: Sendable {
        case none
        /// Waiting for the pool; `request` is nil until the I/O layer reported it.
        case waiting(token: UInt64, request: RequestID?)
        /// Running the `SET`s that bring the server's parameters to the client's.
        case preparing(ServerLease)
        /// Relaying.
        case active(ServerLease)
        /// Running a command of Lifeguard's before the connection goes back (``ServerCommandPurpose``).
        case cleaning(ServerLease)

        var lease: ServerLease? {
            switch self {
            case .preparing(let lease), .active(let lease), .cleaning(let lease): lease
            case .none, .waiting: nil
            }
        }
    }

    /// Client bytes queued while no server connection takes them, beyond which the client is not read any more.
    public static let maxPendingBytes = 64 * 1024

    public private(set) var state: State = .startup
    private var mode: PoolMode = .session
    private var user = ""
    private var resetQuery: String?
    private var cachedParameters: [(name: String, value: String)]?
    private var greetings: GreetingCache?
    private var spellings = ParameterSpellings()
    private var cancelKey: PGCancelRequest?
    /// What the client expects its server's run-time parameters to be (see ``SessionParameters``).
    public private(set) var parameters = SessionParameters()
    /// Named prepared statements in transaction and statement mode.
    private var statements = PreparedStatements()
    /// The server names of the statements prepared on the server connection the client holds, lent with the lease
    /// and handed back with it (``ClientAction/giveBack(_:_:preparedStatements:)``).
    private var serverStatements = ServerStatements()
    /// The server said a statement of the held connection is stale (``PreparedStatements/meansStale(_:)``): its
    /// statements are deallocated when the transaction ends.
    private var staleStatements = false
    /// Messages that arrived while no server connection was ready for them, and their size.
    private var pending: [PGFrame] = []
    private var pendingBytes = 0
    /// See ``clientReadStarted()``.
    private var holdsServerFlush = false
    /// After a failed lease in the extended protocol, messages are dropped up to the next Sync (as PostgreSQL does).
    private var skippingUntilSync = false
    private var draining = false
    private var nextToken: UInt64 = 0
    private var queries = 0
    private var transactions = 0
    private var activity: ClientActivity?
    private var clientWritable = true
    private var serverWritable = true
    private var clientReadsPaused = false
    /// The startup parameters of a session-mode lease, kept while its `SET`s run.
    private var greetingParameters: [(name: String, value: String)] = []
    private var clientOut: OutboundBatch
    private var serverOut: OutboundBatch
    private let allocator: ByteBufferAllocator
    /// What `client_tls_sslmode` asks of this client.
    private let tls: ClientTLSPolicy
    /// An admin console client (``ConsoleLogin``) instead of a pool's.
    private var console: ConsoleLogin?
    /// The console's answer to the last query is pending.
    private var consoleBusy = false
    /// TLS is up (after an SSLRequest, or direct).
    public private(set) var isEncrypted = false

    public init(allocator: ByteBufferAllocator = ByteBufferAllocator(), tls: ClientTLSPolicy = .unavailable) {
        self.allocator = allocator
        self.tls = tls
        self.clientOut = OutboundBatch()
        self.serverOut = OutboundBatch()
    }

    // MARK: Output

    /// What to write to the client, in order; empty afterwards.
    public mutating func takeClientOutput() -> OutboundBytes { self.clientOut.take() }

    /// What to write to the server connection the client holds, in order; empty afterwards.
    public mutating func takeServerOutput() -> OutboundBytes { self.serverOut.take() }

    /// The pool mode the client was admitted with.
    public var poolMode: PoolMode { self.mode }

    public var isClosed: Bool {
        if case .closed = self.state { return true }
        return false
    }

    /// The server connection the client holds, if any.
    public var lease: ServerLease? { self.link.lease }

    // MARK: Startup and authentication

    /// An SSLRequest (`ssl`) or GSSENCRequest: `S` and TLS when Lifeguard has it, else `N`, after which the client goes
    /// on in plain text or gives up. `trailingBytes`: the client sent more right behind the request, which would be
    /// read as if TLS had protected it (the CVE-2021-23214 class): refused.
    public mutating func encryptionRequested(ssl: Bool, trailingBytes: Bool, into actions: inout [ClientAction]) {
        guard case .startup = self.state else { return }
        guard !self.isEncrypted else {
            actions.append(.rejected(.protocol))
            self.fatal(
                sqlState: PGSQLState.protocolViolation,
                message: "encryption requested inside an encrypted connection",
                into: &actions
            )
            return
        }
        if ssl && self.tls != .unavailable {
            guard !trailingBytes else {
                actions.append(.rejected(.protocol))
                self.fatal(
                    sqlState: PGSQLState.protocolViolation,
                    message: "received unencrypted data after SSL request",
                    into: &actions
                )
                return
            }
            self.clientOut.append(allocator: self.allocator) { PGEncryptionResponse.sslSupported.encode(into: &$0) }
            actions.append(.flushClient)
            actions.append(.startTLS)
            return
        }
        self.clientOut.append(allocator: self.allocator) { PGEncryptionResponse.notSupported.encode(into: &$0) }
        actions.append(.flushClient)
    }

    /// The TLS handshake with the client completed. Direct TLS (no SSLRequest first) must have negotiated the
    /// `postgresql` ALPN protocol, as PostgreSQL 17 requires: else another protocol's client reached the port.
    public mutating func tlsEstablished(direct: Bool, alpn: String?, into actions: inout [ClientAction]) {
        guard case .startup = self.state else { return }
        self.isEncrypted = true
        if direct && alpn != "postgresql" {
            actions.append(.rejected(.protocol))
            self.fatal(
                sqlState: PGSQLState.protocolViolation,
                message: "received direct SSL connection request without ALPN protocol negotiation extension",
                hint:
                    "the client must offer the ALPN protocol \"postgresql\" (libpq 17 with sslnegotiation=direct does)",
                into: &actions
            )
        }
    }

    /// A CancelRequest: forwarded, and the connection closed (PostgreSQL answers nothing).
    public mutating func cancelRequested(_ key: PGCancelRequest, into actions: inout [ClientAction]) {
        guard case .startup = self.state else { return }
        actions.append(.forwardCancel(key))
        self.close(into: &actions)
    }

    public mutating func startupReceived(_ message: PGStartupMessage, into actions: inout [ClientAction]) {
        guard case .startup = self.state else { return }
        if self.draining {
            self.fatal(sqlState: PGSQLState.adminShutdown, message: "lifeguard is shutting down", into: &actions)
            return
        }
        guard let user = message.user, !user.isEmpty else {
            actions.append(.rejected(.protocol))
            self.fatal(
                sqlState: PGSQLState.invalidAuthorizationSpecification,
                message: "no PostgreSQL user name specified in startup packet",
                into: &actions
            )
            return
        }
        if self.tls == .required && !self.isEncrypted {
            actions.append(.rejected(.auth))
            self.fatal(
                sqlState: PGSQLState.invalidAuthorizationSpecification,
                message: "SSL required: client_tls_sslmode does not accept unencrypted connections",
                hint: "connect with sslmode=require (or verify-ca, verify-full)",
                into: &actions
            )
            return
        }
        self.user = user
        self.parameters = SessionParameters(startup: message)
        if message.protocolMinorVersion > 0 || !message.protocolOptions.isEmpty {
            self.write(.negotiateProtocolVersion(newestMinorVersion: 0, unrecognizedOptions: message.protocolOptions))
        }
        self.state = .admitting
        actions.append(.admit(user: user, database: message.database ?? user))
    }

    public mutating func admissionDecided(_ admission: ClientAdmission, into actions: inout [ClientAction]) {
        guard case .admitting = self.state else { return }
        switch admission {
        case .draining:
            self.fatal(sqlState: PGSQLState.adminShutdown, message: "lifeguard is shutting down", into: &actions)
        case .tooManyClients(let max):
            actions.append(.rejected(.maxClientConn))
            self.fatal(
                sqlState: PGSQLState.tooManyConnections,
                message: "too many client connections: max_client_conn (\(max)) reached",
                hint: "raise max_client_conn, or have clients hold fewer connections",
                into: &actions
            )
        case .certificateRefused(let message):
            actions.append(.rejected(.auth))
            actions.append(.authenticationFailed(user: self.user, reason: message))
            self.fatal(sqlState: PGSQLState.invalidAuthorizationSpecification, message: message, into: &actions)
        case .noRoute(let database, let message):
            self.fatal(
                sqlState: PGSQLState.invalidCatalogName,
                message: message,
                hint: "add a [databases.\(database)] entry, or set upstream to pass database names through",
                into: &actions
            )
        case .lookupFailed(let message):
            self.fatal(sqlState: PGSQLState.connectionFailure, message: message, into: &actions)
        case .refused(let sqlState, let message):
            self.fatal(sqlState: sqlState, message: message, into: &actions)
        case .admitted(let login):
            self.console = login.console
            self.mode = login.mode
            self.cachedParameters = login.cachedParameters
            self.greetings = login.greetings
            self.spellings = login.spellings
            self.cancelKey = login.cancelKey
            self.resetQuery = login.resetQuery
            var machine = login.authentication
            let action = machine.start()
            self.state = .authenticating(machine)
            self.authentication(action, credential: machine.credential, into: &actions)
        }
    }

    private mutating func authentication(
        _ action: PGServerAuthenticationStateMachine.Action,
        credential: PGLoginCredential?,
        into actions: inout [ClientAction]
    ) {
        switch action {
        case .send(let message):
            self.write(message)
            actions.append(.flushClient)
        case .authenticated(let messages):
            for message in messages { self.write(message) }
            // Before the first lease: the pool may need it to open the client's server connection.
            if let credential { actions.append(.passThrough(credential)) }
            self.state = .loggingIn(.none)
            switch self.console {
            case .allowed(let greeting)?:
                self.greet(serverParameters: greeting, into: &actions)
                return
            case .refused(let message)?:
                actions.append(.rejected(.auth))
                actions.append(.authenticationFailed(user: self.user, reason: message))
                self.fatal(sqlState: PGSQLState.invalidAuthorizationSpecification, message: message, into: &actions)
                return
            case nil:
                break
            }
            if self.mode != .session, let cached = self.cachedParameters, self.spellAsTheServer(cached) {
                self.greet(serverParameters: cached, into: &actions)
            } else {
                // Session mode holds a server from now on; the other modes borrow one to learn its parameters, or
                // how it spells a value the client asked for.
                self.requestLease(into: &actions)
            }
        case .fail(let fields, let reason):
            actions.append(.rejected(reason == .protocolViolation ? .protocol : .auth))
            if reason != .protocolViolation {
                actions.append(.authenticationFailed(user: self.user, reason: reason.rawValue))
            }
            self.write(.errorResponse(fields))
            self.close(into: &actions)
        }
    }

    /// Whether every reported parameter the client asked for is known as the server would report it; if so, the
    /// client's values take the server's spelling. A value the server has not reported yet needs a server connection.
    private mutating func spellAsTheServer(_ server: [(name: String, value: String)]) -> Bool {
        var spelled: [(name: String, value: String)] = []
        for (name, value) in self.parameters.values where SessionParameters.isReported(name) {
            if server.contains(where: { $0.name == name && $0.value == value }) { continue }
            guard let spelling = self.spellings.spelling(of: name, value) else { return false }
            spelled.append((name, spelling))
        }
        for (name, value) in spelled { self.parameters[name] = value }
        return true
    }

    /// AuthenticationOk was sent: ParameterStatus, BackendKeyData, ReadyForQuery(I).
    private mutating func greet(serverParameters: [(name: String, value: String)], into actions: inout [ClientAction]) {
        guard case .loggingIn(let link) = self.state else { return }
        if self.mode != .session {
            // The client's view: the server's values, overridden by what it asked for; tracked from now on.
            var wanted = SessionParameters()
            for (name, value) in serverParameters where SessionParameters.isReported(name) {
                wanted[name] = value
            }
            for (name, value) in self.parameters.values { wanted[name] = value }
            self.parameters = wanted
        }
        let session = self.mode == .session
        let parameters = self.parameters
        let encode = { (buffer: inout ByteBuffer) in
            for (name, value) in serverParameters {
                // Only reported parameters can differ from the server's value (the client's view holds them all).
                let value = session || !SessionParameters.isReported(name) ? value : (parameters[name] ?? value)
                PGBackendMessage.parameterStatus(name: name, value: value).encode(into: &buffer)
            }
        }
        if let greetings = self.greetings {
            let block = greetings.block(
                server: serverParameters,
                wanted: session ? nil : parameters,
                allocator: self.allocator,
                encode: encode
            )
            self.clientOut.append(block, allocator: self.allocator)
        } else {
            self.clientOut.append(allocator: self.allocator, encode)
        }
        if let key = self.cancelKey {
            self.write(.backendKeyData(processID: key.processID, secretKey: key.secretKey))
        }
        self.write(.readyForQuery(.idle))
        actions.append(.flushClient)
        self.state = .ready(link)
        if case .none = link { self.setActivity(.idle, into: &actions) }
        if self.closeIfDrainedAndIdle(into: &actions) { return }
        self.processPending(into: &actions)
    }

    /// Replaces the client's wanted parameters by an equal value whose storage other clients share (less memory per
    /// idle client; a server that matched one client is then seen to match the next without comparing values).
    public mutating func shareParameters(_ share: (SessionParameters) -> SessionParameters) {
        self.parameters = share(self.parameters)
    }

    // MARK: Client messages

    /// A complete message from the client (after the startup packet).
    public mutating func frameReceived(_ frame: PGFrame, into actions: inout [ClientAction]) {
        switch self.state {
        case .authenticating(var machine):
            let action = machine.receive(frame)
            self.state = .authenticating(machine)
            self.authentication(action, credential: machine.credential, into: &actions)
        case .loggingIn:
            // A client may pipeline its first query behind the startup packet.
            guard self.validate(frame, into: &actions) else { return }
            self.enqueue(frame, into: &actions)
        case .ready:
            guard self.validate(frame, into: &actions) else { return }
            self.clientMessage(frame, into: &actions)
        case .startup, .admitting, .closed:
            break
        }
    }

    /// The client's bytes could not be framed (a bad length, a startup packet PostgreSQL would refuse).
    public mutating func protocolViolated(sqlState: String, message: String, into actions: inout [ClientAction]) {
        switch self.state {
        case .startup, .admitting, .authenticating:
            actions.append(.rejected(.protocol))
        case .loggingIn, .ready, .closed:
            break
        }
        self.fatal(sqlState: sqlState, message: message, into: &actions)
    }

    /// Only frontend message types of the v3 protocol are accepted after login.
    private mutating func validate(_ frame: PGFrame, into actions: inout [ClientAction]) -> Bool {
        switch frame.type {
        case PGFrontendMessageType.bind, PGFrontendMessageType.close, PGFrontendMessageType.copyData,
            PGFrontendMessageType.copyDone, PGFrontendMessageType.copyFail, PGFrontendMessageType.describe,
            PGFrontendMessageType.execute, PGFrontendMessageType.flush, PGFrontendMessageType.functionCall,
            PGFrontendMessageType.parse, PGFrontendMessageType.query, PGFrontendMessageType.sync,
            PGFrontendMessageType.terminate:
            return true
        default:
            let error = PGProtocolError.unexpectedMessage(messageType: frame.type, context: "after authentication")
            self.protocolViolated(sqlState: error.sqlState, message: error.description, into: &actions)
            return false
        }
    }

    private mutating func clientMessage(_ frame: PGFrame, into actions: inout [ClientAction]) {
        guard case .ready = self.state else { return }
        if self.console != nil {
            self.consoleMessage(frame, into: &actions)
            return
        }
        if frame.type == PGFrontendMessageType.terminate {
            self.close(into: &actions)
            return
        }
        if self.skippingUntilSync {
            if frame.type == PGFrontendMessageType.sync {
                self.skippingUntilSync = false
                self.write(.readyForQuery(.idle))
                actions.append(.flushClient)
            }
            return
        }
        switch self.state {
        case .ready(.active(var lease)):
            // Taken out of the state while it changes (the hot path: every message of a transaction), so that the
            // lease's storage is neither copied nor retained twice.
            self.state = .ready(.none)
            self.forward(frame, lease: &lease)
            self.state = .ready(.active(lease))
        case .ready(.none):
            self.enqueue(frame, into: &actions)
            self.requestLease(into: &actions)
        default:
            self.enqueue(frame, into: &actions)
        }
    }

    private mutating func enqueue(_ frame: PGFrame, into actions: inout [ClientAction]) {
        self.pending.append(frame)
        self.pendingBytes += frame.bytes.readableBytes
        self.updateClientReads(into: &actions)
    }

    private mutating func forward(_ frame: PGFrame, lease: inout ServerLease) {
        lease.ledger.sent(frame.type)
        if frame.type == PGFrontendMessageType.query || frame.type == PGFrontendMessageType.execute {
            self.queries += 1
        }
        if self.mode != .session {
            if let messages = self.statements.outgoing(frame, prepared: self.serverStatements) {
                // Renamed, injected or substituted: the only messages that are re-encoded.
                self.serverOut.append(allocator: self.allocator) { buffer in
                    for message in messages { message.encode(into: &buffer) }
                }
                return
            }
        }
        self.serverOut.append(frame.bytes, allocator: self.allocator)
    }

    // MARK: The admin console

    /// A console client's message: a simple-protocol query goes to the I/O layer, one at a time; the extended
    /// protocol and every other message end the connection with an error, as in PgBouncer.
    private mutating func consoleMessage(_ frame: PGFrame, into actions: inout [ClientAction]) {
        if self.consoleBusy {
            self.enqueue(frame, into: &actions)
            return
        }
        switch frame.type {
        case PGFrontendMessageType.terminate:
            self.close(into: &actions)
        case PGFrontendMessageType.query:
            guard case .query(let text)? = try? PGFrontendMessage(frame: frame) else {
                self.protocolViolated(
                    sqlState: PGSQLState.protocolViolation,
                    message: "invalid Query message",
                    into: &actions
                )
                return
            }
            self.consoleBusy = true
            self.setActivity(.active, into: &actions)
            actions.append(.consoleQuery(text))
        case PGFrontendMessageType.parse, PGFrontendMessageType.bind, PGFrontendMessageType.execute:
            self.consoleRefuse("extended query protocol not supported by admin console", into: &actions)
        default:
            let type = Character(Unicode.Scalar(frame.type))
            self.consoleRefuse("unsupported packet type for admin console: \(type)", into: &actions)
        }
    }

    /// PgBouncer's words, an ERROR with 08P01, then the connection closes.
    private mutating func consoleRefuse(_ message: String, into actions: inout [ClientAction]) {
        self.write(.errorResponse(.error(sqlState: PGSQLState.protocolViolation, message: message)))
        self.write(.readyForQuery(.idle))
        self.close(into: &actions)
    }

    /// The console's answer to the pending query (ending with ReadyForQuery): sent, and the next query goes on.
    public mutating func consoleAnswered(_ reply: ByteBuffer, into actions: inout [ClientAction]) {
        guard case .ready = self.state, self.console != nil, self.consoleBusy else { return }
        self.consoleBusy = false
        self.clientOut.append(reply, allocator: self.allocator)
        actions.append(.flushClient)
        self.setActivity(.idle, into: &actions)
        if self.closeIfDrainedAndIdle(into: &actions) { return }
        self.processPending(into: &actions)
    }

    /// Replays the messages that waited for a server connection, then flushes what is due.
    private mutating func processPending(into actions: inout [ClientAction]) {
        if self.console != nil {
            while !self.consoleBusy, case .ready = self.state, !self.pending.isEmpty {
                let first = self.pending.removeFirst()
                self.pendingBytes -= first.bytes.readableBytes
                self.consoleMessage(first, into: &actions)
            }
            self.updateClientReads(into: &actions)
            return
        }
        while case .ready(let link) = self.state, let first = self.pending.first {
            switch link {
            case .none where !self.skippingUntilSync && first.type != PGFrontendMessageType.terminate:
                // The queue keeps its order: the lease serves it from the front.
                self.requestLease(into: &actions)
                self.updateClientReads(into: &actions)
                return
            case .none, .active:
                self.pending.removeFirst()
                self.pendingBytes -= first.bytes.readableBytes
                self.clientMessage(first, into: &actions)
            case .waiting, .preparing, .cleaning:
                self.flushServer(into: &actions)
                self.updateClientReads(into: &actions)
                return
            }
        }
        self.flushServer(into: &actions)
        self.updateClientReads(into: &actions)
    }

    /// End of a read burst from the client: what was relayed goes to the server in one write.
    public mutating func clientReadComplete(into actions: inout [ClientAction]) {
        self.holdsServerFlush = false
        self.flushServer(into: &actions)
    }

    /// The I/O layer is feeding the messages of one read: nothing is flushed to the server until
    /// ``clientReadComplete(into:)``. A lease granted between two of them (at once, from an idle connection) would
    /// otherwise send what came before it in a write of its own.
    public mutating func clientReadStarted() {
        self.holdsServerFlush = true
    }

    private mutating func flushServer(into actions: inout [ClientAction]) {
        guard !self.holdsServerFlush, !self.serverOut.isEmpty, case .ready(.active(let lease)) = self.state else {
            return
        }
        actions.append(.flushServer(lease))
    }

    // MARK: Leasing

    private mutating func requestLease(into actions: inout [ClientAction]) {
        self.nextToken += 1
        self.setLink(.waiting(token: self.nextToken, request: nil))
        self.setActivity(.waiting, into: &actions)
        actions.append(.requestLease(token: self.nextToken))
    }

    /// The pool took the request; `request` names it (for a cancel, and later for the release). Fed before the
    /// request's answer, even when the pool answered at once.
    public mutating func leaseRequested(token: UInt64, request: RequestID, into actions: inout [ClientAction]) {
        guard case .waiting(token, nil) = self.link else {
            // The client stopped waiting before the request was known (it left): cancelling a request that was
            // already answered changes nothing, and a connection granted later is given straight back.
            actions.append(.cancelLease(request))
            return
        }
        self.setLink(.waiting(token: token, request: request))
    }

    public mutating func leaseGranted(token: UInt64, _ granted: GrantedServer, into actions: inout [ClientAction]) {
        guard case .waiting(token, _) = self.link else {
            // The client left (or failed) meanwhile: the connection was never used.
            actions.append(.giveBack(ServerLease(granted), .release, preparedStatements: granted.preparedStatements))
            return
        }
        let lease = ServerLease(granted)
        self.serverStatements = granted.preparedStatements
        if case .loggingIn = self.state, self.mode != .session {
            if granted.changes.isEmpty {
                // Borrowed only to learn the server's parameters.
                self.setLink(.none)
                self.giveBack(lease, .release, into: &actions)
                self.greet(serverParameters: granted.parameters, into: &actions)
                return
            }
            // ... and how it reports the client's values: the SETs' ParameterStatus is what the greeting says.
            self.setLink(.preparing(lease))
            actions.append(.runCommand(lease, .applyParameters(granted.changes)))
            self.greetingParameters = granted.parameters
            return
        }
        actions.append(.cancelTarget(lease.server))
        self.setActivity(.active, into: &actions)
        if granted.changes.isEmpty {
            self.activate(lease, parameters: granted.parameters, into: &actions)
            return
        }
        self.setLink(.preparing(lease))
        actions.append(.runCommand(lease, .applyParameters(granted.changes)))
        // Kept for the greeting once the SETs are done.
        self.greetingParameters = granted.parameters
    }

    public mutating func leaseFailed(token: UInt64, _ error: PoolError, into actions: inout [ClientAction]) {
        guard case .waiting(token, _) = self.link else { return }
        self.setLink(.none)
        self.setActivity(.idle, into: &actions)
        let sqlState: String
        switch error.code {
        case .timeout: sqlState = PGSQLState.tooManyConnections
        case .connectFailed: sqlState = PGSQLState.connectionFailure
        case .shuttingDown: sqlState = PGSQLState.adminShutdown
        // The server's own SQLSTATE and message, as a direct connection would have had them.
        case .refused: sqlState = error.connectError?.sqlState ?? PGSQLState.connectionFailure
        default: return
        }
        if case .loggingIn = self.state {
            self.fatal(sqlState: sqlState, message: error.message, into: &actions)
            return
        }
        if self.mode == .session {
            self.fatal(sqlState: sqlState, message: error.message, into: &actions)
            return
        }
        self.write(.errorResponse(.error(sqlState: sqlState, message: error.message)))
        // As after an error in PostgreSQL: what the failed request sent up to its Sync (or its Query) is dropped.
        if let end = self.pending.firstIndex(where: {
            $0.type == PGFrontendMessageType.sync || $0.type == PGFrontendMessageType.query
                || $0.type == PGFrontendMessageType.functionCall
        }) {
            for frame in self.pending[...end] { self.pendingBytes -= frame.bytes.readableBytes }
            self.pending.removeFirst(end + 1)
            self.write(.readyForQuery(.idle))
        } else {
            self.pending.removeAll()
            self.pendingBytes = 0
            self.skippingUntilSync = true
        }
        actions.append(.flushClient)
        if self.closeIfDrainedAndIdle(into: &actions) { return }
        self.processPending(into: &actions)
    }

    private mutating func activate(
        _ lease: ServerLease,
        parameters: [(name: String, value: String)],
        into actions: inout [ClientAction]
    ) {
        self.setLink(.active(lease))
        actions.append(.attach(lease))
        if !self.clientWritable { actions.append(.pauseServerReads(lease)) }
        self.statements.newServerConnection()
        if case .loggingIn = self.state {
            self.greet(serverParameters: parameters, into: &actions)
        } else {
            self.processPending(into: &actions)
        }
    }

    /// A command the session ran (``ClientAction/runCommand(_:_:)``) finished.
    public mutating func serverCommandFinished(
        _ purpose: ServerCommandPurpose,
        _ outcome: ServerCommandOutcome,
        into actions: inout [ClientAction]
    ) {
        guard let lease = self.link.lease else { return }
        switch (self.link, purpose) {
        case (.preparing, .applyParameters):
            switch outcome {
            case .finished(nil, .idle, let reported):
                // The server's normalized values ("ISO, MDY" for "ISO") become the client's, so they match next time.
                for (name, value) in reported { self.parameters[name] = value }
                let greeting = self.greetingParameters.map { entry in
                    (entry.name, reported.first { $0.name == entry.name }?.value ?? entry.value)
                }
                self.greetingParameters = []
                if case .loggingIn = self.state, self.mode != .session {
                    // Borrowed for the greeting only (transaction and statement mode).
                    self.setLink(.none)
                    self.giveBack(lease, .release, into: &actions)
                    self.greet(serverParameters: greeting, into: &actions)
                } else {
                    self.activate(lease, parameters: greeting, into: &actions)
                }
            case .finished(let error, let status, _):
                self.setLink(.none)
                actions.append(.cancelTarget(nil))
                self.giveBack(lease, status == .idle ? .release : .discard, into: &actions)
                let fields = error ?? PGErrorFields.error(sqlState: PGSQLState.internalError, message: "")
                self.fatal(
                    sqlState: fields.sqlState ?? PGSQLState.internalError,
                    message: "cannot apply the client's startup parameters: \(fields.message ?? "unknown error")",
                    into: &actions
                )
            case .failed:
                self.serverBroke(lease, into: &actions)
            }
        case (.cleaning, .refuseTransactionBlock), (.cleaning, .deallocate):
            if purpose == .refuseTransactionBlock {
                self.write(
                    .errorResponse(
                        .error(
                            sqlState: PGSQLState.featureNotSupported,
                            message:
                                "transaction blocks are not allowed in statement pool mode; use pool_mode = transaction"
                        )
                    )
                )
                self.write(.readyForQuery(.idle))
                actions.append(.flushClient)
            }
            let plan: ReturnPlan
            switch outcome {
            case .finished(let error, .idle, _) where !(purpose == .deallocate && error != nil):
                if purpose == .deallocate { self.serverStatements = [] }
                plan = .release
            case .finished, .failed:
                plan = .discard
            }
            self.setLink(.none)
            actions.append(.cancelTarget(nil))
            self.setActivity(.idle, into: &actions)
            self.giveBack(lease, plan, into: &actions)
            self.afterRelease(into: &actions)
        default:
            break
        }
    }

    // MARK: Server messages

    /// One read burst of what the server connection of `request` sent while the session was attached.
    public mutating func serverFrames(_ request: RequestID, _ frames: [PGFrame], into actions: inout [ClientAction]) {
        guard case .ready(.active(var lease)) = self.state, lease.request == request else {
            guard case .loggingIn(.active(var lease)) = self.state, lease.request == request else { return }
            // Session mode before the greeting has nothing to relay; only the ledger is kept.
            for frame in frames where frame.type == PGBackendMessageType.readyForQuery {
                lease.ledger.readyForQuery(Self.transactionStatus(frame) ?? .failedTransaction)
            }
            self.state = .loggingIn(.active(lease))
            return
        }
        self.state = .ready(.none)
        var relayed = false
        for frame in frames {
            switch frame.type {
            case PGBackendMessageType.parseComplete, PGBackendMessageType.closeComplete:
                guard self.mode != .session else { break }
                switch self.statements.reply(frame.type, prepared: &self.serverStatements) {
                case .relay:
                    break
                case .swallow:
                    continue
                case .parseComplete:
                    self.clientOut.append(allocator: self.allocator) { buffer in
                        buffer.writeInteger(PGBackendMessageType.parseComplete)
                        buffer.writeInteger(Int32(4))
                    }
                    relayed = true
                    continue
                }
            case PGBackendMessageType.commandComplete
            where self.mode != .session && frame.length < 24
                // "DEALLOCATE ALL" or "DISCARD ALL": the tag is decoded only when it starts with D.
                && frame.bytes.getInteger(at: frame.bytes.readerIndex + 5, as: UInt8.self) == UInt8(ascii: "D"):
                if case .commandComplete(let tag)? = try? PGBackendMessage(frame: frame),
                    PreparedStatements.clearsAll(commandTag: tag)
                {
                    self.serverStatements.removeAll()
                }
            case PGBackendMessageType.readyForQuery:
                if self.mode != .session { self.statements.readyForQuery() }
                let status = Self.transactionStatus(frame) ?? .failedTransaction
                lease.ledger.readyForQuery(status)
                if status == .idle { self.transactions += 1 }
                if self.mode == .statement && status != .idle && lease.ledger.isSettled {
                    self.state = .ready(.cleaning(lease))
                    if relayed { actions.append(.flushClient) }
                    actions.append(.runCommand(lease, .refuseTransactionBlock))
                    return
                }
                self.clientOut.append(frame.bytes, allocator: self.allocator)
                relayed = true
                if self.mode != .session && status == .idle && lease.ledger.isSettled {
                    self.state = .ready(.active(lease))
                    actions.append(.flushClient)
                    self.endTransaction(lease, into: &actions)
                    return
                }
                continue
            case PGBackendMessageType.parameterStatus:
                if case .parameterStatus(let name, let value)? = try? PGBackendMessage(frame: frame),
                    SessionParameters.isReported(name)
                {
                    self.parameters[name] = value
                }
            case PGBackendMessageType.copyInResponse, PGBackendMessageType.copyOutResponse,
                PGBackendMessageType.copyBothResponse:
                lease.ledger.copyStarted()
            case PGBackendMessageType.errorResponse:
                // FATAL: the server is about to close. The client hears it as PostgreSQL said it (drivers decide on
                // reconnects from its SQLSTATE), and its session ends with the server's, as it would without a pooler.
                // A stale statement: the connection's statements go before anyone else gets it.
                if case .errorResponse(let fields)? = try? PGBackendMessage(frame: frame) {
                    if fields.severity == "FATAL" || fields.severity == "PANIC" { lease.ledger.fatalReceived() }
                    if self.mode != .session && PreparedStatements.meansStale(fields) { self.staleStatements = true }
                }
            default:
                break
            }
            self.clientOut.append(frame.bytes, allocator: self.allocator)
            relayed = true
        }
        self.state = .ready(.active(lease))
        if relayed { actions.append(.flushClient) }
    }

    /// Transaction and statement mode: ReadyForQuery(I) with nothing outstanding ends the lease.
    private mutating func endTransaction(_ lease: ServerLease, into actions: inout [ClientAction]) {
        if self.serverStatements.count > ReturnPlan.maxPreparedStatements || self.staleStatements {
            // Prepared statements stay for the next client, up to a bound.
            self.setLink(.cleaning(lease))
            actions.append(.runCommand(lease, .deallocate))
            return
        }
        self.setLink(.none)
        actions.append(.cancelTarget(nil))
        self.setActivity(.idle, into: &actions)
        self.giveBack(lease, .release, into: &actions)
        self.afterRelease(into: &actions)
    }

    /// The server connection of `request` closed.
    public mutating func serverClosed(_ request: RequestID, into actions: inout [ClientAction]) {
        guard let lease = self.link.lease, lease.request == request else { return }
        self.serverBroke(lease, into: &actions)
    }

    /// The server connection died under the client: the pool replaces it; the client is told.
    private mutating func serverBroke(_ lease: ServerLease, into actions: inout [ClientAction]) {
        self.setLink(.none)
        actions.append(.cancelTarget(nil))
        self.giveBack(lease, .discard, into: &actions)
        self.setActivity(.idle, into: &actions)
        guard case .ready = self.state else {
            if case .loggingIn = self.state {
                self.fatal(
                    sqlState: PGSQLState.connectionFailure,
                    message: "server connection failed during login",
                    into: &actions
                )
            }
            return
        }
        if lease.ledger.fatal {
            // The server's own FATAL was relayed: the session ends as it would on PostgreSQL.
            self.close(into: &actions)
            return
        }
        let message = "server connection lost: closed unexpectedly while in use"
        let busy = lease.ledger.outstanding > 0 || lease.ledger.unsynced > 0
        if self.mode == .session || !busy {
            // Idle inside a transaction: the client's transaction is gone and it must know before it goes on.
            if self.mode == .session || lease.ledger.status != .idle {
                self.fatal(sqlState: PGSQLState.connectionFailure, message: message, into: &actions)
            }
            return
        }
        // Every request in flight is answered, as PostgreSQL answers requests after an error: a ReadyForQuery for each
        // Query and Sync sent, and what the client sends up to its next Sync is dropped.
        self.write(.errorResponse(.error(sqlState: PGSQLState.connectionFailure, message: message)))
        for _ in 0..<lease.ledger.outstanding { self.write(.readyForQuery(.idle)) }
        if lease.ledger.unsynced > 0 { self.skippingUntilSync = true }
        actions.append(.flushClient)
        self.afterRelease(into: &actions)
    }

    private mutating func afterRelease(into actions: inout [ClientAction]) {
        self.reportCounts(into: &actions)
        if self.closeIfDrainedAndIdle(into: &actions) { return }
        self.processPending(into: &actions)
    }

    private mutating func reportCounts(into actions: inout [ClientAction]) {
        guard self.transactions > 0 || self.queries > 0 else { return }
        actions.append(.count(transactions: self.transactions, queries: self.queries))
        self.transactions = 0
        self.queries = 0
    }

    // MARK: Backpressure

    /// The client's connection stopped or started taking what is written to it.
    public mutating func clientWritabilityChanged(_ writable: Bool, into actions: inout [ClientAction]) {
        guard writable != self.clientWritable else { return }
        self.clientWritable = writable
        guard case .ready(.active(let lease)) = self.state else { return }
        actions.append(writable ? .resumeServerReads(lease) : .pauseServerReads(lease))
    }

    /// The server connection of `request` stopped or started taking what is written to it.
    public mutating func serverWritabilityChanged(
        _ request: RequestID,
        _ writable: Bool,
        into actions: inout [ClientAction]
    ) {
        guard self.link.lease?.request == request else { return }
        self.serverWritable = writable
        self.updateClientReads(into: &actions)
    }

    /// Whether the client is read: not while its server connection is full, nor while too much waits for one.
    private mutating func updateClientReads(into actions: inout [ClientAction]) {
        let pause = !self.serverWritable || self.pendingBytes > Self.maxPendingBytes
        guard pause != self.clientReadsPaused, !self.isClosed else { return }
        self.clientReadsPaused = pause
        actions.append(pause ? .pauseClientReads : .resumeClientReads)
    }

    // MARK: Leaving

    /// Stop accepting: close now if idle, else when the current transaction (or session) ends.
    public mutating func drain(into actions: inout [ClientAction]) {
        self.draining = true
        _ = self.closeIfDrainedAndIdle(into: &actions)
    }

    /// Close now with this FATAL error, whatever the client holds (the admin console's `KILL_CLIENT`).
    public mutating func disconnect(sqlState: String, message: String, into actions: inout [ClientAction]) {
        self.fatal(sqlState: sqlState, message: message, into: &actions)
    }

    /// Close now, whatever the client holds.
    public mutating func terminate(into actions: inout [ClientAction]) {
        self.fatal(sqlState: PGSQLState.adminShutdown, message: "lifeguard is shutting down", into: &actions)
    }

    /// The client's connection closed (or failed a write): give back what it held. What was not written yet is
    /// dropped.
    public mutating func clientClosed(into actions: inout [ClientAction]) {
        self.clientLeft(into: &actions)
        _ = self.clientOut.take()
    }

    private mutating func closeIfDrainedAndIdle(into actions: inout [ClientAction]) -> Bool {
        guard self.draining else { return false }
        switch self.state {
        case .ready(.none), .ready(.waiting), .startup, .admitting, .authenticating:
            self.fatal(sqlState: PGSQLState.adminShutdown, message: "lifeguard is shutting down", into: &actions)
            return true
        case .ready, .loggingIn, .closed:
            return false
        }
    }

    /// Sends a FATAL ErrorResponse and closes the client (and gives back what it held).
    private mutating func fatal(
        sqlState: String,
        message: String,
        hint: String? = nil,
        into actions: inout [ClientAction]
    ) {
        guard !self.isClosed else { return }
        self.write(.errorResponse(.error(sqlState: sqlState, message: message, hint: hint, severity: .fatal)))
        self.close(into: &actions)
    }

    private mutating func close(into actions: inout [ClientAction]) {
        guard !self.isClosed else { return }
        self.clientLeft(into: &actions)
        actions.append(.close)
    }

    /// The client is gone (Terminate, closed socket, or closed by us): give back or close what it held.
    private mutating func clientLeft(into actions: inout [ClientAction]) {
        let link: Link
        switch self.state {
        case .closed: return
        case .loggingIn(let current), .ready(let current): link = current
        case .startup, .admitting, .authenticating: link = .none
        }
        self.state = .closed
        self.reportCounts(into: &actions)
        self.pending.removeAll()
        self.pendingBytes = 0
        // Counted in the lease's ledger as sent: a server that did not get them is discarded by the plan anyway.
        _ = self.serverOut.take()
        switch link {
        case .none:
            break
        case .waiting(_, let request):
            // Without a request id yet, ``leaseRequested(token:request:into:)`` cancels it when it comes.
            if let request { actions.append(.cancelLease(request)) }
        case .preparing(let lease), .cleaning(let lease):
            // The command's connection goes back by the plan: a command in flight means it owes a reply.
            actions.append(.cancelTarget(nil))
            actions.append(.giveBack(lease, .discard, preparedStatements: self.serverStatements))
        case .active(let lease):
            actions.append(.cancelTarget(nil))
            let plan = ReturnPlan(
                ledger: lease.ledger,
                mode: self.mode,
                resetQuery: self.resetQuery,
                preparedStatements: self.serverStatements.count
            )
            actions.append(.giveBack(lease, plan, preparedStatements: self.serverStatements))
        }
        self.serverStatements = []
        self.activity = nil
    }

    // MARK: Helpers

    private var link: Link {
        switch self.state {
        case .loggingIn(let link), .ready(let link): link
        case .startup, .admitting, .authenticating, .closed: .none
        }
    }

    private mutating func setLink(_ link: Link) {
        switch self.state {
        case .loggingIn: self.state = .loggingIn(link)
        case .ready: self.state = .ready(link)
        case .startup, .admitting, .authenticating, .closed: break
        }
    }

    /// The I/O layer stops routing the server's messages here (and lifts a pause on its reads) before it gives the
    /// connection back; the next server connection starts writable.
    private mutating func giveBack(_ lease: ServerLease, _ plan: ReturnPlan, into actions: inout [ClientAction]) {
        actions.append(.giveBack(lease, plan, preparedStatements: self.serverStatements))
        self.serverStatements = []
        self.staleStatements = false
        self.serverWritable = true
        self.updateClientReads(into: &actions)
    }

    private mutating func setActivity(_ activity: ClientActivity, into actions: inout [ClientAction]) {
        guard activity != self.activity, !self.isClosed else { return }
        self.activity = activity
        actions.append(.activity(activity))
    }

    private mutating func write(_ message: PGBackendMessage) {
        self.clientOut.append(allocator: self.allocator) { message.encode(into: &$0) }
    }

    static func transactionStatus(_ frame: PGFrame) -> PGTransactionStatus? {
        frame.bytes.getInteger(at: frame.bytes.readerIndex + 5, as: UInt8.self).flatMap(PGTransactionStatus.init)
    }
}
