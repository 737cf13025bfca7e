import ConnectionPool
import LifeguardConfig
import LifeguardMetrics
import Logging
import NIOCore
import NIOPosix
import PGWire
import PoolCore

/// One client connection, on its event loop: startup and authentication, then relaying to a server connection
/// leased from the client's pool according to the pool mode.
///
/// Phases: `startup` → `authenticating` → `loggingIn` → `ready` → `closed`; any → `closed` (error, Terminate,
/// drain). While `ready`, ``Link`` says what the client holds: `none` → `waiting` → (`preparing` →) `active` →
/// (`cleaning` →) `none`.
final class ClientChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        case startup
        case authenticating(PGServerAuthenticationStateMachine)
        case loggingIn
        case ready
        case closed
    }

    /// The client's hold on a server connection.
    private enum Link {
        case none
        /// Waiting for the pool; `request` is nil until `lease` returned (its completion may come first).
        case waiting(token: UInt64, request: RequestID?)
        /// `SET`s bringing the server's parameters to the client's.
        case preparing(Lease)
        case active(Lease)
        /// `DEALLOCATE ALL` (too many prepared statements) or a rollback before the server goes back.
        case cleaning(Lease)
    }

    /// A leased server connection and what is in flight on it.
    private struct Lease {
        let server: ServerConnection
        let token: UInt64
        /// Query, Sync and FunctionCall messages sent minus ReadyForQuery received.
        var outstanding = 0
        /// Extended-protocol messages sent since the last Sync: the server owes a reply once a Sync comes.
        var unsynced = 0
        var inCopy = false
        var status: PGTransactionStatus = .idle
        /// The server's FATAL message before it closed, told to the client as 08006.
        var fatalMessage: String?
    }

    private let proxy: ProxyContext
    private let clientID: Int
    private var phase: Phase = .startup
    private var link: Link = .none
    private var frames = FrameBuffer()
    private let startupDecoder = PGStartupDecoder()
    private let frameDecoder = PGFrameDecoder.frontend()
    private var context: ChannelHandlerContext?
    /// The channel's allocator, kept: `context.channel` costs a retain and a lock-free check per call.
    private var allocator = ByteBufferAllocator()

    private var admitted = false
    private var pool: ProxyPool?
    private var mode: PoolMode = .session
    /// For log lines; the rest of the startup message is not kept (an idle client should hold little).
    private var user: String?
    private var parameters = SessionParameters()
    /// Named prepared statements in transaction and statement mode.
    private var statements = PreparedStatements()
    private var cancelKey: PGCancelRequest?
    private var cancelTarget: CancelTarget?
    /// Messages that arrived while no server connection was ready for them.
    private var pending: [PGFrame] = []
    /// Messages for the server, written once per read burst.
    private var outgoing = OutboundBatch()
    /// Messages for the client, written at the next flush.
    private var clientOut = OutboundBatch()
    private var clientNeedsFlush = false
    /// After a failed lease in the extended protocol, messages are dropped up to the next Sync (as PostgreSQL does).
    private var skippingUntilSync = false
    private var draining = false
    private var nextToken: UInt64 = 0
    private var queries = 0
    private var transactions = 0
    /// What `lifeguard_client_connections{state}` counts this client as.
    private var activity: ClientActivity?

    init(context: ProxyContext, clientID: Int) {
        self.proxy = context
        self.clientID = clientID
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.allocator = context.channel.allocator
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.frames.append(self.unwrapInboundIn(data))
        do {
            while true {
                switch self.phase {
                case .startup:
                    guard let packet = try self.frames.nextStartupPacket(self.startupDecoder) else { return }
                    self.handleStartupPacket(packet, context: context)
                case .authenticating, .loggingIn, .ready:
                    guard let frame = try self.frames.nextFrame(self.frameDecoder) else { return }
                    self.handleFrame(frame, context: context)
                case .closed:
                    return
                }
            }
        } catch {
            self.protocolViolation(error.description, sqlState: error.sqlState, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.flushOutgoing()
        self.flushClient()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.clientGone(closeChannel: false)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.close()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ClientDrainEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch event {
        case .drain:
            self.draining = true
            self.closeIfDrainedAndIdle()
        case .terminate:
            self.fatal(sqlState: PGSQLState.adminShutdown, message: "lifeguard is shutting down")
        }
    }

    // MARK: Startup and authentication

    private func handleStartupPacket(_ packet: PGStartupPacket, context: ChannelHandlerContext) {
        switch packet {
        case .sslRequest, .gssEncryptionRequest:
            // Until TLS arrives the client goes on in plain text after `N`, or gives up if it requires encryption.
            var buffer = context.channel.allocator.buffer(capacity: 1)
            PGEncryptionResponse.notSupported.encode(into: &buffer)
            context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
        case .cancelRequest(let key):
            if let server = self.proxy.clients.cancelTarget(for: key) {
                CancelForwarder.forward(to: server, group: self.proxy.group)
            }
            self.close()
        case .startup(let message):
            self.startup(message, context: context)
        }
    }

    private func startup(_ message: PGStartupMessage, context: ChannelHandlerContext) {
        let configuration = self.proxy.configuration
        if self.draining {
            self.fatal(sqlState: PGSQLState.adminShutdown, message: "lifeguard is shutting down")
            return
        }
        guard let user = message.user, !user.isEmpty else {
            self.proxy.metrics.clientRejected(reason: .protocol)
            self.fatal(
                sqlState: PGSQLState.invalidAuthorizationSpecification,
                message: "no PostgreSQL user name specified in startup packet"
            )
            return
        }
        guard self.proxy.clients.admit(self.clientID, maxClients: configuration.maxClientConn) else {
            self.proxy.metrics.clientRejected(reason: .maxClientConn)
            self.fatal(
                sqlState: PGSQLState.tooManyConnections,
                message: "too many client connections: max_client_conn (\(configuration.maxClientConn)) reached",
                hint: "raise max_client_conn, or have clients hold fewer connections"
            )
            return
        }
        self.admitted = true
        let database = message.database ?? user
        switch self.proxy.pool(database: database, user: user) {
        case .failure(let error):
            self.fatal(
                sqlState: PGSQLState.invalidCatalogName,
                message: error.message,
                hint: "add a [databases.\(database)] entry, or set upstream to pass database names through"
            )
            return
        case .success(let pool):
            self.pool = pool
            self.mode = pool.mode
        }
        self.user = message.user
        self.parameters = SessionParameters(startup: message)
        if message.protocolMinorVersion > 0 || !message.protocolOptions.isEmpty {
            self.write(.negotiateProtocolVersion(newestMinorVersion: 0, unrecognizedOptions: message.protocolOptions))
        }
        let method: PGServerAuthenticationStateMachine.Method =
            switch configuration.authType {
            case nil, .trust?: .trust
            case .md5?: .md5
            case .scramSHA256?: .scramSHA256
            }
        var machine = PGServerAuthenticationStateMachine(
            method: method,
            user: user,
            secret: self.proxy.secret(for: user)
        )
        let action = machine.start()
        self.phase = .authenticating(machine)
        self.handleAuthentication(action)
    }

    private func handleAuthentication(_ action: PGServerAuthenticationStateMachine.Action) {
        switch action {
        case .send(let message):
            self.write(message)
            self.flushClient()
        case .authenticated(let messages):
            for message in messages { self.write(message) }
            self.login()
        case .fail(let fields, let reason):
            self.proxy.metrics.clientRejected(reason: reason == .protocolViolation ? .protocol : .auth)
            if reason != .protocolViolation {
                self.proxy.logger.info(
                    "client authentication failed",
                    metadata: ["user": "\(self.user ?? "")", "reason": "\(reason.rawValue)"]
                )
            }
            self.write(.errorResponse(fields))
            self.closeAfterFlush()
        }
    }

    private func login() {
        guard let pool = self.pool else { return }
        self.phase = .loggingIn
        let (key, target) =
            self.proxy.clients.issueCancelKey(self.clientID) ?? (
                PGCancelRequest(processID: 0, secretKey: 0), CancelTarget()
            )
        self.cancelKey = key
        self.cancelTarget = target
        if self.mode == .session || pool.cachedParameters == nil {
            // Session mode holds a server from now on; the other modes borrow one once to learn its parameters.
            self.startLease()
        } else {
            self.greet(serverParameters: pool.cachedParameters ?? [])
        }
    }

    /// AuthenticationOk was sent: ParameterStatus, BackendKeyData, ReadyForQuery(I).
    private func greet(serverParameters: [(name: String, value: String)]) {
        guard case .loggingIn = self.phase else { return }
        if self.mode != .session {
            // The client's view: the server's values, overridden by what it asked for; tracked from now on.
            var wanted = SessionParameters()
            for (name, value) in serverParameters where SessionParameters.reported.contains(name) {
                wanted[name] = value
            }
            for (name, value) in self.parameters.values { wanted[name] = value }
            self.parameters = self.pool?.shared(wanted) ?? wanted
        }
        var sent = Set<String>()
        for (name, value) in serverParameters {
            let value = self.mode == .session ? value : (self.parameters[name] ?? value)
            self.write(.parameterStatus(name: name, value: value))
            sent.insert(name)
        }
        if let key = self.cancelKey {
            self.write(.backendKeyData(processID: key.processID, secretKey: key.secretKey))
        }
        self.write(.readyForQuery(.idle))
        self.flushClient()
        // A failed write closes the client on the spot; it must stay closed.
        guard case .loggingIn = self.phase else { return }
        self.phase = .ready
        if case .none = self.link {
            self.setActivity(.idle)
        }
        self.closeIfDrainedAndIdle()
        self.processPending()
    }

    // MARK: Client messages

    private func handleFrame(_ frame: PGFrame, context: ChannelHandlerContext) {
        switch self.phase {
        case .authenticating(var machine):
            let action = machine.receive(frame)
            self.phase = .authenticating(machine)
            self.handleAuthentication(action)
        case .loggingIn:
            // A client may pipeline its first query behind the startup packet.
            guard self.validate(frame, context: context) else { return }
            self.pending.append(frame)
        case .ready:
            guard self.validate(frame, context: context) else { return }
            self.clientMessage(frame)
        case .startup, .closed:
            break
        }
    }

    /// Only frontend message types of the v3 protocol are accepted after login.
    private func validate(_ frame: PGFrame, context: ChannelHandlerContext) -> Bool {
        switch frame.type {
        case PGFrontendMessageType.bind, PGFrontendMessageType.close, PGFrontendMessageType.copyData,
            PGFrontendMessageType.copyDone, PGFrontendMessageType.copyFail, PGFrontendMessageType.describe,
            PGFrontendMessageType.execute, PGFrontendMessageType.flush, PGFrontendMessageType.functionCall,
            PGFrontendMessageType.parse, PGFrontendMessageType.query, PGFrontendMessageType.sync,
            PGFrontendMessageType.terminate:
            return true
        default:
            let error = PGProtocolError.unexpectedMessage(messageType: frame.type, context: "after authentication")
            self.protocolViolation(error.description, sqlState: error.sqlState, context: context)
            return false
        }
    }

    private func clientMessage(_ frame: PGFrame) {
        if frame.type == PGFrontendMessageType.terminate {
            self.clientGone()
            return
        }
        if self.skippingUntilSync {
            if frame.type == PGFrontendMessageType.sync {
                self.skippingUntilSync = false
                self.write(.readyForQuery(.idle))
            }
            return
        }
        switch self.link {
        case .none:
            self.pending.append(frame)
            self.startLease()
        case .waiting, .preparing, .cleaning:
            self.pending.append(frame)
        case .active(var lease):
            self.forward(frame, lease: &lease)
            self.link = .active(lease)
        }
    }

    private func forward(_ frame: PGFrame, lease: inout Lease) {
        switch frame.type {
        case PGFrontendMessageType.query, PGFrontendMessageType.functionCall:
            lease.outstanding += 1
            lease.unsynced = 0
            if frame.type == PGFrontendMessageType.query { self.queries += 1 }
        case PGFrontendMessageType.sync:
            lease.outstanding += 1
            lease.unsynced = 0
        case PGFrontendMessageType.copyData, PGFrontendMessageType.copyDone, PGFrontendMessageType.copyFail:
            break
        case PGFrontendMessageType.execute:
            lease.unsynced += 1
            self.queries += 1
        default:
            lease.unsynced += 1
        }
        let allocator = self.allocator
        if self.mode != .session {
            let server = lease.server
            if let messages = self.statements.outgoing(frame, prepared: server.preparedStatements.withLock { $0 }) {
                // Renamed, injected or substituted: the only messages that are re-encoded.
                self.outgoing.append(allocator: allocator) { buffer in
                    for message in messages { message.encode(into: &buffer) }
                }
                return
            }
        }
        self.outgoing.append(frame.bytes, allocator: allocator)
    }

    /// Replays the messages that waited for a server connection.
    private func processPending() {
        guard case .ready = self.phase else { return }
        while let first = self.pending.first {
            switch self.link {
            case .none where !self.skippingUntilSync && first.type != PGFrontendMessageType.terminate:
                // The queue keeps its order: the lease serves it from the front.
                self.startLease()
                return
            case .none, .active:
                self.pending.removeFirst()
                self.clientMessage(first)
            case .waiting, .preparing, .cleaning:
                self.flushOutgoing()
                return
            }
        }
        self.flushOutgoing()
        self.flushClient()
    }

    // MARK: Leasing

    private func startLease() {
        guard let pool = self.pool, let eventLoop = self.context?.eventLoop else { return }
        self.nextToken += 1
        let token = self.nextToken
        self.link = .waiting(token: token, request: nil)
        self.setActivity(.waiting)
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        // Prefers a server connection on this event loop: then relaying needs no thread hop.
        let request = pool.pool.lease(affinity: ServerConnection.affinity(of: eventLoop)) { result in
            if eventLoop.inEventLoop {
                handler.value.leased(token: token, result)
            } else {
                eventLoop.execute { handler.value.leased(token: token, result) }
            }
        }
        if case .waiting(let current, nil) = self.link, current == token {
            self.link = .waiting(token: token, request: request)
        }
    }

    private func leased(token: UInt64, _ result: Result<ServerConnection, PoolError>) {
        guard case .waiting(let current, _) = self.link, current == token else {
            // The client left (or failed) meanwhile: the connection was never used.
            if case .success(let server) = result { self.pool?.pool.release(server) }
            return
        }
        switch result {
        case .failure(let error):
            self.link = .none
            self.leaseFailed(error)
        case .success(let server):
            let lease = Lease(server: server, token: ServerOwner.makeToken())
            self.cancelTarget?.set(server)
            self.setActivity(.active)
            if case .loggingIn = self.phase, self.mode != .session {
                self.release(lease)
                self.greet(serverParameters: server.startupParameters)
                return
            }
            let wanted = self.parameters
            let changes = server.parameters.withLock { $0.changes(toMatch: wanted) }
            if changes.isEmpty {
                self.activate(lease)
                return
            }
            self.link = .preparing(lease)
            let handler = NIOLoopBound(self, eventLoop: self.context!.eventLoop)
            server.run(SessionParameters.setStatement(changes)).hop(to: handler.eventLoop).whenComplete { result in
                handler.value.prepared(lease.token, changes: changes, result)
            }
        }
    }

    private func prepared(
        _ token: UInt64,
        changes: [(name: String, value: String)],
        _ result: Result<ServerCommandResult, any Error>
    ) {
        guard case .preparing(let lease) = self.link, lease.token == token else { return }
        let server = lease.server
        switch result {
        case .success(let outcome) where outcome.error == nil && outcome.status == .idle:
            // The server's normalized values ("ISO, MDY" for "ISO") become the client's, so that they match next time.
            server.parameters.withLock { current in
                for (name, value) in changes {
                    if SessionParameters.reported.contains(name) {
                        self.parameters[name] = current[name] ?? value
                    } else {
                        current[name] = value
                    }
                }
            }
            if case .closed = self.phase {
                self.link = .none
                if let pool = self.pool {
                    Self.returnServer(lease, to: pool, mode: self.mode, resetQuery: self.proxy.configuration.resetQuery)
                }
                return
            }
            self.activate(lease)
        case .success(let outcome):
            self.link = .none
            self.cancelTarget?.set(nil)
            if outcome.status == .idle { self.pool?.pool.release(server) } else { self.pool?.pool.discard(server) }
            let fields = outcome.error ?? PGErrorFields.error(sqlState: PGSQLState.internalError, message: "")
            self.fatal(
                sqlState: fields.sqlState ?? PGSQLState.internalError,
                message: "cannot apply the client's startup parameters: \(fields.message ?? "unknown error")"
            )
        case .failure:
            self.link = .none
            self.serverBroke(lease)
        }
    }

    private func activate(_ lease: Lease) {
        guard let eventLoop = self.context?.eventLoop else { return }
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        let token = lease.token
        lease.server.attach(
            ServerOwner(
                token: token,
                eventLoop: eventLoop,
                receive: { frames in handler.value.serverFrames(token, frames) },
                closed: { handler.value.serverClosed(token) }
            )
        )
        self.link = .active(lease)
        self.statements.newServerConnection()
        if case .loggingIn = self.phase {
            let current = lease.server.parameters.withLock { $0 }
            self.greet(serverParameters: lease.server.startupParameters.map { ($0.name, current[$0.name] ?? $0.value) })
        } else {
            self.processPending()
        }
    }

    private func leaseFailed(_ error: PoolError) {
        self.setActivity(.idle)
        let sqlState: String
        switch error.code {
        case .timeout: sqlState = PGSQLState.tooManyConnections
        case .connectFailed: sqlState = PGSQLState.connectionFailure
        case .shuttingDown: sqlState = PGSQLState.adminShutdown
        default: return
        }
        if case .loggingIn = self.phase {
            self.fatal(sqlState: sqlState, message: error.message)
            return
        }
        if self.mode == .session {
            self.fatal(sqlState: sqlState, message: error.message)
            return
        }
        self.write(.errorResponse(.error(sqlState: sqlState, message: error.message)))
        // As after an error in PostgreSQL: what the failed request sent up to its Sync (or its Query) is dropped.
        if let end = self.pending.firstIndex(where: {
            $0.type == PGFrontendMessageType.sync || $0.type == PGFrontendMessageType.query
                || $0.type == PGFrontendMessageType.functionCall
        }) {
            self.pending.removeFirst(end + 1)
            self.write(.readyForQuery(.idle))
        } else {
            self.pending.removeAll()
            self.skippingUntilSync = true
        }
        self.flushClient()
        self.processPending()
    }

    // MARK: Server messages

    private func serverFrames(_ token: UInt64, _ frames: [PGFrame]) {
        guard case .active(var lease) = self.link, lease.token == token, self.context != nil else { return }
        for frame in frames {
            switch frame.type {
            case PGBackendMessageType.parseComplete, PGBackendMessageType.closeComplete:
                guard self.mode != .session else { break }
                let reply = lease.server.preparedStatements.withLock { prepared in
                    self.statements.reply(frame.type, prepared: &prepared)
                }
                switch reply {
                case .relay:
                    break
                case .swallow:
                    continue
                case .parseComplete:
                    self.clientOut.append(allocator: self.allocator) { buffer in
                        buffer.writeInteger(PGBackendMessageType.parseComplete)
                        buffer.writeInteger(Int32(4))
                    }
                    self.clientNeedsFlush = true
                    continue
                }
            case PGBackendMessageType.commandComplete where self.mode != .session && frame.length < 24:
                if case .commandComplete(let tag)? = try? PGBackendMessage(frame: frame),
                    PreparedStatements.clearsAll(commandTag: tag)
                {
                    lease.server.preparedStatements.withLock { $0.removeAll() }
                }
            case PGBackendMessageType.readyForQuery:
                if self.mode != .session { self.statements.readyForQuery() }
                let status = ServerChannelHandler.transactionStatus(frame) ?? .failedTransaction
                lease.outstanding = max(0, lease.outstanding - 1)
                lease.inCopy = false
                lease.status = status
                let settled = lease.outstanding == 0 && lease.unsynced == 0
                if status == .idle { self.transactions += 1 }
                if self.mode == .statement && status != .idle && settled {
                    self.link = .active(lease)
                    self.refuseTransactionBlock(lease)
                    return
                }
                self.clientOut.append(frame.bytes, allocator: self.allocator)
                self.clientNeedsFlush = true
                if self.mode != .session && status == .idle && settled {
                    self.link = .active(lease)
                    self.flushClient()
                    // A failed write closes the client on the spot, and closing gives the server connection back:
                    // giving it back again here would release it from under the client it went to next.
                    guard self.holds(lease) else { return }
                    self.endTransaction(lease)
                    return
                }
                continue
            case PGBackendMessageType.parameterStatus:
                if case .parameterStatus(let name, let value)? = try? PGBackendMessage(frame: frame),
                    SessionParameters.reported.contains(name)
                {
                    self.parameters[name] = value
                }
            case PGBackendMessageType.copyInResponse, PGBackendMessageType.copyOutResponse,
                PGBackendMessageType.copyBothResponse:
                lease.inCopy = true
            case PGBackendMessageType.errorResponse:
                // The server is about to close (terminated backend, shutdown): the client hears 08006 instead, since
                // in transaction mode its connection to Lifeguard survives.
                if case .errorResponse(let fields)? = try? PGBackendMessage(frame: frame),
                    fields.severity == "FATAL" || fields.severity == "PANIC"
                {
                    lease.fatalMessage = fields.message
                    continue
                }
            default:
                break
            }
            self.clientOut.append(frame.bytes, allocator: self.allocator)
            self.clientNeedsFlush = true
        }
        self.link = .active(lease)
        self.flushClient()
    }

    private func serverClosed(_ token: UInt64) {
        switch self.link {
        case .active(let lease) where lease.token == token:
            self.link = .none
            self.serverBroke(lease)
        default:
            break
        }
    }

    /// The server connection died under the client: the pool replaces it; the client is told with 08006.
    private func serverBroke(_ lease: Lease) {
        self.pool?.pool.discard(lease.server)
        self.cancelTarget?.set(nil)
        self.setActivity(.idle)
        guard case .ready = self.phase else {
            if case .loggingIn = self.phase {
                self.fatal(sqlState: PGSQLState.connectionFailure, message: "server connection failed during login")
            }
            return
        }
        let message = "server connection lost: \(lease.fatalMessage ?? "closed unexpectedly while in use")"
        let busy = lease.outstanding > 0 || lease.unsynced > 0
        if self.mode == .session || !busy {
            // Idle inside a transaction: the client's transaction is gone and it must know before it goes on.
            if self.mode == .session || lease.status != .idle {
                self.fatal(sqlState: PGSQLState.connectionFailure, message: message)
            }
            return
        }
        self.write(.errorResponse(.error(sqlState: PGSQLState.connectionFailure, message: message)))
        self.write(.readyForQuery(.idle))
        self.flushClient()
        self.closeIfDrainedAndIdle()
        self.processPending()
    }

    /// Statement mode: a transaction block was opened. Roll it back, give the server back, tell the client.
    private func refuseTransactionBlock(_ lease: Lease) {
        self.link = .cleaning(lease)
        lease.server.detach(token: lease.token)
        let handler = NIOLoopBound(self, eventLoop: self.context!.eventLoop)
        lease.server.run("ROLLBACK").hop(to: handler.eventLoop).whenComplete { result in
            let client = handler.value
            client.write(
                .errorResponse(
                    .error(
                        sqlState: PGSQLState.featureNotSupported,
                        message:
                            "transaction blocks are not allowed in statement pool mode; use pool_mode = transaction"
                    )
                )
            )
            client.write(.readyForQuery(.idle))
            client.flushClient()
            client.cleaned(lease.token, result)
        }
    }

    /// Transaction and statement mode: ReadyForQuery(I) with nothing outstanding ends the lease.
    private func endTransaction(_ lease: Lease) {
        // Prepared statements stay for the next client, up to a bound.
        if lease.server.preparedStatements.withLock({ $0.count }) > PreparedStatements.maxPerServer {
            self.link = .cleaning(lease)
            lease.server.detach(token: lease.token)
            let handler = NIOLoopBound(self, eventLoop: self.context!.eventLoop)
            let server = lease.server
            server.run("DEALLOCATE ALL").hop(to: handler.eventLoop).whenComplete { result in
                if case .success(let outcome) = result, outcome.error == nil {
                    server.preparedStatements.withLock { $0.removeAll() }
                }
                handler.value.cleaned(lease.token, result)
            }
            return
        }
        self.release(lease)
        self.afterRelease()
    }

    private func cleaned(_ token: UInt64, _ result: Result<ServerCommandResult, any Error>) {
        guard case .cleaning(let lease) = self.link, lease.token == token else { return }
        self.link = .none
        self.cancelTarget?.set(nil)
        self.setActivity(.idle)
        if case .success(let outcome) = result, outcome.status == .idle {
            self.pool?.pool.release(lease.server)
        } else {
            self.pool?.pool.discard(lease.server)
        }
        self.afterRelease()
    }

    /// Whether `lease` is still the client's active lease (and not given back meanwhile, by a close).
    private func holds(_ lease: Lease) -> Bool {
        if case .active(let current) = self.link, current.token == lease.token { return true }
        return false
    }

    private func release(_ lease: Lease) {
        lease.server.detach(token: lease.token)
        self.link = .none
        self.cancelTarget?.set(nil)
        self.setActivity(.idle)
        self.pool?.pool.release(lease.server)
    }

    private func afterRelease() {
        self.reportCounts()
        self.closeIfDrainedAndIdle()
        self.processPending()
    }

    private func reportCounts() {
        guard let metrics = self.pool?.metrics else { return }
        if self.transactions > 0 { metrics.transactions(self.transactions) }
        if self.queries > 0 { metrics.queries(self.queries) }
        self.transactions = 0
        self.queries = 0
    }

    private func setActivity(_ activity: ClientActivity) {
        guard activity != self.activity, self.admitted else { return }
        self.proxy.metrics.clientConnectionChanged(from: self.activity, to: activity)
        self.activity = activity
    }

    // MARK: Leaving

    private func closeIfDrainedAndIdle() {
        guard self.draining else { return }
        switch self.phase {
        case .ready:
            if case .none = self.link {
                self.fatal(sqlState: PGSQLState.adminShutdown, message: "lifeguard is shutting down")
            } else if case .waiting = self.link {
                self.fatal(sqlState: PGSQLState.adminShutdown, message: "lifeguard is shutting down")
            }
        case .startup, .authenticating:
            self.fatal(sqlState: PGSQLState.adminShutdown, message: "lifeguard is shutting down")
        case .loggingIn, .closed:
            break
        }
    }

    /// The client left (Terminate, closed socket, or closed by us): give back or close what it held.
    private func clientGone(closeChannel: Bool = true) {
        if case .closed = self.phase { return }
        self.phase = .closed
        self.reportCounts()
        self.pending.removeAll()
        let link = self.link
        self.link = .none
        self.cancelTarget?.set(nil)
        switch link {
        case .none:
            break
        case .preparing, .cleaning:
            // `prepared`/`cleaned` give the server back when their command finishes.
            self.link = link
        case .waiting(_, let request):
            if let request { self.pool?.pool.cancel(request) }
        case .active(let lease):
            lease.server.detach(token: lease.token)
            if let pool = self.pool {
                Self.returnServer(lease, to: pool, mode: self.mode, resetQuery: self.proxy.configuration.resetQuery)
            }
        }
        self.proxy.clients.unregister(self.clientID, admitted: self.admitted, activity: self.activity)
        self.activity = nil
        self.admitted = false
        if closeChannel { self.context?.close(promise: nil) }
    }

    /// Never returns a dirty server: a rollback if needed, the reset query in session mode (or `DEALLOCATE ALL` past
    /// ``PreparedStatements/maxPerServer`` statements), and a close if anything is in flight or a command fails.
    private static func returnServer(_ lease: Lease, to pool: ProxyPool, mode: PoolMode, resetQuery: String?) {
        let server = lease.server
        guard lease.outstanding == 0 && lease.unsynced == 0 && !lease.inCopy && server.isActive else {
            pool.pool.discard(server)
            return
        }
        var commands: [String] = []
        if lease.status != .idle { commands.append("ROLLBACK") }
        if mode == .session {
            if let resetQuery, !resetQuery.isEmpty { commands.append(resetQuery) }
        } else if server.preparedStatements.withLock({ $0.count }) > PreparedStatements.maxPerServer {
            commands.append("DEALLOCATE ALL")
        }
        let deallocates = commands.last == "DEALLOCATE ALL"
        Self.run(commands[...], on: server).whenComplete { result in
            switch result {
            case .success(true):
                if deallocates { server.preparedStatements.withLock { $0.removeAll() } }
                if mode == .session {
                    // DISCARD ALL resets what PostgreSQL does not report back.
                    server.parameters.withLock { parameters in
                        for name in SessionParameters.unreported { parameters[name] = nil }
                    }
                }
                pool.pool.release(server)
            default:
                pool.pool.discard(server)
            }
        }
    }

    private static func run(_ commands: ArraySlice<String>, on server: ServerConnection) -> EventLoopFuture<Bool> {
        guard let command = commands.first else { return server.eventLoop.makeSucceededFuture(true) }
        return server.run(command).flatMap { result in
            guard result.error == nil else { return server.eventLoop.makeSucceededFuture(false) }
            if commands.count == 1 { return server.eventLoop.makeSucceededFuture(result.status == .idle) }
            return Self.run(commands.dropFirst(), on: server)
        }
    }

    // MARK: Writing

    private func write(_ message: PGBackendMessage) {
        guard self.context != nil else { return }
        self.clientOut.append(allocator: self.allocator) { message.encode(into: &$0) }
        self.clientNeedsFlush = true
    }

    /// Hands what was written for the client to the channel (without flushing).
    private func writeClientOut() {
        guard let context = self.context else { return }
        for buffer in self.clientOut.take() {
            context.write(self.wrapOutboundOut(buffer), promise: nil)
        }
    }

    private func flushClient() {
        guard self.clientNeedsFlush, let context = self.context else { return }
        self.clientNeedsFlush = false
        self.writeClientOut()
        context.flush()
    }

    private func flushOutgoing() {
        guard !self.outgoing.isEmpty, case .active(let lease) = self.link else { return }
        lease.server.send(self.outgoing.take())
    }

    private func protocolViolation(_ message: String, sqlState: String, context: ChannelHandlerContext) {
        switch self.phase {
        case .startup, .authenticating:
            self.proxy.metrics.clientRejected(reason: .protocol)
        case .loggingIn, .ready, .closed:
            break
        }
        self.proxy.logger.debug("client protocol violation", metadata: ["error": "\(message)"])
        self.fatal(sqlState: sqlState, message: message)
    }

    /// Sends a FATAL ErrorResponse and closes the client (and gives back what it held).
    private func fatal(sqlState: String, message: String, hint: String? = nil) {
        if case .closed = self.phase { return }
        self.write(.errorResponse(.error(sqlState: sqlState, message: message, hint: hint, severity: .fatal)))
        self.closeAfterFlush()
    }

    private func closeAfterFlush() {
        guard let context = self.context else { return }
        self.clientNeedsFlush = false
        self.writeClientOut()
        self.flushOutgoing()
        let channel = context.channel
        context.writeAndFlush(self.wrapOutboundOut(channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            channel.close(promise: nil)
        }
        self.clientGone(closeChannel: false)
    }

    private func close() {
        self.clientGone()
    }
}

@available(*, unavailable)
extension ClientChannelHandler: Sendable {}

@available(*, unavailable)
extension ServerChannelHandler: Sendable {}

/// Forwards a CancelRequest to the server connection a client holds: a new connection to the same address carrying
/// the server's own key, closed right after (PostgreSQL answers nothing).
enum CancelForwarder {
    static func forward(to server: ServerConnection, group: any EventLoopGroup) {
        guard let key = server.backendKey, let address = server.cancelAddress else { return }
        ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .connect(to: address)
            .whenSuccess { channel in
                var buffer = channel.allocator.buffer(capacity: 16)
                PGStartupPacket.cancelRequest(key).encode(into: &buffer)
                channel.writeAndFlush(buffer).whenComplete { _ in
                    // PostgreSQL closes after reading it; closing at once could lose the request.
                    channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
                }
            }
    }
}
