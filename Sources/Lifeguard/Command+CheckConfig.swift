import ArgumentParser
import LifeguardConfig
import Proxy

extension Command {
    /// `lifeguard check-config [FILE]`: print the effective configuration (passwords masked) and exit 0, or one line
    /// per problem on stderr and exit 2.
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
            // What only opening the files can tell: certificates, keys, CAs.
            let problems = ProxyServer.tlsProblems(configuration)
            guard problems.isEmpty else {
                for problem in problems { printError(problem) }
                throw ExitCode(2)
            }
            print(configuration.rendered(), terminator: "")
        }
    }
}
