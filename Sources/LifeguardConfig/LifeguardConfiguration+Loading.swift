import Foundation
import TOMLKit
import Upstream
import WebConfig

/// What a configuration is made from. Keep it to load the same configuration again (SIGHUP).
public struct ConfigurationSources: Sendable, Equatable {
    /// The TOML file (`--config`); when nil, `LIFEGUARD_CONFIG` from `environment` names it, if set.
    public var configFile: String?
    /// `LIFEGUARD_*` variables, `LIFEGUARD_CONFIG` and `DATABASE_URL` are read from here. libpq reads its own
    /// `PG*` variables from the process environment.
    public var environment: [String: String]
    /// Command-line values as typed, by setting (`--pre-ping` is "true", `--no-pre-ping` "false").
    public var flags: [Setting: String]

    public init(configFile: String? = nil, environment: [String: String] = [:], flags: [Setting: String] = [:]) {
        self.configFile = configFile
        self.environment = environment
        self.flags = flags
    }

    /// The file that will be read: `configFile`, else a non-empty `LIFEGUARD_CONFIG`.
    public var effectiveConfigFile: String? {
        if let configFile { return configFile }
        guard let named = self.environment["LIFEGUARD_CONFIG"], !named.isEmpty else { return nil }
        return named
    }
}

extension LifeguardConfiguration {
    /// Loads and validates the configuration: defaults, then the file, then `LIFEGUARD_*` variables, then flags.
    ///
    /// - Throws: ``ConfigurationError`` listing every problem found in every source, one line each.
    public static func load(_ sources: ConfigurationSources) throws(ConfigurationError) -> LifeguardConfiguration {
        var loader = ConfigurationLoader(sources: sources)
        return try loader.load()
    }

    /// Loads the configuration again from the same sources (the file is read anew), for SIGHUP.
    public func reloaded() throws(ConfigurationError) -> LifeguardConfiguration {
        try Self.load(self.provenance.sources ?? ConfigurationSources())
    }
}

/// One pass over all sources. Every problem is recorded and loading carries on, so that one run reports them all.
private struct ConfigurationLoader {
    let sources: ConfigurationSources
    var configuration = LifeguardConfiguration.defaults
    var origins: [String: SettingOrigin] = [:]
    var problems: [ConfigurationError.Problem] = []
    var warnings: [String] = []
    /// Password candidates seen in any input; every message is scrubbed of them at the end.
    var secrets: [String] = []
    /// Keys some source tried to set, even if the value was bad (a bad `upstream` must not fall back to DATABASE_URL).
    var named: Set<String> = []
    /// Keys whose value was rejected, so that cross-field checks do not pile on.
    var failed: Set<String> = []
    var databaseEntries: [DatabaseEntry] = []
    /// The file could not be read or parsed: it may well name an upstream, so its absence is not reported.
    var fileUnreadable = false
    /// `metrics_web_config` as given; read once every source has had its say.
    var metricsWebConfigFile: String? = nil

    struct DatabaseEntry {
        var name: String
        /// The file it is written in (a pgbouncer.ini may include others).
        var path: String
        var line: Int?
        var values: [(key: String, raw: RawValue, line: Int?)]
    }

    init(sources: ConfigurationSources) {
        self.sources = sources
    }

    mutating func load() throws(ConfigurationError) -> LifeguardConfiguration {
        if let path = self.sources.effectiveConfigFile { self.readFile(path) }
        self.readEnvironment()
        self.readFlags()
        self.fallBackToDatabaseURL()
        self.resolveDatabases()
        self.checkAcrossSettings()

        let secrets = self.secrets + self.passwordsInUse()
        if !self.problems.isEmpty {
            var scrubbed = self.problemsInReadingOrder()
            for index in scrubbed.indices {
                scrubbed[index].message = SecretScrubber.scrub(scrubbed[index].message, secrets: secrets)
            }
            throw ConfigurationError(problems: scrubbed)
        }
        self.configuration.provenance.origins = self.origins
        self.configuration.provenance.warnings = self.warnings.map { SecretScrubber.scrub($0, secrets: secrets) }
        self.configuration.provenance.sources = self.sources
        return self.configuration
    }

    // MARK: Sources

