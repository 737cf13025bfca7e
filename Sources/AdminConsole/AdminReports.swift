import PoolCore

/// The `SHOW` commands' tables, computed from an ``AdminSnapshot``: pure, so each column can be tested without I/O.
public enum AdminReports {
    /// The table `show` prints, or the error for a `SHOW` Lifeguard does not have. `averages` are the per-database
    /// rates of ``AdminStatsWindow`` (`SHOW STATS`, `STATS_AVERAGES`, `TOTALS`).
    public static func table(
        _ show: AdminShow,
        _ snapshot: AdminSnapshot,
        averages: AdminStatsWindow.Averages = .init()
    ) -> AdminReply {
        switch show {
        case .pools: .table(Self.pools(snapshot), tag: "SHOW")
        case .stats: .table(Self.stats(snapshot, averages), tag: "SHOW")
        case .statsTotals: .table(Self.statsTotals(snapshot), tag: "SHOW")
        case .statsAverages: .table(Self.statsAverages(snapshot, averages), tag: "SHOW")
        case .totals: .table(Self.totals(snapshot, averages), tag: "SHOW")
        case .servers: .table(Self.sockets(snapshot.servers, type: "S"), tag: "SHOW")
        case .clients: .table(Self.sockets(snapshot.clients, type: "C"), tag: "SHOW")
        case .databases: .table(Self.databases(snapshot), tag: "SHOW")
        case .users: .table(Self.users(snapshot), tag: "SHOW")
        case .config: .table(Self.config(snapshot), tag: "SHOW")
        case .lists: .table(Self.lists(snapshot), tag: "SHOW")
        case .version: .table(AdminTable(columns: AdminColumns.version, rows: [[snapshot.version]]), tag: "SHOW")
        case .state: .table(Self.state(snapshot), tag: "SHOW")
        case .lifeguard: .table(Self.lifeguard(snapshot), tag: "SHOW")
        case .help: .notice("Console usage", detail: Self.help, tag: "SHOW")
        case .fds, .sockets, .activeSockets, .mem, .dnsHosts, .dnsZones, .peers, .peerPools:
            .error(.notImplemented("SHOW \(show.rawValue.uppercased())"))
        }
    }

    /// PgBouncer's usage text, with the commands Lifeguard has.
    static let help = """

        \tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION
        \tSHOW LISTS|STATE|LIFEGUARD
        \tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS
        \tRELOAD
        \tPAUSE [<db>]
        \tRESUME [<db>]
        \tDISABLE <db>
        \tENABLE <db>
        \tRECONNECT [<db>]
        \tKILL [<db>]
        \tKILL_CLIENT <client_id>
        \tSHUTDOWN
        \tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS
        \tWAIT_CLOSE [<db>]
        """

    // MARK: Pools

    /// One row per pool, sorted by database and user, and the console's own pool as PgBouncer lists it.
    static func pools(_ snapshot: AdminSnapshot) -> AdminTable {
        var rows: [[String?]] = []
        for pool in Self.poolsWithConsole(snapshot) {
            let key = PoolKey(database: pool.database, user: pool.user)
            let clients = snapshot.clients.filter { $0.pool == key }
            let waiting = clients.filter { $0.state == "waiting" }.count
            let stats = pool.inspection.stats
            let pinging = pool.inspection.connections.filter { $0.state == .pinging }.count
            rows.append([
                pool.database, pool.user,
                String(clients.count - waiting), String(waiting), "0", "0",
                String(stats.checkedOut), "0", "0", String(stats.idle), String(stats.used - stats.checkedOut - pinging),
                String(pinging), String(stats.connecting),
                String(pool.maxWait / 1_000_000), String(pool.maxWait % 1_000_000),
                pool.mode.rawValue, nil,
            ])
        }
        return AdminTable(columns: AdminColumns.pools, rows: rows)
    }

    /// The pools sorted by (database, user), with the console's pool (statement mode, no servers) among them.
    static func poolsWithConsole(_ snapshot: AdminSnapshot) -> [AdminSnapshot.Pool] {
        var pools = snapshot.pools
        if !pools.contains(where: { $0.database == AdminConsoleName.database && $0.user == AdminConsoleName.user }) {
            pools.append(
                AdminSnapshot.Pool(
                    database: AdminConsoleName.database,
                    user: AdminConsoleName.user,
                    mode: .statement,
                    paused: false,
                    inspection: PoolInspection(stats: PoolStats(), connections: [], oldestWaiterSince: nil),
                    counters: AdminCounters(),
                    poolSize: 2,
                    maxOverflow: 0,
                    maxWait: 0
                )
            )
        }
        return pools.sorted { ($0.database, $0.user) < ($1.database, $1.user) }
    }

