import Upstream

/// What a pgbouncer.ini means in Lifeguard's settings (docs/configuration.md, "Reading a pgbouncer.ini").
///
/// Every key of the file ends in one of four places: a Lifeguard setting (with PgBouncer's default where the file
/// leaves it out and the two defaults differ), a part of each server connection string (`server_tls_*`,
/// `server_connect_timeout`), a warning (a setting Lifeguard does without, named so it is never silently ignored),
/// or an error (a setting whose absence would change what clients or the server see, until Lifeguard supports it).
struct PgBouncerTranslation {
    /// A top-level Lifeguard value, applied in order (a later one wins).
    struct Value {
        var setting: Setting
        var raw: RawValue
        var origin: SettingOrigin
    }

    /// A `[databases]` entry: a Lifeguard DSN and pool values.
    struct Database {
        var name: String
        var path: String
        var line: Int
        var values: [(key: String, raw: RawValue, line: Int?)]
    }

    var values: [Value] = []
    var databases: [Database] = []
    var warnings: [String] = []
    var problems: [ConfigurationError.Problem] = []
    /// What a Lifeguard key (`pool_size`, or `databases.NAME.dsn`) means differently from the PgBouncer key it came
    /// from, for `convert-config`.
    var notes: [String: String] = [:]
    /// Passwords written in connection strings, to scrub from every message.
    var secrets: [String] = []

    init(_ ini: PgBouncerINI) {
        self.problems = ini.problems
        var translator = Translator(ini: ini)
        translator.translate()
        self.values = translator.values
        self.databases = translator.databases
        self.warnings = translator.warnings
        self.problems += translator.problems
        self.notes = translator.notes
        self.secrets = translator.secrets
    }
}

/// How one `[pgbouncer]` key is carried over.
private enum Rule {
    /// The same value syntax, under Lifeguard's name.
    case setting(Setting)
    /// Worked out in ``Translator`` (a mapping with a condition, or onto connection strings).
    case custom
    /// Lifeguard does without it: a warning, unless the value is one of `harmless` (what Lifeguard does anyway).
    case ignored(String, harmless: Set<String> = [])
    /// Lifeguard would behave differently in a way that matters: an error, unless the value is one of `harmless`.
    case refused(String, harmless: Set<String> = [])
    /// A Lifeguard setting of the same name, when this build has it; otherwise a warning.
    case sameName(why: String, harmless: Set<String> = [])
}

private let timeoutAdvice = "set PostgreSQL's own"

