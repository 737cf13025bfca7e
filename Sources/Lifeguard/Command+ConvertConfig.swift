import ArgumentParser
import Foundation
import LifeguardConfig

extension Command {
    /// `lifeguard convert-config pgbouncer.ini`: print the equivalent Lifeguard TOML, with a comment on each value
    /// whose meaning differs from PgBouncer's and a list of what was not carried over; exit 2 on problems.
    struct ConvertConfig: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "convert-config",
            abstract: "Print a pgbouncer.ini as Lifeguard's TOML, with what changed or was dropped.",
            discussion: """
                Reads the file alone: LIFEGUARD_* variables and DATABASE_URL are not applied, so the output is the \
                file's own meaning. Passwords are masked; keep them in auth_file or write them back.
                """
        )

        @Argument(help: ArgumentHelp("The pgbouncer.ini (or Lifeguard TOML) file to convert.", valueName: "FILE"))
        var file: String

        func run() throws {
            let configuration: LifeguardConfiguration
            do {
                configuration = try LifeguardConfiguration.load(ConfigurationSources(configFile: self.file))
            } catch {
                for line in error.lines { printError(line) }
                throw ExitCode(2)
            }
            for warning in configuration.provenance.warnings { printError("warning: \(warning)") }
            print(configuration.rendered(conversion: true), terminator: "")
        }
    }
}
