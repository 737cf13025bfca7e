import Benchmark
import ConnectionPool
import LifeguardMetrics
import NIOCore
import PGWire
import PoolCore
import Synchronization

// The paths every relayed transaction takes: frame decoding, pool checkout and checkin (the state machine alone and
// the live pool), the metrics a transaction updates, and /metrics rendering for 100 pools.
let benchmarks: @Sendable () -> Void = {
    // 1,000 operations per sample, so that the harness's own cost per sample (starting and stopping the
    // measurement) does not swamp operations of a microsecond; figures marked * are per operation.
    Benchmark.defaultConfiguration = .init(
        metrics: [.instructions, .wallClock, .mallocCountTotal, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(2)
    )

    // One extended-protocol round trip as a client sends it: Parse, Bind, Describe, Execute, Sync.
    let extendedBurst: ByteBuffer = {
        var buffer = ByteBuffer()
        let messages: [PGFrontendMessage] = [
            .parse(PGParse(statementName: "", query: "SELECT abalance FROM pgbench_accounts WHERE aid = $1")),
            .bind(PGBind(portalName: "", statementName: "", parameters: ByteBuffer(bytes: [0, 0, 0, 1, 0, 0, 0, 4]))),
            .describe(.portal("")),
            .execute(portalName: "", maxRows: 0),
            .sync,
        ]
        for message in messages { message.encode(into: &buffer) }
        return buffer
    }()

    Benchmark("PGWire: decode a Parse/Bind/Describe/Execute/Sync burst") { benchmark in
        let decoder = PGFrameDecoder.frontend()
        for _ in benchmark.scaledIterations {
            var buffer = extendedBurst
            var count = 0
            while let frame = try decoder.decodeFrame(buffer: &buffer) {
                blackHole(frame.type)
                count += 1
            }
            precondition(count == 5)
        }
    }

    Benchmark("PoolCore: lease and release on the state machine") { benchmark in
        var machine = PoolStateMachine(
            key: PoolKey(database: "db", user: "u"),
            configuration: PoolConfiguration(poolSize: 20, maxOverflow: 0, prePing: false),
            jitterSeed: 1
        )
        var now = ContinuousClock.now
        // 20 requests open 20 connections; each goes to its request, then all come back idle.
        for index in 0..<20 { _ = machine.handle(.leaseRequested(RequestID(index)), now: now) }
        for index in 0..<20 { _ = machine.handle(.connectionEstablished(ConnectionID(index)), now: now) }
        for index in 0..<20 {
            _ = machine.handle(.connectionReleased(ConnectionID(index), lease: RequestID(index)), now: now)
        }
        var request = 1_000
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            now = now.advanced(by: .microseconds(50))
            let actions = machine.handle(.leaseRequested(RequestID(request)), now: now)
            request += 1
            guard case .lease(let id, let lease)? = actions.first(where: { if case .lease = $0 { true } else { false } })
            else { preconditionFailure("no lease in \(actions)") }
            blackHole(machine.handle(.connectionReleased(id, lease: lease), now: now))
        }
    }

    Benchmark("ConnectionPool: lease and release (idle connection ready)") { benchmark in
        let pool = ConnectionPool(
            key: PoolKey(database: "db", user: "u"),
            configuration: PoolConfiguration(poolSize: 4, minSize: 4, maxOverflow: 0, prePing: false),
            factory: InstantFactory()
        )
        // The pool's connects and timers run inside run().
        await withDiscardingTaskGroup { group in
            group.addTask { await pool.run() }
            pool.start()
            for _ in 0..<4 { pool.release(try! await pool.lease()) }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                let box = Mutex<InstantConnection?>(nil)
                let request = pool.makeRequestID()
                pool.lease(request) { result in box.withLock { $0 = try? result.get() } }
                guard let connection = box.withLock({ $0 }) else { preconditionFailure("no idle connection") }
                pool.release(connection, lease: request)
            }
            benchmark.stopMeasurement()
            await pool.shutdown(drainTimeout: .seconds(1))
        }
    }

    Benchmark("LifeguardMetrics: one transaction's metric updates") { benchmark in
        let metrics = LifeguardMetrics(version: "bench")
        let pool = metrics.pool(database: "db", user: "u")
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            pool.checkedOut()
            pool.observeWait(.microseconds(20))
            pool.setConnections(idle: 3, used: 17, checkedOut: 17, overflow: 0, waiting: 30)
            pool.observeUse(.microseconds(400))
            pool.setConnections(idle: 4, used: 16, checkedOut: 16, overflow: 0, waiting: 29)
            pool.transactions(1)
            pool.queries(1)
            metrics.clientConnectionChanged(from: .active, to: .idle)
            metrics.clientConnectionChanged(from: .idle, to: .active)
        }
    }

    Benchmark("LifeguardMetrics: one histogram observation") { benchmark in
        let pool = LifeguardMetrics(version: "bench").pool(database: "db", user: "u")
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { pool.observeWait(.microseconds(20)) }
    }

    Benchmark("LifeguardMetrics: pool gauges from one stats snapshot") { benchmark in
        let pool = LifeguardMetrics(version: "bench").pool(database: "db", user: "u")
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            pool.setConnections(idle: 3, used: 17, checkedOut: 17, overflow: 0, waiting: 30)
        }
    }

    Benchmark(
        "LifeguardMetrics: render /metrics for 100 pools",
        configuration: .init(scalingFactor: .one, maxDuration: .seconds(3))
    ) {
        benchmark in
        let metrics = LifeguardMetrics(version: "bench")
        for index in 0..<100 {
            let pool = metrics.pool(database: "db\(index)", user: "app")
            pool.setConfigured(poolSize: 20, maxOverflow: 0)
            pool.observeWait(.milliseconds(index))
        }
        var buffer: [UInt8] = []
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            buffer.removeAll(keepingCapacity: true)
            metrics.render(into: &buffer)
            blackHole(buffer.count)
        }
    }
}

/// A pooled connection that costs nothing to open, ping or close.
final class InstantConnection: PooledConnection {
    let id: ConnectionID
    init(id: ConnectionID) { self.id = id }
    func ping() async -> Bool { true }
    func close() {}
}

struct InstantFactory: ConnectionFactory {
    func makeConnection(id: ConnectionID, for key: PoolKey) async throws(ConnectError) -> InstantConnection {
        InstantConnection(id: id)
    }
}
