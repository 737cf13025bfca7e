import NIOCore
import Testing

@testable import PGWire

@Suite struct PGServerAuthenticationStateMachineTests {
    static func passwordFrame(_ password: String) -> PGFrame {
        var buffer = ByteBuffer()
        PGFrontendMessage.password(password).encode(into: &buffer)
        return PGFrame(
            type: PGFrontendMessageType.authenticationResponse,
            body: buffer.getSlice(at: 5, length: buffer.readableBytes - 5)!
        )
    }

    static func frame(_ message: PGFrontendMessage) -> PGFrame {
        var buffer = ByteBuffer()
        message.encode(into: &buffer)
        return try! PGFrameDecoder().decodeFrame(buffer: &buffer)!
    }

    static let badPassword = PGErrorFields.error(
        sqlState: "28P01",
        message: "password authentication failed for user \"user\"",
        severity: .fatal
    )

    @Test func trust() {
        var machine = PGServerAuthenticationStateMachine(method: .trust, user: "user", secret: nil)
        #expect(machine.start() == .authenticated([.authentication(.ok)]))
    }

    @Test(arguments: [PGAuthSecret.plain("pencil"), .md5(hash: "20c46e3762c864548e296b33c3406aa9")])
    func md5WithPlainOrMD5Secret(secret: PGAuthSecret) {
        var machine = PGServerAuthenticationStateMachine(
            method: .md5,
            user: "user",
            secret: secret,
            md5Salt: { [1, 2, 3, 4] },
            serverNonce: { "n" }
        )
        #expect(machine.start() == .send(.authentication(.md5Password(salt: [1, 2, 3, 4]))))
        #expect(
            machine.receive(Self.frame(.password("md54376eb6913b38f9aaff38dc7cf19ca76")))
                == .authenticated([.authentication(.ok)])
        )
    }

    @Test func md5WrongPassword() {
        var machine = PGServerAuthenticationStateMachine(
            method: .md5,
            user: "user",
            secret: .plain("pencil"),
            md5Salt: { [1, 2, 3, 4] },
            serverNonce: { "n" }
        )
        _ = machine.start()
        #expect(
            machine.receive(Self.frame(.password("md500000000000000000000000000000000")))
                == .fail(Self.badPassword, reason: .wrongPassword)
        )
    }

    @Test func md5UnknownUserLooksLikeAWrongPassword() {
        var machine = PGServerAuthenticationStateMachine(method: .md5, user: "user", secret: nil)
        guard case .send(.authentication(.md5Password(let salt))) = machine.start() else {
            Issue.record("an unknown user must still get a challenge")
            return
        }
        #expect(salt.count == 4)
        #expect(
            machine.receive(Self.frame(.password("md54376eb6913b38f9aaff38dc7cf19ca76")))
                == .fail(Self.badPassword, reason: .unknownUser)
        )
    }

    /// Our server replays the RFC 7677 exchange (user name in the SCRAM message is ignored, as in PostgreSQL).
    @Test(arguments: [PGServerAuthenticationStateMachine.Method.scramSHA256, .md5])
    func scramWithAStoredSecretReplaysTheRFC(method: PGServerAuthenticationStateMachine.Method) throws {
        var machine = PGServerAuthenticationStateMachine(
            method: method,
            user: "user",
            secret: try PGAuthSecret(parsing: SCRAMSHA256Tests.secret),
            md5Salt: { [1, 2, 3, 4] },
            serverNonce: { SCRAMSHA256Tests.serverNonce }
        )
        #expect(machine.start() == .send(.authentication(.sasl(mechanisms: ["SCRAM-SHA-256"]))))
        let initial = PGSASLInitialResponse(
            mechanism: "SCRAM-SHA-256",
            initialResponse: ByteBuffer(string: SCRAMSHA256Tests.clientFirst)
        )
        #expect(
            machine.receive(Self.frame(.saslInitialResponse(initial)))
                == .send(.authentication(.saslContinue(ByteBuffer(string: SCRAMSHA256Tests.serverFirst))))
        )
        #expect(
            machine.receive(Self.frame(.saslResponse(ByteBuffer(string: SCRAMSHA256Tests.clientFinal))))
                == .authenticated([
                    .authentication(.saslFinal(ByteBuffer(string: SCRAMSHA256Tests.serverFinal))), .authentication(.ok),
                ])
        )
    }

    @Test func protocolViolations() {
        var wrongType = PGServerAuthenticationStateMachine(method: .md5, user: "user", secret: .plain("x"))
        _ = wrongType.start()
        guard case .fail(let error, .protocolViolation) = wrongType.receive(Self.frame(.query("SELECT 1"))) else {
            Issue.record("a Query during authentication must fail")
            return
        }
        #expect(error.sqlState == "08P01")
        #expect(error.severity == "FATAL")

        var wrongMechanism = PGServerAuthenticationStateMachine(method: .scramSHA256, user: "user", secret: .plain("x"))
        _ = wrongMechanism.start()
        let plus = PGSASLInitialResponse(
            mechanism: "SCRAM-SHA-256-PLUS",
            initialResponse: ByteBuffer(string: "p=tls-server-end-point,,n=,r=abc")
        )
        guard case .fail(_, .protocolViolation) = wrongMechanism.receive(Self.frame(.saslInitialResponse(plus))) else {
            Issue.record("SCRAM-SHA-256-PLUS was not offered")
            return
        }

        var garbage = PGServerAuthenticationStateMachine(method: .scramSHA256, user: "user", secret: .plain("x"))
        _ = garbage.start()
        guard case .fail(_, .protocolViolation) = garbage.receive(Self.frame(.password("not a SASL message"))) else {
            Issue.record("a malformed SASLInitialResponse must fail")
            return
        }
    }

    /// Our client state machine against our server state machine, for every combination that can work.
    @Test(arguments: [
        (PGServerAuthenticationStateMachine.Method.md5, PGAuthSecret.plain("s3cret")),
        (.md5, .md5(hash: String(PGMD5.storedHash(password: "s3cret", user: "app").dropFirst(3)))),
        (.md5, .scramSHA256(PGSCRAMSecret(password: "s3cret", salt: Array("0123456789abcdef".utf8)))),
        (.scramSHA256, .plain("s3cret")),
        (
            .scramSHA256,
            .scramSHA256(PGSCRAMSecret(password: "s3cret", salt: Array("0123456789abcdef".utf8), iterations: 4096))
        ),
        (.trust, .plain("whatever")),
    ])
    func roundTrip(method: PGServerAuthenticationStateMachine.Method, secret: PGAuthSecret) throws {
        #expect(try Self.converse(method: method, secret: secret, password: "s3cret") == .authenticated)
        if method != .trust {
            #expect(try Self.converse(method: method, secret: secret, password: "wrong") == .fail(.wrongPassword))
        }
    }

    @Test func combinationsThatCannotWork() throws {
        // An md5 secret cannot serve SCRAM: a full mock exchange, then 28P01 with the real reason for the log.
        let md5 = PGAuthSecret.md5(hash: String(PGMD5.storedHash(password: "s3cret", user: "app").dropFirst(3)))
        #expect(
            try Self.converse(method: .scramSHA256, secret: md5, password: "s3cret") == .fail(.secretCannotServeMethod)
        )
        // Unknown users get the same treatment under both methods.
        #expect(try Self.converse(method: .scramSHA256, secret: nil, password: "s3cret") == .fail(.unknownUser))
        #expect(try Self.converse(method: .md5, secret: nil, password: "s3cret") == .fail(.unknownUser))
    }

    @Test func mockSaltIsStablePerUser() {
        func salt(_ user: String, _ secret: PGAuthSecret?) -> String {
            var server = PGServerAuthenticationStateMachine(method: .scramSHA256, user: user, secret: secret)
            _ = server.start()
            let initial = PGSASLInitialResponse(
                mechanism: "SCRAM-SHA-256",
                initialResponse: ByteBuffer(string: "n,,n=,r=abc")
            )
            guard
                case .send(.authentication(.saslContinue(let first))) = server.receive(
                    Self.frame(.saslInitialResponse(initial))
                )
            else {
                Issue.record("expected server-first")
                return ""
            }
            return String(String(buffer: first).split(separator: ",")[1])
        }
        #expect(salt("ghost", nil) == salt("ghost", nil))
        #expect(salt("ghost", nil) != salt("other", nil))
        // A plain-password user's salt is just as stable, so salts do not reveal which users exist.
        #expect(salt("real", .plain("x")) == salt("real", .plain("x")))
    }

    enum Outcome: Equatable {
        case authenticated
        case fail(PGServerAuthenticationFailure)
        case clientFailed(String)
    }

    /// Runs the two machines against each other through encoded and re-framed bytes.
    static func converse(
        method: PGServerAuthenticationStateMachine.Method,
        secret: PGAuthSecret?,
        password: String
    ) throws -> Outcome {
        var server = PGServerAuthenticationStateMachine(method: method, user: "app", secret: secret)
        var client = PGClientAuthenticationStateMachine(user: "app", password: password)
        var serverAction = server.start()
        for _ in 0..<10 {
            let toClient: [PGBackendMessage]
            switch serverAction {
            case .send(let message): toClient = [message]
            case .authenticated(let messages): toClient = messages
            case .fail(let error, let reason):
                #expect(error.sqlState == "28P01")
                return .fail(reason)
            }
            var clientAction = PGClientAuthenticationStateMachine.Action.wait
            for message in toClient {
                var buffer = ByteBuffer()
                message.encode(into: &buffer)
                guard
                    case .authentication(let request) = try PGBackendMessage(
                        frame: try #require(try PGFrameDecoder().decodeFrame(buffer: &buffer))
                    )
                else {
                    Issue.record("expected an authentication request")
                    return .clientFailed("not a request")
                }
                clientAction = client.receive(request)
            }
            switch clientAction {
            case .authenticated:
                guard case .authenticated = serverAction else {
                    return .clientFailed("client done before server")
                }
                return .authenticated
            case .fail(let error):
                return .clientFailed(error.description)
            case .wait:
                return .clientFailed("client waits but server has nothing more to say")
            case .send(let message):
                serverAction = server.receive(Self.frame(message))
            }
        }
        return .clientFailed("did not finish")
    }
}
