import AdminConsole
import Testing

@Suite struct AdminCommandTests {
    @Test(
        "commands parse as PgBouncer's patterns read them",
        arguments: [
            ("SHOW POOLS", AdminCommand.show(.pools)),
            ("show pools;", .show(.pools)),
            ("  Show\tStats_Totals ;  ", .show(.statsTotals)),
            ("SHOW stats_averages", .show(.statsAverages)),
            ("SHOW databases;", .show(.databases)),
            ("SELECT VERSION", .show(.version)),
            ("show \"lists\"", .show(.lists)),
            ("SHOW LIFEGUARD", .show(.lifeguard)),
            ("SHOW client_encoding", .showParameter(AdminFakeParameter(name: "client_encoding")!)),
            ("SHOW DateStyle", .showParameter(AdminFakeParameter(name: "datestyle")!)),
            ("PAUSE", .pause(database: nil)),
            ("pause appdb;", .pause(database: "appdb")),
            ("PAUSE \"My\"\"Db\"", .pause(database: "My\"Db")),
            ("RESUME appdb", .resume(database: "appdb")),
            ("RECONNECT", .reconnect(database: nil)),
            ("KILL appdb", .kill(database: "appdb")),
            ("KILL_CLIENT 42", .killClient("42")),
            ("DISABLE appdb", .disable(database: "appdb")),
            ("ENABLE appdb", .enable(database: "appdb")),
            ("WAIT_CLOSE", .waitClose(database: nil)),
            ("RELOAD;", .reload),
            ("SHUTDOWN", .shutdown(.immediate)),
            ("shutdown wait_for_servers", .shutdown(.waitForServers)),
            ("SHUTDOWN WAIT_FOR_CLIENTS;", .shutdown(.waitForClients)),
            ("SUSPEND", .suspend),
            ("SET client_encoding = 'UTF8'", .set(key: "client_encoding", value: "UTF8")),
            ("set extra_float_digits to 3", .set(key: "extra_float_digits", value: "3")),
            ("SET application_name = 'it''s me';", .set(key: "application_name", value: "it's me")),
            ("SET DateStyle=ISO", .set(key: "DateStyle", value: "ISO")),
        ]
    )
    func parses(query: String, expected: AdminCommand) {
        #expect(AdminCommand.parse(query) == .success(expected))
    }

    @Test(
        "anything else is PgBouncer's syntax error",
        arguments: [
            "", "SHOW", "SHOW ;", "SHOW POOLS EXTRA", "SHOW nothing", "DROP TABLE x", "SHOW pools;;",
            "RELOAD now", "SHUTDOWN later", "SHOW application_name", "SET x", "SELECT 1 + 1",
        ]
    )
    func syntaxErrors(query: String) {
        #expect(
            AdminCommand.parse(query)
                == .failure(AdminError(message: "invalid command '\(query)', use SHOW HELP;"))
        )
    }

    @Test("stats_users may SHOW and SET fake parameters, nothing else")
    func access() {
        #expect(AdminDecision.decide("SHOW POOLS", access: .stats) == .show(.pools))
        #expect(AdminDecision.decide("PAUSE", access: .stats) == .reply(.error(.adminAccessNeeded)))
        #expect(AdminDecision.decide("RELOAD", access: .stats) == .reply(.error(.adminAccessNeeded)))
        #expect(AdminDecision.decide("SET pool_mode = 'session'", access: .stats) == .reply(.error(.adminAccessNeeded)))
        #expect(
            AdminDecision.decide("SET extra_float_digits = 3", access: .stats)
                == .reply(.notice("SET ignored", detail: nil, tag: "SET"))
        )
        #expect(AdminDecision.decide("PAUSE appdb", access: .admin) == .run(.pause(database: "appdb")))
        #expect(AdminDecision.decide("KILL", access: .admin) == .run(.kill(database: nil)))
        #expect(AdminDecision.decide("WAIT_CLOSE appdb", access: .admin) == .run(.waitClose(database: "appdb")))
        #expect(AdminDecision.decide("KILL appdb", access: .stats) == .reply(.error(.adminAccessNeeded)))
        #expect(AdminDecision.decide("WAIT_CLOSE", access: .stats) == .reply(.error(.adminAccessNeeded)))
    }

    @Test("commands Lifeguard does not carry out say so, never pretend")
    func notImplemented() {
        for query in ["SUSPEND", "SET pool_size = 3"] {
            guard case .reply(.error(let error)) = AdminDecision.decide(query, access: .admin) else {
                Issue.record("\(query) was not refused")
                continue
            }
            #expect(error.sqlState == "0A000")
            #expect(error.message.contains("not supported"))
        }
        #expect(
            AdminDecision.decide("DISABLE", access: .admin)
                == .reply(.error(AdminError(message: "a database is required")))
        )
        #expect(
            AdminDecision.decide("KILL_CLIENT abc", access: .admin)
                == .reply(.error(AdminError(message: "invalid client pointer supplied")))
        )
    }

    @Test("SHOW of a fake parameter answers PgBouncer's value")
    func fakeShow() {
        let expected = AdminTable(columns: [AdminColumn("client_encoding", .text)], rows: [["UTF-8"]])
        #expect(AdminDecision.decide("SHOW CLIENT_ENCODING", access: .stats) == .reply(.table(expected, tag: "SHOW")))
    }

    @Test("who may log in to the console")
    func loginPolicy() {
        let policy = AdminLoginPolicy(adminUsers: ["ops"], statsUsers: ["exporter", "ops2"])
        #expect(policy.login(user: "ops") == AdminLogin(access: .admin, authenticates: true))
        #expect(policy.login(user: "exporter") == AdminLogin(access: .stats, authenticates: true))
        #expect(policy.login(user: "app") == nil)
        #expect(policy.login(user: "pgbouncer") == nil)
        // The peer hook: the OS user running Lifeguard, over a Unix socket, as `pgbouncer`.
        let peer = AdminLoginPolicy.PeerIdentity(sameUserAsProcess: true)
        #expect(policy.login(user: "pgbouncer", peer: peer) == AdminLogin(access: .admin, authenticates: false))
        #expect(policy.login(user: "app", peer: peer) == nil)
    }
}
