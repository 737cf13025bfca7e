import Foundation
import LifeguardMetrics
import Testing

@Suite("The metric catalogue")
struct LifeguardMetricTests {
    @Test("names follow the Prometheus conventions for their type")
    func namingConventions() {
        for metric in LifeguardMetric.allCases {
            #expect(metric.name.hasPrefix("lifeguard_") || metric.name.hasPrefix("process_"))
            #expect((metric.type == .counter) == metric.name.hasSuffix("_total"), "\(metric.name)")
            if metric.type == .histogram {
                #expect(metric.name.hasSuffix("_seconds"), "\(metric.name)")
            }
            #expect(!metric.help.isEmpty)
        }
    }

    @Test("every pool metric carries database and user, first")
    func poolLabels() {
        for metric in LifeguardMetric.allCases where metric.isPerPool {
            #expect(Array(metric.labels.prefix(2)) == ["database", "user"], "\(metric.name)")
        }
        #expect(LifeguardMetric.allCases.filter(\.isPerPool).count == 18)
    }

    @Test("bounded labels expose their value sets")
    func labelValueSets() {
        #expect(
            LifeguardMetric.poolConnectionErrorsTotal.labelValues == [
                "connect", "tls", "auth", "timeout", "server", "rejected", "broken",
            ]
        )
        #expect(
            LifeguardMetric.poolConnectionsClosedTotal.labelValues == [
                "recycle", "idle", "ping_failed", "error", "dirty", "reset_failed", "overflow", "shutdown",
            ]
        )
        #expect(LifeguardMetric.clientRejectedTotal.labelValues == ["max_client_conn", "auth", "protocol"])
        #expect(LifeguardMetric.poolConnections.labelValues == ["idle", "used"])
        #expect(LifeguardMetric.clientConnections.labelValues == ["active", "waiting", "idle"])
        for metric in LifeguardMetric.allCases {
            let bounded = metric.labels.contains("state") || metric.labels.contains("reason")
            #expect(bounded == !metric.labelValues.isEmpty, "\(metric.name)")
        }
    }

    @Test("latency buckets resolve 100 µs to 30 s; use buckets extend them to an hour")
    func buckets() {
        #expect(MetricBuckets.latency.first == .microseconds(100))
        #expect(MetricBuckets.latency.last == .seconds(30))
        #expect(MetricBuckets.latency == MetricBuckets.latency.sorted())
        #expect(Array(MetricBuckets.use.prefix(MetricBuckets.latency.count)) == MetricBuckets.latency)
        #expect(MetricBuckets.use.last == .seconds(3600))
        #expect(MetricBuckets.use == MetricBuckets.use.sorted())
    }

    // MARK: docs/metrics.md

    private static let docsURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/metrics.md")

    /// The table rows of one `## ` section, as cells with surrounding spaces trimmed; header and rule rows dropped.
    private static func tableRows(section: String, in markdown: String) -> [[String]] {
        var rows: [[String]] = []
        var inSection = false
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("## ") {
                inSection = line == "## \(section)"
                continue
            }
            guard inSection, line.hasPrefix("|") else { continue }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
                .map { $0.trimmingCharacters(in: .whitespaces) }
            guard let first = cells.first, first.hasPrefix("`") else { continue }
            rows.append(cells)
        }
        return rows
    }

    /// `` `a`, `b` `` to `a, b`; an em dash means no labels.
    private static func plain(_ cell: String) -> String {
        cell == "—" ? "" : cell.replacingOccurrences(of: "`", with: "")
    }

    private static func describe(_ metric: LifeguardMetric) -> String {
        "\(metric.name) | \(metric.type.rawValue) | \(metric.labels.joined(separator: ", ")) | \(metric.unit)"
    }

    /// What is on one side only, one line each, for a failure message that says what to fix.
    private static func difference(code: [String], docs: [String]) -> String {
        let onlyCode = code.filter { !docs.contains($0) }.map { "  in the code, not in docs/metrics.md: \($0)" }
        let onlyDocs = docs.filter { !code.contains($0) }.map { "  in docs/metrics.md, not in the code: \($0)" }
        return (onlyCode + onlyDocs).joined(separator: "\n")
    }

    @Test("docs/metrics.md lists exactly the catalogue: names, types, labels and units")
    func docsReferenceMatchesCatalogue() throws {
        let markdown = try String(contentsOf: Self.docsURL, encoding: .utf8)
        let documented = Self.tableRows(section: "Reference", in: markdown).map { cells in
            // metric | type | labels | unit | meaning
            cells.count >= 4 ? [cells[0], cells[1], cells[2], cells[3]].map(Self.plain).joined(separator: " | ") : ""
        }
        let code = LifeguardMetric.allCases.map(Self.describe)
        #expect(Set(documented).count == documented.count, "docs/metrics.md lists a metric twice")
        let difference = Self.difference(code: code, docs: documented)
        #expect(difference.isEmpty, "docs/metrics.md and the catalogue differ:\n\(difference)")
    }

    @Test("docs/metrics.md lists every value of every bounded label")
    func docsLabelValuesMatchCatalogue() throws {
        let markdown = try String(contentsOf: Self.docsURL, encoding: .utf8)
        let documented = Self.tableRows(section: "Label values", in: markdown).map { cells in
            cells.map(Self.plain).joined(separator: " | ")
        }
        let code = LifeguardMetric.allCases.filter { !$0.labelValues.isEmpty }.map { metric in
            let label = metric.labels.contains("reason") ? "reason" : "state"
            return "\(metric.name) | \(label) | \(metric.labelValues.joined(separator: ", "))"
        }
        let difference = Self.difference(code: code, docs: documented)
        #expect(difference.isEmpty, "docs/metrics.md and the label enums differ:\n\(difference)")
    }
}
