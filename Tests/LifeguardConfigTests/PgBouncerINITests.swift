import Foundation
import Testing

@testable import LifeguardConfig

@Suite struct PgBouncerINITests {
    static func parse(_ text: String, files: [String: String] = [:]) -> PgBouncerINI {
        PgBouncerINI(path: "/etc/pgbouncer/pgbouncer.ini", text: text) { files[$0] }
    }

    @Test func sectionsKeysAndComments() {
        let ini = Self.parse(
            #"""
            ; a comment
            # another
            [databases]
              app = host=db.example dbname=app   
            "odd ""name""" = host=x
            'quoted' = host=y
            * = host=fallback

            [pgbouncer]
            pool_mode = transaction ; not a comment in PgBouncer
            listen_port=6433
            logfile =
            """#
        )
        #expect(ini.problems.isEmpty)
        let entries = ini.entries.map { "\($0.section)|\($0.key)|\($0.value)|\($0.line)" }
        #expect(
            entries == [
                "databases|app|host=db.example dbname=app|4",
                "databases|odd \"name\"|host=x|5",
                "databases|quoted|host=y|6",
                "databases|*|host=fallback|7",
                "pgbouncer|pool_mode|transaction ; not a comment in PgBouncer|10",
                "pgbouncer|listen_port|6433|11",
                "pgbouncer|logfile||12",
            ]
        )
    }

    @Test func includeIsRelativeToTheIncludingFile() {
        let ini = Self.parse(
            """
            [pgbouncer]
            pool_mode = session
            %include conf.d/pools.ini
            max_client_conn = 50
            """,
            files: [
                "/etc/pgbouncer/conf.d/pools.ini":
                    "listen_port = 7000\n[databases]\napp = host=db\n%include /abs/more.ini\n",
                "/abs/more.ini": "[pgbouncer]\ndefault_pool_size = 7\n",
            ]
        )
        #expect(ini.problems.isEmpty)
        let entries = ini.entries.map { "\($0.path):\($0.line) [\($0.section)] \($0.key)" }
        #expect(
            entries == [
                "/etc/pgbouncer/pgbouncer.ini:2 [pgbouncer] pool_mode",
                // An included file starts in the section in force, and its last section stays in force after it.
                "/etc/pgbouncer/conf.d/pools.ini:1 [pgbouncer] listen_port",
                "/etc/pgbouncer/conf.d/pools.ini:3 [databases] app",
                "/abs/more.ini:2 [pgbouncer] default_pool_size",
                "/etc/pgbouncer/pgbouncer.ini:4 [pgbouncer] max_client_conn",
            ]
        )
        #expect(ini.files == ["/etc/pgbouncer/pgbouncer.ini", "/etc/pgbouncer/conf.d/pools.ini", "/abs/more.ini"])
    }

    @Test func includeProblems() {
        let missing = Self.parse("%include nope.ini\n")
        #expect(
            missing.problems.map(\.description) == [
                "/etc/pgbouncer/pgbouncer.ini:1: %include: no such file: \"/etc/pgbouncer/nope.ini\""
            ]
        )
        let loop = Self.parse(
            "%include pgbouncer.ini\n",
            files: ["/etc/pgbouncer/pgbouncer.ini": "%include pgbouncer.ini\n"]
        )
        #expect(loop.problems.count == 1)
        #expect(loop.problems.first?.message.contains("nested more than 10 levels") == true)
    }

    @Test func syntaxProblemsNameTheLine() {
        let ini = Self.parse("key_before = 1\n[pgbouncer]\nno equals here\n[nonsense]\n[databases\n")
        #expect(
            ini.problems.map(\.location) == [
                "/etc/pgbouncer/pgbouncer.ini:1", "/etc/pgbouncer/pgbouncer.ini:3", "/etc/pgbouncer/pgbouncer.ini:4",
                "/etc/pgbouncer/pgbouncer.ini:5",
            ]
        )
    }

    @Test func detection() {
        #expect(PgBouncerINI.looksLikePgBouncer("[pgbouncer]\npool_mode = session\n", validTOML: true))
        #expect(PgBouncerINI.looksLikePgBouncer("[databases]\napp = host=db\n", validTOML: false))
        // Lifeguard's own TOML may have a [databases] table.
        #expect(!PgBouncerINI.looksLikePgBouncer("[databases]\napp = \"host=db\"\n", validTOML: true))
        #expect(!PgBouncerINI.looksLikePgBouncer("pool_size = 5\n", validTOML: true))
    }

    @Test(arguments: [
        ("host=db port=5433", ["host": "db", "port": "5433"]),
        ("  host = db   dbname='my db' ", ["host": "db", "dbname": "my db"]),
        ("password='it''s' user=a", ["password": "it's", "user": "a"]),
        ("application_name='a\\b'", ["application_name": "a\\b"]),
        ("", [:]),
    ])
    func connectionStrings(_ text: String, _ expected: [String: String]) throws {
        let parsed = try PgBouncerConnectionString.parse(text).get()
        #expect(Dictionary(uniqueKeysWithValues: parsed.pairs.map { ($0.key, $0.value) }) == expected)
    }

    @Test(arguments: ["host", "host=", "password='open", "=x", "host=a port"])
    func badConnectionStrings(_ text: String) {
        #expect(throws: Rejection.self) { try PgBouncerConnectionString.parse(text).get() }
    }
}