/// Every `[pgbouncer]` key PgBouncer knows, and what Lifeguard makes of it.
private let rules: [String: Rule] = [
    "pool_mode": .setting(.poolMode),
    "max_client_conn": .setting(.maxClientConn),
    "default_pool_size": .setting(.poolSize),
    "min_pool_size": .setting(.minSize),
    "reserve_pool_size": .setting(.maxOverflow),
    "reserve_pool_timeout": .custom,
    "query_wait_timeout": .custom,
    "server_lifetime": .custom,
    "server_idle_timeout": .setting(.idleTimeout),
    "server_check_delay": .setting(.prePingDelay),
    "server_check_query": .custom,
    "server_reset_query": .setting(.resetQuery),
    "server_reset_query_always": .refused(
        "Lifeguard resets server connections only in session mode; set pool_mode = session if the application "
            + "keeps session state, or remove server_reset_query_always",
        harmless: ["0"]
    ),
    "listen_addr": .custom,
    "listen_port": .custom,
    "auth_type": .custom,
    "auth_file": .setting(.authFile),
    "auth_user": .setting(.authUser),
    "auth_query": .setting(.authQuery),
    "auth_dbname": .setting(.authDbname),
    "auth_hba_file": .ignored("only auth_type = hba reads it, which Lifeguard does not support", harmless: [""]),
    "auth_ident_file": .ignored("only auth_type = hba reads it, which Lifeguard does not support", harmless: [""]),
    "auth_ldap_options": .ignored("only auth_type = ldap reads it, which Lifeguard does not support", harmless: [""]),
    "client_tls_sslmode": .setting(.clientTLSSSLMode),
    "client_tls_cert_file": .setting(.clientTLSCertFile),
    "client_tls_key_file": .setting(.clientTLSKeyFile),
    "client_tls_ca_file": .setting(.clientTLSCAFile),
    "client_tls_protocols": .setting(.clientTLSProtocols),
    "client_tls_ciphers": .setting(.clientTLSCiphers),
    "client_tls13_ciphers": .ignored("TLS 1.3 cipher suites are BoringSSL's fixed set", harmless: [""]),
    "client_tls_ecdhcurve": .ignored("BoringSSL chooses the curves", harmless: ["auto", ""]),
    "client_tls_dheparams": .ignored("BoringSSL offers no finite-field Diffie-Hellman", harmless: ["auto", ""]),
    "server_tls_sslmode": .custom,
    "server_tls_ca_file": .custom,
    "server_tls_cert_file": .custom,
    "server_tls_key_file": .custom,
    "server_tls_protocols": .ignored("server connections offer TLS 1.2 and 1.3", harmless: ["secure", "default", ""]),
    "server_tls_ciphers": .ignored("server connections use BoringSSL's default ciphers", harmless: ["default", ""]),
    "server_tls13_ciphers": .ignored("TLS 1.3 cipher suites are BoringSSL's fixed set", harmless: [""]),
    "server_connect_timeout": .custom,
    "verbose": .custom,
    "logfile": .ignored("Lifeguard logs to stderr (collect it from there)", harmless: [""]),
    "pidfile": .ignored("Lifeguard does not daemonize or write a pid file", harmless: [""]),
    "syslog": .ignored("Lifeguard logs to stderr", harmless: ["0"]),
    "syslog_ident": .ignored("Lifeguard logs to stderr", harmless: ["pgbouncer"]),
    "syslog_facility": .ignored("Lifeguard logs to stderr", harmless: ["daemon"]),
    "log_connections": .ignored(
        "Lifeguard does not log each login; lifeguard_client_connections counts them",
        harmless: ["0"]
    ),
    "log_disconnections": .ignored("Lifeguard does not log each logout", harmless: ["0"]),
    "log_pooler_errors": .ignored("Lifeguard always logs its own errors", harmless: ["1"]),
    "log_stats": .ignored("Lifeguard's statistics are the /metrics endpoint", harmless: ["0"]),
    "stats_period": .ignored("Lifeguard's statistics are the /metrics endpoint, always current"),
    "admin_users": .setting(.adminUsers),
    "stats_users": .setting(.statsUsers),
    "unix_socket_dir": .setting(.unixSocketDir),
    "unix_socket_mode": .setting(.unixSocketMode),
    "unix_socket_group": .setting(.unixSocketGroup),
    "user": .ignored("start Lifeguard as the user it should run as", harmless: [""]),
    "so_reuseport": .refused(
        "Lifeguard is one process per port: run one Lifeguard, or give each its own listen_port",
        harmless: ["0"]
    ),
    "disable_pqexec": .refused(
        "Lifeguard relays the simple query protocol; remove disable_pqexec or keep PgBouncer for this",
        harmless: ["0"]
    ),
    "max_db_connections": .setting(.maxDBConnections),
    "max_user_connections": .refused(
        "Lifeguard has no cap on server connections per user; pool_size + max_overflow bound each pool: "
            + "size them so that their sum fits, and remove max_user_connections",
        harmless: ["0"]
    ),
    "max_db_client_connections": .ignored("only max_client_conn limits clients", harmless: ["0"]),
    "max_user_client_connections": .ignored("only max_client_conn limits clients", harmless: ["0"]),
    "server_round_robin": .ignored("Lifeguard hands out the most recently used idle connection", harmless: ["0"]),
    "server_fast_close": .ignored(
        "Lifeguard closes changed server connections when they are returned",
        harmless: ["0"]
    ),
    "server_login_retry": .ignored(
        "Lifeguard retries a failing connect with backoff while clients wait, up to pool_timeout"
    ),
    "client_login_timeout": .ignored("Lifeguard has no login timeout for clients", harmless: ["0"]),
    "autodb_idle_timeout": .ignored("pools of the fallback database stay until their login is refused"),
    "pool_idle_timeout": .ignored("Lifeguard keeps idle pools", harmless: ["0"]),
    "query_timeout": .ignored("\(timeoutAdvice) statement_timeout", harmless: ["0"]),
    "idle_transaction_timeout": .ignored("\(timeoutAdvice) idle_in_transaction_session_timeout", harmless: ["0"]),
    "transaction_timeout": .ignored("\(timeoutAdvice) transaction_timeout (PostgreSQL 17)", harmless: ["0"]),
    "client_idle_timeout": .ignored("\(timeoutAdvice) idle_session_timeout", harmless: ["0"]),
    "cancel_wait_timeout": .ignored("cancel requests are forwarded at once or dropped"),
    "suspend_timeout": .ignored("Lifeguard has no online restart (SUSPEND, -R)"),
    "query_wait_notify": .ignored("Lifeguard sends no notice to waiting clients", harmless: ["0"]),
    "login_notify_message": .ignored("Lifeguard sends no notice at login", harmless: [""]),
    "dns_max_ttl": .ignored("host names are resolved at each connect"),
    "dns_nxdomain_ttl": .ignored("host names are resolved at each connect"),
    "dns_zone_check_period": .ignored("host names are resolved at each connect", harmless: ["0"]),
    "resolv_conf": .ignored("the system resolver is used", harmless: [""]),
    "pkt_buf": .ignored("Lifeguard sizes its buffers itself"),
    "max_packet_size": .ignored("Lifeguard relays messages of any size PostgreSQL accepts"),
    "listen_backlog": .ignored("the backlog is SwiftNIO's default"),
    "sbuf_loopcnt": .ignored("SwiftNIO schedules the event loops"),
    "tcp_defer_accept": .ignored("the operating system's defaults are used"),
    "tcp_socket_buffer": .ignored("the operating system's defaults are used", harmless: ["0"]),
    "tcp_keepalive": .ignored("the operating system's keepalive defaults are used", harmless: ["1"]),
    "tcp_keepcnt": .ignored("the operating system's keepalive defaults are used", harmless: ["0"]),
    "tcp_keepidle": .ignored("the operating system's keepalive defaults are used", harmless: ["0"]),
    "tcp_keepintvl": .ignored("the operating system's keepalive defaults are used", harmless: ["0"]),
    "tcp_user_timeout": .ignored("the operating system's defaults are used", harmless: ["0"]),
    "application_name_add_host": .ignored("application_name is passed on as the client set it", harmless: ["0"]),
    "ignore_startup_parameters": .ignored(
        "Lifeguard accepts every startup parameter and applies it to the server connection",
        harmless: [""]
    ),
    "track_extra_parameters": .ignored(
        "Lifeguard follows the parameters PostgreSQL reports (IntervalStyle among them)",
        harmless: ["intervalstyle", ""]
    ),
    "max_prepared_statements": .ignored(
        "Lifeguard always tracks protocol-level prepared statements (up to 1,000 per server connection)"
    ),
    "scram_iterations": .ignored("Lifeguard verifies clients against the auth_file's own SCRAM secrets"),
    "peer_id": .ignored(
        "Lifeguard has no peers: cancel requests reach only the instance the client uses",
        harmless: ["0"]
    ),
    "conffile": .ignored("Lifeguard reloads the file it was started with", harmless: [""]),
    "service_name": .ignored("no Windows service", harmless: [""]),
    "job_name": .ignored("no Windows service", harmless: ["pgbouncer", ""]),
]

