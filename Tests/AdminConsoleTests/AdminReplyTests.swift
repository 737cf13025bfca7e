import AdminConsole
import NIOCore
import PoolCore
import Testing

@Suite struct AdminReplyTests {
    @Test("a table: RowDescription, DataRows, CommandComplete, ReadyForQuery, byte for byte")
    func table() {
        let table = AdminTable(
            columns: [AdminColumn("list", .text), AdminColumn("items", .int4)],
            rows: [["pools", "2"], [nil, "0"]]
        )
        var buffer = ByteBuffer()
        AdminReply.table(table, tag: "SHOW").encode(into: &buffer)
        var expected: [UInt8] = [UInt8(ascii: "T"), 0, 0, 0, 53, 0, 2]
        expected += Array("list".utf8) + [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]
        expected += Array("items".utf8) + [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]
        expected +=
            [UInt8(ascii: "D"), 0, 0, 0, 20, 0, 2, 0, 0, 0, 5] + Array("pools".utf8) + [0, 0, 0, 1, UInt8(ascii: "2")]
        expected += [UInt8(ascii: "D"), 0, 0, 0, 15, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 1, UInt8(ascii: "0")]
        expected += [UInt8(ascii: "C"), 0, 0, 0, 9] + Array("SHOW".utf8) + [0]
        expected += [UInt8(ascii: "Z"), 0, 0, 0, 5, UInt8(ascii: "I")]
        #expect(Array(buffer.readableBytesView) == expected)
    }

    @Test("an error: ErrorResponse with SQLSTATE and message, then ReadyForQuery")
    func error() {
        var buffer = ByteBuffer()
        AdminReply.error(.adminAccessNeeded).encode(into: &buffer)
        let bytes = Array(buffer.readableBytesView)
        #expect(bytes.first == UInt8(ascii: "E"))
        #expect(String(decoding: bytes, as: UTF8.self).contains("C08P01\u{0}Madmin access needed\u{0}"))
        #expect(Array(bytes.suffix(6)) == [UInt8(ascii: "Z"), 0, 0, 0, 5, UInt8(ascii: "I")])
    }

    @Test("a done command: CommandComplete with its tag")
    func done() {
        var buffer = ByteBuffer()
        AdminReply.done(tag: "PAUSE").encode(into: &buffer)
        #expect(
            Array(buffer.readableBytesView)
                == [UInt8(ascii: "C"), 0, 0, 0, 10] + Array("PAUSE".utf8) + [0, UInt8(ascii: "Z"), 0, 0, 0, 5, 73]
        )
    }
}

@Suite struct AdminReportsTests {
    static func pool(
        _ database: String,
        _ user: String,
        stats: PoolStats,
        counters: AdminCounters
    ) -> AdminSnapshot.Pool {
        AdminSnapshot.Pool(
            database: database,
            user: user,
            mode: .transaction,
            paused: false,
            inspection: PoolInspection(stats: stats, connections: [], oldestWaiterSince: nil),
            counters: counters,
            poolSize: 5,
            maxOverflow: 10,
            maxWait: 2_500_000
        )
    }

    static func client(_ id: Int, _ state: String, pool: PoolKey) -> AdminSnapshot.Socket {
        AdminSnapshot.Socket(
            state: state,
            user: pool.user,
            database: pool.database,
            pool: pool,
            address: "127.0.0.1",
            port: 5000 + id,
            localAddress: "127.0.0.1",
            localPort: 6432,
            connectTime: 1_700_000_000_000_000,
            requestTime: 1_700_000_000_000_000,
            pointer: "0x\(id)",
            link: nil,
            id: id
        )
    }

