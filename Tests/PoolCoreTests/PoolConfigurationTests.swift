import PoolCore
import Testing

@Suite struct PoolConfigurationTests {
    @Test func defaultsAreSQLAlchemys() {
        let config = PoolConfiguration()
        #expect(config.poolSize == 5)
        #expect(config.maxOverflow == 10)
        #expect(config.poolTimeout == .seconds(30))
        #expect(config.prePing)
        #expect(config.maxConnections == 15)
    }

    @Test func normalizedKeepsTheStateMachineInvariantsPossible() {
        let config = PoolConfiguration(poolSize: -1, minSize: 9, maxOverflow: -3, poolTimeout: .seconds(-1))
            .normalized()
        #expect(config.poolSize == 0)
        #expect(config.maxOverflow == 1)
        #expect(config.minSize == 0)
        #expect(config.poolTimeout == .zero)
        #expect(PoolConfiguration(poolSize: 3, minSize: 9).normalized().minSize == 3)
        #expect(
            PoolConfiguration(connectBackoffInitial: .seconds(2), connectBackoffMax: .seconds(1)).normalized()
                .connectBackoffMax == .seconds(2)
        )
    }

    @Test func poolKeyDescribesItselfAsDatabaseSlashUser() {
        #expect(PoolKey(database: "app", user: "web").description == "app/web")
    }
}
