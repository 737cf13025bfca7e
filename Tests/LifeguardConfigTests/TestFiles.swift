import Foundation

/// Temporary files for configuration tests, removed when the value is dropped.
final class TemporaryFile: Sendable {
    let path: String

    init(_ contents: String, suffix: String = ".toml") throws {
        self.path =
            FileManager.default.temporaryDirectory
            .appendingPathComponent("lifeguard-config-\(UUID().uuidString)\(suffix)").path
        try contents.write(toFile: self.path, atomically: true, encoding: .utf8)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: self.path)
    }
}

/// The repository's docs folder, found from this file (through the dev package's symlinks, if any).
let docsDirectory: URL = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("docs")
