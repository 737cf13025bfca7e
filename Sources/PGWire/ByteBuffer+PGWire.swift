import NIOCore

extension ByteBuffer {
    /// Writes a typed message: its type byte, then the length (patched in after `body` wrote the payload).
    @discardableResult
    mutating func writePGMessage(type: UInt8, _ body: (inout ByteBuffer) -> Void) -> Int {
        let start = self.writerIndex
        self.writeInteger(type)
        self.writePGLengthPrefixed(body)
        return self.writerIndex - start
    }

    /// Writes a 4-byte length that counts itself, then `body`; the startup packet uses this without a type.
    mutating func writePGLengthPrefixed(_ body: (inout ByteBuffer) -> Void) {
        let lengthIndex = self.writerIndex
        self.writeInteger(Int32(0))
        body(&self)
        self.setInteger(Int32(self.writerIndex - lengthIndex), at: lengthIndex)
    }

    /// Writes `string` as a C string. PostgreSQL strings cannot contain NUL; callers pass our own values.
    mutating func writePGString(_ string: String) {
        self.writeString(string)
        self.writeInteger(UInt8(0))
    }
}

/// Reads the fields of one message body, turning every shortfall into a typed `malformedMessage` error.
struct PGBodyReader {
    var buffer: ByteBuffer
    let messageType: UInt8?

    init(_ buffer: ByteBuffer, messageType: UInt8?) {
        self.buffer = buffer
        self.messageType = messageType
    }

    func malformed(_ reason: String) -> PGProtocolError {
        .malformedMessage(messageType: self.messageType, reason: reason)
    }

    mutating func readInteger<T: FixedWidthInteger>(as: T.Type = T.self, _ what: String) throws(PGProtocolError) -> T {
        guard let value = self.buffer.readInteger(as: T.self) else {
            throw self.malformed("body ends before \(what)")
        }
        return value
    }

    mutating func readString(_ what: String) throws(PGProtocolError) -> String {
        guard let string = self.buffer.readNullTerminatedString() else {
            throw self.malformed("\(what) is not NUL-terminated")
        }
        return string
    }

    mutating func readSlice(length: Int, _ what: String) throws(PGProtocolError) -> ByteBuffer {
        guard length >= 0, let slice = self.buffer.readSlice(length: length) else {
            throw self.malformed("body ends before \(what)")
        }
        return slice
    }

    mutating func readRest() -> ByteBuffer {
        self.buffer.readSlice(length: self.buffer.readableBytes)!
    }

    /// Messages with a fixed layout must not carry trailing bytes: PostgreSQL rejects them too.
    func expectEnd() throws(PGProtocolError) {
        if self.buffer.readableBytes != 0 {
            throw self.malformed("\(self.buffer.readableBytes) unexpected trailing bytes")
        }
    }
}
