import NIOCore

/// Decodes the untyped first packets of a client connection into ``PGStartupPacket``s.
///
/// The proxy uses it until it has a StartupMessage (SSLRequest and GSSENCRequest may come first) and then
/// switches to ``PGFrameDecoder``. Lengths are checked as in PostgreSQL: at least 8 bytes (length + code),
/// at most ``maximumPacketLength`` (10,000 by default, PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`).
public struct PGStartupDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = PGStartupPacket

    public static let defaultMaximumPacketLength = 10_000

    public let maximumPacketLength: Int

    public init(maximumPacketLength: Int = PGStartupDecoder.defaultMaximumPacketLength) {
        precondition(maximumPacketLength >= 16, "a CancelRequest needs 16 bytes")
        self.maximumPacketLength = maximumPacketLength
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> PGStartupPacket? {
        try self.decodePacket(buffer: &buffer)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> PGStartupPacket? {
        if let packet = try self.decodePacket(buffer: &buffer) {
            return packet
        }
        if seenEOF && buffer.readableBytes > 0 {
            let received = buffer.readableBytes
            buffer.moveReaderIndex(forwardBy: received)
            throw PGProtocolError.truncatedMessage(messageType: nil, receivedBytes: received)
        }
        return nil
    }

    /// The pure step: a packet, `nil` when more bytes are needed, or a typed error.
    public func decodePacket(buffer: inout ByteBuffer) throws(PGProtocolError) -> PGStartupPacket? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else {
            return nil
        }
        if length < 0 {
            throw .negativeLength(messageType: nil, length: length)
        }
        if length < 8 {
            throw .lengthTooShort(messageType: nil, length: length, minimum: 8)
        }
        if Int(length) > self.maximumPacketLength {
            throw .messageTooLong(messageType: nil, length: length, maximum: self.maximumPacketLength)
        }
        guard var packet = buffer.readSlice(length: Int(length)) else {
            return nil
        }
        packet.moveReaderIndex(forwardBy: 4)
        return try Self.parse(body: packet)
    }

    /// Parses a packet's code and payload (everything after the length field).
    static func parse(body: ByteBuffer) throws(PGProtocolError) -> PGStartupPacket {
        var reader = PGBodyReader(body, messageType: nil)
        let code: Int32 = try reader.readInteger("the protocol version")
        switch code {
        case PGStartupPacket.sslRequestCode:
            try reader.expectEnd()
            return .sslRequest
        case PGStartupPacket.gssEncryptionRequestCode:
            try reader.expectEnd()
            return .gssEncryptionRequest
        case PGStartupPacket.cancelRequestCode:
            let processID: Int32 = try reader.readInteger("the process ID")
            let secretKey: Int32 = try reader.readInteger("the secret key")
            // Protocol 3.2 allows longer keys, but we only ever hand out 3.0 keys.
            try reader.expectEnd()
            return .cancelRequest(PGCancelRequest(processID: processID, secretKey: secretKey))
        default:
            break
        }
        let major = UInt16(truncatingIfNeeded: code >> 16)
        let minor = UInt16(truncatingIfNeeded: code)
        if major == 1234 {
            throw .unknownRequestCode(code)
        }
        guard major == 3 else {
            throw .unsupportedProtocolVersion(major: major, minor: minor)
        }
        var parameters: [PGStartupMessage.Parameter] = []
        while true {
            let name = try reader.readString("a parameter name")
            if name.isEmpty {
                break
            }
            let value = try reader.readString("the value of parameter \"\(name)\"")
            parameters.append(.init(name: name, value: value))
        }
        // PostgreSQL: "invalid startup packet layout: expected terminator as last byte".
        try reader.expectEnd()
        return .startup(PGStartupMessage(protocolMinorVersion: minor, parameters: parameters))
    }
}
