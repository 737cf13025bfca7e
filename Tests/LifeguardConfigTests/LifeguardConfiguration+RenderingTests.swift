import Foundation
import Testing
import Upstream

@testable import LifeguardConfig

@Suite struct LifeguardConfigurationRenderingTests {
    @Test func rendersEveryValueWithItsOrigin() throws {
        let file = try TemporaryFile(
            """
            pool_size = 12
            pool_recycle = "30m"
            [databases.orders]
            dsn = "host=orders.example dbname=orders"
            max_overflow = 2
            """
        )
        let configuration = try LifeguardConfiguration.load(
            ConfigurationSources(
                configFile: file.path,
                environment: ["LIFEGUARD_POOL_MODE": "transaction", "DATABASE_URL": "host=up.example"],
                flags: [.leakThreshold: "45s"]
            )
        )
        let lines = configuration.rendered().split(separator: "\n").map(String.init)
        #expect(lines.contains("pool_size = 12  # \(file.path):1"))
        #expect(lines.contains("pool_recycle = \"30m\"  # \(file.path):2"))
        #expect(lines.contains("pool_mode = \"transaction\"  # LIFEGUARD_POOL_MODE"))
        #expect(lines.contains("leak_threshold = \"45s\"  # --leak-threshold"))
        // A [databases] entry exists, so DATABASE_URL is not the upstream.
        #expect(lines.contains("# upstream is not set  # default"))
        #expect(lines.contains("max_overflow = 10  # default"))
        #expect(lines.contains("idle_timeout = \"10m\"  # default"))
        #expect(lines.contains("# auth_type is not set  # default"))
        #expect(lines.contains("[databases.orders]"))
        #expect(lines.contains("dsn = \"dbname=orders host=orders.example\"  # \(file.path):4"))
        #expect(lines.contains("max_overflow = 2  # \(file.path):5"))
        #expect(lines.contains("pool_size = 12  # inherited"))
    }

    @Test func theRenderedFileLoadsBackToTheSameConfiguration() throws {
        let original = try LifeguardConfiguration.load(
            ConfigurationSources(
                environment: [:],
                flags: [
                    .upstream: "host=127.0.0.1 port=5432 user=app dbname=app", .poolMode: "statement",
                    .poolTimeout: "0.0005", .prePingDelay: "1500ms", .idleTimeout: "0", .resetQuery: "",
                    .authType: "scram-sha-256", .authFile: SettingCase.authFile, .listen: "[::1]:7000",
                ]
            )
        )
        let file = try TemporaryFile(original.rendered())
        let again = try LifeguardConfiguration.load(ConfigurationSources(configFile: file.path))
        #expect(again == original)
    }

    @Test(arguments: [
        "postgresql://app:hunter2secret@db.example:5432/orders",
        "host=db.example user=app password=hunter2secret",
        "host=db.example password='hunter2secret with spaces'",
        "postgresql://app@db.example/orders?password=hunter2secret",
    ])
    func passwordsNeverAppearInTheRenderedConfiguration(dsn: String) throws {
        let escaped = dsn.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"")
        let file = try TemporaryFile("upstream = \"\(escaped)\"\n[databases.app]\ndsn = \"\(escaped)\"\n")
        let configuration = try LifeguardConfiguration.load(
            ConfigurationSources(configFile: file.path, environment: ["DATABASE_URL": dsn])
        )
        let text = configuration.rendered()
        #expect(!text.contains("hunter2"))
        #expect(text.contains("password=********"))
        #expect(!"\(configuration.upstream!)".contains("hunter2"))
    }

    @Test(arguments: [
        // libpq quotes the bad part, which is the password itself or the whole URI.
        "postgresql://app:hunter2secret@[::1/db",
        "postgresql://app:hunter2%zzsecret@db/orders",
        "host=db password=hunter2secret bogus",
        "postgresql://app@db/orders?password=hunter2%00secret",
        "postgresql://app:hunter2secret@db:99999/orders",
    ])
    func passwordsNeverAppearInErrors(dsn: String) throws {
        let escaped = dsn.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"")
        let file = try TemporaryFile(
            "upstream = \"\(escaped)\"\nlisten = \"\(escaped)\"\n[databases.app]\ndsn = \"\(escaped)\"\n"
        )
        do {
            _ = try LifeguardConfiguration.load(
                ConfigurationSources(
                    configFile: file.path,
                    environment: ["LIFEGUARD_UPSTREAM": dsn, "LIFEGUARD_METRICS_LISTEN": dsn],
                    flags: [.upstream: dsn, .authFile: dsn]
                )
            )
            Issue.record("loaded")
        } catch {
            #expect(error.problems.count >= 6)
            for line in error.lines {
                #expect(!line.contains("hunter2"), "\(line)")
            }
        }
    }

    @Test func aTOMLSyntaxErrorNearAPasswordDoesNotEchoIt() throws {
        let file = try TemporaryFile("upstream = \"postgresql://app:hunter2secret@db/x\" junk\n")
        do {
            _ = try LifeguardConfiguration.load(ConfigurationSources(configFile: file.path))
            Issue.record("loaded")
        } catch {
            #expect(error.lines.count == 1)
            #expect(!error.description.contains("hunter2"))
        }
    }

    @Test(arguments: [
        (Duration.seconds(7200), "2h"), (.seconds(90), "90s"), (.seconds(120), "2m"), (.milliseconds(250), "250ms"),
        (.microseconds(1500), "0.001500"), (.zero, "0s"),
    ])
    func durations(duration: Duration, text: String) {
        #expect(LifeguardConfiguration.duration(duration) == text)
    }
}