/// PgBouncer's defaults where they differ from Lifeguard's: applied when the file does not set the key.
private let pgbouncerDefaults: [(key: String, setting: Setting, value: String)] = [
    ("default_pool_size", .poolSize, "20"),
    ("reserve_pool_size", .maxOverflow, "0"),
    ("query_wait_timeout", .poolTimeout, "120"),
    ("server_lifetime", .poolRecycle, "3600"),
    ("server_check_delay", .prePingDelay, "30"),
    ("auth_type", .authType, "md5"),
    // Clients of PgBouncer connect through /tmp/.s.PGSQL.<port> unless told otherwise; they can with Lifeguard too.
    ("unix_socket_dir", .unixSocketDir, "/tmp"),
]

/// What convert-config says next to a setting whose meaning is not quite PgBouncer's.
private let meaningNotes: [Setting: String] = [
    .poolSize: "PgBouncer default_pool_size: the most server connections per pool, max_overflow comes on top",
    .minSize:
        "PgBouncer min_pool_size: PgBouncer fills only pools with a forced user or a client; Lifeguard every pool",
    .maxOverflow:
        "PgBouncer reserve_pool_size: opened at once when the pool is busy, not after reserve_pool_timeout",
    .poolTimeout:
        "PgBouncer query_wait_timeout: past it the client gets 53300 (ERROR in transaction mode, it stays connected)",
    .poolRecycle: "PgBouncer server_lifetime: checked when a connection is returned",
    .idleTimeout: "PgBouncer server_idle_timeout: connections above min_size only",
    .prePingDelay: "PgBouncer server_check_delay: Lifeguard checks with its own query",
    .listen: "PgBouncer listen_addr + listen_port: one address; the Unix socket is unix_socket_dir",
    .authType: "PgBouncer auth_type (default md5)",
    .logLevel: "PgBouncer verbose",
    .resetQuery: "PgBouncer server_reset_query: session mode only, as in PgBouncer",
]

