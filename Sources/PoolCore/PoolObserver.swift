/// Something that happened in a pool, for the metrics layer. The state machine returns these as actions.
public enum PoolObservation: Sendable, Equatable {
    /// A connection was handed to a client after waiting this long (`lifeguard_pool_wait_seconds`).
    case leased(waited: Duration)
    /// A client gave a connection back, clean or broken, after holding it this long (`lifeguard_pool_use_seconds`).
    case returned(heldFor: Duration)
    /// A connection was opened and authenticated in this time (`lifeguard_pool_connect_seconds`).
    case connected(took: Duration)
    /// Opening a connection failed.
    case connectFailed(ConnectionErrorReason)
    /// An open connection broke, while in use, idle, or found by a failed pre-ping.
    case connectionErrored(ConnectionErrorReason)
    /// A connection was closed.
    case closed(CloseReason)
    /// A client gave up after `pool_timeout`.
    case timedOut
    /// A lease passed `leak_threshold`; reported once per lease.
    case leakSuspected(heldFor: Duration)
    /// A release or discard named a lease that is not the connection's current one; it was ignored.
    case staleRelease
}

/// Receives a pool's observations, and its gauges. Implemented by the metrics layer.
///
/// Observations come from the live pool outside its lock, possibly from several threads at once; the observer must
/// not call back into the pool from them.
public protocol PoolObserver: Sendable {
    func pool(_ key: PoolKey, observed: PoolObservation)
    /// Called once, as the pool is created: the pool keeps `gauges` up to date, to be read when they are needed (a
    /// scrape) rather than pushed on every event: a checkout and a return change them each time, and pushing a copy
    /// of the stats cost a second lock, a comparison and the copy per event.
    func pool(_ key: PoolKey, gauges: PoolGauges)
}

extension PoolObserver {
    public func pool(_ key: PoolKey, observed: PoolObservation) {}
    public func pool(_ key: PoolKey, gauges: PoolGauges) {}
}

/// The default observer: ignores everything.
public struct NoOpPoolObserver: PoolObserver {
    public init() {}
}
