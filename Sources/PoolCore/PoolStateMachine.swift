import DequeModule

/// The pooling rules of one pool, as a value: events in, actions out.
///
/// No I/O, no clock reads: every event carries `now`, and timers come back as ``PoolAction/scheduleTimer(_:)``.
/// The live pool (`ConnectionPool`) keeps one of these behind a lock and runs the actions after unlocking.
///
/// The rules: at most `poolSize + maxOverflow` connections open or connecting; `minSize` kept open; waiters served
/// first come, first served, except that a connection may go to a younger waiter with its affinity (its event loop) and
/// no waiter is passed over more than ``maxPassedOver`` times; a waiter fails after `poolTimeout` (with the last
/// connect error if connects are failing); connections older than `poolRecycle` are closed when returned or when they
/// would be handed out, never while leased; an idle connection unused for longer than `prePingDelay` is pinged before
/// it is handed out; an overflow connection returned while `poolSize` connections are idle is closed; idle connections
/// above `minSize` close after `idleTimeout`; a lease longer than `leakThreshold` is reported once; failed connects are
/// retried with capped exponential backoff and jitter.
public struct PoolStateMachine: Sendable {
    public let key: PoolKey
    /// The settings in force, normalized (see ``PoolConfiguration/normalized()``).
    public private(set) var configuration: PoolConfiguration

    var phase: Phase = .running
    /// With what `connectionEstablished` said of each open connection's affinity.
    var connections = ConnectionTable()
    /// The open connections that had an affinity (tests and inspection).
    var affinities: [ConnectionID: Int] { self.connections.affinities }
    /// The idle connections, least recently used first (by `idleSince`, then id): every checkout picks from here,
    /// so it reads one short array instead of hashing through `connections`. Kept in step by ``setState(_:_:)``.
    private(set) var idleOrder: [IdleEntry] = []
    /// Requests waiting for a connection, oldest first. Requests whose connection is being pinged are held by
    /// that connection instead, and come back here (at their place) if the ping fails.
    var queue: Deque<Waiter> = []
    /// Gauges and counters, changed with every transition (`overflow` is derived when read).
    private(set) var counts = PoolStats()
    var random: SplitMix64
    private var nextConnectionID = 0
    /// Connections with a lower id are stale (``PoolEvent/reconnect``).
    private(set) var staleBelow = 0
    /// Set by ``PoolEvent/connectDeferred(_:)``, cleared by ``PoolEvent/connectPermitted``: the database's
    /// `max_db_connections` holds new connects back, so none is asked for meanwhile.
    public private(set) var connectsDeferred = false
    private var nextTimerID = 0
    /// The one pending `idle_timeout` sweep, if any: set while any connection is idle (and `idleTimeout` is set).
    /// One timer for the pool rather than one per idle connection, so that a checkout and a return schedule and
    /// cancel nothing.
    private var idleSweep: PoolTimer.ID?
    private var nextSeq = 0
    /// Collects the actions of the event being handled (the caller's buffer, lent by `handle`).
    private var actions: [PoolAction] = []

    /// How many times a waiter may be passed over for a younger one that runs where the returned connection does.
    /// Waiters are passed over while they queue, not only at the head, so the bound must absorb the ordinary
    /// difference between the loops' queues: at 4, a third of the transactions of pgbench with 50-200 clients still
    /// crossed loops, at 16 one in six (one in two with strict first come, first served). A waiter on the other
    /// loop still waits at most 16 transactions longer.
    public static let maxPassedOver = 16
    /// How far down the queue a returned connection looks for a waiter with its affinity.
    static let affinityWindow = 64

    /// - Parameter jitterSeed: seeds the backoff jitter; pass a random value in production, a fixed one in tests.
    public init(key: PoolKey, configuration: PoolConfiguration, jitterSeed: UInt64) {
        self.key = key
        self.configuration = configuration.normalized()
        self.random = SplitMix64(seed: jitterSeed)
    }

    /// Current gauges and counters.
    public var stats: PoolStats {
        var stats = self.counts
        stats.overflow = self.overflow
        return stats
    }

    /// The gauges of ``stats``, without copying its counters by reason.
    public var gauges: PoolGaugeValues {
        var gauges = self.counts.gauges
        gauges.overflow = self.overflow
        return gauges
    }