private struct Translator {
    let ini: PgBouncerINI
    var values: [PgBouncerTranslation.Value] = []
    var databases: [PgBouncerTranslation.Database] = []
    var warnings: [String] = []
    var problems: [ConfigurationError.Problem] = []
    var notes: [String: String] = [:]
    var secrets: [String] = []

    /// The last `[pgbouncer]` entry of each key (PgBouncer applies them in order, so the last wins).
    var global: [String: PgBouncerINI.Entry] = [:]
    /// What goes into every server connection string: `sslmode`, `connect_timeout`, ...
    var serverOptions: [(keyword: String, value: String)] = []

    init(ini: PgBouncerINI) {
        self.ini = ini
    }

    mutating func translate() {
        for entry in self.ini.entries where entry.section == "pgbouncer" {
            self.global[entry.key] = entry
        }
        self.applyDefaults()
        // In the order written (across %include files), each key once: its last value.
        let settings = self.ini.entries.filter { $0.section == "pgbouncer" }
        for (index, entry) in settings.enumerated() where settings.lastIndex(where: { $0.key == entry.key }) == index {
            self.translateGlobal(entry)
        }
        self.translateListen()
        self.translateDatabases()
        for entry in self.ini.entries where entry.section == "users" { self.translateUser(entry) }
        for entry in self.ini.entries where entry.section == "peers" {
            self.warn(
                entry,
                "[peers] is not supported: Lifeguard forwards cancel requests only to its own clients' "
                    + "server connections; ignored"
            )
        }
    }

    // MARK: [pgbouncer]

    mutating func applyDefaults() {
        for (key, setting, value) in pgbouncerDefaults where self.global[key] == nil {
            self.values.append(.init(setting: setting, raw: .string(value), origin: .pgbouncerDefault))
            self.noteMeaning(setting)
        }
    }

    mutating func translateGlobal(_ entry: PgBouncerINI.Entry) {
        guard let rule = rules[entry.key] else {
            let known = Array(rules.keys)
            let hint = suggestion(for: entry.key, among: known).map { "; did you mean \(RawValue.quote($0))?" } ?? ""
            self.fail(entry, "not a PgBouncer setting\(hint)")
            return
        }
        let value = entry.value
        let normalized = value.trimmingWhitespace().lowercased()
        switch rule {
        case .setting(let setting):
            self.set(setting, value, entry)
            if setting == .maxOverflow, Int(value) ?? 0 > 0, self.global["reserve_pool_timeout"] == nil {
                self.warn(
                    entry,
                    "Lifeguard opens these max_overflow connections as soon as the pool is busy; "
                        + "PgBouncer waits reserve_pool_timeout (5 s) first"
                )
            }
        case .custom:
            self.translateCustom(entry)
        case .ignored(let why, let harmless):
            if !harmless.contains(normalized) { self.warn(entry, "not supported by Lifeguard, ignored: \(why)") }
        case .refused(let why, let harmless):
            if !harmless.contains(normalized) {
                self.fail(entry, "\(RawValue.quote(value)) is not supported by Lifeguard: \(why)")
            }
        case .sameName(let why, let harmless):
            if let setting = Setting(rawValue: entry.key) {
                self.values.append(.init(setting: setting, raw: .string(value), origin: entry.origin))
            } else if !harmless.contains(normalized) {
                self.warn(entry, "not yet supported by Lifeguard, ignored: \(why)")
            }
        }
    }

