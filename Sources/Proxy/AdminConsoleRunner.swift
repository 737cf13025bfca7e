import AdminConsole
import ConnectionPool
import Foundation
import LifeguardConfig
import LifeguardMetrics
import NIOCore
import PoolCore
import Synchronization

/// What the admin console asks of the process: `RELOAD` and `SHUTDOWN`. Set by the executable
/// (``ProxyServer/setConsoleHooks(_:)``); without them the commands answer that they are not available.
public struct AdminConsoleHooks: Sendable {
    /// Reloads the configuration as SIGHUP does; returns false when it failed (the reason is logged).
    public var reload: @Sendable () -> Bool
    /// Starts a graceful shutdown (as SIGTERM does).
    public var shutdown: @Sendable (AdminShutdownMode) -> Void

    public init(reload: @escaping @Sendable () -> Bool, shutdown: @escaping @Sendable (AdminShutdownMode) -> Void) {
        self.reload = reload
        self.shutdown = shutdown
    }
}

/// Wall-clock time for the console's time columns.
enum AdminClock {
    static func microsecondsSinceEpoch() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1_000_000).rounded(.down))
    }
}

/// The I/O side of the admin console: gathers the live state for `SHOW` into an ``AdminSnapshot`` (the pure
/// ``AdminReports`` make the tables) and carries out the commands that change something (pause, resume, disable,
/// enable, kill a client, reload, shutdown).
final class AdminConsoleRunner: Sendable {
    private struct State {
        var pausedAll = false
        var pausedDatabases: Set<String> = []
        var disabled: Set<String> = []
        var window: AdminStatsWindow
        var hooks: AdminConsoleHooks?
    }

    private let state: Mutex<State>
    /// How often a `PAUSE` checks whether the server connections it waits for were released.
    static let pausePoll = TimeAmount.milliseconds(20)

    init() {
        self.state = Mutex(State(window: AdminStatsWindow(start: AdminClock.microsecondsSinceEpoch())))
    }

    func setHooks(_ hooks: AdminConsoleHooks) {
        self.state.withLock { $0.hooks = hooks }
    }

    /// Whether new pools of `database` start paused.
    func isPaused(_ database: String) -> Bool {
        self.state.withLock { $0.pausedAll || $0.pausedDatabases.contains(database) }
    }

    func isDisabled(_ database: String) -> Bool {
        self.state.withLock { $0.disabled.contains(database) }
    }

    /// Answers one console query; `reply` runs on `eventLoop`, at once or (`PAUSE`) once the pools are quiet.
    func answer(
        _ query: String,
        access: AdminAccess,
        context: ProxyContext,
        eventLoop: any EventLoop,
        reply: @escaping @Sendable (AdminReply) -> Void
    ) {
        switch AdminDecision.decide(query, access: access) {
        case .reply(let answer):
            reply(answer)
        case .show(let show):
            let snapshot = self.snapshot(context)
            let averages = self.state.withLock { $0.window.averages(for: snapshot) }
            reply(AdminReports.table(show, snapshot, averages: averages))
        case .run(let command):
            context.logger.info("admin console command", metadata: ["command": "\(query)"])
            self.run(command, context: context, eventLoop: eventLoop, reply: reply)
        }
    }

    // MARK: Commands

