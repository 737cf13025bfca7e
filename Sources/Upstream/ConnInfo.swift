import CLibPQ
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An upstream PostgreSQL connection string, parsed by libpq itself.
///
/// Both forms every libpq client accepts are understood — a URI (`postgresql://user:pw@host:5432/db?sslmode=require`)
/// and `key=value` pairs — because the parsing is `PQconninfoParse`'s, not ours. Keys the string leaves unset are
/// filled from libpq's defaults (`PQconndefaults`): the `PG*` environment variables (`PGHOST`, `PGPORT`, `PGUSER`,
/// ...) of this process, then libpq's compiled-in defaults. Each option remembers where its value came from.
///
/// `description` is ``redacted``, so interpolating a `ConnInfo` into a log line never prints a password.
public struct ConnInfo: Sendable, Hashable, CustomStringConvertible {
    /// Where an option's value came from.
    public enum Source: Sendable, Hashable {
        /// Written in the connection string.
        case connectionString
        /// Taken by libpq from this environment variable (`PGHOST`, ...).
        case environment(String)
        /// libpq's compiled-in default (`port` 5432, `sslmode` prefer, the OS user name for `user`, ...).
        case libpqDefault
    }

    /// One option with a value.
    public struct Option: Sendable, Hashable {
        /// libpq's keyword: `host`, `port`, `user`, `password`, `dbname`, `sslmode`, ...
        public let keyword: String
        public let value: String
        public let source: Source
        /// libpq marks `password` and `sslpassword` as secrets (display character `*`).
        public let isSecret: Bool
    }

    /// Every option that has a value, in libpq's order, after defaults were applied.
    public let options: [Option]
    /// Keywords newer than the libpq Lifeguard links (`sslnegotiation`, PostgreSQL 17), written in the string:
    /// Lifeguard honours them itself and keeps them out of what it hands to libpq, which would refuse them.
    public let newerOptions: [Option]

    /// Parses `connectionString` with libpq and fills unset keys from libpq's defaults.
    ///
    /// - Throws: ``ConnInfoError`` with libpq's message, any password in it masked.
    public init(_ connectionString: String) throws(ConnInfoError) {
        let (libpqPart, newer) = Self.extractNewerOptions(connectionString)
        self.newerOptions = newer.map { Option(keyword: $0.0, value: $0.1, source: .connectionString, isSecret: false) }
        let parsed = try Self.parse(libpqPart)
        var options: [Option] = []
        let defaults = Self.libpqDefaults()
        for entry in parsed {
            if let value = entry.value {
                options.append(
                    Option(keyword: entry.keyword, value: value, source: .connectionString, isSecret: entry.isSecret)
                )
            } else if let fallback = defaults[entry.keyword] {
                options.append(
                    Option(
                        keyword: entry.keyword,
                        value: fallback.value,
                        source: fallback.source,
                        isSecret: entry.isSecret
                    )
                )
            }
        }
        self.options = options
    }

    /// The value of `keyword` (written, from the environment, or libpq's default), or nil.
    public subscript(keyword: String) -> String? {
        self.option(keyword)?.value
    }

    /// The option named `keyword` with its source, or nil when it has no value.
    public func option(_ keyword: String) -> Option? {
        self.options.first { $0.keyword == keyword } ?? self.newerOptions.first { $0.keyword == keyword }
    }

    /// Every option's value by keyword, passwords included: for building connections, never for printing.
    public var values: [String: String] {
        Dictionary(uniqueKeysWithValues: self.options.map { ($0.keyword, $0.value) })
    }

    /// The options written in the connection string itself (what a ping or connection passes on to libpq).
    public var explicitOptions: [Option] {
        self.options.filter { $0.source == .connectionString }
    }

    /// `host` as given (may be a comma-separated list or a Unix-socket directory). nil: libpq uses its Unix socket
    /// directory (/var/run/postgresql on Debian).
    public var host: String? { self["host"] }

    /// `hostaddr`, a numeric address that skips name resolution, when given.
    public var hostaddr: String? { self["hostaddr"] }

    /// The port as a number; nil when it is not a single integer (libpq then fails at connect time).
    public var port: Int? { self["port"].flatMap { Int($0) } }

    /// `user`; libpq defaults it to the operating-system user name.
    public var user: String? { self["user"] }

    /// `dbname` when given (in the string or `PGDATABASE`); nil means libpq uses the user name.
    public var dbname: String? { self["dbname"] }

    /// The password, when one is given. Never print it; see ``redacted``.
    public var password: String? { self["password"] }

    /// `sslmode` (libpq's default is `prefer`).
    public var sslmode: String? { self["sslmode"] }

    /// The options written in the string or taken from the environment, as a `key=value` string with every secret
    /// replaced by `********`. libpq's compiled-in defaults are left out to keep it short.
    public var redacted: String {
        (self.options + self.newerOptions)
            .filter { $0.source != .libpqDefault }
            .map { "\($0.keyword)=\($0.isSecret ? Self.mask : Self.quoted($0.value))" }
            .joined(separator: " ")
    }

