import ArgumentParser
import Dispatch
import Exporter
import LifeguardConfig
import LifeguardMetrics
import Logging
import PoolCore
import Proxy
import ServiceLifecycle
import Synchronization
import UnixSignals
import Upstream

/// `lifeguard run`: the metrics server, the upstream probe, configuration reloads and the proxy, shut down in order on
/// SIGTERM/SIGINT: the proxy drains first, the exporter answers until last.
struct LifeguardServer {
    let configuration: LifeguardConfiguration

    func run() async throws {
        let logger = Self.makeLogger(level: self.configuration.logLevel)
        let metrics = LifeguardMetrics(version: lifeguardVersion)
        let state = ServerState(configuration: self.configuration, metrics: metrics)

        for upstream in self.configuration.upstreams {
            logger.info("upstream", metadata: ["name": "\(upstream.name)", "dsn": "\(upstream.conninfo.redacted)"])
        }
        // One probe before anything answers, so that the first scrape and /readyz already know the upstream.
        await UpstreamProbe(state: state, logger: logger).probeAll()

        let proxy: ProxyServer
        do {
            proxy = try ProxyServer(
                configuration: self.configuration,
                metrics: metrics,
                logger: logger,
                makeObserver: { _, poolMetrics in PoolMetricsObserver(metrics: poolMetrics, logger: logger) }
            )
            state.attach(proxy)
            let port = try await proxy.start()
            logger.info(
                "accepting PostgreSQL clients",
                metadata: [
                    "address": "\(self.configuration.listen.host):\(port)",
                    "pool_mode": "\(self.configuration.poolMode.rawValue)",
                ]
            )
        } catch {
            logger.critical("cannot listen on \(self.configuration.listen): \(error)")
            throw ExitCode(1)
        }

        let exporter = MetricsServer(
            host: self.configuration.metricsListen.host,
            port: self.configuration.metricsListen.port,
            metrics: metrics,
            readiness: { state.readiness }
        )
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    // First, so that it stops last; started by the group, after SIGTERM/SIGINT are trapped, so that a
                    // signal sent once /healthz answers is always a graceful shutdown.
                    .init(service: ExporterService(exporter: exporter, logger: logger)),
                    .init(service: UpstreamProbe(state: state, logger: logger)),
                    .init(service: ConfigurationReloader(state: state, logger: logger)),
                    // Last, so that it is the first to shut down.
                    .init(service: ProxyService(proxy: proxy, state: state, logger: logger)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await group.run()
        } catch let error as MetricsServerError {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
        logger.info("stopped")
    }

    static func makeLogger(level: LogLevel) -> Logger {
        var logger = Logger(label: "lifeguard") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = Logger.Level(rawValue: level.rawValue) ?? .info
        return logger
    }
}

/// What `run` shares between its services: the configuration in force and the upstreams' last probe results.
final class ServerState: Sendable {
    let metrics: LifeguardMetrics
    private let state: Mutex<State>

    private struct State {
        var configuration: LifeguardConfiguration
        /// The pools the configuration pins completely, registered before any client arrives.
        var pinnedPools: Set<PoolKey> = []
        var proxy: ProxyServer?
        /// The last probe result per upstream name; absent until probed.
        var probes: [String: PingResult] = [:]
    }

    init(configuration: LifeguardConfiguration, metrics: LifeguardMetrics) {
        self.metrics = metrics
        self.state = Mutex(State(configuration: configuration))
        self.apply(configuration)
        metrics.setConfigReloadSuccessful(true)
    }

    var configuration: LifeguardConfiguration { self.state.withLock { $0.configuration } }

    func attach(_ proxy: ProxyServer) {
        self.state.withLock { $0.proxy = proxy }
    }

    /// A reload: the proxy first (it may refuse, for example an unreadable auth_file), then the metrics and probes.
    func reload(_ configuration: LifeguardConfiguration) throws {
        let proxy = self.state.withLock { $0.proxy }
        try proxy?.apply(configuration)
        self.apply(configuration)
    }

    /// Ready when every upstream answered its last probe. The reason names the upstream and what libpq saw, never
    /// a password: it is served over HTTP.
    var readiness: Readiness {
        self.state.withLock { state in
            let upstreams = state.configuration.upstreams
            var problems: [String] = []
            for upstream in upstreams {
                switch state.probes[upstream.name] {
                case nil: problems.append("upstream \(upstream.name): not probed yet")
                case .ok?: break
                case let result?: problems.append("upstream \(upstream.name): \(result)")
                }
            }
            return problems.isEmpty ? .ready : .notReady(reason: problems.joined(separator: "; "))
        }
    }

    /// Records a probe result; returns the previous one.
    @discardableResult
    func recordProbe(_ name: String, _ result: PingResult) -> PingResult? {
        let previous = self.state.withLock { state in
            let previous = state.probes[name]
            state.probes[name] = result
            return previous
        }
        self.metrics.setUpstreamUp(name, result.isUp)
        return previous
    }

