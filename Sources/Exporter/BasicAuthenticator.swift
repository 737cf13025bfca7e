import CCrypt
import Crypto
import Synchronization
import WebConfig

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Checks HTTP basic credentials against `basic_auth_users`, with libxcrypt's bcrypt (`crypt_rn`).
///
/// bcrypt is slow on purpose (about 70 ms at cost 10) and runs on libmicrohttpd's only thread, so credentials that
/// passed once are remembered, as exporter-toolkit does: by a SHA-256 digest of user, hash and password, never the
/// password itself. A wrong password is never remembered and costs a full bcrypt every time.
final class BasicAuthenticator: Sendable {
    private let users: [String: BcryptHash]
    private let verified = Mutex<Set<SHA256.Digest>>([])
    /// Credentials remembered at most; past it the set starts again (a handful of scrapers use a handful).
    static let rememberedLimit = 64
    /// Checked for unknown users, so that an unknown user takes as long as a wrong password. Cost 10, of a password
    /// nobody uses.
    static let decoy = "$2b$10$bYU58JFYv2NduTvhMTUEPuBfo0tSfuKdecbT05yrAddiJtixyptNa"

    init(users: [String: BcryptHash]) {
        self.users = users
    }

    /// Whether `password` is `user`'s.
    func check(user: String, password: String) -> Bool {
        guard let hash = self.users[user] else {
            _ = Self.matches(password, hash: Self.decoy)
            return false
        }
        let digest = SHA256.hash(data: Array("\(user)\u{0}\(hash.value)\u{0}\(password)".utf8))
        if self.verified.withLock({ $0.contains(digest) }) { return true }
        guard Self.matches(password, hash: hash.value) else { return false }
        self.verified.withLock { verified in
            if verified.count >= Self.rememberedLimit { verified.removeAll() }
            verified.insert(digest)
        }
        return true
    }

    /// bcrypt of `password` with the salt and cost of `hash`, compared with `hash` in constant time.
    static func matches(_ password: String, hash: String) -> Bool {
        // crypt_data is 32 KiB: on the heap, zeroed as crypt_rn requires.
        guard let data = calloc(1, MemoryLayout<crypt_data>.size) else { return false }
        defer {
            // The buffer held the password's hash state.
            memset(data, 0, MemoryLayout<crypt_data>.size)
            free(data)
        }
        let output = crypt_rn(
            password,
            hash,
            data.assumingMemoryBound(to: crypt_data.self),
            Int32(MemoryLayout<crypt_data>.size)
        )
        guard let output else { return false }
        let computed = Array(String(cString: output).utf8)
        let expected = Array(hash.utf8)
        guard computed.count == expected.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(computed, expected) { difference |= a ^ b }
        return difference == 0
    }
}
