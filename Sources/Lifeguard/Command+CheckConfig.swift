import ArgumentParser
import Foundation
import LifeguardConfig
import Proxy

extension Command {
    /// `lifeguard check-config [FILE]`: print the effective configuration (passwords masked) and exit 0, or one line
    /// per problem on stderr and exit 2. Beyond what `run` refuses, an expired certificate of `metrics_web_config` is a
    /// problem here (`run` serves it and warns, so that the sidecar stays up).
    struct CheckConfig: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check-config",
            abstract: "Validate the configuration and print it with passwords masked."
        )

        @Argument(
            help: ArgumentHelp("The TOML file or pgbouncer.ini to check (same as --config).", valueName: "FILE")
        )
        var file: String?

        @OptionGroup var options: ConfigurationOptions

        func validate() throws {
            if let file, let config = self.options.config, file != config {
                throw ValidationError("give the file either as an argument or with --config, not both")
            }
        }

        func run() throws {
            let configuration = try self.options.load(file: self.file)
            // What only opening the files can tell: certificates, keys, CAs. The web configuration's files were
            // opened by loading; only their expiry is left to check.
            var problems = ProxyServer.tlsProblems(configuration)
            if let web = configuration.metricsWebConfig {
                for certificate in web.expiredCertificates(at: Date()) {
                    problems.append(
                        "\(web.file): \(certificate.file): a certificate expired on "
                            + certificate.notAfter.ISO8601Format()
                    )
                }
            }
            guard problems.isEmpty else {
                for problem in problems { printError(problem) }
                throw ExitCode(2)
            }
            print(configuration.rendered(), terminator: "")
        }
    }
}
