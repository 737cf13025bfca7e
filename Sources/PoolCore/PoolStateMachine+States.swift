extension PoolStateMachine {
    /// The pool as a whole.
    enum Phase: Sendable, Equatable {
        /// Connections are opened as they are needed.
        /// Goes to `connectFailing` when a connect fails, to `shuttingDown` on shutdown.
        case running
        /// The last connect failed. At most one connect is in flight, and none starts before `retryAt`;
        /// waiters keep waiting and, at their `pool_timeout`, get the last connect error.
        /// Goes to `running` when a connect succeeds, stays here (backing off further) when one fails,
        /// to `shuttingDown` on shutdown.
        case connectFailing(ConnectFailing)
        /// Nothing is handed out; connections are closed as they come back.
        /// Goes to `shutDown` when no connection is left.
        case shuttingDown
        /// Final: every request fails.
        case shutDown
    }

    struct ConnectFailing: Sendable, Equatable {
        /// Consecutive failed connects.
        var failures: Int
        var lastError: ConnectError
        var retryAt: PoolInstant
        /// Pending until the backoff ends.
        var retryTimer: PoolTimer.ID?
    }

    /// One connection. A closed connection has no state: it is removed from the pool.
    enum ConnectionState: Sendable, Equatable {
        /// Being opened by the factory.
        /// Goes to `leased` (established, a request waits), `idle` (established, nobody waits), or is removed
        /// (connect failed; or established while shutting down, above the limit, or not needed).
        case connecting(since: PoolInstant)
        /// Open and unused.
        /// Goes to `leased` (fresh enough to hand out), `pinging` (unused longer than `prePingDelay`), or is removed
        /// (recycled when it would be handed out, `idle_timeout`, broken, shrunk by a reconfigure, shutdown).
        case idle(Idle)
        /// Being checked before it is handed to `waiter`.
        /// Goes to `leased` (ping succeeded, the request still waits), `idle` (ping succeeded, the request went
        /// away and nobody else waits), or is removed (ping failed, broken, shutdown).
        case pinging(Pinging)
        /// Handed to a client.
        /// Goes to `idle` or `leased` to the oldest waiter (returned), or is removed (returned while too old,
        /// not needed, shutting down; broken; drain timeout passed).
        case leased(Lease)
    }

    struct Idle: Sendable, Equatable {
        var openedAt: PoolInstant
        /// When it was last used (returned, established or successfully pinged).
        var idleSince: PoolInstant
    }

    struct Pinging: Sendable, Equatable {
        var openedAt: PoolInstant
        /// The request the connection goes to; nil once that request timed out or was cancelled.
        var waiter: Waiter?
    }

    struct Lease: Sendable, Equatable {
        var openedAt: PoolInstant
        var request: RequestID
        var since: PoolInstant
        /// Pending until the leak is reported, so it is reported once per lease.
        var leakTimer: PoolTimer.ID?
    }

    /// An idle connection in ``PoolStateMachine/idleOrder``, ordered by when it became idle, then by id.
    struct IdleEntry: Sendable, Equatable, Comparable {
        var id: ConnectionID
        var since: PoolInstant
        var affinity: Int?

        static func < (lhs: Self, rhs: Self) -> Bool {
            (lhs.since, lhs.id.rawValue) < (rhs.since, rhs.id.rawValue)
        }
    }

    /// A request that has not been served yet.
    struct Waiter: Sendable, Equatable {
        var request: RequestID
        /// Arrival order; the queue is sorted by it.
        var seq: Int
        var since: PoolInstant
        var deadline: PoolInstant
        /// Scheduled only once the request really waits.
        var timer: PoolTimer.ID?
        /// Idle connections with this affinity are preferred.
        var affinity: Int?
        /// How often a younger waiter got a connection first because it ran where that connection does (bounded by
        /// ``PoolStateMachine/maxPassedOver``).
        var passedOver = 0
    }
}

extension PoolStateMachine {
    /// The gauges counted afresh from the states, for tests to compare with ``stats``.
    func recountGauges() -> PoolStats {
        var stats = PoolStats()
        for state in self.connections.values {
            switch state {
            case .connecting:
                stats.connecting += 1
            case .idle:
                stats.idle += 1
            case .pinging(let pinging):
                stats.used += 1
                if pinging.waiter != nil { stats.waiting += 1 }
            case .leased:
                stats.used += 1
                stats.checkedOut += 1
            }
        }
        stats.waiting += self.queue.count
        stats.overflow = max(0, stats.open - self.configuration.poolSize)
        return stats
    }
}
