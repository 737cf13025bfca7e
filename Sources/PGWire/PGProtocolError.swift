import NIOCore

/// A violation of the PostgreSQL v3 wire protocol found while framing or parsing a message.
///
/// The proxy answers a client's violation with an `ErrorResponse` carrying ``sqlState`` and closes that
/// client only. The error never carries message bodies, so it cannot leak a password into a log.
public struct PGProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, without the details; for metrics labels and `switch`es.
    public enum Kind: String, Hashable, Sendable {
        case negativeLength
        case lengthTooShort
        case messageTooLong
        case truncatedMessage
        case unsupportedProtocolVersion
        case unknownRequestCode
        case malformedMessage
        case unexpectedMessage
    }

    private enum Code: Hashable, Sendable {
        case negativeLength(messageType: UInt8?, length: Int32)
        case lengthTooShort(messageType: UInt8?, length: Int32, minimum: Int)
        case messageTooLong(messageType: UInt8?, length: Int32, maximum: Int)
        case truncatedMessage(messageType: UInt8?, receivedBytes: Int)
        case unsupportedProtocolVersion(major: UInt16, minor: UInt16)
        case unknownRequestCode(Int32)
        case malformedMessage(messageType: UInt8?, reason: String)
        case unexpectedMessage(messageType: UInt8, context: String)
    }

    private let code: Code

    private init(_ code: Code) {
        self.code = code
    }

    /// A length prefix with the sign bit set. `messageType` is `nil` for the untyped startup packet.
    public static func negativeLength(messageType: UInt8?, length: Int32) -> Self {
        Self(.negativeLength(messageType: messageType, length: length))
    }

    /// A length prefix smaller than the smallest legal message (the length field itself, or the startup header).
    public static func lengthTooShort(messageType: UInt8?, length: Int32, minimum: Int) -> Self {
        Self(.lengthTooShort(messageType: messageType, length: length, minimum: minimum))
    }

    /// A length prefix above the configured maximum; refused before any byte of the body is buffered.
    public static func messageTooLong(messageType: UInt8?, length: Int32, maximum: Int) -> Self {
        Self(.messageTooLong(messageType: messageType, length: length, maximum: maximum))
    }

    /// The peer closed the connection in the middle of a message.
    public static func truncatedMessage(messageType: UInt8?, receivedBytes: Int) -> Self {
        Self(.truncatedMessage(messageType: messageType, receivedBytes: receivedBytes))
    }

    /// A startup packet asking for a protocol other than 3.x.
    public static func unsupportedProtocolVersion(major: UInt16, minor: UInt16) -> Self {
        Self(.unsupportedProtocolVersion(major: major, minor: minor))
    }

    /// A startup packet with the special major version 1234 but a request code we do not know.
    public static func unknownRequestCode(_ code: Int32) -> Self {
        Self(.unknownRequestCode(code))
    }

    /// A message whose body does not match its type's layout.
    public static func malformedMessage(messageType: UInt8?, reason: String) -> Self {
        Self(.malformedMessage(messageType: messageType, reason: reason))
    }

    /// A well-formed message that is not allowed at this point of the conversation.
    public static func unexpectedMessage(messageType: UInt8, context: String) -> Self {
        Self(.unexpectedMessage(messageType: messageType, context: context))
    }

    public var kind: Kind {
        switch self.code {
        case .negativeLength: .negativeLength
        case .lengthTooShort: .lengthTooShort
        case .messageTooLong: .messageTooLong
        case .truncatedMessage: .truncatedMessage
        case .unsupportedProtocolVersion: .unsupportedProtocolVersion
        case .unknownRequestCode: .unknownRequestCode
        case .malformedMessage: .malformedMessage
        case .unexpectedMessage: .unexpectedMessage
        }
    }

    /// The SQLSTATE PostgreSQL uses for the same fault: `0A000` for an unsupported protocol version,
    /// `08P01` (protocol_violation) for everything else.
    public var sqlState: String {
        switch self.code {
        case .unsupportedProtocolVersion: PGSQLState.featureNotSupported
        default: PGSQLState.protocolViolation
        }
    }

    public var description: String {
        switch self.code {
        case .negativeLength(let type, let length):
            "\(Self.name(type)) has a negative length (\(length))"
        case .lengthTooShort(let type, let length, let minimum):
            "\(Self.name(type)) has length \(length), shorter than the minimum of \(minimum)"
        case .messageTooLong(let type, let length, let maximum):
            "\(Self.name(type)) has length \(length), above the maximum of \(maximum)"
        case .truncatedMessage(let type, let received):
            "connection closed in the middle of \(Self.name(type)) after \(received) bytes"
        case .unsupportedProtocolVersion(let major, let minor):
            "unsupported frontend protocol \(major).\(minor): server supports 3.0 to 3.0"
        case .unknownRequestCode(let code):
            "unknown startup request code \(code >> 16).\(code & 0xFFFF)"
        case .malformedMessage(let type, let reason):
            "malformed \(Self.name(type)): \(reason)"
        case .unexpectedMessage(let type, let context):
            "unexpected message type \(Self.name(type)) \(context)"
        }
    }

    private static func name(_ type: UInt8?) -> String {
        guard let type else { return "startup packet" }
        if type >= 0x20 && type < 0x7F {
            return "message '\(Character(Unicode.Scalar(type)))'"
        }
        return "message 0x\(String(type, radix: 16))"
    }
}
