import ConnectionPool
import LifeguardConfig
import Logging
import NIOCore
import PGWire
import PoolCore
import Synchronization

/// Finds the secret of a client user that the auth_file does not list: `auth_query` runs on a pooled server
/// connection of `auth_user` in `auth_dbname` (else the client's database), with the user name as a parameter.
///
/// Answers are kept for ``cacheDuration`` per (database, user), found or not, so that a burst of logins costs one
/// query; logins of one user that arrive while its query runs wait for that query. Failures are not kept. A reload
/// forgets everything.
final class AuthQueryLookup: Sendable {
    /// How long an answer is used: a changed password, a new role or an expiry is seen after at most this long.
    static let cacheDuration: Duration = .seconds(5)
    /// How long the query may take on its server connection before that connection is closed.
    static let queryTimeout: TimeAmount = .seconds(10)
    /// Beyond this many kept answers, expired ones are dropped.
    private static let pruneThreshold = 1024

    typealias Completion = @Sendable (Result<PGAuthSecret?, AuthLookupError>) -> Void

    private struct Key: Hashable {
        var database: String
        var user: String
    }

    private enum Entry {
        case answered(PGAuthSecret?, expires: ContinuousClock.Instant)
        case running(waiters: [Completion])
    }

    private let entries = Mutex<[Key: Entry]>([:])

    /// Calls `completion` once, on any thread: the user's secret, nil when the query did not find one (no such
    /// role, no password, past `VALID UNTIL`), or why it could not be asked.
    func lookup(user: String, database: String, context: ProxyContext, completion: @escaping Completion) {
        let configuration = context.configuration
        guard let authUser = configuration.authUser else {
            completion(.success(nil))
            return
        }
        let key = Key(database: configuration.authDbname ?? database, user: user)
        let now = ContinuousClock.now
        enum Decision {
            case cached(PGAuthSecret?)
            case wait
            case run
        }
        let decision = self.entries.withLock { entries -> Decision in
            switch entries[key] {
            case .answered(let secret, let expires)? where expires > now:
                return .cached(secret)
            case .running(var waiters)?:
                waiters.append(completion)
                entries[key] = .running(waiters: waiters)
                return .wait
            case .answered?, nil:
                if entries.count > Self.pruneThreshold {
                    entries = entries.filter {
                        if case .answered(_, let expires) = $0.value { return expires > now }
                        return true
                    }
                }
                entries[key] = .running(waiters: [completion])
                return .run
            }
        }
        switch decision {
        case .cached(let secret): completion(.success(secret))
        case .wait: break
        case .run: self.run(key: key, authUser: authUser, query: configuration.authQuery, context: context)
        }
    }

    func forgetAll() {
        self.entries.withLock { entries in
            entries = entries.filter {
                if case .running = $0.value { return true }
                return false
            }
        }
    }

    private func finish(_ key: Key, _ result: Result<PGAuthSecret?, AuthLookupError>) {
        let waiters = self.entries.withLock { entries -> [Completion] in
            guard case .running(let waiters)? = entries[key] else { return [] }
            switch result {
            case .success(let secret):
                entries[key] = .answered(secret, expires: .now + Self.cacheDuration)
            case .failure:
                entries[key] = nil
            }
            return waiters
        }
        for waiter in waiters { waiter(result) }
    }

    private func run(key: Key, authUser: String, query: String, context: ProxyContext) {
        let pool: ProxyPool
        switch context.pool(database: key.database, user: authUser) {
        case .failure(let error):
            self.finish(key, .failure(AuthLookupError(user: key.user, reason: error.message, detail: nil)))
            return
        case .success(let found):
            pool = found
        }
        let request = pool.pool.makeRequestID()
        pool.pool.lease(request) { result in
            switch result {
            case .failure(let error):
                if error.code == .refused { context.dropRefused(pool) }
                let reason =
                    "auth_user \"\(authUser)\" could not connect to database \"\(key.database)\": \(error.message)"
                self.finish(key, .failure(AuthLookupError(user: key.user, reason: reason, detail: nil)))
            case .success(let server):
                server.eventLoop.execute {
                    AuthQueryRun(server: server, lease: request, pool: pool) { outcome in
                        if case .answered(let answer) = outcome {
                            let found = if case .found = answer { "true" } else { "false" }
                            context.logger.debug(
                                "auth_query answered",
                                metadata: ["user": "\(key.user)", "database": "\(key.database)", "found": "\(found)"]
                            )
                        }
                        switch outcome {
                        case .answered(.found(let secret)):
                            self.finish(key, .success(secret))
                        case .answered(.notFound):
                            self.finish(key, .success(nil))
                        case .failed(let problem):
                            let error = AuthLookupError(user: key.user, reason: nil, detail: problem)
                            context.logger.warning(
                                "auth_query failed",
                                metadata: [
                                    "user": "\(key.user)", "database": "\(key.database)",
                                    "auth_user": "\(authUser)", "error": "\(problem)",
                                ]
                            )
                            self.finish(key, .failure(error))
                        }
                    }.start(query: query, user: key.user)
                }
            }
        }
    }
}

