import Foundation
import Testing
import Upstream
import WebConfig

@testable import LifeguardConfig

/// One setting, a value that is not its default, and how to recognise it in the result.
struct SettingCase: Sendable, CustomTestStringConvertible {
    let setting: Setting
    /// As written in TOML.
    let toml: String
    /// As given in an environment variable or a flag.
    let text: String
    let check: @Sendable (LifeguardConfiguration) -> Bool

    var testDescription: String { self.setting.key }

    /// Loading only checks that auth_file exists, so any file that always exists will do: this one.
    static let authFile = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().path

    static let all: [SettingCase] = [
        .init(setting: .listen, toml: "\"127.0.0.2:7000\"", text: "127.0.0.2:7000") {
            $0.listen == ListenAddress(host: "127.0.0.2", port: 7000)
        },
        .init(setting: .metricsListen, toml: "\"[::1]:9999\"", text: "[::1]:9999") {
            $0.metricsListen == ListenAddress(host: "::1", port: 9999)
        },
        // An empty web configuration is a valid one (plain HTTP, no authentication), and /dev/null is always empty.
        .init(setting: .metricsWebConfig, toml: "\"/dev/null\"", text: "/dev/null") {
            $0.metricsWebConfig == WebConfiguration(file: "/dev/null")
        },
        .init(setting: .upstream, toml: "\"postgresql://u@h.example:5444/d\"", text: "postgresql://u@h.example:5444/d")
        {
            $0.upstream?.host == "h.example" && $0.upstream?.port == 5444 && $0.upstream?.dbname == "d"
        },
        .init(setting: .poolMode, toml: "\"transaction\"", text: "transaction") { $0.poolMode == .transaction },
        .init(setting: .poolSize, toml: "12", text: "12") { $0.poolSize == 12 },
        .init(setting: .minSize, toml: "3", text: "3") { $0.minSize == 3 },
        .init(setting: .maxOverflow, toml: "0", text: "0") { $0.maxOverflow == 0 },
        .init(setting: .poolTimeout, toml: "\"250ms\"", text: "250ms") { $0.poolTimeout == .milliseconds(250) },
        .init(setting: .poolRecycle, toml: "\"1h\"", text: "1h") { $0.poolRecycle == .seconds(3600) },
        .init(setting: .prePing, toml: "false", text: "false") { !$0.prePing },
        .init(setting: .prePingDelay, toml: "0.5", text: "0.5") { $0.prePingDelay == .milliseconds(500) },
        .init(setting: .idleTimeout, toml: "\"off\"", text: "off") { $0.idleTimeout == nil },
        .init(setting: .leakThreshold, toml: "\"5m\"", text: "5m") { $0.leakThreshold == .seconds(300) },
        .init(setting: .maxClientConn, toml: "1000", text: "1000") { $0.maxClientConn == 1000 },
        .init(setting: .drainTimeout, toml: "0", text: "0") { $0.drainTimeout == .zero },
        .init(setting: .resetQuery, toml: "\"RESET ALL\"", text: "RESET ALL") { $0.resetQuery == "RESET ALL" },
        .init(setting: .maxDBConnections, toml: "40", text: "40") { $0.maxDBConnections == 40 },
        .init(setting: .connectQuery, toml: "\"SET work_mem = '8MB'\"", text: "SET work_mem = '8MB'") {
            $0.connectQuery == "SET work_mem = '8MB'"
        },
        .init(setting: .logLevel, toml: "\"debug\"", text: "debug") { $0.logLevel == .debug },
        .init(setting: .authType, toml: "\"trust\"", text: "trust") { $0.authType == .trust },
        .init(setting: .authFile, toml: "\"\(authFile)\"", text: authFile) { $0.authFile == authFile },
        .init(setting: .unixSocketDir, toml: "\"/tmp\"", text: "/tmp") { $0.unixSocketDir == "/tmp" },
        .init(setting: .unixSocketMode, toml: "\"0770\"", text: "0770") { $0.unixSocketMode == 0o770 },
        .init(setting: .unixSocketGroup, toml: "\"postgres\"", text: "postgres") { $0.unixSocketGroup == "postgres" },
        // Loading checks that TLS files exist; what they hold is checked where the TLS context is made.
        .init(setting: .clientTLSSSLMode, toml: "\"disable\"", text: "disable") { $0.clientTLS.mode == .disable },
        .init(setting: .clientTLSCertFile, toml: "\"\(authFile)\"", text: authFile) {
            $0.clientTLS.certFile == authFile
        },
        .init(setting: .clientTLSKeyFile, toml: "\"\(authFile)\"", text: authFile) { $0.clientTLS.keyFile == authFile },
        .init(setting: .clientTLSCAFile, toml: "\"\(authFile)\"", text: authFile) { $0.clientTLS.caFile == authFile },
        .init(setting: .clientTLSProtocols, toml: "\"tlsv1.3\"", text: "tlsv1.3") {
            $0.clientTLS.protocols == [.tlsv1_3]
        },
        .init(
            setting: .clientTLSCiphers,
            toml: "\"ECDHE-ECDSA-AES128-GCM-SHA256\"",
            text: "ECDHE-ECDSA-AES128-GCM-SHA256"
        ) {
            $0.clientTLS.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256"
        },
        .init(setting: .authUser, toml: "\"lookup\"", text: "lookup") { $0.authUser == "lookup" },
        .init(setting: .authQuery, toml: "\"SELECT * FROM auth.lookup($1)\"", text: "SELECT * FROM auth.lookup($1)") {
            $0.authQuery == "SELECT * FROM auth.lookup($1)"
        },
        .init(setting: .authDbname, toml: "\"postgres\"", text: "postgres") { $0.authDbname == "postgres" },
        .init(setting: .adminUsers, toml: "\"ops, root\"", text: "ops, root") { $0.adminUsers == ["ops", "root"] },
        .init(setting: .statsUsers, toml: "\"exporter,\"", text: "exporter,") { $0.statsUsers == ["exporter"] },
    ]
}

