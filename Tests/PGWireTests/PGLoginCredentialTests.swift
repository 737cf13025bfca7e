import Foundation
import NIOCore
import Testing

@testable import PGWire

/// Pass-through: the credential a client's login leaves behind, and Lifeguard logging in to PostgreSQL with it.
@Suite struct PGLoginCredentialTests {
    /// RFC 7677's ClientKey (password "pencil", its salt, 4096 iterations), computed independently with Python's
    /// hashlib: `hmac(pbkdf2_hmac('sha256', b'pencil', salt, 4096), b'Client Key', sha256)`.
    static let rfcClientKey = "a60fc923d67e8644a92d16b96eda5ef4656b0c725c484374be25535576996e8b"
    /// md5("pencil" + "user"), as PostgreSQL stores it after `md5`.
    static let md5Hash = "20c46e3762c864548e296b33c3406aa9"

    static func bytes(hex: String) -> [UInt8] {
        var result: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            result.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return result
    }

    static var rfcSecret: PGSCRAMSecret { try! PGSCRAMSecret(parsing: SCRAMSHA256Tests.secret) }

    // MARK: Recovering the key

    @Test func theServerRecoversTheClientKeyOfTheRFCExchange() throws {
        var server = SCRAMServer(secret: Self.rfcSecret, serverNonce: SCRAMSHA256Tests.serverNonce)
        _ = try server.receiveClientFirst(SCRAMSHA256Tests.clientFirst)
        let (serverFinal, clientKey) = try server.verifyClientFinal(SCRAMSHA256Tests.clientFinal)
        #expect(serverFinal == SCRAMSHA256Tests.serverFinal)
        #expect(clientKey == Self.bytes(hex: Self.rfcClientKey))
        // What the secret stores is the key's hash: the proof checked out against it.
        #expect(SCRAMSHA256.hash(clientKey) == Self.rfcSecret.storedKey)
    }

    @Test func aSCRAMLoginLeavesTheClientKeyAndTheSecret() throws {
        var machine = PGServerAuthenticationStateMachine(
            method: .scramSHA256,
            user: "user",
            secret: .scramSHA256(Self.rfcSecret),
            md5Salt: { [1, 2, 3, 4] },
            serverNonce: { SCRAMSHA256Tests.serverNonce }
        )
        _ = machine.start()
        let initial = PGSASLInitialResponse(
            mechanism: "SCRAM-SHA-256",
            initialResponse: ByteBuffer(string: SCRAMSHA256Tests.clientFirst)
        )
        _ = machine.receive(PGServerAuthenticationStateMachineTests.frame(.saslInitialResponse(initial)))
        #expect(machine.credential == nil)
        guard
            case .authenticated = machine.receive(
                PGServerAuthenticationStateMachineTests.frame(
                    .saslResponse(ByteBuffer(string: SCRAMSHA256Tests.clientFinal))
                )
            )
        else {
            Issue.record("the RFC's proof must authenticate")
            return
        }
        #expect(machine.credential == .scram(clientKey: Self.bytes(hex: Self.rfcClientKey), secret: Self.rfcSecret))
    }

    @Test func aWrongProofLeavesNothing() throws {
        var machine = PGServerAuthenticationStateMachine(
            method: .scramSHA256,
            user: "user",
            secret: .scramSHA256(Self.rfcSecret),
            md5Salt: { [1, 2, 3, 4] },
            serverNonce: { SCRAMSHA256Tests.serverNonce }
        )
        _ = machine.start()
        let initial = PGSASLInitialResponse(
            mechanism: "SCRAM-SHA-256",
            initialResponse: ByteBuffer(string: SCRAMSHA256Tests.clientFirst)
        )
        _ = machine.receive(PGServerAuthenticationStateMachineTests.frame(.saslInitialResponse(initial)))
        let wrong = SCRAMSHA256Tests.clientFinal.replacingOccurrences(of: "p=dHzb", with: "p=dHzc")
        guard
            case .fail(_, .wrongPassword) = machine.receive(
                PGServerAuthenticationStateMachineTests.frame(.saslResponse(ByteBuffer(string: wrong)))
            )
        else {
            Issue.record("a wrong proof must fail")
            return
        }
        #expect(machine.credential == nil)
    }

