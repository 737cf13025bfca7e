import NIOCore

/// Cuts a byte stream into ``PGFrame``s (type byte, Int32 length, body) for either direction.
///
/// The length is checked as soon as the 5-byte header is in: a negative length, one below 4, or one above
/// ``maximumMessageLength`` throws a ``PGProtocolError`` before any body byte is buffered, so a hostile
/// length never turns into an allocation. Frames are slices of the input buffer.
public struct PGFrameDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = PGFrame

    /// PostgreSQL's own limit for a message (`PQ_LARGE_MESSAGE_LIMIT`, 1 GiB).
    public static let defaultMaximumMessageLength = 1 << 30

    /// The largest accepted value of the length field (which counts itself but not the type byte).
    public let maximumMessageLength: Int

    public init(maximumMessageLength: Int = PGFrameDecoder.defaultMaximumMessageLength) {
        precondition(maximumMessageLength >= 4, "a message length counts its own 4 bytes")
        self.maximumMessageLength = maximumMessageLength
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> PGFrame? {
        try self.decodeFrame(buffer: &buffer)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> PGFrame? {
        if let frame = try self.decodeFrame(buffer: &buffer) {
            return frame
        }
        if seenEOF && buffer.readableBytes > 0 {
            let type: UInt8? = buffer.getInteger(at: buffer.readerIndex)
            let received = buffer.readableBytes
            buffer.moveReaderIndex(forwardBy: received)
            throw PGProtocolError.truncatedMessage(messageType: type, receivedBytes: received)
        }
        return nil
    }

    /// The pure step: returns a frame, `nil` when more bytes are needed, or throws on an invalid length.
    public func decodeFrame(buffer: inout ByteBuffer) throws(PGProtocolError) -> PGFrame? {
        guard
            let (type, length) = buffer.getMultipleIntegers(
                at: buffer.readerIndex,
                endianness: .big,
                as: (UInt8, Int32).self
            )
        else {
            return nil
        }
        if length < 0 {
            throw .negativeLength(messageType: type, length: length)
        }
        if length < 4 {
            throw .lengthTooShort(messageType: type, length: length, minimum: 4)
        }
        if Int(length) > self.maximumMessageLength {
            throw .messageTooLong(messageType: type, length: length, maximum: self.maximumMessageLength)
        }
        guard let bytes = buffer.readSlice(length: Int(length) + 1) else {
            return nil
        }
        return PGFrame(validatedBytes: bytes, type: type)
    }
}
