import Foundation
import TOMLKit
import Testing
import Upstream

@testable import LifeguardConfig

@Suite struct PgBouncerINIMappingTests {
    /// A file that always exists, for auth_file.
    static let authFile = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().path

    static func load(
        _ text: String,
        environment: [String: String] = [:]
    ) throws(ConfigurationError)
        -> (LifeguardConfiguration, String)
    {
        let file = try! TemporaryFile(text, suffix: ".ini")
        let configuration = try LifeguardConfiguration.load(
            ConfigurationSources(configFile: file.path, environment: environment)
        )
        return (configuration, file.path)
    }

    static func problems(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> [String] {
        do {
            _ = try Self.load(text)
            Issue.record("the configuration loaded", sourceLocation: sourceLocation)
            return []
        } catch {
            return error.lines
        }
    }

    @Test func aTypicalFile() throws {
        let (configuration, path) = try Self.load(
            """
            [databases]
            app = host=10.0.0.5 port=5433 dbname=appdb pool_size=3 reserve_pool_size=1
            reports = host=10.0.0.6 user=reporting password='s3cr''et' pool_mode=session timezone='Europe/Paris'
            * = host=10.0.0.5

            [pgbouncer]
            listen_addr = 0.0.0.0
            listen_port = 6433
            auth_type = scram-sha-256
            auth_file = \(Self.authFile)
            pool_mode = transaction
            default_pool_size = 10
            min_pool_size = 2
            query_wait_timeout = 45
            server_idle_timeout = 300
            server_check_delay = 10
            server_reset_query = DISCARD ALL
            max_client_conn = 500
            server_tls_sslmode = require
            server_tls_ca_file = /etc/ssl/ca.pem
            verbose = 1
            """
        )
        #expect(configuration.listen == ListenAddress(host: "0.0.0.0", port: 6433))
        #expect(configuration.authType == .scramSHA256)
        #expect(configuration.authFile == Self.authFile)
        #expect(configuration.poolMode == .transaction)
        #expect(configuration.poolSize == 10)
        #expect(configuration.minSize == 2)
        #expect(configuration.maxOverflow == 0)  // PgBouncer's reserve_pool_size default
        #expect(configuration.poolTimeout == .seconds(45))
        #expect(configuration.poolRecycle == .seconds(3600))  // PgBouncer's server_lifetime default
        #expect(configuration.idleTimeout == .seconds(300))
        #expect(configuration.prePingDelay == .seconds(10))
        #expect(configuration.maxClientConn == 500)
        #expect(configuration.logLevel == .debug)
        #expect(configuration.provenance.origins["pool_recycle"] == .pgbouncerDefault)
        #expect(configuration.provenance.origins["pool_size"] == .file(path: path, line: 12))

        let upstream = try #require(configuration.upstream)
        #expect(upstream.host == "10.0.0.5")
        #expect(upstream.port == 5432)
        #expect(upstream.option("dbname")?.source != .connectionString)  // the client's database passes through
        #expect(upstream.sslmode == "require")
        #expect(upstream["sslrootcert"] == "/etc/ssl/ca.pem")

        let app = try #require(configuration.database(named: "app"))
        #expect(app.dsn.host == "10.0.0.5" && app.dsn.port == 5433 && app.dsn.dbname == "appdb")
        #expect(app.poolSize == 3 && app.maxOverflow == 1 && app.poolMode == .transaction && app.minSize == 2)
        let reports = try #require(configuration.database(named: "reports"))
        #expect(reports.dsn.user == "reporting")
        #expect(reports.dsn.password == "s3cr'et")
        #expect(reports.dsn["options"] == "-c timezone=Europe/Paris")
        #expect(reports.poolMode == .session && reports.poolSize == 10)

        let rendered = configuration.rendered()
        #expect(!rendered.contains("s3cr"))
        #expect(rendered.contains("pool_recycle = \"1h\"  # PgBouncer default"))
    }

    @Test func pgbouncerDefaultsApplyWhereTheFileIsSilent() throws {
        let (configuration, _) = try Self.load("[databases]\n* = host=db\n[pgbouncer]\nauth_type = trust\n")
        #expect(configuration.poolSize == 20)
        #expect(configuration.maxOverflow == 0)
        #expect(configuration.poolTimeout == .seconds(120))
        #expect(configuration.poolRecycle == .seconds(3600))
        #expect(configuration.prePingDelay == .seconds(30))
        #expect(configuration.idleTimeout == .seconds(600))
        #expect(configuration.maxClientConn == 100)
        #expect(configuration.poolMode == .session)
        #expect(configuration.listen == ListenAddress(host: "127.0.0.1", port: 6432))
        #expect(configuration.upstream?.port == 5432)
        let warnings = configuration.provenance.warnings
        #expect(warnings.contains { $0.contains("listen_addr is not set") })
    }

    @Test func environmentAndFlagsStillOverrideTheINI() throws {
        let (configuration, _) = try Self.load(
            "[databases]\n* = host=db\n[pgbouncer]\nauth_type = trust\ndefault_pool_size = 9\n",
            environment: ["LIFEGUARD_POOL_SIZE": "4"]
        )
        #expect(configuration.poolSize == 4)
    }

    @Test func authTypeDefaultsToMD5AsInPgBouncer() {
        let problems = Self.problems("[databases]\n* = host=db\n")
        #expect(problems.contains { $0.contains("(PgBouncer default): auth_type: md5 needs auth_file") })
    }

    @Test func hostDefaultsToUnixSocketDir() throws {
        let (plain, _) = try Self.load("[databases]\n* = dbname=x\n[pgbouncer]\nauth_type = trust\n")
        #expect(plain.upstream?.host == "/tmp")
        let (debian, _) = try Self.load(
            "[databases]\n* = dbname=x\n[pgbouncer]\nauth_type = trust\nunix_socket_dir = /var/run/postgresql\n"
        )
        #expect(debian.upstream?.host == "/var/run/postgresql")
    }

    @Test func theFallbackDatabaseKeepsItsOwnPoolSettings() throws {
        let (configuration, _) = try Self.load(
            """
            [databases]
            before = host=db
            * = host=db pool_size=2 pool_mode=statement
            after = host=db pool_size=4
            [pgbouncer]
            auth_type = trust
            default_pool_size = 8
            """
        )
        #expect(configuration.poolSize == 2)
        #expect(configuration.poolMode == .statement)
        #expect(configuration.database(named: "before")?.poolSize == 8)
        #expect(configuration.database(named: "before")?.poolMode == .session)
        #expect(configuration.database(named: "after")?.poolSize == 4)
        #expect(configuration.database(named: "after")?.poolMode == .session)
    }

    @Test func connectQueryBelongsToItsDatabase() throws {
        let (configuration, _) = try Self.load(
            """
            [databases]
            tagged = host=db connect_query='SELECT set_config(''app.tag'', ''x'', false)'
            plain = host=db
            * = host=db connect_query='SET work_mem = ''64MB'''
            after = host=db
            [pgbouncer]
            auth_type = trust
            """
        )
        #expect(configuration.database(named: "tagged")?.connectQuery == "SELECT set_config('app.tag', 'x', false)")
        #expect(configuration.database(named: "plain")?.connectQuery == nil)
        #expect(configuration.database(named: "after")?.connectQuery == nil)
        #expect(configuration.connectQuery == "SET work_mem = '64MB'")
        // What convert-config writes loads back the same.
        let toml = try TemporaryFile(configuration.rendered(conversion: true))
        #expect(try LifeguardConfiguration.load(ConfigurationSources(configFile: toml.path)) == configuration)
    }

    @Test func maxDBConnectionsGlobalAndPerDatabase() throws {
        let (configuration, _) = try Self.load(
            """
            [databases]
            capped = host=db max_db_connections=3
            plain = host=db
            * = host=db
            [pgbouncer]
            auth_type = trust
            max_db_connections = 10
            """
        )
        #expect(configuration.maxDBConnections == 10)
        #expect(configuration.database(named: "capped")?.maxDBConnections == 3)
        #expect(configuration.database(named: "plain")?.maxDBConnections == 10)
        #expect(try Self.load("[databases]\n* = host=db\n[pgbouncer]\nauth_type = trust\n").0.maxDBConnections == 0)
    }

    @Test func serverLifetimeZeroMeansUseOnce() throws {
        let (configuration, _) = try Self.load(
            "[databases]\n* = host=db\n[pgbouncer]\nauth_type = trust\nserver_lifetime = 0\nserver_idle_timeout = 0\n"
        )
        #expect(configuration.poolRecycle == .microseconds(1))
        #expect(configuration.idleTimeout == nil)
    }

    @Test func serverCheckQueryEmptyTurnsPrePingOff() throws {
        let (configuration, _) = try Self.load(
            "[databases]\n* = host=db\n[pgbouncer]\nauth_type = trust\nserver_check_query =\n"
        )
        #expect(!configuration.prePing)
    }

    @Test func perDatabaseAuthUserBecomesTheOnlyOne() throws {
        let (configuration, _) = try Self.load(
            "[databases]\napp = host=db auth_user=lookup\nother = host=db\n[pgbouncer]\nauth_type = md5\n"
        )
        #expect(configuration.authUser == "lookup")
        #expect(configuration.provenance.warnings.contains { $0.contains("auth_user applies to every database") })
        let problems = Self.problems(
            "[databases]\na = host=db auth_user=one\nb = host=db auth_user=two\n[pgbouncer]\nauth_type = trust\n"
        )
        #expect(problems.count == 2)
    }

    @Test func unsupportedSettingsAreNamedInWarnings() throws {
        let (configuration, path) = try Self.load(
            """
            [databases]
            * = host=db max_db_client_connections=5 load_balance_hosts=disable
            [pgbouncer]
            auth_type = trust
            logfile = /var/log/pgbouncer/pgbouncer.log
            pidfile = /run/pgbouncer.pid
            stats_period = 30
            tcp_keepalive = 1
            so_reuseport = 0
            admin_users = admin
            unix_socket_dir =
            idle_transaction_timeout = 60
            listen_addr = 127.0.0.1
            """
        )
        let warnings = configuration.provenance.warnings
        #expect(
            warnings.contains(
                "\(path):5: logfile: not supported by Lifeguard, ignored: Lifeguard logs to stderr (collect it from there)"
            )
        )
        #expect(warnings.contains { $0.hasPrefix("\(path):6: pidfile:") })
        #expect(warnings.contains { $0.hasPrefix("\(path):7: stats_period:") })
        #expect(warnings.contains { $0.hasPrefix("\(path):2: *: max_db_client_connections") })
        #expect(warnings.contains { $0.hasPrefix("\(path):2: *: load_balance_hosts") })
        #expect(warnings.contains { $0.contains("idle_in_transaction_session_timeout") })
        if Setting(rawValue: "admin_users") == nil {
            #expect(warnings.contains { $0.hasPrefix("\(path):10: admin_users: not yet supported") })
        }
        // Values that are what Lifeguard does anyway say nothing.
        #expect(!warnings.contains { $0.contains("tcp_keepalive") || $0.contains("so_reuseport") })
        #expect(!warnings.contains { $0.contains("unix_socket_dir") })
    }

