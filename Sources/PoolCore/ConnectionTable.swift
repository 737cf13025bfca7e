/// The pool's connections by id, with the affinity each was established with.
///
/// Kept sorted by id in two parallel arrays and found by binary search: a pool holds tens of connections, ids only
/// grow (a new one is appended), and a checkout looks a connection up several times, so this is several times
/// cheaper than hashing into a `Dictionary`. Iterates in id order.
struct ConnectionTable: Sendable, Equatable {
    private var ids: [ConnectionID] = []
    private var states: [PoolStateMachine.ConnectionState] = []
    private var affinityOf: [Int?] = []

    var isEmpty: Bool { self.ids.isEmpty }
    var count: Int { self.ids.count }
    /// The ids, ascending.
    var keys: [ConnectionID] { self.ids }
    var values: [PoolStateMachine.ConnectionState] { self.states }

    /// The state of `id`; nil when the pool does not have it. Setting nil removes the connection (and its
    /// affinity).
    subscript(id: ConnectionID) -> PoolStateMachine.ConnectionState? {
        get {
            guard let index = self.ids.sortedIndex(of: id) else { return nil }
            return self.states[index]
        }
        set {
            let position = self.ids.sortedPosition(of: id)
            let found = position < self.ids.count && self.ids[position] == id
            switch (newValue, found) {
            case (let state?, true):
                self.states[position] = state
            case (let state?, false):
                self.ids.insert(id, at: position)
                self.states.insert(state, at: position)
                self.affinityOf.insert(nil, at: position)
            case (nil, true):
                self.ids.remove(at: position)
                self.states.remove(at: position)
                self.affinityOf.remove(at: position)
            case (nil, false):
                break
            }
        }
    }

    /// The event loop (or other locality) the connection was established with; nil when none or unknown id.
    func affinity(of id: ConnectionID) -> Int? {
        guard let index = self.ids.sortedIndex(of: id) else { return nil }
        return self.affinityOf[index]
    }

    /// Records the affinity of a connection the table has (ignored for an unknown id).
    mutating func setAffinity(_ affinity: Int?, of id: ConnectionID) {
        guard let index = self.ids.sortedIndex(of: id) else { return }
        self.affinityOf[index] = affinity
    }

    /// The connections that have an affinity (for tests and inspection).
    var affinities: [ConnectionID: Int] {
        var result: [ConnectionID: Int] = [:]
        for (id, affinity) in zip(self.ids, self.affinityOf) { result[id] = affinity }
        return result
    }
}

extension ConnectionTable: Sequence {
    struct Iterator: IteratorProtocol {
        fileprivate var table: ConnectionTable
        fileprivate var index = 0

        mutating func next() -> (key: ConnectionID, value: PoolStateMachine.ConnectionState)? {
            guard self.index < self.table.ids.count else { return nil }
            defer { self.index += 1 }
            return (self.table.ids[self.index], self.table.states[self.index])
        }
    }

    func makeIterator() -> Iterator { Iterator(table: self) }
}
