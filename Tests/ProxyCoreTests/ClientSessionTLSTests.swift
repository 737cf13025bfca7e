import NIOCore
import PGWire
import ProxyCore
import Testing

/// The TLS decisions of the session: `S` or `N`, bytes smuggled behind an SSLRequest, plaintext logins that
/// `client_tls_sslmode` refuses, and direct TLS without the `postgresql` ALPN protocol.
@Suite struct ClientSessionTLSTests {
    private static func sqlState(_ message: PGBackendMessage) -> String? {
        if case .errorResponse(let fields) = message { return fields.sqlState }
        return nil
    }

    private static func encryptionAnswer(_ harness: inout SessionHarness) -> [UInt8] {
        harness.session.takeClientOutput().flatMap { Array($0.readableBytesView) }
    }

    @Test func sslRequestIsAnsweredSAndStartsTLSWhenConfigured() {
        var harness = SessionHarness(session: ClientSession(tls: .optional))
        #expect(
            harness.send { $0.encryptionRequested(ssl: true, trailingBytes: false, into: &$1) } == [
                "flushClient", "startTLS",
            ]
        )
        #expect(Self.encryptionAnswer(&harness) == [UInt8(ascii: "S")])
        #expect(harness.send { $0.tlsEstablished(direct: false, alpn: nil, into: &$1) } == [])
        #expect(harness.session.isEncrypted)
        #expect(
            harness.send { $0.startupReceived(PGStartupMessage(user: "app", database: "db"), into: &$1) } == [
                "admit(app, db)"
            ]
        )
    }

    @Test func withoutTLSBothRequestsAreAnsweredN() {
        var harness = SessionHarness()
        #expect(harness.send { $0.encryptionRequested(ssl: true, trailingBytes: false, into: &$1) } == ["flushClient"])
        #expect(Self.encryptionAnswer(&harness) == [UInt8(ascii: "N")])
        var gss = SessionHarness(session: ClientSession(tls: .required))
        #expect(gss.send { $0.encryptionRequested(ssl: false, trailingBytes: false, into: &$1) } == ["flushClient"])
        #expect(Self.encryptionAnswer(&gss) == [UInt8(ascii: "N")])
    }

    @Test func bytesBehindTheSSLRequestAreRefused() {
        var harness = SessionHarness(session: ClientSession(tls: .optional))
        #expect(
            harness.send { $0.encryptionRequested(ssl: true, trailingBytes: true, into: &$1) } == [
                "rejected(protocol)", "close",
            ]
        )
        #expect(harness.clientMessages().first.flatMap(Self.sqlState) == PGSQLState.protocolViolation)
    }

    @Test func requiredTLSRefusesAPlaintextStartupWith28000() {
        var harness = SessionHarness(session: ClientSession(tls: .required))
        #expect(
            harness.send { $0.startupReceived(PGStartupMessage(user: "app", database: "db"), into: &$1) } == [
                "rejected(auth)", "close",
            ]
        )
        let message = harness.clientMessages().first
        #expect(message.flatMap(Self.sqlState) == PGSQLState.invalidAuthorizationSpecification)
        if case .errorResponse(let fields)? = message {
            #expect(fields.message?.contains("client_tls_sslmode") == true)
        }
    }

    @Test func directTLSWithoutThePostgresqlProtocolIsRefused() {
        var harness = SessionHarness(session: ClientSession(tls: .required))
        #expect(
            harness.send { $0.tlsEstablished(direct: true, alpn: nil, into: &$1) } == ["rejected(protocol)", "close"]
        )
        #expect(harness.clientMessages().first.flatMap(Self.sqlState) == PGSQLState.protocolViolation)

        var good = SessionHarness(session: ClientSession(tls: .required))
        #expect(good.send { $0.tlsEstablished(direct: true, alpn: "postgresql", into: &$1) } == [])
        #expect(
            good.send { $0.startupReceived(PGStartupMessage(user: "app", database: "db"), into: &$1) } == [
                "admit(app, db)"
            ]
        )
    }

    @Test func aCertificateRefusalIsFatal28000() {
        var harness = SessionHarness(session: ClientSession(tls: .required))
        _ = harness.send { $0.tlsEstablished(direct: false, alpn: nil, into: &$1) }
        _ = harness.send { $0.startupReceived(PGStartupMessage(user: "app", database: "db"), into: &$1) }
        #expect(
            harness.send { $0.admissionDecided(.certificateRefused(message: "no"), into: &$1) }
                == ["rejected(auth)", "authenticationFailed(app, no)", "close"]
        )
        #expect(harness.clientMessages().first.flatMap(Self.sqlState) == PGSQLState.invalidAuthorizationSpecification)
    }
}
