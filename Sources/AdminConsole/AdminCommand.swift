/// A statement of the admin console (the virtual database `pgbouncer`), parsed as PgBouncer 1.25 parses it
/// (src/admin.c): one word, an optional argument (a word or a double-quoted name), an optional `;`; or
/// `SET key = value`. Words are case-insensitive; quoted names keep their case.
public enum AdminCommand: Sendable, Equatable {
    case show(AdminShow)
    /// `SHOW client_encoding` and the other parameters drivers ask for (``AdminFakeParameter``).
    case showParameter(AdminFakeParameter)
    case set(key: String, value: String)
    case pause(database: String?)
    case resume(database: String?)
    case reconnect(database: String?)
    case kill(database: String?)
    /// The argument as written: PgBouncer reads a number from it when it runs.
    case killClient(String)
    case disable(database: String?)
    case enable(database: String?)
    case waitClose(database: String?)
    case reload
    case shutdown(AdminShutdownMode)
    case suspend

    /// Only `admin_users` may run it; `stats_users` may run `SHOW` (and `SET` of the fake parameters).
    public var needsAdmin: Bool {
        switch self {
        case .show, .showParameter: false
        case .set(let key, _): AdminFakeParameter(name: key) == nil
        default: true
        }
    }

    /// Parses one simple-protocol query. The error is what the client gets, word for word.
    public static func parse(_ query: String) -> Result<AdminCommand, AdminError> {
        var scanner = Scanner(query)
        scanner.skipWhitespace()
        guard let first = scanner.word() else { return .failure(.syntax(query)) }
        if first.text.lowercased() == "set", let command = Self.parseSet(&scanner, query: query) {
            return command
        }
        var argument: Word?
        if scanner.skipWhitespace(), let word = scanner.word() {
            argument = word
        }
        scanner.skipWhitespace()
        if scanner.take(";") { scanner.skipWhitespace() }
        guard scanner.atEnd else { return .failure(.syntax(query)) }
        let arg = argument?.text
        // PgBouncer compares command words with strcasecmp, quoted or not.
        switch first.text.lowercased() {
        case "show", "select":
            guard let arg else { return .failure(.syntax(query)) }
            if let parameter = AdminFakeParameter(name: arg), parameter.value != nil {
                return .success(.showParameter(parameter))
            }
            guard let show = AdminShow(rawValue: arg.lowercased()) else { return .failure(.syntax(query)) }
            return .success(.show(show))
        case "pause": return .success(.pause(database: arg))
        case "resume": return .success(.resume(database: arg))
        case "reconnect": return .success(.reconnect(database: arg))
        case "kill": return .success(.kill(database: arg))
        case "kill_client": return .success(.killClient(arg ?? ""))
        case "disable": return .success(.disable(database: arg))
        case "enable": return .success(.enable(database: arg))
        case "wait_close": return .success(.waitClose(database: arg))
        case "reload":
            return arg == nil ? .success(.reload) : .failure(.syntax(query))
        case "suspend":
            return arg == nil ? .success(.suspend) : .failure(.syntax(query))
        case "shutdown":
            guard let arg else { return .success(.shutdown(.immediate)) }
            guard let mode = AdminShutdownMode(rawValue: arg.lowercased()) else { return .failure(.syntax(query)) }
            return .success(.shutdown(mode))
        default:
            return .failure(.syntax(query))
        }
    }

    /// `SET key = value`, `SET key TO value`; the value a word, or a single-quoted string. Nil when it is not a SET
    /// (then the statement is read as a command named `set`, which PgBouncer refuses as a syntax error).
    private static func parseSet(_ scanner: inout Scanner, query: String) -> Result<AdminCommand, AdminError>? {
        var copy = scanner
        guard copy.skipWhitespace(), let key = copy.word() else { return nil }
        copy.skipWhitespace()
        if !copy.take("=") {
            guard let to = copy.word(), to.lowercased == "to", !to.quoted else { return nil }
        }
        copy.skipWhitespace()
        let value: String
        if let string = copy.singleQuoted() {
            value = string
        } else if let word = copy.word() {
            value = word.text
        } else {
            return nil
        }
        copy.skipWhitespace()
        if copy.take(";") { copy.skipWhitespace() }
        guard copy.atEnd, !key.text.isEmpty else { return nil }
        scanner = copy
        return .success(.set(key: key.text, value: value))
    }

    /// A word as PgBouncer's pattern reads it: `[0-9a-z_]+` (any case) or a double-quoted name with `""` for `"`.
    struct Word {
        var text: String
        var quoted: Bool
        var lowercased: String { self.quoted ? self.text : self.text.lowercased() }
    }

    struct Scanner {
        private let scalars: [Unicode.Scalar]
        private var index = 0

        init(_ text: String) {
            self.scalars = Array(text.unicodeScalars)
        }

        var atEnd: Bool { self.index == self.scalars.count }

        /// Skips spaces, tabs and line breaks; true if there were any.
        @discardableResult
        mutating func skipWhitespace() -> Bool {
            let start = self.index
            while self.index < self.scalars.count, " \t\n\r".unicodeScalars.contains(self.scalars[self.index]) {
                self.index += 1
            }
            return self.index > start
        }

