import ConnectionPool
import NIOCore
import PGWire
import PoolCore
import ProxyCore
import Synchronization

/// What the client holding a server connection hears from it, on the client's event loop. A protocol rather than
/// closures: a lease is attached once per transaction, and an owner reference costs a retain where three closures
/// cost three allocations.
protocol ServerConnectionClient: AnyObject {
    /// One read burst of frames, in order.
    func serverFrames(_ lease: RequestID, _ frames: [PGFrame])
    /// The connection closed (after every frame it delivered).
    func serverClosed(_ lease: RequestID)
    /// The connection stopped (false) or started again (true) taking what is written to it.
    func serverWritabilityChanged(_ lease: RequestID, _ writable: Bool)
}

/// Who receives what PostgreSQL sends while a client holds the connection.
struct ServerOwner: Sendable {
    /// The pool's request that leased the connection: tells this lease from every other, so that a late `detach`
    /// cannot drop a newer owner.
    let lease: RequestID
    private let client: NIOLoopBound<any ServerConnectionClient>

    /// The client's event loop, where it is told.
    var eventLoop: any EventLoop { self.client.eventLoop }

    /// Made on `eventLoop`, the client's.
    init(lease: RequestID, eventLoop: any EventLoop, client: any ServerConnectionClient) {
        self.lease = lease
        self.client = NIOLoopBound(client, eventLoop: eventLoop)
    }

    /// The calls below run on ``eventLoop``.
    func receive(_ frames: [PGFrame]) { self.client.value.serverFrames(self.lease, frames) }
    func closed() { self.client.value.serverClosed(self.lease) }
    func writabilityChanged(_ writable: Bool) { self.client.value.serverWritabilityChanged(self.lease, writable) }
}

/// What a command Lifeguard ran itself (reset query, `SET`s, ping) ended with.
struct ServerCommandResult: Sendable {
    /// The first ErrorResponse, if any.
    var error: PGErrorFields?
    /// The transaction status of the final ReadyForQuery.
    var status: PGTransactionStatus
}

/// One authenticated PostgreSQL connection that a pool lends to clients.
///
/// Thread-safe: every operation hops to the connection's event loop, where ``ServerChannelHandler`` keeps the state.
final class ServerConnection: PooledConnection {
    let id: ConnectionID
    let key: PoolKey
    let channel: any Channel
    /// The server's own BackendKeyData, for forwarding CancelRequests.
    let backendKey: PGCancelRequest?
    /// Where a CancelRequest for this connection must go.
    let cancelAddress: SocketAddress?
    /// The ParameterStatus values of the startup, in the order the server sent them.
    let startupParameters: [(name: String, value: String)]
    /// Run-time parameters as the server last reported them (plus those Lifeguard set and the server does not report).
    let parameters: Mutex<ServerParameters>
    /// The server names of the statements Lifeguard prepared here (transaction and statement mode); lent to the
    /// client that holds the connection (``takePreparedStatements()``) and put back with it.
    private let preparedStatements = Mutex(ServerStatements())
    private let handler: NIOLoopBound<ServerChannelHandler>
    private let pingTimeout: TimeAmount

    init(
        id: ConnectionID,
        key: PoolKey,
        channel: any Channel,
        handler: NIOLoopBound<ServerChannelHandler>,
        startup: ServerStartupResult,
        cancelAddress: SocketAddress?,
        pingTimeout: TimeAmount
    ) {
        self.id = id
        self.key = key
        self.channel = channel
        self.handler = handler
        self.backendKey = startup.backendKey
        self.startupParameters = startup.parameters
        self.parameters = Mutex(
            ServerParameters(Dictionary(startup.parameters.map { ($0.name, $0.value) }, uniquingKeysWith: { $1 }))
        )
        self.cancelAddress = cancelAddress
        self.pingTimeout = pingTimeout
    }

    var eventLoop: any EventLoop { self.channel.eventLoop }

