import PoolCore
import Synchronization

/// A pool that shares a ``ConnectionBudget`` with the other pools of its database.
public protocol ConnectionBudgetMember: AnyObject, Sendable {
    /// There is room again after the pool's connects were deferred (``PoolEvent/connectPermitted``).
    func connectPermitted()
    /// When its least recently used idle connection became idle; nil when none is idle.
    var oldestIdleSince: ContinuousClock.Instant? { get }
    /// Clients wait for a connection of this pool.
    var hasWaiters: Bool { get }
    /// Closes that connection (``PoolEvent/evictIdle``).
    func evictIdle()
}

/// PgBouncer's `max_db_connections`: the server connections of every pool of one database, counted against one
/// limit (0: none, counted only).
///
/// A pool holds one unit from the start of a connect until the connection closes or the connect fails. A pool that
/// finds no room defers its connect (``PoolEvent/connectDeferred(_:)``) and queues here; the room freed by a close
/// goes to the pools in the order they queued (``PoolEvent/connectPermitted``). For a queued pool whose clients wait,
/// room is made by evicting the oldest idle connection of another pool of the database, as PgBouncer does: when it
/// queues, when one of its clients asks, and when a connection of another pool becomes idle.
public final class ConnectionBudget: Sendable {
    private struct Member {
        weak var pool: (any ConnectionBudgetMember)?
    }

    private struct State {
        var limit: Int
        var held = 0
        var members: [ObjectIdentifier: Member] = [:]
        /// Pools whose connects are deferred, first come first served; each at most once.
        var deferred: [ObjectIdentifier] = []

        var hasRoom: Bool { self.limit == 0 || self.held < self.limit }
    }

    private let state: Mutex<State>
    /// `deferred.count`, read without the lock on every lease and release.
    private let deferredCount = Atomic<Int>(0)

    public init(limit: Int) {
        self.state = Mutex(State(limit: max(0, limit)))
    }

    /// The limit (0: none) and the connections counted against it now, open or opening.
    public var usage: (limit: Int, held: Int) { self.state.withLock { ($0.limit, $0.held) } }

    /// A reload's limit; room it makes goes to deferred pools at once.
    public func setLimit(_ limit: Int) {
        let woken = self.state.withLock { state in
            state.limit = max(0, limit)
            return self.takeDeferred(&state)
        }
        for pool in woken { pool.connectPermitted() }
    }

    public func join(_ pool: some ConnectionBudgetMember) {
        self.state.withLock { $0.members[ObjectIdentifier(pool)] = Member(pool: pool) }
    }

    public func leave(_ pool: some ConnectionBudgetMember) {
        self.state.withLock { state in
            state.members[ObjectIdentifier(pool)] = nil
            state.deferred.removeAll { $0 == ObjectIdentifier(pool) }
            self.deferredCount.store(state.deferred.count, ordering: .relaxed)
        }
    }

    /// Some pool waits for room: its members call ``makeRoom()`` when a lease or a release may let them make some.
    public var hasDeferred: Bool { self.deferredCount.load(ordering: .relaxed) > 0 }

    /// Takes a unit for a connect; false when there is no room.
    public func acquire() -> Bool {
        self.state.withLock { state in
            guard state.hasRoom else { return false }
            state.held += 1
            return true
        }
    }

    /// A connection closed or a connect failed: its unit goes back, and the first deferred pool hears of the room.
    public func release() {
        let woken = self.state.withLock { state in
            state.held = max(0, state.held - 1)
            return self.takeDeferred(&state)
        }
        for pool in woken { pool.connectPermitted() }
    }

    /// After `pool` deferred a connect: queues it for room, or returns false when room was made meanwhile (the pool
    /// then tries again at once).
    public func waitForRoom(_ pool: some ConnectionBudgetMember) -> Bool {
        self.state.withLock { state in
            guard !state.hasRoom else { return false }
            let id = ObjectIdentifier(pool)
            if !state.deferred.contains(id) { state.deferred.append(id) }
            self.deferredCount.store(state.deferred.count, ordering: .relaxed)
            return true
        }
    }

    /// For the first queued pool whose clients wait: closes the oldest idle connection of another pool of the
    /// database, if there is one. Its close releases a unit, which goes to the queued pools in order.
    public func makeRoom() {
        let (queued, members) = self.state.withLock { state in
            (state.deferred.compactMap { state.members[$0]?.pool }, state.members.values.compactMap(\.pool))
        }
        guard let needy = queued.first(where: { $0.hasWaiters }) else { return }
        let candidates = members.compactMap { pool in
            pool === needy ? nil : pool.oldestIdleSince.map { (pool, $0) }
        }
        candidates.min { $0.1 < $1.1 }?.0.evictIdle()
    }

    /// The deferred pools that the room now lets connect, in order (all of them without a limit).
    private func takeDeferred(_ state: inout State) -> [any ConnectionBudgetMember] {
        var woken: [any ConnectionBudgetMember] = []
        var room = state.limit == 0 ? Int.max : state.limit - state.held
        while room > 0, !state.deferred.isEmpty {
            let id = state.deferred.removeFirst()
            guard let pool = state.members[id]?.pool else { continue }
            woken.append(pool)
            room -= 1
        }
        self.deferredCount.store(state.deferred.count, ordering: .relaxed)
        return woken
    }
}
