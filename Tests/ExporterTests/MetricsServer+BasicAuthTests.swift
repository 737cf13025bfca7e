import Exporter
import Foundation
import LifeguardMetrics
import Testing
import WebConfig

@Suite("MetricsServer basic authentication and web configuration updates")
struct MetricsServerBasicAuthTests {
    /// "scrape-secret" at cost 4, made with libxcrypt.
    static let web = WebConfiguration(
        file: "web.yml",
        basicAuthUsers: ["prometheus": BcryptHash("$2y$04$abcdefghijklmnopqrstuuKLvVYiVwiPwoRaKwUkZKXFafd3RmqEi")]
    )

    static func get(port: Int, _ path: String, authorization: String?) throws -> HTTPConnection.Response {
        let connection = try HTTPConnection(port: port)
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if let authorization { request += "Authorization: \(authorization)\r\n" }
        try connection.send(request + "\r\n")
        return try connection.response()
    }

    static func basic(_ user: String, _ password: String) -> String {
        "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    static func rejected(_ metrics: LifeguardMetrics, _ reason: MetricsRejectReason) -> String? {
        let prefix = #"lifeguard_metrics_requests_rejected_total{reason="\#(reason.rawValue)"} "#
        return metrics.render().split(separator: "\n").first { $0.hasPrefix(prefix) }.map {
            String($0.dropFirst(prefix.count))
        }
    }

    @Test("every path asks for credentials; wrong ones get 401 with WWW-Authenticate and are counted")
    func basicAuth() throws {
        let metrics = LifeguardMetrics(version: "9.9.9")
        let server = MetricsServer(port: 0, metrics: metrics, readiness: { .ready }, webConfiguration: Self.web)
        let port = try server.start()
        defer { server.stop() }

        for path in ["/metrics", "/healthz", "/readyz", "/nowhere"] {
            let response = try Self.get(port: port, path, authorization: nil)
            #expect(response.status == 401, "\(path)")
            #expect(response.headers["www-authenticate"] == #"Basic realm="Lifeguard""#)
        }
        #expect(Self.rejected(metrics, .noCredentials) == "4")
        #expect(Self.rejected(metrics, .unauthorized) == "0")

        for authorization in [Self.basic("prometheus", "wrong"), Self.basic("nobody", "scrape-secret")] {
            #expect(try Self.get(port: port, "/metrics", authorization: authorization).status == 401)
        }
        #expect(Self.rejected(metrics, .unauthorized) == "2")

        // Twice: the second is answered from the remembered digest.
        for _ in 0..<2 {
            let response = try Self.get(
                port: port,
                "/healthz",
                authorization: Self.basic("prometheus", "scrape-secret")
            )
            #expect(response.status == 200)
            #expect(response.body == "ok\n")
        }
        #expect(Self.rejected(metrics, .unauthorized) == "2")
    }

    @Test("a new web configuration takes over the same port; an unchanged one changes nothing")
    func update() throws {
        let metrics = LifeguardMetrics(version: "9.9.9")
        let server = MetricsServer(port: 0, metrics: metrics, readiness: { .ready })
        let port = try server.start()
        defer { server.stop() }
        #expect(try Self.get(port: port, "/healthz", authorization: nil).status == 200)

        try server.update(webConfiguration: Self.web)
        #expect(server.port == port)
        #expect(server.webConfiguration == Self.web)
        #expect(try Self.get(port: port, "/healthz", authorization: nil).status == 401)
        try server.update(webConfiguration: Self.web)
        #expect(
            try Self.get(port: port, "/healthz", authorization: Self.basic("prometheus", "scrape-secret")).status == 200
        )

        try server.update(webConfiguration: nil)
        #expect(try Self.get(port: port, "/healthz", authorization: nil).status == 200)
    }

    @Test("TLS material libmicrohttpd refuses fails the update, and the old configuration keeps serving")
    func refusedUpdate() throws {
        let metrics = LifeguardMetrics(version: "9.9.9")
        let server = MetricsServer(port: 0, metrics: metrics, readiness: { .ready }, webConfiguration: Self.web)
        let port = try server.start()
        defer { server.stop() }
        let broken = WebConfiguration(
            file: "broken.yml",
            tls: TLSServerConfiguration(
                certificate: CertificateFile(file: "x.crt", pem: "not a certificate", notAfter: Date()),
                keyFile: "x.key",
                privateKey: PrivateKeyPEM("not a key")
            )
        )
        #expect(throws: MetricsServerError.self) { try server.update(webConfiguration: broken) }
        #expect(server.port == port)
        #expect(server.webConfiguration == Self.web)
        #expect(try Self.get(port: port, "/healthz", authorization: nil).status == 401)
    }
}
