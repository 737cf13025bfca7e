import ConnectionPool
import ConnectionPoolTestSupport
import PoolCore
import Synchronization
import Testing

/// `max_db_connections`: pools of one database sharing a ``ConnectionBudget``, on a manual clock.
@Suite(.timeLimit(.minutes(1))) struct ConnectionBudgetTests {
    let clock = ManualClock()

    func makePool(
        user: String,
        budget: ConnectionBudget,
        poolSize: Int = 2,
        factory: FakeFactory = FakeFactory()
    ) -> ConnectionPool<FakeFactory, ManualClock> {
        ConnectionPool(
            key: PoolKey(database: "db", user: user),
            configuration: ConnectionPoolTests.configuration(poolSize: poolSize),
            factory: factory,
            clock: self.clock,
            jitterSeed: 1,
            budget: budget
        )
    }

    /// Both pools could open two connections; the database allows two in all. The second pool's client waits for
    /// one of the first pool's to close, gets its room, and the count never goes above the limit.
    @Test func poolsOfADatabaseShareItsLimit() async throws {
        let budget = ConnectionBudget(limit: 2)
        let alice = self.makePool(user: "alice", budget: budget)
        let bob = self.makePool(user: "bob", budget: budget)
        try await withRunningPool(alice) {
            try await withRunningPool(bob) {
                let first = try await alice.lease()
                let second = try await alice.lease()
                #expect(budget.usage == (limit: 2, held: 2))
                async let waiting = bob.lease()
                while !budget.hasDeferred { await Task.yield() }
                #expect(budget.usage.held == 2 && bob.stats.connecting == 0 && bob.hasWaiters)
                // Released, the connection is idle: evicted for bob's waiting client.
                alice.release(first)
                let got = try await waiting
                #expect(first.isClosed && !second.isClosed)
                #expect(budget.usage.held == 2)
                bob.release(got)
                alice.release(second)
            }
        }
        #expect(budget.usage.held == 0)
    }

    /// A connect that fails gives its room back, and a reload that raises the limit lets waiting pools connect.
    @Test func failedConnectsAndARaisedLimitFreeRoom() async throws {
        let budget = ConnectionBudget(limit: 1)
        let alice = self.makePool(user: "alice", budget: budget)
        let bob = self.makePool(user: "bob", budget: budget)
        try await withRunningPool(alice) {
            try await withRunningPool(bob) {
                let held = try await alice.lease()
                async let waiting = bob.lease()
                while !budget.hasDeferred { await Task.yield() }
                budget.setLimit(2)
                let got = try await waiting
                #expect(budget.usage == (limit: 2, held: 2) && !budget.hasDeferred)
                bob.release(got)
                alice.release(held)
            }
        }
        let failing = ConnectionBudget(limit: 1)
        let refused = ConnectError(reason: .auth, message: "password authentication failed", isPermanent: true)
        let broken = self.makePool(user: "carol", budget: failing, factory: FakeFactory(failure: refused))
        try await withRunningPool(broken) {
            await #expect(throws: PoolError.self) { try await broken.lease() }
            #expect(failing.usage.held == 0)
        }
    }

    /// Without a limit the budget only counts (for SHOW DATABASES).
    @Test func noLimitOnlyCounts() async throws {
        let budget = ConnectionBudget(limit: 0)
        let alice = self.makePool(user: "alice", budget: budget, poolSize: 3)
        try await withRunningPool(alice) {
            let leases = [try await alice.lease(), try await alice.lease(), try await alice.lease()]
            #expect(budget.usage == (limit: 0, held: 3))
            for lease in leases { alice.release(lease) }
        }
        #expect(budget.usage.held == 0)
    }
}
