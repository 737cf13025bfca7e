import PoolCore
import Upstream
import WebConfig

/// Lifeguard's effective, validated configuration.
///
/// Made by ``load(_:)`` from, lowest to highest precedence: built-in defaults, the TOML file, `LIFEGUARD_*`
/// environment variables, command-line flags. `DATABASE_URL` is the upstream when none of them names an upstream or
/// a `[databases]` entry. Every value here has passed validation.
///
/// Two configurations are equal when every setting is equal, wherever the values came from: `provenance` takes no part
/// in `==`, so a reload that changed nothing compares equal.
public struct LifeguardConfiguration: Sendable, Equatable {
    /// Where clients connect (`listen`, default 127.0.0.1:6432).
    public var listen: ListenAddress
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`metrics_listen`, default 127.0.0.1:9187).
    public var metricsListen: ListenAddress
    /// `metrics_web_config`: HTTPS and basic authentication of the metrics endpoint, in exporter-toolkit's web
    /// configuration format, read and checked with the files it names; nil serves plain HTTP to anyone (default).
    public var metricsWebConfig: WebConfiguration?
    /// A directory where clients also connect through the Unix socket `.s.PGSQL.<listen port>`, as with PostgreSQL and
    /// PgBouncer (`unix_socket_dir`); nil: none (default).
    public var unixSocketDir: String?
    /// The socket's permission bits (`unix_socket_mode`, default 0777 as PgBouncer).
    public var unixSocketMode: Int
    /// The group that owns the socket (`unix_socket_group`); nil: the process's.
    public var unixSocketGroup: String?
    /// The default upstream (`upstream` or `DATABASE_URL`); clients' database and user pass through unless it pins them.
    /// nil when only `[databases]` entries are configured.
    public var upstream: ConnInfo?
    /// `session` (default), `transaction` or `statement`.
    public var poolMode: PoolMode
    /// Server connections kept per pool (default 5).
    public var poolSize: Int
    /// Connections opened eagerly and kept warm (default 0).
    public var minSize: Int
    /// Extra connections allowed above `poolSize` during spikes (default 10).
    public var maxOverflow: Int
    /// How long a client waits for a server connection before an error (default 30 s).
    public var poolTimeout: Duration
    /// Close server connections older than this when they are returned; nil = never (default).
    public var poolRecycle: Duration?
    /// Verify an idle connection before handing it out (default true).
    public var prePing: Bool
    /// Only connections idle longer than this are verified (default 1 s; 0 = on every checkout).
    public var prePingDelay: Duration
    /// Close connections above `minSize` that stayed idle this long; nil = never (default 600 s).
    public var idleTimeout: Duration?
    /// Report a lease held longer than this once; nil = off (default).
    public var leakThreshold: Duration?
    /// Client connections accepted in total (default 100).
    public var maxClientConn: Int
    /// Server connections per database, all its pools together (PgBouncer's `max_db_connections`); 0 = no cap
    /// (default). Each database has its own count; a `[databases.NAME]` entry may set its own.
    public var maxDBConnections: Int = 0
    /// On SIGTERM, how long transactions in flight may finish before connections are closed (default 30 s).
    public var drainTimeout: Duration
    /// Sent to a server connection before another client gets it; nil = none (default `DISCARD ALL`).
    public var resetQuery: String?
    /// Run once on every new server connection of the upstream's pools, after login and before the connection is
    /// used (PgBouncer's `connect_query`); nil = none (default).
    public var connectQuery: String? = nil
    /// Logging threshold (default `info`).
    public var logLevel: LogLevel
    /// How clients authenticate; nil = not set (only allowed while `listen` is a loopback address).
    public var authType: AuthType?
    /// PgBouncer-style userlist file with client passwords; `md5` and `scram-sha-256` need it or ``authUser``.
    public var authFile: String?
    /// TLS towards clients, with PgBouncer's settings (`client_tls_*`).
    public var clientTLS: ClientTLSConfiguration
    /// The role that runs ``authQuery`` for client users the auth_file does not list; nil = no lookup (default).
    public var authUser: String?
    /// Finds a client user's secret: `$1` is the user name; returns (name, secret) (default ``defaultAuthQuery``).
    public var authQuery: String
    /// The database ``authQuery`` runs in, as a client would name it; nil = the client's own database (default).
    public var authDbname: String?
    /// Users who may run every command of the admin console (the virtual database `pgbouncer`); empty by default.
    public var adminUsers: [String]
    /// Users who may run the admin console's `SHOW` commands only; empty by default.
    public var statsUsers: [String]
    /// `[databases.NAME]` entries, sorted by name, with every pool setting resolved.
    public var databases: [DatabaseConfiguration]
    /// Where each value came from, warnings, and how to load it again. Not part of `==`.
    public var provenance: Provenance

    /// The built-in defaults (no upstream: not valid on its own).
    public static let defaults = LifeguardConfiguration(
        listen: ListenAddress(host: "127.0.0.1", port: 6432),
        metricsListen: ListenAddress(host: "127.0.0.1", port: 9187),
        metricsWebConfig: nil,
        unixSocketDir: nil,
        unixSocketMode: 0o777,
        unixSocketGroup: nil,
        upstream: nil,
        poolMode: .session,
        poolSize: 5,
        minSize: 0,
        maxOverflow: 10,
        poolTimeout: .seconds(30),
        poolRecycle: nil,
        prePing: true,
        prePingDelay: .seconds(1),
        idleTimeout: .seconds(600),
        leakThreshold: nil,
        maxClientConn: 100,
        drainTimeout: .seconds(30),
        resetQuery: "DISCARD ALL",
        logLevel: .info,
        authType: nil,
        authFile: nil,
        clientTLS: ClientTLSConfiguration(),
        authUser: nil,
        authQuery: defaultAuthQuery,
        authDbname: nil,
        adminUsers: [],
        statsUsers: [],
        databases: [],
        provenance: Provenance()
    )

    /// PgBouncer's default `auth_query` since 1.24.1: a password past its `VALID UNTIL` comes back NULL, and a role that
    /// may not log in is not found.
    public static let defaultAuthQuery =
        "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
        + "FROM pg_authid WHERE rolname=$1 AND rolcanlogin"

    /// The `[databases.NAME]` entry for `name`, if any.
    public func database(named name: String) -> DatabaseConfiguration? {
        self.databases.first { $0.name == name }
    }
}