    /// Open connections above `poolSize` (not counted: it follows from the open count).
    private var overflow: Int { max(0, self.counts.open - self.configuration.poolSize) }

    /// True once shutdown has completed.
    public var isShutDown: Bool { self.phase == .shutDown }

    /// Feeds one event; returns what to do, in order.
    public mutating func handle(_ event: PoolEvent, now: ContinuousClock.Instant) -> [PoolAction] {
        var actions: [PoolAction] = []
        self.handle(event, now: now, into: &actions)
        return actions
    }

    /// Feeds one event; replaces the contents of `actions` by what to do, in order. The live pool passes the same
    /// array for every event, so a checkout does not allocate one.
    public mutating func handle(_ event: PoolEvent, now: ContinuousClock.Instant, into actions: inout [PoolAction]) {
        let now = PoolInstant(now)
        actions.removeAll(keepingCapacity: true)
        // `emit` appends to `self.actions`; lend it the caller's buffer for this event.
        swap(&self.actions, &actions)
        defer { swap(&self.actions, &actions) }
        switch event {
        case .start:
            self.fillDemand(now: now)
        case .leaseRequested(let request, let affinity):
            self.leaseRequested(request, affinity: affinity, now: now)
        case .requestCancelled(let request):
            self.requestCancelled(request)
        case .connectionEstablished(let id, let affinity):
            self.connectionEstablished(id, affinity: affinity, now: now)
        case .connectFailed(let id, let error):
            self.connectFailed(id, error: error, now: now)
        case .connectionReleased(let id, let lease):
            self.connectionReleased(id, lease: lease, now: now)
        case .connectionBroken(let id, let lease, let reason):
            self.connectionBroken(id, lease: lease, reason: reason, now: now)
        case .connectionRetired(let id, let lease, let reason):
            self.connectionBroken(id, lease: lease, reason: nil, closing: reason, now: now)
        case .pingSucceeded(let id):
            self.pingSucceeded(id, now: now)
        case .pingFailed(let id):
            self.pingFailed(id, now: now)
        case .timerFired(let timer):
            self.timerFired(timer, now: now)
        case .reconfigure(let configuration):
            self.reconfigure(configuration, now: now)
        case .reconnect:
            self.reconnect(now: now)
        case .shutdown:
            self.shutdown()
        case .closeLeased:
            self.closeLeased()
        case .connectDeferred(let id):
            self.connectDeferred(id)
        case .connectPermitted:
            self.connectPermitted(now: now)
        case .evictIdle:
            self.evictIdle()
        }
    }

    // MARK: Events

    private mutating func leaseRequested(_ request: RequestID, affinity: Int?, now: PoolInstant) {
        guard self.isAcceptingRequests else {
            self.emit(.failRequest(request, self.shuttingDownError()))
            return
        }
        let waiter = Waiter(
            request: request,
            seq: self.nextSeq,
            since: now,
            deadline: now + self.configuration.poolTimeout,
            timer: nil,
            affinity: affinity
        )
        self.nextSeq += 1
        self.counts.waiting += 1
        // Appended behind everyone already waiting: a new request never overtakes.
        self.queue.append(waiter)
        self.serveQueue(now: now)
        if let last = self.queue.last, last.request == request, last.timer == nil {
            self.queue[self.queue.count - 1].timer = self.schedule(.requestTimeout(request), at: last.deadline)
        }
        self.fillDemand(now: now)
    }

    private mutating func requestCancelled(_ request: RequestID) {
        guard let waiter = self.removeWaiter(request) else { return }
        if let timer = waiter.timer { self.emit(.cancelTimer(timer)) }
        self.fail(waiter, self.cancelledError())
    }

    private mutating func connectionEstablished(_ id: ConnectionID, affinity: Int?, now: PoolInstant) {
        guard case .connecting(let since) = self.connections[id] else { return }
        // Where the connection really runs, whatever it was asked for.
        self.connections.setAffinity(affinity, of: id)
        self.observe(.connected(took: now - since))
        if case .connectFailing(let failing) = self.phase {
            if let timer = failing.retryTimer { self.emit(.cancelTimer(timer)) }
            self.phase = .running
        }
        self.connectionAvailable(id, openedAt: now, now: now)
        // Other waiters may have been held back by the backoff.
        self.fillDemand(now: now)
    }