    @Test(arguments: [
        ("auth_type = hba", "auth_type: hba", "not supported by Lifeguard yet"),
        ("auth_type = pam", "auth_type: pam", "not supported by Lifeguard yet"),
        ("auth_type = plain", "auth_type: plain", "never asks clients"),
        ("auth_type = any", "auth_type: any", "not supported"),
        ("so_reuseport = 1", "so_reuseport: \"1\"", "one process per port"),
        ("server_reset_query_always = 1", "server_reset_query_always", "session mode"),
        ("query_wait_timeout = 0", "query_wait_timeout: 0", "always has a pool_timeout"),
        ("pool_mode = sometimes", "pool_mode: expected session, transaction or statement", ""),
        ("listen_addr = 127.0.0.1,::1", "listen_addr: Lifeguard listens on one address", ""),
        (
            "defualt_pool_size = 5", "defualt_pool_size: not a PgBouncer setting; did you mean \"default_pool_size\"?",
            ""
        ),
    ])
    func behaviourChangingSettingsAreErrors(_ line: String, _ start: String, _ contains: String) {
        let problems = Self.problems("[databases]\n* = host=db\n[pgbouncer]\nauth_type = trust\n\(line)\n")
        let matching = problems.filter { $0.contains(start) && (contains.isEmpty || $0.contains(contains)) }
        #expect(matching.count == 1, "\(problems)")
    }

