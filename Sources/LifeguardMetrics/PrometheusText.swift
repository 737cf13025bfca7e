/// Byte writers for the Prometheus text exposition format (version 0.0.4), appending straight into the scrape buffer.
///
/// The output is byte for byte what swift-prometheus 2.4 wrote, which Lifeguard used before: gauges as a `Double`'s
/// `description` (`5.0`), counters as integers, histogram bounds and sums as a `Duration` in seconds with the
/// attoseconds' trailing zeros cut (`0.0001`, `600.0`). Dashboards and the golden test compare that text.
enum PrometheusText {
    /// `name{label="value",...} ` or `name ` when there are no labels: the part of a sample line before its value.
    static func seriesPrefix(_ name: String, _ labels: [(String, String)]) -> [UInt8] {
        var prefix: [UInt8] = []
        prefix.append(contentsOf: name.utf8)
        if labels.isEmpty {
            prefix.append(UInt8(ascii: " "))
        } else {
            prefix.append(UInt8(ascii: "{"))
            appendLabels(labels, to: &prefix)
            prefix.append(contentsOf: "} ".utf8)
        }
        return prefix
    }

    /// `label="value",...` with each value escaped.
    static func appendLabels(_ labels: [(String, String)], to buffer: inout [UInt8]) {
        for (index, (name, value)) in labels.enumerated() {
            if index > 0 { buffer.append(UInt8(ascii: ",")) }
            buffer.append(contentsOf: name.utf8)
            buffer.append(contentsOf: #"=""#.utf8)
            appendEscapedLabelValue(value, to: &buffer)
            buffer.append(UInt8(ascii: "\""))
        }
    }

    /// Escapes backslash, double quote and line feed, the three characters the format requires escaping in a label
    /// value. Database and user names may hold any of them.
    static func appendEscapedLabelValue(_ value: String, to buffer: inout [UInt8]) {
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\\"): buffer.append(contentsOf: #"\\"#.utf8)
            case UInt8(ascii: "\""): buffer.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\n"): buffer.append(contentsOf: #"\n"#.utf8)
            default: buffer.append(byte)
            }
        }
    }

    /// A counter's value: a plain integer.
    static func appendInteger(_ value: Int, to buffer: inout [UInt8]) {
        if value < 0 { buffer.append(UInt8(ascii: "-")) }
        appendDigits(UInt64(value.magnitude), minimumWidth: 1, to: &buffer)
    }

    /// A gauge's integer value as `Double(value).description` writes it (`5.0`, `-1.0`).
    ///
    /// Below 2^53 in magnitude the conversion is exact and `description` prints the digits and `.0`, written here
    /// without building a String; beyond that `description` rounds and switches to exponent notation, so it is used.
    static func appendGaugeValue(_ value: Int, to buffer: inout [UInt8]) {
        guard value.magnitude < 1 << 53 else {
            buffer.append(contentsOf: Double(value).description.utf8)
            return
        }
        appendInteger(value, to: &buffer)
        buffer.append(contentsOf: ".0".utf8)
    }

    /// A non-negative duration in seconds: whole seconds, `.`, then the attoseconds' 18 digits without their trailing
    /// zeros (at least one digit). Exact, unlike a `Double`: 0.1 s + 0.2 s prints `0.3`.
    static func appendSeconds(_ duration: Duration, to buffer: inout [UInt8]) {
        let (seconds, attoseconds) = duration.components
        precondition(seconds >= 0 && attoseconds >= 0, "negative durations are clamped before they get here")
        appendDigits(UInt64(seconds), minimumWidth: 1, to: &buffer)
        buffer.append(UInt8(ascii: "."))
        guard attoseconds > 0 else {
            buffer.append(UInt8(ascii: "0"))
            return
        }
        var fraction = UInt64(attoseconds)
        var width = 18
        while fraction % 10 == 0 {
            fraction /= 10
            width -= 1
        }
        appendDigits(fraction, minimumWidth: width, to: &buffer)
    }

    /// Decimal digits of `value`, left-padded with zeros to `minimumWidth`: written backwards, then reversed in place,
    /// so that nothing is allocated beyond the buffer's own growth (String interpolation would allocate per number).
    private static func appendDigits(_ value: UInt64, minimumWidth: Int, to buffer: inout [UInt8]) {
        // Most samples of a quiet pool are 0: one byte, no reversal.
        if value < 10 && minimumWidth <= 1 {
            buffer.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value))
            return
        }
        let start = buffer.endIndex
        var rest = value
        repeat {
            buffer.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10))
            rest /= 10
        } while rest > 0
        while buffer.endIndex - start < minimumWidth {
            buffer.append(UInt8(ascii: "0"))
        }
        // Swapped in the array itself: reversing `buffer[start...]` would copy the slice first.
        var low = start
        var high = buffer.endIndex - 1
        while low < high {
            buffer.swapAt(low, high)
            low += 1
            high -= 1
        }
    }
}
