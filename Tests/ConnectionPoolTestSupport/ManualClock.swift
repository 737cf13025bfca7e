import Synchronization

/// A clock that moves only when a test advances it, for pools (``ConnectionPool`` takes `ContinuousClock` instants).
///
/// Sleepers whose deadline has come are woken by ``advance(to:)``; a sleep until an instant that has already come
/// returns at once, so a timer asked for before an advance fires however late its task starts sleeping.
public final class ManualClock: Clock {
    public typealias Instant = ContinuousClock.Instant
    public typealias Duration = Swift.Duration

    private struct Sleeper {
        var deadline: Instant
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct SleepWaiter {
        var accepts: @Sendable (Instant) -> Bool
        var continuation: CheckedContinuation<Instant, Never>
    }

    private struct State {
        var now: Instant
        var sleepers: [Int: Sleeper] = [:]
        var nextID = 0
        var sleepWaiters: [SleepWaiter] = []
    }

    private let state: Mutex<State>

    /// - Parameter now: any instant; the clock never reads the real time after this.
    public init(now: Instant = ContinuousClock.now) {
        self.state = Mutex(State(now: now))
    }

    public var now: Instant { self.state.withLock { $0.now } }

    public var minimumResolution: Duration { .nanoseconds(1) }

    /// How many tasks sleep now.
    public var sleeperCount: Int { self.state.withLock { $0.sleepers.count } }

    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = self.state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Outcome { case sleeping, due, cancelled }
                let (outcome, waiters) = self.state.withLock { state -> (Outcome, [SleepWaiter]) in
                    if Task.isCancelled { return (.cancelled, []) }
                    if deadline <= state.now { return (.due, []) }
                    state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    var woken: [SleepWaiter] = []
                    state.sleepWaiters.removeAll { waiter in
                        guard waiter.accepts(deadline) else { return false }
                        woken.append(waiter)
                        return true
                    }
                    return (.sleeping, woken)
                }
                switch outcome {
                case .sleeping: break
                case .due: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                }
                for waiter in waiters { waiter.continuation.resume(returning: deadline) }
            }
        } onCancel: {
            let sleeper = self.state.withLock { $0.sleepers.removeValue(forKey: id) }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves the clock forward by `duration` and wakes the sleepers that are due.
    public func advance(by duration: Duration) {
        self.advance(to: self.now.advanced(by: duration))
    }

    /// Moves the clock forward to `instant` and wakes the sleepers that are due, earliest first.
    public func advance(to instant: Instant) {
        let due = self.state.withLock { state -> [Sleeper] in
            precondition(instant >= state.now, "a clock only moves forward")
            state.now = instant
            let due = state.sleepers.filter { $0.value.deadline <= instant }
            for id in due.keys { state.sleepers[id] = nil }
            return due.values.sorted { $0.deadline < $1.deadline }
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    /// Waits until a task sleeps until a deadline that `accepts` takes (one already asleep counts), and returns that
    /// deadline: how a test learns when a timer of unknown deadline (a jittered backoff) will fire.
    @discardableResult
    public func waitForSleep(until accepts: @escaping @Sendable (Instant) -> Bool = { _ in true }) async -> Instant {
        await withCheckedContinuation { (continuation: CheckedContinuation<Instant, Never>) in
            let asleep = self.state.withLock { state -> Instant? in
                if let deadline = state.sleepers.values.map(\.deadline).filter(accepts).min() { return deadline }
                state.sleepWaiters.append(SleepWaiter(accepts: accepts, continuation: continuation))
                return nil
            }
            if let asleep { continuation.resume(returning: asleep) }
        }
    }
}

/// A value that arrives once (a lease completion, say), for a test to await without polling.
public final class Completion<Value: Sendable>: Sendable {
    private let state = Mutex<(value: Value?, waiters: [CheckedContinuation<Value, Never>])>((nil, []))

    public init() {}

    /// Delivers the value; later calls are ignored.
    public func callAsFunction(_ value: Value) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<Value, Never>] in
            guard state.value == nil else { return [] }
            state.value = value
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }

    /// The value if it has arrived.
    public var current: Value? { self.state.withLock { $0.value } }

    /// Waits for the value.
    public var value: Value {
        get async {
            await withCheckedContinuation { continuation in
                let value = self.state.withLock { state -> Value? in
                    if let value = state.value { return value }
                    state.waiters.append(continuation)
                    return nil
                }
                if let value { continuation.resume(returning: value) }
            }
        }
    }
}
