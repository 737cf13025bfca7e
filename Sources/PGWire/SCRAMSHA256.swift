import Crypto
import Foundation

/// The SCRAM-SHA-256 arithmetic of RFC 5802 / RFC 7677, shared by the client and the server side.
enum SCRAMSHA256 {
    static let mechanism = "SCRAM-SHA-256"
    /// PostgreSQL's default (`scram_iterations`).
    static let defaultIterations = 4096
    /// 16 bytes of salt, as PostgreSQL generates.
    static let saltLength = 16
    /// 18 random bytes per nonce, as libpq and the server use.
    static let nonceLength = 18

    /// Hi(password, salt, i) = PBKDF2-HMAC-SHA-256 with one 32-byte block. The keyed HMAC is set up once and
    /// copied per round, which saves re-hashing the key 4,096 times.
    static func saltedPassword(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        precondition(iterations >= 1)
        let keyed = HMAC<SHA256>(key: SymmetricKey(data: password))
        var round = keyed
        round.update(data: salt)
        round.update(data: [0, 0, 0, 1])
        var u = Array(round.finalize())
        var result = u
        for _ in 1..<iterations {
            var next = keyed
            next.update(data: u)
            u = Array(next.finalize())
            for index in 0..<result.count {
                result[index] ^= u[index]
            }
        }
        return result
    }

    static func hmac(key: [UInt8], _ message: some DataProtocol) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }

    static func hash(_ data: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: data))
    }

    static func clientKey(saltedPassword: [UInt8]) -> [UInt8] {
        self.hmac(key: saltedPassword, Array("Client Key".utf8))
    }

    static func serverKey(saltedPassword: [UInt8]) -> [UInt8] {
        self.hmac(key: saltedPassword, Array("Server Key".utf8))
    }

    static func xor(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
        precondition(a.count == b.count)
        return zip(a, b).map { $0 ^ $1 }
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// A printable nonce without commas (base64 of CSPRNG bytes).
    static func makeNonce() -> String {
        Data(self.randomBytes(self.nonceLength)).base64EncodedString()
    }

    /// Prepares a password as PostgreSQL does (`pg_saslprep`): ASCII passwords are used as they are; others
    /// get the SASLprep mapping (non-ASCII spaces to U+0020, "mapped to nothing" characters removed) and NFKC.
    /// The prohibited-character and bidi checks are not done: PostgreSQL then falls back to the raw bytes.
    static func preparePassword(_ password: String) -> [UInt8] {
        if password.utf8.allSatisfy({ $0 < 0x80 }) {
            return Array(password.utf8)
        }
        var scalars = String.UnicodeScalarView()
        for scalar in password.unicodeScalars {
            if Self.mappedToNothing.contains(scalar.value) {
                continue
            }
            scalars.append(Self.nonASCIISpaces.contains(scalar.value) ? " " : scalar)
        }
        return Array(String(scalars).precomposedStringWithCompatibilityMapping.utf8)
    }

    // RFC 3454 table C.1.2.
    private static let nonASCIISpaces: Set<UInt32> = [
        0x00A0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A,
        0x200B, 0x202F, 0x205F, 0x3000,
    ]
    // RFC 3454 table B.1.
    private static let mappedToNothing: Set<UInt32> = [
        0x00AD, 0x034F, 0x1806, 0x180B, 0x180C, 0x180D, 0x200C, 0x200D, 0x2060, 0xFE00, 0xFE01, 0xFE02, 0xFE03,
        0xFE04, 0xFE05, 0xFE06, 0xFE07, 0xFE08, 0xFE09, 0xFE0A, 0xFE0B, 0xFE0C, 0xFE0D, 0xFE0E, 0xFE0F, 0xFEFF,
    ]

    /// Splits `a=value,b=value` into attributes, keeping order. Values may contain `=`.
    static func parseAttributes(_ message: String) -> [(name: Character, value: Substring)]? {
        var attributes: [(Character, Substring)] = []
        for part in message.split(separator: ",", omittingEmptySubsequences: false) {
            guard part.count >= 2, let name = part.first, name.isLetter, part.dropFirst().first == "=" else {
                return nil
            }
            attributes.append((name, part.dropFirst(2)))
        }
        return attributes
    }

    /// `=2C` and `=3D` escaping of a SASL name (RFC 5802 section 5.1).
    static func escapeName(_ name: String) -> String {
        name.replacingOccurrences(of: "=", with: "=3D").replacingOccurrences(of: ",", with: "=2C")
    }
}

/// Compares two byte strings in time that depends only on their length, for proofs and signatures.
func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    guard lhs.count == rhs.count else {
        return false
    }
    var difference: UInt8 = 0
    for index in 0..<lhs.count {
        difference |= lhs[index] ^ rhs[index]
    }
    return difference == 0
}