    @Test func anMD5LoginLeavesTheMD5Secret() {
        var machine = PGServerAuthenticationStateMachine(
            method: .md5,
            user: "user",
            secret: .md5(hash: Self.md5Hash),
            md5Salt: { [1, 2, 3, 4] },
            serverNonce: { "n" }
        )
        _ = machine.start()
        #expect(
            machine.receive(
                PGServerAuthenticationStateMachineTests.frame(.password("md54376eb6913b38f9aaff38dc7cf19ca76"))
            )
                == .authenticated([.authentication(.ok)])
        )
        #expect(machine.credential == .md5(hash: Self.md5Hash))
    }

    @Test func trustLeavesNothing() {
        var machine = PGServerAuthenticationStateMachine(method: .trust, user: "user", secret: .md5(hash: Self.md5Hash))
        _ = machine.start()
        #expect(machine.credential == nil)
    }

    // MARK: Logging in with it

    /// The recovered key, and no password, reproduces the RFC 7677 exchange byte for byte, server proof included.
    @Test func theClientKeyReplaysTheRFCExchange() throws {
        var client = SCRAMClient(
            username: "user",
            clientKey: Self.bytes(hex: Self.rfcClientKey),
            secret: Self.rfcSecret,
            clientNonce: SCRAMSHA256Tests.clientNonce
        )
        #expect(client.clientFirstMessage == SCRAMSHA256Tests.clientFirst)
        #expect(try client.receiveServerFirst(SCRAMSHA256Tests.serverFirst) == SCRAMSHA256Tests.clientFinal)
        try client.receiveServerFinal(SCRAMSHA256Tests.serverFinal)
        #expect(throws: SCRAMClient.Failure.serverSignatureMismatch) {
            try client.receiveServerFinal("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        }
    }

    @Test func aServerWithAnotherSaltOrIterationCountIsRefused() {
        for serverFirst in [
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=AAAAaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=8192",
        ] {
            var client = SCRAMClient(
                clientKey: Self.bytes(hex: Self.rfcClientKey),
                secret: Self.rfcSecret,
                clientNonce: SCRAMSHA256Tests.clientNonce
            )
            #expect(throws: SCRAMClient.Failure.secretMismatch) { try client.receiveServerFirst(serverFirst) }
        }
        var machine = PGClientAuthenticationStateMachine(
            user: "user",
            credential: .scram(clientKey: Self.bytes(hex: Self.rfcClientKey), secret: Self.rfcSecret),
            clientNonce: { SCRAMSHA256Tests.clientNonce }
        )
        _ = machine.receive(.sasl(mechanisms: ["SCRAM-SHA-256"]))
        let changed = "r=rOprNGfwEbeRWgbNEkqOxyz,s=AAAAaJ0SNY7soEsUEjb6gQ==,i=4096"
        guard case .fail(let error) = machine.receive(.saslContinue(ByteBuffer(string: changed))) else {
            Issue.record("a changed salt must fail")
            return
        }
        #expect(error.description.contains("password changed"))
    }

    @Test func theMD5SecretAnswersTheSaltChallenge() {
        var machine = PGClientAuthenticationStateMachine(user: "user", credential: .md5(hash: Self.md5Hash))
        // The same answer as from the password itself (PGClientAuthenticationStateMachineTests.md5).
        #expect(
            machine.receive(.md5Password(salt: [1, 2, 3, 4])) == .send(.password("md54376eb6913b38f9aaff38dc7cf19ca76"))
        )
        #expect(machine.receive(.ok) == .authenticated)
    }

    @Test(arguments: [
        (PGAuthenticationRequest.cleartextPassword, PGLoginCredential.md5(hash: Self.md5Hash)),
        (.sasl(mechanisms: ["SCRAM-SHA-256"]), .md5(hash: Self.md5Hash)),
        (.cleartextPassword, .scram(clientKey: Self.bytes(hex: Self.rfcClientKey), secret: Self.rfcSecret)),
        (
            .md5Password(salt: [1, 2, 3, 4]),
            .scram(clientKey: Self.bytes(hex: Self.rfcClientKey), secret: Self.rfcSecret)
        ),
    ])
    func aSecretCannotAnswerAnotherMethod(request: PGAuthenticationRequest, credential: PGLoginCredential) {
        var machine = PGClientAuthenticationStateMachine(user: "user", credential: credential)
        guard case .fail(let error) = machine.receive(request) else {
            Issue.record("\(request) cannot be answered with \(credential)")
            return
        }
        #expect(error.description.contains("Lifeguard holds only"))
        #expect(!error.description.contains(Self.md5Hash))
    }

    /// An application logs in to Lifeguard with its password; Lifeguard then logs in to a server holding the same
    /// secret with what the login left, for each kind of secret.
    @Test(arguments: [
        (PGServerAuthenticationStateMachine.Method.scramSHA256, PGAuthSecret.scramSHA256(Self.rfcSecret)),
        (.md5, .scramSHA256(Self.rfcSecret)),
        (.md5, .md5(hash: Self.md5Hash)),
        (.scramSHA256, .plain("pencil")),
    ])
    func passThroughEndToEnd(method: PGServerAuthenticationStateMachine.Method, secret: PGAuthSecret) throws {
        var lifeguard = PGServerAuthenticationStateMachine(method: method, user: "user", secret: secret)
        var application = PGClientAuthenticationStateMachine(user: "user", password: "pencil")
        #expect(try Self.converse(&lifeguard, &application))
        let credential = try #require(lifeguard.credential)

        var postgres = PGServerAuthenticationStateMachine(method: method, user: "user", secret: secret)
        var upstream = PGClientAuthenticationStateMachine(user: "user", credential: credential)
        #expect(try Self.converse(&postgres, &upstream))

        // A wrong password leaves nothing to log in with.
        var refused = PGServerAuthenticationStateMachine(method: method, user: "user", secret: secret)
        var impostor = PGClientAuthenticationStateMachine(user: "user", password: "pen")
        #expect(try !Self.converse(&refused, &impostor))
        #expect(refused.credential == nil)
    }

    @Test func noDescriptionShowsTheSecret() {
        let key = Self.bytes(hex: Self.rfcClientKey)
        let credentials: [PGLoginCredential] = [
            .password("pencil"), .md5(hash: Self.md5Hash), .scram(clientKey: key, secret: Self.rfcSecret),
        ]
        let secrets = [
            "pencil", Self.md5Hash, Self.rfcClientKey, "\(key)", Data(key).base64EncodedString(),
            Data(Self.rfcSecret.storedKey).base64EncodedString(), Data(Self.rfcSecret.serverKey).base64EncodedString(),
            "\(Self.rfcSecret.serverKey)",
        ]
        for credential in credentials {
            var dumped = ""
            dump(credential, to: &dumped)
            let action: [PGLoginCredential?] = [credential]
            for text in ["\(credential)", String(reflecting: credential), dumped, "\(action)"] {
                for secret in secrets {
                    #expect(!text.contains(secret), "\(text)")
                }
            }
        }
    }

    /// Runs a server and a client machine against each other through encoded bytes; true when both authenticated.
    static func converse(
        _ server: inout PGServerAuthenticationStateMachine,
        _ client: inout PGClientAuthenticationStateMachine
    ) throws -> Bool {
        var serverAction = server.start()
        for _ in 0..<10 {
            let toClient: [PGBackendMessage]
            switch serverAction {
            case .send(let message): toClient = [message]
            case .authenticated(let messages): toClient = messages
            case .fail: return false
            }
            var clientAction = PGClientAuthenticationStateMachine.Action.wait
            for message in toClient {
                var buffer = ByteBuffer()
                message.encode(into: &buffer)
                guard
                    case .authentication(let request) = try PGBackendMessage(
                        frame: try #require(try PGFrameDecoder().decodeFrame(buffer: &buffer))
                    )
                else { return false }
                clientAction = client.receive(request)
            }
            switch clientAction {
            case .authenticated:
                guard case .authenticated = serverAction else { return false }
                return true
            case .fail, .wait:
                return false
            case .send(let message):
                serverAction = server.receive(PGServerAuthenticationStateMachineTests.frame(message))
            }
        }
        return false
    }
}
