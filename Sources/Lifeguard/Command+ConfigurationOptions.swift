import ArgumentParser
import Foundation
import LifeguardConfig

extension Command {
    /// The flags `run` and `check-config` share. Values stay strings here: LifeguardConfig checks them, so a bad
    /// flag gets the same message as a bad file or environment value.
    struct ConfigurationOptions: ParsableArguments {
        @Option(
            help: ArgumentHelp(
                "TOML configuration file, or a pgbouncer.ini (default: LIFEGUARD_CONFIG, if set).",
                valueName: "FILE"
            )
        )
        var config: String?

        @Option(help: ArgumentHelp("Address clients connect to (default 127.0.0.1:6432).", valueName: "HOST:PORT"))
        var listen: String?

        @Option(
            help: ArgumentHelp(
                "Upstream PostgreSQL, as a URI or key=value connection string (default: DATABASE_URL). "
                    + "Prefer LIFEGUARD_UPSTREAM or the file for passwords: flags show in the process list.",
                valueName: "DSN"
            )
        )
        var upstream: String?

        @Option(
            help: ArgumentHelp(
                "Address of /metrics, /healthz, /readyz (default 127.0.0.1:9187).",
                valueName: "HOST:PORT"
            )
        )
        var metricsListen: String?

        @Option(
            help: ArgumentHelp(
                "Web configuration of the metrics address (TLS, basic auth), in Prometheus exporter-toolkit's format.",
                valueName: "FILE"
            )
        )
        var metricsWebConfig: String?

        @Option(help: ArgumentHelp("session, transaction or statement (default session).", valueName: "MODE"))
        var poolMode: String?

        @Option(help: ArgumentHelp("Server connections kept per pool (default 5).", valueName: "N"))
        var poolSize: String?

        @Option(help: ArgumentHelp("Connections opened eagerly and kept warm (default 0).", valueName: "N"))
        var minSize: String?

        @Option(help: ArgumentHelp("Extra connections allowed during spikes (default 10).", valueName: "N"))
        var maxOverflow: String?

        @Option(
            help: ArgumentHelp("How long a client waits for a server connection (default 30s).", valueName: "DURATION")
        )
        var poolTimeout: String?

        @Option(help: ArgumentHelp("Close server connections older than this (default off).", valueName: "DURATION"))
        var poolRecycle: String?

        @Flag(inversion: .prefixedNo, help: "Verify an idle connection before handing it out (default on).")
        var prePing: Bool?

        @Option(
            help: ArgumentHelp("Only verify connections idle longer than this (default 1s).", valueName: "DURATION")
        )
        var prePingDelay: String?

        @Option(
            help: ArgumentHelp("Close connections above min-size idle this long (default 600s).", valueName: "DURATION")
        )
        var idleTimeout: String?

        @Option(help: ArgumentHelp("Report a connection held longer than this (default off).", valueName: "DURATION"))
        var leakThreshold: String?

        @Option(help: ArgumentHelp("Client connections accepted in total (default 100).", valueName: "N"))
        var maxClientConn: String?

        @Option(
            help: ArgumentHelp(
                "Server connections per database, all its pools together; 0 for no cap (default 0).",
                valueName: "N"
            )
        )
        var maxDBConnections: String?

        @Option(
            help: ArgumentHelp(
                "How long SIGTERM waits for transactions in flight (default 30s).",
                valueName: "DURATION"
            )
        )
        var drainTimeout: String?

        @Option(
            help: ArgumentHelp(
                "Query that resets a returned server connection (default DISCARD ALL).",
                valueName: "SQL"
            )
        )
        var resetQuery: String?

        @Option(
            help: ArgumentHelp(
                "Query run once on every new server connection before its first use (default none).",
                valueName: "SQL"
            )
        )
        var connectQuery: String?

        @Option(
            help: ArgumentHelp(
                "trace, debug, info, notice, warning, error or critical (default info).",
                valueName: "LEVEL"
            )
        )
        var logLevel: String?

        @Option(
            help: ArgumentHelp("Client authentication: trust, md5 or scram-sha-256 (default unset).", valueName: "TYPE")
        )
        var authType: String?

        @Option(
            help: ArgumentHelp(
                "Directory for the Unix socket .s.PGSQL.<port>, beside TCP (default none).",
                valueName: "DIR"
            )
        )
        var unixSocketDir: String?

        @Option(help: ArgumentHelp("Permission bits of the Unix socket (default 0777).", valueName: "MODE"))
        var unixSocketMode: String?

        @Option(help: ArgumentHelp("Group owning the Unix socket (default the process's).", valueName: "GROUP"))
        var unixSocketGroup: String?

        @Option(help: ArgumentHelp("PgBouncer-style userlist file with client passwords.", valueName: "FILE"))
        var authFile: String?

