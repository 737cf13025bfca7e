import Crypto
import Foundation

/// What an `auth_file` holds for a user, classified as PostgreSQL classifies a stored password.
///
/// Which server-side methods each secret can serve:
///
/// | secret | `md5` | `scram-sha-256` |
/// |---|---|---|
/// | plain text | md5 | SCRAM (secret derived with a per-process salt) |
/// | `md5…` | md5 | no: authentication fails (28P01) |
/// | `SCRAM-SHA-256$…` | SCRAM (as PostgreSQL: an md5 method with a SCRAM secret uses SCRAM) | SCRAM |
///
/// Only a plain-text password can also authenticate Lifeguard towards PostgreSQL with any method; md5 and
/// SCRAM secrets cannot be turned back into a password. `description` never shows the secret.
public enum PGAuthSecret: Sendable, Hashable, CustomStringConvertible {
    case plain(String)
    /// The 32 lowercase hex digits after `md5` (md5 of password + user name).
    case md5(hash: String)
    case scramSHA256(PGSCRAMSecret)

    /// Classifies a stored password: a valid SCRAM secret, `md5` followed by 32 lowercase hex digits, or
    /// else plain text. A value that starts like a SCRAM secret but does not parse is an error rather than a
    /// plain-text password, because it is almost certainly a damaged secret.
    public init(parsing text: String) throws(PGAuthSecretError) {
        if text.hasPrefix("SCRAM-SHA-256$") {
            self = .scramSHA256(try PGSCRAMSecret(parsing: text))
        } else if Self.isMD5(text) {
            self = .md5(hash: String(text.dropFirst(3)))
        } else {
            self = .plain(text)
        }
    }

    public var description: String {
        switch self {
        case .plain: "plain text password (hidden)"
        case .md5: "md5 secret (hidden)"
        case .scramSHA256(let secret): secret.description
        }
    }

    static func isMD5(_ text: String) -> Bool {
        let utf8 = Array(text.utf8)
        return utf8.count == 35 && text.hasPrefix("md5")
            && utf8[3...].allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}

/// Why a stored secret could not be read; never contains the secret.
public struct PGAuthSecretError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
}

/// A SCRAM-SHA-256 secret as PostgreSQL stores it: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
public struct PGSCRAMSecret: Sendable, Hashable, CustomStringConvertible {
    public let iterations: Int
    public let salt: [UInt8]
    public let storedKey: [UInt8]
    public let serverKey: [UInt8]

    public init(iterations: Int, salt: [UInt8], storedKey: [UInt8], serverKey: [UInt8]) {
        self.iterations = iterations
        self.salt = salt
        self.storedKey = storedKey
        self.serverKey = serverKey
    }

    /// Derives the secret of a password (what `CREATE ROLE … PASSWORD` stores with scram-sha-256).
    public init(password: String, salt: [UInt8], iterations: Int = 4096) {
        let salted = SCRAMSHA256.saltedPassword(
            password: SCRAMSHA256.preparePassword(password),
            salt: salt,
            iterations: iterations
        )
        self.init(
            iterations: iterations,
            salt: salt,
            storedKey: SCRAMSHA256.hash(SCRAMSHA256.clientKey(saltedPassword: salted)),
            serverKey: SCRAMSHA256.serverKey(saltedPassword: salted)
        )
    }

    public init(parsing text: String) throws(PGAuthSecretError) {
        let sections = text.split(separator: "$", omittingEmptySubsequences: false)
        guard sections.count == 3, sections[0] == "SCRAM-SHA-256" else {
            throw PGAuthSecretError(
                description: "a SCRAM secret has the form SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
            )
        }
        let parameters = sections[1].split(separator: ":", omittingEmptySubsequences: false)
        let keys = sections[2].split(separator: ":", omittingEmptySubsequences: false)
        guard parameters.count == 2, keys.count == 2 else {
            throw PGAuthSecretError(
                description: "a SCRAM secret has the form SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
            )
        }
        guard let iterations = Int(parameters[0]), iterations >= 1 else {
            throw PGAuthSecretError(description: "the SCRAM secret's iteration count is not a positive integer")
        }
        guard let salt = Data(base64Encoded: String(parameters[1])), !salt.isEmpty else {
            throw PGAuthSecretError(description: "the SCRAM secret's salt is not valid base64")
        }
        guard let storedKey = Data(base64Encoded: String(keys[0])), storedKey.count == 32 else {
            throw PGAuthSecretError(description: "the SCRAM secret's StoredKey is not 32 bytes of base64")
        }
        guard let serverKey = Data(base64Encoded: String(keys[1])), serverKey.count == 32 else {
            throw PGAuthSecretError(description: "the SCRAM secret's ServerKey is not 32 bytes of base64")
        }
        self.init(iterations: iterations, salt: Array(salt), storedKey: Array(storedKey), serverKey: Array(serverKey))
    }

    /// The secret in PostgreSQL's text form, for writing an auth_file.
    public var text: String {
        let salt = Data(self.salt).base64EncodedString()
        let stored = Data(self.storedKey).base64EncodedString()
        let server = Data(self.serverKey).base64EncodedString()
        return "SCRAM-SHA-256$\(self.iterations):\(salt)$\(stored):\(server)"
    }

    public var description: String {
        "SCRAM-SHA-256 secret (\(self.iterations) iterations, hidden)"
    }
}

/// PostgreSQL's md5 password scheme.
public enum PGMD5 {
    /// `md5` + hex(md5(password + user)): the form PostgreSQL stores.
    public static func storedHash(password: String, user: String) -> String {
        "md5" + self.hex(Array((password + user).utf8))
    }

    /// The PasswordMessage for an md5 challenge: `md5` + hex(md5(hex(md5(password + user)) + salt)).
    public static func passwordMessage(password: String, user: String, salt: [UInt8]) -> String {
        self.passwordMessage(
            storedHash: String(self.storedHash(password: password, user: user).dropFirst(3)),
            salt: salt
        )
    }

    /// The same from the 32 hex digits of a stored md5 secret.
    public static func passwordMessage(storedHash: String, salt: [UInt8]) -> String {
        "md5" + self.hex(Array(storedHash.utf8) + salt)
    }

    static func hex(_ data: [UInt8]) -> String {
        let digest = Insecure.MD5.hash(data: data)
        let digits = Array("0123456789abcdef".utf8)
        var result: [UInt8] = []
        result.reserveCapacity(32)
        for byte in digest {
            result.append(digits[Int(byte >> 4)])
            result.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: result, as: UTF8.self)
    }
}
