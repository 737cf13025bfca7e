import Prometheus

/// One time series: a swift-prometheus metric (its value in atomics, its series line rendered once at creation) in a
/// registry of its own.
///
/// A `PrometheusCollectorRegistry` emits its families in dictionary order, which changes from run to run. Holding one
/// series per registry lets `LifeguardMetrics` choose the order (catalogue, then pool, then label value) and write the
/// `# HELP`/`# TYPE` header once per family itself.
struct Series<Metric: AnyObject & Sendable>: Sendable {
    let metric: Metric
    private let registry: PrometheusCollectorRegistry

    private init(registry: PrometheusCollectorRegistry, metric: Metric) {
        self.registry = registry
        self.metric = metric
    }

    /// Writes the series' sample lines, without the `# TYPE` line its registry puts first.
    func emit(into buffer: inout [UInt8]) {
        let start = buffer.endIndex
        self.registry.emit(into: &buffer)
        guard let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) else { return }
        buffer.removeSubrange(start...newline)
    }

    private static func descriptor(_ family: LifeguardMetric) -> MetricNameDescriptor {
        // No help text here: the family header is written by LifeguardMetrics.
        MetricNameDescriptor(metricName: family.name, unitName: "", helpText: "")
    }
}

extension Series where Metric == Gauge {
    init(_ family: LifeguardMetric, _ labels: [(String, String)]) {
        precondition(family.type == .gauge)
        let registry = PrometheusCollectorRegistry()
        let descriptor = Self.descriptor(family)
        let gauge =
            labels.isEmpty
            ? registry.makeGauge(descriptor: descriptor) : registry.makeGauge(descriptor: descriptor, labels: labels)
        self.init(registry: registry, metric: gauge)
    }

    func set(_ value: Int) {
        self.metric.set(to: Double(value))
    }

    /// Adds `delta` atomically (concurrent changes from several threads all count).
    func add(_ delta: Int) {
        self.metric.increment(by: Double(delta))
    }
}

extension Series where Metric == Counter {
    init(_ family: LifeguardMetric, _ labels: [(String, String)]) {
        precondition(family.type == .counter)
        let registry = PrometheusCollectorRegistry()
        let descriptor = Self.descriptor(family)
        let counter =
            labels.isEmpty
            ? registry.makeCounter(descriptor: descriptor)
            : registry.makeCounter(descriptor: descriptor, labels: labels)
        self.init(registry: registry, metric: counter)
    }

    func increment(by amount: Int = 1) {
        // Counters never go down; a negative count from a caller is a bug there, not a reason to crash here.
        guard amount > 0 else { return }
        self.metric.increment(by: Int64(amount))
    }
}

extension Series where Metric == DurationHistogram {
    init(_ family: LifeguardMetric, _ labels: [(String, String)], buckets: [Duration]) {
        precondition(family.type == .histogram)
        let registry = PrometheusCollectorRegistry()
        let histogram = registry.makeDurationHistogram(
            descriptor: Self.descriptor(family),
            labels: labels,
            buckets: buckets
        )
        self.init(registry: registry, metric: histogram)
    }

    func observe(_ duration: Duration) {
        // A clock that stepped backwards must not make the sum decrease.
        self.metric.record(max(duration, .zero))
    }
}
