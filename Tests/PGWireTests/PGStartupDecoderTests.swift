import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@testable import PGWire

@Suite struct PGStartupDecoderTests {
    // StartupMessage 3.0 with user=bob, database=db1, then the terminator: length 31.
    static let startup = ByteBuffer(
        [0, 0, 0, 31, 0, 3, 0, 0],
        "user",
        [0],
        "bob",
        [0],
        "database",
        [0],
        "db1",
        [0],
        [0]
    )
    static let sslRequest: [UInt8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F]
    static let gssEncRequest: [UInt8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x30]
    static let cancelRequest: [UInt8] = [0, 0, 0, 16, 0x04, 0xD2, 0x16, 0x2E, 0, 0, 0x30, 0x39, 0xDE, 0xAD, 0xBE, 0xEF]

    static let startupMessage = PGStartupMessage(
        protocolMinorVersion: 0,
        parameters: [.init(name: "user", value: "bob"), .init(name: "database", value: "db1")]
    )

    @Test func decodesEveryPacketWholeAndDripFed() throws {
        let pairs: [(ByteBuffer, [PGStartupPacket])] = [
            (Self.startup, [.startup(Self.startupMessage)]),
            (ByteBuffer(fixture: Self.sslRequest), [.sslRequest]),
            (ByteBuffer(fixture: Self.gssEncRequest), [.gssEncryptionRequest]),
            (
                ByteBuffer(fixture: Self.cancelRequest),
                [.cancelRequest(PGCancelRequest(processID: 12345, secretKey: Int32(bitPattern: 0xDEAD_BEEF)))]
            ),
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { PGStartupDecoder() }
    }

    @Test func encodersProduceTheFixtures() {
        #expect(encoded { PGStartupPacket.startup(Self.startupMessage).encode(into: &$0) } == Self.startup)
        #expect(encoded { PGStartupPacket.sslRequest.encode(into: &$0) }.bytes == Self.sslRequest)
        #expect(encoded { PGStartupPacket.gssEncryptionRequest.encode(into: &$0) }.bytes == Self.gssEncRequest)
        let cancel = PGStartupPacket.cancelRequest(.init(processID: 12345, secretKey: Int32(bitPattern: 0xDEAD_BEEF)))
        #expect(encoded { cancel.encode(into: &$0) }.bytes == Self.cancelRequest)
        #expect(encoded { PGEncryptionResponse.notSupported.encode(into: &$0) }.bytes == [UInt8(ascii: "N")])
    }

    @Test func startupMessageAccessors() {
        #expect(Self.startupMessage.user == "bob")
        #expect(Self.startupMessage.database == "db1")
        let noDatabase = PGStartupMessage(user: "alice", database: nil, options: [("_pq_.x", "1")])
        #expect(noDatabase.database == "alice")
        #expect(noDatabase.protocolOptions == ["_pq_.x"])
        #expect(PGStartupMessage(parameters: []).user == nil)
    }

    @Test func acceptsNewerMinorVersionsAndReportsThem() throws {
        var buffer = ByteBuffer([0, 0, 0, 16, 0, 3, 0, 2], "user", [0], "a", [0], [0])
        let packet = try #require(try PGStartupDecoder().decodePacket(buffer: &buffer))
        #expect(
            packet == .startup(PGStartupMessage(protocolMinorVersion: 2, parameters: [.init(name: "user", value: "a")]))
        )
    }

    @Test func rejectsOtherProtocolVersions() {
        var v2 = ByteBuffer(fixture: [0, 0, 0, 8, 0, 2, 0, 0])
        #expect(throws: PGProtocolError.unsupportedProtocolVersion(major: 2, minor: 0)) {
            try PGStartupDecoder().decodePacket(buffer: &v2)
        }
        #expect(PGProtocolError.unsupportedProtocolVersion(major: 2, minor: 0).sqlState == "0A000")
        // A TLS ClientHello sent directly (no SSLRequest) is not a protocol version either.
        var tls = ByteBuffer(fixture: [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        #expect(throws: PGProtocolError.self) { try PGStartupDecoder().decodePacket(buffer: &tls) }
        var unknownCode = ByteBuffer(fixture: [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x31])
        #expect(throws: PGProtocolError.unknownRequestCode(80_877_105)) {
            try PGStartupDecoder().decodePacket(buffer: &unknownCode)
        }
    }

    @Test func malformedLengths() throws {
        var negative = ByteBuffer(fixture: [0xFF, 0xFF, 0xFF, 0xF0, 0, 3, 0, 0])
        #expect(throws: PGProtocolError.negativeLength(messageType: nil, length: -16)) {
            try PGStartupDecoder().decodePacket(buffer: &negative)
        }
        for length in [Int32(0), 4, 7] {
            var short = ByteBuffer()
            short.writeInteger(length)
            short.writeBytes([0, 3, 0, 0])
            #expect(throws: PGProtocolError.lengthTooShort(messageType: nil, length: length, minimum: 8)) {
                try PGStartupDecoder().decodePacket(buffer: &short)
            }
        }
        // 10,001 bytes announced, only the header sent: refused without waiting for the rest.
        var long = ByteBuffer(fixture: [0, 0, 0x27, 0x11, 0, 3, 0, 0])
        #expect(throws: PGProtocolError.messageTooLong(messageType: nil, length: 10_001, maximum: 10_000)) {
            try PGStartupDecoder().decodePacket(buffer: &long)
        }
        var huge = ByteBuffer(fixture: [0x7F, 0xFF, 0xFF, 0xFF])
        #expect(throws: PGProtocolError.messageTooLong(messageType: nil, length: Int32.max, maximum: 10_000)) {
            try PGStartupDecoder().decodePacket(buffer: &huge)
        }
    }

    @Test func malformedBodies() {
        let cases: [ByteBuffer] = [
            // No terminator after the last value.
            ByteBuffer([0, 0, 0, 15, 0, 3, 0, 0], "user", [0], "a", [0]),
            // Value without NUL.
            ByteBuffer([0, 0, 0, 14, 0, 3, 0, 0], "user", [0], "a"),
            // Bytes after the terminator.
            ByteBuffer([0, 0, 0, 17, 0, 3, 0, 0], "user", [0], "a", [0], [0], [0x41]),
            // SSLRequest with extra bytes, CancelRequest with a long (protocol 3.2) key.
            ByteBuffer(fixture: [0, 0, 0, 9, 0x04, 0xD2, 0x16, 0x2F, 0]),
            ByteBuffer(fixture: [0, 0, 0, 20, 0x04, 0xD2, 0x16, 0x2E, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]),
            ByteBuffer(fixture: [0, 0, 0, 12, 0x04, 0xD2, 0x16, 0x2E, 0, 0, 0, 1]),
        ]
        for var buffer in cases {
            #expect {
                try PGStartupDecoder().decodePacket(buffer: &buffer)
            } throws: { error in
                (error as? PGProtocolError)?.kind == .malformedMessage
            }
        }
    }

    @Test func truncatedPacketAtEOF() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(PGStartupDecoder()))
        var partial = Self.startup
        partial.moveWriterIndex(to: 10)
        try channel.writeInbound(partial)
        #expect(try channel.readInbound(as: PGStartupPacket.self) == nil)
        #expect(throws: PGProtocolError.truncatedMessage(messageType: nil, receivedBytes: 10)) {
            try channel.finish()
        }
    }
}
