/// A server connection of one pool. The state machine hands these out in increasing order.
public struct ConnectionID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var rawValue: Int

    public init(_ rawValue: Int) {
        self.rawValue = rawValue
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "C\(self.rawValue)" }
}

extension [ConnectionID] {
    /// In ids sorted ascending: the first index whose id is not below `id`. New connections have the highest id, so
    /// the end is looked at first.
    @inlinable
    public func sortedPosition(of id: ConnectionID) -> Int {
        if let last = self.last, last.rawValue < id.rawValue { return self.count }
        var low = 0
        var high = self.count
        while low < high {
            let middle = (low + high) / 2
            if self[middle].rawValue < id.rawValue { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// In ids sorted ascending: the index of `id`; nil when it is not there.
    @inlinable
    public func sortedIndex(of id: ConnectionID) -> Int? {
        let position = self.sortedPosition(of: id)
        return position < self.count && self[position] == id ? position : nil
    }
}

/// A client's request for a connection. Chosen by the caller (the live pool) and unique per pool.
public struct RequestID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var rawValue: Int

    public init(_ rawValue: Int) {
        self.rawValue = rawValue
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "R\(self.rawValue)" }
}
