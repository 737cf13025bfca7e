import Synchronization

/// Lifeguard's metric registry: every family of the catalogue (``LifeguardMetric``), rendered in the Prometheus text
/// exposition format (version 0.0.4).
///
/// Updates are atomic stores on series created ahead of time; ``render(into:)`` reads them without waiting on the data
/// path, so a scrape answers even when the pool is saturated. The only lock ``render(into:)`` takes besides each
/// histogram's own short one guards the list of pools and upstreams, which changes only on registration.
public final class LifeguardMetrics: Sendable {
    private struct PoolKey: Hashable, Comparable {
        var database: String
        var user: String

        static func < (lhs: Self, rhs: Self) -> Bool {
            (lhs.database, lhs.user) < (rhs.database, rhs.user)
        }
    }

    private struct Registrations {
        var pools: [PoolKey: PoolMetrics] = [:]
        /// `pools`' values sorted by key, kept so that a scrape copies an array instead of sorting.
        var sortedPools: [PoolMetrics] = []
        var upstreams: [String: GaugeSeries] = [:]
        var sortedUpstreams: [GaugeSeries] = []
    }

    private let registrations = Mutex(Registrations())
    /// In `ClientConnectionState.allCases` order: every transaction moves a client twice, so no hashing.
    private let clientConnections: [GaugeSeries]
    private let clientMaxConnections: GaugeSeries
    private let clientRejected: [ClientRejectReason: CounterSeries]
    private let buildInfo: GaugeSeries
    private let configReloadSuccessful: GaugeSeries
    private let metricsRequestsRejected: [MetricsRejectReason: CounterSeries]
    /// `lifeguard_tls_certificate_expiry_timestamp_seconds{file}`: register certificate files here.
    public let certificateExpiry = CertificateExpiry()
    private let processStartTime: Double?
    /// Size of the last exposition, so that the next one reserves its buffer once instead of doubling it ~6 times.
    private let lastRenderedCount = Atomic<Int>(0)

    /// Creates the registry with the process-wide series: `lifeguard_build_info{version}` at 1,
    /// `lifeguard_config_last_reload_successful` at 1 (a process runs only with a valid configuration), client gauges
    /// at 0, every `lifeguard_client_rejected_total{reason}` and `lifeguard_metrics_requests_rejected_total{reason}`
    /// at 0.
    public init(version: String) {
        self.clientConnections = ClientConnectionState.allCases.map {
            GaugeSeries(.clientConnections, [("state", $0.rawValue)])
        }
        self.clientMaxConnections = GaugeSeries(.clientMaxConnections, [])
        self.clientRejected = Dictionary(
            uniqueKeysWithValues: ClientRejectReason.allCases.map {
                ($0, CounterSeries(.clientRejectedTotal, [("reason", $0.rawValue)]))
            }
        )
        self.buildInfo = GaugeSeries(.buildInfo, [("version", version)])
        self.buildInfo.set(1)
        self.configReloadSuccessful = GaugeSeries(.configLastReloadSuccessful, [])
        self.configReloadSuccessful.set(1)
        self.metricsRequestsRejected = Dictionary(
            uniqueKeysWithValues: MetricsRejectReason.allCases.map {
                ($0, CounterSeries(.metricsRequestsRejectedTotal, [("reason", $0.rawValue)]))
            }
        )
        self.processStartTime = ProcessStats.startTime()
    }

    // MARK: Pools

    /// The series of the pool for (`database`, `user`), created on first use with every series present (counters
    /// at 0, each `reason` included). Calling it again returns the same object.
    public func pool(database: String, user: String) -> PoolMetrics {
        let key = PoolKey(database: database, user: user)
        return self.registrations.withLock { registrations in
            if let existing = registrations.pools[key] { return existing }
            let pool = PoolMetrics(database: database, user: user)
            registrations.pools[key] = pool
            let index = registrations.sortedPools.firstIndex {
                PoolKey(database: $0.database, user: $0.user) > key
            }
            registrations.sortedPools.insert(pool, at: index ?? registrations.sortedPools.endIndex)
            return pool
        }
    }

    /// Stops exporting the pool's series (a pool removed by a reload). A `PoolMetrics` still held keeps working but is
    /// no longer rendered; a later ``pool(database:user:)`` starts again from 0.
    public func removePool(database: String, user: String) {
        let key = PoolKey(database: database, user: user)
        self.registrations.withLock { registrations in
            guard let removed = registrations.pools.removeValue(forKey: key) else { return }
            registrations.sortedPools.removeAll { $0 === removed }
        }
    }

    // MARK: Process-wide series

    /// Moves one client from state `old` to state `new` in `lifeguard_client_connections{state}` (nil: not counted),
    /// without a lock: each gauge is changed atomically, so clients on several event loops never contend.
    public func clientConnectionChanged(from old: ClientConnectionState?, to new: ClientConnectionState?) {
        guard old != new else { return }
        if let old { self.clientConnections[old.index].add(-1) }
        if let new { self.clientConnections[new.index].add(1) }
    }

    /// Sets `lifeguard_client_max_connections` (configured `max_client_conn`).
    public func setClientMaxConnections(_ count: Int) {
        self.clientMaxConnections.set(count)
    }

    /// Counts one rejected client connection (`lifeguard_client_rejected_total{reason}`).
    public func clientRejected(reason: ClientRejectReason) {
        self.clientRejected[reason]!.increment()
    }