        mutating func take(_ character: Unicode.Scalar) -> Bool {
            guard self.index < self.scalars.count, self.scalars[self.index] == character else { return false }
            self.index += 1
            return true
        }

        mutating func word() -> Word? {
            if let quoted = self.quoted(by: "\"") { return Word(text: quoted, quoted: true) }
            let start = self.index
            while self.index < self.scalars.count, Self.isWordCharacter(self.scalars[self.index]) {
                self.index += 1
            }
            guard self.index > start else { return nil }
            var text = ""
            text.unicodeScalars.append(contentsOf: self.scalars[start..<self.index])
            return Word(text: text, quoted: false)
        }

        mutating func singleQuoted() -> String? { self.quoted(by: "'") }

        /// A name or string between `quote`s, a doubled quote standing for one; nil (and nothing consumed) if there
        /// is none, or it is not closed.
        private mutating func quoted(by quote: Unicode.Scalar) -> String? {
            guard self.index < self.scalars.count, self.scalars[self.index] == quote else { return nil }
            var position = self.index + 1
            var text = ""
            while position < self.scalars.count {
                if self.scalars[position] == quote {
                    if position + 1 < self.scalars.count, self.scalars[position + 1] == quote {
                        text.unicodeScalars.append(quote)
                        position += 2
                        continue
                    }
                    // PgBouncer's name pattern needs at least one character between double quotes.
                    if quote == "\"" && text.isEmpty { return nil }
                    self.index = position + 1
                    return text
                }
                text.unicodeScalars.append(self.scalars[position])
                position += 1
            }
            return nil
        }

        private static func isWordCharacter(_ scalar: Unicode.Scalar) -> Bool {
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", "_": true
            default: false
            }
        }
    }
}

/// The `SHOW` commands. Raw values are the words the console accepts (lower case).
public enum AdminShow: String, Sendable, CaseIterable {
    case pools
    case stats
    case statsTotals = "stats_totals"
    case statsAverages = "stats_averages"
    case totals
    case servers
    case clients
    case databases
    case users
    case config
    case lists
    case version
    case state
    case help
    // PgBouncer's, without a Lifeguard counterpart yet: answered with an error that says so.
    case fds
    case sockets
    case activeSockets = "active_sockets"
    case mem
    case dnsHosts = "dns_hosts"
    case dnsZones = "dns_zones"
    case peers
    case peerPools = "peer_pools"
    /// Lifeguard's own: what PgBouncer's columns have no room for (overflow, leaks, wait percentiles).
    case lifeguard
}

/// `SHUTDOWN`'s argument.
public enum AdminShutdownMode: String, Sendable {
    /// No argument: stop at once.
    case immediate = ""
    /// Stop accepting; stop once every server connection has been released (PgBouncer pauses first).
    case waitForServers = "wait_for_servers"
    /// Stop accepting; stop once every client has left.
    case waitForClients = "wait_for_clients"
}

/// Parameters some drivers `SET` or `SHOW` right after connecting. PgBouncer answers them with fixed values
/// (`fake_param_list` in src/admin.c): `SHOW` returns the value, `SET` answers `SET` with a notice "SET ignored".
/// Lifeguard adds the ones lib/pq, psycopg and JDBC set, so that they get the same harmless answer.
public struct AdminFakeParameter: Sendable, Equatable {
    public var name: String
    /// Nil: Lifeguard's addition, accepted by `SET` only.
    public var value: String?

    /// PgBouncer's list, in its order, with its values.
    public static let pgbouncer: [AdminFakeParameter] = [
        .init(name: "client_encoding", value: "UTF-8"),
        .init(name: "default_transaction_isolation", value: "read committed"),
        .init(name: "standard_conforming_strings", value: "on"),
        .init(name: "datestyle", value: "ISO"),
        .init(name: "timezone", value: "GMT"),
    ]

    /// Accepted by `SET` (ignored) in addition to PgBouncer's.
    public static let ignoredBySet = ["application_name", "extra_float_digits", "client_min_messages", "search_path"]

    init(name: String, value: String?) {
        self.name = name
        self.value = value
    }

    /// The parameter called `name` (any case), if the console fakes it.
    public init?(name: String) {
        let lowered = name.lowercased()
        if let known = Self.pgbouncer.first(where: { $0.name == lowered }) {
            self = known
        } else if Self.ignoredBySet.contains(lowered) {
            self.init(name: lowered, value: nil)
        } else {
            return nil
        }
    }
}

/// What the console answers instead of a result: PgBouncer's words, with SQLSTATE 08P01 unless said otherwise.
public struct AdminError: Error, Sendable, Equatable {
    public var sqlState: String
    public var message: String

    public init(sqlState: String = "08P01", message: String) {
        self.sqlState = sqlState
        self.message = message
    }

    static func syntax(_ query: String) -> AdminError {
        AdminError(message: "invalid command '\(query)', use SHOW HELP;")
    }

    public static let adminAccessNeeded = AdminError(message: "admin access needed")
    public static let extendedProtocol = AdminError(
        message: "extended query protocol not supported by admin console"
    )

    /// A command Lifeguard does not carry out (yet): never a pretended success.
    public static func notImplemented(_ what: String) -> AdminError {
        AdminError(sqlState: "0A000", message: "\(what) is not supported by Lifeguard's admin console")
    }
}
