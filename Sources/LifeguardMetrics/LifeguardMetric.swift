/// The kind of a metric family, as written on its `# TYPE` line.
public enum MetricType: String, Sendable, CaseIterable {
    case counter
    case gauge
    case histogram
}

/// The metric catalogue: every family Lifeguard exports, in exposition order.
///
/// The raw value is the exported name. Names, types and labels are a contract (DESIGN.md, docs/metrics.md): dashboards
/// and alerts depend on them, so they never change once released.
public enum LifeguardMetric: String, Sendable, CaseIterable {
    case poolSize = "lifeguard_pool_size"
    case poolMaxOverflow = "lifeguard_pool_max_overflow"
    case poolConnections = "lifeguard_pool_connections"
    case poolCheckedOut = "lifeguard_pool_checked_out"
    case poolOverflow = "lifeguard_pool_overflow"
    case poolWaitingClients = "lifeguard_pool_waiting_clients"
    case poolPaused = "lifeguard_pool_paused"
    case poolWaitSeconds = "lifeguard_pool_wait_seconds"
    case poolUseSeconds = "lifeguard_pool_use_seconds"
    case poolConnectSeconds = "lifeguard_pool_connect_seconds"
    case poolCheckoutsTotal = "lifeguard_pool_checkouts_total"
    case poolTimeoutsTotal = "lifeguard_pool_timeouts_total"
    case poolConnectionErrorsTotal = "lifeguard_pool_connection_errors_total"
    case poolConnectionsClosedTotal = "lifeguard_pool_connections_closed_total"
    case poolLeaksSuspectedTotal = "lifeguard_pool_leaks_suspected_total"
    case poolStaleReleasesTotal = "lifeguard_pool_stale_releases_total"
    case transactionsTotal = "lifeguard_transactions_total"
    case queriesTotal = "lifeguard_queries_total"
    case clientConnections = "lifeguard_client_connections"
    case clientMaxConnections = "lifeguard_client_max_connections"
    case clientRejectedTotal = "lifeguard_client_rejected_total"
    case upstreamUp = "lifeguard_upstream_up"
    case buildInfo = "lifeguard_build_info"
    case configLastReloadSuccessful = "lifeguard_config_last_reload_successful"
    case metricsRequestsRejectedTotal = "lifeguard_metrics_requests_rejected_total"
    case tlsCertificateExpiryTimestampSeconds = "lifeguard_tls_certificate_expiry_timestamp_seconds"
    case processResidentMemoryBytes = "process_resident_memory_bytes"
    case processVirtualMemoryBytes = "process_virtual_memory_bytes"
    case processCPUSecondsTotal = "process_cpu_seconds_total"
    case processOpenFDs = "process_open_fds"
    case processMaxFDs = "process_max_fds"
    case processStartTimeSeconds = "process_start_time_seconds"

    /// The exported metric name.
    public var name: String { self.rawValue }

    public var type: MetricType {
        switch self {
        case .poolWaitSeconds, .poolUseSeconds, .poolConnectSeconds:
            return .histogram
        case .poolCheckoutsTotal, .poolTimeoutsTotal, .poolConnectionErrorsTotal, .poolConnectionsClosedTotal,
            .poolLeaksSuspectedTotal, .poolStaleReleasesTotal, .transactionsTotal, .queriesTotal, .clientRejectedTotal,
            .metricsRequestsRejectedTotal, .processCPUSecondsTotal:
            return .counter
        case .poolSize, .poolMaxOverflow, .poolConnections, .poolCheckedOut, .poolOverflow, .poolWaitingClients,
            .poolPaused, .clientConnections, .clientMaxConnections, .upstreamUp, .buildInfo,
            .configLastReloadSuccessful, .tlsCertificateExpiryTimestampSeconds, .processResidentMemoryBytes,
            .processVirtualMemoryBytes, .processOpenFDs, .processMaxFDs,
            .processStartTimeSeconds:
            return .gauge
        }
    }

    /// Whether the family is one series per pool, labelled `database` and `user`.
    public var isPerPool: Bool {
        switch self {
        case .poolSize, .poolMaxOverflow, .poolConnections, .poolCheckedOut, .poolOverflow, .poolWaitingClients,
            .poolPaused, .poolWaitSeconds, .poolUseSeconds, .poolConnectSeconds, .poolCheckoutsTotal,
            .poolTimeoutsTotal,
            .poolConnectionErrorsTotal, .poolConnectionsClosedTotal, .poolLeaksSuspectedTotal, .poolStaleReleasesTotal,
            .transactionsTotal, .queriesTotal:
            return true
        default:
            return false
        }
    }

    /// Label names in the order they are rendered (histograms add `le` on their buckets).
    public var labels: [String] {
        let pool = self.isPerPool ? ["database", "user"] : []
        switch self {
        case .poolConnections, .clientConnections:
            return pool + ["state"]
        case .poolConnectionErrorsTotal, .poolConnectionsClosedTotal, .clientRejectedTotal,
            .metricsRequestsRejectedTotal:
            return pool + ["reason"]
        case .tlsCertificateExpiryTimestampSeconds:
            return ["file"]
        case .upstreamUp:
            return ["upstream"]
        case .buildInfo:
            return ["version"]
        default:
            return pool
        }
    }

