/// What a pool holds right now, connection by connection: what the admin console's `SHOW SERVERS` lists and
/// `SHOW POOLS` counts. Read from the state machine's own states, so it agrees with ``PoolStats``.
public struct PoolInspection: Sendable, Equatable {
    /// One connection being opened or open.
    public struct Connection: Sendable, Equatable {
        public enum State: Sendable, Equatable {
            /// Being opened (PgBouncer's `login`).
            case connecting
            /// Open and unused.
            case idle
            /// Being checked before it is handed out (PgBouncer's `tested`).
            case pinging
            /// Handed to a client (PgBouncer's `active`).
            case leased
        }

        public var id: ConnectionID
        public var state: State
        /// When the connect started (`connecting`) or completed (otherwise).
        public var openedAt: ContinuousClock.Instant
        /// When it was last handed out or became idle; nil while connecting or pinging.
        public var since: ContinuousClock.Instant?
        /// Opened before a ``PoolEvent/reconnect``: it closes once nobody holds it (PgBouncer's `close_needed`).
        public var closeNeeded: Bool

        public init(
            id: ConnectionID,
            state: State,
            openedAt: ContinuousClock.Instant,
            since: ContinuousClock.Instant?,
            closeNeeded: Bool = false
        ) {
            self.id = id
            self.state = state
            self.openedAt = openedAt
            self.since = since
            self.closeNeeded = closeNeeded
        }
    }

    public var stats: PoolStats
    /// Ordered by id (the order they were opened in).
    public var connections: [Connection]
    /// How many of ``connections`` are to close (``Connection/closeNeeded``): what `WAIT_CLOSE` waits for.
    public var closeNeededCount: Int { self.connections.count { $0.closeNeeded } }
    /// When the request that has waited longest began waiting; nil when nobody waits.
    public var oldestWaiterSince: ContinuousClock.Instant?

    public init(stats: PoolStats, connections: [Connection], oldestWaiterSince: ContinuousClock.Instant?) {
        self.stats = stats
        self.connections = connections
        self.oldestWaiterSince = oldestWaiterSince
    }
}

extension PoolStateMachine {
    /// The pool's connections and waiters as they are now (no clock read: instants are what the states hold).
    public func inspect() -> PoolInspection {
        var connections: [PoolInspection.Connection] = []
        connections.reserveCapacity(self.connections.count)
        var oldest = self.queue.first?.since
        for (id, state) in self.connections {
            switch state {
            case .connecting(let since):
                connections.append(.init(id: id, state: .connecting, openedAt: since.instant, since: nil))
            case .idle(let idle):
                connections.append(
                    .init(id: id, state: .idle, openedAt: idle.openedAt.instant, since: idle.idleSince.instant)
                )
            case .pinging(let pinging):
                connections.append(.init(id: id, state: .pinging, openedAt: pinging.openedAt.instant, since: nil))
                if let waiter = pinging.waiter, oldest.map({ waiter.since < $0 }) ?? true { oldest = waiter.since }
            case .leased(let lease):
                connections.append(
                    .init(id: id, state: .leased, openedAt: lease.openedAt.instant, since: lease.since.instant)
                )
            }
        }
        for index in connections.indices where connections[index].id.rawValue < self.staleBelow {
            connections[index].closeNeeded = true
        }
        connections.sort { $0.id < $1.id }
        return PoolInspection(stats: self.stats, connections: connections, oldestWaiterSince: oldest?.instant)
    }
}