@Suite struct LifeguardConfigurationLoadingTests {
    /// An upstream for every test that is not about the upstream.
    static let baseEnvironment = ["DATABASE_URL": "host=base.example dbname=app"]

    static func load(
        file: String? = nil,
        environment: [String: String] = baseEnvironment,
        flags: [Setting: String] = [:]
    ) throws(ConfigurationError) -> LifeguardConfiguration {
        var path: TemporaryFile? = nil
        if let file { path = try! TemporaryFile(file) }
        defer { _ = path }
        return try LifeguardConfiguration.load(
            ConfigurationSources(configFile: path?.path, environment: environment, flags: flags)
        )
    }

    /// The problem lines of a configuration that must not load.
    static func problems(
        file: String? = nil,
        environment: [String: String] = baseEnvironment,
        flags: [Setting: String] = [:],
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> [String] {
        do {
            _ = try Self.load(file: file, environment: environment, flags: flags)
            Issue.record("the configuration loaded", sourceLocation: sourceLocation)
            return []
        } catch {
            return error.lines
        }
    }

    @Test func defaultsMatchTheDocumentation() throws {
        let configuration = try Self.load()
        #expect(configuration.listen == ListenAddress(host: "127.0.0.1", port: 6432))
        #expect(configuration.metricsListen == ListenAddress(host: "127.0.0.1", port: 9187))
        #expect(configuration.poolMode == .session)
        #expect(configuration.poolSize == 5)
        #expect(configuration.minSize == 0)
        #expect(configuration.maxOverflow == 10)
        #expect(configuration.poolTimeout == .seconds(30))
        #expect(configuration.poolRecycle == nil)
        #expect(configuration.prePing)
        #expect(configuration.prePingDelay == .seconds(1))
        #expect(configuration.idleTimeout == .seconds(600))
        #expect(configuration.leakThreshold == nil)
        #expect(configuration.maxClientConn == 100)
        #expect(configuration.drainTimeout == .seconds(30))
        #expect(configuration.resetQuery == "DISCARD ALL")
        #expect(configuration.connectQuery == nil)
        #expect(configuration.maxDBConnections == 0)
        #expect(configuration.logLevel == .info)
        #expect(configuration.authType == nil)
        #expect(configuration.authFile == nil)
        #expect(configuration.authUser == nil)
        #expect(configuration.authQuery == LifeguardConfiguration.defaultAuthQuery)
        #expect(configuration.authDbname == nil)
        #expect(configuration.databases.isEmpty)
        #expect(configuration.provenance.origins[Setting.poolSize.key] == nil)
    }

    @Test(arguments: SettingCase.all)
    func eachSettingFromTheFile(_ example: SettingCase) throws {
        let configuration = try Self.load(file: "# comment\n\(example.setting.key) = \(example.toml)\n")
        #expect(example.check(configuration))
        guard case .file(_, let line) = configuration.provenance.origins[example.setting.key] else {
            Issue.record("origin is \(String(describing: configuration.provenance.origins[example.setting.key]))")
            return
        }
        #expect(line == 2)
    }

    @Test(arguments: SettingCase.all)
    func eachSettingFromTheEnvironment(_ example: SettingCase) throws {
        var environment = Self.baseEnvironment
        environment[example.setting.environmentVariable] = example.text
        let configuration = try Self.load(environment: environment)
        #expect(example.check(configuration))
        #expect(
            configuration.provenance.origins[example.setting.key] == .environment(example.setting.environmentVariable)
        )
    }

