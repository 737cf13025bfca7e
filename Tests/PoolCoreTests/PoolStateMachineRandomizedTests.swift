import Testing

@testable import PoolCore

/// Long random event sequences against a model of what the actions said, checking the invariants after every event.
@Suite struct PoolStateMachineRandomizedTests {
    /// Fixed seeds reproduce; the last one is new on every run (the seed is in the test case's name and every
    /// failure message).
    static let seeds: [UInt64] = [1, 7, 42, 2024, 31337, 0xDEAD_BEEF, UInt64.random(in: 0...UInt64.max)]

    @Test(arguments: seeds)
    func invariantsHoldOverRandomEvents(seed: UInt64) throws {
        var driver = RandomPoolDriver(seed: seed)
        try driver.run(events: 10_000)
        try driver.quiesce()
        try driver.shutDown()
        // The run reached the interesting states, not just an empty pool.
        let stats = driver.pool.stats
        #expect(stats.checkouts > 1_000 && stats.timeouts > 0, "seed \(seed): \(stats)")
        #expect(stats.closed.values.filter { $0 > 0 }.count >= 4, "seed \(seed): \(stats)")
        #expect(driver.eventCount >= 10_000)
    }
}

struct RandomPoolDriver {
    let seed: UInt64
    var random: SplitMix64
    var pool: PoolHarness
    private(set) var eventCount = 0

    // What the actions said so far.
    var connecting: Set<ConnectionID> = []
    var open: Set<ConnectionID> = []
    var leased: [ConnectionID: RequestID] = [:]
    /// Connections being pinged, and for which request (nil once the request went away).
    var pinging: [ConnectionID: RequestID?] = [:]
    var leakReported: Set<ConnectionID> = []
    /// How often each waiting request saw a younger one served first (see `PoolStateMachine.maxPassedOver`).
    var passedOver: [RequestID: Int] = [:]
    /// The request a succeeded ping hands its connection to: it left the queue when the ping began.
    var servedByPing: RequestID?
    /// Requests not yet served, failed or cancelled, with their pool_timeout deadline.
    var waiting: [RequestID: ContinuousClock.Instant] = [:]
    var resolved: Set<RequestID> = []
    var everCreated: Set<ConnectionID> = []
    var timers: [PoolTimer.ID: PoolTimer] = [:]
    var cancelledTimers: [PoolTimer.ID: PoolTimer] = [:]
    var observedCounters = PoolStats()
    var leaseActions = 0
    var closeActions: [CloseReason: Int] = [:]
    var nextRequest = 0
    /// After a reconfigure shrank the pool, connections above the new limit may stay leased until returned.
    var aboveLimitAfterShrink = false
    var shutdownCompleted = 0

    init(seed: UInt64) {
        self.seed = seed
        var random = SplitMix64(seed: seed)
        let configuration = Self.randomConfiguration(&random)
        self.random = random
        self.pool = PoolHarness(configuration, seed: seed)
    }

    // MARK: Driving

    mutating func run(events: Int) throws {
        while self.eventCount < events {
            try self.randomStep()
        }
    }

    /// Serves everything that waits: pings answer, connects succeed, leases come back, time passes.
    mutating func quiesce() throws {
        for _ in 0..<200 {
            if self.waiting.isEmpty && self.connecting.isEmpty && self.pinging.isEmpty && self.leased.isEmpty {
                break
            }
            for id in self.pinging.keys.sorted() { try self.apply(.pingSucceeded(id)) }
            for id in self.connecting.sorted() where self.connecting.contains(id) {
                try self.apply(.connectionEstablished(id))
            }
            for id in self.leased.keys.sorted() {
                if let lease = self.leased[id] { try self.apply(.connectionReleased(id, lease: lease)) }
            }
            try self.advance(by: .seconds(1))
        }
        try self.require(self.waiting.isEmpty, "waiters left after quiescing: \(self.waiting.keys.sorted())")
        try self.require(self.connecting.isEmpty && self.pinging.isEmpty && self.leased.isEmpty, "not quiet")
    }

    mutating func shutDown() throws {
        // Leave some work in flight so that shutdown has something to drain.
        for _ in 0..<5 { try self.apply(.leaseRequested(self.newRequest())) }
        try self.apply(.shutdown)
        try self.require(self.waiting.isEmpty, "shutdown must fail every waiter")
        for _ in 0..<50 where self.shutdownCompleted == 0 {
            for id in self.pinging.keys.sorted() { try self.apply(.pingSucceeded(id)) }
            for id in self.connecting.sorted() { try self.apply(.connectionEstablished(id)) }
            for (id, lease) in self.leased.sorted(by: { $0.key < $1.key }) {
                try self.apply(.connectionReleased(id, lease: lease))
            }
            try self.advance(by: .seconds(1))
        }
        try self.require(self.shutdownCompleted == 1, "shutdown completes once")
        try self.require(self.open.isEmpty && self.connecting.isEmpty, "nothing left open")
        try self.apply(.leaseRequested(self.newRequest()))
        try self.require(self.waiting.isEmpty, "a shut down pool fails requests at once")
    }

