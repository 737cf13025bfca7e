import LifeguardConfig
import Proxy
import Upstream

extension LifeguardConfiguration {
    /// Every upstream to probe: the `upstream` setting as "default", then each `[databases.NAME]` as NAME.
    var upstreams: [(name: String, conninfo: ConnInfo)] {
        var result: [(name: String, conninfo: ConnInfo)] = []
        if let upstream = self.upstream { result.append((Self.defaultUpstreamName, upstream)) }
        for database in self.databases { result.append((database.name, database.dsn)) }
        return result
    }
}
