import LifeguardMetrics
import Synchronization
import Testing

@Suite("PoolMetrics updates")
struct PoolMetricsTests {
    private static let alice = #"database="app",user="alice""#

    /// Applies `update` to pool app/alice (with a second pool app/bob beside it) and returns the samples that changed.
    private func changes(_ update: (PoolMetrics) -> Void) -> [String: String] {
        let metrics = LifeguardMetrics(version: "0.1.0")
        let pool = metrics.pool(database: "app", user: "alice")
        _ = metrics.pool(database: "app", user: "bob")
        let before = Exposition.withoutProcess(metrics)
        update(pool)
        return Exposition.changes(from: before, to: Exposition.withoutProcess(metrics))
    }

    @Test("setConfigured sets pool_size and max_overflow")
    func setConfigured() {
        let changed = changes { $0.setConfigured(poolSize: 20, maxOverflow: 5) }
        #expect(
            changed == [
                "lifeguard_pool_size{\(Self.alice)}": "20.0",
                "lifeguard_pool_max_overflow{\(Self.alice)}": "5.0",
            ]
        )
    }

    @Test("the gauge reader runs before every rendering, so a scrape shows the pool as it is then")
    func gaugesAreReadAtEachScrape() {
        let metrics = LifeguardMetrics(version: "0.1.0")
        let pool = metrics.pool(database: "app", user: "alice")
        let waiting = Mutex(0)
        pool.readGaugesBeforeRendering {
            pool.setConnections(idle: 0, used: 0, checkedOut: 0, overflow: 0, waiting: waiting.withLock { $0 })
        }
        let sample = "lifeguard_pool_waiting_clients{\(Self.alice)}"
        waiting.withLock { $0 = 7 }
        #expect(Exposition.samples(Exposition.withoutProcess(metrics))[sample] == "7.0")
        waiting.withLock { $0 = 2 }
        #expect(Exposition.samples(Exposition.withoutProcess(metrics))[sample] == "2.0")
    }

    @Test("setConnections sets the state gauges")
    func setConnections() {
        let changed = changes { $0.setConnections(idle: 2, used: 21, checkedOut: 21, overflow: 3, waiting: 4) }
        #expect(
            changed == [
                #"lifeguard_pool_connections{database="app",user="alice",state="idle"}"#: "2.0",
                #"lifeguard_pool_connections{database="app",user="alice",state="used"}"#: "21.0",
                "lifeguard_pool_checked_out{\(Self.alice)}": "21.0",
                "lifeguard_pool_overflow{\(Self.alice)}": "3.0",
                "lifeguard_pool_waiting_clients{\(Self.alice)}": "4.0",
            ]
        )
    }

    @Test("setPaused sets lifeguard_pool_paused, which starts at 0")
    func paused() {
        #expect(changes { $0.setPaused(true) } == ["lifeguard_pool_paused{\(Self.alice)}": "1.0"])
        #expect(changes { $0.setPaused(false) }.isEmpty)
    }

    @Test("snapshot reads what a scrape renders: counters, histograms, quantiles")
    func snapshot() {
        let metrics = LifeguardMetrics(version: "test")
        let pool = metrics.pool(database: "app", user: "alice")
        pool.transactions(3)
        pool.queries(7)
        pool.checkedOut()
        for _ in 0..<99 { pool.observeWait(.microseconds(200)) }
        pool.observeWait(.seconds(2))
        let snapshot = pool.snapshot()
        #expect(snapshot.transactions == 3 && snapshot.queries == 7 && snapshot.checkouts == 1)
        #expect(snapshot.wait.count == 100)
        #expect(snapshot.wait.sum == .microseconds(19_800) + .seconds(2))
        // histogram_quantile: linear within the 100–250 µs bucket.
        #expect(snapshot.wait.quantile(0.5) == .microseconds(100) + .microseconds(150) * (50.0 / 99.0))
        #expect(snapshot.wait.quantile(0.995)! > .seconds(1))
        #expect(pool.snapshot().paused == false)
        #expect(metrics.pool(database: "b", user: "c").snapshot().wait.quantile(0.5) == nil)
    }

    @Test("gauges go down as well as up")
    func gaugesGoDown() {
        let changed = changes { pool in
            pool.setConnections(idle: 5, used: 5, checkedOut: 5, overflow: 1, waiting: 9)
            pool.setConnections(idle: 1, used: 0, checkedOut: 0, overflow: 0, waiting: 0)
        }
        #expect(changed == [#"lifeguard_pool_connections{database="app",user="alice",state="idle"}"#: "1.0"])
    }

    @Test("a wait sample lands in every bucket from its bound up, and in sum and count")
    func observeWait() {
        let changed = changes { $0.observeWait(.microseconds(300)) }
        var expected: [String: String] = [:]
        for bound in [
            "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0",
            "2.5", "5.0", "10.0", "30.0", "+Inf",
        ] {
            expected[#"lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="\#(bound)"}"#] = "1"
        }
        expected["lifeguard_pool_wait_seconds_sum{\(Self.alice)}"] = "0.0003"
        expected["lifeguard_pool_wait_seconds_count{\(Self.alice)}"] = "1"
        #expect(changed == expected)
    }

    @Test("a 100 µs wait is in the first bucket; a 31 s wait only in +Inf")
    func waitBucketEdges() {
        let changed = changes { pool in
            pool.observeWait(.microseconds(100))
            pool.observeWait(.seconds(31))
        }
        let bucket = { (bound: String) in
            changed[#"lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="\#(bound)"}"#]
        }
        #expect(bucket("0.0001") == "1")
        #expect(bucket("30.0") == "1")
        #expect(bucket("+Inf") == "2")
        #expect(changed["lifeguard_pool_wait_seconds_sum{\(Self.alice)}"] == "31.0001")
    }

    @Test("use samples of a session-mode hold land in the long buckets")
    func observeUse() {
        let changed = changes { $0.observeUse(.seconds(600)) }
        let bucket = { (bound: String) in
            changed[#"lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="\#(bound)"}"#]
        }
        #expect(bucket("300.0") == nil)
        #expect(bucket("900.0") == "1")
        #expect(bucket("3600.0") == "1")
        #expect(bucket("+Inf") == "1")
        #expect(changed["lifeguard_pool_use_seconds_sum{\(Self.alice)}"] == "600.0")
        #expect(changed.keys.allSatisfy { $0.hasPrefix("lifeguard_pool_use_seconds_") })
    }

    @Test("connect samples go to the connect histogram only")
    func observeConnect() {
        let changed = changes { $0.observeConnect(.milliseconds(20)) }
        #expect(changed["lifeguard_pool_connect_seconds_count{\(Self.alice)}"] == "1")
        #expect(changed["lifeguard_pool_connect_seconds_sum{\(Self.alice)}"] == "0.02")
        #expect(changed.keys.allSatisfy { $0.hasPrefix("lifeguard_pool_connect_seconds_") })
        #expect(changed.count == 13)  // the 10 buckets from 0.025 to 30, +Inf, sum and count
    }

    @Test("a negative duration counts as zero")
    func negativeDuration() {
        let changed = changes { $0.observeWait(.milliseconds(-5)) }
        #expect(changed["lifeguard_pool_wait_seconds_bucket{\(Self.alice),le=\"0.0001\"}"] == "1")
        #expect(changed["lifeguard_pool_wait_seconds_sum{\(Self.alice)}"] == nil)
    }

    @Test("counters count their event")
    func counters() {
        let changed = changes { pool in
            pool.checkedOut()
            pool.checkedOut()
            pool.timedOut()
            pool.leakSuspected()
            pool.transactions(7)
            pool.queries(30)
            pool.queries(0)
            pool.staleRelease()
        }
        #expect(
            changed == [
                "lifeguard_pool_checkouts_total{\(Self.alice)}": "2",
                "lifeguard_pool_timeouts_total{\(Self.alice)}": "1",
                "lifeguard_pool_leaks_suspected_total{\(Self.alice)}": "1",
                "lifeguard_pool_stale_releases_total{\(Self.alice)}": "1",
                "lifeguard_transactions_total{\(Self.alice)}": "7",
                "lifeguard_queries_total{\(Self.alice)}": "30",
            ]
        )
    }

    @Test("each connection error reason has its own series", arguments: ConnectionErrorReason.allCases)
    func connectionError(reason: ConnectionErrorReason) {
        let changed = changes { $0.connectionError(reason: reason) }
        let series =
            #"lifeguard_pool_connection_errors_total{database="app",user="alice",reason="\#(reason.rawValue)"}"#
        #expect(changed == [series: "1"])
    }

    @Test("each close reason has its own series", arguments: ConnectionCloseReason.allCases)
    func connectionClosed(reason: ConnectionCloseReason) {
        let changed = changes { $0.connectionClosed(reason: reason) }
        let series =
            #"lifeguard_pool_connections_closed_total{database="app",user="alice",reason="\#(reason.rawValue)"}"#
        #expect(changed == [series: "1"])
    }
}
