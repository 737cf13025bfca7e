import Testing

@testable import LifeguardMetrics

@Suite("PrometheusText number and label formatting")
struct PrometheusTextTests {
    private func text(_ write: (inout [UInt8]) -> Void) -> String {
        var buffer: [UInt8] = Array("x".utf8)  // appends after existing bytes, as into a scrape buffer
        write(&buffer)
        return String(decoding: buffer.dropFirst(), as: UTF8.self)
    }

    @Test(
        "integers are written in full",
        arguments: [
            (0, "0"), (7, "7"), (10, "10"), (-1, "-1"), (1_000_000, "1000000"),
            (Int.max, "9223372036854775807"), (Int.min, "-9223372036854775808"),
        ]
    )
    func integers(value: Int, expected: String) {
        #expect(text { PrometheusText.appendInteger(value, to: &$0) } == expected)
    }

    @Test(
        "gauge values read like swift-prometheus's Double gauges",
        arguments: [
            (0, "0.0"), (5, "5.0"), (-1, "-1.0"), (100, "100.0"), (1_000_000, "1000000.0"),
            ((1 << 53) - 1, "9007199254740991.0"), (-((1 << 53) - 1), "-9007199254740991.0"),
            (Int.max, "9.223372036854776e+18"), (Int.min, "-9.223372036854776e+18"),
            (10_000_000_000_000_000, "1e+16"),
        ]
    )
    func gaugeValues(value: Int, expected: String) {
        #expect(text { PrometheusText.appendGaugeValue(value, to: &$0) } == expected)
    }

    @Test("gauge values agree with Double.description across magnitudes and around 2^53")
    func gaugeValuesMatchDoubleDescription() {
        var values = [1 << 53, (1 << 53) + 1, -(1 << 53), 999_999_999_999_999, 9_999_999_999_999_998]
        var generator = SystemRandomNumberGenerator()
        for bits in 1...63 {
            for _ in 0..<20 {
                let value = Int.random(in: 0...(Int.max >> (63 - bits)), using: &generator)
                values.append(value)
                values.append(-value)
            }
        }
        for value in values {
            #expect(text { PrometheusText.appendGaugeValue(value, to: &$0) } == Double(value).description, "\(value)")
        }
    }

    @Test(
        "durations are seconds with the attoseconds' trailing zeros cut",
        arguments: [
            (Duration.zero, "0.0"), (.microseconds(100), "0.0001"), (.microseconds(250), "0.00025"),
            (.milliseconds(20), "0.02"), (.seconds(1), "1.0"), (.milliseconds(2500), "2.5"),
            (.seconds(3600), "3600.0"), (.seconds(31) + .microseconds(100), "31.0001"),
            (.nanoseconds(1), "0.000000001"),
            (Duration(secondsComponent: 0, attosecondsComponent: 1), "0.000000000000000001"),
            (.milliseconds(100) + .milliseconds(200), "0.3"),
            (
                Duration(secondsComponent: Int64.max, attosecondsComponent: 999_999_999_999_999_999),
                "9223372036854775807.999999999999999999"
            ),
        ]
    )
    func seconds(duration: Duration, expected: String) {
        #expect(text { PrometheusText.appendSeconds(duration, to: &$0) } == expected)
    }

    @Test("label values escape backslash, double quote and line feed, and nothing else")
    func labelEscaping() {
        let escaped = text { PrometheusText.appendEscapedLabelValue("a\\b\"c\nd\te café", to: &$0) }
        #expect(escaped == #"a\\b\"c\nd"# + "\te café")
    }

    @Test("series prefixes with and without labels")
    func seriesPrefixes() {
        #expect(String(decoding: PrometheusText.seriesPrefix("up", []), as: UTF8.self) == "up ")
        let prefix = PrometheusText.seriesPrefix("m", [("database", #"d"b"#), ("user", "u\\")])
        #expect(String(decoding: prefix, as: UTF8.self) == #"m{database="d\"b",user="u\\"} "#)
    }
}
