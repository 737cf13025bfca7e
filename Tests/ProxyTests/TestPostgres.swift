import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL 15 cluster: initdb in a temporary directory as the `postgres` user, on 127.0.0.1 and a port
/// the OS picked, removed by ``destroy()``. Role `postgres` is trusted; role `app` needs md5 password `secret`.
final class TestPostgres: Sendable {
    static let binaries = "/usr/lib/postgresql/15/bin"

    static var isAvailable: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "\(binaries)/initdb")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/psql")
    }

    let directory: String
    let port: Int

    init() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("lifeguard-proxy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.port = try Self.freePort()
        try Self.check(Self.run("/bin/chown", ["postgres:postgres", directory]))
        try Self.check(
            Self.runAsPostgres("initdb", ["-D", "\(directory)/data", "-A", "trust", "-U", "postgres", "--no-sync"])
        )
        try """
        local all all trust
        host all postgres 127.0.0.1/32 trust
        host all all 127.0.0.1/32 md5

        """.write(toFile: "\(directory)/data/pg_hba.conf", atomically: true, encoding: .utf8)
        let options = "-p \(self.port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off"
        try Self.check(
            Self.runAsPostgres(
                "pg_ctl",
                ["-D", "\(directory)/data", "-o", options, "-l", "\(directory)/log", "-w", "start"]
            )
        )
        let created = Self.psql(port: self.port, user: "postgres", "CREATE ROLE app LOGIN PASSWORD 'secret'")
        try Self.check(created)
    }

    /// Stops the server and removes its directory.
    func destroy() {
        _ = Self.runAsPostgres("pg_ctl", ["-D", "\(self.directory)/data", "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    /// psql against a port, as `user`: one `-c` per command; the exit status and stdout+stderr.
    static func psql(
        port: Int,
        user: String,
        database: String = "postgres",
        password: String? = nil,
        _ commands: String...
    ) -> (status: Int32, output: String) {
        var arguments = ["-h", "127.0.0.1", "-p", "\(port)", "-U", user, "-d", database, "-At", "-X", "-w"]
        for command in commands { arguments += ["-c", command] }
        var environment = ["PATH=/usr/bin:/bin"]
        if let password { environment.append("PGPASSWORD=\(password)") }
        return Self.run("/usr/bin/psql", arguments, environment: environment)
    }

    /// The same, off the cooperative thread pool (the proxy's pools need it while psql runs).
    static func psqlAsync(
        port: Int,
        user: String,
        database: String = "postgres",
        password: String? = nil,
        _ commands: [String]
    ) async -> (status: Int32, output: String) {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var arguments = ["-h", "127.0.0.1", "-p", "\(port)", "-U", user, "-d", database, "-At", "-X", "-w"]
                for command in commands { arguments += ["-c", command] }
                var environment = ["PATH=/usr/bin:/bin"]
                if let password { environment.append("PGPASSWORD=\(password)") }
                continuation.resume(returning: Self.run("/usr/bin/psql", arguments, environment: environment))
            }
        }
    }

    /// ``run(_:_:environment:)`` off the cooperative thread pool (the proxy's pools need it while the tool runs).
    static func runAsync(
        _ executable: String,
        _ arguments: [String],
        environment: [String]? = nil
    ) async -> (status: Int32, output: String) {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Self.run(executable, arguments, environment: environment))
            }
        }
    }

    private static func runAsPostgres(_ tool: String, _ arguments: [String]) -> (status: Int32, output: String) {
        Self.run("/usr/sbin/runuser", ["-u", "postgres", "--", "\(Self.binaries)/\(tool)"] + arguments)
    }

    private static func check(_ result: (status: Int32, output: String)) throws {
        guard result.status == 0 else { throw CommandFailed(output: result.output) }
    }

    /// posix_spawn and waitpid: Foundation's `Process` hangs on `pg_ctl start`, whose server keeps its descriptors.
    static func run(
        _ executable: String,
        _ arguments: [String],
        environment: [String]? = nil
    ) -> (status: Int32, output: String) {
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
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup($0) } + [nil] }
        defer { for pointer in envp ?? [] { free(pointer) } }
        var pid: pid_t = 0
        let spawned =
            envp.map { envp in
                envp.withUnsafeBufferPointer { posix_spawn(&pid, executable, &actions, nil, argv, $0.baseAddress) }
            } ?? posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard spawned == 0 else { return (-1, "posix_spawn: \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        let exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
        return (exitStatus, output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// A port the kernel just handed out on 127.0.0.1 and that nobody listens on.
    static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw CommandFailed(output: "socket: \(errno)") }
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
        guard bound else { throw CommandFailed(output: "bind: \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    struct CommandFailed: Error, CustomStringConvertible {
        let output: String
        var description: String { self.output }
    }
}
