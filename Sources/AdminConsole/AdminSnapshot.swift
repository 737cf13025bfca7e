import PoolCore

/// PgBouncer's per-pool statistics (its `PgStats`), from Lifeguard's own counters: the numbers `/metrics` exports.
/// Times in microseconds.
public struct AdminCounters: Sendable, Equatable {
    /// Server connections handed out (`lifeguard_pool_checkouts_total`).
    public var serverAssignments: UInt64 = 0
    /// `lifeguard_transactions_total`.
    public var transactions: UInt64 = 0
    /// `lifeguard_queries_total`.
    public var queries: UInt64 = 0
    /// Not counted by Lifeguard (yet): always 0.
    public var bytesReceived: UInt64 = 0
    public var bytesSent: UInt64 = 0
    /// Time clients held server connections (`lifeguard_pool_use_seconds_sum`).
    public var transactionTime: UInt64 = 0
    /// Not measured by Lifeguard: always 0.
    public var queryTime: UInt64 = 0
    /// Time clients waited for a server connection (`lifeguard_pool_wait_seconds_sum`).
    public var waitTime: UInt64 = 0
    /// Prepared-statement counters: not counted by Lifeguard, always 0.
    public var clientParses: UInt64 = 0
    public var serverParses: UInt64 = 0
    public var binds: UInt64 = 0

    public init() {}

    static func + (lhs: Self, rhs: Self) -> Self {
        var sum = lhs
        sum.serverAssignments += rhs.serverAssignments
        sum.transactions += rhs.transactions
        sum.queries += rhs.queries
        sum.bytesReceived += rhs.bytesReceived
        sum.bytesSent += rhs.bytesSent
        sum.transactionTime += rhs.transactionTime
        sum.queryTime += rhs.queryTime
        sum.waitTime += rhs.waitTime
        sum.clientParses += rhs.clientParses
        sum.serverParses += rhs.serverParses
        sum.binds += rhs.binds
        return sum
    }

    /// The values in PgBouncer's column order.
    var values: [UInt64] {
        [
            self.serverAssignments, self.transactions, self.queries, self.bytesReceived, self.bytesSent,
            self.transactionTime, self.queryTime, self.waitTime, self.clientParses, self.serverParses, self.binds,
        ]
    }

    /// PgBouncer's `calc_average`: rates per second over `microseconds`, times per transaction, query and
    /// assignment.
    static func average(current: Self, older: Self, microseconds: UInt64) -> Self {
        var average = Self()
        guard microseconds > 0 else { return average }
        func rate(_ path: KeyPath<Self, UInt64>) -> UInt64 {
            let delta = current[keyPath: path] &- older[keyPath: path]
            guard current[keyPath: path] >= older[keyPath: path] else { return 0 }
            return UInt64((Double(delta) * 1_000_000 / Double(microseconds)).rounded(.down))
        }
        func per(_ time: KeyPath<Self, UInt64>, _ count: KeyPath<Self, UInt64>) -> UInt64 {
            guard current[keyPath: count] > older[keyPath: count], current[keyPath: time] >= older[keyPath: time]
            else { return 0 }
            return (current[keyPath: time] - older[keyPath: time]) / (current[keyPath: count] - older[keyPath: count])
        }
        average.queries = rate(\.queries)
        average.transactions = rate(\.transactions)
        average.serverAssignments = rate(\.serverAssignments)
        average.bytesReceived = rate(\.bytesReceived)
        average.bytesSent = rate(\.bytesSent)
        average.queryTime = per(\.queryTime, \.queries)
        average.transactionTime = per(\.transactionTime, \.transactions)
        average.waitTime = per(\.waitTime, \.serverAssignments)
        average.clientParses = rate(\.clientParses)
        average.serverParses = rate(\.serverParses)
        average.binds = rate(\.binds)
        return average
    }
}

/// Everything the `SHOW` commands print, gathered at one moment by the I/O layer. Times are microseconds since the
/// Unix epoch; the console reads no clock.
public struct AdminSnapshot: Sendable {
    public struct Pool: Sendable {
        public var database: String
        public var user: String
        public var mode: PoolMode
        public var paused: Bool
        public var inspection: PoolInspection
        public var counters: AdminCounters
        public var poolSize: Int
        public var maxOverflow: Int
        /// How long the longest-waiting client has waited, in microseconds (0: nobody waits).
        public var maxWait: UInt64
        /// Wait percentiles from `lifeguard_pool_wait_seconds` (nil: no sample yet).
        public var waitP50: UInt64?
        public var waitP99: UInt64?
        public var connectionErrors: Int

