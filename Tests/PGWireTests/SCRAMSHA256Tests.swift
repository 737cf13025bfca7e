import Foundation
import Testing

@testable import PGWire

/// RFC 7677 section 3: user "user", password "pencil".
@Suite struct SCRAMSHA256Tests {
    static let clientNonce = "rOprNGfwEbeRWgbNEkqO"
    static let serverNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    static let clientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    static let serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    static let clientFinal =
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    static let serverFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    /// The same salt and password as stored by PostgreSQL; computed independently with Python's hashlib.
    static let secret =
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

    @Test func clientReproducesTheRFCExchange() throws {
        var client = SCRAMClient(username: "user", password: "pencil", clientNonce: Self.clientNonce)
        #expect(client.clientFirstMessage == Self.clientFirst)
        #expect(try client.receiveServerFirst(Self.serverFirst) == Self.clientFinal)
        try client.receiveServerFinal(Self.serverFinal)
    }

    @Test func clientRejectsAWrongServerSignature() throws {
        var client = SCRAMClient(username: "user", password: "pencil", clientNonce: Self.clientNonce)
        _ = try client.receiveServerFirst(Self.serverFirst)
        #expect(throws: SCRAMClient.Failure.serverSignatureMismatch) {
            try client.receiveServerFinal("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        }
        #expect(throws: SCRAMClient.Failure.serverError("invalid-proof")) {
            try client.receiveServerFinal("e=invalid-proof")
        }
    }

    @Test func clientRejectsAServerNonceThatDoesNotExtendItsOwn() {
        var client = SCRAMClient(username: "user", password: "pencil", clientNonce: Self.clientNonce)
        #expect(throws: SCRAMClient.Failure.nonceMismatch) {
            try client.receiveServerFirst("r=somethingElse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        }
        #expect(throws: SCRAMClient.Failure.nonceMismatch) {
            try client.receiveServerFirst("r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        }
        #expect(throws: SCRAMClient.Failure.self) {
            try client.receiveServerFirst("r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0")
        }
    }

    @Test func clientUsesAnEmptyUserNameForPostgreSQL() {
        let client = SCRAMClient(password: "pencil", clientNonce: "abc")
        #expect(client.clientFirstMessage == "n,,n=,r=abc")
    }

    @Test func serverReproducesTheRFCExchange() throws {
        var server = SCRAMServer(secret: try PGSCRAMSecret(parsing: Self.secret), serverNonce: Self.serverNonce)
        #expect(try server.receiveClientFirst(Self.clientFirst) == Self.serverFirst)
        #expect(try server.receiveClientFinal(Self.clientFinal) == Self.serverFinal)
    }

    @Test func serverRejectsAWrongProof() throws {
        var server = SCRAMServer(secret: try PGSCRAMSecret(parsing: Self.secret), serverNonce: Self.serverNonce)
        _ = try server.receiveClientFirst(Self.clientFirst)
        let wrong = Self.clientFinal.replacingOccurrences(of: "p=dHzb", with: "p=dHzc")
        #expect(throws: SCRAMServer.Failure.invalidProof) { try server.receiveClientFinal(wrong) }
    }

    @Test func serverRejectsBrokenClientMessages() throws {
        let secret = try PGSCRAMSecret(parsing: Self.secret)
        var server = SCRAMServer(secret: secret, serverNonce: Self.serverNonce)
        #expect(throws: SCRAMServer.Failure.channelBindingNotSupported) {
            try server.receiveClientFirst("p=tls-server-end-point,,n=,r=abc")
        }
        #expect(throws: SCRAMServer.Failure.authorizationIdentityNotSupported) {
            try server.receiveClientFirst("n,a=admin,n=,r=abc")
        }
        #expect(throws: SCRAMServer.Failure.self) { try server.receiveClientFirst("n,,m=ext,n=,r=abc") }
        #expect(throws: SCRAMServer.Failure.self) { try server.receiveClientFirst("garbage") }

        _ = try server.receiveClientFirst(Self.clientFirst)
        let wrongBinding = Self.clientFinal.replacingOccurrences(of: "c=biws", with: "c=eSws")
        #expect(throws: SCRAMServer.Failure.channelBindingMismatch) { try server.receiveClientFinal(wrongBinding) }
        let wrongNonce = Self.clientFinal.replacingOccurrences(of: "hNlF$k0", with: "hNlF$k1")
        #expect(throws: SCRAMServer.Failure.nonceMismatch) { try server.receiveClientFinal(wrongNonce) }
        #expect(throws: SCRAMServer.Failure.self) { try server.receiveClientFinal("c=biws") }
    }

    @Test func ourClientAgainstOurServer() throws {
        let secret = PGSCRAMSecret(password: "correct horse", salt: SCRAMSHA256.randomBytes(16))
        var client = SCRAMClient(password: "correct horse")
        var server = SCRAMServer(secret: secret)
        let serverFirst = try server.receiveClientFirst(client.clientFirstMessage)
        let clientFinal = try client.receiveServerFirst(serverFirst)
        try client.receiveServerFinal(try server.receiveClientFinal(clientFinal))

        var impostor = SCRAMClient(password: "wrong horse")
        var server2 = SCRAMServer(secret: secret)
        let clientFinal2 = try impostor.receiveServerFirst(try server2.receiveClientFirst(impostor.clientFirstMessage))
        #expect(throws: SCRAMServer.Failure.invalidProof) { try server2.receiveClientFinal(clientFinal2) }
    }

    @Test func noncesAreRandomAndPrintable() {
        let nonces = (0..<20).map { _ in SCRAMSHA256.makeNonce() }
        #expect(Set(nonces).count == 20)
        for nonce in nonces {
            #expect(nonce.count == 24)
            #expect(!nonce.contains(","))
        }
    }

    @Test func saltedPasswordMatchesPBKDF2() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1), first 32 bytes.
        let expected: [UInt8] = [
            0x55, 0xAC, 0x04, 0x6E, 0x56, 0xE3, 0x08, 0x9F, 0xEC, 0x16, 0x91, 0xC2, 0x25, 0x44, 0xB6, 0x05,
            0xF9, 0x41, 0x85, 0x21, 0x6D, 0xDE, 0x04, 0x65, 0xE6, 0x8B, 0x9D, 0x57, 0xC2, 0x0D, 0xAC, 0xBC,
        ]
        #expect(
            SCRAMSHA256.saltedPassword(password: Array("passwd".utf8), salt: Array("salt".utf8), iterations: 1)
                == expected
        )
    }

    @Test func passwordPreparation() {
        #expect(SCRAMSHA256.preparePassword("pencil") == Array("pencil".utf8))
        // Non-ASCII space maps to a space; a soft hyphen maps to nothing; NFKC folds the ligature.
        #expect(SCRAMSHA256.preparePassword("a\u{00A0}b\u{00AD}c\u{FB01}") == Array("a bcfi".utf8))
    }

    @Test func constantTimeComparison() {
        #expect(constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEqual([1, 2, 3], [1, 2]))
    }
}