/// A `[databases.NAME]` entry: the pool for clients that connect to database `name`.
public struct DatabaseConfiguration: Sendable, Equatable {
    /// The database name clients ask for.
    public var name: String
    /// Where that database really is.
    public var dsn: ConnInfo
    /// The entry's own value, or the top-level one.
    public var poolMode: PoolMode
    public var poolSize: Int
    public var minSize: Int
    public var maxOverflow: Int
    public var poolTimeout: Duration
    /// Run once on every new server connection of this database's pools (``LifeguardConfiguration/connectQuery``).
    public var connectQuery: String?
    /// The cap on this database's server connections (``LifeguardConfiguration/maxDBConnections``); 0 = none.
    public var maxDBConnections: Int

    public init(
        name: String,
        dsn: ConnInfo,
        poolMode: PoolMode,
        poolSize: Int,
        minSize: Int,
        maxOverflow: Int,
        poolTimeout: Duration,
        connectQuery: String? = nil,
        maxDBConnections: Int = 0
    ) {
        self.name = name
        self.dsn = dsn
        self.poolMode = poolMode
        self.poolSize = poolSize
        self.minSize = minSize
        self.maxOverflow = maxOverflow
        self.poolTimeout = poolTimeout
        self.connectQuery = connectQuery
        self.maxDBConnections = maxDBConnections
    }
}