    static var snapshot: AdminSnapshot {
        var stats = PoolStats()
        stats.idle = 2
        stats.used = 3
        stats.checkedOut = 3
        stats.connecting = 1
        var counters = AdminCounters()
        counters.serverAssignments = 10
        counters.transactions = 8
        counters.queries = 20
        counters.waitTime = 1_000
        var snapshot = AdminSnapshot(now: 1_700_000_060_000_000, version: "PgBouncer 1.25.2 (Lifeguard test)")
        snapshot.pools = [
            Self.pool("b", "bob", stats: PoolStats(), counters: counters),
            Self.pool("a", "alice", stats: stats, counters: counters),
            Self.pool("a", "zed", stats: PoolStats(), counters: counters),
        ]
        let alice = PoolKey(database: "a", user: "alice")
        snapshot.clients = [
            Self.client(1, "active", pool: alice), Self.client(2, "waiting", pool: alice),
            Self.client(3, "idle", pool: alice),
            Self.client(4, "idle", pool: PoolKey(database: "pgbouncer", user: "pgbouncer")),
        ]
        return snapshot
    }

    @Test("SHOW POOLS: pools sorted, the console's own among them, clients and servers counted by state")
    func pools() throws {
        guard case .table(let table, "SHOW") = AdminReports.table(.pools, Self.snapshot) else {
            Issue.record("not a table")
            return
        }
        #expect(table.column("database") == ["a", "a", "b", "pgbouncer"])
        #expect(table.column("user") == ["alice", "zed", "bob", "pgbouncer"])
        #expect(table.column("cl_active") == ["2", "0", "0", "1"])
        #expect(table.column("cl_waiting") == ["1", "0", "0", "0"])
        #expect(table.column("sv_active") == ["3", "0", "0", "0"])
        #expect(table.column("sv_idle") == ["2", "0", "0", "0"])
        #expect(table.column("sv_login") == ["1", "0", "0", "0"])
        #expect(table.column("maxwait") == ["2", "2", "2", "0"])
        #expect(table.column("maxwait_us") == ["500000", "500000", "500000", "0"])
        #expect(table.column("pool_mode") == ["transaction", "transaction", "transaction", "statement"])
        #expect(table.column("load_balance_hosts") == [nil, nil, nil, nil])
    }

    @Test("SHOW STATS_TOTALS sums pools per database; TOTALS over everything")
    func totals() {
        guard case .table(let table, _) = AdminReports.table(.statsTotals, Self.snapshot),
            case .table(let totals, _) = AdminReports.table(.totals, Self.snapshot)
        else {
            Issue.record("not a table")
            return
        }
        #expect(table.column("database") == ["a", "b", "pgbouncer"])
        #expect(table.column("xact_count") == ["16", "8", "0"])
        #expect(table.column("wait_time") == ["2000", "1000", "0"])
        #expect(totals.rows.first == ["total_server_assignment_count", "30"])
        #expect(totals.rows.count == 22)
        #expect(totals.column("name").contains("avg_ps_bind_count"))
    }

    @Test("averages: rates per second and times per transaction over the window, as PgBouncer's calc_average")
    func averages() {
        var window = AdminStatsWindow(start: 1_700_000_000_000_000)
        var snapshot = Self.snapshot
        snapshot.now = 1_700_000_000_000_000 + 60_000_000
        let averages = window.averages(for: snapshot)
        // 16 transactions of database a over 60 s: less than one a second.
        #expect(averages.perDatabase["a"]?.transactions == 0)
        #expect(averages.perDatabase["a"]?.waitTime == 100)  // 2000 µs over 20 assignments
        var later = snapshot
        later.now += 60_000_000
        later.pools = later.pools.map { pool in
            var pool = pool
            pool.counters.transactions += 600
            return pool
        }
        let next = window.averages(for: later)
        #expect(next.perDatabase["a"]?.transactions == 20)  // 1200 more over 60 s
    }

    @Test("time cells are PgBouncer's format, in UTC")
    func time() {
        guard case .table(let table, _) = AdminReports.table(.clients, Self.snapshot) else { return }
        #expect(table.column("connect_time").first == "2023-11-14 22:13:20 UTC")
        #expect(table.column("type").first == "C")
    }
}