    @Test(arguments: SettingCase.all)
    func eachSettingFromAFlag(_ example: SettingCase) throws {
        let configuration = try Self.load(flags: [example.setting: example.text])
        #expect(example.check(configuration))
        let flag = example.setting == .prePing ? "--no-pre-ping" : example.setting.flag
        #expect(configuration.provenance.origins[example.setting.key] == .flag(flag))
    }

    @Test func everySettingHasACase() {
        #expect(Set(SettingCase.all.map(\.setting)) == Set(Setting.allCases))
    }

    @Test func flagsBeatEnvironmentBeatsFileBeatsDefault() throws {
        let file = "pool_size = 7\n"
        var environment = Self.baseEnvironment
        environment["LIFEGUARD_POOL_SIZE"] = "8"

        let all = try Self.load(file: file, environment: environment, flags: [.poolSize: "9"])
        #expect(all.poolSize == 9)
        #expect(all.provenance.origins["pool_size"] == .flag("--pool-size"))

        let noFlag = try Self.load(file: file, environment: environment)
        #expect(noFlag.poolSize == 8)
        #expect(noFlag.provenance.origins["pool_size"] == .environment("LIFEGUARD_POOL_SIZE"))

        let fileOnly = try Self.load(file: file)
        #expect(fileOnly.poolSize == 7)

        #expect(try Self.load().poolSize == 5)
    }

    @Test func theConfigFileCanComeFromTheEnvironment() throws {
        let file = try TemporaryFile("pool_size = 4\n")
        var environment = Self.baseEnvironment
        environment["LIFEGUARD_CONFIG"] = file.path
        let configuration = try LifeguardConfiguration.load(ConfigurationSources(environment: environment))
        #expect(configuration.poolSize == 4)
        #expect(configuration.provenance.origins["pool_size"] == .file(path: file.path, line: 1))
    }

    @Test func emptyEnvironmentVariablesAreUnset() throws {
        var environment = Self.baseEnvironment
        environment["LIFEGUARD_POOL_SIZE"] = ""
        #expect(try Self.load(environment: environment).poolSize == 5)
    }

    @Test func databaseURLIsTheFallbackUpstream() throws {
        let url = "postgresql://app@fallback.example:5555/orders"
        let fallback = try Self.load(environment: ["DATABASE_URL": url])
        #expect(fallback.upstream?.host == "fallback.example")
        #expect(fallback.provenance.origins["upstream"] == .environment("DATABASE_URL"))

        let named = try Self.load(environment: ["DATABASE_URL": url, "LIFEGUARD_UPSTREAM": "host=named.example"])
        #expect(named.upstream?.host == "named.example")

        let fromFile = try Self.load(file: "upstream = \"host=file.example\"", environment: ["DATABASE_URL": url])
        #expect(fromFile.upstream?.host == "file.example")

        let databasesOnly = try Self.load(
            file: "[databases.app]\ndsn = \"host=app.example\"\n",
            environment: ["DATABASE_URL": url]
        )
        #expect(databasesOnly.upstream == nil)
        #expect(databasesOnly.database(named: "app")?.dsn.host == "app.example")
    }

