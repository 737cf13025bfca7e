/// When a server connection goes back to the pool.
public enum PoolMode: String, Sendable, CaseIterable {
    /// When the client disconnects.
    case session
    /// When a transaction ends (`ReadyForQuery` with status `I`).
    case transaction
    /// After every statement; multi-statement transactions are refused.
    case statement
}