    // MARK: Statistics

    /// Per-database sums of the pools' counters, sorted by database name.
    static func perDatabase(_ snapshot: AdminSnapshot) -> [(database: String, counters: AdminCounters)] {
        var sums: [String: AdminCounters] = [:]
        for pool in Self.poolsWithConsole(snapshot) {
            sums[pool.database, default: AdminCounters()] =
                sums[pool.database, default: AdminCounters()]
                + pool.counters
        }
        return sums.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    static func stats(_ snapshot: AdminSnapshot, _ averages: AdminStatsWindow.Averages) -> AdminTable {
        let rows = Self.perDatabase(snapshot).map { database, counters -> [String?] in
            let average = averages.perDatabase[database] ?? AdminCounters()
            return [database] + counters.values.map { String($0) } + average.values.map { String($0) }
        }
        return AdminTable(columns: AdminColumns.stats, rows: rows)
    }

    static func statsTotals(_ snapshot: AdminSnapshot) -> AdminTable {
        let rows = Self.perDatabase(snapshot).map { database, counters -> [String?] in
            [database] + counters.values.map { String($0) }
        }
        return AdminTable(columns: AdminColumns.statsTotals, rows: rows)
    }

    static func statsAverages(_ snapshot: AdminSnapshot, _ averages: AdminStatsWindow.Averages) -> AdminTable {
        let rows = Self.perDatabase(snapshot).map { database, _ -> [String?] in
            [database] + (averages.perDatabase[database] ?? AdminCounters()).values.map { String($0) }
        }
        return AdminTable(columns: AdminColumns.statsAverages, rows: rows)
    }

    /// PgBouncer's `SHOW TOTALS`: its `WTOTAL`/`WAVG` names (`PgStats` field names), one row each.
    static let totalNames = [
        "server_assignment_count", "xact_count", "query_count", "client_bytes", "server_bytes", "xact_time",
        "query_time", "wait_time", "ps_client_parse_count", "ps_server_parse_count", "ps_bind_count",
    ]

    static func totals(_ snapshot: AdminSnapshot, _ averages: AdminStatsWindow.Averages) -> AdminTable {
        let total = snapshot.pools.reduce(AdminCounters()) { $0 + $1.counters }
        var rows: [[String?]] = []
        for (name, value) in zip(Self.totalNames, total.values) { rows.append(["total_" + name, String(value)]) }
        for (name, value) in zip(Self.totalNames, averages.total.values) {
            rows.append(["avg_" + name, String(value)])
        }
        return AdminTable(columns: AdminColumns.totals, rows: rows)
    }

    // MARK: Connections

    static func sockets(_ sockets: [AdminSnapshot.Socket], type: String) -> AdminTable {
        let rows = sockets.map { socket -> [String?] in
            [
                type, socket.user, socket.database, "none", socket.state, socket.address, String(socket.port),
                socket.localAddress, String(socket.localPort), AdminTime.format(socket.connectTime),
                AdminTime.format(socket.requestTime), String(socket.wait / 1_000_000),
                String(socket.wait % 1_000_000), socket.closeNeeded ? "1" : "0", socket.pointer, socket.link ?? "",
                String(socket.remotePID), socket.tls, socket.applicationName, String(socket.preparedStatements),
                String(socket.id),
            ]
        }
        return AdminTable(columns: AdminColumns.sockets, rows: rows)
    }

    // MARK: Configuration

    static func databases(_ snapshot: AdminSnapshot) -> AdminTable {
        var databases = snapshot.databases
        if !databases.contains(where: { $0.name == AdminConsoleName.database }) {
            databases.append(
                AdminSnapshot.Database(
                    name: AdminConsoleName.database,
                    host: nil,
                    port: snapshot.listenPort,
                    database: AdminConsoleName.database,
                    forceUser: AdminConsoleName.user,
                    poolSize: 2,
                    minPoolSize: 0,
                    reservePoolSize: 0,
                    serverLifetime: 0,
                    poolMode: .statement,
                    paused: false,
                    disabled: false
                )
            )
        }
        databases.sort { $0.name < $1.name }
        let rows = databases.map { database -> [String?] in
            let servers = snapshot.pools.filter { $0.database == database.name }
                .reduce(0) { $0 + $1.inspection.stats.open + $1.inspection.stats.connecting }
            let clients = snapshot.clients.filter { $0.pool?.database == database.name }.count
            return [
                database.name, database.host, String(database.port), database.database, database.forceUser,
                String(database.poolSize), String(database.minPoolSize), String(database.reservePoolSize),
                String(database.serverLifetime), database.poolMode?.rawValue, nil, String(database.maxConnections),
                String(servers), "0",
                String(clients), database.paused || snapshot.pausedAll ? "1" : "0", database.disabled ? "1" : "0",
            ]
        }
        return AdminTable(columns: AdminColumns.databases, rows: rows)
    }

    static func users(_ snapshot: AdminSnapshot) -> AdminTable {
        var names = Set(snapshot.userNames)
        for pool in snapshot.pools { names.insert(pool.user) }
        names.insert(AdminConsoleName.user)
        let rows = names.sorted().map { name -> [String?] in
            let servers = snapshot.pools.filter { $0.user == name }
                .reduce(0) { $0 + $1.inspection.stats.open + $1.inspection.stats.connecting }
            let clients = snapshot.clients.filter { $0.pool?.user == name }.count
            return [name, "", "", nil, "0", String(servers), "0", String(clients)]
        }
        return AdminTable(columns: AdminColumns.users, rows: rows)
    }

    static func config(_ snapshot: AdminSnapshot) -> AdminTable {
        let rows = snapshot.config.map { setting -> [String?] in
            [setting.key, setting.value, setting.defaultValue, setting.changeable ? "yes" : "no"]
        }
        return AdminTable(columns: AdminColumns.config, rows: rows)
    }

    static func lists(_ snapshot: AdminSnapshot) -> AdminTable {
        let pools = Self.poolsWithConsole(snapshot)
        let databases = Set(pools.map(\.database)).union(snapshot.databases.map(\.name))
        let users = Set(pools.map(\.user)).union(snapshot.userNames)
        let rows: [(String, Int)] = [
            ("databases", databases.count), ("users", users.count), ("peers", 0), ("pools", pools.count),
            ("peer_pools", 0), ("free_clients", 0), ("used_clients", snapshot.clients.count), ("login_clients", 0),
            ("free_servers", 0), ("used_servers", snapshot.servers.count), ("dns_names", 0), ("dns_zones", 0),
            ("dns_queries", 0), ("dns_pending", 0),
        ]
        return AdminTable(columns: AdminColumns.lists, rows: rows.map { [$0.0, String($0.1)] })
    }

    static func state(_ snapshot: AdminSnapshot) -> AdminTable {
        AdminTable(
            columns: AdminColumns.state,
            rows: [
                ["active", snapshot.pausedAll ? "no" : "yes"],
                ["paused", snapshot.pausedAll ? "yes" : "no"],
                ["suspended", "no"],
            ]
        )
    }

    static func lifeguard(_ snapshot: AdminSnapshot) -> AdminTable {
        let rows = snapshot.pools.sorted { ($0.database, $0.user) < ($1.database, $1.user) }.map {
            pool -> [String?] in
            let stats = pool.inspection.stats
            return [
                pool.database, pool.user, String(pool.poolSize), String(pool.maxOverflow), String(stats.overflow),
                String(stats.checkedOut), String(stats.waiting), String(stats.checkouts), String(stats.timeouts),
                String(stats.leaksSuspected), String(stats.staleReleases), String(pool.connectionErrors),
                pool.waitP50.map { String($0) }, pool.waitP99.map { String($0) }, pool.paused ? "1" : "0",
            ]
        }
        return AdminTable(columns: AdminColumns.lifeguard, rows: rows)
    }
}

/// PgBouncer's time cells (`format_time_s`): `YYYY-MM-DD HH:MM:SS` and the zone; Lifeguard writes UTC.
enum AdminTime {
    static func format(_ microseconds: Int64) -> String? {
        guard microseconds > 0 else { return nil }
        let seconds = microseconds / 1_000_000
        let days = seconds / 86_400
        let secondOfDay = seconds % 86_400
        // Howard Hinnant's days-to-civil.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(year)-\(two(month))-\(two(day)) \(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):"
            + "\(two(secondOfDay % 60)) UTC"
    }
}
