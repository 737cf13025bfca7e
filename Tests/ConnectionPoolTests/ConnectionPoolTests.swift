import ConnectionPool
import ConnectionPoolTestSupport
import PoolCore
import Synchronization
import Testing

/// The live pool on a manual clock: timers fire when a test advances the clock, never by waiting. The time limit
/// only bounds a test that hangs.
@Suite(.timeLimit(.minutes(1))) struct ConnectionPoolTests {
    static func configuration(
        poolSize: Int = 2,
        minSize: Int = 0,
        maxOverflow: Int = 0,
        poolTimeout: Duration = .seconds(10),
        idleTimeout: Duration? = nil,
        leakThreshold: Duration? = nil
    ) -> PoolConfiguration {
        PoolConfiguration(
            poolSize: poolSize,
            minSize: minSize,
            maxOverflow: maxOverflow,
            poolTimeout: poolTimeout,
            prePing: false,
            idleTimeout: idleTimeout,
            leakThreshold: leakThreshold
        )
    }

    let clock = ManualClock()

    func makePool(
        _ configuration: PoolConfiguration = Self.configuration(),
        factory: FakeFactory = FakeFactory(),
        observer: any PoolObserver = NoOpPoolObserver()
    ) -> ConnectionPool<FakeFactory, ManualClock> {
        ConnectionPool(
            key: testKey,
            configuration: configuration,
            factory: factory,
            clock: self.clock,
            observer: observer,
            jitterSeed: 1
        )
    }

    @Test func manyConcurrentLeasesShareAtMostPoolSizePlusOverflow() async throws {
        let factory = FakeFactory()
        let observer = RecordingObserver()
        let pool = self.makePool(Self.configuration(poolSize: 3, maxOverflow: 2), factory: factory, observer: observer)
        let holders = Locked((now: 0, most: 0))
        let leasedIDs = Locked<Set<ConnectionID>>([])
        let snapshots = Locked<[PoolStats]>([])
        try await withRunningPool(pool) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<200 {
                    group.addTask {
                        let connection = try await pool.lease()
                        let notHeldElsewhere = leasedIDs.withLock { $0.insert(connection.id).inserted }
                        #expect(notHeldElsewhere, "\(connection.id) leased twice")
                        holders.withLock {
                            $0.now += 1
                            $0.most = max($0.most, $0.now)
                        }
                        #expect(!connection.isClosed)
                        let stats = pool.stats
                        snapshots.withLock { $0.append(stats) }
                        await Task.yield()
                        holders.withLock { $0.now -= 1 }
                        leasedIDs.withLock { _ = $0.remove(connection.id) }
                        pool.release(connection)
                    }
                }
                try await group.waitForAll()
            }
            #expect(holders.withLock { $0.most } <= 5)
            let stats = pool.stats
            #expect(stats.checkouts == 200)
            #expect(stats.checkedOut == 0)
            #expect(stats.waiting == 0)
            #expect(stats.open <= 5)
            // Idle connections beyond pool_size were closed as overflow.
            #expect(stats.idle <= 3)
        }
        // Every snapshot taken while the clients ran respects the limit (the factory cannot tell: a close runs
        // after the pool has already counted the connection as gone).
        #expect(snapshots.withLock { $0 }.allSatisfy { $0.open + $0.connecting <= 5 })
        #expect(observer.gauges == pool.stats.gauges)
        #expect(observer.observations.count { $0.isLeased } == 200)
        #expect(factory.made.allSatisfy { $0.isClosed })
    }

    @Test func waiterGetsTheTimeoutError() async throws {
        let pool = self.makePool(Self.configuration(poolSize: 1))
        try await withRunningPool(pool) {
            let held = try await pool.lease()
            let result = Completion<Result<FakeConnection, PoolError>>()
            pool.lease { result($0) }
            self.clock.advance(by: .seconds(10) - .nanoseconds(1))
            // The timer is not due yet, and only the clock could make it fire.
            #expect(result.current == nil)
            self.clock.advance(by: .nanoseconds(1))
            guard case .failure(let error) = await result.value else {
                Issue.record("the second lease must time out")
                return
            }
            #expect(error.code == .timeout)
            #expect(error.message.contains("pool db/alice"))
            #expect(error.message.contains("1 of 1 connections in use"))
            #expect(pool.stats.timeouts == 1)
            pool.release(held)
        }
    }

    @Test func failingConnectsSurfaceTheLastConnectErrorAtTheTimeout() async throws {
        let failure = ConnectError(reason: .auth, message: "password authentication failed for user \"alice\"")
        let observer = RecordingObserver()
        let pool = self.makePool(
            Self.configuration(minSize: 1, poolTimeout: .milliseconds(200)),
            factory: FakeFactory(failure: failure),
            observer: observer
        )
        // min_size makes the first attempt, even before run() starts; once it failed, connects back off until one
        // succeeds.
        pool.start()
        try await withRunningPool(pool) {
            await observer.wait(for: 1, \.isConnectFailed)
            let result = Completion<Result<FakeConnection, PoolError>>()
            pool.lease { result($0) }
            self.clock.advance(by: .milliseconds(200))
            guard case .failure(let error) = await result.value else {
                Issue.record("the lease must fail")
                return
            }
            #expect(error.code == .connectFailed)
            #expect(error.connectError == failure)
            #expect(error.message.contains("password authentication failed"))
            #expect(pool.stats.connectionErrors[.auth, default: 0] >= 1)
        }
    }

    @Test func aFailedConnectIsRetriedWhenTheBackoffEnds() async throws {
        let factory = FakeFactory(failure: ConnectError(reason: .connect, message: "refused"), failures: 1)
        let observer = RecordingObserver()
        var configuration = Self.configuration(minSize: 1)
        configuration.connectBackoffInitial = .seconds(1)
        let pool = self.makePool(configuration, factory: factory, observer: observer)
        let start = self.clock.now
        pool.start()
        try await withRunningPool(pool) {
            await observer.wait(for: 1, \.isConnectFailed)
            // The only timer is the retry: equal jitter puts it between half the delay and the delay.
            let retryAt = await self.clock.waitForSleep()
            #expect(retryAt >= start + .milliseconds(500) && retryAt <= start + .seconds(1))
            self.clock.advance(to: retryAt - .nanoseconds(1))
            #expect(factory.attempts == 1)
            self.clock.advance(to: retryAt)
            await observer.wait(for: 1, \.isConnected)
            #expect(factory.attempts == 2)
            #expect(pool.stats.idle == 1)
        }
    }

    @Test func idleTimeoutClosesAConnectionAboveMinSize() async throws {
        let observer = RecordingObserver()
        let pool = self.makePool(Self.configuration(idleTimeout: .seconds(60)), observer: observer)
        try await withRunningPool(pool) {
            let lease = try await pool.lease()
            pool.release(lease)
            self.clock.advance(by: .seconds(59))
            #expect(!lease.isClosed)
            self.clock.advance(by: .seconds(1))
            await lease.connection.waitUntilClosed()
            #expect(pool.stats.closed[.idle] == 1)
            #expect(pool.stats.open == 0)
        }
    }

    @Test func leakThresholdIsReportedOncePerLease() async throws {
        let observer = RecordingObserver()
        let pool = self.makePool(Self.configuration(leakThreshold: .seconds(30)), observer: observer)
        try await withRunningPool(pool) {
            let lease = try await pool.lease()
            self.clock.advance(by: .seconds(30))
            await observer.wait(for: 1, \.isLeakSuspected)
            #expect(observer.observations.contains(.leakSuspected(heldFor: .seconds(30))))
            self.clock.advance(by: .seconds(60))
            pool.release(lease)
            #expect(pool.stats.leaksSuspected == 1)
        }
    }

    @Test func brokenConnectionIsClosedAndReplaced() async throws {
        let observer = RecordingObserver()
        let pool = self.makePool(Self.configuration(poolSize: 1, minSize: 1), observer: observer)
        pool.start()
        try await withRunningPool(pool) {
            await observer.waitForGauges { $0.idle == 1 }
            let first = try await pool.lease()
            pool.discard(first, reason: .broken)
            #expect(first.isClosed)
            let second = try await pool.lease()
            #expect(second.id != first.id)
            #expect(pool.stats.closed[.error] == 1)
            #expect(pool.stats.connectionErrors[.broken] == 1)
            pool.release(second)
        }
    }

    @Test func failedPrePingGivesTheClientAnotherConnection() async throws {
        var config = Self.configuration(poolSize: 1)
        config.prePing = true
        config.prePingDelay = .zero
        let pool = self.makePool(config)
        try await withRunningPool(pool) {
            let first = try await pool.lease()
            pool.release(first)
            first.breakIt()
            // Idle for longer than prePingDelay, so the next lease pings it.
            self.clock.advance(by: .milliseconds(1))
            let second = try await pool.lease()
            #expect(second.id != first.id)
            #expect(first.isClosed)
            #expect(pool.stats.closed[.pingFailed] == 1)
            pool.release(second)
        }
    }

    @Test func shutdownWaitsForLeasesToComeBack() async throws {
        let pool = self.makePool()
        try await withRunningPool(pool) {
            let leased = try await pool.lease()
            let idle = try await pool.lease()
            pool.release(idle)
            let finished = Completion<Void>()
            async let shutdown: Void = {
                await pool.shutdown(drainTimeout: .seconds(30))
                finished(())
            }()
            await idle.connection.waitUntilClosed()
            do {
                _ = try await pool.lease()
                Issue.record("a shutting down pool hands out nothing")
            } catch let error as PoolError {
                #expect(error.code == .shuttingDown)
            }
            // The drain timeout is on the manual clock, which does not move.
            #expect(finished.current == nil)
            #expect(!leased.isClosed)
            pool.release(leased)
            await shutdown
            #expect(leased.isClosed)
            #expect(pool.stats.closed[.shutdown] == 2)
        }
    }

    @Test func shutdownClosesLeasesAfterTheDrainTimeout() async throws {
        let pool = self.makePool()
        try await withRunningPool(pool) {
            let leased = try await pool.lease()
            let drainEnds = self.clock.now + .seconds(20)
            async let shutdown: Void = pool.shutdown(drainTimeout: .seconds(20))
            await self.clock.waitForSleep { $0 == drainEnds }
            #expect(!leased.isClosed)
            self.clock.advance(to: drainEnds)
            await shutdown
            #expect(leased.isClosed)
            #expect(pool.stats.open == 0)
            pool.release(leased)  // too late: ignored
            #expect(pool.stats.closed[.shutdown] == 1)
        }
    }

    @Test func cancellingRunStopsThePoolAndLeavesNothingRunning() async throws {
        let factory = FakeFactory()
        let pool = self.makePool(Self.configuration(poolSize: 1, idleTimeout: .seconds(60)), factory: factory)
        let held = Completion<Result<FakeConnection, PoolError>>()
        let waiter = Completion<Result<FakeConnection, PoolError>>()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await pool.run() }
            pool.lease { held($0) }
            _ = await held.value
            pool.lease { waiter($0) }
            group.cancelAll()
        }
        // run() has returned: the waiter failed, the connection is closed, no timer sleeps.
        guard case .failure(let error) = waiter.current else {
            Issue.record("the waiter must fail when the pool stops")
            return
        }
        #expect(error.code == .shuttingDown)
        #expect(factory.made.allSatisfy { $0.isClosed })
        #expect(pool.stats.open == 0)
        #expect(self.clock.sleeperCount == 0)
        // Shutting down a stopped pool returns at once.
        await pool.shutdown(drainTimeout: .seconds(1))
    }

    @Test func connectsAskedForBeforeACancelledRunStillSettle() async throws {
        let factory = FakeFactory()
        let pool = self.makePool(Self.configuration(minSize: 2), factory: factory)
        pool.start()
        let run = Task { await pool.run() }
        run.cancel()
        await run.value
        // Both connects ran (in a cancelled task) and their connections were closed, so shutdown is complete.
        await pool.shutdown(drainTimeout: .seconds(1))
        #expect(factory.attempts == 2)
        #expect(factory.made.allSatisfy { $0.isClosed })
        #expect(pool.stats.open == 0 && pool.stats.connecting == 0)
    }

    @Test func cancellingTheTaskRemovesTheWaiter() async throws {
        let observer = RecordingObserver()
        let pool = self.makePool(Self.configuration(poolSize: 1), observer: observer)
        try await withRunningPool(pool) {
            let held = try await pool.lease()
            let waiter = Task { try await pool.lease() }
            await observer.waitForGauges { $0.waiting == 1 }
            waiter.cancel()
            do {
                _ = try await waiter.value
                Issue.record("the cancelled lease must fail")
            } catch let error as PoolError {
                #expect(error.code == .cancelled)
            }
            #expect(pool.stats.waiting == 0)
            // The connection goes back to the pool, not to the cancelled waiter.
            pool.release(held)
            #expect(pool.stats.idle == 1)
        }
    }

    @Test func alreadyCancelledTaskDoesNotWait() async throws {
        let pool = self.makePool(Self.configuration(poolSize: 1))
        try await withRunningPool(pool) {
            let held = try await pool.lease()
            let waiter = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await pool.lease()
            }
            await #expect(throws: PoolError.self) { try await waiter.value }
            #expect(pool.stats.waiting == 0)
            pool.release(held)
        }
    }

    @Test func callbackLeaseCanBeCancelled() async throws {
        let pool = self.makePool(Self.configuration(poolSize: 1))
        try await withRunningPool(pool) {
            let held = try await pool.lease()
            let result = Completion<Result<FakeConnection, PoolError>>()
            let request = pool.lease { result($0) }
            #expect(pool.stats.waiting == 1)
            pool.cancel(request)
            guard case .failure(let error) = result.current else {
                Issue.record("the completion must have been called with a failure")
                return
            }
            #expect(error.code == .cancelled)
            pool.release(held)
        }
    }

    @Test func reconfigureGrowsThePoolForWaiters() async throws {
        let pool = self.makePool(Self.configuration(poolSize: 1))
        try await withRunningPool(pool) {
            let held = try await pool.lease()
            let result = Completion<Result<FakeConnection, PoolError>>()
            let request = pool.lease { result($0) }
            #expect(pool.stats.waiting == 1)
            pool.reconfigure(Self.configuration(poolSize: 2))
            let second = try await result.value.get()
            #expect(second.id != held.id)
            #expect(pool.configuration.poolSize == 2)
            pool.release(held)
            pool.release(second, lease: request)
            #expect(pool.stats.checkedOut == 0)
        }
    }

    @Test func observerSeesTheLifecycle() async throws {
        let observer = RecordingObserver()
        let pool = self.makePool(observer: observer)
        try await withRunningPool(pool) {
            let connection = try await pool.lease()
            pool.release(connection)
        }
        let observations = observer.observations
        #expect(observations.contains { $0.isConnected })
        #expect(observations.contains { $0.isLeased })
        #expect(observations.contains { if case .returned = $0 { true } else { false } })
        #expect(observations.contains(.closed(.shutdown)))
        #expect(observer.gauges == pool.stats.gauges)
    }

    @Test func theObserversGaugesFollowEveryEvent() async throws {
        let observer = RecordingObserver()
        let pool = self.makePool(Self.configuration(poolSize: 1), observer: observer)
        try await withRunningPool(pool) {
            let connection = try await pool.lease()
            #expect(observer.gauges == PoolGaugeValues(used: 1, checkedOut: 1))
            let waiter = Task { try await pool.lease() }
            await observer.waitForGauges { $0.waiting == 1 }
            pool.release(connection)
            let second = try await waiter.value
            #expect(observer.gauges == PoolGaugeValues(used: 1, checkedOut: 1))
            pool.release(second)
            #expect(observer.gauges == PoolGaugeValues(idle: 1))
        }
        #expect(observer.gauges == pool.stats.gauges)
    }
}
