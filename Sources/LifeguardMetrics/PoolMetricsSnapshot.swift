/// One histogram as a scrape renders it: samples per bucket (not cumulative; the `+Inf` bucket is `count` minus
/// their sum), the sum and the count.
public struct HistogramSnapshot: Sendable, Equatable {
    /// Upper bounds, ascending.
    public var bounds: [Duration]
    public var counts: [Int]
    public var sum: Duration
    public var count: Int

    /// The `q` quantile as Prometheus's `histogram_quantile` estimates it from the buckets (linear within the bucket;
    /// the highest bound when it falls in `+Inf`); nil without samples.
    public func quantile(_ q: Double) -> Duration? {
        guard self.count > 0 else { return nil }
        let rank = q * Double(self.count)
        var cumulative = 0
        for (index, samples) in self.counts.enumerated() {
            let previous = cumulative
            cumulative += samples
            guard Double(cumulative) >= rank, samples > 0 else { continue }
            let lower = index == 0 ? Duration.zero : self.bounds[index - 1]
            let upper = self.bounds[index]
            let fraction = (rank - Double(previous)) / Double(samples)
            return lower + (upper - lower) * fraction
        }
        return self.bounds.last
    }
}

/// A pool's counters and histograms at one moment (``PoolMetrics/snapshot()``).
public struct PoolMetricsSnapshot: Sendable, Equatable {
    public var checkouts: Int
    public var timeouts: Int
    /// `lifeguard_pool_connection_errors_total`, every reason.
    public var connectionErrors: Int
    public var leaksSuspected: Int
    public var staleReleases: Int
    public var transactions: Int
    public var queries: Int
    public var wait: HistogramSnapshot
    public var use: HistogramSnapshot
    public var paused: Bool
}