    /// The event loop, as the pool's affinity: clients on the same loop get this connection first.
    var affinity: Int? { Self.affinity(of: self.channel.eventLoop) }

    static func affinity(of eventLoop: any EventLoop) -> Int {
        // The address itself: unique while the loop lives (the group outlives every connection), and no hashing.
        Int(bitPattern: ObjectIdentifier(eventLoop))
    }

    var isActive: Bool { self.channel.isActive }

    /// Routes what the server says to `owner` until ``detach(_:)``.
    func attach(_ owner: ServerOwner) {
        // Once per transaction: on the connection's own loop (the usual case) without allocating a closure.
        if self.eventLoop.inEventLoop {
            self.handler.value.attach(owner)
        } else {
            self.onLoop { $0.attach(owner) }
        }
    }

    /// Stops routing to the owner of `lease` (if it still is the owner), and reads again if they were paused.
    func detach(_ lease: RequestID) {
        if self.eventLoop.inEventLoop {
            self.handler.value.detach(lease)
        } else {
            self.onLoop { $0.detach(lease) }
        }
    }

    /// Backpressure: the owner's client is not taking what the server sends; stop reading from the server.
    func pauseReads(_ lease: RequestID) {
        self.onLoop { $0.setReadsPaused(true, lease: lease) }
    }

    func resumeReads(_ lease: RequestID) {
        self.onLoop { $0.setReadsPaused(false, lease: lease) }
    }

    /// The prepared statements, lent to the client that leased the connection; empty until ``putBack(preparedStatements:)``.
    func takePreparedStatements() -> ServerStatements {
        self.preparedStatements.withLock { statements in
            var taken = ServerStatements()
            swap(&taken, &statements)
            return taken
        }
    }

    func putBack(preparedStatements: ServerStatements) {
        self.preparedStatements.withLock { $0 = preparedStatements }
    }

    func clearPreparedStatements() {
        self.preparedStatements.withLock { $0.removeAll() }
    }

    /// Writes client messages unchanged and flushes once; on the connection's own event loop.
    func write(_ messages: OutboundBytes) {
        self.handler.value.write(messages)
    }

    /// ``write(_:)`` from another event loop; `written` runs on this connection's loop once the messages are
    /// written (the caller's flow control: see ``CrossLoopCredit``).
    func send(_ messages: OutboundBytes, written: @escaping @Sendable () -> Void) {
        self.eventLoop.execute {
            self.write(messages)
            written()
        }
    }

    /// Runs `sql` as a simple Query of Lifeguard's own, swallowing the replies. Fails when the connection breaks.
    func run(_ sql: String, timeout: TimeAmount? = nil) -> EventLoopFuture<ServerCommandResult> {
        let promise = self.eventLoop.makePromise(of: ServerCommandResult.self)
        self.onLoop { $0.run(sql, timeout: timeout, promise: promise) }
        return promise.futureResult
    }

    /// An empty query (`;`), answered with EmptyQueryResponse and ReadyForQuery unless the connection is gone.
    func ping() async -> Bool {
        guard self.channel.isActive else { return false }
        do {
            let result = try await self.run(";", timeout: self.pingTimeout).get()
            return result.error == nil && result.status == .idle
        } catch {
            return false
        }
    }

