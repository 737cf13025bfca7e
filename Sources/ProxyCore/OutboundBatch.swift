import NIOCore

/// What one read cycle sends to one peer, written with a single flush.
///
/// Small messages are copied into one buffer: a few hundred bytes of copying cost less than a pipeline write per
/// message, and the kernel gets one contiguous write. Large messages (over ``copyLimit``) are passed on as they
/// are, in order, without copying.
struct OutboundBatch {
    static let copyLimit = 8 * 1024
    /// Small messages are copied into buffers of about this size.
    static let chunkSize = 16 * 1024

    private(set) var buffers: [ByteBuffer] = []
    /// Where small messages are copied; the last element to be written.
    private var current: ByteBuffer?

    var isEmpty: Bool { self.buffers.isEmpty && (self.current?.readableBytes ?? 0) == 0 }

    /// Adds one message (or any bytes) as they are.
    mutating func append(_ bytes: ByteBuffer, allocator: ByteBufferAllocator) {
        if bytes.readableBytes > Self.copyLimit {
            self.closeCurrent()
            self.buffers.append(bytes)
            return
        }
        self.withCurrent(allocator: allocator) { $0.writeImmutableBuffer(bytes) }
    }

    /// Adds bytes written by `encode` (an encoded message of Lifeguard's own).
    mutating func append(allocator: ByteBufferAllocator, _ encode: (inout ByteBuffer) -> Void) {
        self.withCurrent(allocator: allocator, encode)
    }

    /// Everything added so far, in order; the batch is empty afterwards.
    mutating func take() -> OutboundBytes {
        var taken = OutboundBytes(buffers: [], last: self.current)
        self.current = nil
        if !self.buffers.isEmpty { swap(&taken.buffers, &self.buffers) }
        return taken
    }

    private mutating func withCurrent(allocator: ByteBufferAllocator, _ body: (inout ByteBuffer) -> Void) {
        if let current = self.current, current.readableBytes >= Self.chunkSize {
            // A large reply goes out in chunks: buffers that never outgrow this stay below malloc's mmap threshold
            // and are reused as they are freed, instead of one buffer doubling to hundreds of KB per read.
            self.closeCurrent()
            self.current = allocator.buffer(capacity: Self.chunkSize + Self.copyLimit)
        }
        if self.current == nil { self.current = allocator.buffer(capacity: 1024) }
        body(&self.current!)
    }

    private mutating func closeCurrent() {
        guard let current = self.current else { return }
        self.current = nil
        if current.readableBytes > 0 { self.buffers.append(current) }
    }
}

/// What an ``OutboundBatch`` had, in order: usually one buffer of small messages, which needs no array.
public struct OutboundBytes: Sequence, Sendable {
    /// Large messages and full chunks, before `last`.
    fileprivate var buffers: [ByteBuffer]
    fileprivate var last: ByteBuffer?

    public var isEmpty: Bool { self.buffers.isEmpty && (self.last?.readableBytes ?? 0) == 0 }

    public func makeIterator() -> Iterator { Iterator(bytes: self) }

    public struct Iterator: IteratorProtocol {
        private var bytes: OutboundBytes
        private var index = 0

        fileprivate init(bytes: OutboundBytes) { self.bytes = bytes }

        public mutating func next() -> ByteBuffer? {
            if self.index < self.bytes.buffers.count {
                self.index += 1
                return self.bytes.buffers[self.index - 1]
            }
            defer { self.bytes.last = nil }
            guard let last = self.bytes.last, last.readableBytes > 0 else { return nil }
            return last
        }
    }
}
