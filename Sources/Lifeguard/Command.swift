import ArgumentParser
import LifeguardConfig

/// `lifeguard`: run the pooler (the default), check a configuration, or print the version.
@main
struct Command: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lifeguard",
        abstract: "A PostgreSQL connection-pool sidecar that exports its pool as Prometheus metrics.",
        discussion: """
            Settings come from, lowest to highest precedence: built-in defaults, the TOML file or pgbouncer.ini \
            (--config or LIFEGUARD_CONFIG), LIFEGUARD_* environment variables, then flags. DATABASE_URL is the upstream when \
            nothing else names one. docs/configuration.md describes every setting.
            """,
        version: lifeguardVersion,
        subcommands: [Run.self, CheckConfig.self, ConvertConfig.self, Version.self],
        defaultSubcommand: Run.self
    )
}