    @Test func aBadUpstreamDoesNotFallBackToDatabaseURL() {
        let lines = Self.problems(flags: [.upstream: "host=x bogus=1"])
        #expect(lines == ["--upstream: invalid connection string: invalid connection option \"bogus\""])
    }

    @Test func threeMistakesInOneFileGiveThreeLines() throws {
        let file = try TemporaryFile(
            """
            # Lifeguard
            listen = "127.0.0.1:6432"
            upstream = "postgresql://app:s3cret@db.example:5432/orders"

            pool_size = "five"
            pool_mode = "sessions"
            idle_timeout = "ten minutes"
            """
        )
        do {
            _ = try LifeguardConfiguration.load(ConfigurationSources(configFile: file.path))
            Issue.record("loaded")
        } catch {
            #expect(
                error.lines == [
                    "\(file.path):5: pool_size: expected an integer >= 1, got \"five\"",
                    "\(file.path):6: pool_mode: expected session, transaction or statement, got \"sessions\"",
                    "\(file.path):7: idle_timeout: expected a duration such as 250ms, 30s, 5m, 1h or plain seconds, "
                        + "or 0 or \"off\" to turn it off, got \"ten minutes\"",
                ]
            )
        }
    }

    @Test func problemsFromEverySourceAreCollected() {
        let lines = Self.problems(
            file: "max_overflow = -1\n",
            environment: ["LIFEGUARD_MAX_CLIENT_CONN": "lots", "DATABASE_URL": "host=x"],
            flags: [.poolRecycle: "sometimes"]
        )
        #expect(lines.count == 3)
        #expect(lines[0].hasSuffix(":1: max_overflow: expected an integer >= 0, got -1"))
        #expect(lines[1] == "LIFEGUARD_MAX_CLIENT_CONN: expected an integer >= 1, got \"lots\"")
        #expect(lines[2].hasPrefix("--pool-recycle: expected a duration"))
    }

    @Test func unknownKeysAreErrorsWithASuggestion() {
        let lines = Self.problems(
            file: """
                pool_sise = 5
                default_pool_size = 5
                colour = "blue"
                [databases.app]
                dsn = "host=x"
                pool_szie = 3
                """
        )
        #expect(lines.count == 4)
        #expect(lines[0].hasSuffix(":1: pool_sise: unknown key; did you mean \"pool_size\"?"))
        #expect(lines[1].hasSuffix(":2: default_pool_size: unknown key; did you mean \"pool_size\"?"))
        #expect(lines[2].hasSuffix(":3: colour: unknown key"))
        #expect(lines[3].hasSuffix(":6: databases.app.pool_szie: unknown key; did you mean \"pool_size\"?"))
    }

    @Test func unknownEnvironmentVariablesWarnOnlyWhenCloseToASetting() throws {
        var environment = Self.baseEnvironment
        environment["LIFEGUARD_POOLSIZE"] = "3"
        environment["LIFEGUARD_PORT"] = "tcp://10.0.0.1:6432"  // what Kubernetes adds for a Service named lifeguard
        let configuration = try Self.load(environment: environment)
        #expect(
            configuration.provenance.warnings == [
                "LIFEGUARD_POOLSIZE is not a Lifeguard setting (did you mean LIFEGUARD_POOL_SIZE?); ignored"
            ]
        )
    }

    @Test func tomlSyntaxErrorsNameTheLine() {
        let lines = Self.problems(file: "pool_size = 5\nlisten = \"127.0.0.1:6432\n")
        #expect(lines.count == 1)
        #expect(lines.first?.contains(":2: invalid TOML: ") == true)
    }

    @Test func aMissingFileIsOneLine() {
        let lines = Self.problems(environment: [
            "LIFEGUARD_CONFIG": "/nonexistent/lifeguard.toml", "DATABASE_URL": "host=x",
        ])
        #expect(lines == ["/nonexistent/lifeguard.toml: cannot read the configuration file: no such file"])
    }

    @Test func databasesInheritAndOverride() throws {
        let configuration = try Self.load(
            file: """
                pool_size = 8
                pool_mode = "transaction"
                [databases.orders]
                dsn = "host=orders.example"
                pool_size = 20
                pool_timeout = "2s"
                [databases.reports]
                dsn = "postgresql://r@reports.example/reports"
                pool_mode = "session"
                min_size = 2
                max_overflow = 0
                max_db_connections = 4
                [databases]
                legacy = "host=legacy.example"
                """
        )
        #expect(configuration.databases.map(\.name) == ["legacy", "orders", "reports"])
        let orders = try #require(configuration.database(named: "orders"))
        #expect(orders.poolSize == 20)
        #expect(orders.poolMode == .transaction)
        #expect(orders.poolTimeout == .seconds(2))
        #expect(orders.maxOverflow == 10)
        let reports = try #require(configuration.database(named: "reports"))
        #expect(reports.poolMode == .session)
        #expect(reports.poolSize == 8)
        #expect(reports.minSize == 2)
        #expect(reports.maxOverflow == 0)
        #expect(reports.maxDBConnections == 4)
        #expect(configuration.database(named: "legacy")?.dsn.host == "legacy.example")
        #expect(orders.maxDBConnections == 0)
        #expect(configuration.provenance.origins["databases.orders.pool_size"] != nil)
        #expect(configuration.provenance.origins["databases.orders.max_overflow"] == nil)
    }

    @Test func aDatabaseWithoutDSNIsAnError() {
        let lines = Self.problems(file: "[databases.app]\npool_size = 3\n")
        #expect(lines.count == 1)
        #expect(
            lines.first?.hasSuffix(":1: databases.app: missing dsn: the connection string of database \"app\"") == true
        )
    }

    @Test func crossFieldChecks() {
        #expect(
            Self.problems(flags: [.minSize: "6"]) == ["--min-size: min_size (6) must not be greater than pool_size (5)"]
        )
        #expect(
            Self.problems(environment: ["LIFEGUARD_MIN_SIZE": "3", "DATABASE_URL": "host=x"], flags: [.poolSize: "2"])
                == ["LIFEGUARD_MIN_SIZE: min_size (3) must not be greater than pool_size (2)"]
        )
        let database = Self.problems(file: "min_size = 2\n[databases.app]\ndsn = \"host=x\"\npool_size = 1\n")
        #expect(database.count == 1)
        #expect(
            database.first?.hasSuffix(
                ":4: databases.app.pool_size: min_size (2) must not be greater than pool_size (1)"
            ) == true
        )
        #expect(
            Self.problems(environment: [:]) == [
                "upstream: no upstream configured: set upstream (in the file, LIFEGUARD_UPSTREAM, --upstream or "
                    + "DATABASE_URL) or add a [databases.NAME] entry"
            ]
        )
        #expect(
            Self.problems(flags: [.metricsListen: "127.0.0.1:6432"]) == [
                "--metrics-listen: 127.0.0.1:6432 is also the listen address; give the metrics server its own port"
            ]
        )
        #expect(
            Self.problems(flags: [.authType: "scram-sha-256"]) == [
                "--auth-type: scram-sha-256 needs auth_file, a PgBouncer userlist file with the clients' passwords, "
                    + "or auth_user to look them up with auth_query"
            ]
        )
        #expect(
            Self.problems(flags: [.authQuery: "SELECT rolname, rolpassword FROM pg_authid"]) == [
                "--auth-query: expected an SQL query with $1 for the user name, "
                    + "got \"SELECT rolname, rolpassword FROM pg_authid\""
            ]
        )
        #expect(
            Self.problems(flags: [.authType: "md5", .authFile: "/nonexistent/userlist.txt"]) == [
                "--auth-file: no such file: \"/nonexistent/userlist.txt\""
            ]
        )
        #expect(
            Self.problems(flags: [.listen: "0.0.0.0:6432"]) == [
                "--listen: 0.0.0.0:6432 is not a loopback address, so clients must authenticate: "
                    + "set auth_type (trust, md5 or scram-sha-256)"
            ]
        )
    }

    @Test func portZeroAndExplicitAuthAreAccepted() throws {
        let configuration = try Self.load(
            flags: [
                .listen: "0.0.0.0:0", .metricsListen: "127.0.0.1:0", .authType: "md5",
                .authFile: SettingCase.authFile,
            ]
        )
        #expect(configuration.listen.port == 0)
        #expect(configuration.authType == .md5)
        // auth_user alone serves: the secrets come from auth_query.
        let lookup = try Self.load(flags: [.authType: "scram-sha-256", .authUser: "lookup"])
        #expect(lookup.authUser == "lookup" && lookup.authFile == nil)
    }

    @Test func connectQueryIsInheritedOrOverridden() throws {
        let configuration = try Self.load(
            file: """
                connect_query = "SET work_mem = '64MB'"
                [databases.orders]
                dsn = "host=orders.example"
                connect_query = "SELECT set_config('app.tag', 'orders', false)"
                [databases.reports]
                dsn = "host=reports.example"
                [databases.raw]
                dsn = "host=raw.example"
                connect_query = ""
                """
        )
        #expect(configuration.connectQuery == "SET work_mem = '64MB'")
        let orders = configuration.database(named: "orders")
        #expect(orders?.connectQuery == "SELECT set_config('app.tag', 'orders', false)")
        #expect(configuration.database(named: "reports")?.connectQuery == "SET work_mem = '64MB'")
        #expect(configuration.database(named: "raw")?.connectQuery == nil)
        #expect(try Self.load(flags: [.connectQuery: " "]).connectQuery == nil)
        #expect(LifeguardConfiguration.defaults.connectQuery == nil)
    }

    @Test func anEmptyResetQueryMeansNone() throws {
        #expect(try Self.load(file: "reset_query = \"\"").resetQuery == nil)
        #expect(try Self.load(flags: [.resetQuery: " "]).resetQuery == nil)
    }

    @Test func dsnPortsAreChecked() {
        #expect(
            Self.problems(flags: [.upstream: "postgresql://u:s3cret@h:0/db"]) == [
                "--upstream: invalid connection string: port \"0\" is not a number from 1 to 65535"
            ]
        )
        #expect(Self.problems(flags: [.upstream: "host=a,b port=5432,x"]).count == 1)
    }

    @Test func equalityIgnoresWhereValuesCameFrom() throws {
        let fromFile = try Self.load(file: "pool_size = 9\n")
        let fromFlag = try Self.load(flags: [.poolSize: "9"])
        #expect(fromFile == fromFlag)
        #expect(fromFile.provenance.origins != fromFlag.provenance.origins)
        #expect(fromFile != (try Self.load(flags: [.poolSize: "10"])))
    }

    @Test func reloadReadsTheFileAgain() throws {
        let file = try TemporaryFile("pool_size = 3\n")
        let sources = ConfigurationSources(configFile: file.path, environment: Self.baseEnvironment)
        let first = try LifeguardConfiguration.load(sources)
        #expect(try first.reloaded() == first)
        try "pool_size = 4\n".write(toFile: file.path, atomically: true, encoding: .utf8)
        #expect(try first.reloaded().poolSize == 4)
        try "pool_size = 0\n".write(toFile: file.path, atomically: true, encoding: .utf8)
        #expect(throws: ConfigurationError.self) { try first.reloaded() }
    }

    @Test func theExampleFileIsAccepted() throws {
        let path = docsDirectory.appendingPathComponent("lifeguard.example.toml").path
        let configuration = try LifeguardConfiguration.load(ConfigurationSources(configFile: path))
        #expect(configuration.upstream != nil)
        #expect(!configuration.databases.isEmpty)
        #expect(!configuration.rendered().contains("change-me"))
    }
}
