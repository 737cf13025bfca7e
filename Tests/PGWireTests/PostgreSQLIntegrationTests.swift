import Foundation
import NIOCore
import Testing

@testable import PGWire

#if canImport(Glibc)
import Glibc
#endif

/// Our startup packet and client authentication against a real PostgreSQL 15: SCRAM, md5, cleartext, trust.
/// Needs root (initdb runs as `postgres` through runuser) and the Debian postgresql-15 binaries.
@Suite(.serialized, .enabled(if: PostgreSQLServer.isAvailable, "needs root and PostgreSQL 15 binaries"))
struct PostgreSQLIntegrationTests {
    @Test func authenticatesWithEveryMethodAndReachesReadyForQuery() throws {
        let server = try PostgreSQLServer.start()
        defer { server.stop() }

        for user in ["scramuser", "md5user", "clearuser", "trustuser"] {
            var connection = try WireConnection(port: server.port)
            let outcome = try connection.authenticate(user: user, password: user == "trustuser" ? nil : "pencil")
            #expect(outcome == .ready, "user \(user)")
            // The connection is usable: a query returns our user name, then ReadyForQuery(I).
            let rows = try connection.simpleQuery("SELECT current_user")
            #expect(rows == [user])
            connection.terminate()
        }
    }

    @Test func wrongPasswordsGetPostgreSQLsError() throws {
        let server = try PostgreSQLServer.start()
        defer { server.stop() }
        for user in ["scramuser", "md5user"] {
            var connection = try WireConnection(port: server.port)
            let outcome = try connection.authenticate(user: user, password: "wrong")
            #expect(outcome == .serverError(sqlState: "28P01"), "user \(user)")
            connection.terminate()
        }
        // A server that asks for a password we do not have: our own error, before sending anything.
        var connection = try WireConnection(port: server.port)
        guard case .clientError(let message) = try connection.authenticate(user: "scramuser", password: nil) else {
            Issue.record("expected a client-side failure")
            return
        }
        #expect(message.contains("no password"))
        connection.terminate()
    }

    @Test func storedSecretsMatchOurDerivations() throws {
        let server = try PostgreSQLServer.start()
        defer { server.stop() }
        let scram = try server.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'scramuser'")
        guard case .scramSHA256(let secret) = try PGAuthSecret(parsing: scram) else {
            Issue.record("PostgreSQL stored something other than a SCRAM secret: not SCRAM-SHA-256$...")
            return
        }
        #expect(secret.iterations == 4096)
        #expect(PGSCRAMSecret(password: "pencil", salt: secret.salt, iterations: secret.iterations) == secret)

        let md5 = try server.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'md5user'")
        #expect(md5 == PGMD5.storedHash(password: "pencil", user: "md5user"))
    }

    @Test func sslRequestIsAnsweredWithN() throws {
        let server = try PostgreSQLServer.start()
        defer { server.stop() }
        var connection = try WireConnection(port: server.port)
        var buffer = ByteBuffer()
        PGStartupPacket.sslRequest.encode(into: &buffer)
        try connection.send(buffer)
        #expect(try connection.receiveByte() == PGEncryptionResponse.notSupported.rawValue)
        // After the refusal the same connection goes on unencrypted.
        #expect(try connection.authenticate(user: "scramuser", password: "pencil") == .ready)
        connection.terminate()
    }
}

/// A throwaway PostgreSQL 15 cluster on 127.0.0.1 and an OS-chosen port, in a temporary directory.
struct PostgreSQLServer {
    static let bin = "/usr/lib/postgresql/15/bin"

