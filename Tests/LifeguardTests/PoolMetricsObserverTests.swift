import ConnectionPool
import LifeguardMetrics
import PoolCore
import Synchronization
import Testing

@testable import Lifeguard

/// The glue between a live pool and the metric catalogue: real pool, real metrics, a fake connection factory.
@Suite struct PoolMetricsObserverTests {
    final class Connection: PooledConnection {
        let id: ConnectionID
        init(id: ConnectionID) { self.id = id }
        func ping() async -> Bool { true }
        func close() {}
    }

    struct Factory: ConnectionFactory {
        var failure: ConnectError? = nil
        func makeConnection(id: ConnectionID, for key: PoolKey) async throws(ConnectError) -> Connection {
            if let failure { throw failure }
            return Connection(id: id)
        }
    }

    let key = PoolKey(database: "appdb", user: "app")

    func makePool(
        _ metrics: LifeguardMetrics,
        factory: Factory = Factory(),
        timeout: Duration = .milliseconds(50)
    ) -> ConnectionPool<Factory> {
        let series = metrics.pool(database: self.key.database, user: self.key.user)
        let configuration = PoolConfiguration(poolSize: 1, maxOverflow: 0, poolTimeout: timeout)
        series.setConfigured(poolSize: configuration.poolSize, maxOverflow: configuration.maxOverflow)
        return ConnectionPool(
            key: self.key,
            configuration: configuration,
            factory: factory,
            observer: PoolMetricsObserver(metrics: series)
        )
    }

    /// The value of the series whose line starts with `series` in a scrape.
    func value(_ metrics: LifeguardMetrics, _ series: String) -> Double? {
        for line in metrics.render().split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    func labels(_ extra: String = "") -> String {
        "{database=\"appdb\",user=\"app\"\(extra.isEmpty ? "" : ",\(extra)")}"
    }

    @Test func checkoutsWaitsUseAndTimeoutsReachTheScrape() async throws {
        let metrics = LifeguardMetrics(version: "test")
        let pool = self.makePool(metrics)
        let connection = try await pool.lease()
        #expect(self.value(metrics, "lifeguard_pool_checked_out" + self.labels()) == 1)
        #expect(self.value(metrics, "lifeguard_pool_connections" + self.labels("state=\"used\"")) == 1)

        // The only connection is out: the next client waits, then times out.
        await #expect(throws: PoolError.self) { _ = try await pool.lease() }
        #expect(self.value(metrics, "lifeguard_pool_timeouts_total" + self.labels()) == 1)

        pool.release(connection)
        await pool.shutdown(drainTimeout: .seconds(1))
        #expect(self.value(metrics, "lifeguard_pool_checkouts_total" + self.labels()) == 1)
        #expect(self.value(metrics, "lifeguard_pool_wait_seconds_count" + self.labels()) == 1)
        #expect(self.value(metrics, "lifeguard_pool_use_seconds_count" + self.labels()) == 1)
        #expect(self.value(metrics, "lifeguard_pool_connect_seconds_count" + self.labels()) == 1)
        #expect(self.value(metrics, "lifeguard_pool_checked_out" + self.labels()) == 0)
        #expect(
            self.value(metrics, "lifeguard_pool_connections_closed_total" + self.labels("reason=\"shutdown\"")) == 1
        )
        #expect(self.value(metrics, "lifeguard_pool_connections" + self.labels("state=\"idle\"")) == 0)
    }

    @Test func connectFailuresAreCountedByReason() async throws {
        let metrics = LifeguardMetrics(version: "test")
        let failure = ConnectError(reason: .auth, message: "password authentication failed for user \"app\"")
        let pool = self.makePool(metrics, factory: Factory(failure: failure))
        await #expect(throws: PoolError.self) { _ = try await pool.lease() }
        await pool.shutdown(drainTimeout: .seconds(1))
        let errors = try #require(
            self.value(metrics, "lifeguard_pool_connection_errors_total" + self.labels("reason=\"auth\""))
        )
        #expect(errors >= 1)
        #expect(self.value(metrics, "lifeguard_pool_connection_errors_total" + self.labels("reason=\"connect\"")) == 0)
    }

    @Test(arguments: PoolCore.ConnectionErrorReason.allCases)
    func errorReasonsKeepTheirLabel(_ reason: PoolCore.ConnectionErrorReason) {
        #expect(PoolMetricsObserver.label(reason).rawValue == reason.rawValue)
    }

    @Test(arguments: CloseReason.allCases)
    func closeReasonsKeepTheirLabel(_ reason: CloseReason) {
        #expect(PoolMetricsObserver.label(reason).rawValue == reason.rawValue)
    }
}
