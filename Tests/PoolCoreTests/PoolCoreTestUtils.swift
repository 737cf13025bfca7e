import Testing

@testable import PoolCore

/// A clock for the state machine: an instant that only moves when a test advances it.
struct FakeClock {
    let start: ContinuousClock.Instant
    private(set) var now: ContinuousClock.Instant

    init() {
        self.start = ContinuousClock.now
        self.now = self.start
    }

    mutating func advance(by duration: Duration) {
        self.now = self.now + duration
    }

    mutating func advance(to instant: ContinuousClock.Instant) {
        if instant > self.now { self.now = instant }
    }

    /// `start + offset`, for expected deadlines.
    func at(_ offset: Duration) -> ContinuousClock.Instant { self.start + offset }
}

/// A state machine and its fake clock, with shorthands for the events tests send.
struct PoolHarness {
    static let key = PoolKey(database: "db", user: "alice")

    var machine: PoolStateMachine
    var clock = FakeClock()

    /// Rules off unless a test turns them on: no pre-ping, no idle timeout.
    static func configuration(
        poolSize: Int = 2,
        minSize: Int = 0,
        maxOverflow: Int = 0
    ) -> PoolConfiguration {
        PoolConfiguration(
            poolSize: poolSize,
            minSize: minSize,
            maxOverflow: maxOverflow,
            poolTimeout: .seconds(30),
            prePing: false,
            idleTimeout: nil
        )
    }

    init(_ configuration: PoolConfiguration = PoolHarness.configuration(), seed: UInt64 = 1) {
        self.machine = PoolStateMachine(key: Self.key, configuration: configuration, jitterSeed: seed)
    }

    var now: ContinuousClock.Instant { self.clock.now }
    var stats: PoolStats { self.machine.stats }

    mutating func send(_ event: PoolEvent) -> [PoolAction] {
        self.machine.handle(event, now: self.clock.now)
    }

    mutating func advance(by duration: Duration) {
        self.clock.advance(by: duration)
    }

    /// Moves the clock to the timer's deadline and fires it.
    mutating func fire(_ timer: PoolTimer) -> [PoolAction] {
        self.clock.advance(to: timer.deadline)
        return self.send(.timerFired(timer))
    }

    mutating func request(_ id: Int) -> [PoolAction] { self.send(.leaseRequested(RequestID(id))) }
    mutating func establish(_ id: Int) -> [PoolAction] { self.send(.connectionEstablished(ConnectionID(id))) }
    /// Releases connection `id` under the lease it has now (found in the state machine), as its holder would.
    mutating func release(_ id: Int) -> [PoolAction] {
        guard case .leased(let lease)? = self.machine.connections[ConnectionID(id)] else {
            return self.send(.connectionReleased(ConnectionID(id), lease: RequestID(-1)))
        }
        return self.send(.connectionReleased(ConnectionID(id), lease: lease.request))
    }

    /// Requests `count` connections and establishes them: afterwards C0..C(count-1) are leased to R0..R(count-1).
    /// Needs an empty pool.
    mutating func leaseFresh(_ count: Int) {
        for index in 0..<count {
            let actions = self.request(index)
            #expect(actions.contains(.createConnection(ConnectionID(index))), "\(actions)")
        }
        for index in 0..<count {
            let actions = self.establish(index)
            #expect(actions.contains(.lease(ConnectionID(index), to: RequestID(index))), "\(actions)")
        }
    }
}

/// Builders that keep expected action lists short.
func C(_ id: Int) -> ConnectionID { ConnectionID(id) }
func R(_ id: Int) -> RequestID { RequestID(id) }

extension Array where Element == PoolAction {
    var scheduledTimers: [PoolTimer] {
        self.compactMap {
            if case .scheduleTimer(let timer) = $0 { return timer }
            return nil
        }
    }

    var observations: [PoolObservation] {
        self.compactMap {
            if case .observe(let observation) = $0 { return observation }
            return nil
        }
    }

    func failure(of request: RequestID) -> PoolError? {
        for case .failRequest(let id, let error) in self where id == request { return error }
        return nil
    }
}
