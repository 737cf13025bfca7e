import NIOCore

/// The client's first message (and the one after an `SSLRequest`/`GSSENCRequest` refusal): untyped,
/// a length then a 32-bit code that is either a protocol version or a special request code.
public enum PGStartupPacket: Sendable, Hashable {
    /// StartupMessage for protocol 3.x: user, database and the other run-time parameters.
    case startup(PGStartupMessage)
    /// SSLRequest (code 80877103): answer with a single `S` or `N` byte (``PGEncryptionResponse``).
    case sslRequest
    /// GSSENCRequest (code 80877104): answer with a single `G` or `N` byte.
    case gssEncryptionRequest
    /// CancelRequest (code 80877102), sent on a connection of its own.
    case cancelRequest(PGCancelRequest)

    /// 3.0 as sent in the version field (major in the high 16 bits).
    public static let protocolVersion3: Int32 = 3 << 16
    public static let cancelRequestCode: Int32 = 1234 << 16 | 5678
    public static let sslRequestCode: Int32 = 1234 << 16 | 5679
    public static let gssEncryptionRequestCode: Int32 = 1234 << 16 | 5680

    /// Writes the packet exactly as a client sends it.
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writePGLengthPrefixed { buffer in
            switch self {
            case .startup(let message):
                buffer.writeInteger(Self.protocolVersion3 | Int32(message.protocolMinorVersion))
                for parameter in message.parameters {
                    buffer.writePGString(parameter.name)
                    buffer.writePGString(parameter.value)
                }
                buffer.writeInteger(UInt8(0))
            case .sslRequest:
                buffer.writeInteger(Self.sslRequestCode)
            case .gssEncryptionRequest:
                buffer.writeInteger(Self.gssEncryptionRequestCode)
            case .cancelRequest(let cancel):
                buffer.writeInteger(Self.cancelRequestCode)
                buffer.writeInteger(cancel.processID)
                buffer.writeInteger(cancel.secretKey)
            }
        }
    }
}

/// A StartupMessage: the requested 3.x minor version and the parameters in the order the client sent them.
public struct PGStartupMessage: Sendable, Hashable {
    public struct Parameter: Sendable, Hashable {
        public var name: String
        public var value: String

        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The minor version the client asked for. Anything above 0 must be answered with NegotiateProtocolVersion
    /// (``PGBackendMessage/negotiateProtocolVersion(newestMinorVersion:unrecognizedOptions:)``) as PostgreSQL does.
    public var protocolMinorVersion: UInt16
    public var parameters: [Parameter]

    public init(protocolMinorVersion: UInt16 = 0, parameters: [Parameter]) {
        self.protocolMinorVersion = protocolMinorVersion
        self.parameters = parameters
    }

    /// Convenience for building the startup message we send to PostgreSQL.
    public init(user: String, database: String?, options: [(String, String)] = []) {
        var parameters = [Parameter(name: "user", value: user)]
        if let database {
            parameters.append(Parameter(name: "database", value: database))
        }
        for (name, value) in options {
            parameters.append(Parameter(name: name, value: value))
        }
        self.init(parameters: parameters)
    }

    /// The value of the first parameter with this name.
    public subscript(name: String) -> String? {
        self.parameters.first { $0.name == name }?.value
    }

    /// The required `user` parameter; `nil` means the client did not send one (PostgreSQL answers 28000).
    public var user: String? {
        self["user"]
    }

    /// The `database` parameter, which defaults to the user name as in PostgreSQL.
    public var database: String? {
        self["database"] ?? self.user
    }

    /// Parameters of the form `_pq_.name`: protocol options that must be reported back as unrecognized.
    public var protocolOptions: [String] {
        self.parameters.map(\.name).filter { $0.hasPrefix("_pq_.") }
    }
}

/// A CancelRequest with a protocol 3.0 (4-byte) secret key.
public struct PGCancelRequest: Sendable, Hashable {
    public var processID: Int32
    public var secretKey: Int32

    public init(processID: Int32, secretKey: Int32) {
        self.processID = processID
        self.secretKey = secretKey
    }
}

/// The single byte that answers an SSLRequest or GSSENCRequest.
public enum PGEncryptionResponse: UInt8, Sendable, Hashable {
    /// `N`: go on unencrypted; the client then sends its StartupMessage.
    case notSupported = 0x4E
    /// `S`: TLS handshake follows (SSLRequest only).
    case sslSupported = 0x53
    /// `G`: GSSAPI encryption follows (GSSENCRequest only).
    case gssSupported = 0x47

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(self.rawValue)
    }
}
