import ArgumentParser
import LifeguardConfig

extension Command {
    /// `lifeguard version`.
    struct Version: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print Lifeguard's version.")

        func run() {
            print("lifeguard \(lifeguardVersion)")
        }
    }
}