/// The client half of one SCRAM-SHA-256 exchange without channel binding (gs2 header `n,,`).
///
/// It proves either a password, or a ClientKey recovered from a client's proof (pass-through): the keys are then
/// the secret's, and only a server that challenges with the secret's salt and iteration count can be answered.
struct SCRAMClient: Sendable {
    enum Failure: Error, Hashable, Sendable {
        case malformedServerFirst(String)
        case nonceMismatch
        case malformedServerFinal(String)
        case serverError(String)
        case serverSignatureMismatch
        /// Pass-through: the server's salt or iteration count is not the secret's (the password changed).
        case secretMismatch
    }

    private enum Proof: Sendable {
        case password([UInt8])
        case clientKey([UInt8], PGSCRAMSecret)
    }

    let clientFirstMessageBare: String
    private let proof: Proof
    private let clientNonce: String
    private var expectedServerSignature: [UInt8] = []

    /// PostgreSQL takes the user from the StartupMessage and expects an empty `n=` here (as libpq sends).
    init(username: String = "", password: String, clientNonce: String = SCRAMSHA256.makeNonce()) {
        self.init(username: username, proof: .password(SCRAMSHA256.preparePassword(password)), clientNonce: clientNonce)
    }

    /// Pass-through: `clientKey` was recovered from a client's proof against `secret` (H(ClientKey) = StoredKey).
    init(
        username: String = "",
        clientKey: [UInt8],
        secret: PGSCRAMSecret,
        clientNonce: String = SCRAMSHA256.makeNonce()
    ) {
        self.init(username: username, proof: .clientKey(clientKey, secret), clientNonce: clientNonce)
    }

    private init(username: String, proof: Proof, clientNonce: String) {
        self.proof = proof
        self.clientNonce = clientNonce
        self.clientFirstMessageBare = "n=\(SCRAMSHA256.escapeName(username)),r=\(clientNonce)"
    }

    var clientFirstMessage: String {
        "n,," + self.clientFirstMessageBare
    }

    /// Takes the server-first-message and returns the client-final-message with the proof.
    mutating func receiveServerFirst(_ serverFirst: String) throws(Failure) -> String {
        guard let attributes = SCRAMSHA256.parseAttributes(serverFirst), attributes.count >= 3 else {
            throw .malformedServerFirst("not a list of attributes")
        }
        guard attributes[0].name == "r", attributes[1].name == "s", attributes[2].name == "i" else {
            throw .malformedServerFirst("expected r=, s= and i= (mandatory extensions are not supported)")
        }
        let nonce = String(attributes[0].value)
        guard nonce.hasPrefix(self.clientNonce), nonce.count > self.clientNonce.count else {
            throw .nonceMismatch
        }
        guard let salt = Data(base64Encoded: String(attributes[1].value)), !salt.isEmpty else {
            throw .malformedServerFirst("invalid salt")
        }
        guard let iterations = Int(attributes[2].value), iterations >= 1 else {
            throw .malformedServerFirst("invalid iteration count")
        }
        let clientKey: [UInt8]
        let serverKey: [UInt8]
        switch self.proof {
        case .password(let password):
            let salted = SCRAMSHA256.saltedPassword(password: password, salt: Array(salt), iterations: iterations)
            clientKey = SCRAMSHA256.clientKey(saltedPassword: salted)
            serverKey = SCRAMSHA256.serverKey(saltedPassword: salted)
        case .clientKey(let key, let secret):
            // The keys hold only for the salt and iteration count they were derived with.
            guard Array(salt) == secret.salt, iterations == secret.iterations else {
                throw .secretMismatch
            }
            clientKey = key
            serverKey = secret.serverKey
        }
        let clientFinalWithoutProof = "c=biws,r=\(nonce)"
        let authMessage = Array("\(self.clientFirstMessageBare),\(serverFirst),\(clientFinalWithoutProof)".utf8)
        let storedKey = SCRAMSHA256.hash(clientKey)
        let clientSignature = SCRAMSHA256.hmac(key: storedKey, authMessage)
        let proof = SCRAMSHA256.xor(clientKey, clientSignature)
        self.expectedServerSignature = SCRAMSHA256.hmac(key: serverKey, authMessage)
        return "\(clientFinalWithoutProof),p=\(Data(proof).base64EncodedString())"
    }

    /// Verifies the server-final-message: the server must prove it knows the secret too.
    func receiveServerFinal(_ serverFinal: String) throws(Failure) {
        guard let attributes = SCRAMSHA256.parseAttributes(serverFinal), let first = attributes.first else {
            throw .malformedServerFinal("not a list of attributes")
        }
        if first.name == "e" {
            throw .serverError(String(first.value))
        }
        guard first.name == "v", let signature = Data(base64Encoded: String(first.value)) else {
            throw .malformedServerFinal("expected v=<server signature>")
        }
        guard !self.expectedServerSignature.isEmpty,
            constantTimeEqual(Array(signature), self.expectedServerSignature)
        else {
            throw .serverSignatureMismatch
        }
    }
}

