import ConnectionPool
import Logging
import NIOCore
import NIOPosix
import PGWire
import PoolCore
import Synchronization
import Upstream

#if canImport(Glibc)
import Glibc
#endif

/// How one pool's server connections are opened; replaced on reload.
struct ServerTarget: Sendable {
    /// A host name or address, or a Unix-socket directory (starts with `/`).
    var host: String
    var port: Int
    var user: String
    var database: String
    /// The DSN's password, else the auth_file's plain password or md5 secret for `user`, else what a client's
    /// login proved (pass-through, set per connect). Never logged.
    var credential: PGLoginCredential?
    /// Extra StartupMessage parameters from the DSN (`options`, `application_name`).
    var startupOptions: [(String, String)]
    var connectTimeout: TimeAmount
    /// `sslmode` and its companions; the error names the setting or file at fault (every connect then fails with it).
    var tls: Result<ServerTLS, ServerTLSError>
    /// The name the server's certificate must carry (`host`, even when `hostaddr` is what is dialled), and SNI.
    var tlsHost: String
    /// Run once after login, before the pool gets the connection (`connect_query`).
    var connectQuery: String?

    init(route: ProxyRoute, authFileSecret: PGAuthSecret?) {
        let dsn = route.upstream
        // libpq takes the first of a comma-separated host list; `hostaddr` skips name resolution.
        let host = dsn.hostaddr ?? dsn.host?.split(separator: ",").first.map(String.init) ?? "/var/run/postgresql"
        self.host = host
        self.port = dsn.port ?? 5432
        self.user = route.serverUser
        self.database = route.serverDatabase
        switch (dsn.password, authFileSecret) {
        case (let password?, _), (nil, .plain(let password)?): self.credential = .password(password)
        case (nil, .md5(let hash)?): self.credential = .md5(hash: hash)
        case (nil, .scramSHA256?), (nil, nil): self.credential = nil
        }
        var options: [(String, String)] = []
        for keyword in ["options", "application_name"] {
            if let value = dsn[keyword], !value.isEmpty { options.append((keyword, value)) }
        }
        self.startupOptions = options
        let seconds = dsn["connect_timeout"].flatMap { Int($0) } ?? 0
        self.connectTimeout = .seconds(Int64(seconds > 0 ? max(seconds, 2) : 10))
        self.tlsHost = dsn.host?.split(separator: ",").first.map(String.init) ?? host
        self.connectQuery = route.connectQuery
        do throws(ServerTLSError) {
            self.tls = .success(try ServerTLS(dsn: dsn))
        } catch {
            self.tls = .failure(error)
        }
    }

    var isUnixSocket: Bool { self.host.hasPrefix("/") }

    /// `"host", port 5432` or the socket path, the way libpq names a server in its errors.
    var serverDescription: String {
        self.isUnixSocket ? "on socket \"\(self.socketPath)\"" : "at \"\(self.host)\", port \(self.port)"
    }

    var socketPath: String { "\(self.host)/.s.PGSQL.\(self.port)" }
}

/// Opens authenticated server connections for one pool and records the first one's ParameterStatus set.
struct ServerConnectionFactory: ConnectionFactory {
    let group: any EventLoopGroup
    let target: SharedTarget
    /// What the pool's clients proved, for a user without a configured credential (``ClientAction/passThrough(_:)``).
    let passThrough: PassThroughCredential
    /// Called with every new connection (to fill the pool's ParameterStatus cache).
    let connected: @Sendable (ServerConnection) -> Void
    let logger: Logger

    func makeConnection(id: ConnectionID, for key: PoolKey) async throws(ConnectError) -> ServerConnection {
        try await self.makeConnection(id: id, for: key, affinity: nil)
    }

