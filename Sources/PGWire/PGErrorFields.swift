import NIOCore

/// The fields of an ErrorResponse or NoticeResponse, in wire order.
///
/// ``error(sqlState:message:detail:hint:severity:)`` is the one place where Lifeguard builds the errors that
/// clients see.
public struct PGErrorFields: Sendable, Hashable {
    /// One field: a one-byte code (see ``Code``) and its text.
    public struct Field: Sendable, Hashable {
        public var code: UInt8
        public var value: String

        public init(code: UInt8, value: String) {
            self.code = code
            self.value = value
        }
    }

    /// Field codes from the protocol's "Error and Notice Message Fields".
    public enum Code {
        public static let severity = UInt8(ascii: "S")
        /// The severity, never localized (PostgreSQL 9.6 and later).
        public static let severityNonLocalized = UInt8(ascii: "V")
        public static let sqlState = UInt8(ascii: "C")
        public static let message = UInt8(ascii: "M")
        public static let detail = UInt8(ascii: "D")
        public static let hint = UInt8(ascii: "H")
        public static let position = UInt8(ascii: "P")
        public static let internalPosition = UInt8(ascii: "p")
        public static let internalQuery = UInt8(ascii: "q")
        public static let context = UInt8(ascii: "W")
        public static let schemaName = UInt8(ascii: "s")
        public static let tableName = UInt8(ascii: "t")
        public static let columnName = UInt8(ascii: "c")
        public static let dataTypeName = UInt8(ascii: "d")
        public static let constraintName = UInt8(ascii: "n")
        public static let file = UInt8(ascii: "F")
        public static let line = UInt8(ascii: "L")
        public static let routine = UInt8(ascii: "R")
    }

    /// Severities Lifeguard sends. `fatal` tells the client that the connection ends after this message.
    public enum Severity: String, Sendable, Hashable {
        case error = "ERROR"
        case fatal = "FATAL"
        case warning = "WARNING"
        case notice = "NOTICE"
        case info = "INFO"
        case log = "LOG"
    }

    public var fields: [Field]

    public init(fields: [Field]) {
        self.fields = fields
    }

    /// Builds the fields of an error (or notice) the way PostgreSQL orders them: S, V, C, M, D, H.
    public static func error(
        sqlState: String,
        message: String,
        detail: String? = nil,
        hint: String? = nil,
        severity: Severity = .error
    ) -> PGErrorFields {
        var fields = [
            Field(code: Code.severity, value: severity.rawValue),
            Field(code: Code.severityNonLocalized, value: severity.rawValue),
            Field(code: Code.sqlState, value: sqlState),
            Field(code: Code.message, value: message),
        ]
        if let detail {
            fields.append(Field(code: Code.detail, value: detail))
        }
        if let hint {
            fields.append(Field(code: Code.hint, value: hint))
        }
        return PGErrorFields(fields: fields)
    }

    /// The first field with this code.
    public subscript(code: UInt8) -> String? {
        self.fields.first { $0.code == code }?.value
    }

    /// The non-localized severity when present, else the localized one.
    public var severity: String? { self[Code.severityNonLocalized] ?? self[Code.severity] }
    public var sqlState: String? { self[Code.sqlState] }
    public var message: String? { self[Code.message] }
    public var detail: String? { self[Code.detail] }
    public var hint: String? { self[Code.hint] }

    static func parse(_ body: ByteBuffer, messageType: UInt8) throws(PGProtocolError) -> PGErrorFields {
        var reader = PGBodyReader(body, messageType: messageType)
        var fields: [Field] = []
        while true {
            let code: UInt8 = try reader.readInteger("the field terminator")
            if code == 0 {
                break
            }
            fields.append(Field(code: code, value: try reader.readString("an error field")))
        }
        try reader.expectEnd()
        return PGErrorFields(fields: fields)
    }

    func encodeBody(into buffer: inout ByteBuffer) {
        for field in self.fields {
            buffer.writeInteger(field.code)
            buffer.writePGString(field.value)
        }
        buffer.writeInteger(UInt8(0))
    }
}