    mutating func translateCustom(_ entry: PgBouncerINI.Entry) {
        let value = entry.value.trimmingWhitespace()
        switch entry.key {
        case "reserve_pool_timeout":
            if Double(value) == 0 {
                // PgBouncer: 0 disables the reserve.
                self.set(.maxOverflow, "0", entry)
            } else if let size = self.global["reserve_pool_size"], Int(size.value) ?? 0 > 0 {
                self.warn(
                    entry,
                    "not supported by Lifeguard: it opens the max_overflow connections as soon as the "
                        + "pool is busy, without waiting"
                )
            }
        case "query_wait_timeout":
            guard Double(value) != 0 else {
                self.fail(
                    entry,
                    "0 (wait for ever) is not supported: Lifeguard always has a pool_timeout; "
                        + "set query_wait_timeout to the seconds a client may wait"
                )
                return
            }
            self.set(.poolTimeout, value, entry)
        case "server_lifetime":
            // PgBouncer: 0 means a server connection is used once. Lifeguard closes it when it comes back older than
            // pool_recycle, so a microsecond does the same.
            self.set(.poolRecycle, Double(value) == 0 ? "0.000001" : value, entry)
        case "server_check_query":
            if value.isEmpty {
                self.set(.prePing, "false", entry)
            } else {
                self.set(.prePing, "true", entry)
                if value.lowercased() != "<empty>" {
                    self.warn(entry, "Lifeguard checks idle connections with its own query, not this one")
                }
            }
        case "listen_addr", "listen_port":
            break  // translateListen
        case "auth_type":
            switch value.lowercased() {
            case "trust":
                self.set(.authType, value, entry)
                if self.global["auth_file"] != nil {
                    self.warn(entry, "Lifeguard's trust accepts any user name; PgBouncer's only those of auth_file")
                }
            case "md5", "scram-sha-256", "cert":
                self.set(.authType, value, entry)
            case "plain":
                self.fail(
                    entry,
                    "plain is not supported: Lifeguard never asks clients for a clear-text password; "
                        + "use md5 or scram-sha-256"
                )
            case "any":
                self.fail(
                    entry,
                    "any is not supported: Lifeguard authenticates every user; use trust (on a "
                        + "loopback listen_addr), md5 or scram-sha-256"
                )
            case "hba", "pam", "ldap":
                self.fail(
                    entry,
                    "\(value) is not supported by Lifeguard yet: use md5, scram-sha-256 or cert, "
                        + "or keep PgBouncer for this"
                )
            default:
                self.set(.authType, value, entry)
            }
        case "server_tls_sslmode":
            self.serverOption("sslmode", value, entry)
        case "server_tls_ca_file":
            self.serverOption("sslrootcert", value, entry)
        case "server_tls_cert_file":
            self.serverOption("sslcert", value, entry)
        case "server_tls_key_file":
            self.serverOption("sslkey", value, entry)
        case "server_connect_timeout":
            guard let seconds = Double(value), seconds >= 0 else {
                self.fail(entry, "expected seconds, got \(RawValue.quote(value))")
                return
            }
            if seconds > 0 { self.serverOption("connect_timeout", String(Int(seconds.rounded(.up))), entry) }
        case "verbose":
            let level: String =
                switch Int(value) ?? 0 {
                case ...0: "info"
                case 1: "debug"
                default: "trace"
                }
            self.set(.logLevel, level, entry)
        default:
            break
        }
    }

    mutating func serverOption(_ keyword: String, _ value: String, _ entry: PgBouncerINI.Entry) {
        guard !value.isEmpty else { return }
        self.serverOptions.append((keyword, value))
    }

    /// `listen_addr` + `listen_port`. PgBouncer without listen_addr accepts only Unix-socket clients; Lifeguard always
    /// listens on TCP too, then on 127.0.0.1, where a sidecar's clients are.
    mutating func translateListen() {
        let portEntry = self.global["listen_port"]
        let port = portEntry?.value.trimmingWhitespace() ?? "6432"
        guard let addressEntry = self.global["listen_addr"], !addressEntry.value.trimmingWhitespace().isEmpty else {
            let origin = portEntry?.origin ?? .pgbouncerDefault
            self.values.append(.init(setting: .listen, raw: .string("127.0.0.1:\(port)"), origin: origin))
            self.notes[Setting.listen.key] =
                "PgBouncer without listen_addr takes Unix-socket clients only; Lifeguard also listens on 127.0.0.1"
            let location = portEntry.map { "\($0.path):\($0.line): " } ?? "\(self.ini.files.first ?? ""): "
            self.warnings.append(
                location + "listen_addr is not set: PgBouncer would accept Unix-socket clients "
                    + "only; Lifeguard takes them on its Unix socket (unix_socket_dir) and also listens on "
                    + "127.0.0.1:\(port)"
            )
            return
        }
        let addresses = addressEntry.value.split(separator: ",").map { $0.trimmingWhitespace() }
        guard addresses.count == 1 else {
            self.fail(addressEntry, "Lifeguard listens on one address, got \(addresses.count); keep one (* for all)")
            return
        }
        var host = addresses[0]
        if host == "*" {
            host = "0.0.0.0"
            self.warn(addressEntry, "* listens on every IPv4 address (0.0.0.0); PgBouncer also on IPv6")
        }
        let listen = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        self.values.append(.init(setting: .listen, raw: .string(listen), origin: addressEntry.origin))
        self.noteMeaning(.listen)
    }