    @Test(arguments: [
        ("* = host=db frobnicate=1", "unrecognized connection parameter frobnicate"),
        ("* = host=@abstract", "abstract namespace"),
        ("pgbouncer = host=db", "reserved"),
        ("* = host='db", "no closing '"),
    ])
    func badDatabaseEntries(_ entry: String, _ contains: String) {
        let problems = Self.problems("[databases]\n\(entry)\n[pgbouncer]\nauth_type = trust\n")
        #expect(problems.contains { $0.contains(contains) }, "\(problems)")
    }

    @Test func usersSectionMustAgreeWithTheGlobalSettings() throws {
        let (configuration, _) = try Self.load(
            "[databases]\n* = host=db\n[users]\napp = pool_mode=transaction query_timeout=5\n[pgbouncer]\n"
                + "auth_type = trust\npool_mode = transaction\n"
        )
        #expect(configuration.provenance.warnings.contains { $0.contains("query_timeout is not supported") })
        let problems = Self.problems(
            "[databases]\n* = host=db\n[users]\napp = pool_mode=session max_user_connections=3\n[pgbouncer]\n"
                + "auth_type = trust\npool_mode = transaction\n"
        )
        #expect(problems.count == 2, "\(problems)")
        #expect(problems.contains { $0.contains("pool_mode per user is not supported") })
    }

