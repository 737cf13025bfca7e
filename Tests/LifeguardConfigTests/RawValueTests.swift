import Testing

@testable import LifeguardConfig

@Suite struct RawValueTests {
    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)),
        ("30s", .seconds(30)),
        ("5m", .seconds(300)),
        ("1h", .seconds(3600)),
        ("30", .seconds(30)),
        ("1.5", .milliseconds(1500)),
        ("0.1", .milliseconds(100)),
        ("1.5s", .milliseconds(1500)),
        ("0.5ms", .microseconds(500)),
        (" 2m ", .seconds(120)),
        ("0", .zero),
        ("10MS", .milliseconds(10)),
    ])
    func durationStrings(text: String, expected: Duration) throws {
        #expect(try ValueParser.duration(.string(text), allowOff: false).get() == expected)
    }

    @Test func durationNumbersAreSeconds() throws {
        #expect(try ValueParser.duration(.integer(45), allowOff: false).get() == .seconds(45))
        #expect(try ValueParser.duration(.float(0.25), allowOff: false).get() == .milliseconds(250))
    }

    @Test(arguments: ["5 minutes", "-1s", "1d", "s", "1.2.3", "", "1e3", "30 s s"])
    func badDurations(text: String) {
        #expect(throws: Rejection.self) { try ValueParser.duration(.string(text), allowOff: false).get() }
    }

    @Test func durationRejectionSaysWhatIsAccepted() {
        let result = ValueParser.duration(.string("soon"), allowOff: true)
        guard case .failure(let rejection) = result else {
            Issue.record("accepted \"soon\"")
            return
        }
        #expect(
            rejection.message
                == "expected a duration such as 250ms, 30s, 5m, 1h or plain seconds, or 0 or \"off\" to turn it off, got \"soon\""
        )
    }

    @Test func offAndZeroTurnOptionalDurationsOff() throws {
        #expect(try ValueParser.duration(.string("off"), allowOff: true).get() == nil)
        #expect(try ValueParser.duration(.integer(0), allowOff: true).get() == nil)
        #expect(throws: Rejection.self) { try ValueParser.duration(.string("off"), allowOff: false).get() }
        #expect(throws: Rejection.self) {
            try ValueParser.duration(.string("0s"), allowOff: false, positive: true).get()
        }
    }

    @Test(arguments: [
        ("127.0.0.1:6432", ListenAddress(host: "127.0.0.1", port: 6432)),
        ("0.0.0.0:0", ListenAddress(host: "0.0.0.0", port: 0)),
        ("localhost:65535", ListenAddress(host: "localhost", port: 65535)),
        ("[::1]:6432", ListenAddress(host: "::1", port: 6432)),
        ("db-proxy.internal:5432", ListenAddress(host: "db-proxy.internal", port: 5432)),
    ])
    func listenAddresses(text: String, expected: ListenAddress) throws {
        #expect(try ValueParser.listenAddress(.string(text)).get() == expected)
    }

    @Test(arguments: [
        "127.0.0.1", "127.0.0.1:65536", ":6432", "127.0.0.1:-1", "300.1.1.1:80", "::1:6432", "[::1]6432",
        "host name:80", "127.0.0.1:http", "[zz]:80",
    ])
    func badListenAddresses(text: String) {
        #expect(throws: Rejection.self) { try ValueParser.listenAddress(.string(text)).get() }
    }

    @Test func loopbackAddresses() {
        #expect(ListenAddress(host: "127.0.0.1", port: 1).isLoopback)
        #expect(ListenAddress(host: "127.8.9.10", port: 1).isLoopback)
        #expect(ListenAddress(host: "::1", port: 1).isLoopback)
        #expect(ListenAddress(host: "localhost", port: 1).isLoopback)
        #expect(!ListenAddress(host: "0.0.0.0", port: 1).isLoopback)
        #expect(!ListenAddress(host: "127.example.com", port: 1).isLoopback)
        #expect(ListenAddress(host: "::1", port: 6432).description == "[::1]:6432")
    }

    @Test func integersBooleansAndChoices() throws {
        #expect(try ValueParser.integer(.string(" 7 "), minimum: 1).get() == 7)
        #expect(try ValueParser.integer(.integer(0), minimum: 0).get() == 0)
        #expect(throws: Rejection.self) { try ValueParser.integer(.integer(0), minimum: 1).get() }
        #expect(throws: Rejection.self) { try ValueParser.integer(.float(1.5), minimum: 1).get() }
        for text in ["true", "YES", "on", "1"] { #expect(try ValueParser.boolean(.string(text)).get()) }
        for text in ["false", "no", "Off", "0"] { #expect(try !ValueParser.boolean(.string(text)).get()) }
        #expect(throws: Rejection.self) { try ValueParser.boolean(.string("maybe")).get() }
        #expect(try ValueParser.choice(.string("Transaction"), as: PoolMode.self).get() == .transaction)
        #expect(try ValueParser.choice(.string("scram-sha-256"), as: AuthType.self).get() == .scramSHA256)
    }

    @Test func shownValuesMaskURIPasswords() {
        #expect(RawValue.string("postgres://u:pw@h:1").shown == "\"postgres://u:********@h:1\"")
        #expect(RawValue.string("say \"hi\"").shown == "\"say \\\"hi\\\"\"")
        #expect(RawValue.unsupported("a table").shown == "a table")
    }

    @Test func suggestions() {
        let keys = Setting.allCases.map(\.key)
        #expect(suggestion(for: "pool_sise", among: keys) == "pool_size")
        #expect(suggestion(for: "poolsize", among: keys) == "pool_size")
        #expect(suggestion(for: "pool-size", among: keys) == "pool_size")
        #expect(suggestion(for: "default_pool_size", among: keys) == "pool_size")
        #expect(suggestion(for: "server_lifetime", among: keys) == "pool_recycle")
        #expect(suggestion(for: "colour", among: keys) == nil)
    }
}
