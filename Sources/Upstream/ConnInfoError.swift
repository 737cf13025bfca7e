/// A connection string that libpq refused, with libpq's own reason.
///
/// The message is libpq's, with any password that libpq quoted from the input replaced by `********`.
public struct ConnInfoError: Error, Sendable, Hashable, CustomStringConvertible {
    /// libpq's message (password-free), without the trailing newline.
    public let message: String

    init(libpqMessage: String, connectionString: String) {
        var message = libpqMessage
        while message.last?.isNewline == true { message.removeLast() }
        self.message = SecretScrubber.scrub(message, secretsFrom: connectionString)
    }

    public var description: String { "invalid connection string: \(self.message)" }
}
