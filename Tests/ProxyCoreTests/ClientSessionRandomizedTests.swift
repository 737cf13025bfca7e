import NIOCore
import PGWire
import PoolCore
import ProxyCore
import Testing

/// Random event sequences against one session, with a fake pool and fake servers that answer like PostgreSQL, and
/// the invariants that matter: every lease is given back exactly once; nothing reaches the client after it closed;
/// no server receives a client's bytes after it was given back; and every Query and Sync the client sent is answered
/// with exactly one ReadyForQuery while it stays connected.
@Suite struct ClientSessionRandomizedTests {
    @Test(arguments: [1, 2, 3, 7, 42, 2024, 31337, 0xDEAD_BEEF] as [UInt64])
    func invariantsHoldOverRandomEvents(seed: UInt64) throws {
        for mode in PoolMode.allCases {
            for run in 0..<40 {
                var driver = SessionDriver(seed: seed &* 1000 &+ UInt64(run), mode: mode)
                try driver.run(steps: 300)
                try driver.finish()
            }
        }
    }
}

struct SessionDriver {
    /// A server connection lent to the session, as the fake pool and PostgreSQL see it.
    struct Lent {
        var requestsOwed = 0
        var inTransaction = false
        var givenBack = 0
        var closed = false
        var attached = false
    }

    var random: SplitMix
    let mode: PoolMode
    var harness = SessionHarness()
    var leases: [RequestID: Lent] = [:]
    /// Requests the fake pool has not answered yet.
    var waiting: [(token: UInt64, request: RequestID)] = []
    var nextRequest = 0
    var closed = false
    /// Query/Sync/FunctionCall sent by the client, and ReadyForQuery it received.
    var requestsSent = 0
    var readyReceived = 0
    /// The greeting's ReadyForQuery is not an answer.
    var greeted = false
    var steps = 0

    init(seed: UInt64, mode: PoolMode) {
        self.random = SplitMix(seed: seed)
        self.mode = mode
    }

    mutating func run(steps: Int) throws {
        try self.apply { $0.startupReceived(PGStartupMessage(user: "app", database: "app"), into: &$1) }
        let login = self.harness.login(mode: self.mode, cached: self.random.next(2) == 0)
        try self.apply { $0.admissionDecided(.admitted(login), into: &$1) }
        while self.steps < steps && !self.closed {
            self.steps += 1
            try self.step()
        }
    }

    /// Lets everything settle: the pool answers, servers reply, then the client leaves.
    mutating func finish() throws {
        for _ in 0..<50 where !self.closed {
            try self.answerPool()
            try self.answerServers()
        }
        if !self.closed {
            try self.require(
                self.readyReceived == self.requestsSent,
                "ReadyForQuery \(self.readyReceived) for \(self.requestsSent) requests"
            )
            try self.apply { $0.clientClosed(into: &$1) }
        }
        try self.answerPool()
        for (request, lent) in self.leases {
            try self.require(lent.givenBack == 1, "\(request) given back \(lent.givenBack) times")
        }
    }

    private mutating func step() throws {
        switch self.random.next(100) {
        case 0..<25:
            try self.clientSends([.query("SELECT 1")])
        case 25..<35:
            try self.clientSends([
                .parse(PGParse(statementName: "", query: "SELECT 1")),
                .bind(PGBind(portalName: "", statementName: "", parameters: ByteBuffer())),
                .execute(portalName: "", maxRows: 0), .sync,
            ])
        case 35..<40:
            try self.clientSends([.query("BEGIN")])
        case 40..<60:
            try self.answerPool()
        case 60..<85:
            try self.answerServers()
        case 85..<88:
            let writable = self.random.next(2) == 0
            try self.apply { $0.clientWritabilityChanged(writable, into: &$1) }
        case 88..<90:
            // The server dies under the client.
            if let (request, _) = self.leases.first(where: { !$0.value.closed && $0.value.givenBack == 0 }) {
                self.leases[request]?.closed = true
                try self.apply { $0.serverClosed(request, into: &$1) }
            }
        case 90..<92:
            if let (token, request) = self.waiting.first {
                self.waiting.removeFirst()
                try self.apply {
                    $0.leaseFailed(token: token, PoolError(code: .timeout, message: "timeout"), into: &$1)
                }
                _ = request
            }
        case 92..<93:
            try self.apply { $0.clientClosed(into: &$1) }
        default:
            try self.apply { $0.clientReadComplete(into: &$1) }
        }
    }

    private mutating func clientSends(_ messages: [PGFrontendMessage]) throws {
        for frame in Frames.frontend(messages) {
            if [PGFrontendMessageType.query, PGFrontendMessageType.sync].contains(frame.type) {
                self.requestsSent += 1
            }
            try self.apply { $0.frameReceived(frame, into: &$1) }
        }
        try self.apply { $0.clientReadComplete(into: &$1) }
    }