    /// Sends Terminate and closes.
    func close() {
        let channel = self.channel
        channel.eventLoop.execute {
            guard channel.isActive else { return }
            var buffer = channel.allocator.buffer(capacity: 5)
            PGFrontendMessage.terminate.encode(into: &buffer)
            channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    private func onLoop(_ body: @escaping @Sendable (ServerChannelHandler) -> Void) {
        let handler = self.handler
        if self.eventLoop.inEventLoop {
            body(handler.value)
        } else {
            self.eventLoop.execute { body(handler.value) }
        }
    }
}

/// What the startup of a server connection collected.
struct ServerStartupResult: Sendable {
    var parameters: [(name: String, value: String)] = []
    var backendKey: PGCancelRequest?
}

/// Why a server connection could not be opened, before it is turned into a ``ConnectError``.
struct ServerStartupError: Error {
    var error: ConnectError
}

/// The server side of one connection, on its event loop: authenticates, then relays to the owner or runs
/// Lifeguard's own commands.
///
/// States: `connecting` → `idle` (ReadyForQuery after authentication) | `closed`;
/// `idle` → `relaying` (attach) | `command` (run); `relaying` → `idle` (detach); `command` → `idle`;
/// any → `closed` (channel inactive), which is final.
final class ServerChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The rare states are boxed: the state is read for every relayed read burst, and stays small that way.
    private enum State {
        indirect case connecting(
            PGClientAuthenticationStateMachine,
            ServerStartupResult,
            EventLoopPromise<ServerStartupResult>
        )
        case idle
        case relaying(ServerOwner)
        indirect case command(
            EventLoopPromise<ServerCommandResult>,
            PGErrorFields?,
            Scheduled<Void>?,
            then: ServerOwner?
        )
        case closed
    }

    private var state: State {
        didSet {
            if case .relaying = self.state { self.isRelaying = true } else { self.isRelaying = false }
        }
    }
    /// `state` is `.relaying`.
    private var isRelaying = false
    private var frames = FrameBuffer()
    private let decoder = PGFrameDecoder()
    private var batch: [PGFrame] = []
    private let startupMessage: PGStartupMessage
    /// Filled once the connection exists; ParameterStatus updates go there. Cleared when the handler is removed:
    /// the connection holds this handler, so the two would keep each other.
    var connection: ServerConnection?
    private var context: ChannelHandlerContext?
    /// Backpressure: the owner's client is full, so the server is not read (the kernel's buffers then fill and
    /// PostgreSQL waits). Lifted when the owner detaches.
    private var readsPaused = false
    /// Batches handed to an owner on another event loop and not yet taken.
    private let credit = CrossLoopCredit()
    private var readPending = false

    init(
        user: String,
        credential: PGLoginCredential?,
        startupMessage: PGStartupMessage,
        promise: EventLoopPromise<ServerStartupResult>
    ) {
        self.state = .connecting(
            PGClientAuthenticationStateMachine(user: user, credential: credential),
            ServerStartupResult(),
            promise
        )
        self.startupMessage = startupMessage
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // Added after TLS was negotiated: the channel is already active.
        if context.channel.isActive { self.sendStartup(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.connection = nil
    }

    /// Writes and flushes from this handler's place in the pipeline (the last): a relayed request does not walk
    /// from the pipeline's tail through this handler first.
    func write(_ messages: OutboundBytes) {
        guard let context = self.context else { return }
        for message in messages { context.write(self.wrapOutboundOut(message), promise: nil) }
        context.flush()
    }

    func read(context: ChannelHandlerContext) {
        if self.readsPaused || !self.credit.mayContinue() {
            self.readPending = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .relaying(let owner) = self.state {
            let writable = context.channel.isWritable
            if owner.eventLoop.inEventLoop {
                owner.writabilityChanged(writable)
            } else {
                owner.eventLoop.execute { owner.writabilityChanged(writable) }
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func setReadsPaused(_ paused: Bool, lease: RequestID) {
        guard case .relaying(let owner) = self.state, owner.lease == lease else { return }
        self.setReadsPaused(paused)
    }

    private func setReadsPaused(_ paused: Bool) {
        self.readsPaused = paused
        self.readIfAllowed()
    }

    /// Makes the read that was withheld, once nothing holds it back any more.
    private func readIfAllowed() {
        guard self.readPending, !self.readsPaused, self.credit.mayContinue(), let context = self.context else { return }
        self.readPending = false
        context.read()
    }

    func channelActive(context: ChannelHandlerContext) {
        self.sendStartup(context: context)
        context.fireChannelActive()
    }

    private func sendStartup(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 128)
        PGStartupPacket.startup(self.startupMessage).encode(into: &buffer)
        context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.frames.append(self.unwrapInboundIn(data))
        do {
            while let frame = try self.frames.nextFrame(self.decoder) {
                self.handle(frame, context: context)
            }
        } catch {
            self.fail(context: context, message: "the server broke the protocol: \(error)")
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.deliverBatch()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.deliverBatch()
        let state = self.state
        self.state = .closed
        switch state {
        case .connecting(_, _, let promise):
            promise.fail(
                ServerStartupError(
                    error: ConnectError(reason: .server, message: "the server closed the connection during startup")
                )
            )
        case .relaying(let owner):
            if owner.eventLoop.inEventLoop {
                owner.closed()
            } else {
                owner.eventLoop.execute { owner.closed() }
            }
        case .command(let promise, _, let timer, let then):
            timer?.cancel()
            promise.fail(ChannelError.ioOnClosedChannel)
            if let then { then.eventLoop.execute { then.closed() } }
        case .idle, .closed:
            break
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Operations (on the event loop)

    func attach(_ owner: ServerOwner) {
        switch self.state {
        case .idle, .relaying:
            self.state = .relaying(owner)
        case .command(let promise, let error, let timer, _):
            self.state = .command(promise, error, timer, then: owner)
        case .closed:
            owner.eventLoop.execute { owner.closed() }
        case .connecting:
            break
        }
    }

    func detach(_ lease: RequestID) {
        switch self.state {
        case .relaying(let owner) where owner.lease == lease:
            self.deliverBatch()
            self.state = .idle
            self.setReadsPaused(false)
        case .command(let promise, let error, let timer, let then) where then?.lease == lease:
            self.state = .command(promise, error, timer, then: nil)
        default:
            break
        }
    }

    func run(_ sql: String, timeout: TimeAmount?, promise: EventLoopPromise<ServerCommandResult>) {
        guard let context = self.context else {
            promise.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let then: ServerOwner?
        switch self.state {
        case .idle:
            then = nil
        case .relaying(let owner):
            self.deliverBatch()
            then = owner
        case .closed, .connecting, .command:
            promise.fail(ChannelError.inappropriateOperationForState)
            return
        }
        let timer = timeout.map { timeout in
            let channel = context.channel
            return context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        }
        self.state = .command(promise, nil, timer, then: then)
        var buffer = context.channel.allocator.buffer(capacity: sql.utf8.count + 6)
        PGFrontendMessage.query(sql).encode(into: &buffer)
        context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
    }

    // MARK: Frames

    private func handle(_ frame: PGFrame, context: ChannelHandlerContext) {
        if frame.type == PGBackendMessageType.parameterStatus,
            case .parameterStatus(let name, let value)? = try? PGBackendMessage(frame: frame)
        {
            if let connection = self.connection {
                connection.parameters.withLock { $0[name] = value }
            } else if case .connecting(let machine, var result, let promise) = self.state {
                result.parameters.append((name, value))
                self.state = .connecting(machine, result, promise)
            }
        }
        if self.isRelaying {
            // Every relayed frame: checked without copying the state (and retaining its owner's closures).
            self.batch.append(frame)
            return
        }
        switch self.state {
        case .connecting(var machine, var result, let promise):
            self.handleStartup(frame, machine: &machine, result: &result, promise: promise, context: context)
        case .relaying:
            self.batch.append(frame)
        case .command(let promise, var error, let timer, let then):
            switch frame.type {
            case PGBackendMessageType.errorResponse:
                if error == nil, case .errorResponse(let fields)? = try? PGBackendMessage(frame: frame) {
                    error = fields
                }
                self.state = .command(promise, error, timer, then: then)
            case PGBackendMessageType.readyForQuery:
                timer?.cancel()
                let status = Self.transactionStatus(frame) ?? .failedTransaction
                self.state = then.map { .relaying($0) } ?? .idle
                promise.succeed(ServerCommandResult(error: error, status: status))
            default:
                break
            }
        case .idle, .closed:
            // Nobody holds the connection: notices and notifications have no one to go to.
            break
        }
    }

    private func handleStartup(
        _ frame: PGFrame,
        machine: inout PGClientAuthenticationStateMachine,
        result: inout ServerStartupResult,
        promise: EventLoopPromise<ServerStartupResult>,
        context: ChannelHandlerContext
    ) {
        let message: PGBackendMessage
        do {
            message = try PGBackendMessage(frame: frame)
        } catch {
            self.fail(context: context, message: "the server broke the protocol during startup: \(error)")
            return
        }
        switch message {
        case .authentication(let request):
            switch machine.receive(request) {
            case .send(let reply):
                var buffer = context.channel.allocator.buffer(capacity: 64)
                reply.encode(into: &buffer)
                context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
            case .wait, .authenticated:
                break
            case .fail(let error):
                self.state = .closed
                // Lifeguard cannot answer what the server asks (no password configured, a method it lacks): the
                // same next time, until the configuration changes.
                promise.fail(
                    ServerStartupError(
                        error: ConnectError(reason: .auth, message: error.description, isPermanent: true)
                    )
                )
                context.close(promise: nil)
                return
            }
            self.state = .connecting(machine, result, promise)
        case .backendKeyData(let processID, let secretKey):
            result.backendKey = PGCancelRequest(processID: processID, secretKey: secretKey)
            self.state = .connecting(machine, result, promise)
        case .readyForQuery:
            self.state = .idle
            promise.succeed(result)
        case .errorResponse(let fields):
            let code = fields.sqlState ?? PGSQLState.connectionFailure
            let permanent = PGSQLState.refusesLoginForGood(code)
            let reason: ConnectionErrorReason =
                code.hasPrefix("28") ? .auth : permanent ? .rejected : .server
            let text = fields.message ?? "unknown error"
            self.state = .closed
            promise.fail(
                ServerStartupError(
                    error: ConnectError(reason: reason, message: text, sqlState: code, isPermanent: permanent)
                )
            )
            context.close(promise: nil)
        default:
            // ParameterStatus (already recorded), NoticeResponse, NegotiateProtocolVersion.
            break
        }
    }

    private func fail(context: ChannelHandlerContext, message: String) {
        if case .connecting(_, _, let promise) = self.state {
            self.state = .closed
            promise.fail(ServerStartupError(error: ConnectError(reason: .server, message: message)))
        }
        context.close(promise: nil)
    }

    private func deliverBatch() {
        guard !self.batch.isEmpty, case .relaying(let owner) = self.state else {
            self.batch.removeAll(keepingCapacity: true)
            return
        }
        if owner.eventLoop.inEventLoop {
            // Taken out first: the owner may end its lease inside `receive`, and `detach` delivers again.
            var batch: [PGFrame] = []
            swap(&batch, &self.batch)
            owner.receive(batch)
            // Unique again once the owner returned: the next read reuses the storage.
            batch.removeAll(keepingCapacity: true)
            if self.batch.isEmpty { self.batch = batch }
        } else if let context = self.context {
            // Another loop: at most a few batches on their way, or the reads would run ahead of a slower client
            // loop and its task queue would grow without bound.
            let batch = self.batch
            self.batch = []
            self.credit.send()
            let credit = self.credit
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            owner.eventLoop.execute {
                owner.receive(batch)
                if credit.received() {
                    handler.eventLoop.execute { handler.value.readIfAllowed() }
                }
            }
        }
    }

    static func transactionStatus(_ frame: PGFrame) -> PGTransactionStatus? {
        frame.bytes.getInteger(at: frame.bytes.readerIndex + 5, as: UInt8.self).flatMap(PGTransactionStatus.init)
    }
}
