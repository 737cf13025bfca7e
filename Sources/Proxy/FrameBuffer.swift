import NIOCore
import PGWire

/// Collects the bytes of one direction and cuts them into frames.
///
/// When everything read so far was consumed, the next read becomes the buffer itself, so the common case (whole
/// messages per read) never copies: frames are slices of what the socket gave us.
struct FrameBuffer {
    private var buffer: ByteBuffer? = nil

    mutating func append(_ bytes: ByteBuffer) {
        guard var existing = self.buffer, existing.readableBytes > 0 else {
            self.buffer = bytes
            return
        }
        self.buffer = nil
        // Only the unfinished message is kept: what was consumed goes before more is added. Without this a long
        // stream of messages that straddle reads (a large result, a COPY) grew one buffer by every read, to tens of MB.
        existing.discardReadBytes()
        existing.writeImmutableBuffer(bytes)
        self.buffer = existing
    }

    /// The next typed frame, `nil` when more bytes are needed.
    mutating func nextFrame(_ decoder: PGFrameDecoder) throws(PGProtocolError) -> PGFrame? {
        guard var buffer = self.buffer else { return nil }
        self.buffer = nil
        defer { self.keep(buffer) }
        return try decoder.decodeFrame(buffer: &buffer)
    }

    /// The next untyped startup packet, `nil` when more bytes are needed.
    mutating func nextStartupPacket(_ decoder: PGStartupDecoder) throws(PGProtocolError) -> PGStartupPacket? {
        guard var buffer = self.buffer else { return nil }
        self.buffer = nil
        defer { self.keep(buffer) }
        return try decoder.decodePacket(buffer: &buffer)
    }

    /// Drops the buffer once it is consumed: an idle connection then holds no receive buffer (returned frames are
    /// slices that keep their own bytes alive as long as they are used).
    private mutating func keep(_ buffer: ByteBuffer) {
        self.buffer = buffer.readableBytes > 0 ? buffer : nil
    }

    /// Everything received and not consumed, taken out (TLS that starts after it was read).
    mutating func takeAll() -> ByteBuffer? {
        defer { self.buffer = nil }
        return self.buffer
    }

    /// The first byte not consumed yet.
    var firstByte: UInt8? { self.buffer.flatMap { $0.getInteger(at: $0.readerIndex, as: UInt8.self) } }

    /// Bytes received but not yet part of a complete message.
    var pendingBytes: Int { self.buffer?.readableBytes ?? 0 }

    /// The capacity of the storage kept for them.
    var keptCapacity: Int { self.buffer?.capacity ?? 0 }
}
