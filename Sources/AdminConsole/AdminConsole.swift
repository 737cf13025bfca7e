/// What a console user may do: PgBouncer's `admin_users` run every command, `stats_users` only `SHOW`.
public enum AdminAccess: Sendable, Equatable {
    case admin
    case stats
}

/// How a client of the `pgbouncer` database logs in.
public struct AdminLogin: Sendable, Equatable {
    public var access: AdminAccess
    /// False only for a login the operating system vouched for (see ``AdminLoginPolicy/PeerIdentity``): it skips
    /// `auth_type`. Every other console login authenticates as any client does.
    public var authenticates: Bool

    public init(access: AdminAccess, authenticates: Bool) {
        self.access = access
        self.authenticates = authenticates
    }
}

/// Who may use the console: `admin_users` and `stats_users`, whatever `auth_type` says (with `trust`, or no
/// `auth_type` on loopback, a user must still be listed).
public struct AdminLoginPolicy: Sendable, Equatable {
    /// The operating-system identity of a Unix-socket peer (`SO_PEERCRED`/`getpeereid`).
    ///
    /// PgBouncer's rule that the OS user running the pooler may log in as `pgbouncer` over the Unix socket without a
    /// password (`admin_pre_login` in src/admin.c): the Unix-socket listener reads the peer's uid and hands it to
    /// ``login(user:peer:)``; TCP clients have none.
    public struct PeerIdentity: Sendable, Equatable {
        /// The peer runs as the same OS user as Lifeguard.
        public var sameUserAsProcess: Bool

        public init(sameUserAsProcess: Bool) {
            self.sameUserAsProcess = sameUserAsProcess
        }
    }

    public var adminUsers: [String]
    public var statsUsers: [String]

    public init(adminUsers: [String], statsUsers: [String]) {
        self.adminUsers = adminUsers
        self.statsUsers = statsUsers
    }

    /// The console login of `user`, or nil when it may not use the console.
    public func login(user: String, peer: PeerIdentity? = nil) -> AdminLogin? {
        if let peer, peer.sameUserAsProcess, user == AdminConsoleName.user {
            return AdminLogin(access: .admin, authenticates: false)
        }
        if self.adminUsers.contains(user) { return AdminLogin(access: .admin, authenticates: true) }
        if self.statsUsers.contains(user) { return AdminLogin(access: .stats, authenticates: true) }
        return nil
    }
}

/// What to do with one console query: the pure part of the console. The I/O layer gathers a snapshot for `show`, and
/// carries out `run` (it owns the pools, the clients and the process).
public enum AdminDecision: Sendable, Equatable {
    /// Answer at once.
    case reply(AdminReply)
    /// Answer with this table of the live state.
    case show(AdminShow)
    /// Carry out this command, then answer (``AdminCommand`` other than `SHOW` and `SET`).
    case run(AdminCommand)

    /// Parses `query` and checks it against `access`.
    public static func decide(_ query: String, access: AdminAccess) -> AdminDecision {
        let command: AdminCommand
        switch AdminCommand.parse(query) {
        case .failure(let error): return .reply(.error(error))
        case .success(let parsed): command = parsed
        }
        if command.needsAdmin && access != .admin {
            return .reply(.error(.adminAccessNeeded))
        }
        switch command {
        case .show(let show):
            return .show(show)
        case .showParameter(let parameter):
            let table = AdminTable(columns: [AdminColumn(parameter.name, .text)], rows: [[parameter.value]])
            return .reply(.table(table, tag: "SHOW"))
        case .set(let key, _):
            if AdminFakeParameter(name: key) != nil { return .reply(.notice("SET ignored", detail: nil, tag: "SET")) }
            return .reply(.error(.notImplemented("SET \(key)")))
        case .suspend: return .reply(.error(.notImplemented("SUSPEND")))
        case .disable(nil), .enable(nil): return .reply(.error(AdminError(message: "a database is required")))
        case .killClient(let argument):
            guard UInt64(argument) != nil else {
                return .reply(.error(AdminError(message: "invalid client pointer supplied")))
            }
            return .run(command)
        case .pause, .resume, .disable, .enable, .reload, .shutdown, .reconnect, .kill, .waitClose:
            return .run(command)
        }
    }

    /// The parameters the console greets a client with (PgBouncer's `admin_setup` welcome).
    public static func greeting(version: String) -> [(name: String, value: String)] {
        [
            ("server_version", version), ("client_encoding", "UTF8"), ("server_encoding", "UTF8"),
            ("DateStyle", "ISO"), ("TimeZone", "GMT"), ("standard_conforming_strings", "on"), ("is_superuser", "on"),
        ]
    }
}