    mutating func readFile(_ path: String) {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file"
            self.report(location: path, key: nil, "cannot read the configuration file: \(reason)")
            self.fileUnreadable = true
            return
        }
        guard let text = String(data: data, encoding: .utf8) else {
            self.report(location: path, key: nil, "the configuration file is not UTF-8 text")
            self.fileUnreadable = true
            return
        }
        self.secrets += SecretScrubber.secrets(in: text)
        let parsedTable = try? TOMLTable(string: text)
        if path.lowercased().hasSuffix(".ini") || PgBouncerINI.looksLikePgBouncer(text, validTOML: parsedTable != nil) {
            self.readPgBouncerINI(path, text)
            return
        }
        let table: TOMLTable
        do {
            table = try parsedTable ?? TOMLTable(string: text)
        } catch let error as TOMLParseError {
            self.report(location: "\(path):\(error.source.begin.line)", key: nil, "invalid TOML: \(error.description)")
            self.fileUnreadable = true
            return
        } catch {
            self.report(location: path, key: nil, "invalid TOML: \(error)")
            self.fileUnreadable = true
            return
        }
        let lines = TOMLLineIndex(text)
        for key in table.keys {
            guard let value = table[key] else { continue }
            let origin = SettingOrigin.file(path: path, line: lines.line([key]))
            if let setting = Setting(rawValue: key) {
                self.apply(setting, RawValue(value), origin: origin)
            } else if key == "databases" {
                self.readDatabases(value, path: path, lines: lines)
            } else {
                let known = Setting.allCases.map(\.key) + ["databases"]
                self.report(origin, key: Self.displayKey([key]), Self.unknownKey(key, among: known))
            }
        }
    }

    /// A pgbouncer.ini: its settings as Lifeguard's (PgBouncerINI+Mapping.swift), applied like a TOML file's.
    mutating func readPgBouncerINI(_ path: String, _ text: String) {
        let ini = PgBouncerINI(path: path, text: text)
        for file in ini.files.dropFirst() {
            if let included = PgBouncerINI.contents(of: file) { self.secrets += SecretScrubber.secrets(in: included) }
        }
        let translation = PgBouncerTranslation(ini)
        self.secrets += translation.secrets
        self.configuration.provenance.fromPgBouncerINI = true
        self.configuration.provenance.pgbouncerNotes = translation.notes
        for value in translation.values {
            self.apply(value.setting, value.raw, origin: value.origin)
        }
        if ini.entries.contains(where: { $0.section == "databases" }) { self.named.insert("databases") }
        for database in translation.databases {
            self.databaseEntries.append(
                DatabaseEntry(name: database.name, path: database.path, line: database.line, values: database.values)
            )
        }
        self.warnings += translation.warnings
        self.problems += translation.problems
        // A file that failed to translate may well name an upstream: do not also report a missing one.
        if !translation.problems.isEmpty { self.fileUnreadable = true }
    }

    mutating func readDatabases(_ value: any TOMLValueConvertible, path: String, lines: TOMLLineIndex) {
        self.named.insert("databases")
        guard let table = value.table else {
            let origin = SettingOrigin.file(path: path, line: lines.line(["databases"]))
            self.report(origin, key: "databases", "expected [databases.NAME] tables, got \(RawValue(value).shown)")
            return
        }
        let allowed = ["dsn"] + Setting.perDatabase.map(\.key)
        for name in table.keys {
            guard let entry = table[name] else { continue }
            let headerLine = lines.line(["databases", name])
            var database = DatabaseEntry(name: name, path: path, line: headerLine, values: [])
            if entry.type == .string {
                // PgBouncer's shorthand: `name = "connection string"`.
                database.values.append(("dsn", RawValue(entry), headerLine))
            } else if let fields = entry.table {
                for key in fields.keys {
                    guard let field = fields[key] else { continue }
                    let line = lines.line(["databases", name, key]) ?? headerLine
                    if allowed.contains(key) {
                        database.values.append((key, RawValue(field), line))
                    } else {
                        let origin = SettingOrigin.file(path: path, line: line)
                        self.report(
                            origin,
                            key: Self.displayKey(["databases", name, key]),
                            Self.unknownKey(key, among: allowed)
                        )
                    }
                }
            } else {
                let origin = SettingOrigin.file(path: path, line: headerLine)
                self.report(
                    origin,
                    key: Self.displayKey(["databases", name]),
                    "expected a table with dsn = \"...\" (or a connection string), got \(RawValue(entry).shown)"
                )
                continue
            }
            self.databaseEntries.append(database)
        }
    }

    mutating func readEnvironment() {
        for setting in Setting.allCases {
            guard let value = self.sources.environment[setting.environmentVariable], !value.isEmpty else { continue }
            self.secrets += SecretScrubber.secrets(in: value)
            self.apply(setting, .string(value), origin: .environment(setting.environmentVariable))
        }
        // Unknown LIFEGUARD_* variables are not errors: Kubernetes adds LIFEGUARD_PORT and friends for a Service named
        // lifeguard. One that looks like a typo of a setting earns a warning.
        let known = Set(Setting.allCases.map(\.environmentVariable) + ["LIFEGUARD_CONFIG"])
        for variable in self.sources.environment.keys.sorted()
        where variable.hasPrefix("LIFEGUARD_") && !known.contains(variable) {
            let name = String(variable.dropFirst("LIFEGUARD_".count))
            if let match = suggestion(for: name, among: Setting.allCases.map(\.key)) {
                let meant = Setting(rawValue: match)!.environmentVariable
                self.warnings.append("\(variable) is not a Lifeguard setting (did you mean \(meant)?); ignored")
            }
        }
    }

    mutating func readFlags() {
        for setting in Setting.allCases {
            guard let value = self.sources.flags[setting] else { continue }
            self.secrets += SecretScrubber.secrets(in: value)
            let flag = setting == .prePing && value == "false" ? "--no-pre-ping" : setting.flag
            self.apply(setting, .string(value), origin: .flag(flag))
        }
    }

    /// `DATABASE_URL` names the upstream only when nothing else names one, and no `[databases]` entry exists.
    mutating func fallBackToDatabaseURL() {
        guard !self.named.contains(Setting.upstream.key), !self.named.contains("databases"),
            let url = self.sources.environment["DATABASE_URL"], !url.isEmpty
        else { return }
        self.secrets += SecretScrubber.secrets(in: url)
        self.apply(.upstream, .string(url), origin: .environment("DATABASE_URL"))
    }

    // MARK: Values

    mutating func apply(_ setting: Setting, _ raw: RawValue, origin: SettingOrigin) {
        self.named.insert(setting.key)
        let outcome: Result<Void, Rejection>
        switch setting {
        case .listen: outcome = ValueParser.listenAddress(raw).map { self.configuration.listen = $0 }
        case .metricsListen: outcome = ValueParser.listenAddress(raw).map { self.configuration.metricsListen = $0 }
        case .metricsWebConfig:
            outcome = ValueParser.string(raw, what: "a file path").map {
                self.metricsWebConfigFile = $0.isEmpty ? nil : $0
            }
        case .upstream: outcome = ValueParser.connectionString(raw).map { self.configuration.upstream = $0 }
        case .poolMode: outcome = ValueParser.choice(raw, as: PoolMode.self).map { self.configuration.poolMode = $0 }
        case .poolSize: outcome = ValueParser.integer(raw, minimum: 1).map { self.configuration.poolSize = $0 }
        case .minSize: outcome = ValueParser.integer(raw, minimum: 0).map { self.configuration.minSize = $0 }
        case .maxOverflow: outcome = ValueParser.integer(raw, minimum: 0).map { self.configuration.maxOverflow = $0 }
        case .poolTimeout:
            outcome = ValueParser.duration(raw, allowOff: false, positive: true).map {
                self.configuration.poolTimeout = $0 ?? .zero
            }
        case .poolRecycle:
            outcome = ValueParser.duration(raw, allowOff: true).map { self.configuration.poolRecycle = $0 }
        case .prePing: outcome = ValueParser.boolean(raw).map { self.configuration.prePing = $0 }
        case .prePingDelay:
            outcome = ValueParser.duration(raw, allowOff: false).map { self.configuration.prePingDelay = $0 ?? .zero }
        case .idleTimeout:
            outcome = ValueParser.duration(raw, allowOff: true).map { self.configuration.idleTimeout = $0 }
        case .leakThreshold:
            outcome = ValueParser.duration(raw, allowOff: true).map { self.configuration.leakThreshold = $0 }
        case .maxClientConn:
            outcome = ValueParser.integer(raw, minimum: 1).map { self.configuration.maxClientConn = $0 }
        case .maxDBConnections:
            outcome = ValueParser.integer(raw, minimum: 0).map { self.configuration.maxDBConnections = $0 }
        case .drainTimeout:
            outcome = ValueParser.duration(raw, allowOff: false).map { self.configuration.drainTimeout = $0 ?? .zero }
        case .resetQuery:
            outcome = ValueParser.string(raw, what: "an SQL statement, or \"\" for none").map {
                let query = $0.trimmingWhitespace()
                self.configuration.resetQuery = query.isEmpty ? nil : query
            }
        case .connectQuery:
            outcome = ValueParser.string(raw, what: "an SQL statement, or \"\" for none").map {
                let query = $0.trimmingWhitespace()
                self.configuration.connectQuery = query.isEmpty ? nil : query
            }
        case .logLevel: outcome = ValueParser.choice(raw, as: LogLevel.self).map { self.configuration.logLevel = $0 }
        case .authType: outcome = ValueParser.choice(raw, as: AuthType.self).map { self.configuration.authType = $0 }
        case .authFile:
            outcome = ValueParser.string(raw, what: "a file path").map {
                self.configuration.authFile = $0.isEmpty ? nil : $0
            }
        case .unixSocketDir:
            outcome = ValueParser.string(raw, what: "a directory, or \"\" for none").map {
                self.configuration.unixSocketDir = $0.isEmpty ? nil : $0
            }
        case .unixSocketMode:
            outcome = ValueParser.fileMode(raw).map { self.configuration.unixSocketMode = $0 }
        case .unixSocketGroup:
            outcome = ValueParser.string(raw, what: "a group name, or \"\" for the process's").map {
                self.configuration.unixSocketGroup = $0.isEmpty ? nil : $0
            }
        case .clientTLSSSLMode:
            outcome = ValueParser.choice(raw, as: ClientTLSMode.self).map { self.configuration.clientTLS.mode = $0 }
        case .clientTLSCertFile:
            outcome = ValueParser.string(raw, what: "a file path").map {
                self.configuration.clientTLS.certFile = $0.isEmpty ? nil : $0
            }
        case .clientTLSKeyFile:
            outcome = ValueParser.string(raw, what: "a file path").map {
                self.configuration.clientTLS.keyFile = $0.isEmpty ? nil : $0
            }
        case .clientTLSCAFile:
            outcome = ValueParser.string(raw, what: "a file path").map {
                self.configuration.clientTLS.caFile = $0.isEmpty ? nil : $0
            }
        case .clientTLSProtocols:
            outcome = ValueParser.string(raw, what: "tlsv1.2, tlsv1.3, secure or all").flatMap {
                ValueParser.tlsProtocols($0).map { self.configuration.clientTLS.protocols = $0 }
            }
        case .clientTLSCiphers:
            outcome = ValueParser.string(raw, what: "an OpenSSL cipher list, or default").map {
                let ciphers = $0.trimmingWhitespace()
                self.configuration.clientTLS.ciphers =
                    ciphers.isEmpty || ciphers.lowercased() == "default" ? nil : ciphers
            }
        case .authUser:
            outcome = ValueParser.string(raw, what: "a role name, or \"\" for none").map {
                self.configuration.authUser = $0.isEmpty ? nil : $0
            }
        case .authQuery:
            let what = "an SQL query with $1 for the user name"
            outcome = ValueParser.string(raw, what: what).flatMap { text in
                let query = text.trimmingWhitespace()
                guard query.contains("$1") else { return .failure("expected \(what), got \(raw.shown)") }
                self.configuration.authQuery = query
                return .success(())
            }
        case .authDbname:
            outcome = ValueParser.string(raw, what: "a database name, or \"\" for the client's own").map {
                self.configuration.authDbname = $0.isEmpty ? nil : $0
            }
        case .adminUsers:
            outcome = ValueParser.string(raw, what: "comma-separated user names").map {
                self.configuration.adminUsers = ValueParser.userList($0)
            }
        case .statsUsers:
            outcome = ValueParser.string(raw, what: "comma-separated user names").map {
                self.configuration.statsUsers = ValueParser.userList($0)
            }
        }
        switch outcome {
        case .success:
            self.origins[setting.key] = origin
            self.failed.remove(setting.key)
        case .failure(let rejection):
            self.failed.insert(setting.key)
            self.report(origin, key: setting.key, rejection.message)
        }
    }

    mutating func resolveDatabases() {
        var resolved: [DatabaseConfiguration] = []
        for entry in self.databaseEntries {
            let prefix = Self.displayKey(["databases", entry.name])
            let path = entry.path
            var dsn: ConnInfo? = nil
            var poolMode = self.configuration.poolMode
            var poolSize = self.configuration.poolSize
            var minSize = self.configuration.minSize
            var maxOverflow = self.configuration.maxOverflow
            var poolTimeout = self.configuration.poolTimeout
            var connectQuery = self.configuration.connectQuery
            var maxDBConnections = self.configuration.maxDBConnections
            for (key, raw, line) in entry.values {
                let origin = SettingOrigin.file(path: path, line: line)
                let fullKey = Self.displayKey(["databases", entry.name, key])
                let outcome: Result<Void, Rejection>
                switch key {
                case "dsn": outcome = ValueParser.connectionString(raw).map { dsn = $0 }
                case Setting.poolMode.key:
                    outcome = ValueParser.choice(raw, as: PoolMode.self).map { poolMode = $0 }
                case Setting.poolSize.key: outcome = ValueParser.integer(raw, minimum: 1).map { poolSize = $0 }
                case Setting.minSize.key: outcome = ValueParser.integer(raw, minimum: 0).map { minSize = $0 }
                case Setting.maxOverflow.key:
                    outcome = ValueParser.integer(raw, minimum: 0).map { maxOverflow = $0 }
                case Setting.maxDBConnections.key:
                    outcome = ValueParser.integer(raw, minimum: 0).map { maxDBConnections = $0 }
                case Setting.connectQuery.key:
                    outcome = ValueParser.string(raw, what: "an SQL statement, or \"\" for none").map {
                        let query = $0.trimmingWhitespace()
                        connectQuery = query.isEmpty ? nil : query
                    }
                default:
                    outcome = ValueParser.duration(raw, allowOff: false, positive: true).map {
                        poolTimeout = $0 ?? .zero
                    }
                }
                switch outcome {
                case .success: self.origins[fullKey] = origin
                case .failure(let rejection):
                    self.failed.insert(fullKey)
                    self.report(origin, key: fullKey, rejection.message)
                }
            }
            guard let dsn else {
                if !self.failed.contains(Self.displayKey(["databases", entry.name, "dsn"])) {
                    let origin = SettingOrigin.file(path: path, line: entry.line)
                    self.report(
                        origin,
                        key: prefix,
                        "missing dsn: the connection string of database \(RawValue.quote(entry.name))"
                    )
                }
                continue
            }
            resolved.append(
                DatabaseConfiguration(
                    name: entry.name,
                    dsn: dsn,
                    poolMode: poolMode,
                    poolSize: poolSize,
                    minSize: minSize,
                    maxOverflow: maxOverflow,
                    poolTimeout: poolTimeout,
                    connectQuery: connectQuery,
                    maxDBConnections: maxDBConnections
                )
            )
        }
        self.configuration.databases = resolved.sorted { $0.name < $1.name }
    }

    mutating func checkAcrossSettings() {
        let configuration = self.configuration
        self.checkSizes(prefix: nil, minSize: configuration.minSize, poolSize: configuration.poolSize)
        for database in configuration.databases {
            self.checkSizes(
                prefix: ["databases", database.name],
                minSize: database.minSize,
                poolSize: database.poolSize
            )
        }

        if configuration.upstream == nil && !self.named.contains(Setting.upstream.key)
            && !self.named.contains("databases")
            && !self.fileUnreadable
        {
            let fix =
                configuration.provenance.fromPgBouncerINI
                ? "add NAME = host=... (or * = host=... for every database) under [databases] in the ini, "
                    + "or set LIFEGUARD_UPSTREAM, --upstream or DATABASE_URL"
                : "set upstream (in the file, LIFEGUARD_UPSTREAM, --upstream or DATABASE_URL) "
                    + "or add a [databases.NAME] entry"
            self.report(location: nil, key: Setting.upstream.key, "no upstream configured: \(fix)")
        }

        if configuration.listen == configuration.metricsListen && configuration.listen.port != 0,
            !self.failed.contains(Setting.listen.key), !self.failed.contains(Setting.metricsListen.key)
        {
            self.report(
                self.origin(of: .metricsListen),
                key: Setting.metricsListen.key,
                "\(configuration.metricsListen) is also the listen address; give the metrics server its own port"
            )
        }

        self.checkClientTLS(configuration)
        if let directory = configuration.unixSocketDir, !self.failed.contains(Setting.unixSocketDir.key) {
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) || !isDirectory.boolValue {
                self.report(
                    self.origin(of: .unixSocketDir),
                    key: Setting.unixSocketDir.key,
                    "no such directory: \(RawValue.quote(directory))"
                )
            } else if directory.utf8.count + "/.s.PGSQL.65535".utf8.count > 107 {
                self.report(
                    self.origin(of: .unixSocketDir),
                    key: Setting.unixSocketDir.key,
                    "\(RawValue.quote(directory)) is too long for a Unix socket path (at most 92 bytes)"
                )
            }
        }
        if let authType = configuration.authType, authType != .trust, authType != .cert,
            configuration.authFile == nil, configuration.authUser == nil,
            !self.failed.contains(Setting.authFile.key), !self.failed.contains(Setting.authUser.key)
        {
            self.report(
                self.origin(of: .authType),
                key: Setting.authType.key,
                "\(authType.rawValue) needs auth_file, a PgBouncer userlist file with the clients' passwords, "
                    + "or auth_user to look them up with auth_query"
            )
        }
        if let authFile = configuration.authFile {
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: authFile, isDirectory: &isDirectory) || isDirectory.boolValue {
                self.report(
                    self.origin(of: .authFile),
                    key: Setting.authFile.key,
                    "no such file: \(RawValue.quote(authFile))"
                )
            }
        }
        if let file = self.metricsWebConfigFile, !self.failed.contains(Setting.metricsWebConfig.key) {
            do {
                self.configuration.metricsWebConfig = try WebConfiguration.load(file: file)
            } catch {
                // The web configuration's problems carry its own file and line; the setting names where it was set.
                let origin = self.origin(of: .metricsWebConfig)
                let via = origin == .default ? "" : " (metrics_web_config, set at \(origin))"
                for problem in error.problems {
                    self.report(location: problem.location, key: problem.key, problem.message + via)
                }
            }
        }
        if configuration.authType == nil && !configuration.listen.isLoopback
            && !self.failed.contains(Setting.listen.key)
            && !self.failed.contains(Setting.authType.key)
        {
            self.report(
                self.origin(of: .listen),
                key: Setting.listen.key,
                "\(configuration.listen) is not a loopback address, so clients must authenticate: "
                    + "set auth_type (trust, md5 or scram-sha-256)"
            )
        }
    }

    /// The files TLS needs are named and exist; whether they hold what they should is checked where the TLS context
    /// is made (and by `check-config`).
    mutating func checkClientTLS(_ configuration: LifeguardConfiguration) {
        let tls = configuration.clientTLS
        let modeKey = Setting.clientTLSSSLMode.key
        if tls.isEnabled && !self.failed.contains(modeKey) {
            for (setting, path) in [(Setting.clientTLSCertFile, tls.certFile), (.clientTLSKeyFile, tls.keyFile)] {
                if path == nil {
                    self.report(
                        self.origin(of: .clientTLSSSLMode),
                        key: modeKey,
                        "\(tls.mode.rawValue) needs \(setting.key), Lifeguard's certificate and key in PEM"
                    )
                }
            }
            if (tls.mode == .verifyCA || tls.mode == .verifyFull) && tls.caFile == nil {
                self.report(
                    self.origin(of: .clientTLSSSLMode),
                    key: modeKey,
                    "\(tls.mode.rawValue) needs client_tls_ca_file, the CA that signs the clients' certificates"
                )
            }
        }
        for (setting, path) in [
            (Setting.clientTLSCertFile, tls.certFile), (.clientTLSKeyFile, tls.keyFile), (.clientTLSCAFile, tls.caFile),
        ] {
            guard let path else { continue }
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) || isDirectory.boolValue {
                self.report(self.origin(of: setting), key: setting.key, "no such file: \(RawValue.quote(path))")
            }
        }
        if configuration.authType == .cert && tls.mode != .verifyFull && tls.mode != .verifyCA
            && !self.failed.contains(Setting.authType.key)
        {
            self.report(
                self.origin(of: .authType),
                key: Setting.authType.key,
                "cert needs client_tls_sslmode = verify-full (clients must present a certificate)"
            )
        }
    }

    mutating func checkSizes(prefix: [String]?, minSize: Int, poolSize: Int) {
        let minKey = Self.displayKey((prefix ?? []) + [Setting.minSize.key])
        let sizeKey = Self.displayKey((prefix ?? []) + [Setting.poolSize.key])
        guard minSize > poolSize, !self.failed.contains(minKey), !self.failed.contains(sizeKey) else { return }
        // Blame the value written closest: the entry's own, then whichever of the two was set explicitly.
        let blamed = self.origins[minKey] != nil ? minKey : self.origins[sizeKey] != nil ? sizeKey : minKey
        let origin = self.origins[blamed] ?? self.origins[Setting.minSize.key] ?? .default
        self.report(origin, key: blamed, "min_size (\(minSize)) must not be greater than pool_size (\(poolSize))")
    }

    // MARK: Helpers

    func origin(of setting: Setting) -> SettingOrigin {
        self.origins[setting.key] ?? .default
    }

    /// Passwords of the connection strings that parsed, for the final scrub.
    func passwordsInUse() -> [String] {
        let infos = [self.configuration.upstream].compactMap { $0 } + self.configuration.databases.map(\.dsn)
        return infos.flatMap { $0.options.filter(\.isSecret).map(\.value) }
    }

    mutating func report(_ origin: SettingOrigin, key: String, _ message: String) {
        switch origin {
        case .default, .inherited: self.report(location: nil, key: key, message)
        case .pgbouncerDefault:
            let file = self.sources.effectiveConfigFile.map { "\($0) " } ?? ""
            self.report(location: "\(file)(PgBouncer default)", key: key, message)
        case .file: self.report(location: origin.description, key: key, message)
        case .environment(let variable): self.report(location: variable, key: nil, message)
        case .flag(let flag): self.report(location: flag, key: nil, message)
        }
    }

    mutating func report(location: String?, key: String?, _ message: String) {
        self.problems.append(.init(location: location, key: key, message: message))
    }

    static func unknownKey(_ key: String, among known: [String]) -> String {
        guard let match = suggestion(for: key, among: known) else { return "unknown key" }
        return "unknown key; did you mean \(RawValue.quote(match))?"
    }

    /// `databases.app.pool_size`, quoting parts that are not bare TOML keys.
    static func displayKey(_ parts: [String]) -> String {
        parts.map { part in
            let bare =
                !part.isEmpty
                && part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
            return bare ? part : RawValue.quote(part)
        }.joined(separator: ".")
    }

    /// The file's problems first, top to bottom (TOMLKit lists keys alphabetically, and entries are checked after
    /// the environment and flags), then the others in the order found.
    func problemsInReadingOrder() -> [ConfigurationError.Problem] {
        guard let path = self.sources.effectiveConfigFile else { return self.problems }
        func line(_ problem: ConfigurationError.Problem) -> Int? {
            guard let location = problem.location else { return nil }
            if location == path { return 0 }
            guard location.hasPrefix(path + ":") else { return nil }
            return Int(location.dropFirst(path.count + 1))
        }
        let fromFile = self.problems.enumerated().compactMap { entry in line(entry.element).map { ($0, entry.offset) } }
            .sorted { $0 < $1 }
            .map { self.problems[$0.1] }
        return fromFile + self.problems.filter { line($0) == nil }
    }
}
