import NIOCore

/// `auth_query`: how Lifeguard asks PostgreSQL for the secret of a client user that the auth_file does not list, as
/// PgBouncer does, and how it reads the answer.
///
/// The query runs in the extended protocol with the user name as its only parameter (`$1`), never spliced into the
/// SQL. It runs with `search_path` set to `pg_catalog, pg_temp` for its own transaction only (`set_config(..., true)`
/// in the same implicit transaction, which ends at the Sync), so that objects a role created in another schema, or a
/// temporary table, cannot stand in for `pg_authid`, `now()` or an operator; the server connection keeps its own
/// setting afterwards.
public enum PGAuthQuery {
    /// The `search_path` the query runs with.
    public static let searchPath = "pg_catalog, pg_temp"

    /// Parse, Bind and Execute of the `search_path` setting and of `query` with `user` as `$1` (text), then Sync.
    public static func messages(query: String, user: String) -> [PGFrontendMessage] {
        let setSearchPath = "SELECT pg_catalog.set_config('search_path', '\(Self.searchPath)', true)"
        var parameters = ByteBuffer()
        // No parameter format codes (all text), one parameter, no result format codes (all text).
        parameters.writeInteger(Int16(0))
        parameters.writeInteger(Int16(1))
        parameters.writeInteger(Int32(user.utf8.count))
        parameters.writeString(user)
        parameters.writeInteger(Int16(0))
        var noParameters = ByteBuffer()
        noParameters.writeInteger(Int16(0))
        noParameters.writeInteger(Int16(0))
        noParameters.writeInteger(Int16(0))
        return [
            .parse(PGParse(statementName: "", query: setSearchPath)),
            .bind(PGBind(portalName: "", statementName: "", parameters: noParameters)),
            .execute(portalName: "", maxRows: 0),
            .parse(PGParse(statementName: "", query: query)),
            .bind(PGBind(portalName: "", statementName: "", parameters: parameters)),
            .execute(portalName: "", maxRows: 0),
            .sync,
        ]
    }

    /// What the query said about the user.
    public enum Outcome: Sendable, Hashable {
        /// A row with a secret.
        case found(PGAuthSecret)
        /// No row (no such role, or it may not log in), or a NULL secret (no password, or past `VALID UNTIL`).
        case notFound
    }

    /// Reads the server's answer to ``messages(query:user:)``, frame by frame, up to ReadyForQuery. Pure.
    ///
    /// The `set_config` result is skipped; the query's rows must have two columns (name, secret), as in PgBouncer; the
    /// first row counts.
    public struct Response: Sendable {
        private var executed = 0
        private var outcome: Outcome?
        private var failure: PGAuthQueryError?

        public init() {}

        /// nil until ReadyForQuery; then the outcome, or the first problem (an ErrorResponse, a malformed row).
        public mutating func receive(_ frame: PGFrame) throws(PGAuthQueryError) -> Outcome? {
            switch frame.type {
            case PGBackendMessageType.commandComplete:
                self.executed += 1
            case PGBackendMessageType.rowDescription:
                guard self.executed == 1, self.failure == nil else { break }
                var body = frame.body
                if let columns = body.readInteger(as: Int16.self), columns != 2 {
                    self.failure = .columns(Int(columns))
                }
            case PGBackendMessageType.dataRow:
                // Rows of the set_config call come before its CommandComplete.
                guard self.executed == 1, self.failure == nil, self.outcome == nil else { break }
                do {
                    self.outcome = try Self.secret(in: frame.body)
                } catch {
                    self.failure = error
                }
            case PGBackendMessageType.errorResponse:
                guard self.failure == nil else { break }
                if case .errorResponse(let fields)? = try? PGBackendMessage(frame: frame) {
                    self.failure = .server(fields)
                } else {
                    self.failure = .malformed("an ErrorResponse that cannot be read")
                }
            case PGBackendMessageType.readyForQuery:
                if let failure = self.failure { throw failure }
                guard self.executed == 2 else { throw .malformed("the query did not complete") }
                return self.outcome ?? .notFound
            default:
                // ParseComplete, BindComplete, NoticeResponse, ParameterStatus.
                break
            }
            return nil
        }

        private static func secret(in body: ByteBuffer) throws(PGAuthQueryError) -> Outcome {
            var body = body
            guard let columns = body.readInteger(as: Int16.self) else { throw .malformed("an empty DataRow") }
            guard columns == 2 else { throw .columns(Int(columns)) }
            guard let nameLength = body.readInteger(as: Int32.self) else { throw .malformed("a truncated DataRow") }
            if nameLength > 0 {
                guard body.readSlice(length: Int(nameLength)) != nil else { throw .malformed("a truncated DataRow") }
            }
            guard let length = body.readInteger(as: Int32.self) else { throw .malformed("a truncated DataRow") }
            if length < 0 { return .notFound }
            guard let text = body.readString(length: Int(length)) else { throw .malformed("a truncated DataRow") }
            do {
                return .found(try PGAuthSecret(parsing: text))
            } catch {
                throw .malformed("the secret is damaged: \(error.description)")
            }
        }
    }
}

/// Why `auth_query` gave no answer. Never contains a secret.
public struct PGAuthQueryError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: Sendable, Hashable {
        case server(PGErrorFields)
        case columns(Int)
        case malformed(String)
    }

    private let code: Code

    static func server(_ fields: PGErrorFields) -> Self { Self(code: .server(fields)) }
    static func columns(_ count: Int) -> Self { Self(code: .columns(count)) }
    static func malformed(_ reason: String) -> Self { Self(code: .malformed(reason)) }

    public var description: String {
        switch self.code {
        case .server(let fields):
            "auth_query failed: \(fields.sqlState.map { "\($0) " } ?? "")\(fields.message ?? "unknown error")"
        case .columns(let count):
            "auth_query must return two columns (user name, secret), not \(count)"
        case .malformed(let reason):
            "auth_query returned \(reason)"
        }
    }
}
