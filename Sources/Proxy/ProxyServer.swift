import AdminConsole
import ConnectionPool
import Foundation
import LifeguardConfig
import LifeguardMetrics
import Logging
import NIOCore
import NIOPosix
import PGWire
import PoolCore
import Synchronization
import Upstream

/// The PostgreSQL-protocol front door: accepts clients on `listen`, authenticates them, routes them to the pool of
/// their (database, user) and relays by pool mode.
///
/// Lifecycle: ``start()`` binds; ``run()`` runs the pools' background work (connects, pings, timers) and must run
/// while the proxy serves; ``apply(_:)`` puts a reloaded configuration in force without dropping clients;
/// ``shutdown(mode:drainTimeout:)`` stops accepting, closes idle clients, lets transactions finish, then closes the rest
/// and the pools, after which ``run()`` returns.
public final class ProxyServer: Sendable {
    let context: ProxyContext
    private let serverChannel = Mutex<(any Channel)?>(nil)
    private let shutdownRequest = Mutex<ShutdownMode?>(nil)
    /// The Unix-socket listener and its path, removed at shutdown.
    private let unixChannel = Mutex<(channel: any Channel, path: String)?>(nil)
    private let ownsGroup: Bool

    /// - Parameters:
    ///   - makeObserver: the observer of each pool's events (the metrics glue); called once per pool.
    ///   - eventLoopGroup: defaults to a new group with one thread per core, shut down with the proxy.
    /// - Throws: ``ProxyConfigurationError`` when the auth_file cannot be read.
    public init(
        configuration: LifeguardConfiguration,
        metrics: LifeguardMetrics,
        logger: Logger,
        makeObserver: @escaping @Sendable (PoolKey, PoolMetrics) -> any PoolObserver = { _, _ in NoOpPoolObserver() },
        eventLoopGroup: (any EventLoopGroup)? = nil
    ) throws {
        let userList = try Self.loadUserList(configuration)
        let clientTLS = try Self.loadClientTLS(configuration)
        self.ownsGroup = eventLoopGroup == nil
        let group = eventLoopGroup ?? MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        self.context = ProxyContext(
            configuration: configuration,
            userList: userList,
            clientTLS: clientTLS,
            metrics: metrics,
            logger: logger,
            group: group,
            makeObserver: makeObserver
        )
        for route in configuration.pinnedRoutes {
            _ = self.context.pool(for: route)
        }
    }