    /// Sets `lifeguard_upstream_up{upstream}` for the named upstream. The series appears on the first call, i.e.
    /// after the first health probe.
    public func setUpstreamUp(_ upstream: String, _ up: Bool) {
        let series = self.registrations.withLock { registrations in
            if let existing = registrations.upstreams[upstream] { return existing }
            let series = GaugeSeries(.upstreamUp, [("upstream", upstream)])
            registrations.upstreams[upstream] = series
            registrations.sortedUpstreams = registrations.upstreams.sorted { $0.key < $1.key }.map(\.value)
            return series
        }
        series.set(up ? 1 : 0)
    }

    /// Stops exporting `lifeguard_upstream_up` for an upstream removed from the configuration.
    public func removeUpstream(_ upstream: String) {
        self.registrations.withLock { registrations in
            guard registrations.upstreams.removeValue(forKey: upstream) != nil else { return }
            registrations.sortedUpstreams = registrations.upstreams.sorted { $0.key < $1.key }.map(\.value)
        }
    }

    /// Counts one request the metrics endpoint refused with 401 (`lifeguard_metrics_requests_rejected_total{reason}`).
    public func metricsRequestRejected(reason: MetricsRejectReason) {
        self.metricsRequestsRejected[reason]!.increment()
    }

    /// Sets `lifeguard_config_last_reload_successful` after a reload.
    public func setConfigReloadSuccessful(_ successful: Bool) {
        self.configReloadSuccessful.set(successful ? 1 : 0)
    }

    // MARK: Rendering

    /// Content type of ``render(into:)``'s output.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Appends the whole exposition to `buffer`: the catalogue in order, each family's series sorted by pool (database,
    /// then user) and then by label value in the order of the label enums, then the `process_*` families read from
    /// /proc/self now. Families without any series (no pool registered yet) are left out.
    ///
    /// Synchronous and thread-safe: meant to be called on the HTTP server's own thread.
    public func render(into buffer: inout [UInt8]) {
        let (pools, upstreams) = self.registrations.withLock { ($0.sortedPools, $0.sortedUpstreams) }
        let start = buffer.endIndex
        let expected = self.lastRenderedCount.load(ordering: .relaxed)
        buffer.reserveCapacity(start + expected + expected / 16)
        defer { self.lastRenderedCount.store(buffer.endIndex - start, ordering: .relaxed) }
        for pool in pools { pool.readGauges() }
        for (family, header) in Self.headers where !family.isProcess {
            let headerStart = buffer.endIndex
            buffer.append(contentsOf: header)
            let seriesStart = buffer.endIndex
            if family.isPerPool {
                for pool in pools { pool.emit(family, into: &buffer) }
            } else if family == .upstreamUp {
                for series in upstreams { series.emit(into: &buffer) }
            } else {
                self.emitProcessWide(family, into: &buffer)
            }
            if buffer.endIndex == seriesStart {
                buffer.removeSubrange(headerStart...)
            }
        }
        self.renderProcess(into: &buffer)
    }

    /// The exposition as a string; for tests and debugging.
    public func render() -> String {
        var buffer: [UInt8] = []
        self.render(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }

    private func emitProcessWide(_ family: LifeguardMetric, into buffer: inout [UInt8]) {
        switch family {
        case .clientConnections:
            for series in self.clientConnections { series.emit(into: &buffer) }
        case .clientMaxConnections: self.clientMaxConnections.emit(into: &buffer)
        case .clientRejectedTotal:
            for reason in ClientRejectReason.allCases { self.clientRejected[reason]!.emit(into: &buffer) }
        case .buildInfo: self.buildInfo.emit(into: &buffer)
        case .configLastReloadSuccessful: self.configReloadSuccessful.emit(into: &buffer)
        case .metricsRequestsRejectedTotal:
            for reason in MetricsRejectReason.allCases { self.metricsRequestsRejected[reason]!.emit(into: &buffer) }
        case .tlsCertificateExpiryTimestampSeconds: self.certificateExpiry.emit(into: &buffer)
        default: break
        }
    }

    private func renderProcess(into buffer: inout [UInt8]) {
        let stats = ProcessStats.current(startTime: self.processStartTime)
        for (family, header) in Self.headers where family.isProcess {
            let value: Double?
            switch family {
            case .processResidentMemoryBytes: value = stats.residentMemoryBytes
            case .processVirtualMemoryBytes: value = stats.virtualMemoryBytes
            case .processCPUSecondsTotal: value = stats.cpuSeconds
            case .processOpenFDs: value = stats.openFDs
            case .processMaxFDs: value = stats.maxFDs
            case .processStartTimeSeconds: value = stats.startTimeSeconds
            default: value = nil
            }
            guard let value else { continue }
            buffer.append(contentsOf: header)
            buffer.append(contentsOf: family.name.utf8)
            buffer.append(UInt8(ascii: " "))
            buffer.append(contentsOf: value.description.utf8)
            buffer.append(UInt8(ascii: "\n"))
        }
    }

    /// Every family's `# HELP` and `# TYPE` lines in catalogue order, rendered once rather than on every scrape.
    private static let headers: [(family: LifeguardMetric, header: [UInt8])] = LifeguardMetric.allCases.map {
        ($0, LifeguardMetrics.header($0))
    }

    private static func header(_ family: LifeguardMetric) -> [UInt8] {
        var buffer = Array("# HELP \(family.name) ".utf8)
        for byte in family.help.utf8 {
            switch byte {
            case UInt8(ascii: "\\"): buffer.append(contentsOf: #"\\"#.utf8)
            case UInt8(ascii: "\n"): buffer.append(contentsOf: #"\n"#.utf8)
            default: buffer.append(byte)
            }
        }
        buffer.append(contentsOf: "\n# TYPE \(family.name) \(family.type.rawValue)\n".utf8)
        return buffer
    }
}

extension LifeguardMetric {
    /// `process_*`: computed from /proc/self at scrape time.
    public var isProcess: Bool {
        self.name.hasPrefix("process_")
    }
}
