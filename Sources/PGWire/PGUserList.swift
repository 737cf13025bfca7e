/// An `auth_file` in PgBouncer's `userlist.txt` format: one `"user" "password"` pair per line.
///
/// As in PgBouncer: fields are in double quotes, a doubled quote (`""`) inside a field is a literal quote,
/// text after the second field is ignored, and blank lines and lines starting with `;` are skipped. We also
/// skip lines starting with `#`. Unlike PgBouncer, which stops at the first broken line, every problem is an
/// error naming its line, and a user listed twice is an error.
public struct PGUserList: Sendable, Hashable {
    public private(set) var secrets: [String: PGAuthSecret]

    public init(secrets: [String: PGAuthSecret]) {
        self.secrets = secrets
    }

    public init(parsing text: String) throws(PGUserListError) {
        var secrets: [String: PGAuthSecret] = [:]
        var lineNumber = 0
        // Split on any newline: Swift treats "\r\n" as one Character, which a split on "\n" would miss.
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            lineNumber += 1
            var rest = line.drop { $0 == " " || $0 == "\t" || $0 == "\r" }
            if rest.isEmpty || rest.first == ";" || rest.first == "#" {
                continue
            }
            guard let user = Self.readQuoted(&rest) else {
                throw PGUserListError(line: lineNumber, message: "expected a user name in double quotes")
            }
            rest = rest.drop { $0 == " " || $0 == "\t" }
            guard let password = Self.readQuoted(&rest) else {
                throw PGUserListError(
                    line: lineNumber,
                    message: "expected a password or secret in double quotes after the user name"
                )
            }
            if user.isEmpty {
                throw PGUserListError(line: lineNumber, message: "the user name is empty")
            }
            if secrets[user] != nil {
                throw PGUserListError(line: lineNumber, message: "user \"\(user)\" is listed more than once")
            }
            do {
                secrets[user] = try PGAuthSecret(parsing: password)
            } catch {
                throw PGUserListError(line: lineNumber, message: "user \"\(user)\": \(error.description)")
            }
        }
        self.secrets = secrets
    }

    public subscript(user: String) -> PGAuthSecret? {
        self.secrets[user]
    }

    /// Reads `"..."` with `""` as an escaped quote; `nil` when the field does not start or end with a quote.
    private static func readQuoted(_ text: inout Substring) -> String? {
        guard text.first == "\"" else {
            return nil
        }
        var index = text.index(after: text.startIndex)
        var value = ""
        while index < text.endIndex {
            let character = text[index]
            if character == "\"" {
                let next = text.index(after: index)
                if next < text.endIndex && text[next] == "\"" {
                    value.append("\"")
                    index = text.index(after: next)
                    continue
                }
                text = text[next...]
                return value
            }
            value.append(character)
            index = text.index(after: index)
        }
        return nil
    }
}

/// A problem in an auth_file, with its 1-based line number. Never contains a password.
public struct PGUserListError: Error, Hashable, Sendable, CustomStringConvertible {
    public let line: Int
    public let message: String

    public var description: String {
        "line \(self.line): \(self.message)"
    }
}
