import LifeguardMetrics

/// Helpers that read the text exposition back, so that tests can say which samples changed.
enum Exposition {
    /// Sample lines keyed by series (name and labels), valued by their value text. Comment lines are skipped.
    static func samples(_ text: String) -> [String: String] {
        var samples: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            samples[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        return samples
    }

    /// The exposition without the `process_*` families, whose values change on their own.
    static func withoutProcess(_ metrics: LifeguardMetrics) -> String {
        let text = metrics.render()
        guard let start = text.range(of: "# HELP process_") else { return text }
        return String(text[..<start.lowerBound])
    }

    /// The samples whose value differs between two expositions (added series included, removed ones as "absent").
    static func changes(from before: String, to after: String) -> [String: String] {
        let old = samples(before)
        let new = samples(after)
        var changed: [String: String] = [:]
        for (series, value) in new where old[series] != value {
            changed[series] = value
        }
        for series in old.keys where new[series] == nil {
            changed[series] = "absent"
        }
        return changed
    }

    /// A line diff for failure messages: `-` expected only, `+` actual only, with line numbers.
    static func lineDiff(expected: String, actual: String) -> String {
        let expectedLines = expected.split(separator: "\n", omittingEmptySubsequences: false)
        let actualLines = actual.split(separator: "\n", omittingEmptySubsequences: false)
        var report: [String] = []
        for index in 0..<max(expectedLines.count, actualLines.count) {
            let want = index < expectedLines.count ? expectedLines[index] : nil
            let got = index < actualLines.count ? actualLines[index] : nil
            guard want != got else { continue }
            if let want { report.append("line \(index + 1) - \(want)") }
            if let got { report.append("line \(index + 1) + \(got)") }
            if report.count > 40 {
                report.append("...")
                break
            }
        }
        return report.joined(separator: "\n")
    }
}