/// Why a secret could not be looked up. ``message`` is what the client sees (FATAL 08006): where the lookup could
/// not connect, or only that the query failed (its error, which may describe the database, goes to the log). Never
/// contains a secret.
struct AuthLookupError: Error, Sendable {
    var user: String
    /// Why Lifeguard could not reach the auth database; nil when the query itself failed.
    var reason: String?
    /// What went wrong with the query.
    var detail: String?

    var message: String {
        if let reason {
            return "could not look up the password of user \"\(self.user)\": \(reason)"
        }
        return "could not look up the password of user \"\(self.user)\": auth_query failed (see Lifeguard's log)"
    }
}

/// One `auth_query` on a leased server connection, on that connection's event loop: attached as its owner, sends
/// the query, reads the answer up to ReadyForQuery, then gives the connection back (closed if the answer did not
/// end idle, or never came).
final class AuthQueryRun: ServerConnectionClient {
    enum Result {
        case answered(PGAuthQuery.Outcome)
        /// What went wrong, for the log.
        case failed(String)
    }

    private let server: ServerConnection
    private let lease: RequestID
    private let pool: ProxyPool
    private var completion: ((Result) -> Void)?
    private var response = PGAuthQuery.Response()
    private var timer: Scheduled<Void>?

    init(server: ServerConnection, lease: RequestID, pool: ProxyPool, completion: @escaping (Result) -> Void) {
        self.server = server
        self.lease = lease
        self.pool = pool
        self.completion = completion
    }

    /// On the server connection's event loop.
    func start(query: String, user: String) {
        let eventLoop = self.server.eventLoop
        self.server.attach(ServerOwner(lease: self.lease, eventLoop: eventLoop, client: self))
        var buffer = self.server.channel.allocator.buffer(capacity: 256 + query.utf8.count + user.utf8.count)
        for message in PGAuthQuery.messages(query: query, user: user) {
            message.encode(into: &buffer)
        }
        self.server.channel.writeAndFlush(buffer, promise: nil)
        let run = NIOLoopBound(self, eventLoop: eventLoop)
        self.timer = eventLoop.scheduleTask(in: AuthQueryLookup.queryTimeout) {
            run.value.end(.failed("no answer within \(AuthQueryLookup.queryTimeout.nanoseconds / 1_000_000_000)s"))
        }
    }

    func serverFrames(_ lease: RequestID, _ frames: [PGFrame]) {
        for frame in frames where self.completion != nil {
            let result: Result
            do {
                guard let outcome = try self.response.receive(frame) else { continue }
                result = .answered(outcome)
            } catch {
                result = .failed(error.description)
            }
            self.end(result, idle: ServerChannelHandler.transactionStatus(frame) == .idle)
        }
    }

    func serverClosed(_ lease: RequestID) {
        self.end(.failed("the server connection closed"))
    }

    func serverWritabilityChanged(_ lease: RequestID, _ writable: Bool) {}

    private func end(_ result: Result, idle: Bool = false) {
        guard let completion = self.completion else { return }
        self.completion = nil
        self.timer?.cancel()
        self.timer = nil
        self.server.detach(self.lease)
        if !self.server.isActive {
            self.pool.pool.discard(self.server, lease: self.lease)
        } else if idle {
            self.pool.pool.release(self.server, lease: self.lease)
        } else {
            self.pool.pool.retire(self.server, lease: self.lease, reason: .dirty)
        }
        completion(result)
    }
}

@available(*, unavailable)
extension AuthQueryRun: Sendable {}
