import ConnectionPool
import LifeguardConfig
import LifeguardMetrics
import Logging
import NIOCore
import PGWire
import PoolCore
import ProxyCore
import Synchronization

/// One (database, user) pool: the live ``ConnectionPool`` of server connections, its mode and its metrics, plus the
/// ParameterStatus set clients are greeted with.
final class ProxyPool: Sendable {
    let key: PoolKey
    let pool: ConnectionPool<ServerConnectionFactory, ContinuousClock>
    let metrics: PoolMetrics
    private let factory: ServerConnectionFactory
    private let settings: Mutex<ProxyRoute>
    private let parameterCache = ParameterCache()
    /// The last client's wanted parameters; clients of one application usually want the same, and share its storage.
    private let lastWanted = Mutex(SessionParameters())
    /// The last greeting's ParameterStatus block, for the next client that gets the same one.
    let greetings = GreetingCache()
    private let learnedSpellings = Mutex(ParameterSpellings())
    private let passThrough = PassThroughCredential()
    /// The admin console's `PAUSE`: new leases wait here until `RESUME`.
    let gate = PauseGate()

    init(
        route: ProxyRoute,
        authFileSecret: PGAuthSecret?,
        group: any EventLoopGroup,
        metrics: PoolMetrics,
        observer: any PoolObserver,
        logger: Logger,
        budget: ConnectionBudget? = nil
    ) {
        self.key = route.key
        self.metrics = metrics
        self.settings = Mutex(route)
        let cache = self.parameterCache
        let factory = ServerConnectionFactory(
            group: group,
            target: SharedTarget(ServerTarget(route: route, authFileSecret: authFileSecret)),
            passThrough: self.passThrough,
            connected: { cache.remember($0) },
            logger: logger
        )
        self.factory = factory
        self.pool = ConnectionPool(
            key: route.key,
            configuration: route.configuration,
            factory: factory,
            observer: observer,
            budget: budget
        )
        metrics.setConfigured(poolSize: route.configuration.poolSize, maxOverflow: route.configuration.maxOverflow)
    }

    var mode: PoolMode { self.settings.withLock { $0.mode } }

    var route: ProxyRoute { self.settings.withLock { $0 } }

    /// The server's startup ParameterStatus set, once any server connection of this pool reported it.
    var cachedParameters: [(name: String, value: String)]? { self.parameterCache.parameters }

    /// How this pool's servers report the values clients asked for, as far as `SET`s have shown.
    var spellings: ParameterSpellings { self.learnedSpellings.withLock { $0 } }

    func learnSpellings(_ changes: [(name: String, value: String)], _ reported: [(name: String, value: String)]) {
        guard !reported.isEmpty else { return }
        self.learnedSpellings.withLock { $0.learn(changes, reported) }
    }

    /// `wanted`, or an equal value whose storage other clients already share (less memory per idle client).
    func shared(_ wanted: SessionParameters) -> SessionParameters {
        self.lastWanted.withLock { last in
            if last == wanted { return last }
            last = wanted
            return wanted
        }
    }

    /// A client of `user` proved the secret `credential` comes from: the next server connections log in with it when
    /// the configuration gives no password for the pool's user, which must be that client's own.
    /// Returns whether it is used.
    @discardableResult
    func usePassThrough(_ credential: PGLoginCredential, user: String) -> Bool {
        guard self.route.serverUser == user else { return false }
        self.passThrough.value = credential
        return true
    }

    /// A reload: new sizes and timeouts now, new connection settings for the next connections.
    func update(route: ProxyRoute, authFileSecret: PGAuthSecret?) {
        let old = self.settings.withLock { settings in
            let old = settings
            settings = route
            return old
        }
        self.factory.target.value = ServerTarget(route: route, authFileSecret: authFileSecret)
        if old.configuration != route.configuration {
            self.pool.reconfigure(route.configuration)
        }
        // Another server (a switchover behind PAUSE, RELOAD, RESUME): no client gets a connection to the old one.
        // A new connect_query too: the open connections did not run it.
        if old.upstream != route.upstream || old.serverDatabase != route.serverDatabase
            || old.serverUser != route.serverUser || old.connectQuery != route.connectQuery
        {
            self.pool.reconnect()
        }
        self.metrics.setConfigured(poolSize: route.configuration.poolSize, maxOverflow: route.configuration.maxOverflow)
    }
}

extension ProxyPool {
    /// Holds (or lets through again) new leases, and says so in `lifeguard_pool_paused`.
    func setPaused(_ paused: Bool) {
        if paused { self.gate.pause() } else { self.gate.resume() }
        self.metrics.setPaused(paused)
    }
}

/// Leases asked for while the pool is paused wait here, in order, and go to the pool on resume. Not paused, a lease
/// passes with one atomic load.
final class PauseGate: Sendable {
    private let paused = Atomic<Bool>(false)
    private let held = Mutex<[@Sendable () -> Void]>([])

    var isPaused: Bool { self.paused.load(ordering: .acquiring) }

    /// Runs `lease` now, or once the pool is resumed.
    func pass(_ lease: @escaping @Sendable () -> Void) {
        guard self.paused.load(ordering: .acquiring) else {
            lease()
            return
        }
        let runNow = self.held.withLock { held -> Bool in
            // Checked again under the lock: a resume in between has already taken the held leases.
            guard self.paused.load(ordering: .acquiring) else { return true }
            held.append(lease)
            return false
        }
        if runNow { lease() }
    }

    func pause() {
        self.held.withLock { _ in self.paused.store(true, ordering: .releasing) }
    }

    func resume() {
        let held = self.held.withLock { held in
            self.paused.store(false, ordering: .releasing)
            defer { held = [] }
            return held
        }
        for lease in held { lease() }
    }
}

/// The first server connection's ParameterStatus set, shared by the pool and its factory.
final class ParameterCache: Sendable {
    private let value = Mutex<[(name: String, value: String)]?>(nil)

    var parameters: [(name: String, value: String)]? { self.value.withLock { $0 } }

    func remember(_ connection: ServerConnection) {
        self.value.withLock { cache in
            if cache == nil { cache = connection.startupParameters }
        }
    }
}
