/// A timer the state machine asks for, as data. The live pool sleeps until `deadline` and feeds the timer back
/// as ``PoolEvent/timerFired(_:)``. A timer that is no longer wanted (cancelled, or its subject moved on) is
/// ignored when it fires, so cancelling is only an optimisation.
public struct PoolTimer: Hashable, Sendable, CustomStringConvertible {
    /// Unique within one state machine.
    public struct ID: Hashable, Sendable, Comparable {
        public var rawValue: Int

        public init(_ rawValue: Int) {
            self.rawValue = rawValue
        }

        public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    public enum Kind: Hashable, Sendable {
        /// The request's `pool_timeout` ends.
        case requestTimeout(RequestID)
        /// The `idle_timeout` of the least recently used idle connection ends: idle connections are swept.
        case idleTimeout
        /// The lease passes `leak_threshold`.
        case leak(ConnectionID)
        /// The connect backoff ends.
        case connectRetry
    }

    public var id: ID
    public var kind: Kind
    /// The deadline, kept frozen-layout (see ``PoolInstant``): timers are made and stored on every checkout.
    var due: PoolInstant

    public var deadline: ContinuousClock.Instant { self.due.instant }

    public init(id: ID, kind: Kind, deadline: ContinuousClock.Instant) {
        self.init(id: id, kind: kind, due: PoolInstant(deadline))
    }

    init(id: ID, kind: Kind, due: PoolInstant) {
        self.id = id
        self.kind = kind
        self.due = due
    }

    public var description: String { "timer \(self.id.rawValue) \(self.kind)" }
}
