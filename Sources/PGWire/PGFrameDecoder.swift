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
    /// Type bytes accepted, as a 256-bit set; `nil` accepts any.
    private let acceptedTypes: TypeSet?

    /// - Parameter acceptedTypes: when given, any other type byte is refused as soon as it arrives, as PostgreSQL
    ///   does, instead of waiting for a body whose length came from garbage.
    public init(
        maximumMessageLength: Int = PGFrameDecoder.defaultMaximumMessageLength,
        acceptedTypes: [UInt8]? = nil
    ) {
        precondition(maximumMessageLength >= 4, "a message length counts its own 4 bytes")
        self.maximumMessageLength = maximumMessageLength
        self.acceptedTypes = acceptedTypes.map(TypeSet.init)
    }

    /// Every message type a frontend may send after startup (the protocol chapter's "F" messages).
    public static let frontendMessageTypes: [UInt8] = Array("BCcdDEfFHPpQSX".utf8)

    /// A decoder for what clients send: refuses any type byte a frontend never sends.
    public static func frontend(
        maximumMessageLength: Int = PGFrameDecoder.defaultMaximumMessageLength
    ) -> PGFrameDecoder {
        PGFrameDecoder(maximumMessageLength: maximumMessageLength, acceptedTypes: Self.frontendMessageTypes)
    }

    private struct TypeSet: Sendable {
        private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

        init(_ types: [UInt8]) {
            for type in types {
                let bit = UInt64(1) << UInt64(type & 63)
                switch type >> 6 {
                case 0: self.words.0 |= bit
                case 1: self.words.1 |= bit
                case 2: self.words.2 |= bit
                default: self.words.3 |= bit
                }
            }
        }

        func contains(_ type: UInt8) -> Bool {
            let word: UInt64
            switch type >> 6 {
            case 0: word = self.words.0
            case 1: word = self.words.1
            case 2: word = self.words.2
            default: word = self.words.3
            }
            return word & (UInt64(1) << UInt64(type & 63)) != 0
        }
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
        if let acceptedTypes = self.acceptedTypes, let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            !acceptedTypes.contains(type)
        {
            throw .unexpectedMessage(messageType: type, context: "a client message")
        }
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
