import Foundation
import Upstream

/// A PgBouncer configuration file (`pgbouncer.ini`) read as PgBouncer reads it, before any of it means anything to
/// Lifeguard: sections, `key = value` lines and `%include` files, each value with the file and line it came from.
///
/// The syntax is PgBouncer's: a line whose first non-blank character is `;` or `#` is a comment (later on a line they
/// are part of the value), `[name]` starts a section, a key is bare (`A-Z a-z 0-9 _ . - *`) or quoted (`'...'` or
/// `"..."`, where `""` stands for one `"`), and the value runs to the end of the line without its surrounding blanks.
/// `%include FILE` reads another file in place, ten levels deep at most: it starts in the section in force and the
/// section it ends in stays in force, as in PgBouncer. A relative FILE is taken relative to the directory of the file
/// that includes it (PgBouncer takes it relative to its working directory).
struct PgBouncerINI {
    /// One `key = value` line.
    struct Entry {
        /// `pgbouncer`, `databases`, `users` or `peers`.
        var section: String
        var key: String
        var value: String
        var path: String
        var line: Int

        var origin: SettingOrigin { .file(path: self.path, line: self.line) }
    }

    /// The sections PgBouncer knows.
    static let sections: Set<String> = ["pgbouncer", "databases", "users", "peers"]

    /// How deep `%include` may nest, as in PgBouncer.
    static let maximumIncludeDepth = 10

    private(set) var entries: [Entry] = []
    private(set) var problems: [ConfigurationError.Problem] = []
    /// Every file read, the top one first.
    private(set) var files: [String] = []
    /// The section in force while reading.
    private var section: String? = nil

    /// Reads `text`, the contents of `path`, and the files it includes (read through `readFile`).
    init(path: String, text: String, readFile: (String) -> String? = PgBouncerINI.contents(of:)) {
        self.read(path: path, text: text, depth: 0, readFile: readFile)
    }

    /// The UTF-8 text of a file, or nil.
    static func contents(of path: String) -> String? {
        FileManager.default.contents(atPath: path).flatMap { String(data: $0, encoding: .utf8) }
    }

    /// True when `text` is a PgBouncer file rather than Lifeguard's TOML: a line `[pgbouncer]`, or (only when the text
    /// is not valid TOML, which the caller decides) a `[databases]`, `[users]` or `[peers]` section or a `%include`.
    static func looksLikePgBouncer(_ text: String, validTOML: Bool) -> Bool {
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingWhitespace()
            if trimmed == "[pgbouncer]" { return true }
            if !validTOML && (["[databases]", "[users]", "[peers]"].contains(trimmed) || trimmed.hasPrefix("%include"))
            {
                return true
            }
        }
        return false
    }

    private mutating func read(path: String, text: String, depth: Int, readFile: (String) -> String?) {
        self.files.append(path)
        for (offset, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = offset + 1
            let line = rawLine.trimmingWhitespace()
            let location = "\(path):\(number)"
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("%include"), line.dropFirst(8).first?.isWhitespace == true {
                let named = line.dropFirst(8).trimmingWhitespace()
                guard depth < Self.maximumIncludeDepth else {
                    self.report(location, "%include nested more than \(Self.maximumIncludeDepth) levels deep")
                    continue
                }
                let included = Self.resolve(named, relativeTo: path)
                guard let contents = readFile(included) else {
                    let reason = FileManager.default.fileExists(atPath: included) ? "cannot read" : "no such file"
                    self.report(location, "%include: \(reason): \(RawValue.quote(included))")
                    continue
                }
                self.read(path: included, text: contents, depth: depth + 1, readFile: readFile)
                continue
            }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]") else {
                    self.report(location, "expected a section header such as [pgbouncer], got \(RawValue.quote(line))")
                    continue
                }
                let name = String(line.dropFirst().dropLast())
                guard Self.sections.contains(name) else {
                    self.report(
                        location,
                        "unknown section [\(name)]; PgBouncer's are [databases], [users], "
                            + "[pgbouncer] and [peers]"
                    )
                    self.section = nil
                    continue
                }
                self.section = name
                continue
            }
            guard let (key, value) = Self.keyAndValue(line) else {
                self.report(location, "expected key = value, a [section] header, a comment or %include FILE")
                continue
            }
            guard let section = self.section else {
                self.report(location, "\(key) is outside any section; put it under [pgbouncer] or [databases]")
                continue
            }
            self.entries.append(Entry(section: section, key: key, value: value, path: path, line: number))
        }
    }

    /// `%include` names relative to the including file's directory.
    static func resolve(_ name: String, relativeTo path: String) -> String {
        if name.hasPrefix("/") { return name }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        return directory.appendingPathComponent(name).standardizedFileURL.path
    }

    /// A bare or quoted key, `=`, and the rest of the line (trimmed); nil when the line is not one.
    static func keyAndValue(_ line: String) -> (String, String)? {
        var key = ""
        var rest = Substring(line)
        if let quote = rest.first, quote == "'" || quote == "\"" {
            rest = rest.dropFirst()
            var closed = false
            while let character = rest.first {
                rest = rest.dropFirst()
                if character == quote {
                    // Only double quotes double up (SQL identifier quoting).
                    if quote == "\"" && rest.first == "\"" {
                        key.append("\"")
                        rest = rest.dropFirst()
                        continue
                    }
                    closed = true
                    break
                }
                key.append(character)
            }
            guard closed, !key.isEmpty else { return nil }
        } else {
            let bare = rest.prefix { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-*".contains($0)) }
            key = String(bare)
            rest = rest.dropFirst(bare.count)
            guard !key.isEmpty else { return nil }
        }
        rest = rest.drop { $0 == " " || $0 == "\t" }
        guard rest.first == "=" else { return nil }
        return (key, rest.dropFirst().trimmingWhitespace())
    }

    private mutating func report(_ location: String, _ message: String) {
        self.problems.append(.init(location: location, key: nil, message: message))
    }
}

