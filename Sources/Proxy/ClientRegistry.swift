import AdminConsole
import LifeguardMetrics
import NIOCore
import PGWire
import PoolCore
import Synchronization

/// The server connection a client holds now, read by CancelRequests from other connections.
final class CancelTarget: Sendable {
    private let server = Mutex<ServerConnection?>(nil)

    func set(_ connection: ServerConnection?) {
        self.server.withLock { $0 = connection }
    }

    var connection: ServerConnection? { self.server.withLock { $0 } }
}

/// Asks a client handler to wind down; delivered through its pipeline on its own event loop.
enum ClientDrainEvent: Sendable {
    /// Close at once if idle, else when the current transaction (or session) ends.
    case drain
    /// Close now.
    case terminate
    /// Close now with FATAL 57P01 and this message: the admin console's `KILL_CLIENT` and `KILL`.
    case kill(message: String)
}

/// What the admin console shows of a client (`SHOW CLIENTS`, and the client counts of `SHOW POOLS`), kept up to date
/// by its handler: the activity with one relaxed atomic store, the rest once at login.
final class ClientStatus: Sendable {
    struct Login: Sendable {
        var user: String
        /// The pool the client belongs to; the console's own for console clients.
        var pool: PoolKey
        var applicationName: String
        var tls: Bool
    }

    /// 0 until logged in, then ``ClientConnectionState``'s index + 1.
    private let activityCode = Atomic<Int>(0)
    let login = Mutex<Login?>(nil)
    let connectedAt: Int64
    let remote: SocketAddress?
    let local: SocketAddress?

    init(connectedAt: Int64, remote: SocketAddress?, local: SocketAddress?) {
        self.connectedAt = connectedAt
        self.remote = remote
        self.local = local
    }

    var activity: ClientConnectionState? {
        let code = self.activityCode.load(ordering: .relaxed)
        return code == 0 ? nil : ClientConnectionState.allCases[code - 1]
    }

    func setActivity(_ activity: ClientConnectionState?) {
        let code = activity.map { $0.index + 1 } ?? 0
        self.activityCode.store(code, ordering: .relaxed)
    }
}

/// Every client connection: admission against `max_client_conn`, the counts behind the client gauges, and the
/// Lifeguard-issued cancel keys.
final class ClientRegistry: Sendable {
    private struct Entry {
        var channel: any Channel
        var cancelKey: PGCancelRequest?
        var target: CancelTarget
        var status: ClientStatus
    }

    private struct State {
        var nextID = 0
        var entries: [Int: Entry] = [:]
        var cancelKeys: [PGCancelRequest: Int] = [:]
        var admitted = 0
        var draining = false
    }

    private let state = Mutex(State())
    private let metrics: LifeguardMetrics

    init(metrics: LifeguardMetrics) {
        self.metrics = metrics
    }

    /// Registers a connection; `nil` when Lifeguard is shutting down.
    func register(_ channel: any Channel) -> Int? {
        self.state.withLock { state in
            guard !state.draining else { return nil }
            let id = state.nextID
            state.nextID += 1
            let status = ClientStatus(
                connectedAt: AdminClock.microsecondsSinceEpoch(),
                remote: channel.remoteAddress,
                local: channel.localAddress
            )
            state.entries[id] = Entry(channel: channel, target: CancelTarget(), status: status)
            return id
        }
    }

    /// Admits a client that sent its StartupMessage: false when `maxClients` are already admitted.
    func admit(_ id: Int, maxClients: Int) -> Bool {
        self.state.withLock { state in
            guard state.admitted < maxClients, state.entries[id] != nil else { return false }
            state.admitted += 1
            return true
        }
    }

    /// Issues a unique random BackendKeyData for the client.
    func issueCancelKey(_ id: Int) -> (PGCancelRequest, CancelTarget)? {
        self.state.withLock { state in
            guard var entry = state.entries[id] else { return nil }
            var key: PGCancelRequest
            repeat {
                key = PGCancelRequest(processID: .random(in: 1...Int32.max), secretKey: .random(in: .min ... .max))
            } while state.cancelKeys[key] != nil
            state.cancelKeys[key] = id
            entry.cancelKey = key
            state.entries[id] = entry
            return (key, entry.target)
        }
    }

    /// The server connection that a CancelRequest's key points at now, if any.
    func cancelTarget(for key: PGCancelRequest) -> ServerConnection? {
        let target = self.state.withLock { state in
            state.cancelKeys[key].flatMap { state.entries[$0]?.target }
        }
        return target?.connection
    }

    /// The connection closed; `activity` is what its handler last reported.
    func unregister(_ id: Int, admitted: Bool, activity: ClientConnectionState?) {
        self.state.withLock { state in
            guard let entry = state.entries.removeValue(forKey: id) else { return }
            if let key = entry.cancelKey { state.cancelKeys[key] = nil }
            if admitted { state.admitted -= 1 }
        }
        self.metrics.clientConnectionChanged(from: activity, to: nil)
    }

    /// Stops registering new connections; the open ones stay as they are.
    func stopRegistering() {
        self.state.withLock { $0.draining = true }
    }

    /// Stops registering and asks every client to drain (or to terminate).
    func broadcast(_ event: ClientDrainEvent) {
        let channels = self.state.withLock { state in
            state.draining = true
            return state.entries.values.map(\.channel)
        }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(event)
        }
    }

    var count: Int { self.state.withLock { $0.entries.count } }

    /// The client's status, for its handler to keep up to date.
    func status(of id: Int) -> ClientStatus? {
        self.state.withLock { $0.entries[id]?.status }
    }

    /// Every client that logged in, by id, with the server connection it holds now (if any).
    func loggedIn() -> [(id: Int, status: ClientStatus, server: ServerConnection?)] {
        let entries = self.state.withLock { state in
            state.entries.sorted { $0.key < $1.key }.map { ($0.key, $0.value.status, $0.value.target) }
        }
        return entries.compactMap { id, status, target in
            status.activity == nil ? nil : (id, status, target.connection)
        }
    }

    /// Asks one client to close now (`KILL_CLIENT`); false when there is no such client.
    func kill(_ id: Int) -> Bool {
        guard let channel = self.state.withLock({ $0.entries[id]?.channel }) else { return false }
        channel.pipeline.fireUserInboundEventTriggered(ClientDrainEvent.kill(message: "admin forced disconnect"))
        return true
    }

    /// Asks every logged-in client of `databases` (of every database but the console's when nil) to close now
    /// (`KILL`); returns their ids.
    func kill(databases: Set<String>?, message: String) -> [Int] {
        let victims = self.loggedIn().compactMap { id, status, _ -> Int? in
            guard let database = status.login.withLock({ $0?.pool.database }) else { return nil }
            let chosen = databases.map { $0.contains(database) } ?? (database != AdminConsoleName.database)
            return chosen ? id : nil
        }
        let channels = self.state.withLock { state in victims.compactMap { state.entries[$0]?.channel } }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(ClientDrainEvent.kill(message: message))
        }
        return victims
    }

    /// Whether any of `ids` is still connected.
    func anyConnected(_ ids: [Int]) -> Bool {
        self.state.withLock { state in ids.contains { state.entries[$0] != nil } }
    }

}