    private mutating func randomStep() throws {
        switch self.next(100) {
        case 0..<22:
            try self.apply(.leaseRequested(self.newRequest(), affinity: self.randomAffinity()))
        case 22..<25:
            if let request = self.pick(self.waiting.keys) { try self.apply(.requestCancelled(request)) }
        case 25..<37:
            if let id = self.pick(self.connecting) {
                try self.apply(.connectionEstablished(id, affinity: self.randomAffinity()))
            }
        case 37..<41:
            if let id = self.pick(self.connecting) {
                let reason = ConnectionErrorReason.allCases[self.next(ConnectionErrorReason.allCases.count)]
                // Now and then a refusal that will not pass, which fails the waiters at once.
                let permanent = self.next(4) == 0
                try self.apply(
                    .connectFailed(
                        id,
                        ConnectError(reason: reason, message: "failure \(self.eventCount)", isPermanent: permanent)
                    )
                )
            }
        case 41..<56:
            if let id = self.pick(self.leased.keys) {
                if self.next(8) == 0 {
                    // A stale release (a lease that ended before, or another client's): must change nothing.
                    try self.applyStale(.connectionReleased(id, lease: self.newRequest()))
                } else {
                    try self.apply(.connectionReleased(id, lease: self.leased[id]!))
                }
            }
            if self.next(16) == 0, let id = self.pick(self.leased.keys) {
                // Given back unfit for reuse: closed, not counted as an error.
                try self.apply(
                    .connectionRetired(id, lease: self.leased[id]!, self.next(2) == 0 ? .dirty : .resetFailed)
                )
            }
        case 56..<58:
            if let id = self.pick(self.open) {
                let reason = ConnectionErrorReason.allCases[self.next(ConnectionErrorReason.allCases.count)]
                try self.apply(.connectionBroken(id, lease: self.leased[id], reason))
            }
        case 58..<64:
            if let id = self.pick(self.pinging.keys) { try self.apply(.pingSucceeded(id)) }
        case 64..<66:
            if let id = self.pick(self.pinging.keys) { try self.apply(.pingFailed(id)) }
        case 66..<90:
            let step: Duration =
                self.next(10) == 0 ? .seconds(self.next(60)) : .milliseconds(self.next(800))
            try self.advance(by: step)
        case 90..<92:
            // The database's max_db_connections: no room for a connect, room again, room made for another pool.
            switch self.next(3) {
            case 0: if let id = self.pick(self.connecting) { try self.apply(.connectDeferred(id)) }
            case 1: try self.apply(.connectPermitted)
            default: try self.apply(.evictIdle)
            }
        case 92..<94:
            try self.staleEvent()
        case 94..<95:
            if self.next(5) == 0 {
                let configuration = Self.randomConfiguration(&self.random)
                try self.apply(.reconfigure(configuration))
            } else if self.next(4) == 0 {
                // The server address changed, or RECONNECT.
                try self.apply(.reconnect)
            }
        default:
            try self.fireStaleTimer()
        }
    }

    /// Moves time forward, firing every timer when its deadline comes.
    private mutating func advance(by step: Duration) throws {
        let target = self.pool.now + step
        while let timer = self.timers.values.min(by: { ($0.deadline, $0.id) < ($1.deadline, $1.id) }),
            timer.deadline <= target
        {
            self.pool.clock.advance(to: timer.deadline)
            self.timers[timer.id] = nil
            try self.apply(.timerFired(timer))
        }
        self.pool.clock.advance(to: target)
    }

    /// Events that do not fit the state must change nothing.
    private mutating func staleEvent() throws {
        let idle = self.open.subtracting(self.leased.keys).subtracting(self.pinging.keys)
        var events: [PoolEvent] = [.connectionEstablished(ConnectionID(1_000_000), affinity: self.randomAffinity())]
        if let id = self.pick(idle) {
            events += [
                .connectionReleased(id, lease: RequestID(-1)), .pingSucceeded(id), .pingFailed(id),
                .connectionEstablished(id, affinity: self.randomAffinity()),
            ]
        }
        if let id = self.pick(self.leased.keys) {
            events += [.pingFailed(id), .connectionEstablished(id, affinity: self.randomAffinity())]
        }
        if let request = self.pick(self.resolved) { events.append(.requestCancelled(request)) }
        let event = events[self.next(events.count)]
        let actions = self.pool.send(event)
        self.eventCount += 1
        try self.require(actions.isEmpty, "\(event) must be ignored, got \(actions)")
    }

