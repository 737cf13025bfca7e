/// The line on which each key of a TOML document is written.
///
/// TOMLKit reports positions only for syntax errors, so the keys of a valid document are located by a light scan of
/// the text: table headers (`[databases.app]`) and `key =` lines. Keys it cannot place (inside inline tables, say)
/// simply have no line; messages then name the file alone.
struct TOMLLineIndex {
    private var lines: [[String]: Int] = [:]

    init(_ text: String) {
        var table: [String] = []
        var multilineDelimiter: String? = nil
        for (offset, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = offset + 1
            if let delimiter = multilineDelimiter {
                if line.occurrences(of: delimiter) % 2 == 1 { multilineDelimiter = nil }
                continue
            }
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.hasPrefix("[") {
                let isArray = trimmed.hasPrefix("[[")
                let inner = trimmed.dropFirst(isArray ? 2 : 1)
                guard let close = Self.unquotedIndex(of: "]", in: inner) else { continue }
                table = Self.keyPath(inner[..<close])
                if self.lines[table] == nil { self.lines[table] = number }
                continue
            }
            guard let equals = Self.unquotedIndex(of: "=", in: trimmed) else { continue }
            let key = Self.keyPath(trimmed[..<equals])
            guard !key.isEmpty else { continue }
            if self.lines[table + key] == nil { self.lines[table + key] = number }
            let value = trimmed[trimmed.index(after: equals)...]
            for delimiter in ["\"\"\"", "'''"] where value.occurrences(of: delimiter) % 2 == 1 {
                multilineDelimiter = delimiter
            }
        }
    }

    /// The line of `path` (`["databases", "app", "pool_size"]`), if the scan found it.
    func line(_ path: [String]) -> Int? {
        self.lines[path]
    }

    /// `a."b.c" . d` → `["a", "b.c", "d"]`; text that is not a key path gives `[]`, which matches nothing.
    private static func keyPath(_ text: Substring) -> [String] {
        var parts: [String] = []
        var current = ""
        var quote: Character? = nil
        for character in text {
            if let open = quote {
                if character == open { quote = nil } else { current.append(character) }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == "." {
                parts.append(current)
                current = ""
            } else if character != " " && character != "\t" {
                // Bare keys hold no spaces; spaces around dots are allowed and dropped.
                current.append(character)
            }
        }
        parts.append(current)
        return parts.allSatisfy { !$0.isEmpty } ? parts : []
    }

    private static func unquotedIndex(of target: Character, in text: Substring) -> Substring.Index? {
        var quote: Character? = nil
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            if let open = quote {
                if character == "\\", open == "\"" {
                    index = text.index(after: index)
                    if index == text.endIndex { break }
                } else if character == open {
                    quote = nil
                }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == "#" {
                return nil
            } else if character == target {
                return index
            }
            index = text.index(after: index)
        }
        return nil
    }
}

extension StringProtocol {
    fileprivate func occurrences(of needle: String) -> Int {
        self.ranges(of: needle).count
    }
}
