/// The pooling settings of one pool, named as in SQLAlchemy (see DESIGN.md's vocabulary table).
///
/// Out-of-range values are not rejected here (the configuration layer reports them); the state
/// machine uses ``normalized()``, so a bad value can never break its invariants.
public struct PoolConfiguration: Sendable, Equatable {
    /// Server connections kept open (`pool_size`); a returned connection stays idle while fewer than this are idle.
    public var poolSize: Int
    /// Connections opened eagerly and kept warm (`min_size`); never more than `poolSize`.
    public var minSize: Int
    /// Extra connections allowed above `poolSize` during spikes (`max_overflow`).
    public var maxOverflow: Int
    /// How long a client waits for a server connection before it gets an error (`pool_timeout`).
    public var poolTimeout: Duration
    /// Connections older than this are closed when returned or when they would be handed out (`pool_recycle`).
    public var poolRecycle: Duration?
    /// Verify an idle connection before handing it out (`pre_ping`).
    public var prePing: Bool
    /// Only connections unused for longer than this are pinged. 1 s: a busy pool (connections reused within
    /// a second) pays no round trip, while a connection that sat idle long enough to be cut by a firewall,
    /// a server restart or `idle_session_timeout` is always checked (PgBouncer's `server_check_delay` is 30 s).
    public var prePingDelay: Duration
    /// Idle connections above `minSize` unused this long are closed (`idle_timeout`); nil keeps them.
    public var idleTimeout: Duration?
    /// A lease held longer than this is reported once (`leak_threshold`); nil disables the check.
    public var leakThreshold: Duration?
    /// First delay before retrying a failed connect; doubled per consecutive failure.
    public var connectBackoffInitial: Duration
    /// Cap of the retry delay.
    public var connectBackoffMax: Duration

    public init(
        poolSize: Int = 5,
        minSize: Int = 0,
        maxOverflow: Int = 10,
        poolTimeout: Duration = .seconds(30),
        poolRecycle: Duration? = nil,
        prePing: Bool = true,
        prePingDelay: Duration = .seconds(1),
        idleTimeout: Duration? = .seconds(600),
        leakThreshold: Duration? = nil,
        connectBackoffInitial: Duration = .milliseconds(100),
        connectBackoffMax: Duration = .seconds(10)
    ) {
        self.poolSize = poolSize
        self.minSize = minSize
        self.maxOverflow = maxOverflow
        self.poolTimeout = poolTimeout
        self.poolRecycle = poolRecycle
        self.prePing = prePing
        self.prePingDelay = prePingDelay
        self.idleTimeout = idleTimeout
        self.leakThreshold = leakThreshold
        self.connectBackoffInitial = connectBackoffInitial
        self.connectBackoffMax = connectBackoffMax
    }

    /// `poolSize + maxOverflow`: open plus connecting connections never exceed this.
    public var maxConnections: Int { self.poolSize + self.maxOverflow }

    /// The values the state machine works with: sizes clamped so that `0 ≤ minSize ≤ poolSize`,
    /// `maxConnections ≥ 1`; durations made non-negative and the backoff cap at least the initial delay.
    public func normalized() -> PoolConfiguration {
        var config = self
        config.poolSize = max(0, config.poolSize)
        config.maxOverflow = max(config.poolSize == 0 ? 1 : 0, config.maxOverflow)
        config.minSize = min(max(0, config.minSize), config.poolSize)
        config.poolTimeout = max(.zero, config.poolTimeout)
        config.prePingDelay = max(.zero, config.prePingDelay)
        config.connectBackoffInitial = max(.milliseconds(1), config.connectBackoffInitial)
        config.connectBackoffMax = max(config.connectBackoffInitial, config.connectBackoffMax)
        return config
    }
}
