import AdminConsole
import ConnectionPool
import LifeguardConfig
import LifeguardMetrics
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import PGWire
import PoolCore
import ProxyCore

/// One client connection, on its event loop: feeds what happens to its ``ClientSession`` and runs the actions it
/// returns. Every decision is the session's; this handler only frames bytes, talks to the pool, the registry and the
/// server connection, and writes.
///
/// Events raised while actions run (a write that fails at once and closes the channel, a lease the pool grants before
/// `lease` returns) are queued and fed once the running actions are done, so the session always finishes a transition
/// before it hears of what that transition caused.
final class ClientChannelHandler: ChannelDuplexHandler, ServerConnectionClient {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Event {
        case leaseRequested(token: UInt64, RequestID)
        case leaseCompleted(token: UInt64, RequestID, Result<ServerConnection, PoolError>)
        /// Boxed, as are admissions (``ClientAdmission``): events are queued and moved often, and stay small.
        indirect case commandFinished(RequestID, ServerCommandPurpose, ServerCommandOutcome)
        case serverFrames(RequestID, [PGFrame])
        case serverClosed(RequestID)
        case serverWritability(RequestID, Bool)
        case admission(ClientAdmission)
        case readComplete
        case writability(Bool)
        case tlsEstablished(alpn: String?)
        case drain
        case terminate
        case kill(message: String)
        case consoleAnswered(ByteBuffer)
        case clientClosed
    }

    private let proxy: ProxyContext
    private let clientID: Int
    private var session: ClientSession
    private var frames = FrameBuffer()
    private let startupDecoder = PGStartupDecoder()
    private let frameDecoder = PGFrameDecoder.frontend()
    private var context: ChannelHandlerContext?
    /// The channel's allocator, kept: `context.channel` costs a retain and a lock-free check per call.
    private let allocator: ByteBufferAllocator

    private var actions: [ClientAction] = []
    /// Events raised while actions ran, from `queueHead` on.
    private var queued: [Event] = []
    private var queueHead = 0
    private var running = false
    /// Set once the greeting is done: the login's bursts left `actions` and `queued` with more capacity than a
    /// transaction needs, which an idle client would keep (~250 bytes); released once, when nothing runs.
    private var trimAfterLogin = false
    private var pool: ProxyPool?
    private var admitted = false
    /// An `auth_query` lookup runs for this client: its bytes are neither read nor framed until it answers.
    private var lookingUp = false
    /// What `lifeguard_client_connections{state}` counts this client as.
    private var activity: ClientConnectionState?
    private var cancelTarget: CancelTarget?
    private var readsPaused = false
    /// Sends handed to a server connection on another event loop and not yet written.
    private let credit = CrossLoopCredit()
    private var readPending = false
    private var closing = false
    /// In the registry until the connection closes.
    private var registered = true
    private var parametersShared = false
    /// The TLS context in force when the client connected (nil: TLS off).
    private let tls: ClientTLS?
    /// TLS began with the first byte (PostgreSQL 17's direct TLS), not after an SSLRequest.
    private var directTLS = false
    /// The client certificate's common name, once TLS is up and the client sent one.
    private var certificateName: String?
    /// The StartupMessage's user, once admitted.
    private var user = ""
    /// What the admin console shows of this client.
    private var status: ClientStatus?
    /// Set for a client of the admin console (database `pgbouncer`) that may use it.
    private var consoleAccess: AdminAccess?
    /// The Unix-socket peer's OS identity, for the console's peer login; nil over TCP.
    private let peer: AdminLoginPolicy.PeerIdentity?

    init(
        context: ProxyContext,
        clientID: Int,
        allocator: ByteBufferAllocator,
        tls: ClientTLS? = nil,
        peer: AdminLoginPolicy.PeerIdentity? = nil
    ) {
        self.proxy = context
        self.clientID = clientID
        self.allocator = allocator
        self.tls = tls
        self.peer = peer
        self.session = ClientSession(allocator: allocator, tls: tls?.policy ?? .unavailable)
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        // Already done after channelInactive; not for a channel closed before it became active (the listener closed
        // between the accept and the activation), whose only sign of closing this is.
        self.unregister()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.frames.append(self.unwrapInboundIn(data))
        self.frameInput()
    }

