import Foundation
import Testing

@testable import LifeguardMetrics

@Suite("LifeguardMetrics rendering")
struct LifeguardMetricsTests {
    /// The exact exposition for one pool at zero: names, HELP, TYPE, label order, bucket bounds and series order.
    static let onePoolAtZero = """
        # HELP lifeguard_pool_size Configured pool_size: server connections kept open for the pool.
        # TYPE lifeguard_pool_size gauge
        lifeguard_pool_size{database="app",user="alice"} 0.0
        # HELP lifeguard_pool_max_overflow Configured max_overflow: extra server connections allowed during spikes.
        # TYPE lifeguard_pool_max_overflow gauge
        lifeguard_pool_max_overflow{database="app",user="alice"} 0.0
        # HELP lifeguard_pool_connections Open server connections, by state (idle or used).
        # TYPE lifeguard_pool_connections gauge
        lifeguard_pool_connections{database="app",user="alice",state="idle"} 0.0
        lifeguard_pool_connections{database="app",user="alice",state="used"} 0.0
        # HELP lifeguard_pool_checked_out Server connections handed to clients right now.
        # TYPE lifeguard_pool_checked_out gauge
        lifeguard_pool_checked_out{database="app",user="alice"} 0.0
        # HELP lifeguard_pool_overflow Open server connections above pool_size.
        # TYPE lifeguard_pool_overflow gauge
        lifeguard_pool_overflow{database="app",user="alice"} 0.0
        # HELP lifeguard_pool_waiting_clients Clients waiting for a server connection.
        # TYPE lifeguard_pool_waiting_clients gauge
        lifeguard_pool_waiting_clients{database="app",user="alice"} 0.0
        # HELP lifeguard_pool_paused 1 while the pool is paused (PAUSE on the admin console), 0 otherwise.
        # TYPE lifeguard_pool_paused gauge
        lifeguard_pool_paused{database="app",user="alice"} 0.0
        # HELP lifeguard_pool_wait_seconds Time from asking for a server connection to getting one.
        # TYPE lifeguard_pool_wait_seconds histogram
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.0001"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.00025"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.0005"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.001"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.0025"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.005"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.01"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.025"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.05"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.1"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.25"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="0.5"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="1.0"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="2.5"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="5.0"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="10.0"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="30.0"} 0
        lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="+Inf"} 0
        lifeguard_pool_wait_seconds_sum{database="app",user="alice"} 0.0
        lifeguard_pool_wait_seconds_count{database="app",user="alice"} 0
        # HELP lifeguard_pool_use_seconds How long a client held a server connection.
        # TYPE lifeguard_pool_use_seconds histogram
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.0001"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.00025"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.0005"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.001"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.0025"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.005"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.01"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.025"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.05"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.1"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.25"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="0.5"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="1.0"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="2.5"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="5.0"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="10.0"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="30.0"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="60.0"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="300.0"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="900.0"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="1800.0"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="3600.0"} 0
        lifeguard_pool_use_seconds_bucket{database="app",user="alice",le="+Inf"} 0
        lifeguard_pool_use_seconds_sum{database="app",user="alice"} 0.0
        lifeguard_pool_use_seconds_count{database="app",user="alice"} 0
        # HELP lifeguard_pool_connect_seconds Time to open and authenticate a server connection.
        # TYPE lifeguard_pool_connect_seconds histogram
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.0001"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.00025"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.0005"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.001"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.0025"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.005"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.01"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.025"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.05"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.1"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.25"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="0.5"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="1.0"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="2.5"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="5.0"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="10.0"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="30.0"} 0
        lifeguard_pool_connect_seconds_bucket{database="app",user="alice",le="+Inf"} 0
        lifeguard_pool_connect_seconds_sum{database="app",user="alice"} 0.0
        lifeguard_pool_connect_seconds_count{database="app",user="alice"} 0
        # HELP lifeguard_pool_checkouts_total Server connections handed out to clients.
        # TYPE lifeguard_pool_checkouts_total counter
        lifeguard_pool_checkouts_total{database="app",user="alice"} 0
        # HELP lifeguard_pool_timeouts_total Clients that gave up waiting after pool_timeout.
        # TYPE lifeguard_pool_timeouts_total counter
        lifeguard_pool_timeouts_total{database="app",user="alice"} 0
        # HELP lifeguard_pool_connection_errors_total Failed connects and broken server connections, by reason.
        # TYPE lifeguard_pool_connection_errors_total counter
        lifeguard_pool_connection_errors_total{database="app",user="alice",reason="connect"} 0
        lifeguard_pool_connection_errors_total{database="app",user="alice",reason="tls"} 0
        lifeguard_pool_connection_errors_total{database="app",user="alice",reason="auth"} 0
        lifeguard_pool_connection_errors_total{database="app",user="alice",reason="timeout"} 0
        lifeguard_pool_connection_errors_total{database="app",user="alice",reason="server"} 0
        lifeguard_pool_connection_errors_total{database="app",user="alice",reason="rejected"} 0
        lifeguard_pool_connection_errors_total{database="app",user="alice",reason="broken"} 0
        # HELP lifeguard_pool_connections_closed_total Server connections closed by the pool, by reason.
        # TYPE lifeguard_pool_connections_closed_total counter
        lifeguard_pool_connections_closed_total{database="app",user="alice",reason="recycle"} 0
        lifeguard_pool_connections_closed_total{database="app",user="alice",reason="idle"} 0
        lifeguard_pool_connections_closed_total{database="app",user="alice",reason="ping_failed"} 0
        lifeguard_pool_connections_closed_total{database="app",user="alice",reason="error"} 0
        lifeguard_pool_connections_closed_total{database="app",user="alice",reason="dirty"} 0
        lifeguard_pool_connections_closed_total{database="app",user="alice",reason="reset_failed"} 0
        lifeguard_pool_connections_closed_total{database="app",user="alice",reason="overflow"} 0
        lifeguard_pool_connections_closed_total{database="app",user="alice",reason="shutdown"} 0
        # HELP lifeguard_pool_leaks_suspected_total Holds of a server connection that passed leak_threshold.
        # TYPE lifeguard_pool_leaks_suspected_total counter
        lifeguard_pool_leaks_suspected_total{database="app",user="alice"} 0
        # HELP lifeguard_pool_stale_releases_total Releases of a server connection naming a lease it no longer had; ignored (a Lifeguard bug).
        # TYPE lifeguard_pool_stale_releases_total counter
        lifeguard_pool_stale_releases_total{database="app",user="alice"} 0
        # HELP lifeguard_transactions_total Transactions completed through the pool.
        # TYPE lifeguard_transactions_total counter
        lifeguard_transactions_total{database="app",user="alice"} 0
        # HELP lifeguard_queries_total Queries run through the pool.
        # TYPE lifeguard_queries_total counter
        lifeguard_queries_total{database="app",user="alice"} 0
        # HELP lifeguard_client_connections Client connections, by state (active, waiting or idle).
        # TYPE lifeguard_client_connections gauge
        lifeguard_client_connections{state="active"} 0.0
        lifeguard_client_connections{state="waiting"} 0.0
        lifeguard_client_connections{state="idle"} 0.0
        # HELP lifeguard_client_max_connections Configured max_client_conn: client connections accepted in total.
        # TYPE lifeguard_client_max_connections gauge
        lifeguard_client_max_connections 0.0
        # HELP lifeguard_client_rejected_total Client connections rejected, by reason.
        # TYPE lifeguard_client_rejected_total counter
        lifeguard_client_rejected_total{reason="max_client_conn"} 0
        lifeguard_client_rejected_total{reason="auth"} 0
        lifeguard_client_rejected_total{reason="protocol"} 0
        # HELP lifeguard_build_info Always 1; the version label names the running build.
        # TYPE lifeguard_build_info gauge
        lifeguard_build_info{version="1.2.3"} 1.0
        # HELP lifeguard_config_last_reload_successful 1 if the last configuration load or reload succeeded, 0 if not.
        # TYPE lifeguard_config_last_reload_successful gauge
        lifeguard_config_last_reload_successful 1.0
        # HELP lifeguard_metrics_requests_rejected_total Requests to /metrics, /healthz or /readyz refused by basic authentication, by reason.
        # TYPE lifeguard_metrics_requests_rejected_total counter
        lifeguard_metrics_requests_rejected_total{reason="no_credentials"} 0
        lifeguard_metrics_requests_rejected_total{reason="unauthorized"} 0

        """

