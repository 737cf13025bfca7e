import ConnectionPool
import ConnectionPoolTestSupport
import LifeguardMetrics
import PoolCore
import Synchronization
import Testing

@testable import Lifeguard

/// The glue between a live pool and the metric catalogue: real pool, real metrics, a fake connection factory, and a
/// manual clock that the tests advance past `pool_timeout` (the time limit only bounds a test that hangs).
@Suite(.timeLimit(.minutes(1))) struct PoolMetricsObserverTests {
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

    /// Forwards to the metrics glue, and tells the test when a connect has failed (the pool has taken it in by then).
    struct Tee: PoolObserver {
        let metrics: PoolMetricsObserver
        let connectFailed: Completion<Void>

        func pool(_ key: PoolKey, observed: PoolObservation) {
            self.metrics.pool(key, observed: observed)
            if case .connectFailed = observed { self.connectFailed(()) }
        }

        func pool(_ key: PoolKey, gauges: PoolGauges) {
            self.metrics.pool(key, gauges: gauges)
        }
    }

    let key = PoolKey(database: "appdb", user: "app")
    let clock = ManualClock()
    let timeout = Duration.seconds(5)

    func makePool(
        _ metrics: LifeguardMetrics,
        factory: Factory = Factory(),
        connectFailed: Completion<Void>? = nil
    ) -> ConnectionPool<Factory, ManualClock> {
        let series = metrics.pool(database: self.key.database, user: self.key.user)
        let configuration = PoolConfiguration(poolSize: 1, maxOverflow: 0, poolTimeout: self.timeout)
        series.setConfigured(poolSize: configuration.poolSize, maxOverflow: configuration.maxOverflow)
        return ConnectionPool(
            key: self.key,
            configuration: configuration,
            factory: factory,
            clock: self.clock,
            observer: connectFailed.map { Tee(metrics: PoolMetricsObserver(metrics: series), connectFailed: $0) }
                ?? PoolMetricsObserver(metrics: series)
        )
    }

    /// Runs `body` while the pool's `run()` runs, then shuts the pool down; `run()` then returns by itself.
    func withRunningPool(
        _ pool: ConnectionPool<Factory, ManualClock>,
        _ body: () async throws -> Void
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await pool.run() }
            do {
                try await body()
            } catch {
                group.cancelAll()
                throw error
            }
            await pool.shutdown(drainTimeout: .zero)
        }
    }

    /// A lease that waits: fails once the clock passes `pool_timeout`.
    func leaseTimingOut(_ pool: ConnectionPool<Factory, ManualClock>) async -> PoolError? {
        let result = Completion<Result<Connection, PoolError>>()
        pool.lease { result($0) }
        self.clock.advance(by: self.timeout)
        guard case .failure(let error) = await result.value else { return nil }
        return error
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
        try await self.withRunningPool(pool) {
            let connection = try await pool.lease()
            #expect(self.value(metrics, "lifeguard_pool_checked_out" + self.labels()) == 1)
            #expect(self.value(metrics, "lifeguard_pool_connections" + self.labels("state=\"used\"")) == 1)

            // The only connection is out: the next client waits, then times out.
            #expect(await self.leaseTimingOut(pool)?.code == .timeout)
            #expect(self.value(metrics, "lifeguard_pool_timeouts_total" + self.labels()) == 1)

            pool.release(connection)
        }
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
        let connectFailed = Completion<Void>()
        let pool = self.makePool(metrics, factory: Factory(failure: failure), connectFailed: connectFailed)
        try await self.withRunningPool(pool) {
            // The first connect is made for the waiting client; time out only once it has failed.
            let result = Completion<Result<Connection, PoolError>>()
            pool.lease { result($0) }
            await connectFailed.value
            self.clock.advance(by: self.timeout)
            guard case .failure(let error) = await result.value else {
                Issue.record("the lease must fail")
                return
            }
            #expect(error.code == .connectFailed)
        }
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
