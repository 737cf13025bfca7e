/// Everything wrong with a configuration, one problem per line, collected from every source before giving up.
///
/// No line ever contains a password: values are quoted through a masking filter and libpq's messages are scrubbed.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One problem: where, which key, what was wrong and what is accepted.
    public struct Problem: Sendable, Hashable, CustomStringConvertible {
        /// `lifeguard.toml:7`, `lifeguard.toml`, `LIFEGUARD_POOL_SIZE` or `--pool-size`; nil for a missing setting.
        public var location: String?
        /// `pool_size`, `databases.app.dsn`; nil when the location already names it (environment, flags).
        public var key: String?
        public var message: String

        public init(location: String?, key: String?, message: String) {
            self.location = location
            self.key = key
            self.message = message
        }

        /// `lifeguard.toml:7: pool_size: expected an integer >= 1, got "five"`
        public var description: String {
            [self.location, self.key, self.message].compactMap { $0 }.joined(separator: ": ")
        }
    }

    public var problems: [Problem]

    public init(problems: [Problem]) {
        self.problems = problems
    }

    /// One line per problem, as `check-config` prints them.
    public var lines: [String] { self.problems.map(\.description) }

    public var description: String { self.lines.joined(separator: "\n") }
}
