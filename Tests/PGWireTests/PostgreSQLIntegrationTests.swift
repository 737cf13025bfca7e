import Foundation
import NIOCore
import PostgresTestSupport
import Testing

@testable import PGWire

#if canImport(Glibc)
import Glibc
#endif

/// Our startup packet and client authentication against a real PostgreSQL 15: SCRAM, md5, cleartext, trust.
/// Needs root (initdb runs as `postgres` through runuser) and the Debian postgresql-15 binaries.
@Suite(.serialized, .enabled(if: TestPostgres.isAvailable, "needs root and PostgreSQL 15 binaries"))
struct PostgreSQLIntegrationTests {
    @Test func authenticatesWithEveryMethodAndReachesReadyForQuery() throws {
        let server = try Self.startServer()
        defer { server.destroy() }

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
        let server = try Self.startServer()
        defer { server.destroy() }
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
        let server = try Self.startServer()
        defer { server.destroy() }
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
        let server = try Self.startServer()
        defer { server.destroy() }
        var connection = try WireConnection(port: server.port)
        var buffer = ByteBuffer()
        PGStartupPacket.sslRequest.encode(into: &buffer)
        try connection.send(buffer)
        #expect(try connection.receiveByte() == PGEncryptionResponse.notSupported.rawValue)
        // After the refusal the same connection goes on unencrypted.
        #expect(try connection.authenticate(user: "scramuser", password: "pencil") == .ready)
        connection.terminate()
    }

    /// A user per authentication method, each with password `pencil` except `trustuser`; SCRAM secrets by default.
    static func startServer() throws -> TestPostgres {
        try TestPostgres(
            hba: """
                local all all trust
                host all trustuser 127.0.0.1/32 trust
                host all clearuser 127.0.0.1/32 password
                host all md5user 127.0.0.1/32 md5
                host all all 127.0.0.1/32 scram-sha-256

                """,
            settings: ["password_encryption": "scram-sha-256"],
            setupSQL: """
                CREATE ROLE scramuser LOGIN PASSWORD 'pencil';
                CREATE ROLE clearuser LOGIN PASSWORD 'pencil';
                CREATE ROLE trustuser LOGIN;
                SET password_encryption = 'md5';
                CREATE ROLE md5user LOGIN PASSWORD 'pencil';
                """
        )
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
