/// Finds the password-like parts of connection strings and masks them in text meant for people.
///
/// libpq's parse errors quote the offending input, and that can be the password itself
/// (`invalid percent-encoded token: "s3cr%zzet"`) or a whole URI with its user-info. Messages built from untrusted
/// input go through ``scrub(_:secretsFrom:)`` before anyone sees them.
public enum SecretScrubber {
    /// Password candidates in `text`: the password of every `scheme://user:password@` URI, and every value after a
    /// `password=` (or `sslpassword=`) keyword — including the following words up to the next `key=`, because an
    /// unquoted password with spaces is echoed by libpq one word at a time.
    public static func secrets(in text: String) -> [String] {
        var found: [String] = []
        found += Self.uriPasswords(in: text)
        found += Self.keywordPasswords(in: text)
        var unique: [String] = []
        for secret in found where !secret.isEmpty && !unique.contains(secret) {
            unique.append(secret)
        }
        return unique
    }

    /// `message` with every URI password, and every secret found in `source`, replaced by ``ConnInfo/mask``.
    public static func scrub(_ message: String, secretsFrom source: String) -> String {
        Self.scrub(message, secrets: Self.secrets(in: source))
    }

    /// `message` with every URI password and each of `secrets` replaced by ``ConnInfo/mask``. Secrets shorter than
    /// three characters are masked only inside double quotes (where libpq echoes input), so that a one-letter password
    /// cannot garble the rest of the message.
    public static func scrub(_ message: String, secrets: [String]) -> String {
        var result = Self.maskingURIPasswords(in: message)
        let ordered = secrets.filter { !$0.isEmpty }.sorted { $0.count > $1.count }
        for secret in ordered where secret.count >= 3 {
            result = result.replacing(secret, with: ConnInfo.mask)
        }
        let short = ordered.filter { $0.count < 3 }
        guard !short.isEmpty else { return result }
        // Quoted segments alternate with unquoted ones when split on the quote character.
        var parts = result.split(separator: "\"", omittingEmptySubsequences: false).map(String.init)
        for index in parts.indices where index % 2 == 1 {
            for secret in short {
                parts[index] = parts[index].replacing(secret, with: ConnInfo.mask)
            }
        }
        return parts.joined(separator: "\"")
    }

    /// `text` with the password of every `scheme://user:password@host` replaced by ``ConnInfo/mask``.
    public static func maskingURIPasswords(in text: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let separator = rest.firstRange(of: "://") {
            result += rest[..<separator.upperBound]
            rest = rest[separator.upperBound...]
            let authorityEnd = rest.firstIndex(where: Self.endsAuthority) ?? rest.endIndex
            let authority = rest[..<authorityEnd]
            if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
                result += authority[...colon]
                result += ConnInfo.mask
                result += authority[at...]
            } else {
                result += authority
            }
            rest = rest[authorityEnd...]
        }
        return result + rest
    }

    private static func endsAuthority(_ character: Character) -> Bool {
        character == "/" || character == "?" || character == "#" || character == "\"" || character == "'"
            || character.isWhitespace
    }

    private static func uriPasswords(in text: String) -> [String] {
        var found: [String] = []
        var rest = Substring(text)
        while let separator = rest.firstRange(of: "://") {
            rest = rest[separator.upperBound...]
            let authority = rest[..<(rest.firstIndex(where: Self.endsAuthority) ?? rest.endIndex)]
            if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
                let password = String(authority[authority.index(after: colon)..<at])
                found.append(password)
                if let decoded = Self.percentDecoded(password), decoded != password { found.append(decoded) }
            }
        }
        return found
    }

    private static func keywordPasswords(in text: String) -> [String] {
        var found: [String] = []
        let keyword = /(?i)password\s*=\s*/
        for match in text.matches(of: keyword) {
            let rest = text[match.range.upperBound...]
            if rest.first == "'" {
                // A quoted value runs to the next unescaped quote, or to the end when unterminated.
                var value = ""
                var index = rest.index(after: rest.startIndex)
                while index < rest.endIndex, rest[index] != "'" {
                    if rest[index] == "\\", rest.index(after: index) < rest.endIndex {
                        index = rest.index(after: index)
                    }
                    value.append(rest[index])
                    index = rest.index(after: index)
                }
                found.append(value)
                continue
            }
            let value = rest.prefix { !$0.isWhitespace && $0 != "&" && $0 != "\"" && $0 != "'" }
            found.append(String(value))
            if let decoded = Self.percentDecoded(String(value)), decoded != String(value) { found.append(decoded) }
            // Unquoted words that follow, up to the next `key=`, may be the rest of a password with spaces.
            let tail = rest[value.endIndex...]
            guard tail.first?.isWhitespace == true else { continue }
            let end = tail.firstMatch(of: /\s+[A-Za-z_]+\s*=/)?.range.lowerBound ?? tail.endIndex
            found += tail[..<end].split(whereSeparator: \.isWhitespace).map(String.init)
        }
        return found
    }

    private static func percentDecoded(_ text: String) -> String? {
        guard text.contains("%") else { return nil }
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%"), utf8.count >= 2,
                let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