    private mutating func answerPool() throws {
        while let (token, request) = self.waiting.first {
            self.waiting.removeFirst()
            self.leases[request] = Lent()
            let granted = GrantedServer(
                server: FakeServer("s"),
                request: request,
                parameters: SessionHarness.parameters,
                changes: [],
                preparedStatements: []
            )
            try self.apply { $0.leaseGranted(token: token, granted, into: &$1) }
        }
    }

    /// Every attached server answers one request (a transaction that BEGAN stays open until the next answer).
    private mutating func answerServers() throws {
        for request in self.leases.keys.sorted() {
            guard let lent = self.leases[request], lent.attached, !lent.closed, lent.givenBack == 0,
                lent.requestsOwed > 0
            else { continue }
            self.leases[request]?.requestsOwed -= 1
            let begin = self.random.next(4) == 0 && !lent.inTransaction
            self.leases[request]?.inTransaction = begin
            let status: PGTransactionStatus = begin ? .inTransaction : .idle
            let frames = Frames.backend([.commandComplete(tag: begin ? "BEGIN" : "SELECT 1"), .readyForQuery(status)])
            try self.apply { $0.serverFrames(request, frames, into: &$1) }
        }
    }

    /// Feeds one event and plays the actions as the I/O layer would, checking each.
    private mutating func apply(_ event: (inout ClientSession, inout [ClientAction]) -> Void) throws {
        var actions: [ClientAction] = []
        event(&self.harness.session, &actions)
        for action in actions {
            switch action {
            case .flushClient:
                try self.require(!self.closed, "flushClient after close")
                let messages = Frames.backendMessages(self.harness.session.takeClientOutput())
                for message in messages {
                    guard case .readyForQuery = message else { continue }
                    if self.greeted { self.readyReceived += 1 } else { self.greeted = true }
                }
            case .startTLS:
                try self.require(false, "startTLS without TLS configured")
            case .flushServer(let lease):
                let lent = try self.require(self.leases[lease.request], "flush to unknown \(lease.request)")
                try self.require(lent.givenBack == 0 && lent.attached, "bytes for \(lease.request) after give-back")
                let types = Frames.frontendTypes(self.harness.session.takeServerOutput())
                self.leases[lease.request]?.requestsOwed += types.filter { $0 == "Q" || $0 == "S" }.count
            case .requestLease(let token):
                self.waiting.append((token, RequestID(self.nextRequest)))
                let request = RequestID(self.nextRequest)
                self.nextRequest += 1
                try self.apply { $0.leaseRequested(token: token, request: request, into: &$1) }
            case .cancelLease(let request):
                self.waiting.removeAll { $0.request == request }
            case .attach(let lease):
                self.leases[lease.request]?.attached = true
            case .runCommand(let lease, let purpose):
                self.leases[lease.request]?.attached = false
                let ok = !(self.leases[lease.request]?.closed ?? true)
                let outcome: ServerCommandOutcome = ok ? .finished(error: nil, status: .idle, reported: []) : .failed
                try self.apply { $0.serverCommandFinished(purpose, outcome, into: &$1) }
            case .giveBack(let lease, _, _):
                try self.require(self.leases[lease.request] != nil, "give-back of unknown \(lease.request)")
                self.leases[lease.request]?.givenBack += 1
                self.leases[lease.request]?.attached = false
                try self.require(self.leases[lease.request]!.givenBack == 1, "\(lease.request) given back twice")
            case .close:
                // The I/O layer writes what is left (the FATAL), then closes.
                _ = self.harness.session.takeClientOutput()
                self.closed = true
                try self.apply { $0.clientClosed(into: &$1) }
            case .consoleQuery:
                try self.require(false, "consoleQuery from a pool client")
            case .admit, .rejected, .authenticationFailed, .passThrough, .forwardCancel, .cancelTarget, .activity,
                .count,
                .pauseServerReads, .resumeServerReads, .pauseClientReads, .resumeClientReads:
                break
            }
        }
        if self.harness.session.isClosed {
            self.closed = true
            try self.require(self.harness.session.takeClientOutput().isEmpty, "output left for a closed client")
        }
    }

    private func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        try #require(condition, "\(self.mode) step \(self.steps): \(message())")
    }

    private func require<T>(_ value: T?, _ message: @autoclosure () -> String) throws -> T {
        try #require(value, "\(self.mode) step \(self.steps): \(message())")
    }
}

/// A small seeded generator, so that a failure can be replayed.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }

    mutating func next(_ bound: Int) -> Int {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int((z ^ (z >> 31)) % UInt64(bound))
    }
}
