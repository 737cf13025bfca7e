import Foundation
import Testing

/// End-to-end tests of the `lifeguard` executable (Sources/Lifeguard/Command*.swift): the built binary is run as a
/// user would run it, with an environment of our choosing.
@Suite struct CommandTests {
    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
        var stderrLines: [String] { self.stderr.split(separator: "\n").map(String.init) }
    }

    /// `lifeguard` next to this test bundle; `swift build` / `swift test` build it with the tests.
    static let binary: String = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        .deletingLastPathComponent().appendingPathComponent("lifeguard").path

    /// Runs the binary with only `environment` (plus PATH), so that the caller's LIFEGUARD_* and PG* stay out.
    /// posix_spawn and waitpid rather than Foundation's `Process`, whose `waitUntilExit` was seen to hang here.
    static func lifeguard(_ arguments: [String], environment: [String: String] = [:]) throws -> Outcome {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary), "build the lifeguard product first")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lifeguard-cli-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "\(directory)/out", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, "\(directory)/err", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv = ([Self.binary] + arguments).map { strdup($0) } + [nil]
        var variables = environment
        variables["PATH"] = variables["PATH"] ?? "/usr/bin:/bin"
        let envp = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, Self.binary, &actions, nil, argv, envp)
        try #require(spawned == 0, "posix_spawn failed: \(spawned)")
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        try #require(status & 0x7f == 0, "lifeguard was killed by signal \(status & 0x7f)")
        return Outcome(
            status: (status >> 8) & 0xff,
            stdout: try String(contentsOfFile: "\(directory)/out", encoding: .utf8),
            stderr: try String(contentsOfFile: "\(directory)/err", encoding: .utf8)
        )
    }

    @Test func version() throws {
        let outcome = try Self.lifeguard(["version"])
        #expect(outcome.status == 0)
        #expect(outcome.stdout == "lifeguard 0.1.0\n")
    }

    @Test func checkConfigPrintsTheMaskedConfiguration() throws {
        let file = try TemporaryFile(
            "upstream = \"postgresql://app:hunter2secret@db.example:5432/orders\"\npool_size = 7\n"
        )
        let outcome = try Self.lifeguard(["check-config", file.path])
        #expect(outcome.status == 0)
        #expect(outcome.stderr.isEmpty)
        #expect(outcome.stdout.contains("pool_size = 7  # \(file.path):2\n"))
        #expect(outcome.stdout.contains("password=********"))
        #expect(!outcome.stdout.contains("hunter2"))
        #expect(try Self.lifeguard(["check-config", "--config", file.path]).stdout == outcome.stdout)
    }

    @Test func checkConfigReportsThreeMistakesOnThreeLines() throws {
        let file = try TemporaryFile(
            """
            upstream = "postgresql://app:hunter2secret@db.example:5432/orders"
            pool_size = "five"
            max_overflow = 10
            pool_timeot = "30s"
            listen = "127.0.0.1:99999"
            """
        )
        let outcome = try Self.lifeguard(["check-config", file.path])
        #expect(outcome.status == 2)
        #expect(outcome.stdout.isEmpty)
        #expect(
            outcome.stderrLines == [
                "\(file.path):2: pool_size: expected an integer >= 1, got \"five\"",
                "\(file.path):4: pool_timeot: unknown key; did you mean \"pool_timeout\"?",
                "\(file.path):5: listen: expected HOST:PORT with a port from 0 to 65535 (such as 127.0.0.1:6432 or "
                    + "[::1]:6432), got \"127.0.0.1:99999\": the port must be a number from 0 to 65535",
            ]
        )
        #expect(!outcome.stderr.contains("hunter2"))
    }

    @Test func runWithABadConfigurationExitsTwoWithTheSameLines() throws {
        let file = try TemporaryFile("pool_size = 0\n")
        let environment = ["DATABASE_URL": "postgresql://app:hunter2secret@127.0.0.1:1/x"]
        let check = try Self.lifeguard(["check-config", file.path], environment: environment)
        let run = try Self.lifeguard(["run", "--config", file.path], environment: environment)
        let implicitRun = try Self.lifeguard(["--config", file.path], environment: environment)
        #expect(check.status == 2)
        #expect(run.status == 2)
        #expect(implicitRun.status == 2)
        #expect(run.stderr == check.stderr)
        #expect(implicitRun.stderr == check.stderr)
        #expect(run.stderrLines == ["\(file.path):1: pool_size: expected an integer >= 1, got 0"])
    }

    @Test func everyFlagReachesTheConfiguration() throws {
        let userlist = try TemporaryFile("\"app\" \"secret\"\n", suffix: ".txt")
        let outcome = try Self.lifeguard([
            "check-config",
            "--listen", "127.0.0.1:7001", "--metrics-listen", "127.0.0.1:7002",
            "--upstream", "postgresql://app:hunter2secret@db.example/orders", "--pool-mode", "transaction",
            "--pool-size", "11", "--min-size", "2", "--max-overflow", "3", "--pool-timeout", "4s",
            "--pool-recycle", "5m", "--no-pre-ping", "--pre-ping-delay", "6s", "--idle-timeout", "7m",
            "--leak-threshold", "8s", "--max-client-conn", "900", "--drain-timeout", "10s",
            "--reset-query", "RESET ALL", "--connect-query", "SET work_mem = '8MB'", "--log-level", "debug",
            "--auth-type", "md5", "--auth-file", userlist.path,
        ])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        let expected = [
            "listen = \"127.0.0.1:7001\"  # --listen",
            "metrics_listen = \"127.0.0.1:7002\"  # --metrics-listen",
            "upstream = \"user=app password=******** dbname=orders host=db.example\"  # --upstream",
            "pool_mode = \"transaction\"  # --pool-mode",
            "pool_size = 11  # --pool-size",
            "min_size = 2  # --min-size",
            "max_overflow = 3  # --max-overflow",
            "pool_timeout = \"4s\"  # --pool-timeout",
            "pool_recycle = \"5m\"  # --pool-recycle",
            "pre_ping = false  # --no-pre-ping",
            "pre_ping_delay = \"6s\"  # --pre-ping-delay",
            "idle_timeout = \"7m\"  # --idle-timeout",
            "leak_threshold = \"8s\"  # --leak-threshold",
            "max_client_conn = 900  # --max-client-conn",
            "drain_timeout = \"10s\"  # --drain-timeout",
            "reset_query = \"RESET ALL\"  # --reset-query",
            "connect_query = \"SET work_mem = '8MB'\"  # --connect-query",
            "log_level = \"debug\"  # --log-level",
            "auth_type = \"md5\"  # --auth-type",
            "auth_file = \"\(userlist.path)\"  # --auth-file",
        ]
        let lines = outcome.stdout.split(separator: "\n").map(String.init)
        for line in expected { #expect(lines.contains(line), "missing: \(line)") }
    }

    @Test func flagsBeatTheEnvironment() throws {
        let environment = ["LIFEGUARD_POOL_SIZE": "9", "LIFEGUARD_UPSTREAM": "host=127.0.0.1"]
        let fromEnvironment = try Self.lifeguard(["check-config"], environment: environment)
        #expect(fromEnvironment.stdout.contains("pool_size = 9  # LIFEGUARD_POOL_SIZE\n"))
        let fromFlag = try Self.lifeguard(["check-config", "--pool-size", "10"], environment: environment)
        #expect(fromFlag.stdout.contains("pool_size = 10  # --pool-size\n"))
    }

    @Test func libpqEnvironmentDefaultsFillTheUpstream() throws {
        let outcome = try Self.lifeguard(
            ["check-config", "--upstream", "dbname=orders"],
            environment: [
                "PGHOST": "env.example", "PGPORT": "6543", "PGUSER": "envuser", "PGPASSWORD": "hunter2secret",
            ]
        )
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(
            outcome.stdout.contains(
                "upstream = \"user=envuser password=******** dbname=orders host=env.example port=6543\"  # --upstream"
            )
        )
        #expect(!outcome.stdout.contains("hunter2"))
    }

    @Test func databaseURLIsTheUpstreamWhenNothingElseNamesOne() throws {
        let outcome = try Self.lifeguard(
            ["check-config"],
            environment: ["DATABASE_URL": "postgresql://app:hunter2secret@db.example:5433/orders"]
        )
        #expect(outcome.status == 0)
        #expect(outcome.stdout.contains("port=5433\"  # DATABASE_URL\n"))
        #expect(!outcome.stdout.contains("hunter2"))
    }

    @Test func usageErrorsAreNotConfigurationErrors() throws {
        let file = try TemporaryFile("upstream = \"host=x\"\n")
        let both = try Self.lifeguard(["check-config", file.path, "--config", "/other.toml"])
        #expect(both.status == 64)
        #expect(both.stderr.contains("not both"))
        let unknown = try Self.lifeguard(["check-config", "--pool-sise", "3"])
        #expect(unknown.status == 64)
    }

    @Test func theExampleFilePassesCheckConfig() throws {
        let path = docsDirectory.appendingPathComponent("lifeguard.example.toml").path
        let outcome = try Self.lifeguard(["check-config", path])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(outcome.stderr.isEmpty)
    }

    @Test func checkConfigAndConvertConfigReadAPgBouncerINI() throws {
        let userlist = try TemporaryFile("\"app\" \"secret\"\n", suffix: ".txt")
        let ini = try TemporaryFile(
            """
            [databases]
            app = host=127.0.0.1 port=5433 dbname=appdb password=hunter2secret pool_size=3
            * = host=127.0.0.1
            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = 6499
            auth_type = md5
            auth_file = \(userlist.path)
            pool_mode = transaction
            logfile = /var/log/pgbouncer.log
            """,
            suffix: ".ini"
        )
        let check = try Self.lifeguard(["check-config", ini.path])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(
            check.stderrLines == [
                "warning: \(ini.path):10: logfile: not supported by Lifeguard, ignored: "
                    + "Lifeguard logs to stderr (collect it from there)"
            ]
        )
        #expect(check.stdout.contains("pool_size = 20  # PgBouncer default\n"))
        #expect(check.stdout.contains("listen = \"127.0.0.1:6499\"  # \(ini.path):5\n"))
        #expect(!check.stdout.contains("hunter2"))

        let convert = try Self.lifeguard(["convert-config", ini.path])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(convert.stderr == check.stderr)
        #expect(convert.stdout.contains("#   \(ini.path):10: logfile: not supported by Lifeguard"))
        #expect(convert.stdout.contains("pool_size = 20  # PgBouncer default; PgBouncer default_pool_size"))
        #expect(!convert.stdout.contains("hunter2"))

        let refused = try TemporaryFile("[databases]\n* = host=db\n[pgbouncer]\nauth_type = hba\n", suffix: ".ini")
        let bad = try Self.lifeguard(["convert-config", refused.path])
        #expect(bad.status == 2)
        #expect(bad.stdout.isEmpty)
        #expect(bad.stderrLines.contains { $0.hasPrefix("\(refused.path):4: auth_type: hba is not supported") })
    }
}
