import ConnectionPool
import ConnectionPoolTestSupport
import PoolCore
import Synchronization
import Testing

/// A value that tests wait on: every change wakes the waiters whose condition now holds (no polling).
final class Watched<Value: Sendable>: Sendable {
    private struct Waiter {
        var condition: @Sendable (Value) -> Bool
        var continuation: CheckedContinuation<Void, Never>
    }

    private let state: Mutex<(value: Value, waiters: [Waiter])>

    init(_ value: Value) {
        self.state = Mutex((value, []))
    }

    var value: Value { self.state.withLock { $0.value } }

    func update(_ body: (inout Value) -> Void) {
        let ready = self.state.withLock { state -> [Waiter] in
            body(&state.value)
            let value = state.value
            var ready: [Waiter] = []
            state.waiters.removeAll { waiter in
                guard waiter.condition(value) else { return false }
                ready.append(waiter)
                return true
            }
            return ready
        }
        for waiter in ready { waiter.continuation.resume() }
    }

    /// Returns once `condition` holds (at once if it does now).
    func wait(until condition: @escaping @Sendable (Value) -> Bool) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let holds = self.state.withLock { state -> Bool in
                if condition(state.value) { return true }
                state.waiters.append(Waiter(condition: condition, continuation: continuation))
                return false
            }
            if holds { continuation.resume() }
        }
    }
}

/// A connection that only records what the pool did to it.
final class FakeConnection: PooledConnection {
    let id: ConnectionID
    private let alive = Mutex(true)
    private let closed = Watched(false)

    init(id: ConnectionID) {
        self.id = id
    }

    var isClosed: Bool { self.closed.value }

    /// Makes the next pings fail.
    func breakIt() {
        self.alive.withLock { $0 = false }
    }

    func ping() async -> Bool {
        await Task.yield()
        return self.alive.withLock { $0 }
    }

    func close() {
        self.closed.update { $0 = true }
    }

    func waitUntilClosed() async {
        await self.closed.wait { $0 }
    }
}

/// Opens fake connections (after a yield, so that connects finish later than they start), or fails with `failure`
/// for the first `failures` attempts (all of them when nil).
final class FakeFactory: ConnectionFactory {
    private struct State: Sendable {
        var made: [FakeConnection] = []
        var attempts = 0
    }

    private let state = Watched(State())
    private let failure: ConnectError?
    private let failures: Int?

    init(failure: ConnectError? = nil, failures: Int? = nil) {
        self.failure = failure
        self.failures = failures
    }

    var made: [FakeConnection] { self.state.value.made }
    var attempts: Int { self.state.value.attempts }

    func waitForAttempts(_ count: Int) async {
        await self.state.wait { $0.attempts >= count }
    }

    func makeConnection(id: ConnectionID, for key: PoolKey) async throws(ConnectError) -> FakeConnection {
        await Task.yield()
        var result: Result<FakeConnection, ConnectError> = .failure(ConnectError(reason: .connect, message: ""))
        self.state.update { state in
            state.attempts += 1
            if let failure = self.failure, self.failures.map({ state.attempts <= $0 }) ?? true {
                result = .failure(failure)
            } else {
                let connection = FakeConnection(id: id)
                state.made.append(connection)
                result = .success(connection)
            }
        }
        return try result.get()
    }
}

/// Records everything the pool reports.
final class RecordingObserver: PoolObserver {
    struct Record: Sendable {
        var observations: [PoolObservation] = []
        var gauges: PoolGauges?
    }

    private let state = Watched(Record())

    var observations: [PoolObservation] { self.state.value.observations }
    /// The gauges as read through what the pool gave the observer.
    var gauges: PoolGaugeValues? { self.state.value.gauges?.load() }

    func pool(_ key: PoolKey, observed: PoolObservation) {
        self.state.update { $0.observations.append(observed) }
    }

    func pool(_ key: PoolKey, gauges: PoolGauges) {
        self.state.update { $0.gauges = gauges }
    }

    /// Returns once `count` observations satisfy `matching`.
    func wait(for count: Int = 1, _ matching: @escaping @Sendable (PoolObservation) -> Bool) async {
        await self.state.wait { $0.observations.count(where: matching) >= count }
    }

    /// Returns once the gauges read through the observer satisfy `condition` (polled: they are read, not pushed).
    func waitForGauges(_ condition: @escaping @Sendable (PoolGaugeValues) -> Bool) async {
        while !(self.gauges.map(condition) ?? false) {
            try? await Task.sleep(for: .milliseconds(1))
        }
    }
}

let testKey = PoolKey(database: "db", user: "alice")

/// Runs `body` while the pool's `run()` runs, then shuts the pool down and waits for `run()` to return by itself:
/// what a service does. A failing body cancels `run()`.
func withRunningPool<Factory: ConnectionFactory, Result: Sendable>(
    _ pool: ConnectionPool<Factory, ManualClock>,
    _ body: () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await pool.run() }
        let result: Result
        do {
            result = try await body()
        } catch {
            group.cancelAll()
            throw error
        }
        await pool.shutdown(drainTimeout: .zero)
        try await group.waitForAll()
        return result
    }
}

/// A `Mutex` that closures can share (a local `Mutex` cannot be captured by an escaping closure).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) {
        self.mutex = Mutex(value)
    }

    func withLock<Result>(_ body: (inout Value) -> Result) -> Result {
        self.mutex.withLock { body(&$0) }
    }
}

/// The tests look at the leased connection through its lease.
extension PoolLease where Connection == FakeConnection {
    var id: ConnectionID { self.connection.id }
    var isClosed: Bool { self.connection.isClosed }
    func breakIt() { self.connection.breakIt() }
}

extension PoolObservation {
    var isLeased: Bool { if case .leased = self { true } else { false } }
    var isConnected: Bool { if case .connected = self { true } else { false } }
    var isConnectFailed: Bool { if case .connectFailed = self { true } else { false } }
    var isLeakSuspected: Bool { if case .leakSuspected = self { true } else { false } }
}