    /// Unsent bytes per connection, either way, above which Lifeguard stops reading from the other side (`high`) and
    /// below which it reads again (`low`).
    static let writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 32 * 1024, high: 64 * 1024)

    /// Binds `listen` (and the Unix socket of `unix_socket_dir`) and starts accepting. Returns the bound port (useful
    /// with port 0).
    @discardableResult
    public func start() async throws -> Int {
        let configuration = self.context.configuration
        let listen = configuration.listen
        let channel = try await self.bootstrap(tcp: true)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: listen.host, port: listen.port)
            .get()
        self.serverChannel.withLock { $0 = channel }
        let port = channel.localAddress?.port ?? listen.port
        if let directory = configuration.unixSocketDir {
            let path = "\(directory)/.s.PGSQL.\(port)"
            // As PostgreSQL and PgBouncer: no TLS on the Unix socket (it never leaves the host).
            let unix = try await self.bootstrap(tcp: false)
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
                .get()
            self.unixChannel.withLock { $0 = (unix, path) }
            try Self.setOwnership(path, mode: configuration.unixSocketMode, group: configuration.unixSocketGroup)
        }
        return port
    }

    /// The socket file gets its mode and group as PgBouncer's `unix_socket_mode` and `unix_socket_group`.
    private static func setOwnership(_ path: String, mode: Int, group: String?) throws {
        guard chmod(path, mode_t(mode)) == 0 else {
            throw ProxyConfigurationError(
                message: "unix_socket_mode: chmod \(path): \(String(cString: strerror(errno)))"
            )
        }
        guard let group else { return }
        guard let entry = getgrnam(group) else {
            throw ProxyConfigurationError(message: "unix_socket_group: no such group: \(group)")
        }
        guard chown(path, uid_t.max, entry.pointee.gr_gid) == 0 else {
            throw ProxyConfigurationError(
                message: "unix_socket_group: chown \(path): \(String(cString: strerror(errno)))"
            )
        }
    }

    /// What both listeners share: backpressure, buffers, the client handler. `tcp`: the TCP listener (TLS and
    /// TCP_NODELAY); the Unix socket has neither.
    private func bootstrap(tcp: Bool) -> ServerBootstrap {
        let context = self.context
        let recvAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536)
        return ServerBootstrap(group: context.group)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.initializeClient(channel, context: context, tcp: tcp, recvAllocator: recvAllocator)
                }
            }
    }

    /// Sets up an accepted client connection: its socket options, its place in the registry, its handler.
    ///
    /// The channel may still be closed without ever becoming active (the listener closing between the accept and the
    /// activation, as at shutdown); its handler then leaves the registry from `handlerRemoved`, since no
    /// `channelInactive` comes.
    static func initializeClient(
        _ channel: any Channel,
        context: ProxyContext,
        tcp: Bool,
        recvAllocator: AdaptiveRecvByteBufferAllocator
    ) throws {
        // Set here, synchronously, rather than as the bootstrap's child options: those are applied one future at a
        // time, about a fifth of the instructions of a short-lived client connection. Before registering, so that a
        // failure leaves nothing registered.
        if let options = channel.syncOptions {
            if tcp { try options.setOption(.socketOption(.tcp_nodelay), value: 1) }
            try options.setOption(.allowRemoteHalfClosure, value: false)
            // Backpressure: past the high-water mark of unsent bytes a client is not writable, and Lifeguard stops
            // reading from its server connection until it drains below the low one.
            try options.setOption(.writeBufferWaterMark, value: ProxyServer.writeBufferWaterMark)
            // Each channel keeps its last receive buffer for the next read, idle or not. Clients send small
            // messages, so start at 256 bytes instead of NIO's 2 KB (the size adapts upwards for COPY or large
            // Binds): ~2 KB less per idle client.
            try options.setOption(.recvAllocator, value: recvAllocator)
        }
        guard let id = context.clients.register(channel) else {
            channel.close(promise: nil)
            return
        }
        let handler = ClientChannelHandler(
            context: context,
            clientID: id,
            allocator: channel.allocator,
            tls: tcp ? context.clientTLS : nil,
            // Only the Unix socket's peers have an identity the kernel vouches for.
            peer: tcp ? nil : PeerCredentials.identity(of: channel)
        )
        do {
            try channel.pipeline.syncOperations.addHandler(handler)
        } catch {
            context.clients.unregister(id, admitted: false, activity: nil)
            throw error
        }
    }

    /// Runs every pool's ``ConnectionPool/run()`` in one task group, pools created later (by a client, a reload)
    /// included. Returns once ``shutdown(mode:drainTimeout:)`` has shut the pools down; cancelled, it stops the pools at
    /// once. In both cases nothing of the pools is left running.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await pool in self.context.createdPools {
                group.addTask { await pool.pool.run() }
            }
        }
    }

    /// Puts a reloaded configuration in force: pool sizes and timeouts, new `[databases]` entries, the auth_file.
    /// Clients stay connected; pools that no longer route keep serving the clients they have.
    public func apply(_ configuration: LifeguardConfiguration) throws {
        let userList = try Self.loadUserList(configuration)
        let clientTLS = try Self.loadClientTLS(configuration)
        self.context.apply(configuration, userList: userList, clientTLS: clientTLS)
        for route in configuration.pinnedRoutes {
            _ = self.context.pool(for: route)
        }
    }

    /// `PAUSE` (SIGUSR1) or `RESUME` (SIGUSR2) of every database, as on the admin console; `done` gets the console's
    /// answer: nil once done (for PAUSE: every server connection released), else the error's message.
    public func pauseAll(_ pause: Bool, done: @escaping @Sendable (String?) -> Void) {
        let eventLoop = self.context.group.next()
        self.context.console.run(
            pause ? .pause(database: nil) : .resume(database: nil),
            context: self.context,
            eventLoop: eventLoop
        ) { reply in
            if case .error(let error) = reply { done(error.message) } else { done(nil) }
        }
    }

    /// What the admin console's `RELOAD` and `SHUTDOWN` do.
    public func setConsoleHooks(_ hooks: AdminConsoleHooks) {
        self.context.console.setHooks(hooks)
    }

    /// The pools that exist now (created at start-up or by a client).
    public var poolKeys: Set<PoolKey> { self.context.poolKeys }

    /// Client connections open now.
    public var clientCount: Int { self.context.clients.count }

    /// How a shutdown treats the clients still connected (PgBouncer's signals and `SHUTDOWN` variants).
    public enum ShutdownMode: Sendable, Equatable {
        /// Idle clients are closed at once, the others when their transaction (or session) ends: SIGINT.
        case waitForServers
        /// Clients may stay until they leave: SIGTERM (`SHUTDOWN WAIT_FOR_CLIENTS`).
        case waitForClients
        /// Everyone is closed now: SIGQUIT, or a second SIGINT/SIGTERM.
        case immediate
    }

    /// Records why the proxy is to shut down; the first request sets the mode, any later one makes a shutdown in
    /// progress immediate. Returns whether this was the first request.
    @discardableResult
    public func requestShutdown(_ mode: ShutdownMode) -> Bool {
        self.shutdownRequest.withLock { request in
            guard request == nil else {
                request = .immediate
                return false
            }
            request = mode
            return true
        }
    }

    /// The mode the first ``requestShutdown(_:)`` asked for, if any.
    public var requestedShutdown: ShutdownMode? { self.shutdownRequest.withLock { $0 } }

    /// Stops accepting, lets clients finish as `mode` says for up to `drainTimeout` (or until a second request makes
    /// it immediate), then closes everything and shuts the pools down.
    public func shutdown(mode: ShutdownMode = .waitForServers, drainTimeout: Duration) async {
        self.shutdownRequest.withLock { if $0 == nil { $0 = mode } }
        let channel = self.serverChannel.withLock { $0 }
        try? await channel?.close()
        if let (unix, path) = self.unixChannel.withLock({ $0 }) {
            try? await unix.close()
            unlink(path)
        }
        switch mode {
        case .waitForServers: self.context.clients.broadcast(.drain)
        case .waitForClients: self.context.clients.stopRegistering()
        case .immediate: break
        }
        let deadline = ContinuousClock.now + drainTimeout
        while self.context.clients.count > 0 && ContinuousClock.now < deadline
            && self.shutdownRequest.withLock({ $0 }) != .immediate
        {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if self.context.clients.count > 0 {
            self.context.clients.broadcast(.terminate)
            let hardDeadline = ContinuousClock.now + .seconds(2)
            while self.context.clients.count > 0 && ContinuousClock.now < hardDeadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for pool in self.context.closePools() {
                group.addTask { await pool.pool.shutdown(drainTimeout: .seconds(1)) }
            }
        }
        if self.ownsGroup {
            try? await self.context.group.shutdownGracefully()
        }
    }

    /// What is wrong with the TLS files of `configuration` (client_tls_* and each upstream's sslrootcert, sslcert,
    /// sslkey): one line per problem, naming the setting; empty when all can be used. For `check-config`.
    public static func tlsProblems(_ configuration: LifeguardConfiguration) -> [String] {
        var problems: [String] = []
        do throws(ClientTLSError) {
            _ = try ClientTLS.load(configuration.clientTLS)
        } catch {
            problems.append(error.description)
        }
        for (name, dsn) in configuration.upstreams {
            do throws(ServerTLSError) {
                _ = try ServerTLS(dsn: dsn)
            } catch {
                let key = name == LifeguardConfiguration.defaultUpstreamName ? "upstream" : "databases.\(name).dsn"
                problems.append("\(key): \(error.description)")
            }
        }
        return problems
    }

    /// Every certificate file the proxy reads (client_tls_cert_file, client_tls_ca_file, each upstream's sslrootcert
    /// and sslcert) with the earliest expiry in it, for `lifeguard_tls_certificate_expiry_timestamp_seconds`.
    public static func certificateExpiries(_ configuration: LifeguardConfiguration) -> [(file: String, notAfter: Date)]
    {
        var found: [(file: String, notAfter: Date)] = []
        if let tls = try? ClientTLS.load(configuration.clientTLS) { found += tls.expiries }
        for (_, dsn) in configuration.upstreams {
            if let tls = try? ServerTLS(dsn: dsn) { found += tls.expiries }
        }
        var earliest: [String: Date] = [:]
        for (file, notAfter) in found { earliest[file] = min(earliest[file] ?? notAfter, notAfter) }
        return earliest.sorted { $0.key < $1.key }.map { (file: $0.key, notAfter: $0.value) }
    }

    /// The TLS context for clients, read from its files; a reload with a broken file keeps the one in force.
    static func loadClientTLS(_ configuration: LifeguardConfiguration) throws -> ClientTLS? {
        do throws(ClientTLSError) {
            return try ClientTLS.load(configuration.clientTLS)
        } catch {
            throw ProxyConfigurationError(message: error.description)
        }
    }

    static func loadUserList(_ configuration: LifeguardConfiguration) throws -> PGUserList {
        guard let path = configuration.authFile else { return PGUserList(secrets: [:]) }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ProxyConfigurationError(message: "auth_file \(path): cannot be read: \(error.localizedDescription)")
        }
        do {
            return try PGUserList(parsing: text)
        } catch {
            throw ProxyConfigurationError(message: "auth_file \(path): \(error.description)")
        }
    }
}

