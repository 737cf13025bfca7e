import NIOCore
import NIOEmbedded
import PGWire
import PoolCore
import Synchronization
import Testing

@testable import Proxy

/// Counts the reads that reach the socket (it sits next to the head of the pipeline).
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    private(set) var reads = 0

    func read(context: ChannelHandlerContext) {
        self.reads += 1
        context.read()
    }
}

@available(*, unavailable)
extension ReadCounter: Sendable {}

/// The server side of a connection in an EmbeddedChannel: reads withheld while its owner's client is full, and
/// writability reported to the owner.
@Suite struct ServerChannelHandlerTests {
    /// What the owner was told.
    final class Owner: ServerConnectionClient, Sendable {
        let frames = Mutex<[UInt8]>([])
        let writability = Mutex<[Bool]>([])

        func serverFrames(_ lease: RequestID, _ frames: [PGFrame]) { self.frames.withLock { $0 += frames.map(\.type) } }
        func serverClosed(_ lease: RequestID) {}
        func serverWritabilityChanged(_ lease: RequestID, _ writable: Bool) {
            self.writability.withLock { $0.append(writable) }
        }
    }

    struct Server {
        let channel: EmbeddedChannel
        let handler: ServerChannelHandler
        let counter: ReadCounter
        let owner: Owner
    }

    /// A handler past its startup (AuthenticationOk, ReadyForQuery), relaying to an owner of lease R1.
    func relayingServer() throws -> Server {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        let promise = loop.makePromise(of: ServerStartupResult.self)
        let handler = ServerChannelHandler(
            user: "app",
            credential: nil,
            startupMessage: PGStartupMessage(user: "app", database: "app"),
            promise: promise
        )
        let counter = ReadCounter()
        try channel.pipeline.syncOperations.addHandler(counter)
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5432)).wait()
        var startup = ByteBuffer()
        PGBackendMessage.authentication(.ok).encode(into: &startup)
        PGBackendMessage.readyForQuery(.idle).encode(into: &startup)
        try channel.writeInbound(startup)
        _ = try promise.futureResult.wait()
        let owner = Owner()
        let server = Server(channel: channel, handler: handler, counter: counter, owner: owner)
        handler.attach(
            ServerOwner(lease: RequestID(1), eventLoop: loop, client: owner)
        )
        return server
    }

    @Test func readsAreWithheldWhileTheOwnersClientIsFullAndResumeOnce() throws {
        let server = try self.relayingServer()
        let before = server.counter.reads
        server.handler.setReadsPaused(true, lease: RequestID(1))
        server.channel.read()
        server.channel.read()
        #expect(server.counter.reads == before, "no read reaches the socket while paused")
        // Another lease cannot lift the pause.
        server.handler.setReadsPaused(false, lease: RequestID(2))
        #expect(server.counter.reads == before)
        server.handler.setReadsPaused(false, lease: RequestID(1))
        #expect(server.counter.reads == before + 1, "the withheld read is made once")
        server.channel.read()
        #expect(server.counter.reads == before + 2)
    }

    @Test func givingTheConnectionBackLiftsThePause() throws {
        let server = try self.relayingServer()
        server.handler.setReadsPaused(true, lease: RequestID(1))
        server.channel.read()
        let paused = server.counter.reads
        server.handler.detach(RequestID(1))
        #expect(server.counter.reads == paused + 1, "the next client starts with the server read")
    }

    @Test func framesReachTheOwnerOncePerReadBurst() throws {
        let server = try self.relayingServer()
        var reply = ByteBuffer()
        PGBackendMessage.commandComplete(tag: "SELECT 1").encode(into: &reply)
        PGBackendMessage.readyForQuery(.idle).encode(into: &reply)
        try server.channel.writeInbound(reply)
        server.channel.pipeline.fireChannelReadComplete()
        #expect(server.owner.frames.withLock { $0 } == [UInt8(ascii: "C"), UInt8(ascii: "Z")])
    }

    @Test func aClosedServerConnectionLeavesNothingBehind() throws {
        weak var handler: ServerChannelHandler?
        do {
            let server = try self.relayingServer()
            handler = server.handler
            server.handler.detach(RequestID(1))
            _ = try? server.channel.finish()
        }
        #expect(handler == nil, "the handler outlived its channel (a reference cycle)")
    }

    @Test func theOwnerHearsWhenTheServerStopsTakingWrites() throws {
        let server = try self.relayingServer()
        server.channel.isWritable = false
        server.channel.pipeline.fireChannelWritabilityChanged()
        server.channel.isWritable = true
        server.channel.pipeline.fireChannelWritabilityChanged()
        #expect(server.owner.writability.withLock { $0 } == [false, true])
    }
}
