import Synchronization

/// The series of one pool, keyed by (database, user). Get it from ``LifeguardMetrics/pool(database:user:)``.
///
/// Every method is a few atomic operations (histograms: a short lock held only to add one sample), safe from any
/// thread, and waits on a scrape at most for the time it takes to copy one histogram's counts.
public final class PoolMetrics: Sendable {
    public let database: String
    public let user: String

    private let size: GaugeSeries
    private let maxOverflow: GaugeSeries
    private let connections: [GaugeSeries]  // indexed like PoolConnectionState.allCases
    private let checkedOutNow: GaugeSeries
    private let overflow: GaugeSeries
    private let waiting: GaugeSeries
    private let paused: GaugeSeries
    private let wait: HistogramSeries
    private let use: HistogramSeries
    private let connect: HistogramSeries
    private let checkouts: CounterSeries
    private let timeouts: CounterSeries
    private let connectionErrors: [ConnectionErrorReason: CounterSeries]
    private let connectionsClosed: [ConnectionCloseReason: CounterSeries]
    // The same series in the order of allCases, so that a scrape neither hashes nor allocates to order them.
    private let connectionErrorsInOrder: [CounterSeries]
    private let connectionsClosedInOrder: [CounterSeries]
    private let leaks: CounterSeries
    private let staleReleases: CounterSeries
    private let transactionCount: CounterSeries
    private let queryCount: CounterSeries
    /// Sets the state gauges from the pool itself, before they are read: set by the pool's observer. A class around
    /// the closure: a bare closure in the generic `Mutex` was re-thunked, three allocations, each time it was read.
    private let gaugeReader = Mutex<GaugeReader?>(nil)

    private final class GaugeReader: Sendable {
        let read: @Sendable () -> Void
        init(_ read: @escaping @Sendable () -> Void) { self.read = read }
    }

    init(database: String, user: String) {
        self.database = database
        self.user = user
        let labels = [("database", database), ("user", user)]
        self.size = GaugeSeries(.poolSize, labels)
        self.maxOverflow = GaugeSeries(.poolMaxOverflow, labels)
        self.connections = PoolConnectionState.allCases.map {
            GaugeSeries(.poolConnections, labels + [("state", $0.rawValue)])
        }
        self.checkedOutNow = GaugeSeries(.poolCheckedOut, labels)
        self.overflow = GaugeSeries(.poolOverflow, labels)
        self.waiting = GaugeSeries(.poolWaitingClients, labels)
        self.paused = GaugeSeries(.poolPaused, labels)
        self.wait = HistogramSeries(.poolWaitSeconds, labels, buckets: MetricBuckets.latency)
        self.use = HistogramSeries(.poolUseSeconds, labels, buckets: MetricBuckets.use)
        self.connect = HistogramSeries(.poolConnectSeconds, labels, buckets: MetricBuckets.latency)
        self.checkouts = CounterSeries(.poolCheckoutsTotal, labels)
        self.timeouts = CounterSeries(.poolTimeoutsTotal, labels)
        self.connectionErrorsInOrder = ConnectionErrorReason.allCases.map {
            CounterSeries(.poolConnectionErrorsTotal, labels + [("reason", $0.rawValue)])
        }
        self.connectionErrors = Dictionary(
            uniqueKeysWithValues: zip(ConnectionErrorReason.allCases, self.connectionErrorsInOrder)
        )
        self.connectionsClosedInOrder = ConnectionCloseReason.allCases.map {
            CounterSeries(.poolConnectionsClosedTotal, labels + [("reason", $0.rawValue)])
        }
        self.connectionsClosed = Dictionary(
            uniqueKeysWithValues: zip(ConnectionCloseReason.allCases, self.connectionsClosedInOrder)
        )
        self.leaks = CounterSeries(.poolLeaksSuspectedTotal, labels)
        self.staleReleases = CounterSeries(.poolStaleReleasesTotal, labels)
        self.transactionCount = CounterSeries(.transactionsTotal, labels)
        self.queryCount = CounterSeries(.queriesTotal, labels)
    }

    // MARK: Gauges

    /// Sets `lifeguard_pool_size` and `lifeguard_pool_max_overflow` (at start and after a reload).
    public func setConfigured(poolSize: Int, maxOverflow: Int) {
        self.size.set(poolSize)
        self.maxOverflow.set(maxOverflow)
    }

    /// Has `read` called before every scrape, to set the state gauges from the pool as it is then
    /// (with ``setConnections(idle:used:checkedOut:overflow:waiting:)``), rather than on every change.
    public func readGaugesBeforeRendering(_ read: @escaping @Sendable () -> Void) {
        let reader = GaugeReader(read)
        self.gaugeReader.withLock { $0 = reader }
    }

    /// Reads the state gauges from the pool, if it said how.
    func readGauges() {
        self.gaugeReader.withLock { $0 }?.read()
    }