    private mutating func connectFailed(_ id: ConnectionID, error: ConnectError, now: PoolInstant) {
        guard case .connecting = self.connections[id] else { return }
        self.setState(id, nil)
        self.observe(.connectFailed(error.reason))
        let failures: Int
        switch self.phase {
        case .running:
            failures = 1
        case .connectFailing(let failing):
            if let timer = failing.retryTimer { self.emit(.cancelTimer(timer)) }
            failures = failing.failures + 1
        case .shuttingDown:
            self.checkShutdownComplete()
            return
        case .shutDown:
            return
        }
        let retryAt = now + self.backoffDelay(failures: failures)
        let timer = self.schedule(.connectRetry, at: retryAt)
        self.phase = .connectFailing(
            ConnectFailing(failures: failures, lastError: error, retryAt: retryAt, retryTimer: timer)
        )
        if error.isPermanent && self.counts.open == 0 {
            // Waiting would only end in the same answer: the waiters hear it now, as they would from the server
            // directly. With connections open, they wait for one of those instead.
            self.failAllWaiters(self.refusedError(error))
        }
    }

    /// Fails every queued request (and those waiting on a ping), in arrival order.
    private mutating func failAllWaiters(_ error: PoolError) {
        var waiters = Array(self.queue)
        self.queue.removeAll()
        for id in self.connections.keys.sorted() {
            guard case .pinging(var pinging) = self.connections[id], let waiter = pinging.waiter else { continue }
            waiters.append(waiter)
            pinging.waiter = nil
            self.setState(id, .pinging(pinging))
        }
        for waiter in waiters.sorted(by: { $0.seq < $1.seq }) {
            if let timer = waiter.timer { self.emit(.cancelTimer(timer)) }
            self.fail(waiter, error)
        }
    }

    private mutating func connectionReleased(_ id: ConnectionID, lease request: RequestID, now: PoolInstant) {
        // A release of a connection that is not leased (unknown, closed by the drain timeout) is ignored.
        guard case .leased(let lease) = self.connections[id] else { return }
        guard lease.request == request else {
            self.observe(.staleRelease)
            return
        }
        if let timer = lease.leakTimer { self.emit(.cancelTimer(timer)) }
        self.observe(.returned(heldFor: now - lease.since))
        self.connectionAvailable(id, openedAt: lease.openedAt, now: now)
    }

    /// Closes a connection that broke (`reason`, counted as an error) or that its holder retired (`reason` nil:
    /// closed for `closing`, no error).
    private mutating func connectionBroken(
        _ id: ConnectionID,
        lease request: RequestID?,
        reason: ConnectionErrorReason?,
        closing: CloseReason = .error,
        now: PoolInstant
    ) {
        switch self.connections[id] {
        case .leased(let lease):
            guard request == nil || request == lease.request else {
                self.observe(.staleRelease)
                return
            }
            if let timer = lease.leakTimer { self.emit(.cancelTimer(timer)) }
            self.observe(.returned(heldFor: now - lease.since))
        case .idle:
            break
        case .pinging(let pinging):
            // The ping's answer will find no connection and be ignored.
            if let waiter = pinging.waiter { self.requeue(waiter) }
        case .connecting, nil:
            return
        }
        if let reason { self.observe(.connectionErrored(reason)) }
        self.close(id, closing)
        self.afterClose(now: now)
    }

    private mutating func pingSucceeded(_ id: ConnectionID, now: PoolInstant) {
        guard case .pinging(let pinging) = self.connections[id] else { return }
        if let waiter = pinging.waiter, self.isAcceptingRequests, id.rawValue < self.staleBelow {
            // Went stale while being checked: the waiter keeps its place for a fresh one.
            self.close(id, .recycle)
            self.requeue(waiter)
            self.afterClose(now: now)
        } else if let waiter = pinging.waiter, self.isAcceptingRequests {
            self.lease(id, openedAt: pinging.openedAt, to: waiter, now: now)
        } else {
            self.connectionAvailable(id, openedAt: pinging.openedAt, now: now)
        }
    }