    @Test("one pool at zero renders exactly the golden exposition")
    func goldenOnePoolAtZero() {
        let metrics = LifeguardMetrics(version: "1.2.3")
        _ = metrics.pool(database: "app", user: "alice")
        let actual = Exposition.withoutProcess(metrics)
        let difference = Exposition.lineDiff(expected: Self.onePoolAtZero, actual: actual)
        #expect(difference.isEmpty, "exposition differs from the golden text:\n\(difference)")
    }

    @Test("without a pool only the process-wide families are rendered")
    func noPoolNoPoolFamilies() {
        let metrics = LifeguardMetrics(version: "0.1.0")
        let text = Exposition.withoutProcess(metrics)
        #expect(!text.contains("lifeguard_pool_"))
        #expect(!text.contains("lifeguard_transactions_total"))
        #expect(!text.contains("lifeguard_upstream_up"))
        let families = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map {
            $0.split(separator: " ")[2]
        }
        #expect(
            families == [
                "lifeguard_client_connections", "lifeguard_client_max_connections", "lifeguard_client_rejected_total",
                "lifeguard_build_info", "lifeguard_config_last_reload_successful",
                "lifeguard_metrics_requests_rejected_total",
            ]
        )
    }

    @Test("pools are rendered sorted by database then user, grouped under one header per family")
    func poolOrdering() {
        let metrics = LifeguardMetrics(version: "0.1.0")
        for (database, user) in [("b", "x"), ("a", "z"), ("a", "b")] {
            _ = metrics.pool(database: database, user: user)
        }
        metrics.setUpstreamUp("replica", true)
        metrics.setUpstreamUp("default", true)
        metrics.certificateExpiry.set(file: "/etc/tls/b.crt", expiry: Date(timeIntervalSince1970: 2_000_000_000))
        metrics.certificateExpiry.set(file: "/etc/tls/a.crt", expiry: Date(timeIntervalSince1970: 1_900_000_000.5))
        let text = Exposition.withoutProcess(metrics)
        let sizeLines = text.split(separator: "\n").filter { $0.hasPrefix("lifeguard_pool_size{") }
        #expect(
            sizeLines == [
                #"lifeguard_pool_size{database="a",user="b"} 0.0"#,
                #"lifeguard_pool_size{database="a",user="z"} 0.0"#,
                #"lifeguard_pool_size{database="b",user="x"} 0.0"#,
            ]
        )
        for family in LifeguardMetric.allCases where !family.isProcess {
            let headers = text.split(separator: "\n").filter { $0 == "# TYPE \(family.name) \(family.type.rawValue)" }
            #expect(headers.count == 1, "\(family.name) has \(headers.count) TYPE lines")
        }
        let upstreams = text.split(separator: "\n").filter { $0.hasPrefix("lifeguard_upstream_up{") }
        #expect(
            upstreams == [
                #"lifeguard_upstream_up{upstream="default"} 1.0"#, #"lifeguard_upstream_up{upstream="replica"} 1.0"#,
            ]
        )
        let certificates = text.split(separator: "\n").filter {
            $0.hasPrefix("lifeguard_tls_certificate_expiry_timestamp_seconds{")
        }
        #expect(
            certificates == [
                #"lifeguard_tls_certificate_expiry_timestamp_seconds{file="/etc/tls/a.crt"} 1900000000.0"#,
                #"lifeguard_tls_certificate_expiry_timestamp_seconds{file="/etc/tls/b.crt"} 2000000000.0"#,
            ]
        )
        // A second render gives the same text: nothing depends on dictionary order.
        #expect(Exposition.withoutProcess(metrics) == text)
    }

    @Test("pool(database:user:) is idempotent and keeps the values")
    func poolIsIdempotent() {
        let metrics = LifeguardMetrics(version: "0.1.0")
        let first = metrics.pool(database: "app", user: "alice")
        first.checkedOut()
        let second = metrics.pool(database: "app", user: "alice")
        #expect(first === second)
        let samples = Exposition.samples(metrics.render())
        #expect(samples[#"lifeguard_pool_checkouts_total{database="app",user="alice"}"#] == "1")
        let sizeSeries = samples.keys.filter { $0.hasPrefix("lifeguard_pool_size{") }
        #expect(sizeSeries.count == 1)
    }

    @Test("removePool drops exactly that pool's series; registering again starts from zero")
    func removePool() {
        let metrics = LifeguardMetrics(version: "0.1.0")
        let kept = metrics.pool(database: "app", user: "alice")
        let removed = metrics.pool(database: "app", user: "bob")
        kept.queries(3)
        removed.queries(5)
        let before = Exposition.withoutProcess(metrics)
        metrics.removePool(database: "app", user: "bob")
        let after = Exposition.withoutProcess(metrics)
        let changes = Exposition.changes(from: before, to: after)
        #expect(!changes.isEmpty)
        #expect(changes.values.allSatisfy { $0 == "absent" })
        #expect(changes.keys.allSatisfy { $0.contains(#"user="bob""#) })
        #expect(changes.count == Exposition.samples(before).keys.filter { $0.contains(#"user="bob""#) }.count)
        // Updates through a removed pool's object are harmless and invisible.
        removed.queries(1)
        #expect(Exposition.withoutProcess(metrics) == after)

        let again = metrics.pool(database: "app", user: "bob")
        #expect(again !== removed)
        #expect(Exposition.samples(metrics.render())[#"lifeguard_queries_total{database="app",user="bob"}"#] == "0")
    }

    @Test("process-wide setters move exactly their series")
    func processWideUpdates() {
        let metrics = LifeguardMetrics(version: "0.1.0")
        _ = metrics.pool(database: "app", user: "alice")
        let before = Exposition.withoutProcess(metrics)
        // Clients moving between states: 3 active, 2 waiting and 7 idle remain.
        for _ in 0..<4 { metrics.clientConnectionChanged(from: nil, to: .waiting) }
        for _ in 0..<3 { metrics.clientConnectionChanged(from: .waiting, to: .active) }
        metrics.clientConnectionChanged(from: .active, to: .active)
        for _ in 0..<8 { metrics.clientConnectionChanged(from: nil, to: .idle) }
        metrics.clientConnectionChanged(from: .idle, to: nil)
        metrics.clientConnectionChanged(from: nil, to: .waiting)
        metrics.setClientMaxConnections(100)
        metrics.clientRejected(reason: .maxClientConn)
        metrics.clientRejected(reason: .maxClientConn)
        metrics.clientRejected(reason: .protocol)
        metrics.setConfigReloadSuccessful(false)
        metrics.setUpstreamUp("default", true)
        metrics.setUpstreamUp("replica", false)
        metrics.metricsRequestRejected(reason: .unauthorized)
        metrics.metricsRequestRejected(reason: .unauthorized)
        metrics.metricsRequestRejected(reason: .noCredentials)
        let changes = Exposition.changes(from: before, to: Exposition.withoutProcess(metrics))
        #expect(
            changes == [
                #"lifeguard_client_connections{state="active"}"#: "3.0",
                #"lifeguard_client_connections{state="waiting"}"#: "2.0",
                #"lifeguard_client_connections{state="idle"}"#: "7.0",
                "lifeguard_client_max_connections": "100.0",
                #"lifeguard_client_rejected_total{reason="max_client_conn"}"#: "2",
                #"lifeguard_client_rejected_total{reason="protocol"}"#: "1",
                "lifeguard_config_last_reload_successful": "0.0",
                #"lifeguard_metrics_requests_rejected_total{reason="no_credentials"}"#: "1",
                #"lifeguard_metrics_requests_rejected_total{reason="unauthorized"}"#: "2",
                #"lifeguard_upstream_up{upstream="default"}"#: "1.0",
                #"lifeguard_upstream_up{upstream="replica"}"#: "0.0",
            ]
        )
    }

    @Test("upstream series flip between 1 and 0 and can be removed")
    func upstreamUp() {
        let metrics = LifeguardMetrics(version: "0.1.0")
        metrics.setUpstreamUp("default", true)
        metrics.setUpstreamUp("default", false)
        #expect(Exposition.samples(metrics.render())[#"lifeguard_upstream_up{upstream="default"}"#] == "0.0")
        metrics.setUpstreamUp("default", true)
        #expect(Exposition.samples(metrics.render())[#"lifeguard_upstream_up{upstream="default"}"#] == "1.0")
        metrics.removeUpstream("default")
        #expect(!metrics.render().contains("lifeguard_upstream_up"))
    }

    @Test("a certificate file's series goes when it is removed, and its expiry can change")
    func certificateExpiryRegistry() {
        let metrics = LifeguardMetrics(version: "0.1.0")
        let registry = metrics.certificateExpiry
        registry.set(file: "/tls/server.crt", expiry: Date(timeIntervalSince1970: 1_800_000_000))
        registry.set(file: "/tls/server.crt", expiry: Date(timeIntervalSince1970: 1_900_000_000))
        registry.set(file: "/tls/ca.crt", expiry: Date(timeIntervalSince1970: 2_000_000_000))
        #expect(registry.files == ["/tls/ca.crt", "/tls/server.crt"])
        #expect(
            metrics.render().contains(
                #"lifeguard_tls_certificate_expiry_timestamp_seconds{file="/tls/server.crt"} 1900000000.0"#
            )
        )
        registry.remove(file: "/tls/server.crt")
        registry.remove(file: "/tls/ca.crt")
        #expect(registry.files.isEmpty)
        #expect(!metrics.render().contains("lifeguard_tls_certificate_expiry_timestamp_seconds"))
    }

    @Test("label values are escaped")
    func labelEscaping() {
        let metrics = LifeguardMetrics(version: #"1.0 "quoted" \ back"#)
        let text = metrics.render()
        #expect(text.contains(#"lifeguard_build_info{version="1.0 \"quoted\" \\ back"} 1.0"#))
    }

    @Test("database and user names with backslash, double quote and line feed are escaped in every series")
    func poolLabelEscaping() {
        let metrics = LifeguardMetrics(version: "0.1.0")
        let pool = metrics.pool(database: "we\"ird\\db\nx", user: "ü ser")
        pool.observeWait(.milliseconds(2))
        let labels = #"database="we\"ird\\db\nx",user="ü ser""#
        let lines = Exposition.withoutProcess(metrics).split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines.contains(#"lifeguard_pool_size{\#(labels)} 0.0"#))
        #expect(lines.contains(#"lifeguard_pool_connections{\#(labels),state="used"} 0.0"#))
        #expect(lines.contains(#"lifeguard_pool_wait_seconds_bucket{\#(labels),le="0.0025"} 1"#))
        #expect(lines.contains(#"lifeguard_pool_wait_seconds_sum{\#(labels)} 0.002"#))
        #expect(lines.contains(#"lifeguard_pool_connection_errors_total{\#(labels),reason="auth"} 0"#))
        // A raw line feed in a name would split a sample line: every line of the pool is one whole sample.
        let poolLines = lines.filter { !$0.hasPrefix("lifeguard_client_") && !$0.hasPrefix("lifeguard_build_info") }
            .filter { !$0.hasPrefix("lifeguard_config_") && !$0.hasPrefix("lifeguard_metrics_requests_") }
        #expect(poolLines.count == 94)  // as in the golden exposition
        #expect(poolLines.allSatisfy { $0.contains(labels) })
    }

    @Test("the process families come last, in catalogue order, with plausible values")
    func processFamilies() throws {
        let text = LifeguardMetrics(version: "0.1.0").render()
        let start = try #require(text.range(of: "# HELP process_"))
        let samples = Exposition.samples(String(text[start.lowerBound...]))
        let names = LifeguardMetric.allCases.filter(\.isProcess).map(\.name)
        #expect(Set(samples.keys) == Set(names))
        let order = text[start.lowerBound...].split(separator: "\n").filter { $0.hasPrefix("# TYPE") }
            .map { String($0.split(separator: " ")[2]) }
        #expect(order == names)
        let value = { (name: String) in Double(samples[name] ?? "") ?? -1 }
        #expect(value("process_resident_memory_bytes") > 1_000_000)
        #expect(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"))
        #expect(value("process_cpu_seconds_total") > 0)
        #expect(value("process_open_fds") >= 3)
        #expect(value("process_max_fds") >= value("process_open_fds"))
        let now = Date().timeIntervalSince1970
        #expect(value("process_start_time_seconds") <= now + 1)
        #expect(value("process_start_time_seconds") > now - 24 * 3600)
    }

    @Test("updates from many threads while scraping lose nothing")
    func concurrentUpdatesAndScrapes() async {
        let metrics = LifeguardMetrics(version: "0.1.0")
        let pool = metrics.pool(database: "app", user: "alice")
        let workers = 8
        let perWorker = 2_000
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<workers {
                group.addTask {
                    for index in 0..<perWorker {
                        pool.checkedOut()
                        pool.observeWait(.microseconds(index % 1_000))
                        pool.connectionClosed(reason: .idle)
                        pool.setConnections(idle: index, used: 1, checkedOut: 1, overflow: 0, waiting: 0)
                    }
                }
            }
            group.addTask {
                for _ in 0..<50 {
                    // Another pool appearing and going while scraping.
                    _ = metrics.pool(database: "tmp", user: "t")
                    #expect(metrics.render().contains("lifeguard_pool_checkouts_total"))
                    metrics.removePool(database: "tmp", user: "t")
                }
            }
        }
        let samples = Exposition.samples(metrics.render())
        let total = String(workers * perWorker)
        #expect(samples[#"lifeguard_pool_checkouts_total{database="app",user="alice"}"#] == total)
        #expect(samples[#"lifeguard_pool_wait_seconds_count{database="app",user="alice"}"#] == total)
        #expect(samples[#"lifeguard_pool_wait_seconds_bucket{database="app",user="alice",le="+Inf"}"#] == total)
        #expect(
            samples[#"lifeguard_pool_connections_closed_total{database="app",user="alice",reason="idle"}"#] == total
        )
        #expect(!samples.keys.contains { $0.contains(#"database="tmp""#) })
    }

    @Test(
        "promtool check metrics is clean on real output",
        .enabled(
            if: Tools.path(of: "promtool") != nil || Tools.required,
            "promtool (Debian package prometheus) is not installed; set LIFEGUARD_REQUIRE_TOOLS=1 to make this a failure"
        )
    )
    func promtoolCheckMetrics() throws {
        guard let promtool = Tools.path(of: "promtool") else {
            Issue.record("promtool is not on PATH but LIFEGUARD_REQUIRE_TOOLS=1: install Debian's prometheus package")
            return
        }
        let metrics = LifeguardMetrics(version: "0.1.0")
        for (database, user) in [("app", "alice"), ("app", "bob"), ("reports", "carol")] {
            let pool = metrics.pool(database: database, user: user)
            pool.setConfigured(poolSize: 20, maxOverflow: 5)
            pool.setConnections(idle: 3, used: 17, checkedOut: 17, overflow: 0, waiting: 2)
            pool.observeWait(.microseconds(150))
            pool.observeUse(.seconds(120))
            pool.observeConnect(.milliseconds(12))
            pool.connectionError(reason: .auth)
            pool.connectionClosed(reason: .pingFailed)
            pool.transactions(10)
        }
        metrics.setUpstreamUp("default", true)
        let result = try Tools.run(promtool, ["check", "metrics"], input: metrics.render())
        #expect(result.status == 0, "promtool check metrics failed:\n\(result.output)")
        #expect(result.output.isEmpty, "promtool reported problems:\n\(result.output)")
    }
}
