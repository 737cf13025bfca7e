import ConnectionPool
import PoolCore
import Synchronization
import Testing

@Suite struct ConnectionPoolTests {
    static func configuration(
        poolSize: Int = 2,
        minSize: Int = 0,
        maxOverflow: Int = 0,
        poolTimeout: Duration = .seconds(10)
    ) -> PoolConfiguration {
        PoolConfiguration(
            poolSize: poolSize,
            minSize: minSize,
            maxOverflow: maxOverflow,
            poolTimeout: poolTimeout,
            prePing: false,
            idleTimeout: nil
        )
    }

    @Test func manyConcurrentLeasesShareAtMostPoolSizePlusOverflow() async throws {
        let factory = FakeFactory()
        let observer = RecordingObserver()
        let pool = ConnectionPool(
            key: testKey,
            configuration: Self.configuration(poolSize: 3, maxOverflow: 2),
            factory: factory,
            observer: observer
        )
        let holders = Locked((now: 0, most: 0))
        let leasedIDs = Locked<Set<ConnectionID>>([])
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
                    await Task.yield()
                    holders.withLock { $0.now -= 1 }
                    leasedIDs.withLock { _ = $0.remove(connection.id) }
                    pool.release(connection)
                }
            }
            try await group.waitForAll()
        }
        #expect(holders.withLock { $0.most } <= 5)
        // Every snapshot the observer saw respects the limit (the factory cannot tell: a close runs after the
        // pool has already counted the connection as gone).
        #expect(observer.statsHistory.allSatisfy { $0.open + $0.connecting <= 5 })
        let stats = pool.stats
        #expect(stats.checkouts == 200)
        #expect(stats.checkedOut == 0)
        #expect(stats.waiting == 0)
        #expect(stats.open <= 5)
        // Idle connections beyond pool_size were closed as overflow.
        #expect(stats.idle <= 3)
        await eventually("stats delivered") { observer.lastStats == pool.stats }
        #expect(observer.observations.filter { if case .leased = $0 { true } else { false } }.count == 200)
        await pool.shutdown(drainTimeout: .seconds(1))
        #expect(factory.made.allSatisfy { $0.isClosed })
    }

    @Test func waiterGetsTheTimeoutError() async throws {
        let pool = ConnectionPool(
            key: testKey,
            configuration: Self.configuration(poolSize: 1),
            factory: FakeFactory()
        )
        let held = try await pool.lease()
        // Short only now, so that a slow first connect on a busy machine cannot time out.
        pool.reconfigure(Self.configuration(poolSize: 1, poolTimeout: .milliseconds(50)))
        do {
            _ = try await pool.lease()
            Issue.record("the second lease must time out")
        } catch {
            #expect(error.code == .timeout)
            #expect(error.message.contains("pool db/alice"))
            #expect(error.message.contains("1 of 1 connections in use"))
        }
        #expect(pool.stats.timeouts == 1)
        pool.release(held)
        await pool.shutdown(drainTimeout: .seconds(1))
    }

    @Test func failingConnectsSurfaceTheLastConnectErrorAtTheTimeout() async throws {
        let failure = ConnectError(reason: .auth, message: "password authentication failed for user \"alice\"")
        let pool = ConnectionPool(
            key: testKey,
            configuration: Self.configuration(minSize: 1, poolTimeout: .milliseconds(200)),
            factory: FakeFactory(failure: failure)
        )
        // min_size makes the first attempt; once it failed, connects back off until one succeeds.
        pool.start()
        await eventually("a connect failed") { pool.stats.connectionErrors[.auth, default: 0] >= 1 }
        do {
            _ = try await pool.lease()
            Issue.record("the lease must fail")
        } catch {
            #expect(error.code == .connectFailed)
            #expect(error.connectError == failure)
            #expect(error.message.contains("password authentication failed"))
        }
        #expect(pool.stats.connectionErrors[.auth, default: 0] >= 1)
        await pool.shutdown(drainTimeout: .seconds(1))
    }

    @Test func brokenConnectionIsClosedAndReplaced() async throws {
        let factory = FakeFactory()
        let pool = ConnectionPool(
            key: testKey,
            configuration: Self.configuration(poolSize: 1, minSize: 1),
            factory: factory
        )
        pool.start()
        await eventually("min_size opened") { pool.stats.idle == 1 }
        let first = try await pool.lease()
        pool.discard(first, reason: .broken)
        #expect(first.isClosed)
        let second = try await pool.lease()
        #expect(second.id != first.id)
        #expect(pool.stats.closed[.error] == 1)
        #expect(pool.stats.connectionErrors[.broken] == 1)
        pool.release(second)
        await pool.shutdown(drainTimeout: .seconds(1))
    }

    @Test func failedPrePingGivesTheClientAnotherConnection() async throws {
        var config = Self.configuration(poolSize: 1)
        config.prePing = true
        config.prePingDelay = .zero
        let pool = ConnectionPool(key: testKey, configuration: config, factory: FakeFactory())
        let first = try await pool.lease()
        pool.release(first)
        first.breakIt()
        try await Task.sleep(for: .milliseconds(2))
        let second = try await pool.lease()
        #expect(second.id != first.id)
        #expect(first.isClosed)
        #expect(pool.stats.closed[.pingFailed] == 1)
        pool.release(second)
        await pool.shutdown(drainTimeout: .seconds(1))
    }

    @Test func shutdownWaitsForLeasesToComeBack() async throws {
        let factory = FakeFactory()
        let pool = ConnectionPool(key: testKey, configuration: Self.configuration(), factory: factory)
        let leased = try await pool.lease()
        let idle = try await pool.lease()
        pool.release(idle)
        let finished = Locked(false)
        let shutdown = Task {
            await pool.shutdown(drainTimeout: .seconds(30))
            finished.withLock { $0 = true }
        }
        await eventually("idle closed") { idle.isClosed }
        do {
            _ = try await pool.lease()
            Issue.record("a shutting down pool hands out nothing")
        } catch {
            #expect(error.code == .shuttingDown)
        }
        #expect(!finished.withLock { $0 })
        #expect(!leased.isClosed)
        pool.release(leased)
        await shutdown.value
        #expect(leased.isClosed)
        #expect(pool.stats.closed[.shutdown] == 2)
    }

    @Test func shutdownClosesLeasesAfterTheDrainTimeout() async throws {
        let pool = ConnectionPool(key: testKey, configuration: Self.configuration(), factory: FakeFactory())
        let leased = try await pool.lease()
        await pool.shutdown(drainTimeout: .milliseconds(20))
        #expect(leased.isClosed)
        #expect(pool.stats.open == 0)
        pool.release(leased)  // too late: ignored
        #expect(pool.stats.closed[.shutdown] == 1)
    }

    @Test func cancellingTheTaskRemovesTheWaiter() async throws {
        let pool = ConnectionPool(key: testKey, configuration: Self.configuration(poolSize: 1), factory: FakeFactory())
        let held = try await pool.lease()
        let waiter = Task { try await pool.lease() }
        await eventually("waiting") { pool.stats.waiting == 1 }
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
        await pool.shutdown(drainTimeout: .seconds(1))
    }

    @Test func alreadyCancelledTaskDoesNotWait() async throws {
        let pool = ConnectionPool(key: testKey, configuration: Self.configuration(poolSize: 1), factory: FakeFactory())
        let held = try await pool.lease()
        let waiter = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await pool.lease()
        }
        await #expect(throws: PoolError.self) { try await waiter.value }
        #expect(pool.stats.waiting == 0)
        pool.release(held)
        await pool.shutdown(drainTimeout: .seconds(1))
    }

    @Test func callbackLeaseCanBeCancelled() async throws {
        let pool = ConnectionPool(key: testKey, configuration: Self.configuration(poolSize: 1), factory: FakeFactory())
        let held = try await pool.lease()
        let result = Locked<Result<FakeConnection, PoolError>?>(nil)
        let request = pool.lease { outcome in result.withLock { $0 = outcome } }
        #expect(pool.stats.waiting == 1)
        pool.cancel(request)
        guard case .failure(let error) = result.withLock({ $0 }) else {
            Issue.record("the completion must have been called with a failure")
            return
        }
        #expect(error.code == .cancelled)
        pool.release(held)
        await pool.shutdown(drainTimeout: .seconds(1))
    }

    @Test func reconfigureGrowsThePoolForWaiters() async throws {
        let pool = ConnectionPool(key: testKey, configuration: Self.configuration(poolSize: 1), factory: FakeFactory())
        let held = try await pool.lease()
        let waiter = Task { try await pool.lease() }
        await eventually("waiting") { pool.stats.waiting == 1 }
        pool.reconfigure(Self.configuration(poolSize: 2))
        let second = try await waiter.value
        #expect(second.id != held.id)
        #expect(pool.configuration.poolSize == 2)
        pool.release(held)
        pool.release(second)
        await pool.shutdown(drainTimeout: .seconds(1))
    }

    @Test func observerSeesTheLifecycle() async throws {
        let observer = RecordingObserver()
        let pool = ConnectionPool(
            key: testKey,
            configuration: Self.configuration(),
            factory: FakeFactory(),
            observer: observer
        )
        let connection = try await pool.lease()
        pool.release(connection)
        await pool.shutdown(drainTimeout: .seconds(1))
        let observations = observer.observations
        #expect(observations.contains { if case .connected = $0 { true } else { false } })
        #expect(observations.contains { if case .leased = $0 { true } else { false } })
        #expect(observations.contains { if case .returned = $0 { true } else { false } })
        #expect(observations.contains(.closed(.shutdown)))
        #expect(observer.lastStats == pool.stats)
    }
}
