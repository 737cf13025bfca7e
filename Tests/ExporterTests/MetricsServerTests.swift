import Dispatch
import Exporter
import Foundation
import Glibc
import LifeguardMetrics
import Synchronization
import Testing

@Suite("MetricsServer over real HTTP")
struct MetricsServerTests {
    /// A server on 127.0.0.1 and a port the system chooses, stopped when `body` returns.
    private func withServer<Result>(
        maxConnections: Int = 32,
        connectionTimeout: Duration = .seconds(10),
        metrics: LifeguardMetrics = LifeguardMetrics(version: "9.9.9"),
        readiness: @escaping @Sendable () -> Readiness = { .ready },
        _ body: (MetricsServer, Int) throws -> Result
    ) throws -> Result {
        let server = MetricsServer(
            host: "127.0.0.1",
            port: 0,
            maxConnections: maxConnections,
            connectionTimeout: connectionTimeout,
            metrics: metrics,
            readiness: readiness
        )
        let port = try server.start()
        defer { server.stop() }
        #expect(port > 0)
        #expect(server.port == port)
        return try body(server, port)
    }

    @Test("GET /metrics answers 200 with the exposition content type and the whole catalogue")
    func metrics() throws {
        let metrics = LifeguardMetrics(version: "9.9.9")
        metrics.pool(database: "app", user: "alice").checkedOut()
        metrics.setUpstreamUp("default", true)
        metrics.certificateExpiry.set(file: "/tls/server.crt", expiry: Date(timeIntervalSince1970: 1_900_000_000))
        try withServer(metrics: metrics) { _, port throws in
            let response = try HTTPConnection.get(port: port, "/metrics")
            #expect(response.status == 200)
            #expect(response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
            for family in LifeguardMetric.allCases {
                #expect(response.body.contains("# TYPE \(family.name) \(family.type.rawValue)\n"), "\(family.name)")
            }
            #expect(response.body.contains(#"lifeguard_pool_checkouts_total{database="app",user="alice"} 1"#))
            #expect(response.body.contains(#"lifeguard_build_info{version="9.9.9"} 1.0"#))
            #expect(response.headers["content-length"] == String(response.body.utf8.count))
        }
    }

    @Test("GET /healthz answers 200 ok")
    func healthz() throws {
        try withServer { _, port throws in
            let response = try HTTPConnection.get(port: port, "/healthz")
            #expect(response.status == 200)
            #expect(response.body == "ok\n")
            #expect(response.headers["content-type"] == "text/plain; charset=utf-8")
        }
    }

    @Test("/readyz follows the readiness closure: 200, then 503 with the reason, then 200 again")
    func readinessFlips() throws {
        let readiness = Mutex(Readiness.ready)
        let current: @Sendable () -> Readiness = { readiness.withLock { $0 } }
        try withServer(readiness: current) { _, port throws in
            let ready = try HTTPConnection.get(port: port, "/readyz")
            #expect(ready.status == 200)
            #expect(ready.body == "ready\n")

            readiness.withLock { $0 = .notReady(reason: "upstream 127.0.0.1:5432 does not answer") }
            let notReady = try HTTPConnection.get(port: port, "/readyz")
            #expect(notReady.status == 503)
            #expect(notReady.body == "not ready: upstream 127.0.0.1:5432 does not answer\n")

            readiness.withLock { $0 = .ready }
            #expect(try HTTPConnection.get(port: port, "/readyz").status == 200)
        }
    }

    @Test("HEAD answers like GET without a body")
    func head() throws {
        try withServer { _, port throws in
            let connection = try HTTPConnection(port: port)
            let head = try connection.request("HEAD", "/metrics")
            #expect(head.status == 200)
            #expect(head.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
            #expect(head.body.isEmpty)
            // Had a body been sent, it would now be read as the next response's status line.
            let next = try connection.request("HEAD", "/healthz")
            #expect(next.status == 200)
            #expect(next.headers["content-length"] == "3")
        }
    }

