import ArgumentParser
import LifeguardConfig

extension Command {
    /// `lifeguard check-config [FILE]`: print the effective configuration (passwords masked) and exit 0, or one line
    /// per problem on stderr and exit 2.
    struct CheckConfig: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check-config",
            abstract: "Validate the configuration and print it with passwords masked."
        )

        @Argument(help: ArgumentHelp("The TOML file to check (same as --config).", valueName: "FILE"))
        var file: String?

        @OptionGroup var options: ConfigurationOptions

        func validate() throws {
            if let file, let config = self.options.config, file != config {
                throw ValidationError("give the file either as an argument or with --config, not both")
            }
        }

        func run() throws {
            let configuration = try self.options.load(file: self.file)
            print(configuration.rendered(), terminator: "")
        }
    }
}
