import NIOCore
import Testing

@testable import PGWire

@Suite struct PGBackendMessageTests {
    struct Fixture: Sendable, CustomTestStringConvertible {
        let name: String
        let bytes: [UInt8]
        let message: PGBackendMessage
        var testDescription: String { self.name }
    }

    static let fixtures: [Fixture] = [
        Fixture(name: "AuthenticationOk", bytes: [0x52, 0, 0, 0, 8, 0, 0, 0, 0], message: .authentication(.ok)),
        Fixture(
            name: "AuthenticationCleartextPassword",
            bytes: [0x52, 0, 0, 0, 8, 0, 0, 0, 3],
            message: .authentication(.cleartextPassword)
        ),
        Fixture(
            name: "AuthenticationMD5Password",
            bytes: [0x52, 0, 0, 0, 12, 0, 0, 0, 5, 0x01, 0x02, 0x03, 0x04],
            message: .authentication(.md5Password(salt: [1, 2, 3, 4]))
        ),
        Fixture(
            name: "AuthenticationSASL",
            bytes: bytes([0x52, 0, 0, 0, 23, 0, 0, 0, 10], "SCRAM-SHA-256", [0], [0]),
            message: .authentication(.sasl(mechanisms: ["SCRAM-SHA-256"]))
        ),
        Fixture(
            name: "AuthenticationSASL with two mechanisms",
            bytes: bytes([0x52, 0, 0, 0, 42, 0, 0, 0, 10], "SCRAM-SHA-256-PLUS", [0], "SCRAM-SHA-256", [0], [0]),
            message: .authentication(.sasl(mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]))
        ),
        Fixture(
            name: "AuthenticationSASLContinue",
            bytes: bytes([0x52, 0, 0, 0, 13, 0, 0, 0, 11], "r=abc"),
            message: .authentication(.saslContinue(ByteBuffer(string: "r=abc")))
        ),
        Fixture(
            name: "AuthenticationSASLFinal",
            bytes: bytes([0x52, 0, 0, 0, 12, 0, 0, 0, 12], "v=xy"),
            message: .authentication(.saslFinal(ByteBuffer(string: "v=xy")))
        ),
        Fixture(
            name: "AuthenticationGSS",
            bytes: [0x52, 0, 0, 0, 8, 0, 0, 0, 7],
            message: .authentication(.gss)
        ),
        Fixture(
            name: "ParameterStatus",
            bytes: bytes([0x53, 0, 0, 0, 25], "client_encoding", [0], "UTF8", [0]),
            message: .parameterStatus(name: "client_encoding", value: "UTF8")
        ),
        Fixture(
            name: "BackendKeyData",
            bytes: [0x4B, 0, 0, 0, 12, 0, 0, 0x30, 0x39, 0xDE, 0xAD, 0xBE, 0xEF],
            message: .backendKeyData(processID: 12345, secretKey: Int32(bitPattern: 0xDEAD_BEEF))
        ),
        Fixture(name: "ReadyForQuery I", bytes: [0x5A, 0, 0, 0, 5, 0x49], message: .readyForQuery(.idle)),
        Fixture(name: "ReadyForQuery T", bytes: [0x5A, 0, 0, 0, 5, 0x54], message: .readyForQuery(.inTransaction)),
        Fixture(
            name: "ReadyForQuery E",
            bytes: [0x5A, 0, 0, 0, 5, 0x45],
            message: .readyForQuery(.failedTransaction)
        ),
        Fixture(
            name: "ErrorResponse",
            bytes: bytes(
                [0x45, 0, 0, 0, 55],
                "SERROR",
                [0],
                "VERROR",
                [0],
                "C42P01",
                [0],
                "Mrelation \"x\" does not exist",
                [0],
                [0]
            ),
            message: .errorResponse(
                PGErrorFields(fields: [
                    .init(code: 0x53, value: "ERROR"), .init(code: 0x56, value: "ERROR"),
                    .init(code: 0x43, value: "42P01"), .init(code: 0x4D, value: "relation \"x\" does not exist"),
                ])
            )
        ),
        Fixture(
            name: "NoticeResponse",
            bytes: bytes([0x4E, 0, 0, 0, 27], "SNOTICE", [0], "C00000", [0], "Mhello", [0], [0]),
            message: .noticeResponse(
                PGErrorFields(fields: [
                    .init(code: 0x53, value: "NOTICE"), .init(code: 0x43, value: "00000"),
                    .init(code: 0x4D, value: "hello"),
                ])
            )
        ),
        Fixture(
            name: "CommandComplete",
            bytes: bytes([0x43, 0, 0, 0, 15], "INSERT 0 1", [0]),
            message: .commandComplete(tag: "INSERT 0 1")
        ),
        Fixture(
            name: "CopyInResponse",
            bytes: [0x47, 0, 0, 0, 11, 0, 0, 2, 0, 0, 0, 0],
            message: .copyInResponse(PGCopyResponse(overallFormat: 0, columnFormats: [0, 0]))
        ),
        Fixture(
            name: "CopyOutResponse",
            bytes: [0x48, 0, 0, 0, 9, 1, 0, 1, 0, 1],
            message: .copyOutResponse(PGCopyResponse(overallFormat: 1, columnFormats: [1]))
        ),
        Fixture(
            name: "CopyBothResponse",
            bytes: [0x57, 0, 0, 0, 7, 0, 0, 0],
            message: .copyBothResponse(PGCopyResponse(overallFormat: 0, columnFormats: []))
        ),
        Fixture(
            name: "CopyData",
            bytes: bytes([0x64, 0, 0, 0, 8], "1\t2\n"),
            message: .copyData(ByteBuffer(string: "1\t2\n"))
        ),
        Fixture(name: "CopyDone", bytes: [0x63, 0, 0, 0, 4], message: .copyDone),
        Fixture(
            name: "NotificationResponse",
            bytes: bytes([0x41, 0, 0, 0, 16, 0, 0, 0, 42], "chan", [0], "hi", [0]),
            message: .notificationResponse(processID: 42, channel: "chan", payload: "hi")
        ),
        Fixture(
            name: "NegotiateProtocolVersion",
            bytes: bytes([0x76, 0, 0, 0, 19, 0, 0, 0, 0, 0, 0, 0, 1], "_pq_.x", [0]),
            message: .negotiateProtocolVersion(newestMinorVersion: 0, unrecognizedOptions: ["_pq_.x"])
        ),
    ]

    @Test(arguments: Self.fixtures)
    func parses(_ fixture: Fixture) throws {
        #expect(try PGBackendMessage(frame: frame(fixture.bytes)) == fixture.message)
    }

    @Test(arguments: Self.fixtures)
    func encodesExactBytes(_ fixture: Fixture) {
        #expect(encoded { fixture.message.encode(into: &$0) }.bytes == fixture.bytes)
    }

    @Test func otherTypesStayOpaqueAndRelayUnchanged() throws {
        let dataRow: [UInt8] = [0x44, 0, 0, 0, 13, 0, 1, 0, 0, 0, 3, 0x61, 0x62, 0x63]
        let parsed = try PGBackendMessage(frame: frame(dataRow))
        #expect(parsed == .other(try frame(dataRow)))
        #expect(encoded { parsed.encode(into: &$0) }.bytes == dataRow)
    }

    @Test func errorHelperBuildsTheClientVisibleError() {
        let fields = PGErrorFields.error(
            sqlState: "53300",
            message: "pool full",
            detail: "5 in use",
            hint: "raise pool_size",
            severity: .fatal
        )
        let expected = bytes(
            [0x45, 0, 0, 0, 64],
            "SFATAL",
            [0],
            "VFATAL",
            [0],
            "C53300",
            [0],
            "Mpool full",
            [0],
            "D5 in use",
            [0],
            "Hraise pool_size",
            [0],
            [0]
        )
        #expect(encoded { PGBackendMessage.errorResponse(fields).encode(into: &$0) }.bytes == expected)
        #expect(fields.sqlState == "53300")
        #expect(fields.severity == "FATAL")
        #expect(fields.message == "pool full")
        #expect(fields.detail == "5 in use")
        #expect(fields.hint == "raise pool_size")

        let short = bytes([0x4E, 0, 0, 0, 32], "SNOTICE", [0], "VNOTICE", [0], "C00000", [0], "Mhi", [0], [0])
        let notice = PGErrorFields.error(sqlState: "00000", message: "hi", severity: .notice)
        #expect(encoded { PGBackendMessage.noticeResponse(notice).encode(into: &$0) }.bytes == short)
    }

    @Test(
        arguments: [
            // ReadyForQuery with an unknown status, and with a trailing byte.
            [0x5A, 0, 0, 0, 5, 0x58],
            [0x5A, 0, 0, 0, 6, 0x49, 0x49],
            // BackendKeyData too short, and with a protocol 3.2 long key.
            [0x4B, 0, 0, 0, 8, 0, 0, 0, 1],
            [0x4B, 0, 0, 0, 16, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8],
            // MD5 request with a 3-byte salt; an unknown authentication code.
            [0x52, 0, 0, 0, 11, 0, 0, 0, 5, 1, 2, 3],
            [0x52, 0, 0, 0, 8, 0, 0, 0, 99],
            // Authentication without a code.
            [0x52, 0, 0, 0, 4],
            // ParameterStatus without the value's NUL; ErrorResponse without its terminator.
            [0x53, 0, 0, 0, 7, 0x61, 0, 0x62],
            [0x45, 0, 0, 0, 8, 0x4D, 0x78, 0, 0x43],
            // CopyInResponse announcing two columns but carrying one; a negative count.
            [0x47, 0, 0, 0, 9, 0, 0, 2, 0, 0],
            [0x47, 0, 0, 0, 7, 0, 0xFF, 0xFF],
            // CommandComplete without NUL.
            [0x43, 0, 0, 0, 6, 0x4F, 0x4B],
            // SASL list without the final empty name.
            [0x52, 0, 0, 0, 10, 0, 0, 0, 10, 0x41, 0],
        ] as [[UInt8]]
    )
    func malformedBodiesAreTypedErrors(_ bytes: [UInt8]) throws {
        let frame = try frame(bytes)
        #expect {
            try PGBackendMessage(frame: frame)
        } throws: { error in
            (error as? PGProtocolError)?.kind == .malformedMessage
        }
    }
}