    /// A cancelled timer that fires anyway must change nothing.
    private mutating func fireStaleTimer() throws {
        guard let timer = self.pick(self.cancelledTimers.values.filter { $0.deadline <= self.pool.now }) else {
            return
        }
        self.cancelledTimers[timer.id] = nil
        let actions = self.pool.send(.timerFired(timer))
        self.eventCount += 1
        try self.require(actions.isEmpty, "stale \(timer) must be a no-op, got \(actions)")
    }

    // MARK: Applying an event and checking

    /// Feeds a release that names the wrong lease: the only action must be its observation.
    private mutating func applyStale(_ event: PoolEvent) throws {
        self.eventCount += 1
        let before = self.pool.stats
        let actions = self.pool.send(event)
        try self.require(actions == [.observe(.staleRelease)], "a stale release did \(actions)")
        var expected = before
        expected.staleReleases += 1
        try self.require(self.pool.stats == expected, "a stale release changed more than its count")
    }

    private mutating func apply(_ event: PoolEvent) throws {
        self.eventCount += 1
        switch event {
        case .connectionEstablished(let id, _):
            self.connecting.remove(id)
            self.open.insert(id)
        case .connectFailed(let id, _), .connectDeferred(let id):
            self.connecting.remove(id)
        case .connectionReleased(let id, _), .connectionRetired(let id, _, _):
            self.leased[id] = nil
        case .connectionBroken(let id, _, _):
            self.leased[id] = nil
            if let request = self.pinging[id] ?? nil, self.waiting[request] == nil {
                try self.require(false, "pinged-for \(request) is not waiting")
            }
            self.pinging[id] = nil
        case .pingSucceeded(let id):
            self.servedByPing = self.pinging[id] ?? nil
            self.pinging[id] = nil
        case .pingFailed(let id):
            self.pinging[id] = nil
        case .leaseRequested(let request, _):
            self.waiting[request] = self.pool.now + self.pool.machine.configuration.poolTimeout
        case .reconfigure(let configuration):
            let limit = configuration.normalized().maxConnections
            if self.open.count + self.connecting.count > limit { self.aboveLimitAfterShrink = true }
        case .timerFired, .requestCancelled, .start, .shutdown, .closeLeased, .reconnect, .connectPermitted, .evictIdle:
            break
        }
        let actions = self.pool.send(event)
        var created = 0
        for action in actions {
            try self.apply(action, of: event, created: &created)
        }
        self.servedByPing = nil
        try self.checkInvariants(after: event, actions: actions, created: created)
    }