/// Where configuration values came from, for `check-config` and reloads. Always equal to another `Provenance`, so that
/// it does not take part in ``LifeguardConfiguration``'s `==`.
public struct Provenance: Sendable, Equatable {
    /// Origin of each value, keyed `pool_size` or `databases.NAME.pool_size`; absent keys are defaults.
    public var origins: [String: SettingOrigin] = [:]
    /// Things worth saying that are not errors (an unknown `LIFEGUARD_*` variable close to a known one).
    public var warnings: [String] = []
    /// What the configuration was loaded from; ``LifeguardConfiguration/reloaded()`` loads it again.
    public var sources: ConfigurationSources? = nil
    /// Read from a pgbouncer.ini: for each Lifeguard key (`pool_size`, `databases.NAME.dsn`), how its meaning differs
    /// from the PgBouncer setting it came from (`convert-config` prints it next to the value).
    public var pgbouncerNotes: [String: String] = [:]
    /// True when the file was a pgbouncer.ini.
    public var fromPgBouncerINI = false

    public init() {}

    public static func == (lhs: Provenance, rhs: Provenance) -> Bool { true }
}

/// Where one value came from.
public enum SettingOrigin: Sendable, Hashable, CustomStringConvertible {
    case `default`
    /// The configuration file; `line` when it could be found.
    case file(path: String, line: Int?)
    case environment(String)
    case flag(String)
    /// A `[databases]` entry that did not set this value takes the top-level one.
    case inherited
    /// A pgbouncer.ini left the value out: PgBouncer's default, where it differs from Lifeguard's.
    case pgbouncerDefault

    public var description: String {
        switch self {
        case .default: "default"
        case .file(let path, let line?): "\(path):\(line)"
        case .file(let path, nil): path
        case .environment(let variable): variable
        case .flag(let flag): flag
        case .inherited: "inherited"
        case .pgbouncerDefault: "PgBouncer default"
        }
    }
}

/// `HOST:PORT`; IPv6 hosts are written in brackets (`[::1]:6432`).
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// Host name or IP address, without brackets.
    public var host: String
    /// 0 lets the operating system choose a free port (useful in tests).
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Loopback addresses: `localhost`, 127.0.0.0/8 and `::1`.
    public var isLoopback: Bool {
        if self.host == "localhost" || self.host == "::1" { return true }
        let octets = self.host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    public var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }
}

/// When a server connection goes back to the pool (defined with the pooling rules).
public typealias PoolMode = PoolCore.PoolMode

/// Logging thresholds, named as swift-log names them.
public enum LogLevel: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

/// How Lifeguard authenticates clients.
public enum AuthType: String, Sendable, CaseIterable {
    case trust
    case md5
    case scramSHA256 = "scram-sha-256"
    /// The client certificate's common name is the user (needs `client_tls_sslmode = verify-full`).
    case cert
}

/// `client_tls_sslmode`, PgBouncer's values.
public enum ClientTLSMode: String, Sendable, CaseIterable {
    /// No TLS: SSLRequest is answered `N` (default).
    case disable
    /// TLS when the client asks for it.
    case allow
    case prefer
    /// TLS is required.
    case require
    /// TLS and a client certificate signed by `client_tls_ca_file`.
    case verifyCA = "verify-ca"
    case verifyFull = "verify-full"
}

/// A TLS protocol version clients may use (`client_tls_protocols`).
public enum TLSProtocolVersion: String, Sendable, CaseIterable, Comparable {
    case tlsv1_2 = "tlsv1.2"
    case tlsv1_3 = "tlsv1.3"

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs == .tlsv1_2 && rhs == .tlsv1_3 }
}

/// Lifeguard's TLS towards clients. Files are checked (readable, key matching the certificate, not expired) where the
/// TLS context is made, and by `check-config`.
public struct ClientTLSConfiguration: Sendable, Equatable {
    public var mode: ClientTLSMode = .disable
    public var certFile: String?
    public var keyFile: String?
    /// CAs whose client certificates are accepted (`verify-ca`, `verify-full`).
    public var caFile: String?
    /// Default TLS 1.2 and 1.3 (PgBouncer's `secure`).
    public var protocols: Set<TLSProtocolVersion> = [.tlsv1_2, .tlsv1_3]
    /// An OpenSSL cipher list for TLS 1.2, or nil for BoringSSL's default (`default`); TLS 1.3's are fixed.
    public var ciphers: String?

    public init() {}

    public var isEnabled: Bool { self.mode != .disable }
}
