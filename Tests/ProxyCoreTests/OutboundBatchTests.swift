import NIOCore
import Testing

@testable import ProxyCore

struct OutboundBatchTests {
    let allocator = ByteBufferAllocator()

    @Test func smallMessagesAreCopiedIntoOneBufferInOrder() {
        var batch = OutboundBatch()
        #expect(batch.isEmpty)
        batch.append(ByteBuffer(string: "one"), allocator: self.allocator)
        batch.append(allocator: self.allocator) { $0.writeString("two") }
        batch.append(ByteBuffer(string: "three"), allocator: self.allocator)
        #expect(!batch.isEmpty)
        let buffers = Array(batch.take())
        #expect(buffers.map { String(buffer: $0) } == ["onetwothree"])
        #expect(batch.isEmpty)
        #expect(batch.take().isEmpty)
    }

    @Test func largeMessagesArePassedOnUncopiedBetweenTheSmallOnes() {
        var batch = OutboundBatch()
        let large = ByteBuffer(repeating: UInt8(ascii: "x"), count: OutboundBatch.copyLimit + 1)
        batch.append(ByteBuffer(string: "a"), allocator: self.allocator)
        batch.append(large, allocator: self.allocator)
        batch.append(ByteBuffer(string: "b"), allocator: self.allocator)
        batch.append(ByteBuffer(string: "c"), allocator: self.allocator)
        let buffers = Array(batch.take())
        #expect(buffers.count == 3)
        #expect(String(buffer: buffers[0]) == "a")
        #expect(buffers[1] == large)
        // The same storage: not copied.
        #expect(
            buffers[1].withUnsafeReadableBytes { $0.baseAddress } == large.withUnsafeReadableBytes { $0.baseAddress }
        )
        #expect(String(buffer: buffers[2]) == "bc")
    }

    @Test func aMessageOfExactlyTheLimitIsCopied() {
        var batch = OutboundBatch()
        batch.append(ByteBuffer(repeating: 1, count: OutboundBatch.copyLimit), allocator: self.allocator)
        batch.append(ByteBuffer(repeating: 2, count: 1), allocator: self.allocator)
        #expect(batch.take().map(\.readableBytes) == [OutboundBatch.copyLimit + 1])
    }
}
