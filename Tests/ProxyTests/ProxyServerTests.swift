import Foundation
import LifeguardConfig
import LifeguardMetrics
import Logging
import PoolCore
import PostgresTestSupport
import Testing
import Upstream

@testable import Proxy

/// The proxy in-process in front of a real PostgreSQL 15, driven by psql in each pool mode.
@Suite(.serialized, .enabled(if: TestPostgres.isAvailable, "needs root, psql and PostgreSQL 15 binaries"))
final class ProxyServerTests {
    let postgres: TestPostgres

    init() throws {
        // Role `postgres` is trusted; role `app` needs md5 password `secret`.
        self.postgres = try TestPostgres(
            hba: """
                local all all trust
                host all postgres 127.0.0.1/32 trust
                host all all 127.0.0.1/32 md5

                """,
            setupSQL: "CREATE ROLE app LOGIN PASSWORD 'secret'"
        )
    }

    deinit {
        self.postgres.destroy()
    }

    private func configuration(_ mode: PoolMode, upstream: String? = nil) throws -> LifeguardConfiguration {
        var configuration = LifeguardConfiguration.defaults
        configuration.listen = ListenAddress(host: "127.0.0.1", port: 0)
        configuration.upstream = try ConnInfo(upstream ?? "host=127.0.0.1 port=\(self.postgres.port)")
        configuration.poolMode = mode
        configuration.poolSize = 2
        configuration.maxOverflow = 0
        configuration.poolTimeout = .seconds(3)
        return configuration
    }

