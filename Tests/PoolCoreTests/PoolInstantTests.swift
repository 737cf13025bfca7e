import Testing

@testable import PoolCore

struct PoolInstantTests {
    @Test("instants convert exactly both ways, before and after the origin")
    func roundTrip() {
        let now = ContinuousClock.now
        for offset: Duration in [.zero, .nanoseconds(1), .seconds(-3600), .seconds(86_400 * 365), .milliseconds(-1)] {
            let instant = now + offset
            #expect(PoolInstant(instant).instant == instant)
        }
    }

    @Test("arithmetic and order agree with ContinuousClock.Instant")
    func arithmetic() {
        let a = ContinuousClock.now
        let b = a + .milliseconds(1500)
        #expect(PoolInstant(b) - PoolInstant(a) == b - a)
        #expect(PoolInstant(a) + .milliseconds(1500) == PoolInstant(b))
        #expect(PoolInstant(a) < PoolInstant(b))
        #expect(!(PoolInstant(b) < PoolInstant(a)))
        #expect((PoolInstant(a) + .seconds(-2)).instant == a - .seconds(2))
    }

    @Test("a timer keeps the deadline it was made with")
    func timerDeadline() {
        let deadline = ContinuousClock.now + .seconds(30)
        let timer = PoolTimer(id: .init(1), kind: .leak(ConnectionID(2)), deadline: deadline)
        #expect(timer.deadline == deadline)
        #expect(timer == PoolTimer(id: .init(1), kind: .leak(ConnectionID(2)), deadline: deadline))
        #expect(timer != PoolTimer(id: .init(1), kind: .leak(ConnectionID(2)), deadline: deadline + .nanoseconds(1)))
    }
}
