/// The SQLSTATE codes Lifeguard itself sends to clients, named as in PostgreSQL's errcodes.txt.
public enum PGSQLState {
    /// 08006: the server connection failed or is unreachable.
    public static let connectionFailure = "08006"
    /// 08P01: the peer broke the wire protocol.
    public static let protocolViolation = "08P01"
    /// 0A000: for example an unsupported protocol version.
    public static let featureNotSupported = "0A000"
    /// 28000: authorization specification invalid (for example no user name in the startup packet).
    public static let invalidAuthorizationSpecification = "28000"
    /// 28P01: wrong password, unknown user, or a secret that cannot serve the method.
    public static let invalidPassword = "28P01"
    /// 3D000: the database does not exist in the configuration.
    public static let invalidCatalogName = "3D000"
    /// 53300: too many connections (pool timeout, `max_client_conn`).
    public static let tooManyConnections = "53300"
    /// 57014: query canceled.
    public static let queryCanceled = "57014"
    /// 57P01: admin shutdown (drain).
    public static let adminShutdown = "57P01"
    /// 25001: active SQL transaction (statement mode refusing a transaction block).
    public static let activeSQLTransaction = "25001"
    /// XX000: internal error.
    public static let internalError = "XX000"

    /// Whether an ErrorResponse that ended a login would come back the same on the next attempt: a role or password the
    /// server rejects (class 28), a database or schema that does not exist (3D, 3F), a missing privilege or an unknown
    /// setting in the startup options (class 42), an unsupported feature or a bad value (0A, 22), a database that
    /// does not accept connections (55000), a protocol the server refuses (08P01, 08004). Anything else (too many
    /// connections, starting up, shutting down, out of memory) may pass by itself, and is retried.
    public static func refusesLoginForGood(_ code: String) -> Bool {
        if ["55000", "08P01", "08004"].contains(code) { return true }
        return ["28", "3D", "3F", "42", "0A", "22"].contains(String(code.prefix(2)))
    }
}
