import LifeguardMetrics
import Logging
import PoolCore

/// Feeds one pool's observations and stats into its series of the metric catalogue.
///
/// Gauges are read from the pool's published gauges at each scrape (a gauge is a count of a state); counters and
/// histograms move with each observation.
struct PoolMetricsObserver: PoolObserver {
    let metrics: PoolMetrics
    var logger: Logger?

    func pool(_ key: PoolKey, observed observation: PoolObservation) {
        switch observation {
        case .leased(let waited):
            self.metrics.checkedOut()
            self.metrics.observeWait(waited)
        case .returned(let heldFor):
            self.metrics.observeUse(heldFor)
        case .connected(let took):
            self.metrics.observeConnect(took)
        case .connectFailed(let reason), .connectionErrored(let reason):
            self.metrics.connectionError(reason: Self.label(reason))
        case .closed(let reason):
            self.metrics.connectionClosed(reason: Self.label(reason))
        case .timedOut:
            self.metrics.timedOut()
        case .leakSuspected(let heldFor):
            self.metrics.leakSuspected()
            self.logger?.warning(
                "a client has held a server connection longer than leak_threshold",
                metadata: ["pool": "\(key)", "held_seconds": "\(heldFor.components.seconds)"]
            )
        case .staleRelease:
            self.metrics.staleRelease()
            self.logger?.warning(
                "ignored a release of a server connection by a client that no longer held it (a Lifeguard bug)",
                metadata: ["pool": "\(key)"]
            )
        }
    }

    func pool(_ key: PoolKey, gauges: PoolGauges) {
        // Unowned: the metrics keep the reader, which must not keep them.
        self.metrics.readGaugesBeforeRendering { [unowned metrics = self.metrics] in
            let now = gauges.load()
            metrics.setConnections(
                idle: now.idle,
                used: now.used,
                checkedOut: now.checkedOut,
                overflow: now.overflow,
                waiting: now.waiting
            )
        }
    }

    // Exhaustive switches: a reason added to the pool core without a label value does not compile.
    static func label(_ reason: PoolCore.ConnectionErrorReason) -> ErrorReasonLabel {
        switch reason {
        case .connect: .connect
        case .tls: .tls
        case .auth: .auth
        case .timeout: .timeout
        case .server: .server
        case .rejected: .rejected
        case .broken: .broken
        }
    }

    static func label(_ reason: CloseReason) -> CloseReasonLabel {
        switch reason {
        case .recycle: .recycle
        case .idle: .idle
        case .pingFailed: .pingFailed
        case .error: .error
        case .dirty: .dirty
        case .resetFailed: .resetFailed
        case .overflow: .overflow
        case .shutdown: .shutdown
        }
    }
}