    @Test("unknown paths answer 404", arguments: ["/", "/metricsx", "/metrics/", "/favicon.ico"])
    func notFound(path: String) throws {
        try withServer { _, port throws in
            #expect(try HTTPConnection.get(port: port, path).status == 404)
            #expect(try HTTPConnection.get(port: port, path, method: "POST").status == 404)
        }
    }

    @Test("other methods on known paths answer 405 with Allow", arguments: ["POST", "PUT", "DELETE", "OPTIONS"])
    func methodNotAllowed(method: String) throws {
        try withServer { _, port throws in
            for path in ["/metrics", "/healthz", "/readyz"] {
                let connection = try HTTPConnection(port: port)
                let response = try connection.request(method, path, body: method == "OPTIONS" ? "" : "x=1")
                #expect(response.status == 405, "\(method) \(path)")
                #expect(response.headers["allow"] == "GET, HEAD")
            }
        }
    }

    @Test("keep-alive: several requests on one connection, without Connection: close")
    func keepAlive() throws {
        try withServer { server, port throws in
            let connection = try HTTPConnection(port: port)
            for path in ["/metrics", "/healthz", "/readyz", "/nope", "/metrics"] {
                let response = try connection.request("GET", path)
                #expect(response.headers["connection"]?.lowercased() != "close", "\(path)")
            }
            #expect(server.openConnections == 1)
        }
    }

    @Test("query strings are ignored for routing")
    func queryString() throws {
        try withServer { _, port throws in
            #expect(try HTTPConnection.get(port: port, "/healthz?verbose=1").status == 200)
        }
    }

