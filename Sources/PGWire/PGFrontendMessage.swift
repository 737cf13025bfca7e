import NIOCore

/// A client-to-server message that the proxy acts on or makes; every other type stays an opaque ``PGFrame``.
///
/// Parsing a `p` message yields ``authenticationResponse(_:)``: whether it is a PasswordMessage, a
/// SASLInitialResponse or a SASLResponse depends on the authentication exchange, so ``PGPasswordMessage``
/// and ``PGSASLInitialResponse`` read the body once that is known (a SASLResponse body is the data itself).
public enum PGFrontendMessage: Sendable, Hashable {
    case query(String)
    case parse(PGParse)
    case bind(PGBind)
    case describe(PGStatementOrPortal)
    case execute(portalName: String, maxRows: Int32)
    case sync
    case flush
    case close(PGStatementOrPortal)
    case terminate
    /// The body of a `p` message, as parsed.
    case authenticationResponse(ByteBuffer)
    /// PasswordMessage: a cleartext password or an `md5…` hash. Encoding only; parsing gives
    /// ``authenticationResponse(_:)``.
    case password(String)
    /// SASLInitialResponse. Encoding only.
    case saslInitialResponse(PGSASLInitialResponse)
    /// SASLResponse. Encoding only.
    case saslResponse(ByteBuffer)
    case copyData(ByteBuffer)
    case copyDone
    case copyFail(message: String)
    /// FunctionCall: the function's OID and the rest of the body (argument formats, arguments, result
    /// format) unparsed.
    case functionCall(objectID: UInt32, arguments: ByteBuffer)
    /// Any other message, untouched.
    case other(PGFrame)

    /// Parses `frame`; types the proxy does not act on come back as ``other(_:)`` without being read.
    public init(frame: PGFrame) throws(PGProtocolError) {
        var reader = PGBodyReader(frame.body, messageType: frame.type)
        switch frame.type {
        case PGFrontendMessageType.query:
            self = .query(try reader.readString("the query string"))
        case PGFrontendMessageType.parse:
            let name = try reader.readString("the statement name")
            let query = try reader.readString("the query string")
            let count: Int16 = try reader.readInteger("the parameter type count")
            guard count >= 0 else {
                throw reader.malformed("negative parameter type count \(count)")
            }
            var types: [UInt32] = []
            types.reserveCapacity(min(Int(count), reader.buffer.readableBytes / 4))
            for _ in 0..<count {
                types.append(try reader.readInteger("a parameter type OID"))
            }
            self = .parse(PGParse(statementName: name, query: query, parameterTypes: types))
        case PGFrontendMessageType.bind:
            let portal = try reader.readString("the portal name")
            let statement = try reader.readString("the statement name")
            self = .bind(PGBind(portalName: portal, statementName: statement, parameters: reader.readRest()))
        case PGFrontendMessageType.describe:
            self = .describe(try PGStatementOrPortal.parse(&reader))
        case PGFrontendMessageType.execute:
            let portal = try reader.readString("the portal name")
            let maxRows: Int32 = try reader.readInteger("the row limit")
            self = .execute(portalName: portal, maxRows: maxRows)
        case PGFrontendMessageType.sync:
            self = .sync
        case PGFrontendMessageType.flush:
            self = .flush
        case PGFrontendMessageType.close:
            self = .close(try PGStatementOrPortal.parse(&reader))
        case PGFrontendMessageType.terminate:
            self = .terminate
        case PGFrontendMessageType.authenticationResponse:
            self = .authenticationResponse(reader.readRest())
        case PGFrontendMessageType.copyData:
            self = .copyData(reader.readRest())
        case PGFrontendMessageType.copyDone:
            self = .copyDone
        case PGFrontendMessageType.copyFail:
            self = .copyFail(message: try reader.readString("the failure message"))
        case PGFrontendMessageType.functionCall:
            let objectID: UInt32 = try reader.readInteger("the function OID")
            self = .functionCall(objectID: objectID, arguments: reader.readRest())
        default:
            self = .other(frame)
            return
        }
        try reader.expectEnd()
    }