    private mutating func apply(_ action: PoolAction, of event: PoolEvent, created: inout Int) throws {
        let now = self.pool.now
        switch action {
        case .createConnection(let id, _):
            try self.require(!self.everCreated.contains(id), "\(id) created twice")
            self.everCreated.insert(id)
            self.connecting.insert(id)
            created += 1
        case .lease(let id, let request):
            try self.require(self.open.contains(id), "leased \(id) is not open")
            try self.require(self.leased[id] == nil, "\(id) leased twice (to \(self.leased[id]!) and \(request))")
            try self.require(self.pinging[id] == nil, "leased \(id) is being pinged")
            if request != self.servedByPing { try self.countPassedOver(by: request) }
            let deadline = try self.resolve(request, action)
            try self.require(now <= deadline, "\(request) served after its pool_timeout")
            self.leased[id] = request
            self.leakReported.remove(id)
            self.leaseActions += 1
        case .ping(let id, let request):
            try self.require(self.open.contains(id), "pinged \(id) is not open")
            try self.require(self.leased[id] == nil && self.pinging[id] == nil, "pinged \(id) is not idle")
            try self.require(self.waiting[request] != nil, "ping for \(request), which does not wait")
            try self.countPassedOver(by: request)
            self.pinging[id] = request
        case .close(let id, let reason):
            try self.require(self.open.contains(id), "closed \(id) is not open")
            if reason != .shutdown {
                try self.require(self.leased[id] == nil, "\(id) closed (\(reason)) while leased")
            }
            self.open.remove(id)
            self.leased[id] = nil
            self.pinging[id] = nil
            self.closeActions[reason, default: 0] += 1
        case .failRequest(let request, let error):
            let deadline = try self.resolve(request, action)
            for (id, target) in self.pinging where target == request { self.pinging[id] = .some(nil) }
            switch error.code {
            case .timeout, .connectFailed:
                try self.require(now == deadline, "\(request) timed out at the wrong time")
                try self.require(error.message.contains("db/alice"), "error names the pool: \(error.message)")
            case .cancelled:
                try self.require(event == .requestCancelled(request), "cancelled without being asked")
            case .shuttingDown:
                break
            case .refused:
                guard case .connectFailed(_, let refusal) = event else {
                    return try self.require(false, "\(request) refused without a failed connect")
                }
                try self.require(refusal.isPermanent, "refused after a refusal that may pass")
                try self.require(self.open.isEmpty, "refused while connections are open")
            default:
                try self.require(false, "unknown code \(error.code)")
            }
        case .scheduleTimer(let timer):
            try self.require(timer.deadline >= now || timer.kind != .connectRetry, "retry in the past")
            self.timers[timer.id] = timer
        case .cancelTimer(let id):
            let timer = try self.require(self.timers.removeValue(forKey: id), "cancelled timer \(id) is not pending")
            self.cancelledTimers[id] = timer
            // Keep a sample to fire later; all of them would make this test quadratic.
            if self.cancelledTimers.count > 64, let oldest = self.cancelledTimers.keys.min() {
                self.cancelledTimers[oldest] = nil
            }
        case .observe(let observation):
            self.observedCounters.count(observation)
            if case .leakSuspected = observation {
                guard case .timerFired(let timer) = event, case .leak(let id) = timer.kind else {
                    return try self.require(false, "leak reported outside its timer")
                }
                try self.require(self.leased[id] != nil, "leak of \(id), which is not leased")
                try self.require(!self.leakReported.contains(id), "leak of \(id) reported twice for one lease")
                self.leakReported.insert(id)
            }
        case .shutdownComplete:
            self.shutdownCompleted += 1
            try self.require(self.open.isEmpty && self.connecting.isEmpty, "shutdown completed with connections")
        }
    }

    private mutating func resolve(_ request: RequestID, _ action: PoolAction) throws -> ContinuousClock.Instant {
        try self.require(!self.resolved.contains(request), "\(request) resolved twice: \(action)")
        let deadline = try self.require(self.waiting.removeValue(forKey: request), "\(action) for unknown request")
        self.resolved.insert(request)
        return deadline
    }

    private mutating func checkInvariants(after event: PoolEvent, actions: [PoolAction], created: Int) throws {
        let config = self.pool.machine.configuration
        let total = self.open.count + self.connecting.count
        if self.aboveLimitAfterShrink && total <= config.maxConnections { self.aboveLimitAfterShrink = false }
        if self.aboveLimitAfterShrink {
            try self.require(created == 0, "created while above the limit after a shrink")
        } else {
            try self.require(total <= config.maxConnections, "\(total) open+connecting > \(config.maxConnections)")
        }

        let stats = self.pool.stats
        let idle = self.open.count - self.leased.count - self.pinging.count
        try self.require(stats.connecting == self.connecting.count, "connecting gauge")
        try self.require(stats.checkedOut == self.leased.count, "checked-out gauge")
        try self.require(stats.used == self.leased.count + self.pinging.count, "used gauge")
        try self.require(stats.idle == idle, "idle gauge \(stats.idle) vs \(idle)")
        try self.require(stats.waiting == self.waiting.count, "waiting gauge \(stats.waiting) vs \(self.waiting.count)")
        try self.require(stats.overflow == max(0, self.open.count - config.poolSize), "overflow gauge")
        if self.aboveLimitAfterShrink {
            try self.require(idle == 0, "idle connections kept above the limit")
        }

        let connections = Set(self.pool.machine.connections.keys)
        try self.require(
            Set(self.pool.machine.affinities.keys).isSubset(of: connections),
            "affinities of connections the pool does not have: \(self.pool.machine.affinities.keys.sorted())"
        )

        let idleFromStates = self.pool.machine.connections.compactMap { id, state -> PoolStateMachine.IdleEntry? in
            guard case .idle(let idle) = state else { return nil }
            return .init(id: id, since: idle.idleSince, affinity: self.pool.machine.affinities[id])
        }
        try self.require(
            self.pool.machine.idleOrder == idleFromStates.sorted(),
            "idle order \(self.pool.machine.idleOrder) vs the idle states \(idleFromStates.sorted())"
        )
        // Every idle connection is covered by the pool's one pending sweep: due by the oldest one's idle_timeout,
        // or (when that one is kept for min_size) within another idle_timeout.
        if let idleTimeout = config.idleTimeout, let oldest = self.pool.machine.idleOrder.first {
            let due = oldest.since.instant + idleTimeout
            let latest = due > self.pool.now ? due : self.pool.now + idleTimeout
            try self.require(
                self.timers.values.contains { $0.kind == .idleTimeout && $0.deadline <= latest },
                "\(oldest.id) idle with no sweep pending by \(latest) after \(event): \(actions)"
            )
        }

        var recount = self.pool.machine.recountGauges()
        recount.checkouts = stats.checkouts
        recount.timeouts = stats.timeouts
        recount.leaksSuspected = stats.leaksSuspected
        recount.staleReleases = stats.staleReleases
        recount.connectionErrors = stats.connectionErrors
        recount.closed = stats.closed
        try self.require(recount == stats, "gauges differ from a recount: \(stats) vs \(recount)")

        try self.require(stats.checkouts == self.observedCounters.checkouts, "checkouts counter")
        try self.require(stats.checkouts == self.leaseActions, "checkouts counter vs lease actions")
        try self.require(stats.timeouts == self.observedCounters.timeouts, "timeouts counter")
        try self.require(stats.leaksSuspected == self.observedCounters.leaksSuspected, "leaks counter")
        try self.require(stats.connectionErrors == self.observedCounters.connectionErrors, "errors counter")
        try self.require(stats.closed == self.observedCounters.closed, "closed counter")
        for reason in CloseReason.allCases {
            try self.require(stats.closed[reason] == self.closeActions[reason, default: 0], "closed{\(reason)}")
        }
    }

