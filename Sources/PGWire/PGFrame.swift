import NIOCore

/// One typed message as it travelled on the wire: the type byte, the length and the body.
///
/// "Frame and forward": the proxy writes ``bytes`` to the other side unchanged, and parses a frame into a
/// ``PGBackendMessage`` or ``PGFrontendMessage`` only when it needs to act on it. ``bytes`` and ``body`` are
/// slices of the receive buffer, never copies.
public struct PGFrame: Sendable, Hashable {
    /// The message type byte, for example `UInt8(ascii: "Z")` for ReadyForQuery.
    public let type: UInt8
    /// The whole message, header included: write this to relay it without re-encoding.
    public let bytes: ByteBuffer

    /// The message body without the 5-byte header.
    public var body: ByteBuffer {
        self.bytes.getSlice(at: self.bytes.readerIndex + 5, length: self.bytes.readableBytes - 5)!
    }

    /// The value of the length field: the body length plus the 4 bytes of the field itself.
    public var length: Int {
        self.bytes.readableBytes - 1
    }

    /// Wraps a complete message that the decoder already validated.
    init(validatedBytes bytes: ByteBuffer, type: UInt8) {
        self.type = type
        self.bytes = bytes
    }

    /// Builds a frame from a type and a body (copies the body once); for tests and for messages we make.
    public init(type: UInt8, body: ByteBuffer) {
        var bytes = ByteBuffer()
        bytes.reserveCapacity(body.readableBytes + 5)
        bytes.writePGMessage(type: type) { $0.writeImmutableBuffer(body) }
        self.init(validatedBytes: bytes, type: type)
    }
}

/// Message type bytes sent by the server (backend), from the "Message Formats" section of the protocol.
public enum PGBackendMessageType {
    public static let authentication = UInt8(ascii: "R")
    public static let backendKeyData = UInt8(ascii: "K")
    public static let bindComplete = UInt8(ascii: "2")
    public static let closeComplete = UInt8(ascii: "3")
    public static let commandComplete = UInt8(ascii: "C")
    public static let copyData = UInt8(ascii: "d")
    public static let copyDone = UInt8(ascii: "c")
    public static let copyInResponse = UInt8(ascii: "G")
    public static let copyOutResponse = UInt8(ascii: "H")
    public static let copyBothResponse = UInt8(ascii: "W")
    public static let dataRow = UInt8(ascii: "D")
    public static let emptyQueryResponse = UInt8(ascii: "I")
    public static let errorResponse = UInt8(ascii: "E")
    public static let functionCallResponse = UInt8(ascii: "V")
    public static let negotiateProtocolVersion = UInt8(ascii: "v")
    public static let noData = UInt8(ascii: "n")
    public static let noticeResponse = UInt8(ascii: "N")
    public static let notificationResponse = UInt8(ascii: "A")
    public static let parameterDescription = UInt8(ascii: "t")
    public static let parameterStatus = UInt8(ascii: "S")
    public static let parseComplete = UInt8(ascii: "1")
    public static let portalSuspended = UInt8(ascii: "s")
    public static let readyForQuery = UInt8(ascii: "Z")
    public static let rowDescription = UInt8(ascii: "T")
}

/// Message type bytes sent by the client (frontend).
public enum PGFrontendMessageType {
    public static let bind = UInt8(ascii: "B")
    public static let close = UInt8(ascii: "C")
    public static let copyData = UInt8(ascii: "d")
    public static let copyDone = UInt8(ascii: "c")
    public static let copyFail = UInt8(ascii: "f")
    public static let describe = UInt8(ascii: "D")
    public static let execute = UInt8(ascii: "E")
    public static let flush = UInt8(ascii: "H")
    public static let functionCall = UInt8(ascii: "F")
    public static let parse = UInt8(ascii: "P")
    /// PasswordMessage, SASLInitialResponse, SASLResponse and GSSResponse share this byte; only the
    /// authentication state tells them apart.
    public static let authenticationResponse = UInt8(ascii: "p")
    public static let query = UInt8(ascii: "Q")
    public static let sync = UInt8(ascii: "S")
    public static let terminate = UInt8(ascii: "X")
}
