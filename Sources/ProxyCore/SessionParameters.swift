import PGWire

/// How a server reports values that clients set (`client_encoding` `utf8` → `UTF8`, `DateStyle` `iso` → `ISO, MDY`),
/// learned from the ParameterStatus that answered Lifeguard's `SET`s.
public struct ParameterSpellings: Sendable {
    /// Per parameter, at most this many spellings are kept (application names can be unique per process).
    public static let limitPerParameter = 256

    private var reported: [String: [String: String]] = [:]

    public init() {}

    /// What the server reports for `name` set to `value`, if known. PostgreSQL keeps a printable ASCII
    /// `application_name` shorter than 64 bytes as it is; other values must have been seen.
    public func spelling(of name: String, _ value: String) -> String? {
        if name == "application_name", value.utf8.count < 64, value.utf8.allSatisfy({ (32...126).contains($0) }) {
            return value
        }
        return self.reported[name]?[value]
    }

    /// Records the reports of `SET`s: `changes` as asked, `reported` as the server reported them (same names).
    public mutating func learn(_ changes: [(name: String, value: String)], _ reported: [(name: String, value: String)])
    {
        for (name, value) in reported {
            guard let asked = changes.last(where: { $0.name == name })?.value else { continue }
            if self.reported[name]?[asked] == value { continue }
            if (self.reported[name]?.count ?? 0) >= Self.limitPerParameter { continue }
            self.reported[name, default: [:]][asked] = value
        }
    }
}

/// The run-time parameters a client expects its server connection to have, and the `SET`s that make a server match.
///
/// In transaction and statement mode a client gets a different server connection for each transaction, so, like
/// PgBouncer, Lifeguard remembers what the client asked for (startup packet, then the ParameterStatus messages it
/// receives) and sets it on each server it is given that differs.
public struct SessionParameters: Sendable, Equatable {
    /// Reported by PostgreSQL in ParameterStatus (`GUC_REPORT`), so a server's value is always known. A greeting asks
    /// this twice of every parameter the server reported: the length picks the one name to compare (a switch over
    /// the names compared up to six strings per call, ~15,000 instructions per login), and nothing is hashed.
    public static func isReported(_ name: String) -> Bool {
        switch name.utf8.count {
        case 8: name == "TimeZone"
        case 9: name == "DateStyle"
        case 13: name == "IntervalStyle"
        case 15: name == "client_encoding"
        case 16: name == "application_name"
        case 27: name == "standard_conforming_strings"
        default: false
        }
    }
    /// Also applied from the startup packet, though PostgreSQL 15 does not report them.
    public static let unreported: Set<String> = ["search_path", "extra_float_digits"]

    /// Startup parameters that are not run-time settings.
    private static let notSettings: Set<String> = ["user", "database", "options", "replication"]

    /// Wanted values in the order they were first given.
    public private(set) var values: [(name: String, value: String)] = []

    public init() {}

    /// The client's startup packet: tracked parameters and `-c name=value` settings from `options`.
    public init(startup: PGStartupMessage) {
        for parameter in startup.parameters where !Self.notSettings.contains(parameter.name) {
            guard !parameter.name.hasPrefix("_pq_.") else { continue }
            if Self.isReported(parameter.name) || Self.unreported.contains(parameter.name) {
                self[parameter.name] = parameter.value
            }
        }
        if let options = startup["options"] {
            for (name, value) in Self.settings(inOptions: options) { self[name] = value }
        }
    }

    public subscript(name: String) -> String? {
        get { self.values.first { $0.name == name }?.value }
        set {
            if let index = self.values.firstIndex(where: { $0.name == name }) {
                // An unchanged value keeps the storage that other clients share (see `isIdentical(to:)`).
                guard self.values[index].value != newValue else { return }
                if let newValue { self.values[index].value = newValue } else { self.values.remove(at: index) }
            } else if let newValue {
                self.values.append((name, newValue))
            }
        }
    }

    /// The names whose wanted value differs from the server's (a parameter the server does not know is set too).
    public func differences(from server: [String: String]) -> [(name: String, value: String)] {
        self.values.filter { server[$0.name] != $0.value }
    }

    /// `SET name TO 'value'; ...` for `changes`, as one simple query.
    public static func setStatement(_ changes: [(name: String, value: String)]) -> String {
        changes.map { "SET \(Self.identifier($0.name)) TO \(Self.literal($0.value))" }.joined(separator: "; ")
    }

    /// `-c name=value`, `-cname=value` and `--name=value` from a libpq `options` string; backslash escapes a space.
    static func settings(inOptions options: String) -> [(String, String)] {
        var words: [String] = []
        var current = ""
        var escaped = false
        for character in options {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == " " || character == "\t" {
                if !current.isEmpty { words.append(current) }
                current = ""
            } else {
                current.append(character)
            }
        }
        if !current.isEmpty { words.append(current) }
        var settings: [(String, String)] = []
        var index = 0
        while index < words.count {
            var word = words[index]
            if word == "-c", index + 1 < words.count {
                index += 1
                word = words[index]
            } else if word.hasPrefix("-c") {
                word = String(word.dropFirst(2))
            } else if word.hasPrefix("--") {
                word = String(word.dropFirst(2))
            } else {
                index += 1
                continue
            }
            if let equals = word.firstIndex(of: "=") {
                let name = String(word[..<equals]).replacing("-", with: "_")
                settings.append((name, String(word[word.index(after: equals)...])))
            }
            index += 1
        }
        return settings
    }

    private static func identifier(_ name: String) -> String {
        // Names come from the client; quoting keeps them one identifier whatever they contain.
        "\"" + name.replacing("\"", with: "\"\"") + "\""
    }

    private static func literal(_ value: String) -> String {
        if value.contains("\\") {
            return "E'" + value.replacing("\\", with: "\\\\").replacing("'", with: "''")
                + "'"
        }
        return "'" + value.replacing("'", with: "''") + "'"
    }

    /// True when both share one storage, and so are equal. Safe because both are alive while compared: the
    /// storage cannot have been freed and reused, and shared storage is copied before it is changed.
    public func isIdentical(to other: SessionParameters) -> Bool {
        self.values.withUnsafeBufferPointer { mine in
            other.values.withUnsafeBufferPointer { theirs in
                mine.baseAddress == theirs.baseAddress && mine.count == theirs.count
            }
        }
    }

    public static func == (lhs: SessionParameters, rhs: SessionParameters) -> Bool {
        lhs.values.elementsEqual(rhs.values) { $0.name == $1.name && $0.value == $1.value }
    }
}
