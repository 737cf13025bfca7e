import ConnectionPool
import PoolCore
import Synchronization
import Testing

/// A connection that only records what the pool did to it.
final class FakeConnection: PooledConnection {
    let id: ConnectionID
    private let alive = Mutex(true)
    private let closed = Mutex(false)

    init(id: ConnectionID) {
        self.id = id
    }

    var isClosed: Bool { self.closed.withLock { $0 } }

    /// Makes the next pings fail.
    func breakIt() {
        self.alive.withLock { $0 = false }
    }

    func ping() async -> Bool {
        await Task.yield()
        return self.alive.withLock { $0 }
    }

    func close() {
        self.closed.withLock { $0 = true }
    }
}

/// Opens fake connections after a short real delay, or fails with `failure`.
final class FakeFactory: ConnectionFactory {
    private struct State {
        var made: [FakeConnection] = []
        var failure: ConnectError?
    }

    private let state = Mutex(State())
    private let delay: Duration

    init(delay: Duration = .milliseconds(2), failure: ConnectError? = nil) {
        self.delay = delay
        self.state.withLock { $0.failure = failure }
    }

    var made: [FakeConnection] { self.state.withLock { $0.made } }

    func makeConnection(id: ConnectionID, for key: PoolKey) async throws(ConnectError) -> FakeConnection {
        try? await Task.sleep(for: self.delay)
        let result: Result<FakeConnection, ConnectError> = self.state.withLock { state in
            if let failure = state.failure { return .failure(failure) }
            let connection = FakeConnection(id: id)
            state.made.append(connection)
            return .success(connection)
        }
        return try result.get()
    }
}

/// Records everything the pool reports.
final class RecordingObserver: PoolObserver {
    private let state = Mutex<(observations: [PoolObservation], stats: [PoolStats])>(([], []))

    var observations: [PoolObservation] { self.state.withLock { $0.observations } }
    var lastStats: PoolStats? { self.state.withLock { $0.stats.last } }
    var statsHistory: [PoolStats] { self.state.withLock { $0.stats } }

    func pool(_ key: PoolKey, observed: PoolObservation) {
        self.state.withLock { $0.observations.append(observed) }
    }

    func pool(_ key: PoolKey, statsChanged: PoolStats) {
        self.state.withLock { $0.stats.append(statsChanged) }
    }
}

let testKey = PoolKey(database: "db", user: "alice")

/// Waits until `condition` holds; fails the test after 60 s (a bound for a stuck test on a loaded machine,
/// not a timing assertion).
func eventually(
    _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async {
    let deadline = ContinuousClock.now + .seconds(60)
    while !condition() {
        if ContinuousClock.now > deadline {
            Issue.record("timed out waiting: \(what)", sourceLocation: sourceLocation)
            return
        }
        try? await Task.sleep(for: .milliseconds(1))
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
