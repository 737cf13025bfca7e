import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL 15 cluster: initdb in a temporary directory as the `postgres` user, listening on
/// 127.0.0.1 and a port the OS picked, removed by ``destroy()``.
final class TestPostgres: Sendable {
    static let binaries = "/usr/lib/postgresql/15/bin"

    let directory: String
    let port: Int

    init() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("lifeguard-upstream-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.port = try Self.freePort()
        // initdb refuses root, so the cluster belongs to the postgres user.
        try Self.run("/bin/chown", ["postgres:postgres", directory])
        try Self.runAsPostgres("initdb", ["-D", "\(directory)/data", "-A", "trust", "-U", "postgres", "--no-sync"])
        try self.start()
    }

    /// Starts the server; `asStandbyWithoutHotStandby` makes it a standby that refuses connections with 57P03,
    /// which `PQpingParams` reports as "rejected".
    func start(asStandbyWithoutHotStandby: Bool = false) throws {
        var options = "-p \(self.port) -k \(self.directory) -c listen_addresses=127.0.0.1 -c fsync=off"
        if asStandbyWithoutHotStandby {
            try Self.run(
                "/usr/sbin/runuser",
                ["-u", "postgres", "--", "/usr/bin/touch", "\(self.directory)/data/standby.signal"]
            )
            options += " -c hot_standby=off"
        } else {
            try? FileManager.default.removeItem(atPath: "\(self.directory)/data/standby.signal")
        }
        try Self.runAsPostgres(
            "pg_ctl",
            ["-D", "\(self.directory)/data", "-o", options, "-l", "\(self.directory)/log", "-w", "start"]
        )
    }

    func stop() throws {
        try Self.runAsPostgres("pg_ctl", ["-D", "\(self.directory)/data", "-m", "fast", "-w", "stop"])
    }

    /// Stops the server if it runs and removes its directory.
    func destroy() {
        try? Self.runAsPostgres("pg_ctl", ["-D", "\(self.directory)/data", "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    private static func runAsPostgres(_ tool: String, _ arguments: [String]) throws {
        try Self.run("/usr/sbin/runuser", ["-u", "postgres", "--", "\(Self.binaries)/\(tool)"] + arguments)
    }

    /// Runs a program to completion. posix_spawn and waitpid rather than Foundation's `Process`, whose
    /// `waitUntilExit` was seen to hang here on a child that had already exited.
    private static func run(_ executable: String, _ arguments: [String]) throws {
        let logPath = FileManager.default.temporaryDirectory.appendingPathComponent("spawn-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: logPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard spawned == 0 else { throw CommandFailed(command: executable, output: "posix_spawn: \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        let exitedCleanly = (status & 0x7f) == 0 && (status >> 8) & 0xff == 0
        guard exitedCleanly else {
            let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            throw CommandFailed(command: ([executable] + arguments).joined(separator: " "), output: output)
        }
    }

    /// A port the kernel just handed out on 127.0.0.1 and that nobody listens on.
    static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw CommandFailed(command: "socket", output: String(errno)) }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(descriptor, socketAddress, length) == 0 && getsockname(descriptor, socketAddress, &length) == 0
            }
        }
        guard bound else { throw CommandFailed(command: "bind", output: String(errno)) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    struct CommandFailed: Error, CustomStringConvertible {
        let command: String
        let output: String
        var description: String { "\(self.command) failed: \(self.output)" }
    }
}