    /// First come, first served, but for affinity: a request taken from the queue passes over every older one
    /// still queued (not held by a ping), and none may be passed over more than `maxPassedOver` times.
    private mutating func countPassedOver(by request: RequestID) throws {
        let held = Set(self.pinging.values.compactMap { $0 })
        for older in self.waiting.keys where older < request && !held.contains(older) {
            self.passedOver[older, default: 0] += 1
            try self.require(
                self.passedOver[older, default: 0] <= PoolStateMachine.maxPassedOver,
                "\(older) passed over more than \(PoolStateMachine.maxPassedOver) times, last by \(request)"
            )
        }
    }

    // MARK: Helpers

    private func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        try #require(condition, "seed \(self.seed), event \(self.eventCount): \(message())")
    }

    private func require<T>(_ value: T?, _ message: @autoclosure () -> String) throws -> T {
        try #require(value, "seed \(self.seed), event \(self.eventCount): \(message())")
    }

    private mutating func newRequest() -> RequestID {
        defer { self.nextRequest += 1 }
        return RequestID(self.nextRequest)
    }

    /// Event-loop affinities: none, or one of two loops. They choose among idle connections and let a waiter be
    /// passed over a bounded number of times; every other invariant must hold whatever they are.
    private mutating func randomAffinity() -> Int? {
        let value = self.next(3)
        return value == 2 ? nil : value
    }

    private mutating func next(_ bound: Int) -> Int {
        Int(self.random.next() % UInt64(max(bound, 1)))
    }

    private mutating func pick<C: Collection>(_ collection: C) -> C.Element? where C.Element: Comparable {
        guard !collection.isEmpty else { return nil }
        let sorted = collection.sorted()
        return sorted[self.next(sorted.count)]
    }

    private mutating func pick(_ timers: [PoolTimer]) -> PoolTimer? {
        guard !timers.isEmpty else { return nil }
        let sorted = timers.sorted { $0.id < $1.id }
        return sorted[self.next(sorted.count)]
    }

    static func randomConfiguration(_ random: inout SplitMix64) -> PoolConfiguration {
        func next(_ bound: Int) -> Int { Int(random.next() % UInt64(bound)) }
        return PoolConfiguration(
            poolSize: next(6),
            minSize: next(4),
            maxOverflow: next(5),
            poolTimeout: .milliseconds(500 + next(20_000)),
            poolRecycle: next(3) == 0 ? nil : .seconds(5 + next(120)),
            prePing: next(2) == 0,
            prePingDelay: .milliseconds(next(2_000)),
            idleTimeout: next(3) == 0 ? nil : .seconds(1 + next(60)),
            leakThreshold: next(3) == 0 ? nil : .seconds(1 + next(30)),
            connectBackoffInitial: .milliseconds(10 + next(500)),
            connectBackoffMax: .milliseconds(500 + next(5_000))
        )
    }
}