    func makeConnection(
        id: ConnectionID,
        for key: PoolKey,
        affinity: Int?
    ) async throws(ConnectError) -> ServerConnection {
        // On the client's event loop when the pool says which client it is for: relaying then needs no thread hop.
        let eventLoop = Self.eventLoop(in: self.group, affinity: affinity)
        do {
            return try await self.open(id: id, for: key, on: eventLoop)
        } catch {
            // The operator's first clue; the message never holds a password (the target's is not in it).
            self.logger.warning(
                "server connection failed",
                metadata: ["pool": "\(key)", "reason": "\(error.reason.rawValue)", "error": "\(error.message)"]
            )
            throw error
        }
    }

    /// The loop of `group` whose ``ServerConnection/affinity(of:)`` is `affinity`, else the group's next.
    static func eventLoop(in group: any EventLoopGroup, affinity: Int?) -> any EventLoop {
        if let affinity {
            for eventLoop in group.makeIterator() where ServerConnection.affinity(of: eventLoop) == affinity {
                return eventLoop
            }
        }
        return group.next()
    }

    private func open(
        id: ConnectionID,
        for key: PoolKey,
        on eventLoop: any EventLoop
    ) async throws(ConnectError) -> ServerConnection {
        var target = self.target.value
        if target.credential == nil { target.credential = self.passThrough.value }
        let tls: ServerTLS
        switch target.tls {
        case .success(let settings): tls = settings
        case .failure(let error):
            throw ConnectError(
                reason: .tls,
                message: "connection to server \(target.serverDescription) failed: \(error.description)",
                isPermanent: true
            )
        }
        // libpq's order: `allow` tries without TLS first, `prefer` with it; each falls back to the other once.
        let first: Bool
        switch tls.mode {
        case .disable, .allow: first = false
        case .prefer, .require, .verifyCA, .verifyFull: first = !target.isUnixSocket
        }
        do {
            return try await self.attempt(id: id, key: key, target: target, tls: first ? tls : nil, on: eventLoop)
        } catch let error {
            let fallback: Bool
            switch tls.mode {
            case .allow: fallback = !target.isUnixSocket && error.reason != .connect && error.reason != .timeout
            case .prefer: fallback = first && error.reason == .tls
            default: fallback = false
            }
            guard fallback else { throw error }
            return try await self.attempt(id: id, key: key, target: target, tls: first ? nil : tls, on: eventLoop)
        }
    }

    private func attempt(
        id: ConnectionID,
        key: PoolKey,
        target: ServerTarget,
        tls: ServerTLS?,
        on eventLoop: any EventLoop
    ) async throws(ConnectError) -> ServerConnection {
        do {
            let connection = try await Self.connect(id: id, key: key, target: target, tls: tls, on: eventLoop).get()
            if let query = target.connectQuery {
                try await Self.runConnectQuery(query, on: connection, target: target)
            }
            self.connected(connection)
            return connection
        } catch let error as ConnectError {
            throw error
        } catch let error as ServerStartupError {
            throw error.error
        } catch {
            throw Self.connectError(error, target: target)
        }
    }