    // MARK: [databases]

    mutating func translateDatabases() {
        var parsed: [(entry: PgBouncerINI.Entry, connection: PgBouncerConnectionString)] = []
        for entry in self.ini.entries where entry.section == "databases" {
            if entry.key == "pgbouncer" {
                self.fail(entry, "the database name pgbouncer is reserved for PgBouncer's admin console")
                continue
            }
            switch PgBouncerConnectionString.parse(entry.value) {
            case .success(let connection):
                parsed.append((entry, connection))
                self.secrets += connection.pairs.filter { $0.key == "password" }.map(\.value)
            case .failure(let rejection):
                self.fail(entry, rejection.message)
            }
        }
        // One value per database name: PgBouncer keeps the last.
        var seen: Set<String> = []
        parsed = parsed.reversed().filter { seen.insert($0.entry.key).inserted }.reversed()
        self.hoistAuthSettings(parsed)
        let named = parsed.filter { $0.entry.key != "*" }
        for (entry, connection) in parsed {
            self.translateDatabase(entry, connection, named: named.map(\.connection))
        }
    }

    /// Lifeguard has one auth_user, auth_query and auth_dbname. A database's own value is taken when the file sets
    /// none in [pgbouncer] and every database that sets it agrees; otherwise it is an error.
    mutating func hoistAuthSettings(_ parsed: [(entry: PgBouncerINI.Entry, connection: PgBouncerConnectionString)]) {
        for (key, setting) in [
            ("auth_user", Setting.authUser), ("auth_query", .authQuery), ("auth_dbname", .authDbname),
        ] {
            let setting = setting
            let setters = parsed.filter { $0.connection.value(key) != nil }
            guard let first = setters.first else { continue }
            let value = first.connection.value(key)!
            if let global = self.global[key] {
                for (entry, connection) in setters where connection.value(key) != global.value {
                    self.fail(
                        entry,
                        "\(key) differs from [pgbouncer]'s; Lifeguard has one \(key) for every "
                            + "database: use the same value or remove it here"
                    )
                }
            } else if setters.contains(where: { $0.connection.value(key) != value }) {
                for (entry, _) in setters {
                    self.fail(
                        entry,
                        "the databases set different \(key)s; Lifeguard has one \(key) for every "
                            + "database: set it once in [pgbouncer]"
                    )
                }
            } else {
                self.values.append(.init(setting: setting, raw: .string(value), origin: first.entry.origin))
                if setters.count < parsed.count {
                    self.warn(first.entry, "\(key) applies to every database in Lifeguard, not only to this one")
                }
            }
        }
    }

