import NIOCore
import Synchronization

/// The greeting's ParameterStatus messages, encoded once for a pool's clients that get the same ones.
///
/// A login writes a ParameterStatus for every parameter the server reported (about fourteen on PostgreSQL 15): some
/// 25,000 instructions per connection to encode, a tenth of what a connection costs under `pgbench -C`. Clients of
/// one pool usually ask for the same parameters, so the last block is kept with what it was made from and reused
/// when both match (checked value by value, so a match is never wrong, only a miss costs the encoding).
public final class GreetingCache: Sendable {
    private struct Entry {
        var server: [(name: String, value: String)]
        /// The client's parameters the block was made with; nil in session mode, which reports the server's as
        /// they are.
        var wanted: SessionParameters?
        var block: ByteBuffer
    }

    private let last = Mutex<Entry?>(nil)

    public init() {}

    /// The block for `server` and `wanted`: the kept one if both match, else the one `encode` writes (then kept).
    func block(
        server: [(name: String, value: String)],
        wanted: SessionParameters?,
        allocator: ByteBufferAllocator,
        encode: (inout ByteBuffer) -> Void
    ) -> ByteBuffer {
        let kept = self.last.withLock { last -> ByteBuffer? in
            guard let entry = last, entry.wanted == wanted, Self.equal(entry.server, server) else { return nil }
            return entry.block
        }
        if let kept { return kept }
        var block = allocator.buffer(capacity: 512)
        encode(&block)
        self.last.withLock { $0 = Entry(server: server, wanted: wanted, block: block) }
        return block
    }

    private static func equal(_ lhs: [(name: String, value: String)], _ rhs: [(name: String, value: String)]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        for (left, right) in zip(lhs, rhs) where left.name != right.name || left.value != right.value { return false }
        return true
    }
}
