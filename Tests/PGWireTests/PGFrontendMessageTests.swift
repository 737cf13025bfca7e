import NIOCore
import Testing

@testable import PGWire

@Suite struct PGFrontendMessageTests {
    struct Fixture: Sendable, CustomTestStringConvertible {
        let name: String
        let bytes: [UInt8]
        let message: PGFrontendMessage
        var testDescription: String { self.name }
    }

    static let bindParameters: [UInt8] = [0, 0, 0, 1, 0, 0, 0, 1, 0x35, 0, 0]

    static let fixtures: [Fixture] = [
        Fixture(name: "Query", bytes: bytes([0x51, 0, 0, 0, 13], "SELECT 1", [0]), message: .query("SELECT 1")),
        Fixture(
            name: "Parse",
            bytes: bytes([0x50, 0, 0, 0, 23], "s1", [0], "SELECT $1", [0], [0, 1, 0, 0, 0, 23]),
            message: .parse(PGParse(statementName: "s1", query: "SELECT $1", parameterTypes: [23]))
        ),
        Fixture(
            name: "Bind",
            bytes: bytes([0x42, 0, 0, 0, 21], "p1", [0], "s1", [0], .bytes(Self.bindParameters)),
            message: .bind(
                PGBind(portalName: "p1", statementName: "s1", parameters: ByteBuffer(bytes: Self.bindParameters))
            )
        ),
        Fixture(
            name: "Describe statement",
            bytes: bytes([0x44, 0, 0, 0, 8, 0x53], "s1", [0]),
            message: .describe(.statement("s1"))
        ),
        Fixture(name: "Describe portal", bytes: [0x44, 0, 0, 0, 6, 0x50, 0], message: .describe(.portal(""))),
        Fixture(
            name: "Execute",
            bytes: [0x45, 0, 0, 0, 9, 0, 0, 0, 0, 0],
            message: .execute(portalName: "", maxRows: 0)
        ),
        Fixture(name: "Sync", bytes: [0x53, 0, 0, 0, 4], message: .sync),
        Fixture(name: "Flush", bytes: [0x48, 0, 0, 0, 4], message: .flush),
        Fixture(name: "Close", bytes: bytes([0x43, 0, 0, 0, 8, 0x53], "s1", [0]), message: .close(.statement("s1"))),
        Fixture(name: "Terminate", bytes: [0x58, 0, 0, 0, 4], message: .terminate),
        Fixture(
            name: "PasswordMessage (as parsed)",
            bytes: bytes([0x70, 0, 0, 0, 11], "secret", [0]),
            message: .authenticationResponse(ByteBuffer(bytes: bytes("secret", [0])))
        ),
        Fixture(
            name: "CopyData",
            bytes: bytes([0x64, 0, 0, 0, 6], "a\n"),
            message: .copyData(ByteBuffer(string: "a\n"))
        ),
        Fixture(name: "CopyDone", bytes: [0x63, 0, 0, 0, 4], message: .copyDone),
        Fixture(name: "CopyFail", bytes: bytes([0x66, 0, 0, 0, 9], "oops", [0]), message: .copyFail(message: "oops")),
        Fixture(
            name: "FunctionCall",
            bytes: [0x46, 0, 0, 0, 14, 0, 0, 0x06, 0x3E, 0, 0, 0, 0, 0, 0],
            message: .functionCall(objectID: 1598, arguments: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0]))
        ),
    ]

    @Test(arguments: Self.fixtures)
    func parses(_ fixture: Fixture) throws {
        #expect(try PGFrontendMessage(frame: frame(fixture.bytes)) == fixture.message)
    }

    @Test(arguments: Self.fixtures)
    func encodesExactBytes(_ fixture: Fixture) {
        #expect(encoded { fixture.message.encode(into: &$0) }.bytes == fixture.bytes)
    }

    @Test func passwordMessage() throws {
        let expected = bytes([0x70, 0, 0, 0, 11], "secret", [0])
        #expect(encoded { PGFrontendMessage.password("secret").encode(into: &$0) }.bytes == expected)
        #expect(try PGPasswordMessage.parse(body: frame(expected).body) == "secret")
    }

    @Test func saslInitialResponse() throws {
        let expected = bytes([0x70, 0, 0, 0, 33], "SCRAM-SHA-256", [0], [0, 0, 0, 11], "n,,n=,r=abc")
        let message = PGSASLInitialResponse(
            mechanism: "SCRAM-SHA-256",
            initialResponse: ByteBuffer(string: "n,,n=,r=abc")
        )
        #expect(encoded { PGFrontendMessage.saslInitialResponse(message).encode(into: &$0) }.bytes == expected)
        #expect(try PGSASLInitialResponse(body: frame(expected).body) == message)

        let withoutData = bytes([0x70, 0, 0, 0, 22], "SCRAM-SHA-256", [0], [0xFF, 0xFF, 0xFF, 0xFF])
        let empty = PGSASLInitialResponse(mechanism: "SCRAM-SHA-256", initialResponse: nil)
        #expect(encoded { PGFrontendMessage.saslInitialResponse(empty).encode(into: &$0) }.bytes == withoutData)
        #expect(try PGSASLInitialResponse(body: frame(withoutData).body) == empty)
    }

    @Test func saslResponse() {
        let expected = bytes([0x70, 0, 0, 0, 10], "c=biws")
        #expect(
            encoded { PGFrontendMessage.saslResponse(ByteBuffer(string: "c=biws")).encode(into: &$0) }.bytes == expected
        )
    }

    @Test func otherTypesStayOpaque() throws {
        // A GSSResponse-like unknown type 'z' and a Bind-looking message are left alone.
        let unknown: [UInt8] = [0x7A, 0, 0, 0, 6, 1, 2]
        let parsed = try PGFrontendMessage(frame: frame(unknown))
        #expect(parsed == .other(try frame(unknown)))
        #expect(encoded { parsed.encode(into: &$0) }.bytes == unknown)
    }

    @Test(
        arguments: [
            // Query without NUL; Describe with an invalid flag; Parse with a negative type count.
            [0x51, 0, 0, 0, 6, 0x41, 0x42],
            [0x44, 0, 0, 0, 6, 0x58, 0],
            [0x50, 0, 0, 0, 8, 0, 0, 0xFF, 0xFF],
            // Parse announcing 2 types and carrying 1.
            [0x50, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 23],
            // Execute without the row limit; Bind without the statement name's NUL.
            [0x45, 0, 0, 0, 5, 0],
            [0x42, 0, 0, 0, 6, 0, 0x73],
            // Sync and Terminate with a body.
            [0x53, 0, 0, 0, 5, 0],
            [0x58, 0, 0, 0, 5, 0],
            // FunctionCall without the OID.
            [0x46, 0, 0, 0, 6, 0, 0],
        ] as [[UInt8]]
    )
    func malformedBodiesAreTypedErrors(_ bytes: [UInt8]) throws {
        let frame = try frame(bytes)
        #expect {
            try PGFrontendMessage(frame: frame)
        } throws: { error in
            (error as? PGProtocolError)?.kind == .malformedMessage
        }
    }

    @Test func malformedAuthenticationBodies() throws {
        // SASLInitialResponse whose data length runs past the body; a password with trailing bytes.
        let sasl = bytes([0x70, 0, 0, 0, 24], "SCRAM-SHA-256", [0], [0, 0, 0, 9], "ab")
        #expect(throws: PGProtocolError.self) { try PGSASLInitialResponse(body: frame(sasl).body) }
        let password = bytes([0x70, 0, 0, 0, 7], "a", [0], "b")
        #expect(throws: PGProtocolError.self) { try PGPasswordMessage.parse(body: frame(password).body) }
    }
}
