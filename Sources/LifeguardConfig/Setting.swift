import WebConfig

/// A top-level configuration setting: its TOML key, `LIFEGUARD_*` environment variable and command-line flag all
/// derive from one name, so the three can never drift apart.
public enum Setting: String, CaseIterable, Sendable, Hashable, Comparable {
    case listen
    case metricsListen = "metrics_listen"
    case metricsWebConfig = "metrics_web_config"
    case unixSocketDir = "unix_socket_dir"
    case unixSocketMode = "unix_socket_mode"
    case unixSocketGroup = "unix_socket_group"
    case upstream
    case poolMode = "pool_mode"
    case poolSize = "pool_size"
    case minSize = "min_size"
    case maxOverflow = "max_overflow"
    case poolTimeout = "pool_timeout"
    case poolRecycle = "pool_recycle"
    case prePing = "pre_ping"
    case prePingDelay = "pre_ping_delay"
    case idleTimeout = "idle_timeout"
    case leakThreshold = "leak_threshold"
    case maxClientConn = "max_client_conn"
    case maxDBConnections = "max_db_connections"
    case drainTimeout = "drain_timeout"
    case resetQuery = "reset_query"
    case connectQuery = "connect_query"
    case logLevel = "log_level"
    case authType = "auth_type"
    case authFile = "auth_file"
    case clientTLSSSLMode = "client_tls_sslmode"
    case clientTLSCertFile = "client_tls_cert_file"
    case clientTLSKeyFile = "client_tls_key_file"
    case clientTLSCAFile = "client_tls_ca_file"
    case clientTLSProtocols = "client_tls_protocols"
    case clientTLSCiphers = "client_tls_ciphers"
    case authUser = "auth_user"
    case authQuery = "auth_query"
    case authDbname = "auth_dbname"
    case adminUsers = "admin_users"
    case statsUsers = "stats_users"

    /// The TOML key, `pool_size`.
    public var key: String { self.rawValue }

    /// The environment variable, `LIFEGUARD_POOL_SIZE`.
    public var environmentVariable: String { "LIFEGUARD_" + self.rawValue.uppercased() }

    /// The long flag, `--pool-size`.
    public var flag: String { "--" + self.rawValue.replacing("_", with: "-") }

    /// The settings a `[databases.NAME]` entry may override.
    static let perDatabase: [Setting] = [
        .poolMode, .poolSize, .minSize, .maxOverflow, .poolTimeout, .connectQuery, .maxDBConnections,
    ]

    /// Order of declaration, which is also the order of the rendered file.
    public static func < (lhs: Setting, rhs: Setting) -> Bool {
        Self.allCases.firstIndex(of: lhs)! < Self.allCases.firstIndex(of: rhs)!
    }
}

/// Names people bring from PgBouncer and SQLAlchemy, mapped to ours for "did you mean" hints.
let foreignSettingNames: [String: String] = [
    "default_pool_size": "pool_size",
    "min_pool_size": "min_size",
    "minconn": "min_size",
    "reserve_pool_size": "max_overflow",
    "query_wait_timeout": "pool_timeout",
    "server_lifetime": "pool_recycle",
    "pool_pre_ping": "pre_ping",
    "server_check_delay": "pre_ping_delay",
    "server_idle_timeout": "idle_timeout",
    "listen_addr": "listen",
    "listen_port": "listen",
    "server_reset_query": "reset_query",
    "shutdown_timeout": "drain_timeout",
    "database_url": "upstream",
    "dsn": "upstream",
]

/// The closest known name within a small edit distance, for "did you mean" hints.
func suggestion(for unknown: String, among candidates: [String]) -> String? {
    let lowered = unknown.lowercased().replacing("-", with: "_")
    if candidates.contains(lowered) { return lowered }
    if let mapped = foreignSettingNames[lowered], candidates.contains(mapped) { return mapped }
    let limit = max(1, min(3, lowered.count / 3))
    let scored = candidates.map { ($0, WebConfiguration.distance(lowered, $0)) }.filter { $0.1 <= limit }
    return scored.min { $0.1 < $1.1 }?.0
}
