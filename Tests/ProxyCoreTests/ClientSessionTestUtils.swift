import NIOCore
import PGWire
import PoolCore
import ProxyCore

/// A server connection as the session sees it: only its identity matters.
final class FakeServer: Sendable {
    let name: String
    init(_ name: String) { self.name = name }
}

/// Frames the way they arrive from a socket: encoded, then cut by the decoder.
enum Frames {
    static func backend(_ messages: [PGBackendMessage]) -> [PGFrame] {
        var buffer = ByteBuffer()
        for message in messages { message.encode(into: &buffer) }
        return Self.decode(&buffer)
    }

    static func frontend(_ messages: [PGFrontendMessage]) -> [PGFrame] {
        var buffer = ByteBuffer()
        for message in messages { message.encode(into: &buffer) }
        return Self.decode(&buffer)
    }

    static func decode(_ buffer: inout ByteBuffer) -> [PGFrame] {
        var frames: [PGFrame] = []
        while let frame = try? PGFrameDecoder().decodeFrame(buffer: &buffer) { frames.append(frame) }
        return frames
    }

    /// Backend messages in `buffers`, decoded.
    static func backendMessages(_ buffers: some Sequence<ByteBuffer>) -> [PGBackendMessage] {
        var all = ByteBuffer()
        for buffer in buffers { all.writeImmutableBuffer(buffer) }
        return Self.decode(&all).compactMap { try? PGBackendMessage(frame: $0) }
    }

    /// Frontend message types in `buffers`.
    static func frontendTypes(_ buffers: some Sequence<ByteBuffer>) -> [Character] {
        var all = ByteBuffer()
        for buffer in buffers { all.writeImmutableBuffer(buffer) }
        return Self.decode(&all).map { Character(UnicodeScalar($0.type)) }
    }

    static let result: [PGBackendMessage] = [.commandComplete(tag: "SELECT 1")]

    static func ready(_ status: PGTransactionStatus = .idle) -> PGBackendMessage { .readyForQuery(status) }
}

/// A session and the shorthands the tests drive it with; every event returns its actions as short strings.
struct SessionHarness {
    var session = ClientSession()
    let cancelKey = PGCancelRequest(processID: 7, secretKey: 8)
    var servers: [String: FakeServer] = [:]

    static let parameters: [(name: String, value: String)] = [
        ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"), ("server_version", "15.0"),
    ]

    func login(mode: PoolMode, cached: Bool = true) -> ClientLogin {
        ClientLogin(
            mode: mode,
            authentication: PGServerAuthenticationStateMachine(method: .trust, user: "app", secret: nil),
            cachedParameters: cached ? Self.parameters : nil,
            cancelKey: self.cancelKey,
            resetQuery: "DISCARD ALL"
        )
    }

    /// Startup and login up to the greeting (transaction modes with cached parameters) or the first lease request.
    @discardableResult
    mutating func start(mode: PoolMode, cached: Bool = true) -> [String] {
        _ = self.send { $0.startupReceived(PGStartupMessage(user: "app", database: "app"), into: &$1) }
        let login = self.login(mode: mode, cached: cached)
        return self.send { $0.admissionDecided(.admitted(login), into: &$1) }
    }

    /// Logs in (cached parameters) and sends `query`, which the pool answers with server connection "a" under
    /// lease `request`: afterwards the query is being relayed.
    mutating func relaying(_ query: String, mode: PoolMode, request: Int) {
        self.start(mode: mode)
        _ = self.frames([.query(query)])
        _ = self.requested(token: 1, request: request)
        _ = self.grant(token: 1, request: request, server: "a")
    }

    mutating func send(_ event: (inout ClientSession, inout [ClientAction]) -> Void) -> [String] {
        var actions: [ClientAction] = []
        event(&self.session, &actions)
        return actions.map(Self.describe)
    }

    mutating func frames(_ messages: [PGFrontendMessage]) -> [String] {
        var all: [String] = []
        for frame in Frames.frontend(messages) {
            all += self.send { $0.frameReceived(frame, into: &$1) }
        }
        return all
    }

    mutating func server(_ request: Int, _ messages: [PGBackendMessage]) -> [String] {
        let frames = Frames.backend(messages)
        return self.send { $0.serverFrames(RequestID(request), frames, into: &$1) }
    }

    mutating func grant(token: UInt64, request: Int, server: String, changes: [(String, String)] = []) -> [String] {
        let fake = self.servers[server] ?? FakeServer(server)
        self.servers[server] = fake
        let granted = GrantedServer(
            server: fake,
            request: RequestID(request),
            parameters: Self.parameters,
            changes: changes.map { (name: $0.0, value: $0.1) },
            preparedStatements: []
        )
        return self.send { $0.leaseGranted(token: token, granted, into: &$1) }
    }

    mutating func requested(token: UInt64, request: Int) -> [String] {
        self.send { $0.leaseRequested(token: token, request: RequestID(request), into: &$1) }
    }

    /// What the session wrote for the client, decoded.
    mutating func clientMessages() -> [PGBackendMessage] {
        Frames.backendMessages(self.session.takeClientOutput())
    }

    static func describe(_ action: ClientAction) -> String {
        switch action {
        case .flushClient: return "flushClient"
        case .startTLS: return "startTLS"
        case .flushServer(let lease): return "flushServer(R\(lease.request.rawValue))"
        case .admit(let user, let database): return "admit(\(user), \(database))"
        case .rejected(let reason): return "rejected(\(reason))"
        case .authenticationFailed(let user, let reason): return "authenticationFailed(\(user), \(reason))"
        case .passThrough(let credential): return "passThrough(\(credential))"
        case .forwardCancel: return "forwardCancel"
        case .requestLease(let token): return "requestLease(\(token))"
        case .cancelLease(let request): return "cancelLease(R\(request.rawValue))"
        case .attach(let lease): return "attach(R\(lease.request.rawValue))"
        case .runCommand(let lease, let purpose): return "runCommand(R\(lease.request.rawValue), \(purpose.sql))"
        case .giveBack(let lease, let plan, _): return "giveBack(R\(lease.request.rawValue), \(Self.describe(plan)))"
        case .cancelTarget(let server):
            return "cancelTarget(\(server.map { ($0 as? FakeServer)?.name ?? "?" } ?? "nil"))"
        case .activity(let activity): return "activity(\(activity))"
        case .count(let transactions, let queries): return "count(\(transactions), \(queries))"
        case .pauseServerReads(let lease): return "pauseServerReads(R\(lease.request.rawValue))"
        case .resumeServerReads(let lease): return "resumeServerReads(R\(lease.request.rawValue))"
        case .pauseClientReads: return "pauseClientReads"
        case .resumeClientReads: return "resumeClientReads"
        case .consoleQuery(let query): return "consoleQuery(\(query))"
        case .close: return "close"
        }
    }

    static func describe(_ plan: ReturnPlan) -> String {
        switch plan {
        case .release: "release"
        case .discard: "discard"
        case .reset(let commands): "reset(\(commands.joined(separator: "; ")))"
        }
    }
}