    private mutating func pingFailed(_ id: ConnectionID, now: PoolInstant) {
        guard case .pinging(let pinging) = self.connections[id] else { return }
        self.observe(.connectionErrored(.broken))
        self.close(id, .pingFailed)
        // The request keeps its place: it goes back to the queue in arrival order and is served first.
        if let waiter = pinging.waiter { self.requeue(waiter) }
        self.afterClose(now: now)
    }

    private mutating func timerFired(_ timer: PoolTimer, now: PoolInstant) {
        guard now >= timer.due else {
            // Woken early: wait again.
            self.emit(.scheduleTimer(timer))
            return
        }
        switch timer.kind {
        case .requestTimeout(let request):
            self.requestTimedOut(request, timer: timer.id)
        case .idleTimeout:
            guard self.idleSweep == timer.id else { return }
            self.idleSweep = nil
            self.closeIdleConnections(now: now)
        case .leak(let id):
            guard case .leased(var lease) = self.connections[id], lease.leakTimer == timer.id else { return }
            lease.leakTimer = nil
            self.setState(id, .leased(lease))
            self.observe(.leakSuspected(heldFor: now - lease.since))
        case .connectRetry:
            guard case .connectFailing(var failing) = self.phase, failing.retryTimer == timer.id else { return }
            failing.retryTimer = nil
            self.phase = .connectFailing(failing)
            self.fillDemand(now: now)
        }
    }

    private mutating func requestTimedOut(_ request: RequestID, timer: PoolTimer.ID) {
        guard self.waiter(request)?.timer == timer, let waiter = self.removeWaiter(request) else { return }
        let error: PoolError
        if case .connectFailing(let failing) = self.phase {
            error = self.connectFailedError(failing)
        } else {
            error = self.timeoutError()
        }
        self.fail(waiter, error)
        self.observe(.timedOut)
    }

    /// Closes the connections idle for `idle_timeout` or longer, least recently used first, down to `min_size`;
    /// then sweeps again when the next one is due.
    private mutating func closeIdleConnections(now: PoolInstant) {
        guard let idleTimeout = self.configuration.idleTimeout, self.isAcceptingRequests else { return }
        var keptForMinSize = false
        var index = 0
        // `idleOrder` is sorted by idle time: the first connection not yet due ends the sweep.
        while index < self.idleOrder.count, now - self.idleOrder[index].since >= idleTimeout {
            if self.counts.open > self.configuration.minSize {
                self.close(self.idleOrder[index].id, .idle)
            } else {
                keptForMinSize = true
                index += 1
            }
        }
        var next = index < self.idleOrder.count ? self.idleOrder[index].since + idleTimeout : nil
        // Kept for min_size: look again later in case the pool has grown by then.
        if keptForMinSize { next = min(next ?? now + idleTimeout, now + idleTimeout) }
        if let next { self.idleSweep = self.schedule(.idleTimeout, at: next) }
    }

    /// A connection became idle at `since`: makes sure a sweep is pending. A pending one is never later than
    /// this connection's deadline, as every idle connection became idle at `since` or before.
    private mutating func sweepIdle(since: PoolInstant) {
        guard self.idleSweep == nil, let idleTimeout = self.configuration.idleTimeout else { return }
        self.idleSweep = self.schedule(.idleTimeout, at: since + idleTimeout)
    }

    private mutating func reconfigure(_ configuration: PoolConfiguration, now: PoolInstant) {
        let old = self.configuration
        self.configuration = configuration.normalized()
        guard self.isAcceptingRequests else { return }
        if old.idleTimeout != self.configuration.idleTimeout {
            if let timer = self.idleSweep { self.emit(.cancelTimer(timer)) }
            self.idleSweep = nil
            if let oldest = self.idleOrder.first { self.sweepIdle(since: oldest.since) }
        }
        // Shrink: idle connections go first, least recently used first; leased ones close when they come back.
        while self.counts.idle > self.configuration.poolSize
            || (self.counts.idle > 0
                && self.counts.open + self.counts.connecting > self.configuration.maxConnections)
        {
            guard let id = self.idleConnection(mostRecent: false) else { break }
            self.close(id, .overflow)
        }
        self.serveQueue(now: now)
        self.fillDemand(now: now)
    }

