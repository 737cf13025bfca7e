import NIOCore
import Testing

@testable import PGWire

@Suite struct PGClientAuthenticationStateMachineTests {
    @Test func trust() {
        var machine = PGClientAuthenticationStateMachine(user: "alice", password: nil)
        #expect(machine.receive(.ok) == .authenticated)
    }

    @Test func cleartext() {
        var machine = PGClientAuthenticationStateMachine(user: "alice", password: "secret")
        #expect(machine.receive(.cleartextPassword) == .send(.password("secret")))
        #expect(machine.receive(.ok) == .authenticated)
    }

    @Test func md5() {
        var machine = PGClientAuthenticationStateMachine(user: "user", password: "pencil")
        #expect(
            machine.receive(.md5Password(salt: [1, 2, 3, 4])) == .send(.password("md54376eb6913b38f9aaff38dc7cf19ca76"))
        )
        #expect(machine.receive(.ok) == .authenticated)
    }

    @Test func passwordMissing() {
        for request in [
            PGAuthenticationRequest.cleartextPassword, .md5Password(salt: [1, 2, 3, 4]),
            .sasl(mechanisms: ["SCRAM-SHA-256"]),
        ] {
            var machine = PGClientAuthenticationStateMachine(user: "alice", password: nil)
            guard case .fail(let error) = machine.receive(request) else {
                Issue.record("expected a failure for \(request)")
                continue
            }
            #expect(error.description.contains("no password is configured"))
        }
    }

    /// The RFC 7677 exchange with PostgreSQL's empty SCRAM user name. The server side is our own server
    /// (itself checked byte for byte against the RFC in SCRAMSHA256Tests) with the RFC's nonce.
    @Test func scramAgainstAFixedServer() throws {
        var machine = PGClientAuthenticationStateMachine(user: "user", password: "pencil") {
            SCRAMSHA256Tests.clientNonce
        }
        let initial = PGSASLInitialResponse(
            mechanism: "SCRAM-SHA-256",
            initialResponse: ByteBuffer(string: "n,,n=,r=rOprNGfwEbeRWgbNEkqO")
        )
        #expect(
            machine.receive(.sasl(mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]))
                == .send(.saslInitialResponse(initial))
        )

        var server = SCRAMServer(
            secret: try PGSCRAMSecret(parsing: SCRAMSHA256Tests.secret),
            serverNonce: SCRAMSHA256Tests.serverNonce
        )
        let serverFirst = try server.receiveClientFirst("n,,n=,r=rOprNGfwEbeRWgbNEkqO")
        #expect(serverFirst == SCRAMSHA256Tests.serverFirst)
        guard
            case .send(.saslResponse(let clientFinal)) = machine.receive(.saslContinue(ByteBuffer(string: serverFirst)))
        else {
            Issue.record("expected a SASLResponse")
            return
        }
        let serverFinal = try server.receiveClientFinal(String(buffer: clientFinal))
        #expect(machine.receive(.saslFinal(ByteBuffer(string: serverFinal))) == .wait)
        #expect(machine.receive(.ok) == .authenticated)
    }

    @Test func scramRefusesAServerThatSkipsItsProof() throws {
        var machine = PGClientAuthenticationStateMachine(user: "user", password: "pencil") {
            SCRAMSHA256Tests.clientNonce
        }
        _ = machine.receive(.sasl(mechanisms: ["SCRAM-SHA-256"]))
        _ = machine.receive(.saslContinue(ByteBuffer(string: SCRAMSHA256Tests.serverFirst)))
        guard case .fail = machine.receive(.ok) else {
            Issue.record("AuthenticationOk before SASLFinal must fail")
            return
        }
        // Once failed, it stays failed.
        guard case .fail = machine.receive(.ok) else {
            Issue.record("a failed machine must stay failed")
            return
        }
    }

    @Test func scramRefusesAWrongServerSignature() throws {
        var machine = PGClientAuthenticationStateMachine(user: "user", password: "pencil") {
            SCRAMSHA256Tests.clientNonce
        }
        _ = machine.receive(.sasl(mechanisms: ["SCRAM-SHA-256"]))
        _ = machine.receive(.saslContinue(ByteBuffer(string: SCRAMSHA256Tests.serverFirst)))
        guard case .fail(let error) = machine.receive(.saslFinal(ByteBuffer(string: SCRAMSHA256Tests.serverFinal)))
        else {
            // The RFC's signature is for user "user"; with PostgreSQL's empty user name it must not match.
            Issue.record("a signature over a different AuthMessage must be refused")
            return
        }
        #expect(error.description.contains("signature"))
    }

    @Test func unsupportedMethods() {
        for request in [PGAuthenticationRequest.kerberosV5, .gss, .sspi, .sasl(mechanisms: ["SCRAM-SHA-256-PLUS"])] {
            var machine = PGClientAuthenticationStateMachine(user: "alice", password: "x")
            guard case .fail = machine.receive(request) else {
                Issue.record("expected a failure for \(request)")
                continue
            }
        }
    }

    @Test func outOfOrderRequests() {
        var machine = PGClientAuthenticationStateMachine(user: "alice", password: "x")
        guard case .fail = machine.receive(.saslContinue(ByteBuffer(string: "r=x"))) else {
            Issue.record("SASLContinue before SASL must fail")
            return
        }
        var afterPassword = PGClientAuthenticationStateMachine(user: "alice", password: "x")
        _ = afterPassword.receive(.cleartextPassword)
        guard case .fail = afterPassword.receive(.cleartextPassword) else {
            Issue.record("a second password request must fail")
            return
        }
    }
}