    /// Puts a configuration in force: registers the series of new pools at 0, updates the configured sizes, and
    /// drops the series of pools and upstreams that are gone.
    func apply(_ configuration: LifeguardConfiguration) {
        let routes = configuration.pinnedRoutes
        let pinned = Set(routes.map(\.key))
        let (old, oldUpstreams, proxy) = self.state.withLock { state in
            let old = state.pinnedPools
            let oldUpstreams = state.configuration.upstreams.map(\.name)
            state.configuration = configuration
            state.pinnedPools = pinned
            let names = Set(configuration.upstreams.map(\.name))
            state.probes = state.probes.filter { names.contains($0.key) }
            return (old, oldUpstreams, state.proxy)
        }
        for route in routes {
            let series = self.metrics.pool(database: route.key.database, user: route.key.user)
            series.setConfigured(poolSize: route.configuration.poolSize, maxOverflow: route.configuration.maxOverflow)
        }
        // Pools a client created stay while the proxy serves them.
        let live = proxy?.poolKeys ?? []
        for key in old where !pinned.contains(key) && !live.contains(key) {
            self.metrics.removePool(database: key.database, user: key.user)
        }
        let names = Set(configuration.upstreams.map(\.name))
        for name in oldUpstreams where !names.contains(name) { self.metrics.removeUpstream(name) }
        self.metrics.setClientMaxConnections(configuration.maxClientConn)
    }
}

/// Pings every upstream with libpq's `PQpingParams` about once a second, for `/readyz` and
/// `lifeguard_upstream_up`.
struct UpstreamProbe: Service {
    let state: ServerState
    let logger: Logger
    var interval: Duration = .seconds(1)

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: self.interval)
            await self.probeAll()
        }
    }

    /// Probes every upstream once; logs the ones whose state changed.
    func probeAll() async {
        for upstream in self.state.configuration.upstreams {
            let result = await Self.ping(upstream.conninfo)
            if let previous = self.state.recordProbe(upstream.name, result), previous == result { continue }
            let level: Logger.Level = result.isUp ? .info : .warning
            self.logger.log(level: level, "upstream \(upstream.name): \(result)")
        }
    }

    /// The ping blocks for up to its connect timeout, so it runs on a Dispatch thread rather than tying up one of
    /// Swift concurrency's few cooperative threads.
    static func ping(_ conninfo: ConnInfo) async -> PingResult {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: conninfo.ping(connectTimeout: .seconds(2))) }
        }
    }
}

/// SIGHUP: reload the configuration from the same sources. A bad one keeps the configuration in force and sets
/// `lifeguard_config_last_reload_successful` to 0.
struct ConfigurationReloader: Service {
    let state: ServerState
    let logger: Logger

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        for await _ in hangups.cancelOnGracefulShutdown() {
            let current = self.state.configuration
            let next: LifeguardConfiguration
            do {
                next = try current.reloaded()
            } catch {
                for line in error.lines { self.logger.error("reload failed: \(line)") }
                self.failed()
                continue
            }
            if next.listen != current.listen || next.metricsListen != current.metricsListen {
                self.logger.warning("listen and metrics_listen changes take effect after a restart")
            }
            do {
                try self.state.reload(next)
            } catch {
                self.logger.error("reload failed: \(error)")
                self.failed()
                continue
            }
            self.state.metrics.setConfigReloadSuccessful(true)
            // As at start: a setting the file names but Lifeguard does without (a pgbouncer.ini's logfile).
            for warning in next.provenance.warnings { self.logger.warning("\(warning)") }
            self.logger.info("configuration reloaded")
        }
    }

    private func failed() {
        self.logger.error("reload failed: keeping the configuration in force")
        self.state.metrics.setConfigReloadSuccessful(false)
    }
}

/// The proxy as a service: serves, with its pools' background work running in this service's task group, until
/// graceful shutdown; then drains clients for up to `drain_timeout` and closes the pools, which ends that work.
/// (The proxy binds before the group starts, so that a port in use fails start-up before /healthz answers.)
struct ProxyService: Service {
    let proxy: ProxyServer
    let state: ServerState
    let logger: Logger

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.proxy.run() }
            try? await gracefulShutdown()
            let drainTimeout = self.state.configuration.drainTimeout
            self.logger.info(
                "draining clients",
                metadata: ["clients": "\(self.proxy.clientCount)", "drain_timeout": "\(drainTimeout)"]
            )
            await self.proxy.shutdown(drainTimeout: drainTimeout)
        }
        self.logger.info("proxy stopped")
    }
}

/// Serves /metrics, /healthz and /readyz from the moment the group starts until it has shut everything else down.
struct ExporterService: Service {
    let exporter: MetricsServer
    let logger: Logger

    func run() async throws {
        let port = try self.exporter.start()
        self.logger.info(
            "serving /metrics, /healthz and /readyz",
            metadata: ["address": "\(self.exporter.host):\(port)"]
        )
        // The group signals shutdown to the services in reverse order: this one, the first, last.
        try? await gracefulShutdown()
        self.exporter.stop()
    }
}
