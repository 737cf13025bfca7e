import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL 15 cluster for tests: initdb in a temporary directory as the `postgres` user, listening on
/// 127.0.0.1 and a port the OS picked, removed by ``destroy()``. Role `postgres` is trusted over the Unix socket.
public final class TestPostgres: Sendable {
    public static let binaries = "/usr/lib/postgresql/15/bin"

    /// Root (initdb runs as `postgres` through runuser) and the Debian postgresql-15 and psql binaries.
    public static var isAvailable: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "\(binaries)/initdb")
            && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/psql")
    }

    public let directory: String
    public let port: Int
    /// `-c name=value` server settings passed on every start.
    private let settings: [String: String]

    /// Creates and starts a cluster.
    /// - Parameters:
    ///   - hba: the whole pg_hba.conf; nil keeps initdb's, which trusts every local and 127.0.0.1 connection.
    ///   - settings: server settings beyond the listen address, socket directory and `fsync=off`.
    ///   - setupSQL: run once the server is up, as `postgres` over the Unix socket, stopping at the first error.
    public init(hba: String? = nil, settings: [String: String] = [:], setupSQL: String? = nil) throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("lifeguard-postgres-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.port = try Self.freePort()
        self.settings = settings
        // initdb refuses root, so the cluster belongs to the postgres user.
        try Self.check("/bin/chown", ["postgres:postgres", directory])
        try Self.runAsPostgres("initdb", ["-D", "\(directory)/data", "-A", "trust", "-U", "postgres", "--no-sync"])
        if let hba {
            try hba.write(toFile: "\(directory)/data/pg_hba.conf", atomically: true, encoding: .utf8)
        }
        try self.start()
        if let setupSQL {
            try self.psql(setupSQL)
        }
    }

    /// Starts the server; `asStandbyWithoutHotStandby` makes it a standby that refuses connections with 57P03,
    /// which `PQpingParams` reports as "rejected".
    public func start(asStandbyWithoutHotStandby: Bool = false) throws {
        var options = "-p \(self.port) -k \(self.directory) -c listen_addresses=127.0.0.1 -c fsync=off"
        for (name, value) in self.settings.sorted(by: { $0.key < $1.key }) {
            options += " -c \(name)=\(value)"
        }
        if asStandbyWithoutHotStandby {
            try Self.check(
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

    /// Stops the server (fast shutdown) and keeps its data for a later ``start(asStandbyWithoutHotStandby:)``.
    public func stop() throws {
        try Self.runAsPostgres("pg_ctl", ["-D", "\(self.directory)/data", "-m", "fast", "-w", "stop"])
    }

    /// Stops the server if it runs and removes its directory.
    public func destroy() {
        _ = try? Self.runAsPostgres("pg_ctl", ["-D", "\(self.directory)/data", "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    /// Runs SQL as `postgres` over the Unix socket, whatever pg_hba.conf says about TCP; stops at the first error and
    /// returns the unaligned, tuples-only output, trimmed.
    @discardableResult
    public func psql(_ sql: String) throws -> String {
        try Self.runAsPostgres(
            "psql",
            [
                "-h", self.directory, "-p", "\(self.port)", "-U", "postgres", "-d", "postgres", "-At", "-X", "-v",
                "ON_ERROR_STOP=1", "-c", sql,
            ]
        )
    }

    /// psql against a port over TCP, as `user`: one `-c` per command; the exit status and stdout+stderr.
    public static func psql(
        port: Int,
        user: String,
        database: String = "postgres",
        password: String? = nil,
        _ commands: String...
    ) -> (status: Int32, output: String) {
        Self.psql(port: port, user: user, database: database, password: password, commands)
    }

    /// The same, off the cooperative thread pool (a server in the test process may need it while psql runs).
    public static func psqlAsync(
        port: Int,
        user: String,
        database: String = "postgres",
        password: String? = nil,
        _ commands: [String]
    ) async -> (status: Int32, output: String) {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(
                    returning: Self.psql(port: port, user: user, database: database, password: password, commands)
                )
            }
        }
    }

    private static func psql(
        port: Int,
        user: String,
        database: String,
        password: String?,
        _ commands: [String]
    ) -> (status: Int32, output: String) {
        var arguments = ["-h", "127.0.0.1", "-p", "\(port)", "-U", user, "-d", database, "-At", "-X", "-w"]
        for command in commands { arguments += ["-c", command] }
        var environment = ["PATH=/usr/bin:/bin"]
        if let password { environment.append("PGPASSWORD=\(password)") }
        return Self.run("/usr/bin/psql", arguments, environment: environment)
    }

    /// ``run(_:_:environment:)`` off the cooperative thread pool (a server in the test process may need it while the
    /// tool runs).
    public static func runAsync(
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

    /// Runs a program to completion: its exit status (-1 if a signal ended it) and stdout+stderr, trimmed.
    /// `environment` replaces the test process's environment when given.
    ///
    /// posix_spawn and waitpid: Foundation's `Process` hangs on `pg_ctl start`, whose server keeps its descriptors.
    /// The child starts with no signal blocked: test runners block some (SIGALRM among them), and a child inherits
    /// the mask, which stops e.g. `pgbench -T` from ever seeing its timer.
    public static func run(
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
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup($0) } + [nil] }
        defer { for pointer in envp ?? [] { free(pointer) } }
        var pid: pid_t = 0
        let spawned =
            envp.map { envp in
                envp.withUnsafeBufferPointer {
                    posix_spawn(&pid, executable, &actions, &attributes, argv, $0.baseAddress)
                }
            } ?? posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard spawned == 0 else { return (-1, "posix_spawn: \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        // WIFEXITED ? WEXITSTATUS : -1
        let exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
        return (exitStatus, output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// A port the kernel just handed out on 127.0.0.1 and that nobody listens on.
    public static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw CommandFailed(command: "socket", output: "errno \(errno)") }
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
        guard bound else { throw CommandFailed(command: "bind", output: "errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @discardableResult
    private static func runAsPostgres(_ tool: String, _ arguments: [String]) throws -> String {
        try Self.check("/usr/sbin/runuser", ["-u", "postgres", "--", "\(Self.binaries)/\(tool)"] + arguments)
    }

    /// ``run(_:_:environment:)``, throwing unless the program exits with 0.
    @discardableResult
    private static func check(_ executable: String, _ arguments: [String]) throws -> String {
        let result = Self.run(executable, arguments)
        guard result.status == 0 else {
            throw CommandFailed(command: ([executable] + arguments).joined(separator: " "), output: result.output)
        }
        return result.output
    }

    /// A command that could not start or did not exit with 0, with what it printed.
    public struct CommandFailed: Error, CustomStringConvertible {
        public let command: String
        public let output: String
        public var description: String { "\(self.command) failed: \(self.output)" }
    }
}