/// The server half of one SCRAM-SHA-256 exchange without channel binding.
struct SCRAMServer: Sendable {
    enum Failure: Error, Hashable, Sendable {
        case malformedClientFirst(String)
        case channelBindingNotSupported
        case authorizationIdentityNotSupported
        case malformedClientFinal(String)
        case channelBindingMismatch
        case nonceMismatch
        case invalidProof
    }

    private let secret: PGSCRAMSecret
    private let serverNonce: String
    private var gs2Header = ""
    private var clientFirstMessageBare = ""
    private var serverFirstMessage = ""
    private var nonce = ""

    init(secret: PGSCRAMSecret, serverNonce: String = SCRAMSHA256.makeNonce()) {
        self.secret = secret
        self.serverNonce = serverNonce
    }

    /// Takes the client-first-message and returns the server-first-message.
    mutating func receiveClientFirst(_ clientFirst: String) throws(Failure) -> String {
        let parts = clientFirst.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw .malformedClientFirst("missing gs2 header")
        }
        switch parts[0] {
        case "n", "y":
            // `y`: the client could bind but believes we cannot, which is true: we never offer -PLUS.
            break
        case let flag where flag.hasPrefix("p="):
            throw .channelBindingNotSupported
        default:
            throw .malformedClientFirst("invalid channel binding flag")
        }
        guard parts[1].isEmpty else {
            throw .authorizationIdentityNotSupported
        }
        let bare = String(parts[2])
        guard let attributes = SCRAMSHA256.parseAttributes(bare), attributes.count >= 2 else {
            throw .malformedClientFirst("not a list of attributes")
        }
        // The user name is ignored, as in PostgreSQL: the StartupMessage named the user.
        guard attributes[0].name == "n", attributes[1].name == "r" else {
            throw .malformedClientFirst("expected n= and r= (mandatory extensions are not supported)")
        }
        let clientNonce = attributes[1].value
        guard !clientNonce.isEmpty, clientNonce.allSatisfy({ $0.isASCII && $0 >= "!" && $0 <= "~" }) else {
            throw .malformedClientFirst("invalid nonce")
        }
        self.gs2Header = "\(parts[0]),\(parts[1]),"
        self.clientFirstMessageBare = bare
        self.nonce = clientNonce + self.serverNonce
        let salt = Data(self.secret.salt).base64EncodedString()
        self.serverFirstMessage = "r=\(self.nonce),s=\(salt),i=\(self.secret.iterations)"
        return self.serverFirstMessage
    }

    /// Checks the client-final-message's proof and returns the server-final-message (`v=<signature>`).
    func receiveClientFinal(_ clientFinal: String) throws(Failure) -> String {
        try self.verifyClientFinal(clientFinal).serverFinal
    }

    /// The same, with the ClientKey the proof revealed (ClientProof XOR ClientSignature, checked against StoredKey):
    /// it lets Lifeguard log in to PostgreSQL as the client without knowing the password (pass-through).
    func verifyClientFinal(_ clientFinal: String) throws(Failure) -> (serverFinal: String, clientKey: [UInt8]) {
        guard let proofRange = clientFinal.range(of: ",p=", options: .backwards) else {
            throw .malformedClientFinal("missing proof")
        }
        let withoutProof = String(clientFinal[..<proofRange.lowerBound])
        guard let attributes = SCRAMSHA256.parseAttributes(withoutProof), attributes.count >= 2,
            attributes[0].name == "c", attributes[1].name == "r"
        else {
            throw .malformedClientFinal("expected c= and r=")
        }
        guard let binding = Data(base64Encoded: String(attributes[0].value)),
            constantTimeEqual(Array(binding), Array(self.gs2Header.utf8))
        else {
            throw .channelBindingMismatch
        }
        guard attributes[1].value == self.nonce else {
            throw .nonceMismatch
        }
        guard let proof = Data(base64Encoded: String(clientFinal[proofRange.upperBound...])), proof.count == 32 else {
            throw .malformedClientFinal("invalid proof")
        }
        let authMessage = Array("\(self.clientFirstMessageBare),\(self.serverFirstMessage),\(withoutProof)".utf8)
        let clientSignature = SCRAMSHA256.hmac(key: self.secret.storedKey, authMessage)
        let clientKey = SCRAMSHA256.xor(Array(proof), clientSignature)
        guard constantTimeEqual(SCRAMSHA256.hash(clientKey), self.secret.storedKey) else {
            throw .invalidProof
        }
        let serverSignature = SCRAMSHA256.hmac(key: self.secret.serverKey, authMessage)
        return ("v=\(Data(serverSignature).base64EncodedString())", clientKey)
    }
}