    func run(
        _ command: AdminCommand,
        context: ProxyContext,
        eventLoop: any EventLoop,
        reply: @escaping @Sendable (AdminReply) -> Void
    ) {
        switch command {
        case .pause(let database):
            if let database, database == AdminConsoleName.database {
                return reply(.error(AdminError(message: "cannot pause admin db: \(database)")))
            }
            let refused = self.state.withLock { state -> AdminError? in
                if state.pausedAll { return AdminError(message: "already suspended/paused") }
                if let database { state.pausedDatabases.insert(database) } else { state.pausedAll = true }
                return nil
            }
            if let refused { return reply(.error(refused)) }
            let pools = context.pools.filter { database == nil || $0.key.database == database }
            for pool in pools { pool.setPaused(true) }
            Self.waitUntilReleased(pools, eventLoop: eventLoop) { reply(.done(tag: "PAUSE")) }
        case .resume(let database):
            let resumed = self.state.withLock { state -> Result<[String]?, AdminError> in
                guard let database else {
                    guard state.pausedAll else {
                        return .failure(AdminError(message: "pooler is not paused/suspended"))
                    }
                    state.pausedAll = false
                    return .success(nil)
                }
                guard state.pausedDatabases.remove(database) != nil else {
                    return .failure(AdminError(message: "database \(database) is not paused"))
                }
                return .success(state.pausedAll ? [] : [database])
            }
            switch resumed {
            case .failure(let error):
                reply(.error(error))
            case .success(let databases):
                let stillPaused = self.state.withLock { $0.pausedDatabases }
                for pool in context.pools {
                    let resume = databases.map { $0.contains(pool.key.database) } ?? true
                    if resume && !stillPaused.contains(pool.key.database) { pool.setPaused(false) }
                }
                reply(.done(tag: "RESUME"))
            }
        case .disable(let database?):
            guard database != AdminConsoleName.database else {
                return reply(.error(AdminError(message: "cannot disable admin db: \(database)")))
            }
            self.state.withLock { _ = $0.disabled.insert(database) }
            reply(.done(tag: "DISABLE"))
        case .enable(let database?):
            guard database != AdminConsoleName.database else {
                return reply(.error(AdminError(message: "cannot disable admin db: \(database)")))
            }
            self.state.withLock { _ = $0.disabled.remove(database) }
            reply(.done(tag: "ENABLE"))
        case .reconnect(let database):
            // New server connections for every client from now on; those in use close when they come back.
            for pool in context.pools where database == nil || pool.key.database == database { pool.pool.reconnect() }
            reply(.done(tag: "RECONNECT"))
        case .kill(let database):
            self.kill(database, context: context, eventLoop: eventLoop, reply: reply)
        case .waitClose(let database):
            if database == AdminConsoleName.database {
                return reply(.error(AdminError(message: "cannot wait in admin db: \(AdminConsoleName.database)")))
            }
            if let database, !Self.knows(database, context: context) {
                return reply(.error(AdminError(message: "no such database: \(database)")))
            }
            let pools = context.pools.filter { database == nil || $0.key.database == database }
            Self.waitUntilClosed(pools, eventLoop: eventLoop) { reply(.done(tag: "WAIT_CLOSE")) }
        case .killClient(let argument):
            guard let id = Int(argument), context.clients.kill(id) else {
                return reply(.error(AdminError(message: "client not found")))
            }
            reply(.done(tag: "KILL_CLIENT"))
        case .reload:
            guard let hooks = self.state.withLock({ $0.hooks }) else {
                return reply(.error(.notImplemented("RELOAD without the lifeguard executable")))
            }
            if hooks.reload() {
                reply(.done(tag: "RELOAD"))
            } else {
                reply(.error(AdminError(sqlState: "F0000", message: "RELOAD failed, see logs for additional details")))
            }
        case .shutdown(let mode):
            guard let hooks = self.state.withLock({ $0.hooks }) else {
                return reply(.error(.notImplemented("SHUTDOWN without the lifeguard executable")))
            }
            reply(.done(tag: "SHUTDOWN"))
            hooks.shutdown(mode)
        default:
            // Decided in AdminDecision: never asked to run.
            reply(.error(.notImplemented("this command")))
        }
    }