    /// Sets the pool's state gauges from one snapshot of the pool, so that they agree with each other.
    ///
    /// - Parameters:
    ///   - idle: open server connections nobody holds (`lifeguard_pool_connections{state="idle"}`).
    ///   - used: open server connections in use (`lifeguard_pool_connections{state="used"}`).
    ///   - checkedOut: server connections handed to clients now (`lifeguard_pool_checked_out`).
    ///   - overflow: open connections above `pool_size` (`lifeguard_pool_overflow`).
    ///   - waiting: clients waiting for a connection (`lifeguard_pool_waiting_clients`).
    public func setConnections(idle: Int, used: Int, checkedOut: Int, overflow: Int, waiting: Int) {
        self.connections[0].set(idle)
        self.connections[1].set(used)
        self.checkedOutNow.set(checkedOut)
        self.overflow.set(overflow)
        self.waiting.set(waiting)
    }

    /// Sets `lifeguard_pool_paused`: 1 while the admin console's `PAUSE` holds the pool's new work.
    public func setPaused(_ paused: Bool) {
        self.paused.set(paused ? 1 : 0)
    }

    // MARK: Histograms

    /// Records one `lifeguard_pool_wait_seconds` sample: from asking for a connection to getting one.
    public func observeWait(_ duration: Duration) {
        self.wait.observe(duration)
    }

    /// Records one `lifeguard_pool_use_seconds` sample: how long a client held a server connection.
    public func observeUse(_ duration: Duration) {
        self.use.observe(duration)
    }

    /// Records one `lifeguard_pool_connect_seconds` sample: opening and authenticating a server connection.
    public func observeConnect(_ duration: Duration) {
        self.connect.observe(duration)
    }

    // MARK: Counters

    /// Counts one connection handed out (`lifeguard_pool_checkouts_total`).
    public func checkedOut() {
        self.checkouts.increment()
    }

    /// Counts one client that gave up after `pool_timeout` (`lifeguard_pool_timeouts_total`).
    public func timedOut() {
        self.timeouts.increment()
    }

    /// Counts one failed connect or broken connection (`lifeguard_pool_connection_errors_total`).
    public func connectionError(reason: ConnectionErrorReason) {
        self.connectionErrors[reason]!.increment()
    }

    /// Counts one server connection closed by the pool (`lifeguard_pool_connections_closed_total`).
    public func connectionClosed(reason: ConnectionCloseReason) {
        self.connectionsClosed[reason]!.increment()
    }

    /// Counts one hold that passed `leak_threshold` (`lifeguard_pool_leaks_suspected_total`).
    public func leakSuspected() {
        self.leaks.increment()
    }

    /// Counts one release or discard that named a lease the connection no longer had, and was ignored
    /// (`lifeguard_pool_stale_releases_total`).
    public func staleRelease() {
        self.staleReleases.increment()
    }

    /// Adds `count` completed transactions (`lifeguard_transactions_total`).
    public func transactions(_ count: Int) {
        self.transactionCount.increment(by: count)
    }

    /// Adds `count` queries (`lifeguard_queries_total`).
    public func queries(_ count: Int) {
        self.queryCount.increment(by: count)
    }

    // MARK: Reading

    /// The pool's counters and histograms as a scrape would render them now: what the admin console's `SHOW STATS`
    /// prints, so that both say the same.
    public func snapshot() -> PoolMetricsSnapshot {
        PoolMetricsSnapshot(
            checkouts: self.checkouts.current,
            timeouts: self.timeouts.current,
            connectionErrors: self.connectionErrorsInOrder.reduce(0) { $0 + $1.current },
            leaksSuspected: self.leaks.current,
            staleReleases: self.staleReleases.current,
            transactions: self.transactionCount.current,
            queries: self.queryCount.current,
            wait: self.wait.snapshot(),
            use: self.use.snapshot(),
            paused: self.paused.current == 1
        )
    }

    // MARK: Rendering

    /// Writes this pool's series of `family`, if it has any.
    func emit(_ family: LifeguardMetric, into buffer: inout [UInt8]) {
        switch family {
        case .poolSize: self.size.emit(into: &buffer)
        case .poolMaxOverflow: self.maxOverflow.emit(into: &buffer)
        case .poolConnections: for series in self.connections { series.emit(into: &buffer) }
        case .poolCheckedOut: self.checkedOutNow.emit(into: &buffer)
        case .poolOverflow: self.overflow.emit(into: &buffer)
        case .poolWaitingClients: self.waiting.emit(into: &buffer)
        case .poolPaused: self.paused.emit(into: &buffer)
        case .poolWaitSeconds: self.wait.emit(into: &buffer)
        case .poolUseSeconds: self.use.emit(into: &buffer)
        case .poolConnectSeconds: self.connect.emit(into: &buffer)
        case .poolCheckoutsTotal: self.checkouts.emit(into: &buffer)
        case .poolTimeoutsTotal: self.timeouts.emit(into: &buffer)
        case .poolConnectionErrorsTotal: for series in self.connectionErrorsInOrder { series.emit(into: &buffer) }
        case .poolConnectionsClosedTotal: for series in self.connectionsClosedInOrder { series.emit(into: &buffer) }
        case .poolLeaksSuspectedTotal: self.leaks.emit(into: &buffer)
        case .poolStaleReleasesTotal: self.staleReleases.emit(into: &buffer)
        case .transactionsTotal: self.transactionCount.emit(into: &buffer)
        case .queriesTotal: self.queryCount.emit(into: &buffer)
        default: break
        }
    }
}
