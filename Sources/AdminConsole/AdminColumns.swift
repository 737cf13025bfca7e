/// The type of a result column, as PgBouncer's `pktbuf_write_RowDescription` declares it (src/pktbuf.c): its OID and
/// length. PgBouncer's `T` (a time) is sent as text.
public enum AdminColumnType: Sendable, Equatable {
    /// `s` and `T`: `text`.
    case text
    /// `i`: `int4`.
    case int4
    /// `q`: `int8`.
    case int8
    /// `N`: `numeric` (PgBouncer's counters).
    case numeric

    public var oid: UInt32 {
        switch self {
        case .text: 25
        case .int4: 23
        case .int8: 20
        case .numeric: 1700
        }
    }

    /// `typlen`: -1 for variable-length types.
    public var length: Int16 {
        switch self {
        case .text, .numeric: -1
        case .int4: 4
        case .int8: 8
        }
    }
}

public struct AdminColumn: Sendable, Equatable {
    public var name: String
    public var type: AdminColumnType

    public init(_ name: String, _ type: AdminColumnType) {
        self.name = name
        self.type = type
    }
}

/// The columns of every `SHOW` command, in PgBouncer 1.25's names, order and types (src/admin.c, src/stats.c).
public enum AdminColumns {
    /// Builds columns from PgBouncer's type letters (`s`, `i`, `q`, `N`, `T`) and names, as its sources write them.
    static func columns(_ letters: String, _ names: [String]) -> [AdminColumn] {
        precondition(letters.count == names.count, "one type letter per column")
        return zip(letters, names).map { letter, name in
            switch letter {
            case "s", "T": AdminColumn(name, .text)
            case "i": AdminColumn(name, .int4)
            case "q": AdminColumn(name, .int8)
            case "N": AdminColumn(name, .numeric)
            default: preconditionFailure("unknown type letter \(letter)")
            }
        }
    }

    public static let pools = columns(
        "ssiiiiiiiiiiiiiss",
        [
            "database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
            "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
            "maxwait", "maxwait_us", "pool_mode", "load_balance_hosts",
        ]
    )

    public static let stats = columns(
        "sNNNNNNNNNNNNNNNNNNNNNN",
        [
            "database", "total_server_assignment_count", "total_xact_count", "total_query_count", "total_received",
            "total_sent", "total_xact_time", "total_query_time", "total_wait_time", "total_client_parse_count",
            "total_server_parse_count", "total_bind_count", "avg_server_assignment_count", "avg_xact_count",
            "avg_query_count", "avg_recv", "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time",
            "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count",
        ]
    )

    public static let statsTotals = columns(
        "sNNNNNNNNNNN",
        [
            "database", "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
            "xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count", "bind_count",
        ]
    )

    public static let statsAverages = columns(
        "sNNNNNNNNNNN",
        [
            "database", "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
            "xact_time", "query_time", "wait_time", "avg_client_parse_count", "avg_server_parse_count",
            "avg_bind_count",
        ]
    )

    public static let totals = columns("sN", ["name", "value"])

    /// `SHOW CLIENTS` and `SHOW SERVERS` (PgBouncer's `SKF_STD`).
    public static let sockets = columns(
        "ssssssisiTTiiississii",
        [
            "type", "user", "database", "replication", "state", "addr", "port", "local_addr", "local_port",
            "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
            "application_name", "prepared_statements", "id",
        ]
    )

    public static let databases = columns(
        "ssissiiiissiiiiii",
        [
            "name", "host", "port", "database", "force_user", "pool_size", "min_pool_size", "reserve_pool_size",
            "server_lifetime", "pool_mode", "load_balance_hosts", "max_connections", "current_connections",
            "max_client_connections", "current_client_connections", "paused", "disabled",
        ]
    )

    public static let users = columns(
        "ssssiiii",
        [
            "name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections", "current_connections",
            "max_user_client_connections", "current_client_connections",
        ]
    )

    public static let config = columns("ssss", ["key", "value", "default", "changeable"])
    public static let lists = columns("si", ["list", "items"])
    public static let version = columns("s", ["version"])
    public static let state = columns("ss", ["key", "value"])

    /// Lifeguard's own `SHOW LIFEGUARD`: one row per pool.
    public static let lifeguard = columns(
        "ssiiiiiNNNNNqqi",
        [
            "database", "user", "pool_size", "max_overflow", "overflow", "checked_out", "waiting", "checkouts",
            "timeouts", "leaks_suspected", "stale_releases", "connection_errors", "wait_p50_us", "wait_p99_us",
            "paused",
        ]
    )

    /// The columns `command` answers with; nil for `SHOW HELP` (a notice, no rows) and the commands Lifeguard does not
    /// have.
    public static func of(_ show: AdminShow) -> [AdminColumn]? {
        switch show {
        case .pools: pools
        case .stats: stats
        case .statsTotals: statsTotals
        case .statsAverages: statsAverages
        case .totals: totals
        case .servers, .clients: sockets
        case .databases: databases
        case .users: users
        case .config: config
        case .lists: lists
        case .version: version
        case .state: state
        case .lifeguard: lifeguard
        case .help, .fds, .sockets, .activeSockets, .mem, .dnsHosts, .dnsZones, .peers, .peerPools: nil
        }
    }
}