    /// `KILL [db]`, as PgBouncer: the database (every database Lifeguard knows of without `db`) is paused, its
    /// clients are closed with FATAL 57P01 and its server connections with them: idle ones at once, the others as
    /// their clients go. Answers once the clients are gone (or after ``killWait``: a client that reads nothing
    /// cannot be told).
    private func kill(
        _ database: String?,
        context: ProxyContext,
        eventLoop: any EventLoop,
        reply: @escaping @Sendable (AdminReply) -> Void
    ) {
        if database == AdminConsoleName.database {
            return reply(.error(AdminError(message: "cannot kill admin db: \(AdminConsoleName.database)")))
        }
        if let database, !Self.knows(database, context: context) {
            return reply(.error(AdminError(message: "no such database: \(database)")))
        }
        let pools = context.pools.filter { database == nil || $0.key.database == database }
        let databases = database.map { [$0] } ?? Self.knownDatabases(context)
        let refused = self.state.withLock { state -> AdminError? in
            if state.pausedAll { return AdminError(message: "already suspended/paused") }
            state.pausedDatabases.formUnion(databases)
            return nil
        }
        if let refused { return reply(.error(refused)) }
        for pool in pools {
            pool.setPaused(true)
            // Every connection open now closes: idle ones at once, leased ones when their killed client lets go.
            pool.pool.reconnect()
        }
        let message = "admin forced disconnect: KILL" + (database.map { " \($0)" } ?? "")
        let killed = context.clients.kill(databases: database.map { [$0] }, message: message)
        Self.waitUntilGone(killed, clients: context.clients, until: .now() + Self.killWait, eventLoop: eventLoop) {
            reply(.done(tag: "KILL"))
        }
    }

    private static func waitUntilGone(
        _ ids: [Int],
        clients: ClientRegistry,
        until deadline: NIODeadline,
        eventLoop: any EventLoop,
        done: @escaping @Sendable () -> Void
    ) {
        guard clients.anyConnected(ids), NIODeadline.now() < deadline else {
            done()
            return
        }
        eventLoop.scheduleTask(in: Self.pausePoll) {
            Self.waitUntilGone(ids, clients: clients, until: deadline, eventLoop: eventLoop, done: done)
        }
    }

    /// How long `KILL` waits for the clients it closed to be gone before it answers.
    static let killWait = TimeAmount.seconds(2)

    /// Whether `database` names a database: a pool's, a `[databases]` entry's, or any name when an upstream passes
    /// names through (PgBouncer's auto-database).
    private static func knows(_ database: String, context: ProxyContext) -> Bool {
        let configuration = context.configuration
        return configuration.upstream != nil || configuration.database(named: database) != nil
            || context.pools.contains { $0.key.database == database }
    }

    /// The databases of every pool and `[databases]` entry.
    private static func knownDatabases(_ context: ProxyContext) -> Set<String> {
        Set(context.pools.map(\.key.database)).union(context.configuration.databases.map(\.name))
    }

    /// Calls `done` on `eventLoop` once no server connection of `pools` is left that a `RECONNECT` (or a reload that
    /// moved its pool) marked for closing.
    private static func waitUntilClosed(
        _ pools: [ProxyPool],
        eventLoop: any EventLoop,
        done: @escaping @Sendable () -> Void
    ) {
        guard pools.contains(where: { $0.pool.inspect().0.closeNeededCount > 0 }) else {
            done()
            return
        }
        eventLoop.scheduleTask(in: Self.pausePoll) {
            Self.waitUntilClosed(pools, eventLoop: eventLoop, done: done)
        }
    }

    /// Calls `done` on `eventLoop` once no server connection of `pools` is handed out or being opened.
    private static func waitUntilReleased(
        _ pools: [ProxyPool],
        eventLoop: any EventLoop,
        done: @escaping @Sendable () -> Void
    ) {
        let busy = pools.contains { pool in
            let stats = pool.pool.stats
            return stats.checkedOut > 0 || stats.connecting > 0
        }
        guard busy else {
            done()
            return
        }
        eventLoop.scheduleTask(in: Self.pausePoll) {
            Self.waitUntilReleased(pools, eventLoop: eventLoop, done: done)
        }
    }

    // MARK: The snapshot

