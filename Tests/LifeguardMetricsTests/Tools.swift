import Foundation

/// External tools the tests run (promtool), found on PATH.
enum Tools {
    /// `LIFEGUARD_REQUIRE_TOOLS=1` turns a missing tool from a skip into a failure (CI sets it).
    static var required: Bool {
        ProcessInfo.processInfo.environment["LIFEGUARD_REQUIRE_TOOLS"] == "1"
    }

    static func path(of tool: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs `executable` with `input` on stdin; returns its exit status and stdout and stderr together.
    static func run(
        _ executable: String,
        _ arguments: [String],
        input: String
    ) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdin = Pipe()
        let output = Pipe()
        process.standardInput = stdin
        process.standardOutput = output
        process.standardError = output
        try process.run()
        // Write from another thread: a large input could fill the pipe while the tool's output fills the other one.
        let writer = Thread {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try? stdin.fileHandleForWriting.close()
        }
        writer.start()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
