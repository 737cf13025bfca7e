import Synchronization

// One time series each: its value, and its sample line up to the value rendered once at creation, so that a scrape
// only copies bytes and formats numbers. `LifeguardMetrics` writes the `# HELP`/`# TYPE` header once per family and
// chooses the series order (catalogue, then pool, then label value).

/// A gauge. Lifeguard's gauges are all counts, so the value is an integer, rendered as swift-prometheus rendered its
/// `Double` gauges (`5.0`).
final class GaugeSeries: Sendable {
    private let value = Atomic<Int>(0)
    private let prefix: [UInt8]

    init(_ family: LifeguardMetric, _ labels: [(String, String)]) {
        precondition(family.type == .gauge)
        self.prefix = PrometheusText.seriesPrefix(family.name, labels)
    }

    func set(_ value: Int) {
        self.value.store(value, ordering: .relaxed)
    }

    /// Adds `delta` atomically (concurrent changes from several threads all count). May go below zero.
    func add(_ delta: Int) {
        self.value.wrappingAdd(delta, ordering: .relaxed)
    }

    var current: Int { self.value.load(ordering: .relaxed) }

    func emit(into buffer: inout [UInt8]) {
        buffer.append(contentsOf: self.prefix)
        PrometheusText.appendGaugeValue(self.value.load(ordering: .relaxed), to: &buffer)
        buffer.append(UInt8(ascii: "\n"))
    }
}

/// A counter: an integer that only goes up.
final class CounterSeries: Sendable {
    private let value = Atomic<Int>(0)
    private let prefix: [UInt8]

    init(_ family: LifeguardMetric, _ labels: [(String, String)]) {
        precondition(family.type == .counter)
        self.prefix = PrometheusText.seriesPrefix(family.name, labels)
    }

    func increment(by amount: Int = 1) {
        // Counters never go down; a negative count from a caller is a bug there, not a reason to crash here.
        guard amount > 0 else { return }
        self.value.wrappingAdd(amount, ordering: .relaxed)
    }

    var current: Int { self.value.load(ordering: .relaxed) }

    func emit(into buffer: inout [UInt8]) {
        buffer.append(contentsOf: self.prefix)
        PrometheusText.appendInteger(self.value.load(ordering: .relaxed), to: &buffer)
        buffer.append(UInt8(ascii: "\n"))
    }
}

/// A histogram of durations in seconds.
///
/// Its state sits behind a lock of its own, because a scrape must see one consistent histogram (the `+Inf` bucket
/// equal to `_count`, `_sum` matching); `observe` holds it for three additions and `emit` only to copy the state out.
final class HistogramSeries: Sendable {
    private struct State {
        /// Samples per bucket, not cumulative (an observation adds to one bucket only); `emit` accumulates.
        var counts: [Int]
        var sum: Duration = .zero
        var count = 0
    }

    /// Upper bounds, ascending.
    private let bounds: [Duration]
    private let state: Mutex<State>
    /// One prefix per bound, then the `+Inf` one.
    private let bucketPrefixes: [[UInt8]]
    private let sumPrefix: [UInt8]
    private let countPrefix: [UInt8]

    init(_ family: LifeguardMetric, _ labels: [(String, String)], buckets: [Duration]) {
        precondition(family.type == .histogram)
        precondition(zip(buckets, buckets.dropFirst()).allSatisfy { $0 < $1 }, "bucket bounds must ascend")
        self.bounds = buckets
        self.state = Mutex(State(counts: Array(repeating: 0, count: buckets.count)))
        // `name_bucket{labels,le="bound"} `, the bounds written as the sum is.
        var bucketStart = Array("\(family.name)_bucket{".utf8)
        PrometheusText.appendLabels(labels, to: &bucketStart)
        if !labels.isEmpty { bucketStart.append(UInt8(ascii: ",")) }
        self.bucketPrefixes = (buckets.map(Optional.some) + [nil]).map { bound in
            var prefix = bucketStart
            prefix.append(contentsOf: #"le=""#.utf8)
            if let bound {
                PrometheusText.appendSeconds(bound, to: &prefix)
            } else {
                prefix.append(contentsOf: "+Inf".utf8)
            }
            prefix.append(contentsOf: #""} "#.utf8)
            return prefix
        }
        self.sumPrefix = PrometheusText.seriesPrefix(family.name + "_sum", labels)
        self.countPrefix = PrometheusText.seriesPrefix(family.name + "_count", labels)
    }

    func observe(_ duration: Duration) {
        // A clock that stepped backwards must not make the sum decrease.
        let duration = max(duration, .zero)
        // Found outside the lock: the bounds never change.
        let bucket = self.bounds.firstIndex { duration <= $0 }
        self.state.withLock { state in
            if let bucket { state.counts[bucket] += 1 }
            state.sum += duration
            state.count += 1
        }
    }

    /// The histogram as one consistent copy.
    func snapshot() -> HistogramSnapshot {
        self.state.withLock { state in
            HistogramSnapshot(bounds: self.bounds, counts: state.counts, sum: state.sum, count: state.count)
        }
    }

    func emit(into buffer: inout [UInt8]) {
        let bucketCount = self.bounds.count
        // The copy goes to the stack, so a scrape allocates nothing per histogram and holds the lock only for a copy.
        withUnsafeTemporaryAllocation(of: Int.self, capacity: bucketCount) { counts in
            let (sum, count) = self.state.withLock { state in
                _ = counts.initialize(fromContentsOf: state.counts)
                return (state.sum, state.count)
            }
            var cumulative = 0
            for index in 0..<bucketCount {
                cumulative += counts[index]
                buffer.append(contentsOf: self.bucketPrefixes[index])
                PrometheusText.appendInteger(cumulative, to: &buffer)
                buffer.append(UInt8(ascii: "\n"))
            }
            buffer.append(contentsOf: self.bucketPrefixes[bucketCount])
            PrometheusText.appendInteger(count, to: &buffer)
            buffer.append(UInt8(ascii: "\n"))
            buffer.append(contentsOf: self.sumPrefix)
            PrometheusText.appendSeconds(sum, to: &buffer)
            buffer.append(UInt8(ascii: "\n"))
            buffer.append(contentsOf: self.countPrefix)
            PrometheusText.appendInteger(count, to: &buffer)
            buffer.append(UInt8(ascii: "\n"))
        }
    }
}
