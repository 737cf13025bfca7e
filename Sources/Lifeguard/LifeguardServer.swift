import ArgumentParser
import Dispatch
import Exporter
import Foundation
import LifeguardConfig
import LifeguardMetrics
import Logging
import PoolCore
import Proxy
import ServiceLifecycle
import Synchronization
import UnixSignals
import Upstream
import WebConfig

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
            readiness: { state.readiness },
            webConfiguration: self.configuration.metricsWebConfig
        )
        state.attach(exporter)
        Self.warnAboutCertificates(self.configuration, logger: logger)
        // Trapped before anything answers, so that a signal sent once /healthz answers is always handled.
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sigquit, .sigusr1, .sigusr2)
        let trigger = ShutdownTrigger()
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    // First, so that they stop last: signals are heard (a second one escalates) and /metrics answers
                    // while the proxy drains.
                    .init(service: SignalHandler(signals: signals, proxy: proxy, trigger: trigger, logger: logger)),
                    .init(service: ExporterService(exporter: exporter, logger: logger)),
                    .init(service: UpstreamProbe(state: state, logger: logger)),
                    .init(service: ConfigurationReloader(state: state, logger: logger)),
                    // Last, so that it is the first to shut down.
                    .init(service: ProxyService(proxy: proxy, state: state, logger: logger)),
                ],
                logger: logger
            )
        )
        trigger.group.withLock { $0 = group }
        proxy.setConsoleHooks(Self.consoleHooks(state: state, proxy: proxy, group: group, logger: logger))
        do {
            try await group.run()
        } catch let error as MetricsServerError {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
        logger.info("stopped")
    }

    /// Certificates of the web configuration that expired or expire within 14 days (the alert's horizon) are logged
    /// at warning: they are served all the same, so that the sidecar keeps running.
    static func warnAboutCertificates(_ configuration: LifeguardConfiguration, logger: Logger, now: Date = Date()) {
        for certificate in configuration.metricsWebConfig?.certificates ?? [] {
            let metadata: Logger.Metadata = [
                "file": "\(certificate.file)", "not_after": "\(certificate.notAfter.ISO8601Format())",
            ]
            if certificate.notAfter <= now {
                logger.warning("metrics_web_config: a certificate has expired", metadata: metadata)
            } else if certificate.notAfter.timeIntervalSince(now) < 14 * 86_400 {
                logger.warning("metrics_web_config: a certificate expires within 14 days", metadata: metadata)
            }
        }
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
        var exporter: MetricsServer?
        /// The certificate files of the web configuration, registered in `lifeguard_tls_certificate_expiry_*`.
        var certificateFiles: Set<String> = []
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

    func attach(_ exporter: MetricsServer) {
        self.state.withLock { $0.exporter = exporter }
    }

    /// A reload: the metrics endpoint's web configuration first (libmicrohttpd may refuse the TLS material; it then
    /// keeps serving the old one), then the proxy (it may refuse, for example an unreadable auth_file; the endpoint
    /// then goes back to the old web configuration), then the metrics and probes.
    func reload(_ configuration: LifeguardConfiguration) throws {
        let (proxy, exporter, current) = self.state.withLock { ($0.proxy, $0.exporter, $0.configuration) }
        try exporter?.update(webConfiguration: configuration.metricsWebConfig)
        do {
            try proxy?.apply(configuration)
        } catch {
            try? exporter?.update(webConfiguration: current.metricsWebConfig)
            throw error
        }
        self.apply(configuration)
    }

    /// Ready when every upstream answered its last probe. The reason names the upstream and what libpq saw, never
    /// a password: it is served over HTTP.
    var readiness: Readiness {
        // A pooler that is shutting down takes no new clients: it is the first thing an orchestrator should know.
        if let mode = self.state.withLock({ $0.proxy })?.requestedShutdown {
            return .notReady(reason: "shutting down (\(mode))")
        }
        return self.state.withLock { state in
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
        // The metrics endpoint's certificates and the proxy's (clients' and each upstream's TLS files).
        let certificates =
            (configuration.metricsWebConfig?.certificates ?? []).map { (file: $0.file, notAfter: $0.notAfter) }
            + ProxyServer.certificateExpiries(configuration)
        let (old, oldUpstreams, proxy, oldCertificateFiles) = self.state.withLock { state in
            let old = state.pinnedPools
            let oldUpstreams = state.configuration.upstreams.map(\.name)
            let oldCertificateFiles = state.certificateFiles
            state.configuration = configuration
            state.pinnedPools = pinned
            state.certificateFiles = Set(certificates.map(\.file))
            let names = Set(configuration.upstreams.map(\.name))
            state.probes = state.probes.filter { names.contains($0.key) }
            return (old, oldUpstreams, state.proxy, oldCertificateFiles)
        }
        for certificate in certificates {
            self.metrics.certificateExpiry.set(file: certificate.file, expiry: certificate.notAfter)
        }
        for file in oldCertificateFiles.subtracting(certificates.map(\.file)) {
            self.metrics.certificateExpiry.remove(file: file)
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
            self.reload(trigger: "SIGHUP")
        }
    }

    /// One reload from the same sources (SIGHUP, or RELOAD on the admin console); false when the new configuration
    /// was refused (the reason is logged).
    @discardableResult
    func reload(trigger: String) -> Bool {
        let current = self.state.configuration
        let next: LifeguardConfiguration
        do {
            next = try current.reloaded()
        } catch {
            for line in error.lines { self.logger.error("reload failed: \(line)") }
            self.failed()
            return false
        }
        if next.listen != current.listen || next.metricsListen != current.metricsListen {
            self.logger.warning("listen and metrics_listen changes take effect after a restart")
        }
        do {
            try self.state.reload(next)
        } catch {
            self.logger.error("reload failed: \(error)")
            self.failed()
            return false
        }
        self.state.metrics.setConfigReloadSuccessful(true)
        LifeguardServer.warnAboutCertificates(next, logger: self.logger)
        // As at start: a setting the file names but Lifeguard does without (a pgbouncer.ini's logfile).
        for warning in next.provenance.warnings { self.logger.warning("\(warning)") }
        self.logger.info("configuration reloaded", metadata: ["trigger": "\(trigger)"])
        return true
    }

    private func failed() {
        self.logger.error("reload failed: keeping the configuration in force")
        self.state.metrics.setConfigReloadSuccessful(false)
    }
}

/// The group, for the signal handler that starts its graceful shutdown (it is made after its services).
final class ShutdownTrigger: Sendable {
    let group = Mutex<ServiceGroup?>(nil)
}

/// PgBouncer's signals (1.23 and later): SIGUSR1 pauses and SIGUSR2 resumes every database; SIGINT waits for server connections to be released (idle clients
/// are closed at once, the others when their transaction ends), SIGTERM waits for clients to leave, both for up to
/// `drain_timeout`; SIGQUIT, or a second SIGINT or SIGTERM, closes everything at once. `/metrics` answers until the
/// process exits.
struct SignalHandler: Service {
    let signals: UnixSignalsSequence
    let proxy: ProxyServer
    let trigger: ShutdownTrigger
    let logger: Logger

    func run() async throws {
        for await signal in self.signals.cancelOnGracefulShutdown() {
            if signal == .sigusr1 || signal == .sigusr2 {
                // PAUSE and RESUME of every database, as on the admin console.
                let pause = signal == .sigusr1
                let logger = self.logger
                self.logger.info("\(signal): \(pause ? "PAUSE" : "RESUME")")
                self.proxy.pauseAll(pause) { problem in
                    if let problem {
                        logger.warning("\(signal): \(problem)")
                    } else {
                        logger.info(pause ? "paused: every server connection released" : "resumed")
                    }
                }
                continue
            }
            let mode: ProxyServer.ShutdownMode =
                switch signal {
                case .sigterm: .waitForClients
                case .sigint: .waitForServers
                default: .immediate
                }
            guard self.proxy.requestShutdown(mode) else {
                self.logger.notice("\(signal) during shutdown: closing every connection now")
                continue
            }
            self.logger.info("\(signal): shutting down", metadata: ["mode": "\(mode)"])
            await self.trigger.group.withLock { $0 }?.triggerGracefulShutdown()
        }
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
            let mode = self.proxy.requestedShutdown ?? .waitForServers
            self.logger.info(
                "draining clients",
                metadata: [
                    "clients": "\(self.proxy.clientCount)", "drain_timeout": "\(drainTimeout)", "mode": "\(mode)",
                ]
            )
            await self.proxy.shutdown(mode: mode, drainTimeout: drainTimeout)
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
            metadata: [
                "address": "\(self.exporter.host):\(port)",
                "security": "\(self.exporter.webConfiguration?.summary ?? "plain HTTP, no authentication")",
            ]
        )
        // The group signals shutdown to the services in reverse order: this one, the first, last.
        try? await gracefulShutdown()
        self.exporter.stop()
    }
}