        public init(
            database: String,
            user: String,
            mode: PoolMode,
            paused: Bool,
            inspection: PoolInspection,
            counters: AdminCounters,
            poolSize: Int,
            maxOverflow: Int,
            maxWait: UInt64,
            waitP50: UInt64? = nil,
            waitP99: UInt64? = nil,
            connectionErrors: Int = 0
        ) {
            self.database = database
            self.user = user
            self.mode = mode
            self.paused = paused
            self.inspection = inspection
            self.counters = counters
            self.poolSize = poolSize
            self.maxOverflow = maxOverflow
            self.maxWait = maxWait
            self.waitP50 = waitP50
            self.waitP99 = waitP99
            self.connectionErrors = connectionErrors
        }
    }

    /// A client or server connection: a row of `SHOW CLIENTS` or `SHOW SERVERS`.
    public struct Socket: Sendable {
        /// PgBouncer's states: clients `active` (logged in, idle or holding a server), `waiting`; servers `active`,
        /// `idle`, `used`, `tested`, `new`.
        public var state: String
        /// The login user (clients) or the pool's user (servers).
        public var user: String
        /// The pool's database.
        public var database: String
        /// The pool the socket belongs to (its database and user), for counting.
        public var pool: PoolKey?
        public var address: String
        public var port: Int
        public var localAddress: String
        public var localPort: Int
        public var connectTime: Int64
        public var requestTime: Int64
        public var wait: UInt64 = 0
        public var pointer: String
        public var link: String?
        public var remotePID: Int32 = 0
        /// A server connection to close once released (`RECONNECT`, a reload that moved its pool): `close_needed`.
        public var closeNeeded = false
        public var tls: String = ""
        public var applicationName: String = ""
        public var preparedStatements: Int = 0
        public var id: Int

        public init(
            state: String,
            user: String,
            database: String,
            pool: PoolKey?,
            address: String,
            port: Int,
            localAddress: String,
            localPort: Int,
            connectTime: Int64,
            requestTime: Int64,
            pointer: String,
            link: String?,
            id: Int
        ) {
            self.state = state
            self.user = user
            self.database = database
            self.pool = pool
            self.address = address
            self.port = port
            self.localAddress = localAddress
            self.localPort = localPort
            self.connectTime = connectTime
            self.requestTime = requestTime
            self.pointer = pointer
            self.link = link
            self.id = id
        }
    }

    /// A row of `SHOW DATABASES`.
    public struct Database: Sendable {
        public var name: String
        public var host: String?
        public var port: Int
        public var database: String
        public var forceUser: String?
        public var poolSize: Int
        public var minPoolSize: Int
        public var reservePoolSize: Int
        /// `pool_recycle` in seconds (0: off).
        public var serverLifetime: Int
        /// Nil: the global `pool_mode`.
        public var poolMode: PoolMode?
        public var paused: Bool
        public var disabled: Bool
        /// `max_db_connections` (0: none).
        public var maxConnections = 0

        public init(
            name: String,
            host: String?,
            port: Int,
            database: String,
            forceUser: String?,
            poolSize: Int,
            minPoolSize: Int,
            reservePoolSize: Int,
            serverLifetime: Int,
            poolMode: PoolMode?,
            paused: Bool,
            disabled: Bool
        ) {
            self.name = name
            self.host = host
            self.port = port
            self.database = database
            self.forceUser = forceUser
            self.poolSize = poolSize
            self.minPoolSize = minPoolSize
            self.reservePoolSize = reservePoolSize
            self.serverLifetime = serverLifetime
            self.poolMode = poolMode
            self.paused = paused
            self.disabled = disabled
        }
    }

    /// A row of `SHOW CONFIG`.
    public struct Setting: Sendable, Equatable {
        public var key: String
        public var value: String
        public var defaultValue: String
        public var changeable: Bool

        public init(key: String, value: String, defaultValue: String, changeable: Bool) {
            self.key = key
            self.value = value
            self.defaultValue = defaultValue
            self.changeable = changeable
        }
    }

    public var now: Int64
    /// `SHOW VERSION`'s text.
    public var version: String
    public var pools: [Pool] = []
    public var clients: [Socket] = []
    public var servers: [Socket] = []
    public var databases: [Database] = []
    public var config: [Setting] = []
    /// Users the auth_file lists (`SHOW USERS` adds the pools' users).
    public var userNames: [String] = []
    /// `PAUSE` without a database is in force.
    public var pausedAll = false
    /// The listen port, for the `pgbouncer` database's row.
    public var listenPort = 0

    public init(now: Int64, version: String) {
        self.now = now
        self.version = version
    }
}

/// The admin console's own database and user, as in PgBouncer.
public enum AdminConsoleName {
    public static let database = "pgbouncer"
    public static let user = "pgbouncer"
}
