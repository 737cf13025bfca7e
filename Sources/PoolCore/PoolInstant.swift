/// A point in time as the state machine stores it: an offset from a fixed origin, as a `Duration`.
///
/// `ContinuousClock.Instant` is resilient (the standard library does not freeze its layout), so every state,
/// waiter and timer that held one was sized, copied and destroyed through run-time metadata and value witnesses:
/// thousands of instructions per pool event (callgrind, bench/README.md). `Duration` is frozen, and so is this.
/// Instants convert exactly, both ways, at the state machine's edges (`handle(_:now:)`, ``PoolTimer/deadline``).
struct PoolInstant: Hashable, Comparable, Sendable {
    /// Since ``origin``; negative for instants before it.
    var offset: Duration

    /// Any fixed instant will do; arithmetic on `Duration` is exact, so conversions round-trip.
    private static let origin = ContinuousClock.now

    init(_ instant: ContinuousClock.Instant) {
        self.offset = Self.origin.duration(to: instant)
    }

    private init(offset: Duration) {
        self.offset = offset
    }

    var instant: ContinuousClock.Instant { Self.origin.advanced(by: self.offset) }

    static func + (lhs: Self, rhs: Duration) -> Self { Self(offset: lhs.offset + rhs) }

    static func - (lhs: Self, rhs: Self) -> Duration { lhs.offset - rhs.offset }

    static func < (lhs: Self, rhs: Self) -> Bool { lhs.offset < rhs.offset }
}
