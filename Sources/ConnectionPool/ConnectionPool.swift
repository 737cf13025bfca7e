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

/// The live pool of one (database, user): runs PoolCore's ``PoolStateMachine`` with a clock, the connection factory
/// and one timer.
///
/// Every call locks, feeds one event stamped with the clock's `now`, unlocks, and only then runs the actions
/// (opening connections, handing them out, closing, pinging) and calls the observer.
///
/// ``run()`` owns all background work: connects, pings and the timer run as child tasks of its task group. Work
/// asked for before it runs waits for it; once shutdown has completed, or when its task is cancelled, it returns and
/// nothing of the pool is left running.
///
/// Timers are lazy: the state machine asks for one per lease or idle connection (`leak_threshold`, `idle_timeout`,
/// `pool_timeout`) and cancels most of them milliseconds later, so scheduling and cancelling only edit a table, and
/// a single task sleeps until the earliest deadline. It is replaced only when a new deadline comes before the one
/// it sleeps for; when it wakes, it fires what is due and sleeps again until the next deadline.
///
/// The clock is a generic parameter rather than an existential so that the proxy's specialization reads
/// `ContinuousClock.now` directly; tests pass a manual clock.
///
/// The methods are `@inlinable` so that the proxy's module compiles them for its own factory: left generic, every
/// checkout looked up the run-time metadata of `State`, `Work` and their dictionaries about twenty times, an eighth of
/// the instructions spent per relayed transaction (callgrind, bench/README.md).
public final class ConnectionPool<Factory: ConnectionFactory, Clock: _Concurrency.Clock>: Sendable
where Clock.Instant == ContinuousClock.Instant {
    public typealias Connection = Factory.Connection
    /// Receives the result of a request, exactly once.
    public typealias LeaseCompletion = @Sendable (Result<Connection, PoolError>) -> Void

    public let key: PoolKey
    @usableFromInline let factory: Factory
    @usableFromInline let clock: Clock
    @usableFromInline let observer: any PoolObserver
    @usableFromInline let state: Mutex<State>
    /// The stats' gauges, stored after every event for readers that must not wait for the lock.
    public let gauges = PoolGauges()
    @usableFromInline let nextRequestID = Atomic<Int>(0)
    /// What ``run()`` starts, buffered until it runs; finished when shutdown completes.
    @usableFromInline let background: AsyncStream<Background>
    @usableFromInline let backgroundInput: AsyncStream<Background>.Continuation
    /// An `AsyncStream` has one consumer.
    @usableFromInline let runStarted = Atomic<Bool>(false)
    /// The database's `max_db_connections`, shared with its other pools; nil: not counted.
    @usableFromInline let budget: ConnectionBudget?

    @usableFromInline
    struct State {
        @usableFromInline var machine: PoolStateMachine
        @usableFromInline var connections = ConnectionList<Connection>()
        /// The request of the lease event being handled, until the state machine serves it or it waits: a lease
        /// served at once (an idle connection ready) never enters `requests`.
        @usableFromInline var incoming: (request: RequestID, completion: LeaseCompletion)?
        /// Requests that wait.
        @usableFromInline var requests: [RequestID: LeaseCompletion] = [:]
        /// Timers asked for and not yet fired or cancelled.
        @usableFromInline var timers: [PoolTimer.ID: PoolTimer] = [:]
        /// The deadline the timer task sleeps until; nil when no timer task sleeps.
        @usableFromInline var wakeAt: ContinuousClock.Instant?
        /// Tells the current timer task from replaced ones (a replaced task may still wake up).
        @usableFromInline var timerGeneration: UInt64 = 0
        /// Resumed to end the current timer task's sleep early, when it is replaced (a child of ``run()`` cannot be
        /// cancelled on its own).
        @usableFromInline var timerStop: CheckedContinuation<Void, Never>?
        @usableFromInline var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
        /// The state machine's output, reused from event to event.
        @usableFromInline var actions: [PoolAction] = []
        /// What an event leaves to do after unlocking, lent out for the event and given back empty, so that a
        /// checkout allocates no list (empty while lent; a concurrent event then makes its own).
        @usableFromInline var spareWork: [Work] = []
    }

    /// Work that outlives the event that asked for it: a child task of ``run()``.
    @usableFromInline
    enum Background: Sendable {
        case connect(ConnectionID, affinity: Int?)
        case ping(Connection)
        case timer(until: ContinuousClock.Instant, generation: UInt64)
    }

    /// What to do once the lock is released.
    @usableFromInline
    enum Work: Sendable {
        case background(Background)
        case lease(Connection, LeaseCompletion)
        case fail(LeaseCompletion, PoolError)
        case close(Connection)
        case stopTimer(CheckedContinuation<Void, Never>)
        case observe(PoolObservation)
        case finished([CheckedContinuation<Void, Never>])
    }

    /// - Parameters:
    ///   - clock: stamps events and runs the timers; its instants are `ContinuousClock`'s, which the state machine
    ///     takes.
    ///   - observer: receives observations, outside the pool's lock (it must not call back into the pool from them),
    ///     and once the pool's ``gauges``.
    ///   - jitterSeed: seeds the connect backoff jitter.
    ///   - budget: the database's `max_db_connections`, shared by its pools.
    public init(
        key: PoolKey,
        configuration: PoolConfiguration,
        factory: Factory,
        clock: Clock,
        observer: any PoolObserver = NoOpPoolObserver(),
        jitterSeed: UInt64 = .random(in: 0...UInt64.max),
        budget: ConnectionBudget? = nil
    ) {
        self.key = key
        self.factory = factory
        self.clock = clock
        self.observer = observer
        self.budget = budget
        let machine = PoolStateMachine(key: key, configuration: configuration, jitterSeed: jitterSeed)
        self.state = Mutex(State(machine: machine))
        (self.background, self.backgroundInput) = AsyncStream.makeStream()
        budget?.join(self)
        observer.pool(key, gauges: self.gauges)
    }

    deinit {
        self.budget?.leave(self)
    }

    /// A pool on the real clock.
    public convenience init(
        key: PoolKey,
        configuration: PoolConfiguration,
        factory: Factory,
        observer: any PoolObserver = NoOpPoolObserver(),
        jitterSeed: UInt64 = .random(in: 0...UInt64.max),
        budget: ConnectionBudget? = nil
    ) where Clock == ContinuousClock {
        self.init(
            key: key,
            configuration: configuration,
            factory: factory,
            clock: ContinuousClock(),
            observer: observer,
            jitterSeed: jitterSeed,
            budget: budget
        )
    }

    /// Runs the pool's connects, pings and timer; returns once shutdown has completed and the last of them has
    /// finished. Cancelled, it shuts the pool down at once (waiters fail, idle and leased connections close) and
    /// returns when nothing is left running. Call it once, for example in a service's task group; until it runs, the
    /// pool opens no connection and no timer fires.
    @inlinable
    public func run() async {
        let (first, _) = self.runStarted.compareExchange(expected: false, desired: true, ordering: .relaxed)
        precondition(first, "ConnectionPool.run() must be called once")
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                // Once cancelled, the stream still hands out what it buffered, so that every connect asked for
                // settles and shutdown can complete.
                for await work in self.background {
                    switch work {
                    case .connect(let id, let affinity):
                        group.addTask { await self.connect(id, affinity: affinity) }
                    case .ping(let connection):
                        group.addTask { await self.ping(connection) }
                    case .timer(let deadline, let generation):
                        group.addTask { await self.runTimer(until: deadline, generation: generation) }
                    }
                }
            }
        } onCancel: {
            self.handle(.shutdown)
            self.handle(.closeLeased)
        }
    }

    /// Current gauges and counters.
    @inlinable
    public var stats: PoolStats { self.state.withLock { $0.machine.stats } }

    /// The pool's connections and waiters now, and the connections themselves, under the pool's lock (for the admin
    /// console).
    public func inspect() -> (PoolInspection, [ConnectionID: Connection]) {
        self.state.withLock { ($0.machine.inspect(), $0.connections.byID) }
    }

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
        // The connection may be idle now: room for another pool of the database that waits for some.
        if let budget = self.budget, budget.hasDeferred { budget.makeRoom() }
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

    /// Gives a leased connection back to be closed, not reused: it works, but is not fit for another client.
    /// Counted as a close for `reason`, not as an error.
    @inlinable
    public func retire(_ connection: Connection, lease request: RequestID, reason: CloseReason) {
        self.handle(.connectionRetired(connection.id, lease: request, reason))
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

    /// Retires every connection opened so far: idle ones now, the others when they come back (``PoolEvent/reconnect``).
    public func reconnect() {
        self.handle(.reconnect)
    }

    /// Stops handing out connections and fails the waiters, closes idle connections, waits up to `drainTimeout`
    /// (on the pool's clock) for leased ones to come back, then closes those too; cancelling the calling task ends
    /// the wait at once. Returns when no connection is left (connects still in flight are closed when they finish).
    @inlinable
    public func shutdown(drainTimeout: Duration) async {
        self.handle(.shutdown)
        let deadline = self.clock.now.advanced(by: drainTimeout)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitUntilShutDown() }
            group.addTask {
                // Woken early when shutdown completed first; closing leases is then a no-op.
                try? await self.clock.sleep(until: deadline, tolerance: nil)
                self.handle(.closeLeased)
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// ``shutdown(drainTimeout:)`` without waiting, for a pool with nothing to drain: stops handing out
    /// connections and fails the waiters; ``run()`` returns once connects still in flight have finished.
    @inlinable
    public func close() {
        self.handle(.shutdown)
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
        self.handle(.leaseRequested(request, affinity: affinity)) { $0.incoming = (request, completion) }
        // A client of a pool that waits for room under max_db_connections: room is made for it if some is idle.
        if let budget = self.budget, budget.hasDeferred { budget.makeRoom() }
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

    /// Feeds one event under the lock (after `prepare`), then runs its actions outside it.
    @inlinable
    func handle(_ event: PoolEvent, prepare: @Sendable (inout State) -> Void = { _ in }) {
        var work = self.state.withLock { state in
            prepare(&state)
            var actions: [PoolAction] = []
            swap(&actions, &state.actions)
            state.machine.handle(event, now: self.clock.now, into: &actions)
            self.gauges.store(state.machine.gauges)
            var work: [Work] = []
            swap(&work, &state.spareWork)
            for action in actions {
                Self.resolve(action, in: &state, into: &work)
            }
            if let (request, completion) = state.incoming {
                // Not served yet: it waits.
                state.incoming = nil
                state.requests[request] = completion
            }
            swap(&actions, &state.actions)
            return work
        }
        for index in work.indices {
            self.run(work[index])
        }
        guard work.capacity > 0 else { return }
        work.removeAll(keepingCapacity: true)
        self.state.withLock { state in
            if state.spareWork.capacity < work.capacity { swap(&work, &state.spareWork) }
        }
    }

    /// Turns ids into the objects the actions need, keeping the maps in step with the state machine.
    @inlinable
    static func resolve(_ action: PoolAction, in state: inout State, into work: inout [Work]) {
        switch action {
        case .createConnection(let id, let affinity):
            work.append(.background(.connect(id, affinity: affinity)))
        case .lease(let id, let request):
            guard let connection = state.connections[id], let completion = Self.takeRequest(request, from: &state)
            else { preconditionFailure("lease of unknown \(id) or \(request)") }
            work.append(.lease(connection, completion))
        case .ping(let id, _):
            guard let connection = state.connections[id] else { preconditionFailure("ping of unknown \(id)") }
            work.append(.background(.ping(connection)))
        case .close(let id, _):
            if let connection = state.connections.remove(id) { work.append(.close(connection)) }
        case .failRequest(let request, let error):
            if let completion = Self.takeRequest(request, from: &state) { work.append(.fail(completion, error)) }
        case .scheduleTimer(let timer):
            guard !state.machine.isShutDown else { return }
            state.timers[timer.id] = timer
            if state.wakeAt.map({ timer.deadline < $0 }) ?? true {
                Self.restartTimer(until: timer.deadline, in: &state, into: &work)
            }
        case .cancelTimer(let id):
            // The task may wake for nothing; it then sleeps until the next deadline.
            state.timers[id] = nil
        case .observe(let observation):
            work.append(.observe(observation))
        case .shutdownComplete:
            if let stop = state.timerStop { work.append(.stopTimer(stop)) }
            state.timers = [:]
            state.wakeAt = nil
            state.timerStop = nil
            state.timerGeneration += 1
            work.append(.finished(state.shutdownWaiters))
            state.shutdownWaiters = []
        }
    }

    /// The completion of `request`, which is the event's own or one that waits; nil when it has none (any more).
    @inlinable
    static func takeRequest(_ request: RequestID, from state: inout State) -> LeaseCompletion? {
        if let incoming = state.incoming, incoming.request == request {
            state.incoming = nil
            return incoming.completion
        }
        return state.requests.removeValue(forKey: request)
    }

    @inlinable
    func run(_ work: Work) {
        switch work {
        case .background(let background):
            if case .terminated = self.backgroundInput.yield(background) { self.settle(background) }
        case .lease(let connection, let completion):
            completion(.success(connection))
        case .fail(let completion, let error):
            completion(.failure(error))
        case .close(let connection):
            connection.close()
            self.budget?.release()
        case .stopTimer(let stop):
            stop.resume()
        case .observe(let observation):
            self.observer.pool(self.key, observed: observation)
        case .finished(let waiters):
            // Shutdown is complete: run() returns once its children have.
            self.backgroundInput.finish()
            for waiter in waiters { waiter.resume() }
        }
    }

    /// Work that ``run()`` will never start (it has returned): answers what the state machine waits for, so that
    /// no connection stays "connecting" and shutdown can complete.
    @inlinable
    func settle(_ background: Background) {
        switch background {
        case .connect(let id, _):
            self.handle(.connectFailed(id, ConnectError(reason: .connect, message: "pool \(self.key) is not running")))
        case .ping(let connection):
            self.handle(.pingFailed(connection.id))
        case .timer:
            break
        }
    }

    @inlinable
    func connect(_ id: ConnectionID, affinity: Int?) async {
        if let budget = self.budget, !budget.acquire() {
            self.deferConnect(id, budget: budget)
            return
        }
        do throws(ConnectError) {
            let connection = try await self.factory.makeConnection(id: id, for: self.key, affinity: affinity)
            precondition(connection.id == id, "the factory must use the id it was given")
            self.handle(.connectionEstablished(id, affinity: connection.affinity)) {
                $0.connections.insert(connection, for: id)
            }
        } catch {
            self.budget?.release()
            self.handle(.connectFailed(id, error))
        }
    }

    /// No room under `max_db_connections`: the pool waits for room, and makes some when its clients wait.
    @usableFromInline
    func deferConnect(_ id: ConnectionID, budget: ConnectionBudget) {
        self.handle(.connectDeferred(id))
        guard budget.waitForRoom(self) else {
            // Room was made between the two: try again now.
            self.handle(.connectPermitted)
            return
        }
        budget.makeRoom()
    }

    @inlinable
    func ping(_ connection: Connection) async {
        let alive = await connection.ping()
        self.handle(alive ? .pingSucceeded(connection.id) : .pingFailed(connection.id))
    }

    /// Replaces the timer task by one that sleeps until `deadline` (started by ``run()``).
    @inlinable
    static func restartTimer(
        until deadline: ContinuousClock.Instant,
        in state: inout State,
        into work: inout [Work]
    ) {
        if let stop = state.timerStop { work.append(.stopTimer(stop)) }
        state.timerStop = nil
        state.timerGeneration += 1
        state.wakeAt = deadline
        work.append(.background(.timer(until: deadline, generation: state.timerGeneration)))
    }

    /// The timer task: sleeps until `deadline` unless it is replaced first, then fires what is due.
    @inlinable
    func runTimer(until deadline: ContinuousClock.Instant, generation: UInt64) async {
        let woke = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                do {
                    try await self.clock.sleep(until: deadline, tolerance: nil)
                    return true
                } catch {
                    return false
                }
            }
            group.addTask {
                await self.waitUntilTimerStopped(generation: generation)
                return false
            }
            let woke = await group.next() ?? false
            group.cancelAll()
            return woke
        }
        if woke { self.timerWoke(generation: generation) }
    }

    /// Returns when the timer task of `generation` is replaced or shutdown completes, or when cancelled.
    @inlinable
    func waitUntilTimerStopped(generation: UInt64) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // Checked under the lock, so that neither a replacement nor the cancellation handler can slip in
                // between the check and the registration.
                let stopped = self.state.withLock { state in
                    guard state.timerGeneration == generation, !Task.isCancelled else { return true }
                    state.timerStop = continuation
                    return false
                }
                if stopped { continuation.resume() }
            }
        } onCancel: {
            let stop = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                guard state.timerGeneration == generation else { return nil }
                defer { state.timerStop = nil }
                return state.timerStop
            }
            stop?.resume()
        }
    }

    /// Fires every timer that is due, in deadline order, and sleeps again until the next one.
    @inlinable
    func timerWoke(generation: UInt64) {
        let (due, next) = self.state.withLock { state -> ([PoolTimer], [Work]) in
            guard state.timerGeneration == generation else { return ([], []) }
            state.wakeAt = nil
            let now = self.clock.now
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
            if let earliest { Self.restartTimer(until: earliest, in: &state, into: &work) }
            return (due.sorted { ($0.deadline, $0.id) < ($1.deadline, $1.id) }, work)
        }
        for item in next { self.run(item) }
        for timer in due { self.handle(.timerFired(timer)) }
    }
}

extension ConnectionPool: ConnectionBudgetMember {
    public func connectPermitted() {
        self.handle(.connectPermitted)
    }

    public var oldestIdleSince: ContinuousClock.Instant? { self.state.withLock { $0.machine.oldestIdleSince } }

    public var hasWaiters: Bool { self.state.withLock { $0.machine.stats.waiting > 0 } }

    public func evictIdle() {
        self.handle(.evictIdle)
    }
}
