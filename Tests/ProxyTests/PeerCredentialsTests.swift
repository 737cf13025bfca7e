import AdminConsole
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import Proxy

@Suite struct PeerCredentialsTests {
    /// A client of this process on a Unix socket is this process's OS user: the kernel says so through
    /// `SO_PEERCRED`, read where the listener sets up the accepted channel.
    @Test func aUnixSocketPeerOfTheSameProcessIsTheSameUser() async throws {
        #if os(Linux)
        let path = NSTemporaryDirectory() + "lifeguard-peer-\(UInt32.random(in: 0...UInt32.max)).sock"
        defer { unlink(path) }
        let seen = Mutex<[AdminLoginPolicy.PeerIdentity?]>([])
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                let identity = PeerCredentials.identity(of: channel)
                seen.withLock { $0.append(identity) }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
            .get()
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(unixDomainSocketPath: path)
            .get()
        let deadline = ContinuousClock.now + .seconds(5)
        while seen.withLock({ $0.isEmpty }) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        try await client.close()
        try await server.close()
        #expect(seen.withLock { $0 } == [AdminLoginPolicy.PeerIdentity(sameUserAsProcess: true)])
        #endif
    }
}
