import NIOCore
import PGWire

/// A result set: columns and rows of text cells (nil: SQL NULL), as the simple query protocol sends them.
public struct AdminTable: Sendable, Equatable {
    public var columns: [AdminColumn]
    public var rows: [[String?]]

    public init(columns: [AdminColumn], rows: [[String?]] = []) {
        self.columns = columns
        self.rows = rows
    }

    /// The cells of the column named `name`, for tests.
    public func column(_ name: String) -> [String?] {
        guard let index = self.columns.firstIndex(where: { $0.name == name }) else { return [] }
        return self.rows.map { $0[index] }
    }
}

/// What the console sends back for one query, ending with ReadyForQuery as PgBouncer's `admin_flush` does.
public enum AdminReply: Sendable, Equatable {
    /// RowDescription, DataRows, CommandComplete `tag`.
    case table(AdminTable, tag: String)
    /// A notice, then CommandComplete `tag` (`SHOW HELP`, `SET` of a fake parameter).
    case notice(String, detail: String?, tag: String)
    /// CommandComplete `tag` alone (`PAUSE`, `RESUME`, ...).
    case done(tag: String)
    case error(AdminError)

    /// The reply's messages, ending with ReadyForQuery (idle: the console has no transactions).
    public func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .table(let table, let tag):
            Self.encodeRowDescription(table.columns, into: &buffer)
            for row in table.rows { Self.encodeDataRow(row, into: &buffer) }
            PGBackendMessage.commandComplete(tag: tag).encode(into: &buffer)
        case .notice(let message, let detail, let tag):
            let fields = PGErrorFields.error(sqlState: "00000", message: message, detail: detail, severity: .notice)
            PGBackendMessage.noticeResponse(fields).encode(into: &buffer)
            PGBackendMessage.commandComplete(tag: tag).encode(into: &buffer)
        case .done(let tag):
            PGBackendMessage.commandComplete(tag: tag).encode(into: &buffer)
        case .error(let error):
            PGBackendMessage.errorResponse(PGErrorFields.error(sqlState: error.sqlState, message: error.message))
                .encode(into: &buffer)
        }
        PGBackendMessage.readyForQuery(.idle).encode(into: &buffer)
    }

    static func encodeRowDescription(_ columns: [AdminColumn], into buffer: inout ByteBuffer) {
        Self.message(UInt8(ascii: "T"), into: &buffer) { buffer in
            buffer.writeInteger(Int16(columns.count))
            for column in columns {
                buffer.writeString(column.name)
                buffer.writeInteger(UInt8(0))
                buffer.writeInteger(Int32(0))  // table OID
                buffer.writeInteger(Int16(0))  // column number
                buffer.writeInteger(column.type.oid)
                buffer.writeInteger(column.type.length)
                buffer.writeInteger(Int32(-1))  // type modifier
                buffer.writeInteger(Int16(0))  // text format
            }
        }
    }

    static func encodeDataRow(_ cells: [String?], into buffer: inout ByteBuffer) {
        Self.message(UInt8(ascii: "D"), into: &buffer) { buffer in
            buffer.writeInteger(Int16(cells.count))
            for cell in cells {
                guard let cell else {
                    buffer.writeInteger(Int32(-1))
                    continue
                }
                buffer.writeInteger(Int32(cell.utf8.count))
                buffer.writeString(cell)
            }
        }
    }

    private static func message(_ type: UInt8, into buffer: inout ByteBuffer, body: (inout ByteBuffer) -> Void) {
        buffer.writeInteger(type)
        let lengthIndex = buffer.writerIndex
        buffer.writeInteger(Int32(0))
        body(&buffer)
        buffer.setInteger(Int32(buffer.writerIndex - lengthIndex), at: lengthIndex)
    }
}
