import NIOCore

/// A server-to-client message that the proxy acts on; every other type stays an opaque ``PGFrame``.
public enum PGBackendMessage: Sendable, Hashable {
    case authentication(PGAuthenticationRequest)
    case parameterStatus(name: String, value: String)
    /// Protocol 3.0 BackendKeyData: the process ID and 4-byte secret key used by CancelRequest.
    case backendKeyData(processID: Int32, secretKey: Int32)
    case readyForQuery(PGTransactionStatus)
    case errorResponse(PGErrorFields)
    case noticeResponse(PGErrorFields)
    /// The command tag, for example `INSERT 0 1` or `SELECT 3`.
    case commandComplete(tag: String)
    case copyInResponse(PGCopyResponse)
    case copyOutResponse(PGCopyResponse)
    case copyBothResponse(PGCopyResponse)
    case copyData(ByteBuffer)
    case copyDone
    case notificationResponse(processID: Int32, channel: String, payload: String)
    /// Sent when the client asked for a newer minor version or for `_pq_.` options we do not support.
    case negotiateProtocolVersion(newestMinorVersion: Int32, unrecognizedOptions: [String])
    /// Any other message (RowDescription, DataRow, ParseComplete, ...), untouched.
    case other(PGFrame)

    /// Parses `frame`; types the proxy does not act on come back as ``other(_:)`` without being read.
    public init(frame: PGFrame) throws(PGProtocolError) {
        var reader = PGBodyReader(frame.body, messageType: frame.type)
        switch frame.type {
        case PGBackendMessageType.authentication:
            self = .authentication(try PGAuthenticationRequest.parse(&reader))
            return
        case PGBackendMessageType.parameterStatus:
            let name = try reader.readString("the parameter name")
            let value = try reader.readString("the parameter value")
            self = .parameterStatus(name: name, value: value)
        case PGBackendMessageType.backendKeyData:
            let processID: Int32 = try reader.readInteger("the process ID")
            let secretKey: Int32 = try reader.readInteger("the secret key")
            self = .backendKeyData(processID: processID, secretKey: secretKey)
        case PGBackendMessageType.readyForQuery:
            let byte: UInt8 = try reader.readInteger("the transaction status")
            guard let status = PGTransactionStatus(rawValue: byte) else {
                throw reader.malformed("unknown transaction status \(byte)")
            }
            self = .readyForQuery(status)
        case PGBackendMessageType.errorResponse:
            self = .errorResponse(try PGErrorFields.parse(frame.body, messageType: frame.type))
            return
        case PGBackendMessageType.noticeResponse:
            self = .noticeResponse(try PGErrorFields.parse(frame.body, messageType: frame.type))
            return
        case PGBackendMessageType.commandComplete:
            self = .commandComplete(tag: try reader.readString("the command tag"))
        case PGBackendMessageType.copyInResponse:
            self = .copyInResponse(try PGCopyResponse.parse(&reader))
        case PGBackendMessageType.copyOutResponse:
            self = .copyOutResponse(try PGCopyResponse.parse(&reader))
        case PGBackendMessageType.copyBothResponse:
            self = .copyBothResponse(try PGCopyResponse.parse(&reader))
        case PGBackendMessageType.copyData:
            self = .copyData(reader.readRest())
        case PGBackendMessageType.copyDone:
            self = .copyDone
        case PGBackendMessageType.notificationResponse:
            let processID: Int32 = try reader.readInteger("the process ID")
            let channel = try reader.readString("the channel name")
            let payload = try reader.readString("the payload")
            self = .notificationResponse(processID: processID, channel: channel, payload: payload)
        case PGBackendMessageType.negotiateProtocolVersion:
            let newest: Int32 = try reader.readInteger("the newest minor version")
            let count: Int32 = try reader.readInteger("the option count")
            guard count >= 0 else {
                throw reader.malformed("negative option count \(count)")
            }
            var options: [String] = []
            // Each option takes at least one byte, so the count cannot make us loop past the body.
            for _ in 0..<count {
                options.append(try reader.readString("an option name"))
            }
            self = .negotiateProtocolVersion(newestMinorVersion: newest, unrecognizedOptions: options)
        default:
            self = .other(frame)
            return
        }
        try reader.expectEnd()
    }