    mutating func translateDatabase(
        _ entry: PgBouncerINI.Entry,
        _ connection: PgBouncerConnectionString,
        named: [PgBouncerConnectionString]
    ) {
        let isFallback = entry.key == "*"
        var dsn: [(String, String)] = []
        var pool: [(key: String, raw: RawValue, line: Int?)] = []
        var options: [String] = []
        var failed = false
        var host: String? = nil
        var port = "5432"
        for (key, value) in connection.pairs {
            switch key {
            case "host":
                host = value
            case "port":
                guard let number = Int(value), (1...65535).contains(number) else {
                    self.fail(entry, "invalid port \(RawValue.quote(value))")
                    failed = true
                    continue
                }
                port = String(number)
            case "dbname", "user", "password", "application_name":
                dsn.append((key, value))
            case "client_encoding", "datestyle", "timezone":
                options.append("-c \(key)=\(Self.escapedOption(value))")
            case "pool_size": pool.append((Setting.poolSize.key, .string(value), entry.line))
            case "min_pool_size": pool.append((Setting.minSize.key, .string(value), entry.line))
            case "reserve_pool_size", "reserve_pool": pool.append((Setting.maxOverflow.key, .string(value), entry.line))
            case "pool_mode": pool.append((Setting.poolMode.key, .string(value), entry.line))
            case "query_wait_timeout":
                if Double(value) == 0 {
                    self.fail(
                        entry,
                        "query_wait_timeout=0 (wait for ever) is not supported: Lifeguard always has "
                            + "a pool_timeout; give the seconds a client may wait"
                    )
                    failed = true
                } else if value != "-1" {
                    pool.append((Setting.poolTimeout.key, .string(value), entry.line))
                }
            case "auth_user", "auth_query", "auth_dbname":
                break  // hoistAuthSettings
            case "max_db_connections": pool.append((Setting.maxDBConnections.key, .string(value), entry.line))
            case "max_db_client_connections":
                if value != "0" {
                    self.warn(
                        entry,
                        "max_db_client_connections is not supported, ignored: only "
                            + "max_client_conn limits clients"
                    )
                }
            case "server_lifetime":
                if value != self.global["server_lifetime"]?.value ?? "3600" {
                    self.warn(
                        entry,
                        "server_lifetime per database is not supported, ignored: every pool uses "
                            + "pool_recycle (server_lifetime in [pgbouncer])"
                    )
                }
            case "load_balance_hosts":
                self.warn(entry, "load_balance_hosts is not supported, ignored: a host list is tried in order")
            case "connect_query": pool.append((Setting.connectQuery.key, .string(value), entry.line))
            default:
                self.fail(entry, "unrecognized connection parameter \(key)")
                failed = true
            }
        }
        if let host {
            if host.hasPrefix("@") {
                self.fail(
                    entry,
                    "host \(RawValue.quote(host)): Unix sockets in the abstract namespace are not "
                        + "supported; give a directory or a host name"
                )
                failed = true
            }
            if host.contains(",") {
                self.warn(entry, "Lifeguard (libpq) tries a host list in order, PgBouncer goes round-robin")
            }
            dsn.insert(("host", host), at: 0)
        } else {
            // PgBouncer connects through the Unix socket in unix_socket_dir (default /tmp).
            let directory = self.global["unix_socket_dir"]?.value ?? "/tmp"
            if !directory.isEmpty { dsn.insert(("host", directory), at: 0) }
        }
        dsn.insert(("port", port), at: dsn.isEmpty ? 0 : 1)
        if !options.isEmpty { dsn.append(("options", options.joined(separator: " "))) }
        dsn += self.serverOptions
        guard !failed else { return }
        var note = "a PgBouncer connection string, in libpq's syntax; port written out (PgBouncer's default 5432)"
        if host == nil { note += "; host: PgBouncer's unix_socket_dir (default /tmp)" }
        if !options.isEmpty { note += "; client_encoding, datestyle, timezone: sent in options" }
        if !self.serverOptions.isEmpty {
            note += "; " + self.serverOptions.map(\.keyword).joined(separator: ", ") + " from [pgbouncer]"
        }
        self.notes[isFallback ? Setting.upstream.key : "databases.\(entry.key).dsn"] = note
        let text = dsn.map { "\($0.0)=\(Self.libpqQuoted($0.1))" }.joined(separator: " ")
        if isFallback {
            self.values.append(.init(setting: .upstream, raw: .string(text), origin: entry.origin))
            // Lifeguard's upstream takes the top-level pool settings: carry "*"'s own there, and keep the named
            // databases on [pgbouncer]'s by giving them the value explicitly.
            for (key, raw, _) in pool {
                guard let setting = Setting(rawValue: key) else { continue }
                self.values.append(.init(setting: setting, raw: raw, origin: entry.origin))
                let inherited = self.globalRaw(for: setting)
                for index in self.databases.indices
                where !self.databases[index].values.contains(where: { $0.key == key }) {
                    self.databases[index].values.append((key, inherited.raw, inherited.line))
                }
                self.pendingFallbackKeys.insert(key)
                self.pendingFallbackValues[key] = inherited
            }
        } else {
            var values: [(key: String, raw: RawValue, line: Int?)] = [("dsn", .string(text), entry.line)]
            values += pool
            for key in self.pendingFallbackKeys where !pool.contains(where: { $0.key == key }) {
                let inherited = self.pendingFallbackValues[key]!
                values.append((key, inherited.raw, inherited.line))
            }
            self.databases.append(.init(name: entry.key, path: entry.path, line: entry.line, values: values))
        }
    }

