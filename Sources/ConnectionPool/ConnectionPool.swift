import PoolCore
import Synchronization

/// A connection handed out by ``ConnectionPool/lease()``, with the request that names the lease.
public struct PoolLease<Connection: Sendable>: Sendable {
    public let connection: Connection
    public let request: RequestID

    @inlinable
    public init(connection: Connection, request: RequestID) {
        self.connection = connection
        self.request = request
    }
}

/// The live pool of one (database, user): runs PoolCore's ``PoolStateMachine`` with the real clock, the connection
/// factory and one Swift concurrency timer task.
///
/// Every call locks, feeds one event stamped with `ContinuousClock.now`, unlocks, and only then runs the actions
/// (opening connections, handing them out, closing, pinging) and calls the observer.
///
/// Timers are lazy: the state machine asks for one per lease or idle connection (`leak_threshold`, `idle_timeout`,
/// `pool_timeout`) and cancels most of them milliseconds later, so scheduling and cancelling only edit a table, and
/// a single task sleeps until the earliest deadline. It is restarted only when a new deadline comes before the one
/// it sleeps for; when it wakes, it fires what is due and sleeps again until the next deadline.
///
/// The methods are `@inlinable` so that the proxy's module compiles them for its own factory: left generic, every
/// checkout looked up the run-time metadata of `State`, `Work` and their dictionaries about twenty times, an eighth of
/// the instructions spent per relayed transaction (callgrind, bench/README.md).
public final class ConnectionPool<Factory: ConnectionFactory>: Sendable {
    public typealias Connection = Factory.Connection
    /// Receives the result of a request, exactly once.
    public typealias LeaseCompletion = @Sendable (Result<Connection, PoolError>) -> Void

    public let key: PoolKey
    @usableFromInline let factory: Factory
    @usableFromInline let observer: any PoolObserver
    @usableFromInline let state: Mutex<State>
    /// Keeps stats deliveries in order (see ``PoolObserver``).
    @usableFromInline let delivery = Mutex(StatsDelivery())
    @usableFromInline let nextRequestID = Atomic<Int>(0)

    @usableFromInline
    struct State {
        @usableFromInline var machine: PoolStateMachine
        @usableFromInline var connections: [ConnectionID: Connection] = [:]
        @usableFromInline var requests: [RequestID: LeaseCompletion] = [:]
        /// Timers asked for and not yet fired or cancelled.
        @usableFromInline var timers: [PoolTimer.ID: PoolTimer] = [:]
        /// The deadline the timer task sleeps until; nil when no task sleeps.
        @usableFromInline var wakeAt: ContinuousClock.Instant?
        /// Tells the current timer task from replaced ones (a replaced task may still wake up).
        @usableFromInline var timerGeneration: UInt64 = 0
        @usableFromInline var timerTask: Task<Void, Never>?
        @usableFromInline var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
        @usableFromInline var version: UInt64 = 0
        /// The state machine's output, reused from event to event.
        @usableFromInline var actions: [PoolAction] = []
    }

    @usableFromInline
    struct StatsDelivery {
        @usableFromInline var version: UInt64 = 0
        @usableFromInline var stats = PoolStats()
    }

    /// What to do once the lock is released.
    @usableFromInline
    enum Work {
        case create(ConnectionID)
        case lease(Connection, LeaseCompletion)
        case fail(LeaseCompletion, PoolError)
        case ping(Connection)
        case close(Connection)
        case sleep(until: ContinuousClock.Instant, generation: UInt64)
        case cancel(Task<Void, Never>)
        case observe(PoolObservation)
        case finished([CheckedContinuation<Void, Never>])
    }

    /// - Parameters:
    ///   - observer: receives observations and stats, outside the pool's lock; must not call back into the pool.
    ///   - jitterSeed: seeds the connect backoff jitter.
    public init(
        key: PoolKey,
        configuration: PoolConfiguration,
        factory: Factory,
        observer: any PoolObserver = NoOpPoolObserver(),
        jitterSeed: UInt64 = .random(in: 0...UInt64.max)
    ) {
        self.key = key
        self.factory = factory
        self.observer = observer
        let machine = PoolStateMachine(key: key, configuration: configuration, jitterSeed: jitterSeed)
        self.state = Mutex(State(machine: machine))
    }

    /// Current gauges and counters.
    @inlinable
    public var stats: PoolStats { self.state.withLock { $0.machine.stats } }

    /// The settings in force (normalized).
    @inlinable
    public var configuration: PoolConfiguration { self.state.withLock { $0.machine.configuration } }

    /// Opens `min_size` connections.
    @inlinable
    public func start() {
        self.handle(.start)
    }

    /// Asks for a connection for an event-loop caller. `completion` is called exactly once: with a connection,
    /// or with a ``PoolError`` (timeout, connect failure, shutdown, or cancellation through ``cancel(_:)``).
    /// It may be called before this method returns, when a connection is ready.
    /// Among idle connections, one whose ``PooledConnection/affinity`` equals `affinity` is preferred.
    @inlinable @discardableResult
    public func lease(affinity: Int? = nil, _ completion: @escaping LeaseCompletion) -> RequestID {
        let request = self.makeRequestID()
        self.lease(request, affinity: affinity, completion)
        return request
    }

