import PGWire
import PoolCore

/// What a leased server connection owes: the replies to what was sent and not yet answered, and the state it is
/// left in. Kept with the lease, updated by every message relayed either way, and read by ``ReturnPlan`` when the
/// connection goes back.
public struct ServerLedger: Sendable, Equatable {
    /// Query, Sync and FunctionCall messages sent minus ReadyForQuery messages received.
    public private(set) var outstanding = 0
    /// Extended-protocol messages sent since the last Sync: the server owes a reply once a Sync comes.
    public private(set) var unsynced = 0
    /// Inside COPY (in or out): the connection cannot be reused until the COPY ends.
    public private(set) var inCopy = false
    /// The transaction status of the last ReadyForQuery.
    public private(set) var status: PGTransactionStatus = .idle
    /// The server said FATAL (or PANIC): it is about to close, and cannot be reused.
    public private(set) var fatal = false

    public init() {}

    /// Nothing is owed: every request was answered with its ReadyForQuery.
    public var isSettled: Bool { self.outstanding == 0 && self.unsynced == 0 && !self.inCopy }

    /// A client message of `type` was sent to the server.
    public mutating func sent(_ type: UInt8) {
        switch type {
        case PGFrontendMessageType.query, PGFrontendMessageType.functionCall, PGFrontendMessageType.sync:
            self.outstanding += 1
            self.unsynced = 0
        case PGFrontendMessageType.copyData, PGFrontendMessageType.copyDone, PGFrontendMessageType.copyFail:
            break
        default:
            self.unsynced += 1
        }
    }

    /// A ReadyForQuery with `status` came back.
    public mutating func readyForQuery(_ status: PGTransactionStatus) {
        self.outstanding = max(0, self.outstanding - 1)
        self.inCopy = false
        self.status = status
    }

    /// CopyInResponse, CopyOutResponse or CopyBothResponse came back.
    public mutating func copyStarted() {
        self.inCopy = true
    }

    /// The server sent an ErrorResponse of severity FATAL or PANIC.
    public mutating func fatalReceived() {
        self.fatal = true
    }
}

/// How a server connection goes back to its pool. Decided in one place (``ReturnPlan/init(ledger:mode:resetQuery:preparedStatements:)``),
/// as PgBouncer's `release_server` does: a connection that still owes replies is never reused.
public enum ReturnPlan: Sendable, Equatable {
    /// Clean: back to the pool as it is.
    case release
    /// Run these commands first (each must succeed and leave the connection idle), then release; any failure closes
    /// the connection instead.
    case reset([String])
    /// Close it: it owes replies, is inside COPY, said FATAL, or closed.
    case discard

    /// Past this many prepared statements, a connection is cleared with `DEALLOCATE ALL` before it goes back.
    public static let maxPreparedStatements = PreparedStatements.maxPerServer

    /// The plan for a connection whose holder lets go of it (the client left, or its session ended).
    ///
    /// - Parameters:
    ///   - mode: session mode resets the session with `resetQuery`; the other modes share prepared statements and
    ///     only clear them past ``maxPreparedStatements``.
    ///   - preparedStatements: how many statements Lifeguard prepared on the connection.
    public init(ledger: ServerLedger, mode: PoolMode, resetQuery: String?, preparedStatements: Int) {
        guard ledger.isSettled && !ledger.fatal else {
            self = .discard
            return
        }
        var commands: [String] = []
        if ledger.status != .idle { commands.append("ROLLBACK") }
        if mode == .session {
            if let resetQuery, !resetQuery.isEmpty { commands.append(resetQuery) }
        } else if preparedStatements > Self.maxPreparedStatements {
            commands.append("DEALLOCATE ALL")
        }
        self = commands.isEmpty ? .release : .reset(commands)
    }

    /// Whether the plan clears every prepared statement of the connection when it succeeds.
    public var clearsPreparedStatements: Bool {
        guard case .reset(let commands) = self else { return false }
        return commands.contains { PreparedStatements.clearsAll(commandTag: $0) }
    }
}
