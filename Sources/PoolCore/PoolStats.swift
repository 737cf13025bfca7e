/// A snapshot of one pool: gauges that count the state machine's states, plus cumulative counters.
///
/// The gauges are never tallied separately: they change exactly when a connection or request changes state.
/// The counters start at 0 for every reason, so that `rate()` works before the first event.
public struct PoolStats: Sendable, Equatable {
    /// Open connections waiting to be handed out.
    public var idle: Int
    /// Open connections not idle: leased to a client or being pinged.
    public var used: Int
    /// Connections being opened.
    public var connecting: Int
    /// Connections leased to clients.
    public var checkedOut: Int
    /// Open connections above `pool_size`.
    public var overflow: Int
    /// Clients waiting for a connection (including those whose connection is being pinged).
    public var waiting: Int

    /// Connections handed out.
    public var checkouts: Int
    /// Requests that gave up after `pool_timeout`.
    public var timeouts: Int
    /// Leases that passed `leak_threshold`.
    public var leaksSuspected: Int
    /// Releases and discards that named a lease the connection no longer had (ignored).
    public var staleReleases = 0
    /// Failed connects and broken connections, by reason.
    public var connectionErrors: [ConnectionErrorReason: Int]
    /// Closed connections, by reason.
    public var closed: [CloseReason: Int]

    public init() {
        self.idle = 0
        self.used = 0
        self.connecting = 0
        self.checkedOut = 0
        self.overflow = 0
        self.waiting = 0
        self.checkouts = 0
        self.timeouts = 0
        self.leaksSuspected = 0
        self.connectionErrors = Dictionary(uniqueKeysWithValues: ConnectionErrorReason.allCases.map { ($0, 0) })
        self.closed = Dictionary(uniqueKeysWithValues: CloseReason.allCases.map { ($0, 0) })
    }

    /// Open connections (idle and used).
    public var open: Int { self.idle + self.used }

    /// Adds an observation to the cumulative counters.
    mutating func count(_ observation: PoolObservation) {
        switch observation {
        case .leased:
            self.checkouts += 1
        case .timedOut:
            self.timeouts += 1
        case .leakSuspected:
            self.leaksSuspected += 1
        case .staleRelease:
            self.staleReleases += 1
        case .connectFailed(let reason), .connectionErrored(let reason):
            self.connectionErrors[reason, default: 0] += 1
        case .closed(let reason):
            self.closed[reason, default: 0] += 1
        case .returned, .connected:
            break
        }
    }
}
