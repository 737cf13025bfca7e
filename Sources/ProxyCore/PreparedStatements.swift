import Crypto
import NIOCore
import PGWire
import Synchronization

/// The statements Lifeguard prepared on one server connection (server names), each with the stamp of the Parse that
/// made it: a client's statement is trusted there only if that Parse was not older than the client's own.
public struct ServerStatements: Sendable, Equatable, ExpressibleByArrayLiteral {
    private var stamps: [String: UInt64] = [:]

    public init() {}

    /// Names prepared at stamp 0 (before anything a client parses).
    public init(arrayLiteral names: String...) {
        for name in names { self.stamps[name] = 0 }
    }

    public var count: Int { self.stamps.count }
    public var isEmpty: Bool { self.stamps.isEmpty }
    public func contains(_ name: String) -> Bool { self.stamps[name] != nil }
    /// When the statement was prepared here, nil when it is not.
    public func stamp(of name: String) -> UInt64? { self.stamps[name] }
    public mutating func insert(_ name: String, stamp: UInt64) { self.stamps[name] = stamp }
    public mutating func remove(_ name: String) { self.stamps[name] = nil }
    public mutating func removeAll() { self.stamps.removeAll() }

    /// The same statements, whenever they were prepared.
    public static func == (lhs: Self, rhs: Self) -> Bool { Set(lhs.stamps.keys) == Set(rhs.stamps.keys) }
}

/// Protocol-level named prepared statements in transaction and statement mode (PgBouncer ≥ 1.21's approach): the
/// client's statement names are mapped to server names derived from the statement itself, so one server statement
/// serves every client that prepares the same query, and a statement the client prepared on another server connection
/// is prepared again on the current one before it is used.
///
/// Per client; the server connection's set of prepared names (``ServerConnection/preparedStatements``) is passed in.
/// The replies the server owes for Parse and Close are queued in the order they were sent, so that the reply to an
/// injected Parse can be swallowed and the reply to a substitute can be turned into what the client expects. Statements
/// made with SQL `PREPARE` are not tracked (they stay on their server connection, as before).
struct PreparedStatements {
    /// Server names start with this.
    static let serverNamePrefix = "lifeguard_"
    /// Past this many statements, a server connection is cleared with `DEALLOCATE ALL` before it goes back.
    static let maxPerServer = 1000
    /// Stands in for a Parse or Close that must not reach the server: closing a portal that does not exist is not an
    /// error, and its CloseComplete keeps the place of the reply the client waits for.
    static let placeholder = PGFrontendMessage.close(.portal("lifeguard_noop"))

    /// What the client named: the server name, the Parse (already carrying the server name) that makes it, and
    /// when the client sent that Parse (``nextStamp()``).
    struct Statement: Hashable {
        let serverName: String
        let parse: PGParse
        let parsedAt: UInt64
    }

    private static let stamps = Atomic<UInt64>(1)