/// A configuration the proxy cannot put in force (an unreadable auth_file). Never contains a password.
public struct ProxyConfigurationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { self.message }
}

/// What every client handler shares: the configuration in force, the pools, the registry of clients.
final class ProxyContext: Sendable {
    let metrics: LifeguardMetrics
    let logger: Logger
    let group: any EventLoopGroup
    let clients: ClientRegistry
    /// `auth_query` answers, kept briefly.
    let authQueries = AuthQueryLookup()
    /// The admin console's state (paused and disabled databases) and commands.
    let console = AdminConsoleRunner()
    /// Every pool, once, as it is created: ``ProxyServer/run()`` runs them. Finished by ``closePools()``.
    let createdPools: AsyncStream<ProxyPool>
    private let createdPoolsInput: AsyncStream<ProxyPool>.Continuation
    private let makeObserver: @Sendable (PoolKey, PoolMetrics) -> any PoolObserver
    private let state: Mutex<State>

    private struct State {
        var configuration: LifeguardConfiguration
        var userList: PGUserList
        var clientTLS: ClientTLS?
        var pools: [PoolKey: ProxyPool] = [:]
        /// `max_db_connections`: one count per database, shared by its pools.
        var budgets: [String: ConnectionBudget] = [:]
    }

    init(
        configuration: LifeguardConfiguration,
        userList: PGUserList,
        clientTLS: ClientTLS?,
        metrics: LifeguardMetrics,
        logger: Logger,
        group: any EventLoopGroup,
        makeObserver: @escaping @Sendable (PoolKey, PoolMetrics) -> any PoolObserver
    ) {
        self.metrics = metrics
        self.logger = logger
        self.group = group
        self.makeObserver = makeObserver
        self.clients = ClientRegistry(metrics: metrics)
        (self.createdPools, self.createdPoolsInput) = AsyncStream.makeStream()
        self.state = Mutex(State(configuration: configuration, userList: userList, clientTLS: clientTLS))
        metrics.setClientMaxConnections(configuration.maxClientConn)
    }