    private mutating func shutdown() {
        switch self.phase {
        case .running:
            break
        case .connectFailing(let failing):
            if let timer = failing.retryTimer { self.emit(.cancelTimer(timer)) }
        case .shuttingDown, .shutDown:
            return
        }
        self.phase = .shuttingDown
        self.failAllWaiters(self.shuttingDownError())
        if let timer = self.idleSweep { self.emit(.cancelTimer(timer)) }
        self.idleSweep = nil
        for id in self.connections.keys.sorted() {
            guard case .idle = self.connections[id] else { continue }
            self.close(id, .shutdown)
        }
        self.checkShutdownComplete()
    }

    private mutating func connectDeferred(_ id: ConnectionID) {
        guard case .connecting = self.connections[id] else { return }
        self.setState(id, nil)
        self.connectsDeferred = true
        self.checkShutdownComplete()
    }

    private mutating func connectPermitted(now: PoolInstant) {
        guard self.connectsDeferred else { return }
        self.connectsDeferred = false
        if self.isAcceptingRequests { self.fillDemand(now: now) }
    }

    /// Not followed by ``fillDemand(now:)``: the room is for the pool that asked, not for this one's `min_size`.
    private mutating func evictIdle() {
        guard self.isAcceptingRequests, let id = self.idleOrder.first?.id else { return }
        self.close(id, .idle)
    }

    /// When the least recently used idle connection became idle; nil when none is idle. Eviction picks the pool whose
    /// idle connection is the oldest, as PgBouncer does.
    public var oldestIdleSince: ContinuousClock.Instant? { self.idleOrder.first?.since.instant }

    private mutating func closeLeased() {
        guard self.phase == .shuttingDown else { return }
        for id in self.connections.keys.sorted() {
            switch self.connections[id] {
            case .leased(let lease):
                if let timer = lease.leakTimer { self.emit(.cancelTimer(timer)) }
                self.close(id, .shutdown)
            case .pinging:
                self.close(id, .shutdown)
            case .idle, .connecting, nil:
                break
            }
        }
        self.checkShutdownComplete()
    }

    // MARK: Rules shared by the events

    private var isAcceptingRequests: Bool {
        switch self.phase {
        case .running, .connectFailing: true
        case .shuttingDown, .shutDown: false
        }
    }

    /// Hands idle connections to waiters, oldest waiter first (see ``takeWaiter(for:)``), most recently used
    /// connection first (so that surplus connections stay unused and reach `idle_timeout`).
    private mutating func serveQueue(now: PoolInstant) {
        while let first = self.queue.first, let id = self.idleConnection(mostRecent: true, affinity: first.affinity),
            case .idle(let idle) = self.connections[id]
        {
            if self.isStale(id, openedAt: idle.openedAt, now: now) {
                self.close(id, .recycle)
                continue
            }
            guard var waiter = self.takeWaiter(for: self.connections.affinity(of: id)) else { return }
            if self.configuration.prePing && now - idle.idleSince > self.configuration.prePingDelay {
                if waiter.timer == nil {
                    waiter.timer = self.schedule(.requestTimeout(waiter.request), at: waiter.deadline)
                }
                self.setState(id, .pinging(Pinging(openedAt: idle.openedAt, waiter: waiter)))
                self.emit(.ping(id, for: waiter.request))
            } else {
                self.lease(id, openedAt: idle.openedAt, to: waiter, now: now)
            }
        }
    }

    /// Opens connections for waiters not covered by connects in flight, and up to `min_size`; never above
    /// `poolSize + maxOverflow`, and while connects fail one at a time after the backoff.
    private mutating func fillDemand(now: PoolInstant) {
        let inFlight = self.counts.connecting
        let total = self.counts.open + inFlight
        var wanted = max(self.queue.count - inFlight, self.configuration.minSize - total, 0)
        wanted = min(wanted, self.configuration.maxConnections - total)
        if self.connectsDeferred { wanted = 0 }
        switch self.phase {
        case .running:
            break
        case .connectFailing(let failing):
            // After a permanent refusal, a client that asks gets its own attempt at once (the database may exist
            // by now), one at a time; only the pool's own demand (min_size) waits for the backoff.
            let retryNow = now >= failing.retryAt || (failing.lastError.isPermanent && !self.queue.isEmpty)
            wanted = inFlight > 0 || !retryNow ? 0 : min(wanted, 1)
        case .shuttingDown, .shutDown:
            wanted = 0
        }
        for index in 0..<max(0, wanted) {
            let id = ConnectionID(self.nextConnectionID)
            self.nextConnectionID += 1
            self.setState(id, .connecting(since: now))
            // Opened where a waiter it is for runs (the waiters behind those the connects in flight cover).
            let waiter = inFlight + index
            let affinity = waiter < self.queue.count ? self.queue[waiter].affinity : nil
            self.emit(.createConnection(id, affinity: affinity))
        }
    }

