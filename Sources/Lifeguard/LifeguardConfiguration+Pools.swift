import LifeguardConfig
import PoolCore
import Proxy
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
    /// Every upstream to probe: the `upstream` setting as "default", then each `[databases.NAME]` as NAME.
    var upstreams: [(name: String, conninfo: ConnInfo)] {
        var result: [(name: String, conninfo: ConnInfo)] = []
        if let upstream = self.upstream { result.append((Self.defaultUpstreamName, upstream)) }
        for database in self.databases { result.append((database.name, database.dsn)) }
        return result
    }

    /// The pools known before any client connects: those the configuration pins completely (the upstream when its DSN
    /// names both database and user, each `[databases.NAME]` entry whose DSN names the user). Other pools are created
    /// by the proxy when their first client arrives. Routing itself is ``LifeguardConfiguration/route(database:user:)``.
    var poolPlans: [PoolPlan] {
        self.pinnedRoutes.map { route in
            PoolPlan(
                key: route.key,
                upstreamName: route.upstreamName,
                upstream: route.upstream,
                mode: route.mode,
                configuration: route.configuration
            )
        }
    }
}