    /// The values a bounded label (`state`, `reason`) may take; every one of them is exported from the start.
    public var labelValues: [String] {
        switch self {
        case .poolConnections: return PoolConnectionState.allCases.map(\.rawValue)
        case .clientConnections: return ClientConnectionState.allCases.map(\.rawValue)
        case .poolConnectionErrorsTotal: return ConnectionErrorReason.allCases.map(\.rawValue)
        case .poolConnectionsClosedTotal: return ConnectionCloseReason.allCases.map(\.rawValue)
        case .clientRejectedTotal: return ClientRejectReason.allCases.map(\.rawValue)
        case .metricsRequestsRejectedTotal: return MetricsRejectReason.allCases.map(\.rawValue)
        default: return []
        }
    }

    /// The unit of the value, as documented in docs/metrics.md.
    public var unit: String {
        switch self {
        case .poolWaitSeconds, .poolUseSeconds, .poolConnectSeconds, .processCPUSecondsTotal:
            return "seconds"
        case .processStartTimeSeconds, .tlsCertificateExpiryTimestampSeconds:
            return "seconds since the Unix epoch"
        case .processResidentMemoryBytes, .processVirtualMemoryBytes:
            return "bytes"
        case .poolSize, .poolMaxOverflow, .poolConnections, .poolCheckedOut, .poolOverflow,
            .poolConnectionErrorsTotal, .poolConnectionsClosedTotal, .clientMaxConnections:
            return "connections"
        case .poolWaitingClients, .clientConnections, .clientRejectedTotal:
            return "clients"
        case .poolCheckoutsTotal: return "checkouts"
        case .poolTimeoutsTotal: return "clients"
        case .poolLeaksSuspectedTotal: return "holds"
        case .poolStaleReleasesTotal: return "releases"
        case .transactionsTotal: return "transactions"
        case .queriesTotal: return "queries"
        case .metricsRequestsRejectedTotal: return "requests"
        case .processOpenFDs, .processMaxFDs: return "file descriptors"
        case .upstreamUp, .buildInfo, .configLastReloadSuccessful, .poolPaused: return "1 or 0"
        }
    }

    /// The `# HELP` text.
    public var help: String {
        switch self {
        case .poolSize: return "Configured pool_size: server connections kept open for the pool."
        case .poolMaxOverflow: return "Configured max_overflow: extra server connections allowed during spikes."
        case .poolConnections: return "Open server connections, by state (idle or used)."
        case .poolCheckedOut: return "Server connections handed to clients right now."
        case .poolOverflow: return "Open server connections above pool_size."
        case .poolWaitingClients: return "Clients waiting for a server connection."
        case .poolPaused: return "1 while the pool is paused (PAUSE on the admin console), 0 otherwise."
        case .poolWaitSeconds: return "Time from asking for a server connection to getting one."
        case .poolUseSeconds: return "How long a client held a server connection."
        case .poolConnectSeconds: return "Time to open and authenticate a server connection."
        case .poolCheckoutsTotal: return "Server connections handed out to clients."
        case .poolTimeoutsTotal: return "Clients that gave up waiting after pool_timeout."
        case .poolConnectionErrorsTotal: return "Failed connects and broken server connections, by reason."
        case .poolConnectionsClosedTotal: return "Server connections closed by the pool, by reason."
        case .poolLeaksSuspectedTotal: return "Holds of a server connection that passed leak_threshold."
        case .poolStaleReleasesTotal:
            return "Releases of a server connection naming a lease it no longer had; ignored (a Lifeguard bug)."
        case .transactionsTotal: return "Transactions completed through the pool."
        case .queriesTotal: return "Queries run through the pool."
        case .clientConnections: return "Client connections, by state (active, waiting or idle)."
        case .clientMaxConnections: return "Configured max_client_conn: client connections accepted in total."
        case .clientRejectedTotal: return "Client connections rejected, by reason."
        case .upstreamUp: return "1 when the upstream answers PQpingParams, 0 otherwise."
        case .buildInfo: return "Always 1; the version label names the running build."
        case .configLastReloadSuccessful: return "1 if the last configuration load or reload succeeded, 0 if not."
        case .metricsRequestsRejectedTotal:
            return "Requests to /metrics, /healthz or /readyz refused by basic authentication, by reason."
        case .tlsCertificateExpiryTimestampSeconds:
            return "When the earliest certificate of a loaded certificate file expires (notAfter), in Unix seconds."
        case .processResidentMemoryBytes: return "Resident memory size in bytes."
        case .processVirtualMemoryBytes: return "Virtual memory size in bytes."
        case .processCPUSecondsTotal: return "Total user and system CPU time spent in seconds."
        case .processOpenFDs: return "Number of open file descriptors."
        case .processMaxFDs: return "Maximum number of open file descriptors."
        case .processStartTimeSeconds: return "Start time of the process since unix epoch in seconds."
        }
    }
}

/// Histogram buckets, in seconds.
public enum MetricBuckets {
    /// `lifeguard_pool_wait_seconds` and `lifeguard_pool_connect_seconds`: from 100 µs (an idle connection handed
    /// out at once) to 30 s (the longest sensible `pool_timeout`).
    public static let latency: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .microseconds(2500), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5),
        .seconds(10), .seconds(30),
    ]

    /// `lifeguard_pool_use_seconds`: the latency buckets, then up to an hour, because in session mode a client holds
    /// its server connection for its whole session.
    public static let use: [Duration] =
        latency + [.seconds(60), .seconds(300), .seconds(900), .seconds(1800), .seconds(3600)]
}
