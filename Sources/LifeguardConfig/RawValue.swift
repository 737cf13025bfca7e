import TOMLKit
import Upstream

/// A value as a source gave it, before it is checked: TOML has types, environment variables and flags are strings.
enum RawValue: Sendable {
    case string(String)
    case integer(Int)
    case float(Double)
    case boolean(Bool)
    /// A TOML table, array or date where a scalar belongs; the text says which ("a table").
    case unsupported(String)

    init(_ toml: any TOMLValueConvertible) {
        switch toml.type {
        case .string: self = .string(toml.string ?? "")
        case .int: self = .integer(toml.int ?? 0)
        case .double: self = .float(toml.double ?? 0)
        case .bool: self = .boolean(toml.bool ?? false)
        case .table: self = .unsupported("a table")
        case .array: self = .unsupported("an array")
        case .date, .time, .dateTime: self = .unsupported("a date or time")
        }
    }

    /// How the value is echoed in a message: strings quoted, URI passwords masked.
    var shown: String {
        switch self {
        case .string(let text): Self.quote(SecretScrubber.maskingURIPasswords(in: text))
        case .integer(let value): String(value)
        case .float(let value): String(value)
        case .boolean(let value): String(value)
        case .unsupported(let kind): kind
        }
    }

    static func quote(_ text: String) -> String {
        var result = "\""
        for character in text {
            switch character {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            default: result.append(character)
            }
        }
        return result + "\""
    }
}

/// The checks every source shares: the same input gives the same value and the same message from a file, an
/// environment variable or a flag. A failure is "expected ..., got ..." without location or key.
enum ValueParser {
    static func integer(_ raw: RawValue, minimum: Int) -> Result<Int, Rejection> {
        let expected = "expected an integer >= \(minimum), got \(raw.shown)"
        let value: Int? =
            switch raw {
            case .integer(let value): value
            case .string(let text): Int(text.trimmingWhitespace())
            case .float(let value) where value.rounded() == value && abs(value) < 1e15: Int(value)
            default: nil
            }
        guard let value, value >= minimum else { return .failure(Rejection(expected)) }
        return .success(value)
    }

    static func boolean(_ raw: RawValue) -> Result<Bool, Rejection> {
        switch raw {
        case .boolean(let value): return .success(value)
        case .string(let text):
            switch text.trimmingWhitespace().lowercased() {
            case "true", "yes", "on", "1": return .success(true)
            case "false", "no", "off", "0": return .success(false)
            default: break
            }
        case .integer(let value) where value == 0 || value == 1: return .success(value == 1)
        default: break
        }
        return .failure("expected true or false, got \(raw.shown)")
    }

    /// `250ms`, `30s`, `5m`, `1h`, or plain seconds (integer or decimal); with `allowOff`, `off` or 0 means nil.
    static func duration(_ raw: RawValue, allowOff: Bool, positive: Bool = false) -> Result<Duration?, Rejection> {
        let accepted =
            "expected a duration such as 250ms, 30s, 5m, 1h or plain seconds"
            + (allowOff ? ", or 0 or \"off\" to turn it off" : positive ? " (more than 0)" : "")
        let failure = Result<Duration?, Rejection>.failure(Rejection("\(accepted), got \(raw.shown)"))
        let micros: Int64?
        switch raw {
        case .integer(let seconds):
            let (value, overflow) = Int64(seconds).multipliedReportingOverflow(by: 1_000_000)
            micros = overflow ? nil : value
        case .float(let seconds):
            micros = seconds.isFinite && abs(seconds) < 1e12 ? Int64((seconds * 1e6).rounded()) : nil
        case .string(let text):
            let trimmed = text.trimmingWhitespace().lowercased()
            if allowOff && trimmed == "off" { return .success(nil) }
            micros = Self.microseconds(trimmed)
        default: micros = nil
        }
        guard let micros, micros >= 0 else { return failure }
        if micros == 0 {
            if allowOff { return .success(nil) }
            if positive { return failure }
        }
        return .success(.microseconds(micros))
    }

    private static func microseconds(_ text: String) -> Int64? {
        guard let match = text.wholeMatch(of: /([0-9]+)(?:\.([0-9]+))?\s*(ms|s|m|h)?/) else { return nil }
        let unit: Int64 =
            switch match.3 {
            case "ms": 1_000
            case "m": 60_000_000
            case "h": 3_600_000_000
            default: 1_000_000
            }
        guard let whole = Int64(match.1) else { return nil }
        // Exact decimal arithmetic in millionths, so "0.1" and "100ms" are the same duration.
        let digits = (match.2.map(String.init) ?? "").prefix(6)
        let fraction = digits + String(repeating: "0", count: 6 - digits.count)
        guard let millionths = Int64(fraction) else { return nil }
        let (scaled, overflow1) = whole.multipliedReportingOverflow(by: 1_000_000)
        let (total, overflow2) = (scaled + millionths).multipliedReportingOverflow(by: unit)
        guard !overflow1, !overflow2 else { return nil }
        return total / 1_000_000
    }

