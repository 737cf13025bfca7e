import LifeguardConfig
import PoolCore
import Upstream

/// A pool the configuration names: the key clients reach it by, where it connects, and its rules.
struct PoolPlan: Equatable {
    var key: PoolKey
    var upstreamName: String
    var upstream: ConnInfo
    var mode: PoolMode
    var configuration: PoolConfiguration
}

extension LifeguardConfiguration {
    /// The name `lifeguard_upstream_up{upstream}` and logs use for the `upstream` setting.
    static let defaultUpstreamName = "default"

    /// Every upstream to probe: the `upstream` setting as "default", then each `[databases.NAME]` as NAME.
    var upstreams: [(name: String, conninfo: ConnInfo)] {
        var result: [(name: String, conninfo: ConnInfo)] = []
        if let upstream = self.upstream { result.append((Self.defaultUpstreamName, upstream)) }
        for database in self.databases { result.append((database.name, database.dsn)) }
        return result
    }

    /// The pools known before any client connects: the upstream's own (database, user) and each
    /// `[databases.NAME]` entry's (NAME, user).
    var poolPlans: [PoolPlan] {
        var plans: [PoolPlan] = []
        if let upstream = self.upstream {
            let user = upstream.user ?? ""
            plans.append(
                PoolPlan(
                    key: PoolKey(database: upstream.dbname ?? user, user: user),
                    upstreamName: Self.defaultUpstreamName,
                    upstream: upstream,
                    mode: self.poolMode,
                    configuration: self.poolConfiguration(
                        poolSize: self.poolSize,
                        minSize: self.minSize,
                        maxOverflow: self.maxOverflow,
                        poolTimeout: self.poolTimeout
                    )
                )
            )
        }
        for database in self.databases {
            plans.append(
                PoolPlan(
                    key: PoolKey(database: database.name, user: database.dsn.user ?? ""),
                    upstreamName: database.name,
                    upstream: database.dsn,
                    mode: database.poolMode,
                    configuration: self.poolConfiguration(
                        poolSize: database.poolSize,
                        minSize: database.minSize,
                        maxOverflow: database.maxOverflow,
                        poolTimeout: database.poolTimeout
                    )
                )
            )
        }
        return plans
    }

    private func poolConfiguration(
        poolSize: Int,
        minSize: Int,
        maxOverflow: Int,
        poolTimeout: Duration
    ) -> PoolConfiguration {
        PoolConfiguration(
            poolSize: poolSize,
            minSize: minSize,
            maxOverflow: maxOverflow,
            poolTimeout: poolTimeout,
            poolRecycle: self.poolRecycle,
            prePing: self.prePing,
            prePingDelay: self.prePingDelay,
            idleTimeout: self.idleTimeout,
            leakThreshold: self.leakThreshold
        )
    }
}