/// A PgBouncer connection string from `[databases]`, `[users]` or `[peers]`: `key=value` pairs separated by blanks,
/// a value either bare (up to the next blank) or in single quotes with `''` for one quote. Unlike libpq's, no
/// backslash escapes and no URIs; an empty value is an error.
struct PgBouncerConnectionString {
    var pairs: [(key: String, value: String)]

    /// Parses `text`; the failure says what is wrong, never echoing a value.
    static func parse(_ text: String) -> Result<PgBouncerConnectionString, Rejection> {
        var pairs: [(key: String, value: String)] = []
        var rest = Substring(text)
        func skipBlanks() { rest = rest.drop { $0 == " " || $0 == "\t" } }
        skipBlanks()
        while !rest.isEmpty {
            let key = rest.prefix { $0 != "=" && $0 != " " && $0 != "\t" }
            rest = rest.dropFirst(key.count)
            skipBlanks()
            guard !key.isEmpty, rest.first == "=" else {
                return .failure(
                    "syntax error in connection string: expected key=value, near \(RawValue.quote(String(key)))"
                )
            }
            rest = rest.dropFirst()
            skipBlanks()
            var value = ""
            if rest.first == "'" {
                rest = rest.dropFirst()
                var closed = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if character == "'" {
                        if rest.first == "'" {
                            value.append("'")
                            rest = rest.dropFirst()
                            continue
                        }
                        closed = true
                        break
                    }
                    value.append(character)
                }
                guard closed else {
                    return .failure("syntax error in connection string: the quoted value of \(key) has no closing '")
                }
            } else {
                let bare = rest.prefix { $0 != " " && $0 != "\t" }
                value = String(bare)
                rest = rest.dropFirst(bare.count)
            }
            guard !value.isEmpty else {
                return .failure("syntax error in connection string: \(key) has an empty value")
            }
            pairs.append((String(key), value))
            skipBlanks()
        }
        return .success(PgBouncerConnectionString(pairs: pairs))
    }

    /// The last value given for `key`.
    func value(_ key: String) -> String? {
        self.pairs.last { $0.key == key }?.value
    }
}