    @Test("concurrent scrapes while other threads update the metrics")
    func concurrentScrapes() throws {
        let metrics = LifeguardMetrics(version: "9.9.9")
        let pool = metrics.pool(database: "app", user: "alice")
        let updaters = 3
        let updatesEach = 20_000
        let scrapers = 6
        let scrapesEach = 15
        let failures = Mutex<[String]>([])
        let checkoutsSeen = Mutex<[Int]>([])
        try withServer(metrics: metrics) { _, port throws in
            runOnThreads(updaters + scrapers) { index in
                if index < updaters {
                    for step in 0..<updatesEach {
                        pool.checkedOut()
                        pool.observeWait(.microseconds(step % 5_000))
                        pool.setConnections(idle: step % 7, used: 3, checkedOut: 3, overflow: 0, waiting: step % 3)
                        if step % 1_000 == 0 { metrics.pool(database: "db\(index)", user: "u\(step)").checkedOut() }
                    }
                    return
                }
                do {
                    // Half the scrapers reuse one connection, half open one per scrape.
                    let reused = index % 2 == 0 ? try HTTPConnection(port: port) : nil
                    for _ in 0..<scrapesEach {
                        let response = try (reused ?? HTTPConnection(port: port)).request("GET", "/metrics")
                        guard response.status == 200, response.body.hasSuffix("\n") else {
                            failures.withLock { $0.append("status \(response.status)") }
                            continue
                        }
                        let line = response.body.split(separator: "\n").first {
                            $0.hasPrefix(#"lifeguard_pool_checkouts_total{database="app",user="alice"} "#)
                        }
                        guard let value = line?.split(separator: " ").last.flatMap({ Int($0) }) else {
                            failures.withLock { $0.append("no checkouts line") }
                            continue
                        }
                        checkoutsSeen.withLock { $0.append(value) }
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
            let final = try HTTPConnection.get(port: port, "/metrics").body
            #expect(
                final.contains(
                    #"lifeguard_pool_checkouts_total{database="app",user="alice"} \#(updaters * updatesEach)"#
                )
            )
            #expect(
                final.contains(
                    #"lifeguard_pool_wait_seconds_count{database="app",user="alice"} \#(updaters * updatesEach)"#
                )
            )
        }
        #expect(failures.withLock { $0 } == [])
        let seen = checkoutsSeen.withLock { $0 }
        #expect(seen.count == scrapers * scrapesEach)
        #expect(seen.allSatisfy { $0 <= updaters * updatesEach })
    }

    @Test("stop() closes the port; the same port can be served again")
    func stopReleasesPort() throws {
        let server = MetricsServer(port: 0, metrics: LifeguardMetrics(version: "9.9.9"), readiness: { .ready })
        let port = try server.start()
        #expect(try HTTPConnection.get(port: port, "/healthz").status == 200)
        server.stop()
        #expect(server.port == nil)
        #expect(throws: HTTPConnection.Failure.self) { try HTTPConnection(port: port) }
        server.stop()  // a second stop does nothing

        let again = MetricsServer(port: port, metrics: LifeguardMetrics(version: "9.9.9"), readiness: { .ready })
        #expect(try again.start() == port)
        #expect(try HTTPConnection.get(port: port, "/healthz").status == 200)
        again.stop()

        // And the first server can start again, on a new port.
        let newPort = try server.start()
        #expect(try HTTPConnection.get(port: newPort, "/healthz").status == 200)
        server.stop()
    }

    @Test("a port in use fails with an error naming the address")
    func portInUse() throws {
        try withServer { _, port throws in
            let second = MetricsServer(port: port, metrics: LifeguardMetrics(version: "9.9.9"), readiness: { .ready })
            let error = #expect(throws: MetricsServerError.self) { try second.start() }
            #expect(error?.description == "metrics server: cannot bind 127.0.0.1:\(port): Address already in use")
            #expect(second.port == nil)
        }
    }

    @Test("an address not on this host fails with an error naming it")
    func foreignAddress() throws {
        // 192.0.2.0/24 is reserved for documentation (RFC 5737): never a local address.
        let server = MetricsServer(
            host: "192.0.2.1",
            port: 0,
            metrics: LifeguardMetrics(version: "9.9.9"),
            readiness: { .ready }
        )
        let error = #expect(throws: MetricsServerError.self) { try server.start() }
        #expect(error?.description == "metrics server: cannot bind 192.0.2.1:0: Cannot assign requested address")
    }

    @Test("starting twice is refused")
    func startTwice() throws {
        try withServer { server, port throws in
            let error = #expect(throws: MetricsServerError.self) { try server.start() }
            #expect(error?.description.contains("already started") == true)
            #expect(server.port == port)
        }
    }

    @Test("connections beyond maxConnections wait until one closes")
    func connectionLimit() throws {
        try withServer(maxConnections: 2) { server, port throws in
            var first: HTTPConnection? = try HTTPConnection(port: port)
            let second = try HTTPConnection(port: port)
            #expect(try first?.request("GET", "/healthz").status == 200)
            #expect(try second.request("GET", "/healthz").status == 200)
            #expect(server.openConnections == 2)
            let third = try HTTPConnection(port: port, receiveTimeout: .seconds(1))
            try third.send("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect(third.staysSilent())
            #expect(server.openConnections == 2)
            first = nil  // closes the socket
            third.setReceiveTimeout(.seconds(5))
            #expect(try third.response().status == 200)
            #expect(try second.request("GET", "/healthz").status == 200)
        }
    }

    @Test("idle connections are closed after connectionTimeout")
    func idleTimeout() throws {
        try withServer(connectionTimeout: .seconds(1)) { _, port throws in
            let connection = try HTTPConnection(port: port, receiveTimeout: .seconds(4))
            #expect(try connection.request("GET", "/healthz").status == 200)
            let start = ContinuousClock.now
            #expect(connection.isClosedByServer())
            #expect(ContinuousClock.now - start < .seconds(4))
        }
    }
}

/// Runs `body(0..<count)` on `count` threads of their own and waits for all of them; blocking socket calls on the
/// cooperative pool of a 2-core machine would serialise the test.
private func runOnThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        let thread = Thread {
            body(index)
            group.leave()
        }
        thread.start()
    }
    group.wait()
}