    /// The client went away: a request still waiting fails with ``PoolError/Code/cancelled``.
    /// A request already served is not affected (give its connection back with ``release(_:)``).
    @inlinable
    public func cancel(_ request: RequestID) {
        self.handle(.requestCancelled(request))
    }

    /// Waits for a connection. Cancelling the task cancels the request (``PoolError/Code/cancelled``) unless it
    /// was already served. Give the connection back with ``release(_:)`` or ``discard(_:reason:)`` on the lease.
    @inlinable
    public func lease() async throws(PoolError) -> PoolLease<Connection> {
        let request = self.makeRequestID()
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<Connection, PoolError>, Never>) in
                self.lease(request) { continuation.resume(returning: $0) }
                // The cancellation handler may have run before the request existed.
                if Task.isCancelled { self.cancel(request) }
            }
        } onCancel: {
            self.cancel(request)
        }
        return PoolLease(connection: try result.get(), request: request)
    }

    /// Gives a connection back in a clean state (no open transaction, session reset). `request` names the lease
    /// that ends: a release of any other lease is ignored (and observed as stale), so a connection that went on to
    /// another client can never be taken from it.
    @inlinable
    public func release(_ connection: Connection, lease request: RequestID) {
        self.handle(.connectionReleased(connection.id, lease: request))
    }

    @inlinable
    public func release(_ lease: PoolLease<Connection>) {
        self.release(lease.connection, lease: lease.request)
    }

    /// Reports a connection broken; the pool closes it and opens another if needed. `request` names the lease it
    /// was held under (a stale one is ignored); nil for a connection that broke while nobody held it.
    @inlinable
    public func discard(_ connection: Connection, lease request: RequestID?, reason: ConnectionErrorReason = .broken) {
        self.handle(.connectionBroken(connection.id, lease: request, reason))
    }

    @inlinable
    public func discard(_ lease: PoolLease<Connection>, reason: ConnectionErrorReason = .broken) {
        self.discard(lease.connection, lease: lease.request, reason: reason)
    }

    /// Applies new settings: grows at once, shrinks by closing idle connections now and leased ones when
    /// they come back.
    @inlinable
    public func reconfigure(_ configuration: PoolConfiguration) {
        self.handle(.reconfigure(configuration))
    }

    /// Stops handing out connections and fails the waiters, closes idle connections, waits up to `drainTimeout`
    /// for leased ones to come back, then closes those too. Returns when no connection is left (connects still
    /// in flight are closed when they finish).
    @inlinable
    public func shutdown(drainTimeout: Duration) async {
        self.handle(.shutdown)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitUntilShutDown() }
            group.addTask {
                do {
                    try await Task.sleep(for: drainTimeout)
                } catch {
                    return
                }
                self.handle(.closeLeased)
            }
            await group.next()
            group.cancelAll()
        }
    }

    // MARK: Running the state machine

    /// A request id no other request of this pool has; for ``lease(_:affinity:_:)``.
    @inlinable
    public func makeRequestID() -> RequestID {
        RequestID(self.nextRequestID.wrappingAdd(1, ordering: .relaxed).oldValue)
    }

    /// ``lease(affinity:_:)`` with a request id made beforehand by ``makeRequestID()``, for callers that must know
    /// the request before its completion can run.
    @inlinable
    public func lease(_ request: RequestID, affinity: Int? = nil, _ completion: @escaping LeaseCompletion) {
        self.handle(.leaseRequested(request, affinity: affinity)) { $0.requests[request] = completion }
    }

    @inlinable
    func waitUntilShutDown() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = self.state.withLock { state in
                if state.machine.isShutDown { return true }
                state.shutdownWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Feeds one event under the lock (after `prepare`), then runs its actions and reports the stats outside it.
    @inlinable
    func handle(_ event: PoolEvent, prepare: @Sendable (inout State) -> Void = { _ in }) {
        let (work, stats, version) = self.state.withLock { state in
            prepare(&state)
            var actions: [PoolAction] = []
            swap(&actions, &state.actions)
            state.machine.handle(event, now: .now, into: &actions)
            var work: [Work] = []
            work.reserveCapacity(actions.count)
            for action in actions {
                Self.resolve(action, in: &state, into: &work)
            }
            swap(&actions, &state.actions)
            state.version += 1
            return (work, state.machine.stats, state.version)
        }
        for item in work {
            self.run(item)
        }
        self.deliver(stats, version: version)
    }

    /// Turns ids into the objects the actions need, keeping the maps in step with the state machine.
    @inlinable
    static func resolve(_ action: PoolAction, in state: inout State, into work: inout [Work]) {
        switch action {
        case .createConnection(let id):
            work.append(.create(id))
        case .lease(let id, let request):
            guard let connection = state.connections[id], let completion = state.requests.removeValue(forKey: request)
            else { preconditionFailure("lease of unknown \(id) or \(request)") }
            work.append(.lease(connection, completion))
        case .ping(let id, _):
            guard let connection = state.connections[id] else { preconditionFailure("ping of unknown \(id)") }
            work.append(.ping(connection))
        case .close(let id, _):
            if let connection = state.connections.removeValue(forKey: id) { work.append(.close(connection)) }
        case .failRequest(let request, let error):
            if let completion = state.requests.removeValue(forKey: request) { work.append(.fail(completion, error)) }
        case .scheduleTimer(let timer):
            guard !state.machine.isShutDown else { return }
            state.timers[timer.id] = timer
            if state.wakeAt.map({ timer.deadline < $0 }) ?? true {
                Self.restartTimerTask(until: timer.deadline, in: &state, into: &work)
            }
        case .cancelTimer(let id):
            // The task may wake for nothing; it then sleeps until the next deadline.
            state.timers[id] = nil
        case .observe(let observation):
            work.append(.observe(observation))
        case .shutdownComplete:
            if let task = state.timerTask { work.append(.cancel(task)) }
            state.timers = [:]
            state.wakeAt = nil
            state.timerTask = nil
            state.timerGeneration += 1
            work.append(.finished(state.shutdownWaiters))
            state.shutdownWaiters = []
        }
    }

    @inlinable
    func run(_ work: Work) {
        switch work {
        case .create(let id):
            Task {
                do throws(ConnectError) {
                    let connection = try await self.factory.makeConnection(id: id, for: self.key)
                    precondition(connection.id == id, "the factory must use the id it was given")
                    self.handle(.connectionEstablished(id, affinity: connection.affinity)) {
                        $0.connections[id] = connection
                    }
                } catch {
                    self.handle(.connectFailed(id, error))
                }
            }
        case .lease(let connection, let completion):
            completion(.success(connection))
        case .fail(let completion, let error):
            completion(.failure(error))
        case .ping(let connection):
            Task {
                let alive = await connection.ping()
                self.handle(alive ? .pingSucceeded(connection.id) : .pingFailed(connection.id))
            }
        case .close(let connection):
            connection.close()
        case .sleep(let deadline, let generation):
            self.startTimerTask(until: deadline, generation: generation)
        case .cancel(let task):
            task.cancel()
        case .observe(let observation):
            self.observer.pool(self.key, observed: observation)
        case .finished(let waiters):
            for waiter in waiters { waiter.resume() }
        }
    }

    /// Replaces the timer task by one that sleeps until `deadline` (started once the lock is released).
    @inlinable
    static func restartTimerTask(
        until deadline: ContinuousClock.Instant,
        in state: inout State,
        into work: inout [Work]
    ) {
        if let task = state.timerTask { work.append(.cancel(task)) }
        state.timerTask = nil
        state.timerGeneration += 1
        state.wakeAt = deadline
        work.append(.sleep(until: deadline, generation: state.timerGeneration))
    }

    @inlinable
    func startTimerTask(until deadline: ContinuousClock.Instant, generation: UInt64) {
        let task = Task {
            do {
                try await Task.sleep(until: deadline, clock: .continuous)
            } catch {
                return
            }
            self.timerTaskWoke(generation: generation)
        }
        // The task may have woken (or been replaced) before it is recorded here.
        let current = self.state.withLock { state in
            guard state.timerGeneration == generation else { return false }
            state.timerTask = task
            return true
        }
        if !current { task.cancel() }
    }

    /// Fires every timer that is due, in deadline order, and sleeps again until the next one.
    @inlinable
    func timerTaskWoke(generation: UInt64) {
        let (due, next) = self.state.withLock { state -> ([PoolTimer], [Work]) in
            guard state.timerGeneration == generation else { return ([], []) }
            state.timerTask = nil
            state.wakeAt = nil
            let now = ContinuousClock.now
            var due: [PoolTimer] = []
            var earliest: ContinuousClock.Instant?
            for timer in state.timers.values {
                if timer.deadline <= now {
                    due.append(timer)
                } else if earliest.map({ timer.deadline < $0 }) ?? true {
                    earliest = timer.deadline
                }
            }
            for timer in due { state.timers[timer.id] = nil }
            var work: [Work] = []
            if let earliest { Self.restartTimerTask(until: earliest, in: &state, into: &work) }
            return (due.sorted { ($0.deadline, $0.id) < ($1.deadline, $1.id) }, work)
        }
        for item in next { self.run(item) }
        for timer in due { self.handle(.timerFired(timer)) }
    }

    @inlinable
    func deliver(_ stats: PoolStats, version: UInt64) {
        self.delivery.withLock { delivered in
            guard version > delivered.version else { return }
            delivered.version = version
            guard stats != delivered.stats else { return }
            delivered.stats = stats
            self.observer.pool(self.key, statsChanged: stats)
        }
    }
}