    public var description: String { self.redacted }

    /// A `key=value` string that libpq parses back to the same options, password included. For handing to libpq
    /// only; never for printing.
    public var unredactedConnectionString: String {
        self.explicitOptions.map { "\($0.keyword)=\(Self.quoted($0.value))" }.joined(separator: " ")
    }

    /// What every printed secret is replaced with.
    public static let mask = "********"
}

extension ConnInfo {
    fileprivate struct ParsedEntry {
        var keyword: String
        var value: String?
        var isSecret: Bool
    }

    fileprivate static func parse(_ connectionString: String) throws(ConnInfoError) -> [ParsedEntry] {
        var errorMessage: UnsafeMutablePointer<CChar>? = nil
        guard let parsed = PQconninfoParse(connectionString, &errorMessage) else {
            let message = errorMessage.map { String(cString: $0) } ?? "out of memory"
            if let errorMessage { PQfreemem(errorMessage) }
            throw ConnInfoError(libpqMessage: message, connectionString: connectionString)
        }
        defer { PQconninfoFree(parsed) }
        return Self.entries(parsed)
    }

    /// Walks a `PQconninfoOption` array up to its terminating entry.
    fileprivate static func entries(_ array: UnsafeMutablePointer<PQconninfoOption>) -> [ParsedEntry] {
        var result: [ParsedEntry] = []
        var cursor = array
        while let keyword = cursor.pointee.keyword {
            result.append(
                ParsedEntry(
                    keyword: String(cString: keyword),
                    value: cursor.pointee.val.map { String(cString: $0) },
                    isSecret: cursor.pointee.dispchar.map { String(cString: $0) } == "*"
                )
            )
            cursor += 1
        }
        return result
    }

    /// libpq's defaults for this process: environment variables first, then compiled-in values.
    fileprivate static func libpqDefaults() -> [String: (value: String, source: Source)] {
        guard let defaults = PQconndefaults() else { return [:] }
        defer { PQconninfoFree(defaults) }
        var result: [String: (value: String, source: Source)] = [:]
        var cursor = defaults
        while let keywordPointer = cursor.pointee.keyword {
            if let value = cursor.pointee.val.map({ String(cString: $0) }) {
                let variable = cursor.pointee.envvar.map { String(cString: $0) }
                // PQconndefaults does not say which fallback it used; an environment variable that is set wins there.
                let source: Source =
                    if let variable, getenv(variable) != nil { .environment(variable) } else { .libpqDefault }
                result[String(cString: keywordPointer)] = (value, source)
            }
            cursor += 1
        }
        return result
    }

    /// Keywords Lifeguard understands that libpq 15 does not.
    static let newerKeywords = ["sslnegotiation"]

    /// The keywords the linked libpq knows.
    private static let libpqKeywords: Set<String> = {
        guard let defaults = PQconndefaults() else { return [] }
        defer { PQconninfoFree(defaults) }
        return Set(Self.entries(defaults).map(\.keyword))
    }()

    /// Takes the keywords of ``newerKeywords`` that the linked libpq does not know out of a URI's query or a
    /// `key=value` string; returns the rest and what was taken.
    fileprivate static func extractNewerOptions(_ text: String) -> (String, [(String, String)]) {
        let unknown = Self.newerKeywords.filter { !Self.libpqKeywords.contains($0) }
        guard !unknown.isEmpty, unknown.contains(where: { text.contains($0) }) else { return (text, []) }
        var taken: [(String, String)] = []
        if text.hasPrefix("postgresql://") || text.hasPrefix("postgres://"), let mark = text.firstIndex(of: "?") {
            var kept: [Substring] = []
            for pair in text[text.index(after: mark)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2, unknown.contains(String(parts[0])) {
                    taken.append((String(parts[0]), String(parts[1]).removingPercentEncoding ?? String(parts[1])))
                } else {
                    kept.append(pair)
                }
            }
            let base = String(text[..<mark])
            return (kept.isEmpty ? base : base + "?" + kept.joined(separator: "&"), taken)
        }
        var rest = text
        for keyword in unknown {
            let pattern = try! Regex("(^|\\s)\(keyword)\\s*=\\s*('[^']*'|\\S+)")
            while let match = rest.firstMatch(of: pattern) {
                let value = String(rest[match.range].split(separator: "=", maxSplits: 1)[1])
                    .trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "'"))
                taken.append((keyword, value))
                rest.replaceSubrange(match.range, with: " ")
            }
        }
        return (rest, taken)
    }

    /// Quotes a value the way libpq's `key=value` syntax wants it.
    static func quoted(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.contains { $0 == " " || $0 == "'" || $0 == "\\" || $0.isWhitespace }
        guard needsQuotes else { return value }
        let escaped = value.replacing("\\", with: "\\\\").replacing("'", with: "\\'")
        return "'\(escaped)'"
    }
}