    /// A connection that is established, returned or verified goes to the oldest waiter, is kept idle, or is
    /// closed when the pool does not need it.
    private mutating func connectionAvailable(
        _ id: ConnectionID,
        openedAt: PoolInstant,
        now: PoolInstant
    ) {
        guard self.isAcceptingRequests else {
            self.close(id, .shutdown)
            self.checkShutdownComplete()
            return
        }
        if self.isStale(id, openedAt: openedAt, now: now) {
            self.close(id, .recycle)
            self.afterClose(now: now)
            return
        }
        // Above the limit only after a reconfigure shrank it: shrink instead of handing out.
        if self.counts.open + self.counts.connecting > self.configuration.maxConnections {
            self.close(id, .overflow)
            return
        }
        if let waiter = self.takeWaiter(for: self.connections.affinity(of: id)) {
            self.lease(id, openedAt: openedAt, to: waiter, now: now)
            return
        }
        // SQLAlchemy's QueuePool: keep at most pool_size idle; the rest is overflow and closes.
        if self.counts.idle >= self.configuration.poolSize {
            self.close(id, .overflow)
            return
        }
        self.setState(id, .idle(Idle(openedAt: openedAt, idleSince: now)))
        self.sweepIdle(since: now)
    }

    private mutating func lease(
        _ id: ConnectionID,
        openedAt: PoolInstant,
        to waiter: Waiter,
        now: PoolInstant
    ) {
        if let timer = waiter.timer { self.emit(.cancelTimer(timer)) }
        let leakTimer = self.configuration.leakThreshold.map { self.makeTimer(.leak(id), at: now + $0) }
        self.counts.waiting -= 1
        self.setState(
            id,
            .leased(Lease(openedAt: openedAt, request: waiter.request, since: now, leakTimer: leakTimer?.id))
        )
        self.emit(.lease(id, to: waiter.request))
        self.observe(.leased(waited: now - waiter.since))
        if let leakTimer { self.emit(.scheduleTimer(leakTimer)) }
    }

    /// Older than `pool_recycle`, or opened before a ``PoolEvent/reconnect``.
    private func isStale(_ id: ConnectionID, openedAt: PoolInstant, now: PoolInstant) -> Bool {
        if id.rawValue < self.staleBelow { return true }
        if let recycle = self.configuration.poolRecycle, now - openedAt > recycle { return true }
        return false
    }

    private mutating func reconnect(now: PoolInstant) {
        guard self.isAcceptingRequests else { return }
        self.staleBelow = self.nextConnectionID
        for id in self.connections.keys.sorted() {
            guard case .idle = self.connections[id] else { continue }
            self.close(id, .recycle)
        }
        // Waiters and min_size get new connections, to the new address.
        self.afterClose(now: now)
    }

    private mutating func afterClose(now: PoolInstant) {
        guard self.isAcceptingRequests else {
            self.checkShutdownComplete()
            return
        }
        self.serveQueue(now: now)
        self.fillDemand(now: now)
    }

    private mutating func checkShutdownComplete() {
        guard self.phase == .shuttingDown, self.connections.isEmpty else { return }
        self.phase = .shutDown
        self.emit(.shutdownComplete)
    }

    // MARK: Bookkeeping

    /// The only place connection states change, so the gauges always count the states.
    private mutating func setState(_ id: ConnectionID, _ state: ConnectionState?) {
        if let old = self.connections[id] {
            self.count(old, by: -1)
            if case .idle = old, let index = self.idleOrder.lastIndex(where: { $0.id == id }) {
                self.idleOrder.remove(at: index)
            }
        }
        if let state {
            self.count(state, by: 1)
            if case .idle(let idle) = state {
                let entry = IdleEntry(id: id, since: idle.idleSince, affinity: self.connections.affinity(of: id))
                // Usually the newest: found at once from the end.
                let index = self.idleOrder.lastIndex { !(entry < $0) }.map { $0 + 1 } ?? 0
                self.idleOrder.insert(entry, at: index)
            }
        }
        self.connections[id] = state
    }