    static func listenAddress(_ raw: RawValue) -> Result<ListenAddress, Rejection> {
        let expected = "expected HOST:PORT with a port from 0 to 65535 (such as 127.0.0.1:6432 or [::1]:6432)"
        guard case .string(let text) = raw else { return .failure("\(expected), got \(raw.shown)") }
        let trimmed = text.trimmingWhitespace()
        let host: Substring
        let portText: Substring
        if trimmed.hasPrefix("[") {
            guard let close = trimmed.firstIndex(of: "]"), trimmed[close...].hasPrefix("]:") else {
                return .failure("\(expected), got \(raw.shown)")
            }
            host = trimmed[trimmed.index(after: trimmed.startIndex)..<close]
            portText = trimmed[trimmed.index(close, offsetBy: 2)...]
            guard host.contains(":"), host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                return .failure("\(expected), got \(raw.shown): \"\(host)\" is not an IPv6 address")
            }
        } else {
            guard let colon = trimmed.lastIndex(of: ":"), !trimmed[..<colon].contains(":") else {
                return .failure("\(expected), got \(raw.shown)")
            }
            host = trimmed[..<colon]
            portText = trimmed[trimmed.index(after: colon)...]
            let hostCharacters = host.allSatisfy {
                $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-")
            }
            guard !host.isEmpty, hostCharacters, !host.hasPrefix("."), !host.hasPrefix("-") else {
                return .failure("\(expected), got \(raw.shown): \"\(host)\" is not a host name or address")
            }
            let labels = host.split(separator: ".", omittingEmptySubsequences: false)
            if labels.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }),
                labels.count != 4 || !labels.allSatisfy({ UInt8($0) != nil })
            {
                return .failure("\(expected), got \(raw.shown): \"\(host)\" is not an IPv4 address")
            }
        }
        guard let port = Int(portText), (0...65535).contains(port), portText.allSatisfy(\.isNumber) else {
            return .failure("\(expected), got \(raw.shown): the port must be a number from 0 to 65535")
        }
        return .success(ListenAddress(host: String(host), port: port))
    }

    static func choice<Choice: RawRepresentable & CaseIterable>(
        _ raw: RawValue,
        as: Choice.Type
    ) -> Result<Choice, Rejection> where Choice.RawValue == String {
        if case .string(let text) = raw, let value = Choice(rawValue: text.trimmingWhitespace().lowercased()) {
            return .success(value)
        }
        let names = Choice.allCases.map(\.rawValue)
        let list = names.dropLast().joined(separator: ", ") + " or " + names.last!
        return .failure("expected \(list), got \(raw.shown)")
    }

    /// PgBouncer's `tls_protocols`: a comma- or space-separated list of `tlsv1.2`, `tlsv1.3`, or `secure` (both) /
    /// `all` / `default` (the same here: older versions are not offered at all).
    static func tlsProtocols(_ text: String) -> Result<Set<TLSProtocolVersion>, Rejection> {
        var versions: Set<TLSProtocolVersion> = []
        for word in text.lowercased().split(whereSeparator: { $0 == "," || $0 == " " || $0 == ":" }) {
            switch word {
            case "secure", "all", "default", "legacy": versions.formUnion(TLSProtocolVersion.allCases)
            case "tlsv1.0", "tlsv1.1", "tlsv1":
                return .failure("\(word) is not offered (insecure); use tlsv1.2 and tlsv1.3")
            default:
                guard let version = TLSProtocolVersion(rawValue: String(word)) else {
                    return .failure("expected tlsv1.2, tlsv1.3, secure or all, got \"\(word)\"")
                }
                versions.insert(version)
            }
        }
        return versions.isEmpty ? .failure("expected at least one of tlsv1.2 and tlsv1.3") : .success(versions)
    }

    /// Permission bits as PgBouncer writes them: octal (`0777`, `0o770`, `770`), as a string or a number.
    static func fileMode(_ raw: RawValue) -> Result<Int, Rejection> {
        let expected = "expected octal permission bits such as 0777 or 0770"
        let text: String
        switch raw {
        case .string(let value): text = value.trimmingWhitespace()
        case .integer(let value): text = String(value)
        default: return .failure("\(expected), got \(raw.shown)")
        }
        let digits = text.hasPrefix("0o") ? String(text.dropFirst(2)) : text
        guard let mode = Int(digits, radix: 8), (0...0o777).contains(mode) else {
            return .failure("\(expected), got \(raw.shown)")
        }
        return .success(mode)
    }

    static func string(_ raw: RawValue, what: String = "a string") -> Result<String, Rejection> {
        guard case .string(let text) = raw else { return .failure("expected \(what), got \(raw.shown)") }
        return .success(text)
    }

    /// A comma-separated list of user names, as PgBouncer's `admin_users`: spaces around names are dropped, and so are
    /// empty entries.
    static func userList(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
    }

    /// A connection string libpq accepts, whose port (if given) is a real port. Never echoes the string.
    static func connectionString(_ raw: RawValue) -> Result<ConnInfo, Rejection> {
        guard case .string(let text) = raw else {
            return .failure("expected a connection string (URI or key=value), got \(raw.shown)")
        }
        guard !text.trimmingWhitespace().isEmpty else {
            return .failure("expected a connection string (URI or key=value), got an empty string")
        }
        let info: ConnInfo
        do {
            info = try ConnInfo(text)
        } catch {
            return .failure(Rejection(error.description))
        }
        if let port = info.option("port"), port.source == .connectionString {
            let parts = port.value.split(separator: ",", omittingEmptySubsequences: false)
            for part in parts where Int(part).map({ !(1...65535).contains($0) }) ?? !part.isEmpty {
                return .failure(
                    "invalid connection string: port \(RawValue.quote(String(part))) is not a number from 1 to 65535"
                )
            }
        }
        return .success(info)
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        String(self.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}

/// Why a value was refused: "expected ..., got ...", without location or key.
struct Rejection: Error, ExpressibleByStringInterpolation {
    let message: String

    init(_ message: String) {
        self.message = message
    }

    init(stringLiteral value: String) {
        self.message = value
    }
}