    /// The live state at one moment: pools (their inspection and metric counters), clients, servers, databases,
    /// settings.
    func snapshot(_ context: ProxyContext) -> AdminSnapshot {
        let now = AdminClock.microsecondsSinceEpoch()
        let monotonicNow = ContinuousClock.now
        func wallTime(_ instant: ContinuousClock.Instant) -> Int64 {
            let age = instant.duration(to: monotonicNow)
            return now - Self.microseconds(age)
        }
        let configuration = context.configuration
        let (pausedAll, pausedDatabases, disabled) = self.state.withLock {
            ($0.pausedAll, $0.pausedDatabases, $0.disabled)
        }
        var snapshot = AdminSnapshot(now: now, version: Self.version)
        snapshot.pausedAll = pausedAll
        snapshot.listenPort = configuration.listen.port

        // Clients first: servers name the client that holds them.
        var holders: [ObjectIdentifier: String] = [:]
        for (id, status, server) in context.clients.loggedIn() {
            guard let login = status.login.withLock({ $0 }), let activity = status.activity else { continue }
            let pointer = Self.pointer(status)
            if let server { holders[ObjectIdentifier(server)] = pointer }
            var socket = AdminSnapshot.Socket(
                state: Self.state(activity),
                user: login.user,
                database: login.pool.database,
                pool: login.pool,
                address: Self.host(status.remote),
                port: status.remote?.port ?? 0,
                localAddress: Self.host(status.local),
                localPort: status.local?.port ?? 0,
                connectTime: status.connectedAt,
                requestTime: status.connectedAt,
                pointer: pointer,
                link: server.map(Self.pointer),
                id: id
            )
            socket.applicationName = login.applicationName
            socket.tls = login.tls ? "TLS" : ""
            snapshot.clients.append(socket)
        }

        for pool in context.pools.sorted(by: { ($0.key.database, $0.key.user) < ($1.key.database, $1.key.user) }) {
            let (inspection, connections) = pool.pool.inspect()
            let metrics = pool.metrics.snapshot()
            var counters = AdminCounters()
            counters.serverAssignments = UInt64(metrics.checkouts)
            counters.transactions = UInt64(metrics.transactions)
            counters.queries = UInt64(metrics.queries)
            counters.transactionTime = UInt64(Self.microseconds(metrics.use.sum))
            counters.waitTime = UInt64(Self.microseconds(metrics.wait.sum))
            let route = pool.route
            snapshot.pools.append(
                AdminSnapshot.Pool(
                    database: pool.key.database,
                    user: pool.key.user,
                    mode: route.mode,
                    paused: pool.gate.isPaused,
                    inspection: inspection,
                    counters: counters,
                    poolSize: route.configuration.poolSize,
                    maxOverflow: route.configuration.maxOverflow,
                    maxWait: inspection.oldestWaiterSince.map {
                        UInt64(Self.microseconds($0.duration(to: monotonicNow)))
                    }
                        ?? 0,
                    waitP50: metrics.wait.quantile(0.5).map { UInt64(Self.microseconds($0)) },
                    waitP99: metrics.wait.quantile(0.99).map { UInt64(Self.microseconds($0)) },
                    connectionErrors: metrics.connectionErrors
                )
            )
            for connection in inspection.connections {
                let server = connections[connection.id]
                var socket = AdminSnapshot.Socket(
                    state: Self.state(connection.state),
                    user: route.serverUser,
                    database: pool.key.database,
                    pool: pool.key,
                    address: Self.host(server?.channel.remoteAddress),
                    port: server?.channel.remoteAddress?.port ?? 0,
                    localAddress: Self.host(server?.channel.localAddress),
                    localPort: server?.channel.localAddress?.port ?? 0,
                    connectTime: wallTime(connection.openedAt),
                    requestTime: wallTime(connection.since ?? connection.openedAt),
                    pointer: server.map(Self.pointer) ?? "",
                    link: server.flatMap { holders[ObjectIdentifier($0)] },
                    id: connection.id.rawValue
                )
                socket.remotePID = server?.backendKey?.processID ?? 0
                socket.closeNeeded = connection.closeNeeded
                snapshot.servers.append(socket)
            }
        }

        snapshot.databases = Self.databases(configuration, pools: context.pools).map { database in
            var database = database
            database.paused = pausedDatabases.contains(database.name)
            database.disabled = disabled.contains(database.name)
            return database
        }
        snapshot.config = Self.settings(configuration)
        snapshot.userNames = context.userNames
        return snapshot
    }