    private func withProxy(
        _ configuration: LifeguardConfiguration,
        _ body: (_ port: Int, _ metrics: LifeguardMetrics) async throws -> Void
    ) async throws {
        let metrics = LifeguardMetrics(version: "test")
        let proxy = try ProxyServer(configuration: configuration, metrics: metrics, logger: Logger(label: "test"))
        let port = try await proxy.start()
        // run() returns by itself once shutdown has shut the pools down.
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await proxy.run() }
            do {
                try await body(port, metrics)
            } catch {
                await proxy.shutdown(drainTimeout: .zero)
                throw error
            }
            await proxy.shutdown(drainTimeout: .seconds(1))
        }
    }

    private func psql(
        _ port: Int,
        user: String = "postgres",
        database: String = "postgres",
        _ commands: String...
    )
        async -> (status: Int32, output: String)
    {
        await TestPostgres.psqlAsync(port: port, user: user, database: database, commands)
    }

    @Test func transactionModeRelaysQueriesAndKeepsEachClientsSettings() async throws {
        try await self.withProxy(try self.configuration(.transaction)) { port, metrics in
            let first = await self.psql(port, "SELECT 1 + 1", "BEGIN", "SELECT 'in'", "COMMIT")
            #expect(first.status == 0)
            #expect(first.output == "2\nBEGIN\nin\nCOMMIT")

            // A SET outside a transaction stays with its client, and does not leak to the next one.
            let tokyo = await self.psql(port, "SET TimeZone = 'Asia/Tokyo'", "SELECT 1", "SHOW TimeZone")
            #expect(tokyo.output == "SET\n1\nAsia/Tokyo")
            let other = await self.psql(port, "SHOW TimeZone")
            #expect(other.status == 0)
            #expect(other.output != "Asia/Tokyo")

            let text = metrics.render()
            #expect(text.contains("lifeguard_pool_checkouts_total{database=\"postgres\",user=\"postgres\"}"))
            #expect(!text.contains("lifeguard_transactions_total{database=\"postgres\",user=\"postgres\"} 0\n"))
            #expect(!text.contains("lifeguard_queries_total{database=\"postgres\",user=\"postgres\"} 0\n"))
        }
    }

    /// `pgbench -M prepared`: named statements made once per client and used in every later transaction, on whichever
    /// of the two server connections it gets.
    @Test func transactionModeKeepsNamedPreparedStatementsAcrossServerConnections() async throws {
        let initialized = await TestPostgres.runAsync(
            "/usr/bin/pgbench",
            ["-i", "-q", "-h", "127.0.0.1", "-p", "\(self.postgres.port)", "-U", "postgres", "postgres"]
        )
        try #require(initialized.status == 0, "\(initialized.output)")
        var configuration = try self.configuration(.transaction)
        // 8 clients queue for 2 connections on a busy machine: a pool_timeout would fail pgbench's prepare.
        configuration.poolTimeout = .seconds(30)
        try await self.withProxy(configuration) { port, _ in
            // `-t`, not `-T`: a fixed number of transactions makes the count below exact. A thread per client:
            // pgbench 15 prepares with a blocking PQprepare, so a thread waiting for a server connection would stall
            // its other clients, which may hold both connections in their open transactions.
            let bench = await TestPostgres.runAsync(
                "/usr/bin/pgbench",
                ["-M", "prepared", "-c", "8", "-j", "8", "-t", "50", "-n"]
                    + ["-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "postgres"]
            )
            #expect(bench.status == 0, "\(bench.output)")
            #expect(bench.output.contains("number of failed transactions: 0 (0.000%)"), "\(bench.output)")
            let processed = bench.output.split(separator: "\n")
                .first { $0.hasPrefix("number of transactions actually processed: ") }
                .map { $0.dropFirst("number of transactions actually processed: ".count) }
            #expect(processed == "400/400", "\(bench.output)")
            #expect(!bench.output.contains("does not exist"), "\(bench.output)")

            // The server names are shared: 8 clients, 7 statements of the tpcb-like script, at most 7 per connection.
            let names = await self.psql(
                port,
                "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'lifeguard\\_%'"
            )
            let count = Int(names.output)
            #expect(count.map { (1...7).contains($0) } == true, "\(names.output)")
        }
    }

    @Test func sessionModeResetsTheServerBeforeTheNextClient() async throws {
        var configuration = try self.configuration(.session)
        configuration.poolSize = 1
        try await self.withProxy(configuration) { port, _ in
            let first = await self.psql(
                port,
                "CREATE TEMP TABLE mine (x int)",
                "SET search_path = nowhere",
                "PREPARE p AS SELECT 1",
                "SELECT pg_backend_pid()"
            )
            #expect(first.status == 0, "\(first.output)")
            let second = await self.psql(
                port,
                "SELECT count(*) FROM pg_class WHERE relpersistence = 't'",
                "SHOW search_path",
                "SELECT count(*) FROM pg_prepared_statements",
                "SELECT pg_backend_pid()"
            )
            let lines = second.output.split(separator: "\n").map(String.init)
            #expect(lines.count == 4)
            #expect(Array(lines.prefix(3)) == ["0", "\"$user\", public", "0"])
            // The same server connection served both (pool_size 1): it was reset, not replaced.
            #expect(lines.last == first.output.split(separator: "\n").last.map(String.init))
        }
    }

    @Test func statementModeRefusesTransactionBlocksAndTheClientGoesOn() async throws {
        try await self.withProxy(try self.configuration(.statement)) { port, _ in
            let result = await self.psql(port, "SELECT 1", "BEGIN", "SELECT 'still here'")
            #expect(result.output.contains("transaction blocks are not allowed in statement pool mode"))
            #expect(result.output.contains("still here"))
            let open = await TestPostgres.psqlAsync(
                port: self.postgres.port,
                user: "postgres",
                ["SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"]
            )
            #expect(open.output == "0")
        }
    }

    @Test func unknownDatabaseIsRefusedWith3D000() async throws {
        var configuration = try self.configuration(.transaction)
        configuration.upstream = nil
        configuration.databases = [
            DatabaseConfiguration(
                name: "app",
                dsn: try ConnInfo("host=127.0.0.1 port=\(self.postgres.port) dbname=postgres user=postgres"),
                poolMode: .transaction,
                poolSize: 1,
                minSize: 0,
                maxOverflow: 0,
                poolTimeout: .seconds(3)
            )
        ]
        try await self.withProxy(configuration) { port, _ in
            let refused = await self.psql(port, database: "elsewhere", "SELECT 1")
            #expect(refused.status != 0)
            #expect(refused.output.contains("database \"elsewhere\" does not exist in Lifeguard's configuration"))
            // The [databases] entry routes to its DSN, which pins the server database.
            let routed = await self.psql(port, database: "app", "SELECT current_database()")
            #expect(routed.output == "postgres")
        }
    }

    @Test func md5ClientsAndAnAuthFilePasswordForTheServer() async throws {
        let authFile = FileManager.default.temporaryDirectory.appendingPathComponent("userlist-\(UUID()).txt").path
        try "\"app\" \"secret\"\n".write(toFile: authFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: authFile) }
        var configuration = try self.configuration(.transaction)
        configuration.authType = .md5
        configuration.authFile = authFile
        try await self.withProxy(configuration) { port, metrics in
            let good = await TestPostgres.psqlAsync(
                port: port,
                user: "app",
                password: "secret",
                ["SELECT current_user"]
            )
            #expect(good.status == 0, "\(good.output)")
            #expect(good.output == "app")
            let bad = await TestPostgres.psqlAsync(port: port, user: "app", password: "wrong", ["SELECT 1"])
            #expect(bad.status != 0)
            #expect(bad.output.contains("password authentication failed for user \"app\""))
            #expect(metrics.render().contains("lifeguard_client_rejected_total{reason=\"auth\"} 1"))
        }
    }

    @Test func unreachableUpstreamIs08006WithTheReason() async throws {
        let closed = try TestPostgres.freePort()
        var configuration = try self.configuration(.transaction, upstream: "host=127.0.0.1 port=\(closed)")
        configuration.poolTimeout = .milliseconds(500)
        try await self.withProxy(configuration) { port, _ in
            let result = await self.psql(port, "SELECT 1")
            #expect(result.status != 0)
            #expect(result.output.contains("Connection refused"), "\(result.output)")
        }
    }
}
