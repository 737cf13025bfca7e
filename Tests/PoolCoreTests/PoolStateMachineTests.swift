import Testing

@testable import PoolCore

/// Exact actions for every rule. Timer ids are deterministic: they count up from 0 in the order timers are asked for.
@Suite struct PoolStateMachineTests {
    // MARK: pool_size and max_overflow

    @Test func poolSizePlusOverflowBoundsConnectionsAndTheRestWait() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 2, maxOverflow: 1))
        let c = pool.clock
        #expect(
            pool.request(0) == [
                .scheduleTimer(.init(id: .init(0), kind: .requestTimeout(R(0)), deadline: c.at(.seconds(30)))),
                .createConnection(C(0)),
            ]
        )
        #expect(
            pool.request(1) == [
                .scheduleTimer(.init(id: .init(1), kind: .requestTimeout(R(1)), deadline: c.at(.seconds(30)))),
                .createConnection(C(1)),
            ]
        )
        // The overflow connection.
        #expect(
            pool.request(2) == [
                .scheduleTimer(.init(id: .init(2), kind: .requestTimeout(R(2)), deadline: c.at(.seconds(30)))),
                .createConnection(C(2)),
            ]
        )
        // pool_size + max_overflow reached: wait.
        #expect(
            pool.request(3) == [
                .scheduleTimer(.init(id: .init(3), kind: .requestTimeout(R(3)), deadline: c.at(.seconds(30))))
            ]
        )
        #expect(pool.stats.connecting == 3)
        #expect(pool.stats.waiting == 4)

        pool.advance(by: .seconds(1))
        #expect(
            pool.establish(0) == [
                .observe(.connected(took: .seconds(1))), .cancelTimer(.init(0)), .lease(C(0), to: R(0)),
                .observe(.leased(waited: .seconds(1))),
            ]
        )
        _ = pool.establish(1)
        _ = pool.establish(2)
        #expect(pool.stats.checkedOut == 3)
        #expect(pool.stats.overflow == 1)
        #expect(pool.stats.waiting == 1)
    }

    @Test func overflowConnectionReturnedWhilePoolSizeAreIdleIsClosed() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 2, maxOverflow: 1))
        pool.leaseFresh(3)
        #expect(pool.stats.overflow == 1)
        pool.advance(by: .seconds(1))
        #expect(pool.release(1) == [.observe(.returned(heldFor: .seconds(1)))])
        #expect(pool.release(2) == [.observe(.returned(heldFor: .seconds(1)))])
        #expect(pool.stats.idle == 2)
        #expect(
            pool.release(0) == [
                .observe(.returned(heldFor: .seconds(1))), .close(C(0), .overflow), .observe(.closed(.overflow)),
            ]
        )
        #expect(pool.stats.idle == 2)
        #expect(pool.stats.overflow == 0)
        #expect(pool.stats.closed[.overflow] == 1)
    }

    // MARK: min_size

    @Test func minSizeIsOpenedAtStartAndReopenedAfterAClose() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 3, minSize: 2))
        #expect(pool.send(.start) == [.createConnection(C(0)), .createConnection(C(1))])
        #expect(pool.establish(0) == [.observe(.connected(took: .zero))])
        #expect(pool.establish(1) == [.observe(.connected(took: .zero))])
        #expect(pool.stats.idle == 2)
        #expect(
            pool.send(.connectionBroken(C(0), lease: nil, .broken)) == [
                .observe(.connectionErrored(.broken)), .close(C(0), .error), .observe(.closed(.error)),
                .createConnection(C(2)),
            ]
        )
    }

    @Test func aRetiredConnectionIsClosedForItsReasonWithoutAnError() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        pool.leaseFresh(1)
        _ = pool.request(1)
        let retired = pool.send(.connectionRetired(C(0), lease: R(0), .dirty))
        #expect(
            retired == [
                .observe(.returned(heldFor: .zero)), .close(C(0), .dirty), .observe(.closed(.dirty)),
                .createConnection(C(1)),
            ]
        )
        #expect(pool.stats.closed[.dirty] == 1)
        #expect(pool.stats.connectionErrors.values.allSatisfy { $0 == 0 })
        // Under another lease than the one named: a stale retirement, ignored.
        _ = pool.establish(1)
        #expect(pool.send(.connectionRetired(C(1), lease: R(0), .resetFailed)) == [.observe(.staleRelease)])
    }

    @Test func minSizeIsNeverAbovePoolSize() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 2, minSize: 5, maxOverflow: 3))
        #expect(pool.send(.start) == [.createConnection(C(0)), .createConnection(C(1))])
    }

    // MARK: pool_timeout

    @Test func waiterFailsAtPoolTimeoutWithAMessageThatNamesPoolUsageAndSetting() throws {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        pool.leaseFresh(1)
        let timer = PoolTimer(id: .init(1), kind: .requestTimeout(R(1)), deadline: pool.clock.at(.seconds(30)))
        #expect(pool.request(1) == [.scheduleTimer(timer)])

        // Woken early: nothing fails, the timer is asked for again.
        pool.advance(by: .seconds(29))
        #expect(pool.send(.timerFired(timer)) == [.scheduleTimer(timer)])

        let actions = pool.fire(timer)
        let error = try #require(actions.failure(of: R(1)))
        #expect(actions == [.failRequest(R(1), error), .observe(.timedOut)])
        #expect(error.code == .timeout)
        #expect(
            error.message
                == "pool_timeout: no server connection for pool db/alice within 30s: 1 of 1 connections in use "
                + "(pool_size 1 + max_overflow 0), 1 client waiting; raise pool_size or max_overflow, or "
                + "pool_timeout if such waits are expected"
        )
        #expect(pool.stats.waiting == 0)
        #expect(pool.stats.timeouts == 1)
    }

    // MARK: pool_recycle

    @Test func oldConnectionIsClosedWhenReturnedNeverWhileLeased() {
        var config = PoolHarness.configuration(poolSize: 2)
        config.poolRecycle = .seconds(60)
        var pool = PoolHarness(config)
        pool.leaseFresh(1)
        pool.advance(by: .seconds(120))
        // Other traffic while C0 is older than pool_recycle: C0 is left alone.
        #expect(
            pool.request(1) == [
                .scheduleTimer(
                    .init(id: .init(1), kind: .requestTimeout(R(1)), deadline: pool.clock.at(.seconds(150)))
                ),
                .createConnection(C(1)),
            ]
        )
        #expect(pool.stats.checkedOut == 1)
        #expect(
            pool.release(0) == [
                .observe(.returned(heldFor: .seconds(120))), .close(C(0), .recycle), .observe(.closed(.recycle)),
            ]
        )
    }

    @Test func oldIdleConnectionIsClosedWhenItWouldBeHandedOut() {
        var config = PoolHarness.configuration(poolSize: 2)
        config.poolRecycle = .seconds(60)
        var pool = PoolHarness(config)
        pool.leaseFresh(1)
        _ = pool.release(0)
        pool.advance(by: .seconds(61))
        #expect(
            pool.request(1) == [
                .close(C(0), .recycle), .observe(.closed(.recycle)),
                .scheduleTimer(.init(id: .init(1), kind: .requestTimeout(R(1)), deadline: pool.clock.at(.seconds(91)))),
                .createConnection(C(1)),
            ]
        )
    }

    // MARK: reconnect

    /// A changed server address (or RECONNECT): idle connections close now, leased ones when given back, connects in
    /// flight when they complete; connections opened afterwards are fresh.
    @Test func reconnectRetiresEveryConnectionOpenedBefore() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 3))
        pool.leaseFresh(2)
        _ = pool.release(1)
        _ = pool.request(2)  // C1 is idle, so R2 gets it
        _ = pool.release(1)
        #expect(pool.stats.idle == 1 && pool.stats.checkedOut == 1)
        _ = pool.request(3)
        _ = pool.request(4)  // C1 to R3; R4 makes the pool open C2
        let reconnect = pool.send(.reconnect)
        #expect(reconnect.isEmpty, "nothing idle: \(reconnect)")
        // The connect that was in flight is stale too: closed once it is up, and R4 gets a new one.
        let established = pool.establish(2)
        #expect(established.contains(.close(C(2), .recycle)))
        #expect(established.contains(.createConnection(C(3))))
        #expect(pool.release(0).contains(.close(C(0), .recycle)))
        #expect(pool.release(1).contains(.close(C(1), .recycle)))
        // The fresh connection serves and stays.
        let fresh = pool.establish(3)
        #expect(fresh.contains(.lease(C(3), to: R(4))))
        #expect(!pool.release(3).contains(.close(C(3), .recycle)))
        #expect(pool.stats.idle == 1)
    }

    /// What `SHOW SERVERS` shows as `close_needed` and `WAIT_CLOSE` waits for: the connections a reconnect marked.
    @Test func inspectionMarksTheConnectionsAReconnectRetires() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 3))
        pool.leaseFresh(2)
        #expect(pool.machine.inspect().closeNeededCount == 0)
        _ = pool.send(.reconnect)
        #expect(pool.machine.inspect().connections.map(\.closeNeeded) == [true, true])
        _ = pool.release(0)
        #expect(pool.machine.inspect().closeNeededCount == 1)
        _ = pool.release(1)
        _ = pool.request(2)
        _ = pool.establish(2)
        let inspection = pool.machine.inspect()
        #expect(inspection.closeNeededCount == 0 && inspection.connections.map(\.id) == [C(2)])
    }

    @Test func reconnectClosesIdleConnectionsAtOnce() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 2))
        pool.leaseFresh(2)
        _ = pool.release(0)
        _ = pool.release(1)
        let actions = pool.send(.reconnect)
        #expect(actions.contains(.close(C(0), .recycle)) && actions.contains(.close(C(1), .recycle)))
        #expect(pool.stats.idle == 0)
    }

    // MARK: max_db_connections

    /// No room under the database's limit: the connect is not made, nothing more is asked for until there is room,
    /// and the waiter keeps waiting; room again, and the pool opens what it still needs.
    @Test func aDeferredConnectWaitsForRoom() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 3))
        _ = pool.request(0)
        let deferred = pool.send(.connectDeferred(C(0)))
        #expect(deferred.isEmpty, "\(deferred)")
        #expect(pool.stats.connecting == 0 && pool.stats.waiting == 1 && pool.machine.connectsDeferred)
        let second = pool.request(1)
        #expect(!second.contains { if case .createConnection = $0 { true } else { false } }, "\(second)")
        let permitted = pool.send(.connectPermitted)
        #expect(permitted == [.createConnection(C(1)), .createConnection(C(2))])
        #expect(!pool.machine.connectsDeferred)
        #expect(pool.establish(1).contains(.lease(C(1), to: R(0))))
    }

    @Test func aTimeoutWhileDeferredNamesMaxDBConnections() throws {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        let requested = pool.request(0)
        _ = pool.send(.connectDeferred(C(0)))
        let timer = try #require(requested.scheduledTimers.first)
        let error = try #require(pool.fire(timer).failure(of: R(0)))
        #expect(error.code == .timeout)
        #expect(error.message.contains("max_db_connections"), "\(error.message)")
    }

    /// Room for another pool of the database: the least recently used idle connection closes, and nothing is opened
    /// in its place (the room is the other pool's).
    @Test func evictionClosesTheLeastRecentlyUsedIdleConnection() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 2))
        pool.leaseFresh(2)
        _ = pool.release(1)
        pool.advance(by: .seconds(1))
        _ = pool.release(0)
        #expect(pool.send(.evictIdle) == [.close(C(1), .idle), .observe(.closed(.idle))])
        #expect(pool.stats.idle == 1)
        #expect(pool.send(.evictIdle) == [.close(C(0), .idle), .observe(.closed(.idle))])
        #expect(pool.send(.evictIdle).isEmpty)

        // Not even min_size is refilled by the eviction itself.
        var warm = PoolHarness(PoolHarness.configuration(poolSize: 2, minSize: 1))
        #expect(warm.send(.start) == [.createConnection(C(0))])
        _ = warm.establish(0)
        #expect(warm.send(.evictIdle) == [.close(C(0), .idle), .observe(.closed(.idle))])
    }

    // MARK: pre_ping

    @Test func recentlyUsedConnectionIsHandedOutWithoutPing() {
        var config = PoolHarness.configuration()
        config.prePing = true
        config.prePingDelay = .seconds(1)
        var pool = PoolHarness(config)
        pool.leaseFresh(1)
        _ = pool.release(0)
        pool.advance(by: .seconds(1))
        #expect(pool.request(1) == [.lease(C(0), to: R(1)), .observe(.leased(waited: .zero))])
    }

    @Test func connectionUnusedLongerThanDelayIsPingedThenHandedOut() {
        var config = PoolHarness.configuration()
        config.prePing = true
        config.prePingDelay = .seconds(1)
        var pool = PoolHarness(config)
        pool.leaseFresh(1)
        _ = pool.release(0)
        pool.advance(by: .seconds(3))
        let timer = PoolTimer(id: .init(1), kind: .requestTimeout(R(1)), deadline: pool.clock.at(.seconds(33)))
        #expect(pool.request(1) == [.scheduleTimer(timer), .ping(C(0), for: R(1))])
        #expect(pool.stats.used == 1)
        #expect(pool.stats.waiting == 1)
        #expect(pool.stats.checkedOut == 0)
        pool.advance(by: .milliseconds(10))
        #expect(
            pool.send(.pingSucceeded(C(0))) == [
                .cancelTimer(timer.id), .lease(C(0), to: R(1)), .observe(.leased(waited: .milliseconds(10))),
            ]
        )
    }

    @Test func failedPingClosesAndTheSameRequestGetsTheNextIdleConnection() {
        var config = PoolHarness.configuration(poolSize: 2)
        config.prePing = true
        config.prePingDelay = .seconds(1)
        var pool = PoolHarness(config)
        pool.leaseFresh(2)
        _ = pool.release(0)
        pool.advance(by: .seconds(1))
        _ = pool.release(1)
        pool.advance(by: .seconds(10))
        // Most recently used first.
        let timer = PoolTimer(id: .init(2), kind: .requestTimeout(R(2)), deadline: pool.clock.at(.seconds(41)))
        #expect(pool.request(2) == [.scheduleTimer(timer), .ping(C(1), for: R(2))])
        #expect(
            pool.send(.pingFailed(C(1))) == [
                .observe(.connectionErrored(.broken)), .close(C(1), .pingFailed), .observe(.closed(.pingFailed)),
                .ping(C(0), for: R(2)),
            ]
        )
    }

    @Test func failedPingKeepsTheRequestsPlaceForAFreshConnection() {
        var config = PoolHarness.configuration(poolSize: 1)
        config.prePing = true
        config.prePingDelay = .seconds(1)
        var pool = PoolHarness(config)
        pool.leaseFresh(1)
        _ = pool.release(0)
        pool.advance(by: .seconds(5))
        #expect(
            pool.request(1) == [
                .scheduleTimer(.init(id: .init(1), kind: .requestTimeout(R(1)), deadline: pool.clock.at(.seconds(35)))),
                .ping(C(0), for: R(1)),
            ]
        )
        // A later request waits behind R1.
        #expect(
            pool.request(2) == [
                .scheduleTimer(.init(id: .init(2), kind: .requestTimeout(R(2)), deadline: pool.clock.at(.seconds(35))))
            ]
        )
        #expect(
            pool.send(.pingFailed(C(0))) == [
                .observe(.connectionErrored(.broken)), .close(C(0), .pingFailed), .observe(.closed(.pingFailed)),
                .createConnection(C(1)),
            ]
        )
        #expect(
            pool.establish(1) == [
                .observe(.connected(took: .zero)), .cancelTimer(.init(1)), .lease(C(1), to: R(1)),
                .observe(.leased(waited: .zero)),
            ]
        )
        #expect(pool.stats.waiting == 1)
    }

    // MARK: idle_timeout

    @Test func idleConnectionsAboveMinSizeCloseAfterIdleTimeout() {
        var config = PoolHarness.configuration(poolSize: 3, minSize: 1)
        config.idleTimeout = .seconds(10)
        var pool = PoolHarness(config)
        let c = pool.clock
        #expect(pool.send(.start) == [.createConnection(C(0))])
        // One sweep for the pool, due when the least recently used connection's idle_timeout ends.
        let sweep0 = PoolTimer(id: .init(0), kind: .idleTimeout, deadline: c.at(.seconds(10)))
        #expect(pool.establish(0) == [.observe(.connected(took: .zero)), .scheduleTimer(sweep0)])
        // A checkout and a return schedule and cancel nothing while a sweep is pending.
        #expect(pool.request(0) == [.lease(C(0), to: R(0)), .observe(.leased(waited: .zero))])
        #expect(
            pool.request(1) == [
                .scheduleTimer(.init(id: .init(1), kind: .requestTimeout(R(1)), deadline: c.at(.seconds(30)))),
                .createConnection(C(1)),
            ]
        )
        _ = pool.establish(1)
        pool.advance(by: .seconds(1))
        #expect(pool.release(0) == [.observe(.returned(heldFor: .seconds(1)))])
        pool.advance(by: .seconds(1))
        #expect(pool.release(1) == [.observe(.returned(heldFor: .seconds(2)))])

        // Used since: nothing is due yet; the sweep comes back when C0's idle_timeout ends.
        let sweep1 = PoolTimer(id: .init(2), kind: .idleTimeout, deadline: c.at(.seconds(11)))
        #expect(pool.fire(sweep0) == [.scheduleTimer(sweep1)])
        let sweep2 = PoolTimer(id: .init(3), kind: .idleTimeout, deadline: c.at(.seconds(12)))
        #expect(pool.fire(sweep1) == [.close(C(0), .idle), .observe(.closed(.idle)), .scheduleTimer(sweep2)])
        // The last one is min_size: kept, and looked at again later.
        #expect(
            pool.fire(sweep2) == [
                .scheduleTimer(.init(id: .init(4), kind: .idleTimeout, deadline: c.at(.seconds(22))))
            ]
        )
        #expect(pool.stats.idle == 1)
    }

    @Test func aSweepThatFindsSeveralDueClosesThemAll() {
        var config = PoolHarness.configuration(poolSize: 3)
        config.idleTimeout = .seconds(10)
        var pool = PoolHarness(config)
        pool.leaseFresh(3)
        let sweep = pool.release(0).scheduledTimers
        #expect(sweep.count == 1)
        pool.advance(by: .seconds(1))
        #expect(pool.release(1).scheduledTimers.isEmpty)
        #expect(pool.release(2).scheduledTimers.isEmpty)
        pool.advance(by: .seconds(30))
        #expect(
            pool.send(.timerFired(sweep[0])) == [
                .close(C(0), .idle), .observe(.closed(.idle)), .close(C(1), .idle), .observe(.closed(.idle)),
                .close(C(2), .idle), .observe(.closed(.idle)),
            ]
        )
        #expect(pool.stats.open == 0)
    }

    // MARK: leak_threshold

    @Test func leaseHeldLongerThanLeakThresholdIsReportedOncePerLease() {
        var config = PoolHarness.configuration()
        config.leakThreshold = .seconds(5)
        var pool = PoolHarness(config)
        let c = pool.clock
        _ = pool.request(0)
        let leak0 = PoolTimer(id: .init(1), kind: .leak(C(0)), deadline: c.at(.seconds(5)))
        #expect(
            pool.establish(0) == [
                .observe(.connected(took: .zero)), .cancelTimer(.init(0)), .lease(C(0), to: R(0)),
                .observe(.leased(waited: .zero)), .scheduleTimer(leak0),
            ]
        )
        #expect(pool.fire(leak0) == [.observe(.leakSuspected(heldFor: .seconds(5)))])
        pool.advance(by: .seconds(10))
        #expect(pool.send(.timerFired(leak0)) == [])
        #expect(pool.release(0) == [.observe(.returned(heldFor: .seconds(15)))])

        let leak1 = PoolTimer(id: .init(2), kind: .leak(C(0)), deadline: c.at(.seconds(20)))
        #expect(pool.request(1) == [.lease(C(0), to: R(1)), .observe(.leased(waited: .zero)), .scheduleTimer(leak1)])
        #expect(pool.fire(leak1) == [.observe(.leakSuspected(heldFor: .seconds(5)))])
        #expect(pool.stats.leaksSuspected == 2)
    }

    @Test func leakTimerOfAReturnedLeaseIsCancelledAndHarmless() {
        var config = PoolHarness.configuration()
        config.leakThreshold = .seconds(5)
        var pool = PoolHarness(config)
        _ = pool.request(0)
        let leak0 = PoolTimer(id: .init(1), kind: .leak(C(0)), deadline: pool.clock.at(.seconds(5)))
        #expect(pool.establish(0).last == .scheduleTimer(leak0))
        pool.advance(by: .seconds(1))
        #expect(pool.release(0) == [.cancelTimer(leak0.id), .observe(.returned(heldFor: .seconds(1)))])
        #expect(pool.fire(leak0) == [])
        #expect(pool.stats.leaksSuspected == 0)
    }

    // MARK: FIFO

    @Test func returnedConnectionsGoToTheOldestWaiterAndNewRequestsQueueBehind() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        pool.leaseFresh(1)
        for index in 1...3 { _ = pool.request(index) }
        #expect(pool.release(0).contains(.lease(C(0), to: R(1))))
        #expect(pool.release(0).contains(.lease(C(0), to: R(2))))
        _ = pool.request(4)
        #expect(pool.release(0).contains(.lease(C(0), to: R(3))))
        #expect(pool.release(0).contains(.lease(C(0), to: R(4))))
        #expect(pool.stats.waiting == 0)
    }

    @Test func newConnectionGoesToTheOldestWaiter() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 2))
        pool.leaseFresh(1)
        _ = pool.request(1)  // creates C1
        _ = pool.request(2)
        _ = pool.request(3)
        #expect(pool.establish(1).contains(.lease(C(1), to: R(1))))
    }

    @Test func idleConnectionWithTheRequestsAffinityIsPreferred() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 3))
        for index in 0..<3 {
            _ = pool.request(index)
            _ = pool.send(.connectionEstablished(C(index), affinity: index == 1 ? 7 : 8))
        }
        for index in 0..<3 {
            pool.advance(by: .milliseconds(1))
            _ = pool.release(index)
        }
        // C2 is the most recently used, but C1 runs where the request does.
        #expect(pool.send(.leaseRequested(R(10), affinity: 7)).contains(.lease(C(1), to: R(10))))
        // No idle connection with affinity 7 is left: the most recently used one goes.
        #expect(pool.send(.leaseRequested(R(11), affinity: 7)).contains(.lease(C(2), to: R(11))))
        // Without an affinity: the most recently used one, as before.
        #expect(pool.send(.leaseRequested(R(12))).contains(.lease(C(0), to: R(12))))
    }

    @Test func aReturnedConnectionGoesToAYoungerWaiterWithItsAffinity() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        _ = pool.request(0)
        _ = pool.send(.connectionEstablished(C(0), affinity: 1))
        _ = pool.send(.leaseRequested(R(1), affinity: 2))
        _ = pool.send(.leaseRequested(R(2), affinity: 1))
        _ = pool.send(.leaseRequested(R(3), affinity: 1))
        #expect(pool.release(0).contains(.lease(C(0), to: R(2))))
        // A waiter without an affinity takes any connection, so it is not passed over.
        _ = pool.send(.leaseRequested(R(4)))
        #expect(pool.release(0).contains(.lease(C(0), to: R(3))))
        #expect(pool.release(0).contains(.lease(C(0), to: R(1))), "R4 came later, R1 has no rival on its loop")
        #expect(pool.release(0).contains(.lease(C(0), to: R(4))))
    }

    @Test func noWaiterIsPassedOverMoreThanTheLimit() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        _ = pool.request(0)
        _ = pool.send(.connectionEstablished(C(0), affinity: 1))
        _ = pool.send(.leaseRequested(R(1), affinity: 2))
        var next = 2
        for _ in 0..<PoolStateMachine.maxPassedOver {
            _ = pool.send(.leaseRequested(R(next), affinity: 1))
            #expect(pool.release(0).contains(.lease(C(0), to: R(next))))
            next += 1
        }
        _ = pool.send(.leaseRequested(R(next), affinity: 1))
        #expect(pool.release(0).contains(.lease(C(0), to: R(1))), "passed over enough: R1 is served")
        #expect(pool.release(0).contains(.lease(C(0), to: R(next))))
    }

    @Test func aConnectionIsOpenedWhereItsWaiterRuns() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 3))
        #expect(pool.send(.leaseRequested(R(0), affinity: 5)).contains(.createConnection(C(0), affinity: 5)))
        #expect(pool.send(.leaseRequested(R(1), affinity: 6)).contains(.createConnection(C(1), affinity: 6)))
        #expect(pool.send(.leaseRequested(R(2))).contains(.createConnection(C(2))))
    }

    // MARK: connect failures

    @Test func connectFailuresBackOffExponentiallyWithJitterUpToTheCap() throws {
        var config = PoolHarness.configuration(poolSize: 2)
        config.connectBackoffInitial = .milliseconds(100)
        config.connectBackoffMax = .seconds(1)
        var pool = PoolHarness(config, seed: 42)
        _ = pool.request(0)
        let error = ConnectError(reason: .connect, message: "connection refused")
        var delays: [Duration] = []
        var connection = 0
        for attempt in 1...7 {
            let failed = pool.send(.connectFailed(C(connection), error))
            let retry = try #require(failed.scheduledTimers.first)
            #expect(failed == [.observe(.connectFailed(.connect)), .scheduleTimer(retry)], "attempt \(attempt)")
            #expect(retry.kind == .connectRetry)
            delays.append(retry.deadline - pool.now)
            if attempt == 1 {
                // Backing off: a new request waits and opens nothing.
                #expect(
                    pool.request(1) == [
                        .scheduleTimer(
                            .init(id: .init(2), kind: .requestTimeout(R(1)), deadline: pool.now + .seconds(30))
                        )
                    ]
                )
            }
            pool.advance(by: .milliseconds(1))
            #expect(pool.send(.timerFired(retry)) == [.scheduleTimer(retry)], "early wake-up waits again")
            connection += 1
            // One attempt at a time, though two requests wait.
            #expect(pool.fire(retry) == [.createConnection(C(connection))])
        }
        let caps: [Duration] = [
            .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1),
            .seconds(1),
        ]
        for (delay, cap) in zip(delays, caps) {
            #expect(delay >= cap / 2 && delay <= cap, "\(delays)")
        }
        #expect(zip(delays, caps).contains { $0 < $1 }, "jittered")
        #expect(pool.stats.connectionErrors[.connect] == 7)

        // A success ends the failing phase; the next failure starts again from the initial delay.
        let established = pool.establish(connection)
        #expect(established.contains(.lease(C(connection), to: R(0))))
        #expect(established.last == .createConnection(C(connection + 1)))
        let failedAgain = pool.send(.connectFailed(C(connection + 1), error))
        let retry = try #require(failedAgain.scheduledTimers.first)
        #expect(retry.deadline - pool.now <= .milliseconds(100))
    }

    @Test func backoffJitterIsDeterministicPerSeed() {
        func delays(seed: UInt64) -> [Duration] {
            var pool = PoolHarness(PoolHarness.configuration(), seed: seed)
            _ = pool.request(0)
            var result: [Duration] = []
            for connection in 0..<5 {
                let failed = pool.send(.connectFailed(C(connection), ConnectError(reason: .connect, message: "x")))
                guard let retry = failed.scheduledTimers.first else { return result }
                result.append(retry.deadline - pool.now)
                _ = pool.fire(retry)
            }
            return result
        }
        #expect(delays(seed: 7).count == 5)
        #expect(delays(seed: 7) == delays(seed: 7))
        #expect(delays(seed: 7) != delays(seed: 8))
    }

    @Test func waiterKeepsWaitingThroughConnectFailuresAndGetsTheLastErrorAtItsTimeout() throws {
        var config = PoolHarness.configuration(poolSize: 1)
        config.poolTimeout = .seconds(1)
        config.connectBackoffInitial = .milliseconds(100)
        config.connectBackoffMax = .milliseconds(100)
        var pool = PoolHarness(config)
        let timeout = PoolTimer(id: .init(0), kind: .requestTimeout(R(0)), deadline: pool.clock.at(.seconds(1)))
        #expect(pool.request(0) == [.scheduleTimer(timeout), .createConnection(C(0))])

        let refused = pool.send(.connectFailed(C(0), ConnectError(reason: .connect, message: "connection refused")))
        #expect(refused.failure(of: R(0)) == nil)
        #expect(pool.fire(try #require(refused.scheduledTimers.first)) == [.createConnection(C(1))])
        let lastError = ConnectError(reason: .auth, message: "password authentication failed for user \"alice\"")
        let denied = pool.send(.connectFailed(C(1), lastError))
        #expect(denied.failure(of: R(0)) == nil)
        #expect(pool.stats.waiting == 1)

        let actions = pool.fire(timeout)
        let error = try #require(actions.failure(of: R(0)))
        #expect(actions == [.failRequest(R(0), error), .observe(.timedOut)])
        #expect(error.code == .connectFailed)
        #expect(error.connectError == lastError)
        #expect(
            error.message
                == "pool db/alice: could not open a server connection within pool_timeout (1s), 2 attempts in a "
                + "row failed; last error (auth): password authentication failed for user \"alice\""
        )
        #expect(pool.stats.connectionErrors[.auth] == 1)
        #expect(pool.stats.connectionErrors[.connect] == 1)
    }

    @Test func aPermanentRefusalFailsEveryWaiterAtOnceWithTheServersWords() throws {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        let first = pool.request(0)
        #expect(first.contains(.createConnection(C(0))))
        _ = pool.request(1)
        let refusal = ConnectError(
            reason: .rejected,
            message: "database \"nosuch\" does not exist",
            sqlState: "3D000",
            isPermanent: true
        )
        let failed = pool.send(.connectFailed(C(0), refusal))
        let error = try #require(failed.failure(of: R(0)))
        #expect(error.code == .refused)
        #expect(error.message == "database \"nosuch\" does not exist")
        #expect(error.connectError == refusal)
        #expect(failed.failure(of: R(1)) == error, "every waiter, in arrival order")
        #expect(pool.stats.waiting == 0)
        #expect(pool.stats.connectionErrors[.rejected] == 1)
        // The request timers go with them.
        #expect(failed.contains { if case .cancelTimer = $0 { true } else { false } })

        // The next client gets an attempt of its own at once (the database may exist by now), not the backoff.
        #expect(pool.request(2).contains(.createConnection(C(1))))
        // One at a time.
        #expect(!pool.request(3).contains { if case .createConnection = $0 { true } else { false } })
        let established = pool.establish(1)
        #expect(established.contains(.lease(C(1), to: R(2))))
    }

    @Test func aPermanentRefusalLeavesWaitersToTheConnectionsAlreadyOpen() throws {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 2))
        _ = pool.request(0)
        _ = pool.establish(0)
        // The first connection is leased; a second client waits while a second connection is opened.
        let second = pool.request(1)
        #expect(second.contains(.createConnection(C(1))))
        let refusal = ConnectError(reason: .auth, message: "password authentication failed", isPermanent: true)
        let failed = pool.send(.connectFailed(C(1), refusal))
        #expect(failed.failure(of: R(1)) == nil, "a connection is open: the waiter is served by its release")
        #expect(pool.release(0).contains(.lease(C(0), to: R(1))))
    }

    @Test func aPassingRefusalKeepsWaitersWaiting() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        _ = pool.request(0)
        let busy = ConnectError(reason: .server, message: "sorry, too many clients already", sqlState: "53300")
        let failed = pool.send(.connectFailed(C(0), busy))
        #expect(failed.failure(of: R(0)) == nil)
        #expect(pool.stats.waiting == 1)
    }

    // MARK: reconfigure

    @Test func growingThePoolServesWaiters() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        pool.leaseFresh(1)
        _ = pool.request(1)
        var config = PoolHarness.configuration(poolSize: 2)
        #expect(pool.send(.reconfigure(config)) == [.createConnection(C(1))])
        config.minSize = 2
        config.poolSize = 3
        // min_size grows too: C0 leased, C1 connecting, so nothing more is needed.
        #expect(pool.send(.reconfigure(config)) == [])
        config.minSize = 3
        #expect(pool.send(.reconfigure(config)) == [.createConnection(C(2))])
    }

    @Test func shrinkingClosesIdleConnectionsNowAndLeasedOnesWhenReturned() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 3))
        pool.leaseFresh(3)
        _ = pool.release(2)
        #expect(
            pool.send(.reconfigure(PoolHarness.configuration(poolSize: 1))) == [
                .close(C(2), .overflow), .observe(.closed(.overflow)),
            ]
        )
        #expect(pool.stats.checkedOut == 2)
        #expect(
            pool.release(1) == [
                .observe(.returned(heldFor: .zero)), .close(C(1), .overflow), .observe(.closed(.overflow)),
            ]
        )
        #expect(pool.release(0) == [.observe(.returned(heldFor: .zero))])
        #expect(pool.stats.idle == 1)
    }

    @Test func shrinkingPoolSizeClosesSurplusIdleConnectionsLeastRecentlyUsedFirst() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 3, maxOverflow: 2))
        pool.leaseFresh(3)
        for index in [1, 0, 2] {
            pool.advance(by: .seconds(1))
            _ = pool.release(index)
        }
        #expect(pool.stats.idle == 3)
        #expect(
            pool.send(.reconfigure(PoolHarness.configuration(poolSize: 1, maxOverflow: 2))) == [
                .close(C(1), .overflow), .observe(.closed(.overflow)), .close(C(0), .overflow),
                .observe(.closed(.overflow)),
            ]
        )
        #expect(pool.stats.idle == 1)
    }

    @Test func changedIdleTimeoutReschedulesIdleTimers() {
        var config = PoolHarness.configuration()
        config.idleTimeout = .seconds(600)
        var pool = PoolHarness(config)
        pool.leaseFresh(1)
        #expect(pool.release(0).scheduledTimers.count == 1)
        config.idleTimeout = .seconds(5)
        let timer = PoolTimer(id: .init(2), kind: .idleTimeout, deadline: pool.clock.at(.seconds(5)))
        #expect(pool.send(.reconfigure(config)) == [.cancelTimer(.init(1)), .scheduleTimer(timer)])
        #expect(pool.fire(timer) == [.close(C(0), .idle), .observe(.closed(.idle))])
    }

    // MARK: shutdown

    @Test func shutdownFailsWaitersClosesConnectionsAsTheyComeBackAndCompletes() throws {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 2))
        _ = pool.request(0)
        _ = pool.request(1)
        _ = pool.request(2)
        _ = pool.establish(0)
        let actions = pool.send(.shutdown)
        let error = try #require(actions.failure(of: R(1)))
        #expect(error.code == .shuttingDown)
        #expect(error.message == "pool db/alice is shutting down; no new server connections")
        #expect(
            actions == [
                .cancelTimer(.init(1)), .failRequest(R(1), error), .cancelTimer(.init(2)), .failRequest(R(2), error),
            ]
        )
        #expect(pool.stats.waiting == 0)
        #expect(
            pool.establish(1) == [
                .observe(.connected(took: .zero)), .close(C(1), .shutdown), .observe(.closed(.shutdown)),
            ]
        )
        #expect(pool.request(3) == [.failRequest(R(3), error)])
        #expect(
            pool.release(0) == [
                .observe(.returned(heldFor: .zero)), .close(C(0), .shutdown), .observe(.closed(.shutdown)),
                .shutdownComplete,
            ]
        )
        #expect(pool.machine.isShutDown)
    }

    @Test func shutdownClosesIdleConnectionsAtOnce() {
        var pool = PoolHarness()
        pool.leaseFresh(1)
        _ = pool.release(0)
        #expect(pool.send(.shutdown) == [.close(C(0), .shutdown), .observe(.closed(.shutdown)), .shutdownComplete])
        #expect(pool.send(.shutdown) == [])
    }

    @Test func closeLeasedAfterTheDrainTimeoutClosesWhatIsStillLeased() {
        var pool = PoolHarness()
        pool.leaseFresh(1)
        #expect(pool.send(.shutdown) == [])
        #expect(pool.send(.closeLeased) == [.close(C(0), .shutdown), .observe(.closed(.shutdown)), .shutdownComplete])
        #expect(pool.release(0) == [])
    }

    @Test func connectFailureWhileShuttingDownCompletes() {
        var pool = PoolHarness()
        _ = pool.request(0)
        _ = pool.send(.shutdown)
        #expect(
            pool.send(.connectFailed(C(0), ConnectError(reason: .timeout, message: "t"))) == [
                .observe(.connectFailed(.timeout)), .shutdownComplete,
            ]
        )
    }

    // MARK: cancellation, broken connections, stale timers

    @Test func cancelledWaiterIsRemovedAndItsTimerIsHarmless() throws {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        pool.leaseFresh(1)
        let timer = PoolTimer(id: .init(1), kind: .requestTimeout(R(1)), deadline: pool.clock.at(.seconds(30)))
        #expect(pool.request(1) == [.scheduleTimer(timer)])
        let actions = pool.send(.requestCancelled(R(1)))
        let error = try #require(actions.failure(of: R(1)))
        #expect(error.code == .cancelled)
        #expect(actions == [.cancelTimer(timer.id), .failRequest(R(1), error)])
        #expect(pool.stats.waiting == 0)
        #expect(pool.send(.requestCancelled(R(1))) == [])
        #expect(pool.fire(timer) == [])
        // The connection is not handed to the cancelled request.
        #expect(pool.release(0) == [.observe(.returned(heldFor: .seconds(30)))])
        #expect(pool.stats.idle == 1)
    }

    @Test func requestCancelledDuringItsPingLeavesTheConnectionIdle() throws {
        var config = PoolHarness.configuration()
        config.prePing = true
        var pool = PoolHarness(config)
        pool.leaseFresh(1)
        _ = pool.release(0)
        pool.advance(by: .seconds(10))
        _ = pool.request(1)
        let cancelled = pool.send(.requestCancelled(R(1)))
        #expect(try #require(cancelled.failure(of: R(1))).code == .cancelled)
        #expect(pool.send(.pingSucceeded(C(0))) == [])
        #expect(pool.stats.idle == 1)
        #expect(pool.stats.waiting == 0)
    }

    @Test func brokenLeasedConnectionIsClosedAndReplacedForWaiters() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        pool.leaseFresh(1)
        _ = pool.request(1)
        pool.advance(by: .seconds(2))
        #expect(
            pool.send(.connectionBroken(C(0), lease: R(0), .server)) == [
                .observe(.returned(heldFor: .seconds(2))), .observe(.connectionErrored(.server)),
                .close(C(0), .error), .observe(.closed(.error)), .createConnection(C(1)),
            ]
        )
        #expect(pool.stats.connectionErrors[.server] == 1)
        #expect(pool.release(0) == [], "a closed connection cannot be returned")
    }

    @Test func aReleaseThatNamesAnEarlierLeaseIsIgnored() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1))
        pool.leaseFresh(1)
        #expect(pool.send(.connectionReleased(C(0), lease: R(0))).contains(.observe(.returned(heldFor: .zero))))
        #expect(pool.request(1) == [.lease(C(0), to: R(1)), .observe(.leased(waited: .zero))])
        // The first client gives the connection back again (a bug on its side): the second client keeps it.
        #expect(pool.send(.connectionReleased(C(0), lease: R(0))) == [.observe(.staleRelease)])
        #expect(pool.send(.connectionBroken(C(0), lease: R(0), .broken)) == [.observe(.staleRelease)])
        #expect(pool.stats.checkedOut == 1)
        #expect(!pool.request(2).contains(.lease(C(0), to: R(2))), "the connection is not handed out twice")
        #expect(pool.stats.waiting == 1)
        #expect(pool.send(.connectionReleased(C(0), lease: R(1))).contains(.lease(C(0), to: R(2))))
    }

    @Test func idleTimerOfALeasedConnectionIsHarmless() throws {
        var config = PoolHarness.configuration()
        config.idleTimeout = .seconds(10)
        var pool = PoolHarness(config)
        pool.leaseFresh(1)
        let released = pool.release(0)
        let idle = try #require(released.scheduledTimers.first)
        #expect(pool.request(1) == [.lease(C(0), to: R(1)), .observe(.leased(waited: .zero))])
        #expect(pool.fire(idle) == [])
        #expect(pool.stats.checkedOut == 1)
    }

    @Test func eventsForUnknownConnectionsAreIgnored() {
        var pool = PoolHarness()
        #expect(pool.establish(9) == [])
        #expect(pool.release(9) == [])
        #expect(pool.send(.pingSucceeded(C(9))) == [])
        #expect(pool.send(.pingFailed(C(9))) == [])
        #expect(pool.send(.connectionBroken(C(9), lease: nil, .broken)) == [])
        #expect(pool.send(.connectFailed(C(9), ConnectError(reason: .connect, message: "x"))) == [])
        #expect(pool.stats == PoolStats())
    }

    // MARK: stats

    @Test func statsCountTheStates() {
        var pool = PoolHarness(PoolHarness.configuration(poolSize: 1, maxOverflow: 2))
        pool.leaseFresh(3)
        _ = pool.release(2)
        _ = pool.request(3)  // takes C2
        _ = pool.request(4)  // waits
        var expected = PoolStats()
        expected.used = 3
        expected.checkedOut = 3
        expected.overflow = 2
        expected.waiting = 1
        expected.checkouts = 4
        #expect(pool.stats == expected)
        #expect(pool.machine.recountGauges().used == 3)
    }
}