    @Test func passwordsNeverAppearInMessages() {
        let problems = Self.problems(
            "[databases]\napp = host=db password=hunter2secret port=notaport\n[pgbouncer]\nauth_type = trust\n"
        )
        #expect(!problems.isEmpty)
        #expect(!problems.joined().contains("hunter2secret"))
    }

    @Test func includedFilesAreRead() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lifeguard-ini-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "[databases]\napp = host=db pool_size=3\n".write(
            to: directory.appendingPathComponent("databases.ini"),
            atomically: true,
            encoding: .utf8
        )
        let main = directory.appendingPathComponent("pgbouncer.ini")
        try "[pgbouncer]\nauth_type = trust\n%include databases.ini\n".write(
            to: main,
            atomically: true,
            encoding: .utf8
        )
        let configuration = try LifeguardConfiguration.load(ConfigurationSources(configFile: main.path))
        #expect(configuration.database(named: "app")?.poolSize == 3)
        #expect(
            configuration.provenance.origins["databases.app.pool_size"]
                == .file(path: directory.appendingPathComponent("databases.ini").path, line: 2)
        )
    }

    @Test func convertedOutputLoadsBackToTheSameConfiguration() throws {
        let (configuration, _) = try Self.load(
            """
            [databases]
            app = host=10.0.0.5 port=5433 dbname=appdb pool_size=3
            * = host=10.0.0.5 datestyle='ISO, MDY'
            [pgbouncer]
            listen_addr = 127.0.0.1
            auth_type = md5
            auth_file = \(Self.authFile)
            pool_mode = transaction
            reserve_pool_size = 2
            logfile = /var/log/pgbouncer.log
            """
        )
        let converted = configuration.rendered(conversion: true)
        #expect(converted.contains("#   "))  // what was not carried over
        #expect(converted.contains("logfile"))
        #expect(converted.contains("max_overflow = 2  # "))
        #expect(converted.contains("; PgBouncer reserve_pool_size: opened at once"))
        #expect(converted.contains("pool_timeout = \"2m\"  # PgBouncer default; PgBouncer query_wait_timeout"))
        _ = try TOMLTable(string: converted)
        let toml = try TemporaryFile(converted)
        let reloaded = try LifeguardConfiguration.load(ConfigurationSources(configFile: toml.path))
        #expect(reloaded == configuration)
        #expect(!reloaded.provenance.fromPgBouncerINI)
    }

    @Test func aTOMLFileWithDatabasesStaysTOML() throws {
        let file = try TemporaryFile("[databases]\napp = \"host=db\"\n")
        let configuration = try LifeguardConfiguration.load(ConfigurationSources(configFile: file.path))
        #expect(!configuration.provenance.fromPgBouncerINI)
        #expect(configuration.poolSize == 5)
        // Without the .ini extension, PgBouncer's syntax is recognised by its content.
        let ini = try TemporaryFile("[databases]\napp = host=db\n[pgbouncer]\nauth_type = trust\n", suffix: ".conf")
        let fromINI = try LifeguardConfiguration.load(ConfigurationSources(configFile: ini.path))
        #expect(fromINI.provenance.fromPgBouncerINI)
        #expect(fromINI.poolSize == 20)
    }
}