    private mutating func count(_ state: ConnectionState, by delta: Int) {
        switch state {
        case .connecting:
            self.counts.connecting += delta
        case .idle:
            self.counts.idle += delta
        case .pinging:
            self.counts.used += delta
        case .leased:
            self.counts.used += delta
            self.counts.checkedOut += delta
        }
    }

    private mutating func close(_ id: ConnectionID, _ reason: CloseReason) {
        self.setState(id, nil)
        self.emit(.close(id, reason))
        self.observe(.closed(reason))
    }

    private mutating func fail(_ waiter: Waiter, _ error: PoolError) {
        self.counts.waiting -= 1
        self.emit(.failRequest(waiter.request, error))
    }

    private func waiter(_ request: RequestID) -> Waiter? {
        if let waiter = self.queue.first(where: { $0.request == request }) { return waiter }
        for case .pinging(let pinging) in self.connections.values where pinging.waiter?.request == request {
            return pinging.waiter
        }
        return nil
    }

    /// Takes a request out of the queue, or away from the connection being pinged for it.
    private mutating func removeWaiter(_ request: RequestID) -> Waiter? {
        if let index = self.queue.firstIndex(where: { $0.request == request }) {
            return self.queue.remove(at: index)
        }
        for (id, state) in self.connections {
            guard case .pinging(var pinging) = state, let waiter = pinging.waiter, waiter.request == request
            else { continue }
            pinging.waiter = nil
            self.setState(id, .pinging(pinging))
            return waiter
        }
        return nil
    }

    /// The waiter a connection with `affinity` goes to: the oldest, unless a younger one within
    /// ``affinityWindow`` runs where the connection does and no waiter before it has been passed over
    /// ``maxPassedOver`` times yet (those before it are then passed over once more). Only a waiter with the
    /// connection's affinity overtakes: one without gains nothing over the oldest, which it would wrong.
    private mutating func takeWaiter(for affinity: Int?) -> Waiter? {
        guard let first = self.queue.first else { return nil }
        guard let affinity, let firstAffinity = first.affinity, firstAffinity != affinity else {
            return self.queue.removeFirst()
        }
        var chosen = 0
        for index in 0..<min(self.queue.count, Self.affinityWindow) {
            let waiter = self.queue[index]
            if waiter.affinity == affinity {
                chosen = index
                break
            }
            if waiter.passedOver >= Self.maxPassedOver { break }
        }
        for index in 0..<chosen { self.queue[index].passedOver += 1 }
        return self.queue.remove(at: chosen)
    }

    /// Puts a request back at its place (by arrival order).
    private mutating func requeue(_ waiter: Waiter) {
        let index = self.queue.firstIndex(where: { $0.seq > waiter.seq }) ?? self.queue.endIndex
        self.queue.insert(waiter, at: index)
    }

    /// The most (or least) recently used idle connection; with `affinity`, the most recently used one with that
    /// affinity if there is one.
    private func idleConnection(mostRecent: Bool, affinity: Int? = nil) -> ConnectionID? {
        guard mostRecent else { return self.idleOrder.first?.id }
        if let affinity, let match = self.idleOrder.last(where: { $0.affinity == affinity }) { return match.id }
        return self.idleOrder.last?.id
    }

    private mutating func schedule(_ kind: PoolTimer.Kind, at deadline: PoolInstant) -> PoolTimer.ID {
        let timer = self.makeTimer(kind, at: deadline)
        self.emit(.scheduleTimer(timer))
        return timer.id
    }

    private mutating func makeTimer(_ kind: PoolTimer.Kind, at deadline: PoolInstant) -> PoolTimer {
        let id = PoolTimer.ID(self.nextTimerID)
        self.nextTimerID += 1
        return PoolTimer(id: id, kind: kind, due: deadline)
    }

    private mutating func observe(_ observation: PoolObservation) {
        self.counts.count(observation)
        self.emit(.observe(observation))
    }

    private mutating func emit(_ action: PoolAction) {
        self.actions.append(action)
    }
}