    static func connect(
        id: ConnectionID,
        key: PoolKey,
        target: ServerTarget,
        tls: ServerTLS?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<ServerConnection> {
        let startupPromise = eventLoop.makePromise(of: ServerStartupResult.self)
        let startupMessage = PGStartupMessage(
            user: target.user,
            database: target.database,
            options: target.startupOptions
        )
        let credential = target.credential
        let user = target.user
        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(target.connectTimeout)
            .channelOption(.writeBufferWaterMark, value: ProxyServer.writeBufferWaterMark)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = ServerChannelHandler(
                        user: user,
                        credential: credential,
                        startupMessage: startupMessage,
                        promise: startupPromise
                    )
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            ServerTLSNegotiator(
                                tls: tls,
                                host: target.tlsHost,
                                serverDescription: target.serverDescription,
                                loginHandler: handler,
                                promise: startupPromise
                            )
                        )
                    } else {
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
            }
        if !target.isUnixSocket {
            bootstrap = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1)
        }
        let connected =
            target.isUnixSocket
            ? bootstrap.connect(unixDomainSocketPath: target.socketPath)
            : bootstrap.connect(host: target.host, port: target.port)
        // Authentication gets the same budget as the TCP connect.
        let timeout = eventLoop.scheduleTask(in: target.connectTimeout) {
            startupPromise.fail(
                ServerStartupError(
                    error: ConnectError(
                        reason: .timeout,
                        message: "connection to server \(target.serverDescription) failed: timeout expired"
                    )
                )
            )
        }
        connected.whenFailure { error in startupPromise.fail(error) }
        return connected.flatMap { channel in
            startupPromise.futureResult.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }.flatMapThrowing { startup in
                timeout.cancel()
                let handler = try channel.pipeline.syncOperations.handler(type: ServerChannelHandler.self)
                let connection = ServerConnection(
                    id: id,
                    key: key,
                    channel: channel,
                    handler: NIOLoopBound(handler, eventLoop: channel.eventLoop),
                    startup: startup,
                    cancelAddress: channel.remoteAddress,
                    pingTimeout: target.connectTimeout
                )
                handler.connection = connection
                return connection
            }
        }.always { _ in timeout.cancel() }
    }

    /// `connect_query`, as PgBouncer runs it: a failure (an error, a transaction left open, a broken connection, no
    /// answer within the connect timeout) closes the connection and counts as a failed connect.
    private static func runConnectQuery(
        _ query: String,
        on connection: ServerConnection,
        target: ServerTarget
    ) async throws(ConnectError) {
        let prefix = "connect_query failed on server \(target.serverDescription): "
        let result: ServerCommandResult
        do {
            result = try await connection.run(query, timeout: target.connectTimeout).get()
        } catch {
            connection.close()
            throw ConnectError(reason: .server, message: prefix + "the connection broke or timed out")
        }
        if let error = result.error {
            connection.close()
            throw ConnectError(
                reason: .server,
                message: prefix + (error.message ?? "error without a message"),
                sqlState: error.sqlState
            )
        }
        guard result.status == .idle else {
            connection.close()
            throw ConnectError(reason: .server, message: prefix + "it left a transaction open")
        }
    }

    /// Turns a NIO connect failure into libpq-like text: where, and the operating system's reason.
    static func connectError(_ error: any Error, target: ServerTarget) -> ConnectError {
        let prefix = "connection to server \(target.serverDescription) failed: "
        if case ChannelError.connectTimeout = error {
            return ConnectError(reason: .timeout, message: prefix + "timeout expired")
        }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first {
                return ConnectError(reason: .connect, message: prefix + Self.reason(first.error))
            }
            if error.dnsAError != nil || error.dnsAAAAError != nil {
                return ConnectError(
                    reason: .connect,
                    message: "could not translate host name \"\(target.host)\" to address"
                )
            }
        }
        return ConnectError(reason: .connect, message: prefix + Self.reason(error))
    }

    private static func reason(_ error: any Error) -> String {
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode))
        }
        if case ChannelError.connectTimeout = error {
            return "timeout expired"
        }
        return "\(error)"
    }
}

/// The factory's target, replaced by reloads while connections are being opened.
final class SharedTarget: Sendable {
    private let state: Mutex<ServerTarget>

    init(_ target: ServerTarget) {
        self.state = Mutex(target)
    }

    var value: ServerTarget {
        get { self.state.withLock { $0 } }
        set { self.state.withLock { $0 = newValue } }
    }
}

/// The credential a client's login proved for its pool's user (pass-through); the latest login wins, so a changed
/// password takes effect with the next client that logs in with it.
final class PassThroughCredential: Sendable {
    private let state = Mutex<PGLoginCredential?>(nil)

    var value: PGLoginCredential? {
        get { self.state.withLock { $0 } }
        set { self.state.withLock { $0 = newValue } }
    }
}
