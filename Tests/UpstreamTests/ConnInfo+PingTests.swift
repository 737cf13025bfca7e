import PostgresTestSupport
import Testing

@testable import Upstream

@Suite struct ConnInfoPingTests {
    @Test func pingsARealServerThroughItsStates() throws {
        let server = try TestPostgres()
        defer { server.destroy() }
        // A wrong password makes no difference: the probe never authenticates.
        let info = try ConnInfo("postgresql://nobody:wrong@127.0.0.1:\(server.port)/nowhere")
        #expect(info.ping() == .ok)
        #expect(info.ping().isUp)

        try server.stop()
        #expect(info.ping() == .noResponse)
        #expect(!info.ping().isUp)

        try server.start(asStandbyWithoutHotStandby: true)
        #expect(info.ping() == .rejected)
        #expect(!info.ping().isUp)

        try server.stop()
        try server.start()
        #expect(info.ping() == .ok)
    }

    @Test func aClosedPortIsNoResponse() throws {
        let port = try TestPostgres.freePort()
        let clock = ContinuousClock()
        let started = clock.now
        #expect(try ConnInfo("host=127.0.0.1 port=\(port) connect_timeout=30").ping() == .noResponse)
        #expect(clock.now - started < .seconds(2))
    }

    @Test func unusableOptionsAreNoAttemptWithLibpqsReason() throws {
        let info = try ConnInfo("host=127.0.0.1 port=1 password=s3cret sslmode=bogus")
        let result = info.ping()
        #expect(result == .noAttempt(reason: "invalid sslmode value: \"bogus\""))
        #expect(!result.description.contains("s3cret"))
    }
}