    static var isAvailable: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "\(bin)/initdb")
            && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser")
    }

    let directory: String
    let port: Int

    static func start() throws -> PostgreSQLServer {
        let directory = NSTemporaryDirectory() + "pgwire-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try run("/bin/chown", ["postgres:postgres", directory])
        let data = "\(directory)/data"
        try asPostgres("\(bin)/initdb", ["-D", data, "-U", "postgres", "-A", "trust", "--no-sync"])
        try """
        local all all trust
        host all trustuser 127.0.0.1/32 trust
        host all clearuser 127.0.0.1/32 password
        host all md5user 127.0.0.1/32 md5
        host all all 127.0.0.1/32 scram-sha-256

        """.write(toFile: "\(data)/pg_hba.conf", atomically: true, encoding: .utf8)
        let port = try freePort()
        let server = PostgreSQLServer(directory: directory, port: port)
        let options =
            "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c password_encryption=scram-sha-256 -c fsync=off"
        try asPostgres("\(bin)/pg_ctl", ["-D", data, "-l", "\(directory)/log", "-o", options, "-w", "start"])
        try server.psql(
            """
            CREATE ROLE scramuser LOGIN PASSWORD 'pencil';
            CREATE ROLE clearuser LOGIN PASSWORD 'pencil';
            CREATE ROLE trustuser LOGIN;
            SET password_encryption = 'md5';
            CREATE ROLE md5user LOGIN PASSWORD 'pencil';
            """
        )
        return server
    }

    func stop() {
        _ = try? Self.asPostgres(
            "\(Self.bin)/pg_ctl",
            ["-D", "\(self.directory)/data", "-m", "immediate", "-w", "stop"]
        )
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    @discardableResult
    func psql(_ sql: String) throws -> String {
        try Self.asPostgres(
            "\(Self.bin)/psql",
            [
                "-h", self.directory, "-p", "\(self.port)", "-U", "postgres", "-d", "postgres", "-At", "-v",
                "ON_ERROR_STOP=1", "-c", sql,
            ]
        ).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @discardableResult
    static func asPostgres(_ tool: String, _ arguments: [String]) throws -> String {
        try run("/usr/sbin/runuser", ["-u", "postgres", "--", tool] + arguments)
    }

    /// Runs a program and waits for it. posix_spawn rather than Foundation's Process: Process waits for a
    /// descriptor that `pg_ctl start` hands down to the server, so it would block until the server stops.
    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        let outputPath = NSTemporaryDirectory() + "pgwire-test-output-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([tool] + arguments).map { strdup($0) } + [nil]
        defer {
            for argument in argv {
                free(argument)
            }
        }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, tool, &actions, nil, argv, environ)
        guard spawned == 0 else { throw TestFailure("could not start \(tool): \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        // WIFEXITED && WEXITSTATUS == 0
        guard status & 0x7F == 0, (status >> 8) & 0xFF == 0 else {
            throw TestFailure("\(tool) failed (status \(status)): \(text)")
        }
        return text
    }

    /// Binds port 0 to let the kernel pick a free port, then releases it for PostgreSQL.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw TestFailure("could not bind a port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A blocking TCP connection that speaks through our codec and client state machine.
struct WireConnection {
    enum Outcome: Equatable {
        case ready
        case serverError(sqlState: String?)
        case clientError(String)
    }

    private let fd: Int32
    private var received = ByteBuffer()

    init(port: Int) throws {
        self.fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(self.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else { throw TestFailure("could not connect to port \(port)") }
    }

    func send(_ buffer: ByteBuffer) throws {
        let sent = buffer.withUnsafeReadableBytes { Glibc.send(self.fd, $0.baseAddress, $0.count, 0) }
        guard sent == buffer.readableBytes else { throw TestFailure("short send") }
    }

    mutating func receiveMore() throws {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let count = recv(self.fd, &chunk, chunk.count, 0)
        guard count > 0 else { throw TestFailure("connection closed or timed out") }
        self.received.writeBytes(chunk[..<count])
    }

    mutating func receiveByte() throws -> UInt8 {
        while self.received.readableBytes == 0 {
            try self.receiveMore()
        }
        return self.received.readInteger()!
    }

    mutating func nextMessage() throws -> PGBackendMessage {
        while true {
            if let frame = try PGFrameDecoder().decodeFrame(buffer: &self.received) {
                return try PGBackendMessage(frame: frame)
            }
            try self.receiveMore()
        }
    }

    /// StartupMessage, then the authentication exchange, then ParameterStatus/BackendKeyData up to ReadyForQuery.
    mutating func authenticate(user: String, password: String?) throws -> Outcome {
        var buffer = ByteBuffer()
        PGStartupPacket.startup(PGStartupMessage(user: user, database: "postgres")).encode(into: &buffer)
        try self.send(buffer)
        var machine = PGClientAuthenticationStateMachine(user: user, password: password)
        var parameters: [String: String] = [:]
        var sawKeyData = false
        while true {
            switch try self.nextMessage() {
            case .authentication(let request):
                switch machine.receive(request) {
                case .send(let message):
                    var out = ByteBuffer()
                    message.encode(into: &out)
                    try self.send(out)
                case .wait, .authenticated:
                    break
                case .fail(let error):
                    return .clientError(error.description)
                }
            case .parameterStatus(let name, let value):
                parameters[name] = value
            case .backendKeyData:
                sawKeyData = true
            case .readyForQuery(let status):
                #expect(status == .idle)
                #expect(parameters["server_version"]?.hasPrefix("15") == true)
                #expect(sawKeyData)
                return .ready
            case .errorResponse(let fields):
                return .serverError(sqlState: fields.sqlState)
            case .noticeResponse:
                continue
            default:
                return .clientError("unexpected message during startup")
            }
        }
    }

    /// Runs a one-column query and returns its text values.
    mutating func simpleQuery(_ sql: String) throws -> [String] {
        var buffer = ByteBuffer()
        PGFrontendMessage.query(sql).encode(into: &buffer)
        try self.send(buffer)
        var rows: [String] = []
        while true {
            switch try self.nextMessage() {
            case .readyForQuery:
                return rows
            case .errorResponse(let fields):
                throw TestFailure("query failed: \(fields.message ?? "")")
            case .other(let frame) where frame.type == PGBackendMessageType.dataRow:
                var body = frame.body
                _ = body.readInteger(as: Int16.self)
                let length = Int(body.readInteger(as: Int32.self)!)
                rows.append(body.readString(length: length)!)
            default:
                continue
            }
        }
    }

    func terminate() {
        var buffer = ByteBuffer()
        PGFrontendMessage.terminate.encode(into: &buffer)
        try? self.send(buffer)
        close(self.fd)
    }
}
