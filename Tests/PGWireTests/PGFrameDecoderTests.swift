import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@testable import PGWire

@Suite struct PGFrameDecoderTests {
    // ReadyForQuery(I), an empty ParseComplete, a DataRow with one 3-byte column.
    static let readyForQuery: [UInt8] = [0x5A, 0, 0, 0, 5, 0x49]
    static let parseComplete: [UInt8] = [0x31, 0, 0, 0, 4]
    static let dataRow: [UInt8] = [0x44, 0, 0, 0, 13, 0, 1, 0, 0, 0, 3, 0x61, 0x62, 0x63]

    static func frame(_ bytes: [UInt8]) -> PGFrame {
        PGFrame(type: bytes[0], body: ByteBuffer(bytes: bytes[5...]))
    }

    @Test func framesWholeAndDripFed() throws {
        let pairs = [Self.readyForQuery, Self.parseComplete, Self.dataRow].map {
            (ByteBuffer(fixture: $0), [Self.frame($0)])
        }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { PGFrameDecoder() }
    }

    @Test func frameExposesTypeBodyAndOriginalBytes() throws {
        var buffer = ByteBuffer(fixture: Self.dataRow + Self.readyForQuery)
        let decoder = PGFrameDecoder()
        let frame = try #require(try decoder.decodeFrame(buffer: &buffer))
        #expect(frame.type == UInt8(ascii: "D"))
        #expect(frame.length == 13)
        #expect(frame.bytes.bytes == Self.dataRow)
        #expect(frame.body.bytes == Array(Self.dataRow[5...]))
        #expect(buffer.bytes == Self.readyForQuery)
    }

    @Test func framesAreSlicesOfTheInputNotCopies() throws {
        var buffer = ByteBuffer(fixture: Self.dataRow)
        let inputAddress = buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        let frame = try #require(try PGFrameDecoder().decodeFrame(buffer: &buffer))
        let frameAddress = frame.bytes.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        let bodyAddress = frame.body.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        #expect(frameAddress == inputAddress)
        #expect(bodyAddress == inputAddress + 5)
    }

    @Test func waitsForTheWholeMessage() throws {
        let decoder = PGFrameDecoder()
        for cut in 0..<Self.dataRow.count {
            var partial = ByteBuffer(bytes: Self.dataRow[..<cut])
            #expect(try decoder.decodeFrame(buffer: &partial) == nil)
            #expect(partial.readableBytes == cut, "a partial message must not be consumed")
        }
    }

    @Test func frontendDecoderRefusesATypeNoClientSendsBeforeItsBody() {
        // Garbage whose "length" would make a plain decoder wait for 134 MB.
        var buffer = ByteBuffer(fixture: [0x07, 0x08, 0x09, 0x0A, 0x0B])
        #expect(throws: PGProtocolError.unexpectedMessage(messageType: 0x07, context: "a client message")) {
            try PGFrameDecoder.frontend().decodeFrame(buffer: &buffer)
        }
        // The type byte alone is enough to refuse.
        var typeOnly = ByteBuffer(fixture: [UInt8(ascii: "Z")])
        #expect(throws: PGProtocolError.self) { try PGFrameDecoder.frontend().decodeFrame(buffer: &typeOnly) }
    }

    @Test(arguments: PGFrameDecoder.frontendMessageTypes)
    func frontendDecoderAcceptsEveryFrontendType(type: UInt8) throws {
        var buffer = ByteBuffer(fixture: [type, 0, 0, 0, 4])
        let frame = try #require(try PGFrameDecoder.frontend().decodeFrame(buffer: &buffer))
        #expect(frame.type == type)
    }

    @Test func negativeLengthIsAnError() {
        var buffer = ByteBuffer(fixture: [0x51, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: PGProtocolError.negativeLength(messageType: 0x51, length: -1)) {
            try PGFrameDecoder().decodeFrame(buffer: &buffer)
        }
        var minimum = ByteBuffer(fixture: [0x51, 0x80, 0, 0, 0])
        #expect(throws: PGProtocolError.negativeLength(messageType: 0x51, length: Int32.min)) {
            try PGFrameDecoder().decodeFrame(buffer: &minimum)
        }
    }

    @Test(arguments: [Int32(0), 1, 3])
    func lengthBelowFourIsAnError(length: Int32) {
        var buffer = ByteBuffer(fixture: [0x51])
        buffer.writeInteger(length)
        #expect(throws: PGProtocolError.lengthTooShort(messageType: 0x51, length: length, minimum: 4)) {
            try PGFrameDecoder().decodeFrame(buffer: &buffer)
        }
    }

    @Test func lengthAboveTheMaximumIsAnErrorBeforeTheBodyArrives() throws {
        // Only the header is present: the decoder must refuse at once instead of waiting to buffer 1 GiB.
        var buffer = ByteBuffer(fixture: [0x51, 0x40, 0, 0, 1])
        #expect(throws: PGProtocolError.messageTooLong(messageType: 0x51, length: 0x4000_0001, maximum: 1 << 30)) {
            try PGFrameDecoder().decodeFrame(buffer: &buffer)
        }
        var atLimit = ByteBuffer(fixture: [0x51, 0x40, 0, 0, 0])
        #expect(try PGFrameDecoder().decodeFrame(buffer: &atLimit) == nil)

        var small = ByteBuffer(fixture: [0x51, 0, 0, 0, 9, 0x61, 0x62, 0x63, 0x64])
        #expect(throws: PGProtocolError.messageTooLong(messageType: 0x51, length: 9, maximum: 8)) {
            try PGFrameDecoder(maximumMessageLength: 8).decodeFrame(buffer: &small)
        }
    }

    @Test func errorsReachTheChannelAsTypedErrors() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(PGFrameDecoder()))
        #expect(throws: PGProtocolError.negativeLength(messageType: 0x51, length: -2)) {
            try channel.writeInbound(ByteBuffer(fixture: [0x51, 0xFF, 0xFF, 0xFF, 0xFE]))
        }
        _ = try? channel.finish()
    }

    @Test func truncatedMessageAtEOFIsAnError() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(PGFrameDecoder()))
        try channel.writeInbound(ByteBuffer(fixture: Self.readyForQuery + Array(Self.dataRow[..<7])))
        #expect(try channel.readInbound(as: PGFrame.self) == Self.frame(Self.readyForQuery))
        #expect(try channel.readInbound(as: PGFrame.self) == nil)
        #expect(throws: PGProtocolError.truncatedMessage(messageType: 0x44, receivedBytes: 7)) {
            try channel.finish()
        }
    }

    @Test func cleanEOFIsNotAnError() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(PGFrameDecoder()))
        try channel.writeInbound(ByteBuffer(fixture: Self.readyForQuery))
        #expect(try channel.readInbound(as: PGFrame.self) == Self.frame(Self.readyForQuery))
        #expect(try channel.finish().isClean)
    }

    @Test func errorKindAndSQLState() {
        let error = PGProtocolError.messageTooLong(messageType: 0x51, length: 9, maximum: 8)
        #expect(error.kind == .messageTooLong)
        #expect(error.sqlState == "08P01")
        #expect(error.description == "message 'Q' has length 9, above the maximum of 8")
    }
}
