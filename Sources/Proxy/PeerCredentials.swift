import AdminConsole
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Who is at the other end of a Unix-socket connection, as the kernel says (`SO_PEERCRED`): what PgBouncer's peer
/// login to the admin console rests on. TCP peers have no such identity.
enum PeerCredentials {
    /// Linux's `struct ucred`. Glibc declares it only under `_GNU_SOURCE`, which Swift's Glibc module does not set;
    /// three 32-bit fields, laid out as C lays them out.
    private struct UCred: Sendable {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }

    /// The identity of the peer of `channel`, an accepted Unix-socket connection; nil when the kernel does not say.
    /// Called on the channel's event loop, where NIO answers at once (the future is complete when returned).
    static func identity(of channel: any Channel) -> AdminLoginPolicy.PeerIdentity? {
        #if os(Linux)
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        let future: EventLoopFuture<UCred> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET),
            name: SocketOptionName(SO_PEERCRED)
        )
        var identity: AdminLoginPolicy.PeerIdentity?
        future.assumeIsolated().whenSuccess { credentials in
            identity = AdminLoginPolicy.PeerIdentity(sameUserAsProcess: credentials.uid == getuid())
        }
        return identity
        #else
        return nil
        #endif
    }
}
