import Testing

@testable import LifeguardMetrics

@Suite("Series values and rendering")
struct SeriesTests {
    private static let labels = [("database", "app"), ("user", "alice")]
    private static let buckets: [Duration] = [.milliseconds(1), .milliseconds(10), .milliseconds(100)]

    /// Sample lines of one series' `emit`, keyed by name and labels.
    private func samples(_ emit: (inout [UInt8]) -> Void) -> [String: String] {
        var buffer: [UInt8] = []
        emit(&buffer)
        #expect(buffer.last == UInt8(ascii: "\n"))
        return Exposition.samples(String(decoding: buffer, as: UTF8.self))
    }

    private func histogramSamples(_ histogram: HistogramSeries) -> [String: String] {
        samples { histogram.emit(into: &$0) }
    }

    private func bucket(_ bound: String) -> String {
        #"lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="\#(bound)"}"#
    }

    private static let sum = #"lifeguard_pool_wait_seconds_sum{database="app",user="alice"}"#
    private static let count = #"lifeguard_pool_wait_seconds_count{database="app",user="alice"}"#

    @Test("a gauge can go below zero and renders as a Double")
    func gaugeNegative() {
        let gauge = GaugeSeries(.poolWaitingClients, Self.labels)
        gauge.add(-1)
        #expect(samples { gauge.emit(into: &$0) }.values.first == "-1.0")
        gauge.add(3)
        #expect(samples { gauge.emit(into: &$0) }.values.first == "2.0")
        gauge.set(1_234_567)
        #expect(samples { gauge.emit(into: &$0) }.values.first == "1234567.0")
    }

    @Test("a counter ignores zero and negative increments")
    func counterIgnoresNonPositive() {
        let counter = CounterSeries(.queriesTotal, Self.labels)
        counter.increment(by: 5)
        counter.increment(by: 0)
        counter.increment(by: -3)
        counter.increment()
        #expect(samples { counter.emit(into: &$0) } == [#"lifeguard_queries_total{database="app",user="alice"}"#: "6"])
    }

    @Test("concurrent gauge and counter updates from many tasks all count")
    func concurrentGaugeAndCounter() async {
        let gauge = GaugeSeries(.poolCheckedOut, Self.labels)
        let counter = CounterSeries(.poolCheckoutsTotal, Self.labels)
        let tasks = 8
        let perTask = 20_000
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<tasks {
                group.addTask {
                    for index in 0..<perTask {
                        // Odd tasks take away one in every four of what even tasks add: the net is exact only if no
                        // update is lost.
                        gauge.add(task % 2 == 0 ? 1 : (index % 4 == 0 ? -1 : 0))
                        counter.increment(by: 1 + index % 3)
                    }
                }
            }
        }
        let gaugeExpected = (tasks / 2) * perTask - (tasks / 2) * (perTask / 4)
        #expect(samples { gauge.emit(into: &$0) }.values.first == "\(gaugeExpected).0")
        let perTaskSum = (0..<perTask).reduce(0) { $0 + 1 + $1 % 3 }
        #expect(samples { counter.emit(into: &$0) }.values.first == String(tasks * perTaskSum))
    }

    @Test("histogram buckets are cumulative; +Inf, sum and count agree for known durations")
    func histogramKnownDurations() {
        let histogram = HistogramSeries(.poolWaitSeconds, Self.labels, buckets: Self.buckets)
        for duration: Duration in [
            .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(100), .seconds(2),
        ] {
            histogram.observe(duration)
        }
        #expect(
            histogramSamples(histogram) == [
                bucket("0.001"): "2",  // 500 µs and 1 ms: a bound is inclusive
                bucket("0.01"): "3",
                bucket("0.1"): "4",
                bucket("+Inf"): "5",
                Self.sum: "2.1065",
                Self.count: "5",
            ]
        )
    }

    @Test("a negative duration counts as zero: first bucket, sum unchanged")
    func histogramNegativeDuration() {
        let histogram = HistogramSeries(.poolWaitSeconds, Self.labels, buckets: Self.buckets)
        histogram.observe(.milliseconds(-5))
        histogram.observe(.milliseconds(20))
        let samples = histogramSamples(histogram)
        #expect(samples[bucket("0.001")] == "1")
        #expect(samples[bucket("+Inf")] == "2")
        #expect(samples[Self.sum] == "0.02")
        #expect(samples[Self.count] == "2")
    }

    @Test("a histogram without labels writes name_bucket{le=...} and unlabelled sum and count")
    func histogramWithoutLabels() {
        let histogram = HistogramSeries(.poolUseSeconds, [], buckets: [.seconds(1)])
        histogram.observe(.milliseconds(1500))
        var buffer: [UInt8] = []
        histogram.emit(into: &buffer)
        #expect(
            String(decoding: buffer, as: UTF8.self) == """
                lifeguard_pool_use_seconds_bucket{le="1.0"} 0
                lifeguard_pool_use_seconds_bucket{le="+Inf"} 1
                lifeguard_pool_use_seconds_sum 1.5
                lifeguard_pool_use_seconds_count 1

                """
        )
    }

    @Test("concurrent observations are exact and every scrape meanwhile sees a consistent histogram")
    func histogramConsistentUnderLoad() async {
        let histogram = HistogramSeries(.poolWaitSeconds, Self.labels, buckets: Self.buckets)
        let tasks = 6
        let perTask = 10_000
        // Every sample is 5 ms: a consistent snapshot has sum == count × 5 ms, all of it in buckets from 0.01 up.
        let sample = Duration.milliseconds(5)
        let scrapes = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<tasks {
                group.addTask {
                    for index in 0..<perTask {
                        histogram.observe(sample)
                        // The cooperative pool may have as few threads as there are cores (2 here): yielding lets the
                        // scraper run between writers instead of only after them.
                        if index % 64 == 0 { await Task.yield() }
                    }
                    return 0
                }
            }
            group.addTask {
                var scrapes = 0
                var previous = 0
                while previous < tasks * perTask {
                    let samples = histogramSamples(histogram)
                    let count = Int(samples[Self.count] ?? "") ?? -1
                    #expect(samples[bucket("+Inf")] == String(count))
                    #expect(samples[bucket("0.001")] == "0")
                    #expect(samples[bucket("0.01")] == String(count))
                    #expect(samples[bucket("0.1")] == String(count))
                    var expectedSum: [UInt8] = []
                    PrometheusText.appendSeconds(sample * count, to: &expectedSum)
                    #expect(samples[Self.sum] == String(decoding: expectedSum, as: UTF8.self))
                    #expect(count >= previous)
                    previous = count
                    scrapes += 1
                }
                return scrapes
            }
            return await group.reduce(0, +)
        }
        #expect(scrapes > 1)
        let samples = histogramSamples(histogram)
        #expect(samples[Self.count] == String(tasks * perTask))
        #expect(samples[Self.sum] == "300.0")  // 60,000 × 5 ms
    }
}
