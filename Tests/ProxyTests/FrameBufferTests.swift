import NIOCore
import PGWire
import Testing

@testable import Proxy

@Suite struct FrameBufferTests {
    /// A long stream whose messages straddle reads (a large result, a COPY) keeps only the unfinished message.
    @Test func aLongStreamOfMessagesThatStraddleReadsKeepsOnlyTheUnfinishedOne() throws {
        var stream = ByteBuffer()
        for row in 0..<2_000 {
            let body = String(repeating: "x", count: 995 + row % 7)
            stream.writeInteger(PGBackendMessageType.dataRow)
            stream.writeInteger(Int32(4 + body.utf8.count))
            stream.writeString(body)
        }
        let total = stream.readableBytes
        var frames = FrameBuffer()
        let decoder = PGFrameDecoder()
        var decoded = 0
        var largest = 0
        while stream.readableBytes > 0 {
            // Reads of 4,093 bytes: almost every read ends inside a message.
            frames.append(stream.readSlice(length: min(4_093, stream.readableBytes))!)
            while let frame = try frames.nextFrame(decoder) {
                #expect(frame.type == PGBackendMessageType.dataRow)
                decoded += frame.bytes.readableBytes
            }
            #expect(frames.pendingBytes < 1_010)
            largest = max(largest, frames.keptCapacity)
        }
        #expect(decoded == total)
        #expect(largest <= 16 * 1024, "kept \(largest) bytes for one unfinished message")
    }
}
