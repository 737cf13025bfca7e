import PoolCore
import Testing

@testable import ConnectionPool

/// The pool's connections by id.
@Suite struct ConnectionListTests {
    @Test func connectionListFindsInsertsAndRemovesByID() {
        var list = ConnectionList<String>()
        for id in [3, 1, 7, 5] { list.insert("c\(id)", for: ConnectionID(id)) }
        #expect(list.ids == [1, 3, 5, 7].map(ConnectionID.init))
        #expect(list[ConnectionID(5)] == "c5")
        #expect(list[ConnectionID(4)] == nil)
        list.insert("again", for: ConnectionID(3))
        #expect(list[ConnectionID(3)] == "again")
        #expect(list.remove(ConnectionID(1)) == "c1")
        #expect(list.remove(ConnectionID(1)) == nil)
        #expect(list.byID == [ConnectionID(3): "again", ConnectionID(5): "c5", ConnectionID(7): "c7"])
    }
}
