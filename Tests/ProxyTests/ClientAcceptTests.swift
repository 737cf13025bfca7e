import LifeguardConfig
import LifeguardMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PGWire
import PoolCore
import Testing

@testable import Proxy

/// Accepting client connections on real sockets.
@Suite struct ClientAcceptTests {
    /// At shutdown the listener closes while a connection it accepted is being set up; NIO then closes that
    /// connection before it was ever active, without `channelInactive`. Its registry entry must go all the same, or
    /// the drain waits its whole `drain_timeout` for a client that is gone.
    @Test func aConnectionClosedBeforeItBecameActiveLeavesTheRegistry() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = LifeguardConfiguration.defaults
        configuration.upstream = nil
        let context = ProxyContext(
            configuration: configuration,
            userList: PGUserList(secrets: [:]),
            clientTLS: nil,
            metrics: LifeguardMetrics(version: "test"),
            logger: Logger(label: "test"),
            group: group,
            makeObserver: { _, _ in NoOpPoolObserver() }
        )
        let listener = NIOLockedValueBox<(any Channel)?>(nil)
        let initialized = NIOLockedValueBox(0)
        let recvAllocator = AdaptiveRecvByteBufferAllocator()
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // One loop: the listener is closed at once, before the bootstrap goes on to activate the child.
                    listener.withLockedValue { $0 }?.close(promise: nil)
                    try ProxyServer.initializeClient(channel, context: context, tcp: true, recvAllocator: recvAllocator)
                    initialized.withLockedValue { $0 += 1 }
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        listener.withLockedValue { $0 = server }
        let port = try #require(server.localAddress?.port)
        let client = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
        try await server.closeFuture.get()
        // The accepted channel's handlers are removed in a task after its close; a few ticks of the loop suffice.
        for _ in 0..<100 where context.clients.count > 0 {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(initialized.withLockedValue { $0 } == 1, "the client connection was not set up")
        #expect(context.clients.count == 0, "the registry kept a client connection that never became active")
        try? await client.close()
        try await group.shutdownGracefully()
    }
}