    /// Writes the message in wire format. ``other(_:)`` writes its frame's bytes unchanged.
    public func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .query(let query):
            buffer.writePGMessage(type: PGFrontendMessageType.query) { $0.writePGString(query) }
        case .parse(let parse):
            buffer.writePGMessage(type: PGFrontendMessageType.parse) {
                $0.writePGString(parse.statementName)
                $0.writePGString(parse.query)
                $0.writeInteger(Int16(parse.parameterTypes.count))
                for type in parse.parameterTypes {
                    $0.writeInteger(type)
                }
            }
        case .bind(let bind):
            buffer.writePGMessage(type: PGFrontendMessageType.bind) {
                $0.writePGString(bind.portalName)
                $0.writePGString(bind.statementName)
                $0.writeImmutableBuffer(bind.parameters)
            }
        case .describe(let target):
            buffer.writePGMessage(type: PGFrontendMessageType.describe) { target.encodeBody(into: &$0) }
        case .execute(let portal, let maxRows):
            buffer.writePGMessage(type: PGFrontendMessageType.execute) {
                $0.writePGString(portal)
                $0.writeInteger(maxRows)
            }
        case .sync:
            buffer.writePGMessage(type: PGFrontendMessageType.sync) { _ in }
        case .flush:
            buffer.writePGMessage(type: PGFrontendMessageType.flush) { _ in }
        case .close(let target):
            buffer.writePGMessage(type: PGFrontendMessageType.close) { target.encodeBody(into: &$0) }
        case .terminate:
            buffer.writePGMessage(type: PGFrontendMessageType.terminate) { _ in }
        case .authenticationResponse(let body), .saslResponse(let body):
            buffer.writePGMessage(type: PGFrontendMessageType.authenticationResponse) { $0.writeImmutableBuffer(body) }
        case .password(let password):
            buffer.writePGMessage(type: PGFrontendMessageType.authenticationResponse) { $0.writePGString(password) }
        case .saslInitialResponse(let response):
            buffer.writePGMessage(type: PGFrontendMessageType.authenticationResponse) {
                $0.writePGString(response.mechanism)
                if let data = response.initialResponse {
                    $0.writeInteger(Int32(data.readableBytes))
                    $0.writeImmutableBuffer(data)
                } else {
                    $0.writeInteger(Int32(-1))
                }
            }
        case .copyData(let data):
            buffer.writePGMessage(type: PGFrontendMessageType.copyData) { $0.writeImmutableBuffer(data) }
        case .copyDone:
            buffer.writePGMessage(type: PGFrontendMessageType.copyDone) { _ in }
        case .copyFail(let message):
            buffer.writePGMessage(type: PGFrontendMessageType.copyFail) { $0.writePGString(message) }
        case .functionCall(let objectID, let arguments):
            buffer.writePGMessage(type: PGFrontendMessageType.functionCall) {
                $0.writeInteger(objectID)
                $0.writeImmutableBuffer(arguments)
            }
        case .other(let frame):
            buffer.writeImmutableBuffer(frame.bytes)
        }
    }
}

/// Parse: creates a prepared statement (the unnamed one when `statementName` is empty).
public struct PGParse: Sendable, Hashable {
    public var statementName: String
    public var query: String
    public var parameterTypes: [UInt32]

    public init(statementName: String, query: String, parameterTypes: [UInt32] = []) {
        self.statementName = statementName
        self.query = query
        self.parameterTypes = parameterTypes
    }
}

/// Bind: the portal and statement names; the formats and values that follow stay unparsed bytes.
public struct PGBind: Sendable, Hashable {
    public var portalName: String
    public var statementName: String
    /// Everything after the statement name, exactly as received.
    public var parameters: ByteBuffer

    public init(portalName: String, statementName: String, parameters: ByteBuffer) {
        self.portalName = portalName
        self.statementName = statementName
        self.parameters = parameters
    }
}

/// The target of Describe and Close: a prepared statement (`S`) or a portal (`P`).
public enum PGStatementOrPortal: Sendable, Hashable {
    case statement(String)
    case portal(String)

    static func parse(_ reader: inout PGBodyReader) throws(PGProtocolError) -> PGStatementOrPortal {
        let kind: UInt8 = try reader.readInteger("the statement/portal flag")
        let name = try reader.readString("the name")
        switch kind {
        case UInt8(ascii: "S"): return .statement(name)
        case UInt8(ascii: "P"): return .portal(name)
        default: throw reader.malformed("invalid statement/portal flag \(kind)")
        }
    }

    func encodeBody(into buffer: inout ByteBuffer) {
        switch self {
        case .statement(let name):
            buffer.writeInteger(UInt8(ascii: "S"))
            buffer.writePGString(name)
        case .portal(let name):
            buffer.writeInteger(UInt8(ascii: "P"))
            buffer.writePGString(name)
        }
    }
}

/// SASLInitialResponse: the chosen mechanism and the client-first-message.
public struct PGSASLInitialResponse: Sendable, Hashable {
    public var mechanism: String
    /// `nil` is sent as length -1 ("no initial response").
    public var initialResponse: ByteBuffer?

    public init(mechanism: String, initialResponse: ByteBuffer?) {
        self.mechanism = mechanism
        self.initialResponse = initialResponse
    }

    /// Reads the body of a `p` message known to be a SASLInitialResponse.
    public init(body: ByteBuffer) throws(PGProtocolError) {
        var reader = PGBodyReader(body, messageType: PGFrontendMessageType.authenticationResponse)
        self.mechanism = try reader.readString("the SASL mechanism name")
        let length: Int32 = try reader.readInteger("the initial response length")
        if length == -1 {
            self.initialResponse = nil
        } else {
            self.initialResponse = try reader.readSlice(length: Int(length), "the initial response")
        }
        try reader.expectEnd()
    }
}

/// PasswordMessage: reads the body of a `p` message known to carry a password or an md5 hash.
public enum PGPasswordMessage {
    public static func parse(body: ByteBuffer) throws(PGProtocolError) -> String {
        var reader = PGBodyReader(body, messageType: PGFrontendMessageType.authenticationResponse)
        let password = try reader.readString("the password")
        try reader.expectEnd()
        return password
    }
}