    /// Writes the message in wire format. ``other(_:)`` writes its frame's bytes unchanged.
    public func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .authentication(let request):
            buffer.writePGMessage(type: PGBackendMessageType.authentication) { request.encodeBody(into: &$0) }
        case .parameterStatus(let name, let value):
            // The length first, known in advance: a greeting writes a dozen of these per client connection.
            let length = 4 + name.utf8.count + 1 + value.utf8.count + 1
            buffer.reserveCapacity(minimumWritableBytes: 1 + length)
            buffer.writeMultipleIntegers(PGBackendMessageType.parameterStatus, Int32(length))
            buffer.writePGString(name)
            buffer.writePGString(value)
        case .backendKeyData(let processID, let secretKey):
            buffer.writePGMessage(type: PGBackendMessageType.backendKeyData) {
                $0.writeInteger(processID)
                $0.writeInteger(secretKey)
            }
        case .readyForQuery(let status):
            buffer.writePGMessage(type: PGBackendMessageType.readyForQuery) { $0.writeInteger(status.rawValue) }
        case .errorResponse(let fields):
            buffer.writePGMessage(type: PGBackendMessageType.errorResponse) { fields.encodeBody(into: &$0) }
        case .noticeResponse(let fields):
            buffer.writePGMessage(type: PGBackendMessageType.noticeResponse) { fields.encodeBody(into: &$0) }
        case .commandComplete(let tag):
            buffer.writePGMessage(type: PGBackendMessageType.commandComplete) { $0.writePGString(tag) }
        case .copyInResponse(let response):
            buffer.writePGMessage(type: PGBackendMessageType.copyInResponse) { response.encodeBody(into: &$0) }
        case .copyOutResponse(let response):
            buffer.writePGMessage(type: PGBackendMessageType.copyOutResponse) { response.encodeBody(into: &$0) }
        case .copyBothResponse(let response):
            buffer.writePGMessage(type: PGBackendMessageType.copyBothResponse) { response.encodeBody(into: &$0) }
        case .copyData(let data):
            buffer.writePGMessage(type: PGBackendMessageType.copyData) { $0.writeImmutableBuffer(data) }
        case .copyDone:
            buffer.writePGMessage(type: PGBackendMessageType.copyDone) { _ in }
        case .notificationResponse(let processID, let channel, let payload):
            buffer.writePGMessage(type: PGBackendMessageType.notificationResponse) {
                $0.writeInteger(processID)
                $0.writePGString(channel)
                $0.writePGString(payload)
            }
        case .negotiateProtocolVersion(let newest, let options):
            buffer.writePGMessage(type: PGBackendMessageType.negotiateProtocolVersion) {
                $0.writeInteger(newest)
                $0.writeInteger(Int32(options.count))
                for option in options {
                    $0.writePGString(option)
                }
            }
        case .other(let frame):
            buffer.writeImmutableBuffer(frame.bytes)
        }
    }
}

/// The transaction status in ReadyForQuery; transaction pooling releases the server connection on `idle`.
public enum PGTransactionStatus: UInt8, Sendable, Hashable {
    /// `I`: not in a transaction block.
    case idle = 0x49
    /// `T`: in a transaction block.
    case inTransaction = 0x54
    /// `E`: in a failed transaction block (queries rejected until the block ends).
    case failedTransaction = 0x45
}

/// The body of CopyInResponse, CopyOutResponse and CopyBothResponse.
public struct PGCopyResponse: Sendable, Hashable {
    /// 0 for textual COPY, 1 for binary.
    public var overallFormat: Int8
    /// The format code of each column.
    public var columnFormats: [Int16]

    public init(overallFormat: Int8, columnFormats: [Int16]) {
        self.overallFormat = overallFormat
        self.columnFormats = columnFormats
    }

    static func parse(_ reader: inout PGBodyReader) throws(PGProtocolError) -> PGCopyResponse {
        let format: Int8 = try reader.readInteger("the overall format")
        let count: Int16 = try reader.readInteger("the column count")
        guard count >= 0 else {
            throw reader.malformed("negative column count \(count)")
        }
        var formats: [Int16] = []
        formats.reserveCapacity(min(Int(count), reader.buffer.readableBytes / 2))
        for _ in 0..<count {
            formats.append(try reader.readInteger("a column format"))
        }
        return PGCopyResponse(overallFormat: format, columnFormats: formats)
    }