    var configuration: LifeguardConfiguration { self.state.withLock { $0.configuration } }

    /// The TLS context for new client connections (nil: TLS off).
    var clientTLS: ClientTLS? { self.state.withLock { $0.clientTLS } }

    var poolKeys: Set<PoolKey> { self.state.withLock { Set($0.pools.keys) } }

    /// Every pool now.
    var pools: [ProxyPool] { self.state.withLock { Array($0.pools.values) } }

    /// The users the auth_file lists.
    var userNames: [String] { self.state.withLock { $0.userList.secrets.keys.sorted() } }

    /// The pools to shut down. A pool created after this (only by a client that outlived the drain) is never run,
    /// so it opens no connection.
    func closePools() -> [ProxyPool] {
        self.state.withLock { state in
            self.createdPoolsInput.finish()
            return Array(state.pools.values)
        }
    }

    /// The auth_file entry of a client user.
    func secret(for user: String) -> PGAuthSecret? {
        self.state.withLock { $0.userList[user] }
    }

    /// The pool for a client's (database, user), created on first use.
    func pool(database: String, user: String) -> Result<ProxyPool, ProxyRouteError> {
        switch self.configuration.route(database: database, user: user) {
        case .success(let route): .success(self.pool(for: route))
        case .failure(let error): .failure(error)
        }
    }

