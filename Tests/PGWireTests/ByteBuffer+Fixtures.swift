import NIOCore
import Testing

@testable import PGWire

extension ByteBuffer {
    /// A buffer holding exactly these bytes; fixtures are written out byte by byte.
    init(fixture bytes: [UInt8]) {
        self.init(bytes: bytes)
    }

    /// Concatenates fixture parts: byte arrays and ASCII strings (without NUL; add `0` explicitly).
    init(_ parts: FixturePart...) {
        self.init()
        for part in parts {
            switch part {
            case .bytes(let bytes): self.writeBytes(bytes)
            case .ascii(let string): self.writeString(string)
            }
        }
    }

    var bytes: [UInt8] {
        Array(self.readableBytesView)
    }
}

enum FixturePart: ExpressibleByStringLiteral, ExpressibleByArrayLiteral {
    case bytes([UInt8])
    case ascii(String)

    init(stringLiteral value: String) {
        self = .ascii(value)
    }

    init(arrayLiteral elements: UInt8...) {
        self = .bytes(elements)
    }
}

/// Encodes with an encoder closure into a fresh buffer.
func encoded(_ body: (inout ByteBuffer) -> Void) -> ByteBuffer {
    var buffer = ByteBuffer()
    body(&buffer)
    return buffer
}

/// Concatenates fixture parts into a byte array.
func bytes(_ parts: FixturePart...) -> [UInt8] {
    var result: [UInt8] = []
    for part in parts {
        switch part {
        case .bytes(let bytes): result += bytes
        case .ascii(let string): result += Array(string.utf8)
        }
    }
    return result
}

/// Frames a complete fixture message (type byte, length, body) the way the decoder would.
func frame(_ bytes: [UInt8]) throws -> PGFrame {
    var buffer = ByteBuffer(bytes: bytes)
    let frame = try #require(try PGFrameDecoder().decodeFrame(buffer: &buffer), "fixture shorter than its length")
    try #require(buffer.readableBytes == 0, "fixture longer than its length field says")
    return frame
}
