/// Identifies one pool. Pools are keyed by (database, user), as in PgBouncer.
public struct PoolKey: Hashable, Sendable, CustomStringConvertible {
    public var database: String
    public var user: String

    public init(database: String, user: String) {
        self.database = database
        self.user = user
    }

    /// `database/user`, the form used in error messages and logs.
    public var description: String { "\(self.database)/\(self.user)" }
}