    /// Keys the fallback database set, which later named databases must get from [pgbouncer] explicitly.
    var pendingFallbackKeys: Set<String> = []
    var pendingFallbackValues: [String: (raw: RawValue, line: Int?)] = [:]

    /// The [pgbouncer] value (or PgBouncer's default) behind a per-database Lifeguard setting.
    func globalRaw(for setting: Setting) -> (raw: RawValue, line: Int?) {
        // Only a database sets it in PgBouncer: the others have none.
        if setting == .connectQuery { return (.string(""), nil) }
        let pgbouncerKey: String
        let fallback: String
        switch setting {
        case .poolSize: (pgbouncerKey, fallback) = ("default_pool_size", "20")
        case .minSize: (pgbouncerKey, fallback) = ("min_pool_size", "0")
        case .maxOverflow: (pgbouncerKey, fallback) = ("reserve_pool_size", "0")
        case .poolTimeout: (pgbouncerKey, fallback) = ("query_wait_timeout", "120")
        case .maxDBConnections: (pgbouncerKey, fallback) = ("max_db_connections", "0")
        default: (pgbouncerKey, fallback) = ("pool_mode", "session")
        }
        if let entry = self.global[pgbouncerKey] { return (.string(entry.value), entry.line) }
        return (.string(fallback), nil)
    }

    // MARK: [users]

    mutating func translateUser(_ entry: PgBouncerINI.Entry) {
        let connection: PgBouncerConnectionString
        switch PgBouncerConnectionString.parse(entry.value) {
        case .success(let parsed): connection = parsed
        case .failure(let rejection):
            self.fail(entry, rejection.message)
            return
        }
        for (key, value) in connection.pairs {
            switch key {
            case "pool_mode", "pool_size", "reserve_pool_size", "query_wait_timeout":
                let setting: Setting =
                    switch key {
                    case "pool_mode": .poolMode
                    case "pool_size": .poolSize
                    case "reserve_pool_size": .maxOverflow
                    default: .poolTimeout
                    }
                guard case .string(let global) = self.globalRaw(for: setting).raw,
                    global.lowercased() != value.lowercased()
                else { continue }
                self.fail(
                    entry,
                    "\(key) per user is not supported: Lifeguard has no [users] settings; "
                        + "move \(key) to [databases] entries (pools are per database and user) or to [pgbouncer]"
                )
            case "max_user_connections":
                if value != "0" {
                    self.fail(
                        entry,
                        "max_user_connections is not supported: Lifeguard has no cap on server "
                            + "connections per user; size pool_size and max_overflow instead"
                    )
                }
            case "max_user_client_connections":
                if value != "0" { self.warn(entry, "max_user_client_connections is not supported, ignored") }
            case "query_timeout", "idle_transaction_timeout", "transaction_timeout", "client_idle_timeout":
                if value != "0" {
                    self.warn(entry, "\(key) is not supported, ignored: \(timeoutAdvice) timeouts (ALTER ROLE ... SET)")
                }
            default:
                self.fail(entry, "unrecognized user parameter \(key)")
            }
        }
    }

    // MARK: Helpers

    mutating func set(_ setting: Setting, _ value: String, _ entry: PgBouncerINI.Entry) {
        self.values.append(.init(setting: setting, raw: .string(value), origin: entry.origin))
        self.noteMeaning(setting)
    }

    mutating func noteMeaning(_ setting: Setting) {
        if let note = meaningNotes[setting] { self.notes[setting.key] = note }
    }

    mutating func warn(_ entry: PgBouncerINI.Entry, _ message: String) {
        self.warnings.append("\(entry.path):\(entry.line): \(entry.key): \(message)")
    }

    mutating func fail(_ entry: PgBouncerINI.Entry, _ message: String) {
        self.problems.append(.init(location: "\(entry.path):\(entry.line)", key: entry.key, message: message))
    }

    /// A value inside libpq's `options`: blanks and backslashes escaped with a backslash.
    static func escapedOption(_ value: String) -> String {
        var result = ""
        for character in value {
            if character == " " || character == "\\" { result.append("\\") }
            result.append(character)
        }
        return result
    }

    /// A value in libpq's `key=value` syntax.
    static func libpqQuoted(_ value: String) -> String {
        let plain = !value.isEmpty && !value.contains { $0.isWhitespace || $0 == "'" || $0 == "\\" }
        guard !plain else { return value }
        return "'" + value.replacing("\\", with: "\\\\").replacing("'", with: "\\'") + "'"
    }
}