    /// Orders Parses across every client and server connection of the process.
    static func nextStamp() -> UInt64 {
        Self.stamps.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    /// What becomes of a ParseComplete or CloseComplete from the server.
    enum Reply: Equatable {
        case relay
        case swallow
        /// The CloseComplete of a placeholder for a Parse: the client gets ParseComplete.
        case parseComplete
    }

    private enum Close: Hashable {
        case relay
        /// Closes the server statement before the client's Parse prepares it again (swallowed).
        case beforeParse(serverName: String)
        /// Placeholder for the client's Parse of `client`, already prepared on the server.
        case forParse(client: String, serverName: String)
        /// Placeholder for the client's Close of `client`, which maps to `statement`.
        case forClose(client: String, statement: Statement)
    }

    private enum Expected: Hashable {
        /// A Parse; `client` is the client's name when the client sent it (relayed), nil when injected (swallowed);
        /// `stamp` is what the server connection records once it succeeds.
        case parse(serverName: String?, client: String?, stamp: UInt64)
        case close(Close)
        /// Sync, Query or FunctionCall: answered with ReadyForQuery.
        case readyForQuery

        func parses(_ serverName: String) -> Bool {
            if case .parse(serverName?, _, _) = self { return true }
            return false
        }
    }

    /// The client's statement names.
    private(set) var statements: [String: Statement] = [:]
    /// Replies owed by the server, oldest first.
    private var expected: [Expected] = []

    init() {}

    /// The server name of a statement: the same for the same query text and parameter types, on any connection.
    static func serverName(query: String, parameterTypes: [UInt32]) -> String {
        var hasher = SHA256()
        hasher.update(data: Array(query.utf8))
        var types: [UInt8] = [0]
        for type in parameterTypes {
            types += [UInt8(truncatingIfNeeded: type >> 24), UInt8(truncatingIfNeeded: type >> 16)]
            types += [UInt8(truncatingIfNeeded: type >> 8), UInt8(truncatingIfNeeded: type)]
        }
        hasher.update(data: types)
        // 128 bits: collisions are out of reach, and the name stays under NAMEDATALEN (63).
        let hex = hasher.finalize().prefix(16).map { byte in
            let digits = Array("0123456789abcdef")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0f)]])
        }
        return Self.serverNamePrefix + hex.joined()
    }

    /// A server connection is taken: nothing is owed by it yet. (The list keeps its storage: in transaction mode a
    /// client takes a server connection per transaction.)
    mutating func newServerConnection() {
        self.expected.removeAll(keepingCapacity: true)
    }

    /// What to send to the server for one client message, given the names prepared on the server connection; `nil`
    /// means the frame's bytes as they are.
    mutating func outgoing(_ frame: PGFrame, prepared: @autoclosure () -> ServerStatements) -> [PGFrontendMessage]? {
        switch frame.type {
        case PGFrontendMessageType.sync, PGFrontendMessageType.query, PGFrontendMessageType.functionCall:
            self.expected.append(.readyForQuery)
            return nil
        case PGFrontendMessageType.parse, PGFrontendMessageType.bind, PGFrontendMessageType.describe,
            PGFrontendMessageType.close:
            break
        default:
            return nil
        }
        if let unnamed = Self.unnamedTarget(of: frame) {
            // The unnamed statement or a portal: nothing to rename, so the message is not decoded (drivers that do
            // not name their statements send four of these per query).
            switch unnamed {
            case .parse: self.expected.append(.parse(serverName: nil, client: nil, stamp: 0))
            case .close: self.expected.append(.close(.relay))
            case .other: break
            }
            return nil
        }
        // A malformed message goes as it is: the server rejects it and closes.
        guard let message = try? PGFrontendMessage(frame: frame) else { return nil }
        // Read only now: it takes the server connection's lock.
        let prepared = prepared()
        switch message {
        case .parse(var parse):
            let client = parse.statementName
            guard !client.isEmpty else {
                self.expected.append(.parse(serverName: nil, client: nil, stamp: 0))
                return nil
            }
            let serverName = Self.serverName(query: parse.query, parameterTypes: parse.parameterTypes)
            parse.statementName = serverName
            let stamp = Self.nextStamp()
            self.statements[client] = Statement(serverName: serverName, parse: parse, parsedAt: stamp)
            if self.expected.contains(where: { $0.parses(serverName) }) {
                // Being prepared by this very batch.
                self.expected.append(.close(.forParse(client: client, serverName: serverName)))
                return [Self.placeholder]
            }
            self.expected.append(.parse(serverName: serverName, client: client, stamp: stamp))
            if prepared.contains(serverName) {
                // Prepared before, maybe by another client and before a schema change: a client's own Parse plans
                // afresh, as it would on a connection of its own.
                self.expected.insert(.close(.beforeParse(serverName: serverName)), at: self.expected.count - 1)
                return [.close(.statement(serverName)), .parse(parse)]
            }
            return [.parse(parse)]
        case .bind(var bind):
            guard let statement = self.statements[bind.statementName] else { return nil }
            bind.statementName = statement.serverName
            return self.ensure(statement, prepared: prepared) + [.bind(bind)]
        case .describe(.statement(let client)):
            guard let statement = self.statements[client] else { return nil }
            return self.ensure(statement, prepared: prepared) + [.describe(.statement(statement.serverName))]
        case .close(.statement(let client)):
            guard let statement = self.statements.removeValue(forKey: client) else {
                self.expected.append(.close(.relay))
                return nil
            }
            // The server statement stays for the other clients.
            self.expected.append(.close(.forClose(client: client, statement: statement)))
            return [Self.placeholder]
        case .close(.portal):
            self.expected.append(.close(.relay))
            return nil
        default:
            return nil
        }
    }

    private enum Unnamed {
        case parse, close, other
    }

    /// Which of Parse, Close or another message this is when it names the unnamed statement or a portal (both pass
    /// through unchanged), read from its first bytes; nil when it names a statement (or is too short to tell).
    private static func unnamedTarget(of frame: PGFrame) -> Unnamed? {
        let bytes = frame.bytes
        let body = bytes.readerIndex + 5
        guard bytes.readableBytes > 5, let first = bytes.getInteger(at: body, as: UInt8.self) else { return nil }
        switch frame.type {
        case PGFrontendMessageType.parse:
            // Statement name first.
            return first == 0 ? .parse : nil
        case PGFrontendMessageType.bind:
            // Portal name, then statement name.
            guard let end = bytes.readableBytesView.dropFirst(5).firstIndex(of: 0),
                bytes.getInteger(at: end + 1, as: UInt8.self) == 0
            else { return nil }
            return .other
        case PGFrontendMessageType.describe, PGFrontendMessageType.close:
            // `S` or `P`, then the name.
            let isPortal = first == UInt8(ascii: "P")
            guard isPortal || (first == UInt8(ascii: "S") && bytes.getInteger(at: body + 1, as: UInt8.self) == 0)
            else { return nil }
            return frame.type == PGFrontendMessageType.close ? .close : .other
        default:
            return nil
        }
    }

    /// The server's ParseComplete or CloseComplete (`type`): what the client gets. A ParseComplete marks its statement
    /// prepared on the server connection.
    mutating func reply(_ type: UInt8, prepared: inout ServerStatements) -> Reply {
        // Replies come in the order of the messages; ReadyForQuery markers belong to later replies.
        guard let index = self.expected.firstIndex(where: { $0 != .readyForQuery }) else { return .relay }
        let entry = self.expected.remove(at: index)
        switch (type, entry) {
        case (PGBackendMessageType.parseComplete, .parse(let serverName, let client, let stamp)):
            if let serverName { prepared.insert(serverName, stamp: stamp) }
            return serverName != nil && client == nil ? .swallow : .relay
        case (PGBackendMessageType.closeComplete, .close(.forParse)):
            return .parseComplete
        case (PGBackendMessageType.closeComplete, .close(.beforeParse(let serverName))):
            // Gone until its ParseComplete says otherwise.
            prepared.remove(serverName)
            return .swallow
        default:
            return .relay
        }
    }

    /// ReadyForQuery: what was owed before its Sync and never came was skipped after an error, as PostgreSQL skips up
    /// to Sync; the client's statements then are as if those messages had not been sent.
    mutating func readyForQuery() {
        let end = self.expected.firstIndex(of: .readyForQuery).map { $0 + 1 } ?? self.expected.count
        for entry in self.expected[..<end] {
            switch entry {
            case .parse(let serverName?, let client?, _), .close(.forParse(let client, let serverName)):
                if self.statements[client]?.serverName == serverName { self.statements[client] = nil }
            case .close(.forClose(let client, let statement)):
                if self.statements[client] == nil { self.statements[client] = statement }
            default:
                break
            }
        }
        self.expected.removeFirst(end)
    }

    /// Whether an error says that a statement on the server connection no longer fits the schema, or is gone:
    /// prepared (maybe by another client) before a type or table it uses was dropped and made again, or deallocated
    /// behind Lifeguard's back. The connection's statements are then dropped before it serves anyone else.
    static func meansStale(_ fields: PGErrorFields) -> Bool {
        switch fields.sqlState {
        case "0A000": fields.message?.hasPrefix("cached plan must not change result type") ?? false
        case "XX000": fields.message?.hasPrefix("cache lookup failed") ?? false
        case "26000": true
        default: false
        }
    }

    /// Whether a CommandComplete tag says that every prepared statement of the server connection is gone.
    static func clearsAll(commandTag tag: String) -> Bool {
        tag == "DEALLOCATE ALL" || tag == "DISCARD ALL"
    }

    /// The client's statement prepared before it is used: its Parse, injected when the server connection lacks it,
    /// or has it from a Parse older than the client's own (made, maybe, before a schema change: it is prepared
    /// again, as the client's own statement would have been planned).
    private mutating func ensure(_ statement: Statement, prepared: ServerStatements) -> [PGFrontendMessage] {
        let name = statement.serverName
        // A Parse already on its way counts: if it fails, the server skips what follows up to Sync.
        if self.expected.contains(where: { $0.parses(name) }) { return [] }
        let stamp = Self.nextStamp()
        guard let preparedAt = prepared.stamp(of: name) else {
            self.expected.append(.parse(serverName: name, client: nil, stamp: stamp))
            return [.parse(statement.parse)]
        }
        if preparedAt >= statement.parsedAt { return [] }
        self.expected.append(.close(.beforeParse(serverName: name)))
        self.expected.append(.parse(serverName: name, client: nil, stamp: stamp))
        return [.close(.statement(name)), .parse(statement.parse)]
    }
}