    func pool(for route: ProxyRoute) -> ProxyPool {
        let (pool, created) = self.state.withLock { state -> (ProxyPool, Bool) in
            if let existing = state.pools[route.key] { return (existing, false) }
            let metrics = self.metrics.pool(database: route.key.database, user: route.key.user)
            let budget = state.budgets[route.key.database] ?? ConnectionBudget(limit: route.maxDBConnections)
            state.budgets[route.key.database] = budget
            let pool = ProxyPool(
                route: route,
                authFileSecret: state.userList[route.serverUser],
                group: self.group,
                metrics: metrics,
                observer: self.makeObserver(route.key, metrics),
                logger: self.logger,
                budget: budget
            )
            state.pools[route.key] = pool
            if self.console.isPaused(route.key.database) { pool.setPaused(true) }
            // Under the lock, so that closePools() returns every pool that run() runs.
            self.createdPoolsInput.yield(pool)
            return (pool, true)
        }
        if created {
            pool.pool.start()
            self.logger.info(
                "pool created",
                metadata: [
                    "pool": "\(route.key)", "upstream": "\(route.upstreamName)", "mode": "\(route.mode.rawValue)",
                ]
            )
        }
        return pool
    }

    /// Drops a pool that a client's (database, user) created and that the server refused for good before it ever
    /// opened a connection, with its metric series, once nobody waits on it: a mistyped database name must not leave
    /// a pool behind. Configured pools stay; the next client of the same name gets a new pool (and its own attempt).
    func dropRefused(_ pool: ProxyPool) {
        guard pool.cachedParameters == nil, !self.configuration.pinnedRoutes.contains(where: { $0.key == pool.key })
        else { return }
        let stats = pool.pool.stats
        guard stats.open == 0, stats.connecting == 0, stats.waiting == 0 else { return }
        let removed = self.state.withLock { state -> Bool in
            guard state.pools[pool.key] === pool else { return false }
            state.pools[pool.key] = nil
            // Under the lock, as pools are created: a new pool of the same name cannot lose its fresh series.
            self.metrics.removePool(database: pool.key.database, user: pool.key.user)
            return true
        }
        guard removed else { return }
        pool.pool.close()
        self.logger.info("pool removed: the server refused its login", metadata: ["pool": "\(pool.key)"])
    }

    func apply(_ configuration: LifeguardConfiguration, userList: PGUserList, clientTLS: ClientTLS?) {
        let (pools, budgets) = self.state.withLock { state in
            state.configuration = configuration
            state.userList = userList
            state.clientTLS = clientTLS
            return (state.pools, state.budgets)
        }
        // The query, its user or its database may have changed.
        self.authQueries.forgetAll()
        self.metrics.setClientMaxConnections(configuration.maxClientConn)
        for (key, pool) in pools {
            // The route that the pool's clients would get now; a pool no longer routed keeps its settings.
            let database = configuration.database(named: key.database) != nil ? key.database : pool.route.serverDatabase
            guard case .success(let route) = configuration.route(database: database, user: pool.route.serverUser),
                route.key == key
            else { continue }
            pool.update(route: route, authFileSecret: userList[route.serverUser])
            budgets[key.database]?.setLimit(route.maxDBConnections)
        }
    }
}