    /// Frames what the client sent and feeds it to the session, message by message; what they relay goes to the
    /// server in one write at the end.
    private func frameInput() {
        self.session.clientReadStarted()
        defer { self.enqueue(.readComplete) }
        while !self.session.isClosed {
            if case .admitting = self.session.state { break }
            self.running = true
            do {
                if case .startup = self.session.state {
                    if self.tls != nil, !self.session.isEncrypted, !self.directTLS,
                        self.frames.firstByte == Self.tlsHandshakeRecord
                    {
                        // A TLS ClientHello where a startup packet would be: direct TLS.
                        self.running = false
                        self.startDirectTLS()
                        return
                    }
                    guard let packet = try self.frames.nextStartupPacket(self.startupDecoder) else {
                        self.running = false
                        break
                    }
                    switch packet {
                    case .sslRequest:
                        self.session.encryptionRequested(
                            ssl: true,
                            trailingBytes: self.frames.pendingBytes > 0,
                            into: &self.actions
                        )
                    case .gssEncryptionRequest:
                        self.session.encryptionRequested(ssl: false, trailingBytes: false, into: &self.actions)
                    case .cancelRequest(let key): self.session.cancelRequested(key, into: &self.actions)
                    case .startup(let message): self.session.startupReceived(message, into: &self.actions)
                    }
                } else {
                    guard let frame = try self.frames.nextFrame(self.frameDecoder) else {
                        self.running = false
                        break
                    }
                    self.session.frameReceived(frame, into: &self.actions)
                }
            } catch {
                self.session.protocolViolated(sqlState: error.sqlState, message: error.description, into: &self.actions)
                self.proxy.logger.debug("client protocol violation", metadata: ["error": "\(error.description)"])
            }
            self.runActions()
            self.running = false
            // What the message caused (its admission, a lease granted at once) is settled before the next message
            // is framed: a query pipelined behind the StartupMessage is read as a query, not as another packet.
            self.drainQueue()
        }
        self.drainQueue()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Each read's relayed messages were flushed at the end of `frameInput`.
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.enqueue(.clientClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A reset or a failed write: the client is gone; channelInactive follows and gives back what it held.
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.enqueue(.writability(context.channel.isWritable))
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted(let negotiated) = event {
            if let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
                let certificate = handler.peerCertificate
            {
                self.certificateName = ClientTLS.commonName(of: certificate)
            }
            self.enqueue(.tlsEstablished(alpn: negotiated))
            context.fireUserInboundEventTriggered(event)
            return
        }
        guard let event = event as? ClientDrainEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch event {
        case .drain: self.enqueue(.drain)
        case .terminate: self.enqueue(.terminate)
        case .kill(let message): self.enqueue(.kill(message: message))
        }
    }

    /// Reads from the client wait while the session holds them back (its server connection is full, or too much
    /// waits for one).
    func read(context: ChannelHandlerContext) {
        if self.readsPaused || self.lookingUp || !self.credit.mayContinue() {
            self.readPending = true
        } else {
            context.read()
        }
    }

    private func readIfAllowed() {
        guard self.readPending, !self.readsPaused, !self.lookingUp, self.credit.mayContinue(),
            let context = self.context
        else { return }
        self.readPending = false
        context.read()
    }

    // MARK: The server connection it holds

    func serverFrames(_ lease: RequestID, _ frames: [PGFrame]) {
        self.enqueue(.serverFrames(lease, frames))
    }

    func serverClosed(_ lease: RequestID) {
        self.enqueue(.serverClosed(lease))
    }

    func serverWritabilityChanged(_ lease: RequestID, _ writable: Bool) {
        self.enqueue(.serverWritability(lease, writable))
    }

    // MARK: Feeding the session

    private func enqueue(_ event: Event) {
        guard !self.running && self.queueHead == self.queued.count else {
            self.queued.append(event)
            return
        }
        self.running = true
        self.deliver(event)
        self.runActions()
        self.running = false
        self.drainQueue()
        if self.trimAfterLogin, !self.running, self.queued.isEmpty, self.actions.isEmpty {
            self.trimAfterLogin = false
            self.queued = []
            self.actions = []
        }
    }

    /// Feeds the queued events in order, each with its actions run before the next.
    private func drainQueue() {
        while !self.running && self.queueHead < self.queued.count {
            // Moved out rather than copied; the slot keeps a payload-free event until the queue empties.
            var event = Event.readComplete
            swap(&event, &self.queued[self.queueHead])
            self.queueHead += 1
            if self.queueHead == self.queued.count {
                self.queued.removeAll(keepingCapacity: true)
                self.queueHead = 0
            }
            self.running = true
            self.deliver(event)
            self.runActions()
            self.running = false
        }
    }

    private func deliver(_ event: Event) {
        switch event {
        case .leaseRequested(let token, let request):
            self.session.leaseRequested(token: token, request: request, into: &self.actions)
        case .leaseCompleted(let token, let request, .success(let server)):
            let wanted = self.session.parameters
            // The greeting needs the server's parameters; a lease after login only the SETs that make it match.
            let greeting: Bool
            if case .loggingIn = self.session.state { greeting = true } else { greeting = false }
            let (parameters, changes) = server.parameters.withLock { current in
                (
                    greeting ? server.startupParameters.map { ($0.name, current[$0.name] ?? $0.value) } : [],
                    current.changes(toMatch: wanted)
                )
            }
            let granted = GrantedServer(
                server: server,
                request: request,
                parameters: parameters,
                changes: changes,
                preparedStatements: server.takePreparedStatements()
            )
            self.session.leaseGranted(token: token, granted, into: &self.actions)
        case .leaseCompleted(let token, _, .failure(let error)):
            // A pool for a database or role that does not exist goes (clients may name anything); one whose TLS
            // failed stays, so that its errors stay counted until the certificate is fixed.
            if error.code == .refused, error.connectError?.reason != .tls, let pool = self.pool {
                self.proxy.dropRefused(pool)
            }
            self.session.leaseFailed(token: token, error, into: &self.actions)
        case .commandFinished(_, let purpose, let outcome):
            if case .applyParameters(let changes) = purpose, case .finished(nil, _, let reported) = outcome {
                self.pool?.learnSpellings(changes, reported)
            }
            self.session.serverCommandFinished(purpose, outcome, into: &self.actions)
        case .serverFrames(let request, let frames):
            self.session.serverFrames(request, frames, into: &self.actions)
        case .serverClosed(let request):
            self.session.serverClosed(request, into: &self.actions)
        case .serverWritability(let request, let writable):
            self.session.serverWritabilityChanged(request, writable, into: &self.actions)
        case .admission(let admission):
            self.session.admissionDecided(admission, into: &self.actions)
        case .readComplete:
            self.session.clientReadComplete(into: &self.actions)
        case .writability(let writable):
            self.session.clientWritabilityChanged(writable, into: &self.actions)
        case .tlsEstablished(let alpn):
            self.session.tlsEstablished(direct: self.directTLS, alpn: alpn, into: &self.actions)
        case .drain:
            self.session.drain(into: &self.actions)
        case .terminate:
            self.session.terminate(into: &self.actions)
        case .kill(let message):
            self.session.disconnect(sqlState: PGSQLState.adminShutdown, message: message, into: &self.actions)
        case .consoleAnswered(let reply):
            self.session.consoleAnswered(reply, into: &self.actions)
        case .clientClosed:
            self.session.clientClosed(into: &self.actions)
            self.unregister()
        }
    }

    // MARK: Running actions

    private func runActions() {
        guard !self.actions.isEmpty else { return }
        // Taken out first: an action never feeds the session (what it raises is queued), so nothing is appended
        // meanwhile, and the array's storage goes back for the next event.
        var actions: [ClientAction] = []
        swap(&actions, &self.actions)
        for index in actions.indices {
            // Moved out of the array rather than copied; a payload-free action takes its place.
            var action = ClientAction.close
            swap(&action, &actions[index])
            self.run(action)
        }
        actions.removeAll(keepingCapacity: true)
        if self.actions.isEmpty { swap(&actions, &self.actions) }
    }

    private func run(_ action: ClientAction) {
        switch action {
        case .flushClient:
            self.flushClient()
        case .startTLS:
            self.startTLS()
        case .flushServer(let lease):
            self.sendToServer(lease)
        case .admit(let user, let database):
            self.admit(user: user, database: database)
        case .passThrough(let credential):
            if let pool = self.pool, pool.usePassThrough(credential, user: self.user) {
                self.proxy.logger.debug(
                    "server logins use what a client proved",
                    metadata: ["pool": "\(pool.key)", "credential": "\(credential)"]
                )
            }
        case .rejected(let reason):
            self.proxy.metrics.clientRejected(reason: Self.label(reason))
        case .authenticationFailed(let user, let reason):
            self.proxy.logger.info(
                "client authentication failed",
                metadata: ["user": "\(user)", "reason": "\(reason)"]
            )
        case .forwardCancel(let key):
            if let server = self.proxy.clients.cancelTarget(for: key) {
                CancelForwarder.forward(to: server, group: self.proxy.group)
            }
        case .requestLease(let token):
            self.requestLease(token: token)
        case .cancelLease(let request):
            self.pool?.pool.cancel(request)
        case .attach(let lease):
            self.attach(lease)
        case .runCommand(let lease, let purpose):
            self.runCommand(purpose, on: lease)
        case .giveBack(let lease, let plan, let preparedStatements):
            let server = Self.server(lease)
            let pool = self.pool
            let mode = self.session.poolMode
            // On the server's own loop, after what this client queued there (its attach, its writes): the pool may
            // hand the connection to a client of that loop at once, whose attach must come after them, not before.
            // Called directly when already there: no closure to allocate per transaction.
            if server.eventLoop.inEventLoop {
                Self.giveBack(server, lease, plan, preparedStatements, pool: pool, mode: mode)
            } else {
                server.eventLoop.execute {
                    Self.giveBack(server, lease, plan, preparedStatements, pool: pool, mode: mode)
                }
            }
        case .cancelTarget(let server):
            self.cancelTarget?.set(server.map { Self.server($0) })
        case .activity(let activity):
            self.setActivity(activity)
            // The first activity after the greeting: an idle client that never asks for a server connection keeps
            // no parameters of its own either.
            self.shareParametersOnce()
        case .consoleQuery(let query):
            self.consoleQuery(query)
        case .count(let transactions, let queries):
            if let metrics = self.pool?.metrics {
                if transactions > 0 { metrics.transactions(transactions) }
                if queries > 0 { metrics.queries(queries) }
            }
        case .pauseServerReads(let lease):
            Self.server(lease).pauseReads(lease.request)
        case .resumeServerReads(let lease):
            Self.server(lease).resumeReads(lease.request)
        case .pauseClientReads:
            self.readsPaused = true
        case .resumeClientReads:
            self.readsPaused = false
            self.readIfAllowed()
        case .close:
            self.closeAfterFlush()
        }
    }

    private static func server(_ lease: ServerLease) -> ServerConnection {
        Self.server(lease.server)
    }

    private static func server(_ reference: any ServerReference) -> ServerConnection {
        unsafeDowncast(reference, to: ServerConnection.self)
    }

    /// Decides the client's admission: at once, or once `auth_query` has found the secret of a user the auth_file
    /// does not list.
    private func admit(user: String, database: String) {
        let configuration = self.proxy.configuration
        if configuration.authType == .cert {
            // PostgreSQL's words: the certificate's common name must be the user.
            guard let name = self.certificateName else {
                self.enqueue(.admission(.certificateRefused(message: "connection requires a valid client certificate")))
                return
            }
            guard name == user else {
                self.enqueue(
                    .admission(.certificateRefused(message: "certificate authentication failed for user \"\(user)\""))
                )
                return
            }
        }
        guard self.proxy.clients.admit(self.clientID, maxClients: configuration.maxClientConn) else {
            self.enqueue(.admission(.tooManyClients(max: configuration.maxClientConn)))
            return
        }
        self.admitted = true
        self.user = user
        if database == AdminConsoleName.database {
            self.admitConsole(user: user, configuration: configuration)
            return
        }
        if self.proxy.console.isDisabled(database) {
            self.enqueue(
                .admission(
                    .refused(
                        sqlState: PGSQLState.protocolViolation,
                        message:
                            "database \"\(database)\" does not allow connections: it was DISABLEd on the admin console"
                    )
                )
            )
            return
        }
        let pool: ProxyPool
        switch self.proxy.pool(database: database, user: user) {
        case .failure(let error):
            self.enqueue(.admission(.noRoute(database: database, message: error.message)))
            return
        case .success(let found):
            pool = found
        }
        self.pool = pool
        self.loggedIn(user: user, pool: pool.key)
        let (key, target) =
            self.proxy.clients.issueCancelKey(self.clientID) ?? (
                PGCancelRequest(processID: 0, secretKey: 0), CancelTarget()
            )
        self.cancelTarget = target
        let method: PGServerAuthenticationStateMachine.Method =
            switch configuration.authType {
            case nil, .trust?, .cert?: .trust
            case .md5?: .md5
            case .scramSHA256?: .scramSHA256
            }
        let secret = self.proxy.secret(for: user)
        guard secret == nil, method != .trust, configuration.authUser != nil, let eventLoop = self.context?.eventLoop
        else {
            self.enqueue(.admission(self.login(pool, method: method, user: user, secret: secret, cancelKey: key)))
            return
        }
        self.lookingUp = true
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        self.proxy.authQueries.lookup(user: user, database: database, context: self.proxy) { result in
            // Always a new task, even on this loop: the answer may come before `lookup` returns.
            eventLoop.execute {
                handler.value.lookedUp(result, pool: pool, method: method, user: user, cancelKey: key)
            }
        }
    }

    private func lookedUp(
        _ result: Result<PGAuthSecret?, AuthLookupError>,
        pool: ProxyPool,
        method: PGServerAuthenticationStateMachine.Method,
        user: String,
        cancelKey: PGCancelRequest
    ) {
        self.lookingUp = false
        switch result {
        case .success(let secret):
            let login = self.login(pool, method: method, user: user, secret: secret, cancelKey: cancelKey)
            self.enqueue(.admission(login))
        case .failure(let error):
            self.enqueue(.admission(.lookupFailed(message: error.message)))
        }
        // What the client sent meanwhile (its first authentication message, at most) is read now.
        self.frameInput()
        self.readIfAllowed()
    }

    private func login(
        _ pool: ProxyPool,
        method: PGServerAuthenticationStateMachine.Method,
        user: String,
        secret: PGAuthSecret?,
        cancelKey: PGCancelRequest
    ) -> ClientAdmission {
        .admitted(
            ClientLogin(
                mode: pool.mode,
                authentication: PGServerAuthenticationStateMachine(method: method, user: user, secret: secret),
                cachedParameters: pool.cachedParameters,
                spellings: pool.spellings,
                cancelKey: cancelKey,
                resetQuery: self.proxy.configuration.resetQuery,
                greetings: pool.greetings
            )
        )
    }

    private func requestLease(token: UInt64) {
        guard let pool = self.pool, let eventLoop = self.context?.eventLoop else { return }
        self.shareParametersOnce()
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        let request = pool.pool.makeRequestID()
        // Queued before the pool is asked: the session learns the request before its answer, even an answer that
        // comes before `lease` returns.
        self.enqueue(.leaseRequested(token: token, request))
        // Prefers a server connection on this event loop: then relaying needs no thread hop. A paused pool (the admin
        // console's PAUSE) holds the request until RESUME.
        let affinity = ServerConnection.affinity(of: eventLoop)
        let completion: ConnectionPool<ServerConnectionFactory, ContinuousClock>.LeaseCompletion = { result in
            if eventLoop.inEventLoop {
                handler.value.enqueue(.leaseCompleted(token: token, request, result))
            } else {
                eventLoop.execute { handler.value.enqueue(.leaseCompleted(token: token, request, result)) }
            }
        }
        // The gate's closure only when paused: the usual checkout allocates just the completion.
        guard pool.gate.isPaused else { return pool.pool.lease(request, affinity: affinity, completion) }
        pool.gate.pass { pool.pool.lease(request, affinity: affinity, completion) }
    }

    /// Clients of one pool usually want the same parameters: sharing their storage lets a server that matched one
    /// client be recognised for the next without comparing values, and an idle client keeps no copy of its own
    /// (~260 bytes). Once, after the greeting settled them; a parameter the client changes later gets storage of its
    /// own.
    private func shareParametersOnce() {
        guard !self.parametersShared, let pool = self.pool, self.session.poolMode != .session,
            case .ready = self.session.state
        else { return }
        self.parametersShared = true
        self.session.shareParameters { pool.shared($0) }
        self.trimAfterLogin = true
    }

    private func attach(_ lease: ServerLease) {
        guard let eventLoop = self.context?.eventLoop else { return }
        Self.server(lease).attach(ServerOwner(lease: lease.request, eventLoop: eventLoop, client: self))
    }

    private func sendToServer(_ lease: ServerLease) {
        let server = Self.server(lease)
        let output = self.session.takeServerOutput()
        if server.eventLoop.inEventLoop {
            server.write(output)
            return
        }
        guard let eventLoop = self.context?.eventLoop else { return }
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        let credit = self.credit
        credit.send()
        server.send(output) {
            if credit.received() {
                eventLoop.execute { handler.value.readIfAllowed() }
            }
        }
    }

    /// Detaches this client from the server connection and returns it to the pool as `plan` says; on the server's loop.
    private static func giveBack(
        _ server: ServerConnection,
        _ lease: ServerLease,
        _ plan: ReturnPlan,
        _ preparedStatements: ServerStatements,
        pool: ProxyPool?,
        mode: PoolMode
    ) {
        server.detach(lease.request)
        server.putBack(preparedStatements: preparedStatements)
        guard let pool else { return }
        ServerReturn.run(plan, server: server, lease: lease.request, ledger: lease.ledger, pool: pool, mode: mode)
    }

    private func runCommand(_ purpose: ServerCommandPurpose, on lease: ServerLease) {
        guard let eventLoop = self.context?.eventLoop else { return }
        let server = Self.server(lease)
        server.detach(lease.request)
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        let request = lease.request
        server.run(purpose.sql).hop(to: eventLoop).whenComplete { result in
            let outcome: ServerCommandOutcome
            switch result {
            case .success(let finished):
                var reported: [(name: String, value: String)] = []
                if case .applyParameters(let changes) = purpose, finished.error == nil {
                    reported = server.parameters.withLock { $0.applied(changes) }
                }
                outcome = .finished(error: finished.error, status: finished.status, reported: reported)
            case .failure:
                outcome = .failed
            }
            handler.value.enqueue(.commandFinished(request, purpose, outcome))
        }
    }

    // MARK: TLS

    /// The first byte of a TLS handshake record.
    private static let tlsHandshakeRecord: UInt8 = 0x16

    /// After the `S` went out in plain text: what the client sends next is TLS. False (and the client closed) when
    /// the TLS handler could not be added.
    @discardableResult
    private func startTLS() -> Bool {
        guard let tls = self.tls, let context = self.context else { return false }
        do {
            try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context), position: .first)
            return true
        } catch {
            self.closeAfterFlush()
            return false
        }
    }

    /// The bytes read so far are the start of a handshake: they go through the TLS handler, from the head.
    private func startDirectTLS() {
        self.directTLS = true
        let buffered = self.frames.takeAll()
        guard self.startTLS(), let context = self.context, let buffered else { return }
        context.pipeline.syncOperations.fireChannelRead(NIOAny(buffered))
        context.pipeline.syncOperations.fireChannelReadComplete()
    }

    // MARK: Writing and leaving

    private func flushClient() {
        guard let context = self.context else { return }
        let buffers = self.session.takeClientOutput()
        guard !buffers.isEmpty else { return }
        for buffer in buffers {
            context.write(self.wrapOutboundOut(buffer), promise: nil)
        }
        context.flush()
    }

    private func closeAfterFlush() {
        guard let context = self.context, !self.closing else { return }
        self.closing = true
        for buffer in self.session.takeClientOutput() {
            context.write(self.wrapOutboundOut(buffer), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(self.wrapOutboundOut(self.allocator.buffer(capacity: 0))).whenComplete { _ in
            channel.close(promise: nil)
        }
        self.unregister()
    }

    private func unregister() {
        guard self.registered else { return }
        self.registered = false
        self.proxy.clients.unregister(self.clientID, admitted: self.admitted, activity: self.activity)
        self.activity = nil
        self.admitted = false
    }

    private func setActivity(_ activity: ClientActivity) {
        let state = Self.label(activity)
        guard state != self.activity, self.admitted else { return }
        self.proxy.metrics.clientConnectionChanged(from: self.activity, to: state)
        self.activity = state
        self.status?.setActivity(state)
    }

    // MARK: The admin console

    /// A client of the virtual database `pgbouncer`: it authenticates as any client does (`auth_type`, `auth_file`),
    /// then is refused unless `admin_users` or `stats_users` lists it; or it is user `pgbouncer` on the Unix socket
    /// run by Lifeguard's own OS user, let in without a password as PgBouncer does.
    private func admitConsole(user: String, configuration: LifeguardConfiguration) {
        let policy = AdminLoginPolicy(adminUsers: configuration.adminUsers, statsUsers: configuration.statsUsers)
        // PgBouncer's peer login: a login with `authenticates == false` uses the trust method below.
        let login = policy.login(user: user, peer: self.peer)
        self.consoleAccess = login?.access
        self.loggedIn(user: user, pool: PoolKey(database: AdminConsoleName.database, user: AdminConsoleName.user))
        let (key, target) =
            self.proxy.clients.issueCancelKey(self.clientID) ?? (
                PGCancelRequest(processID: 0, secretKey: 0), CancelTarget()
            )
        self.cancelTarget = target
        let method: PGServerAuthenticationStateMachine.Method =
            switch login?.authenticates == false ? nil : configuration.authType {
            case nil, .trust?, .cert?: .trust
            case .md5?: .md5
            case .scramSHA256?: .scramSHA256
            }
        let console: ConsoleLogin =
            login == nil
            ? .refused(message: "not allowed: \"\(user)\" is in neither admin_users nor stats_users")
            : .allowed(greeting: AdminDecision.greeting(version: AdminConsoleRunner.serverVersion))
        let admission = ClientLogin(
            mode: .statement,
            authentication: PGServerAuthenticationStateMachine(
                method: method,
                user: user,
                secret: self.proxy.secret(for: user)
            ),
            cachedParameters: nil,
            cancelKey: key,
            resetQuery: nil,
            console: console
        )
        self.enqueue(.admission(.admitted(admission)))
    }

    private func consoleQuery(_ query: String) {
        guard let eventLoop = self.context?.eventLoop else { return }
        guard let access = self.consoleAccess else { return }
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        let allocator = self.allocator
        self.proxy.console.answer(query, access: access, context: self.proxy, eventLoop: eventLoop) { reply in
            var encoded = allocator.buffer(capacity: 256)
            reply.encode(into: &encoded)
            let buffer = encoded
            if eventLoop.inEventLoop {
                handler.value.enqueue(.consoleAnswered(buffer))
            } else {
                eventLoop.execute { handler.value.enqueue(.consoleAnswered(buffer)) }
            }
        }
    }

    /// What the admin console shows of this client from now on.
    private func loggedIn(user: String, pool: PoolKey) {
        guard let status = self.proxy.clients.status(of: self.clientID) else { return }
        let login = ClientStatus.Login(
            user: user,
            pool: pool,
            applicationName: self.session.parameters["application_name"] ?? "",
            tls: self.session.isEncrypted
        )
        status.login.withLock { $0 = login }
        self.status = status
        if let activity = self.activity { status.setActivity(activity) }
    }

    private static func label(_ activity: ClientActivity) -> ClientConnectionState {
        switch activity {
        case .active: .active
        case .waiting: .waiting
        case .idle: .idle
        }
    }

    private static func label(_ reason: ClientRejection) -> ClientRejectReason {
        switch reason {
        case .maxClientConn: .maxClientConn
        case .auth: .auth
        case .protocol: .protocol
        }
    }
}

@available(*, unavailable)
extension ClientChannelHandler: Sendable {}

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
