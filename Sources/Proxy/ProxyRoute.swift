import LifeguardConfig
import PoolCore
import Upstream

/// Where the clients of one (database, user) go: the pool they share and how its server connections are opened.
///
/// Made by ``LifeguardConfiguration/route(database:user:)``, the one place routing is decided.
public struct ProxyRoute: Sendable, Equatable {
    /// The pool: (the `[databases]` entry's name or the server database, the server user).
    public var key: PoolKey
    /// `default` for the `upstream` setting, else the `[databases]` entry's name (the `upstream` label).
    public var upstreamName: String
    /// The DSN server connections are opened from (host, port, password, options).
    public var upstream: ConnInfo
    /// The database named in the server connection's StartupMessage.
    public var serverDatabase: String
    /// The role named in the server connection's StartupMessage.
    public var serverUser: String
    public var mode: PoolMode
    public var configuration: PoolConfiguration
    /// Run on every new server connection before the pool uses it (`connect_query`); nil = none.
    public var connectQuery: String? = nil
    /// The cap on the server connections of every pool of `key.database` (`max_db_connections`); 0 = none.
    public var maxDBConnections: Int = 0
}

/// Why a client's (database, user) has no pool; ``message`` is what the client sees.
public struct ProxyRouteError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { self.message }
}

extension LifeguardConfiguration {
    /// The name `lifeguard_upstream_up{upstream}` and logs use for the `upstream` setting.
    public static let defaultUpstreamName = "default"

    /// Every upstream: the `upstream` setting as "default", then each `[databases.NAME]` as NAME.
    public var upstreams: [(name: String, conninfo: ConnInfo)] {
        var result: [(name: String, conninfo: ConnInfo)] = []
        if let upstream = self.upstream { result.append((Self.defaultUpstreamName, upstream)) }
        for database in self.databases { result.append((database.name, database.dsn)) }
        return result
    }

    /// Routes a client: a `[databases.NAME]` entry for its database wins; else the `upstream` DSN passes the client's
    /// database and user through unless the DSN itself pins them (written in the connection string).
    public func route(database: String, user: String) -> Result<ProxyRoute, ProxyRouteError> {
        if let entry = self.database(named: database) {
            let serverUser = Self.pinned(entry.dsn, "user") ?? user
            let route = ProxyRoute(
                key: PoolKey(database: entry.name, user: serverUser),
                upstreamName: entry.name,
                upstream: entry.dsn,
                serverDatabase: Self.pinned(entry.dsn, "dbname") ?? entry.name,
                serverUser: serverUser,
                mode: entry.poolMode,
                configuration: self.poolConfiguration(
                    poolSize: entry.poolSize,
                    minSize: entry.minSize,
                    maxOverflow: entry.maxOverflow,
                    poolTimeout: entry.poolTimeout
                ),
                connectQuery: entry.connectQuery,
                maxDBConnections: entry.maxDBConnections
            )
            return .success(route)
        }
        guard let upstream = self.upstream else {
            let names = self.databases.map { "\"\($0.name)\"" }.joined(separator: ", ")
            return .failure(
                ProxyRouteError(
                    message: "database \"\(database)\" does not exist in Lifeguard's configuration: "
                        + "no [databases] entry names it (configured: \(names.isEmpty ? "none" : names)) "
                        + "and no upstream is set to pass it through"
                )
            )
        }
        let serverUser = Self.pinned(upstream, "user") ?? user
        let serverDatabase = Self.pinned(upstream, "dbname") ?? database
        let route = ProxyRoute(
            key: PoolKey(database: serverDatabase, user: serverUser),
            upstreamName: Self.defaultUpstreamName,
            upstream: upstream,
            serverDatabase: serverDatabase,
            serverUser: serverUser,
            mode: self.poolMode,
            configuration: self.poolConfiguration(
                poolSize: self.poolSize,
                minSize: self.minSize,
                maxOverflow: self.maxOverflow,
                poolTimeout: self.poolTimeout
            ),
            connectQuery: self.connectQuery,
            maxDBConnections: self.maxDBConnections
        )
        return .success(route)
    }

    /// The routes the configuration fixes completely, whoever connects: the upstream when its DSN pins both
    /// database and user, and each `[databases.NAME]` entry whose DSN pins the user. Their pools exist from start-up.
    public var pinnedRoutes: [ProxyRoute] {
        var routes: [ProxyRoute] = []
        if let upstream = self.upstream, let database = Self.pinned(upstream, "dbname"),
            let user = Self.pinned(upstream, "user"), self.database(named: database) == nil,
            case .success(let route) = self.route(database: database, user: user)
        {
            routes.append(route)
        }
        for entry in self.databases {
            if let user = Self.pinned(entry.dsn, "user"),
                case .success(let route) = self.route(database: entry.name, user: user)
            {
                routes.append(route)
            }
        }
        return routes
    }

    /// A value the connection string itself sets; libpq defaults and `PG*` variables do not pin anything.
    static func pinned(_ dsn: ConnInfo, _ keyword: String) -> String? {
        guard let option = dsn.option(keyword), option.source == .connectionString else { return nil }
        return option.value
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