        @Option(
            name: .customLong("client-tls-sslmode"),
            help: ArgumentHelp(
                "TLS towards clients: disable, allow, prefer, require, verify-ca or verify-full (default disable).",
                valueName: "MODE"
            )
        )
        var clientTLSSSLMode: String?

        @Option(
            name: .customLong("client-tls-cert-file"),
            help: ArgumentHelp("Lifeguard's certificate for clients (PEM).", valueName: "FILE")
        )
        var clientTLSCertFile: String?

        @Option(
            name: .customLong("client-tls-key-file"),
            help: ArgumentHelp("The private key of client_tls_cert_file (PEM).", valueName: "FILE")
        )
        var clientTLSKeyFile: String?

        @Option(
            name: .customLong("client-tls-ca-file"),
            help: ArgumentHelp("CAs of the client certificates accepted (verify-ca, verify-full).", valueName: "FILE")
        )
        var clientTLSCAFile: String?

        @Option(
            name: .customLong("client-tls-protocols"),
            help: ArgumentHelp("TLS versions offered to clients (default tlsv1.2,tlsv1.3).", valueName: "LIST")
        )
        var clientTLSProtocols: String?

        @Option(
            name: .customLong("client-tls-ciphers"),
            help: ArgumentHelp("OpenSSL cipher list for TLS 1.2 clients (default: BoringSSL's).", valueName: "LIST")
        )
        var clientTLSCiphers: String?

        @Option(
            help: ArgumentHelp(
                "Role that looks up the secrets of users not in auth_file with auth_query (default unset).",
                valueName: "ROLE"
            )
        )
        var authUser: String?

        @Option(
            help: ArgumentHelp(
                "Query returning (user name, secret) for the user $1 (default: PgBouncer's, from pg_authid).",
                valueName: "SQL"
            )
        )
        var authQuery: String?

        @Option(
            help: ArgumentHelp(
                "Database auth_query runs in (default: the client's own).",
                valueName: "NAME"
            )
        )
        var authDbname: String?

        @Option(
            help: ArgumentHelp(
                "Users who may run every admin console command (database pgbouncer; default none).",
                valueName: "USERS"
            )
        )
        var adminUsers: String?

        @Option(
            help: ArgumentHelp(
                "Users who may run the admin console's SHOW commands (default none).",
                valueName: "USERS"
            )
        )
        var statsUsers: String?

        /// What to load: the file (`file` overrides `--config`), this process's environment, and the flags given.
        func sources(file: String? = nil) -> ConfigurationSources {
            var flags: [Setting: String] = [:]
            let values: [(Setting, String?)] = [
                (.listen, self.listen), (.upstream, self.upstream), (.metricsListen, self.metricsListen),
                (.metricsWebConfig, self.metricsWebConfig),
                (.poolMode, self.poolMode), (.poolSize, self.poolSize), (.minSize, self.minSize),
                (.maxOverflow, self.maxOverflow), (.poolTimeout, self.poolTimeout), (.poolRecycle, self.poolRecycle),
                (.prePing, self.prePing.map { String($0) }), (.prePingDelay, self.prePingDelay),
                (.idleTimeout, self.idleTimeout), (.leakThreshold, self.leakThreshold),
                (.maxClientConn, self.maxClientConn), (.maxDBConnections, self.maxDBConnections),
                (.drainTimeout, self.drainTimeout),
                (.resetQuery, self.resetQuery), (.connectQuery, self.connectQuery), (.logLevel, self.logLevel),
                (.authType, self.authType), (.authFile, self.authFile), (.authUser, self.authUser),
                (.authQuery, self.authQuery),
                (.authDbname, self.authDbname), (.clientTLSSSLMode, self.clientTLSSSLMode),
                (.clientTLSCertFile, self.clientTLSCertFile), (.clientTLSKeyFile, self.clientTLSKeyFile),
                (.clientTLSCAFile, self.clientTLSCAFile), (.clientTLSProtocols, self.clientTLSProtocols),
                (.clientTLSCiphers, self.clientTLSCiphers), (.unixSocketDir, self.unixSocketDir),
                (.unixSocketMode, self.unixSocketMode), (.unixSocketGroup, self.unixSocketGroup),
                (.adminUsers, self.adminUsers), (.statsUsers, self.statsUsers),
            ]
            for case (let setting, let value?) in values { flags[setting] = value }
            return ConfigurationSources(
                configFile: file ?? self.config,
                environment: ProcessInfo.processInfo.environment,
                flags: flags
            )
        }

        /// Loads the configuration; on problems prints one line each to stderr and exits with status 2.
        func load(file: String? = nil) throws -> LifeguardConfiguration {
            do {
                let configuration = try LifeguardConfiguration.load(self.sources(file: file))
                for warning in configuration.provenance.warnings { printError("warning: \(warning)") }
                return configuration
            } catch {
                for line in error.lines { printError(line) }
                throw ExitCode(2)
            }
        }
    }
}

/// Writes a line to stderr (unbuffered, so it appears before the process exits).
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