    func encodeBody(into buffer: inout ByteBuffer) {
        buffer.writeInteger(self.overallFormat)
        buffer.writeInteger(Int16(self.columnFormats.count))
        for format in self.columnFormats {
            buffer.writeInteger(format)
        }
    }
}

/// The Authentication (`R`) message family, sent by the server to ask for (or confirm) credentials.
public enum PGAuthenticationRequest: Sendable, Hashable {
    /// AuthenticationOk (0).
    case ok
    /// AuthenticationKerberosV5 (2); unsupported by PostgreSQL since 9.4.
    case kerberosV5
    /// AuthenticationCleartextPassword (3).
    case cleartextPassword
    /// AuthenticationMD5Password (5) with its 4-byte salt.
    case md5Password(salt: [UInt8])
    /// AuthenticationGSS (7).
    case gss
    /// AuthenticationGSSContinue (8).
    case gssContinue(ByteBuffer)
    /// AuthenticationSSPI (9).
    case sspi
    /// AuthenticationSASL (10) with the mechanisms the server offers, in its order of preference.
    case sasl(mechanisms: [String])
    /// AuthenticationSASLContinue (11): the server-first-message.
    case saslContinue(ByteBuffer)
    /// AuthenticationSASLFinal (12): the server-final-message.
    case saslFinal(ByteBuffer)

    static let okCode: Int32 = 0
    static let kerberosV5Code: Int32 = 2
    static let cleartextPasswordCode: Int32 = 3
    static let md5PasswordCode: Int32 = 5
    static let gssCode: Int32 = 7
    static let gssContinueCode: Int32 = 8
    static let sspiCode: Int32 = 9
    static let saslCode: Int32 = 10
    static let saslContinueCode: Int32 = 11
    static let saslFinalCode: Int32 = 12

    static func parse(_ reader: inout PGBodyReader) throws(PGProtocolError) -> PGAuthenticationRequest {
        let code: Int32 = try reader.readInteger("the authentication code")
        let request: PGAuthenticationRequest
        switch code {
        case okCode: request = .ok
        case kerberosV5Code: request = .kerberosV5
        case cleartextPasswordCode: request = .cleartextPassword
        case md5PasswordCode:
            let salt = try reader.readSlice(length: 4, "the 4-byte salt")
            request = .md5Password(salt: Array(salt.readableBytesView))
        case gssCode: request = .gss
        case gssContinueCode: request = .gssContinue(reader.readRest())
        case sspiCode: request = .sspi
        case saslCode:
            var mechanisms: [String] = []
            while true {
                let mechanism = try reader.readString("a SASL mechanism name")
                if mechanism.isEmpty {
                    break
                }
                mechanisms.append(mechanism)
            }
            request = .sasl(mechanisms: mechanisms)
        case saslContinueCode: request = .saslContinue(reader.readRest())
        case saslFinalCode: request = .saslFinal(reader.readRest())
        default:
            throw reader.malformed("unknown authentication request code \(code)")
        }
        try reader.expectEnd()
        return request
    }

    func encodeBody(into buffer: inout ByteBuffer) {
        switch self {
        case .ok: buffer.writeInteger(Self.okCode)
        case .kerberosV5: buffer.writeInteger(Self.kerberosV5Code)
        case .cleartextPassword: buffer.writeInteger(Self.cleartextPasswordCode)
        case .md5Password(let salt):
            precondition(salt.count == 4, "an MD5 salt has 4 bytes")
            buffer.writeInteger(Self.md5PasswordCode)
            buffer.writeBytes(salt)
        case .gss: buffer.writeInteger(Self.gssCode)
        case .gssContinue(let data):
            buffer.writeInteger(Self.gssContinueCode)
            buffer.writeImmutableBuffer(data)
        case .sspi: buffer.writeInteger(Self.sspiCode)
        case .sasl(let mechanisms):
            buffer.writeInteger(Self.saslCode)
            for mechanism in mechanisms {
                buffer.writePGString(mechanism)
            }
            buffer.writeInteger(UInt8(0))
        case .saslContinue(let data):
            buffer.writeInteger(Self.saslContinueCode)
            buffer.writeImmutableBuffer(data)
        case .saslFinal(let data):
            buffer.writeInteger(Self.saslFinalCode)
            buffer.writeImmutableBuffer(data)
        }
    }
}