    /// `SHOW VERSION`: PgBouncer's wording (tools read the version from it), then Lifeguard's own.
    static let version = "PgBouncer 1.25.2 (Lifeguard \(lifeguardVersion))"

    /// The ParameterStatus `server_version` console clients are greeted with, as PgBouncer's.
    static let serverVersion = "1.25.2/bouncer"

    private static func databases(
        _ configuration: LifeguardConfiguration,
        pools: [ProxyPool]
    ) -> [AdminSnapshot.Database] {
        var rows: [String: AdminSnapshot.Database] = [:]
        func row(name: String, route: ProxyRoute, configuredMode: PoolMode?) -> AdminSnapshot.Database {
            var database = AdminSnapshot.Database(
                name: name,
                host: route.upstream.host,
                port: route.upstream.port ?? 5432,
                database: route.serverDatabase,
                forceUser: LifeguardConfiguration.pinned(route.upstream, "user"),
                poolSize: route.configuration.poolSize,
                minPoolSize: route.configuration.minSize,
                reservePoolSize: route.configuration.maxOverflow,
                serverLifetime: route.configuration.poolRecycle.map { Int($0.components.seconds) } ?? 0,
                poolMode: configuredMode,
                paused: false,
                disabled: false
            )
            database.maxConnections = route.maxDBConnections
            return database
        }
        for entry in configuration.databases {
            let user = LifeguardConfiguration.pinned(entry.dsn, "user") ?? AdminConsoleName.user
            if case .success(let route) = configuration.route(database: entry.name, user: user) {
                rows[entry.name] = row(name: entry.name, route: route, configuredMode: entry.poolMode)
            }
        }
        for pool in pools where rows[pool.key.database] == nil {
            rows[pool.key.database] = row(name: pool.key.database, route: pool.route, configuredMode: nil)
        }
        return rows.values.sorted { $0.name < $1.name }
    }

    /// `SHOW CONFIG`: every setting, its value and default as `check-config` shows them (passwords masked).
    private static func settings(_ configuration: LifeguardConfiguration) -> [AdminSnapshot.Setting] {
        Setting.allCases.map { setting in
            AdminSnapshot.Setting(
                key: setting.key,
                value: configuration.shownValue(of: setting) ?? "",
                defaultValue: LifeguardConfiguration.defaults.shownValue(of: setting) ?? "",
                changeable: setting != .listen && setting != .metricsListen
            )
        }
    }

    private static func state(_ activity: ClientConnectionState) -> String {
        switch activity {
        case .active: "active"
        case .waiting: "waiting"
        case .idle: "idle"
        }
    }

    private static func state(_ state: PoolInspection.Connection.State) -> String {
        switch state {
        case .connecting: "new"
        case .idle: "idle"
        case .pinging: "tested"
        case .leased: "active"
        }
    }

    private static func host(_ address: SocketAddress?) -> String {
        guard let address else { return "" }
        if case .unixDomainSocket = address { return "unix" }
        return address.ipAddress ?? ""
    }

    /// PgBouncer prints its socket pointers; Lifeguard an object's identity, the same for a client and its link.
    private static func pointer(_ object: AnyObject) -> String {
        "0x" + String(UInt(bitPattern: ObjectIdentifier(object).hashValue), radix: 16)
    }

    static func microseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }
}
