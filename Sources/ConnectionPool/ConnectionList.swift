import PoolCore

/// The pool's connection objects by id, in two parallel arrays sorted by id and searched by halving: a pool holds
/// tens of connections and new ids are the highest, so a lookup (one per checkout) costs a few comparisons instead
/// of hashing the id into a `Dictionary` (~200 instructions).
@usableFromInline
struct ConnectionList<Connection> {
    @usableFromInline var ids: [ConnectionID] = []
    @usableFromInline var connections: [Connection] = []

    @inlinable
    init() {}

    @inlinable
    subscript(id: ConnectionID) -> Connection? {
        guard let index = self.ids.sortedIndex(of: id) else { return nil }
        return self.connections[index]
    }

    /// Adds `connection` under `id`, or replaces the one there.
    @inlinable
    mutating func insert(_ connection: Connection, for id: ConnectionID) {
        let position = self.ids.sortedPosition(of: id)
        if position < self.ids.count, self.ids[position] == id {
            self.connections[position] = connection
        } else {
            self.ids.insert(id, at: position)
            self.connections.insert(connection, at: position)
        }
    }

    @inlinable
    mutating func remove(_ id: ConnectionID) -> Connection? {
        guard let index = self.ids.sortedIndex(of: id) else { return nil }
        self.ids.remove(at: index)
        return self.connections.remove(at: index)
    }

    /// All of them by id (for inspection).
    @inlinable
    var byID: [ConnectionID: Connection] {
        Dictionary(uniqueKeysWithValues: zip(self.ids, self.connections))
    }
}
