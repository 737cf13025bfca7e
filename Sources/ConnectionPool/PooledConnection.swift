import PoolCore

/// A server connection the pool manages. Made by a ``ConnectionFactory``; the pool calls `ping` and `close`,
/// clients use it between `lease` and `release`/`discard`.
public protocol PooledConnection: AnyObject, Sendable {
    /// The id the factory was asked for.
    var id: ConnectionID { get }
    /// Checks the connection (for example with an empty query); false when it is broken. Must time out by itself.
    func ping() async -> Bool
    /// Closes the connection without waiting.
    func close()
    /// Matched against the `affinity` of lease requests: the pool prefers handing out a connection with the
    /// requester's affinity (the event loop both run on, so that no thread hop sits between them). Nil: none.
    var affinity: Int? { get }
}

extension PooledConnection {
    public var affinity: Int? { nil }
}

/// Opens server connections for a pool.
public protocol ConnectionFactory: Sendable {
    associatedtype Connection: PooledConnection

    /// Opens and authenticates a connection. Must time out by itself and report why it failed; the message
    /// reaches clients, so it must not contain a password.
    func makeConnection(id: ConnectionID, for key: PoolKey) async throws(ConnectError) -> Connection

    /// The same, for a client with this ``PooledConnection/affinity``: a factory that can, opens the connection
    /// where that client runs. By default, ``makeConnection(id:for:)``.
    func makeConnection(id: ConnectionID, for key: PoolKey, affinity: Int?) async throws(ConnectError) -> Connection
}

extension ConnectionFactory {
    public func makeConnection(
        id: ConnectionID,
        for key: PoolKey,
        affinity: Int?
    ) async throws(ConnectError) -> Connection {
        try await self.makeConnection(id: id, for: key)
    }
}
