import ArgumentParser
import LifeguardConfig

extension Command {
    /// `lifeguard run`: validate the configuration, then serve. A bad configuration exits 2 before any port opens.
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the pooler (the default command).")

        @OptionGroup var options: ConfigurationOptions

        func run() async throws {
            let configuration = try self.options.load()
            try await LifeguardServer(configuration: configuration).run()
        }
    }
}
