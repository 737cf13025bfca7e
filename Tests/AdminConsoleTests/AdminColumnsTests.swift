import AdminConsole
import Testing

/// The result columns of PgBouncer 1.25's admin console, transcribed by hand from its sources (tag
/// `pgbouncer_1_25_2`): src/admin.c (`admin_show_pools`, `socket_header` with `SKF_STD`, `admin_show_databases`,
/// `admin_show_users`, `admin_show_config`, `admin_show_lists`, `admin_show_version`, `admin_show_state`) and
/// src/stats.c (`admin_database_stats`, `admin_database_stats_totals`, `admin_database_stats_averages`,
/// `show_stat_totals`). Each column is written `name:letter`, with the letter of `pktbuf_write_RowDescription`:
/// `s` text, `i` int4, `q` int8, `N` numeric, `T` a time sent as text.
private let pgbouncer125: [AdminShow: String] = [
    .pools: """
    database:s user:s cl_active:i cl_waiting:i cl_active_cancel_req:i cl_waiting_cancel_req:i sv_active:i \
    sv_active_cancel:i sv_being_canceled:i sv_idle:i sv_used:i sv_tested:i sv_login:i maxwait:i maxwait_us:i \
    pool_mode:s load_balance_hosts:s
    """,
    .stats: """
    database:s total_server_assignment_count:N total_xact_count:N total_query_count:N total_received:N \
    total_sent:N total_xact_time:N total_query_time:N total_wait_time:N total_client_parse_count:N \
    total_server_parse_count:N total_bind_count:N avg_server_assignment_count:N avg_xact_count:N \
    avg_query_count:N avg_recv:N avg_sent:N avg_xact_time:N avg_query_time:N avg_wait_time:N \
    avg_client_parse_count:N avg_server_parse_count:N avg_bind_count:N
    """,
    .statsTotals: """
    database:s server_assignment_count:N xact_count:N query_count:N bytes_received:N bytes_sent:N xact_time:N \
    query_time:N wait_time:N client_parse_count:N server_parse_count:N bind_count:N
    """,
    .statsAverages: """
    database:s server_assignment_count:N xact_count:N query_count:N bytes_received:N bytes_sent:N xact_time:N \
    query_time:N wait_time:N avg_client_parse_count:N avg_server_parse_count:N avg_bind_count:N
    """,
    .totals: "name:s value:N",
    .servers: """
    type:s user:s database:s replication:s state:s addr:s port:i local_addr:s local_port:i connect_time:T \
    request_time:T wait:i wait_us:i close_needed:i ptr:s link:s remote_pid:i tls:s application_name:s \
    prepared_statements:i id:i
    """,
    .clients: """
    type:s user:s database:s replication:s state:s addr:s port:i local_addr:s local_port:i connect_time:T \
    request_time:T wait:i wait_us:i close_needed:i ptr:s link:s remote_pid:i tls:s application_name:s \
    prepared_statements:i id:i
    """,
    .databases: """
    name:s host:s port:i database:s force_user:s pool_size:i min_pool_size:i reserve_pool_size:i \
    server_lifetime:i pool_mode:s load_balance_hosts:s max_connections:i current_connections:i \
    max_client_connections:i current_client_connections:i paused:i disabled:i
    """,
    .users: """
    name:s pool_size:s reserve_pool_size:s pool_mode:s max_user_connections:i current_connections:i \
    max_user_client_connections:i current_client_connections:i
    """,
    .config: "key:s value:s default:s changeable:s",
    .lists: "list:s items:i",
    .version: "version:s",
    .state: "key:s value:s",
]

@Suite struct AdminColumnsTests {
    static func expected(_ show: AdminShow) -> [AdminColumn] {
        pgbouncer125[show]!.split(separator: " ").map { column in
            let parts = column.split(separator: ":")
            let type: AdminColumnType =
                switch parts[1] {
                case "s", "T": .text
                case "i": .int4
                case "q": .int8
                default: .numeric
                }
            return AdminColumn(String(parts[0]), type)
        }
    }

    @Test(
        "every SHOW that PgBouncer 1.25 has: its columns, in its order, with its types",
        arguments: [
            AdminShow.pools, .stats, .statsTotals, .statsAverages, .totals, .servers, .clients, .databases, .users,
            .config,
            .lists, .version, .state,
        ]
    )
    func columns(show: AdminShow) {
        #expect(AdminColumns.of(show) == Self.expected(show))
    }

    @Test("the types' OIDs and lengths are PgBouncer's (src/pktbuf.c)")
    func types() {
        #expect(AdminColumnType.text.oid == 25 && AdminColumnType.text.length == -1)
        #expect(AdminColumnType.int4.oid == 23 && AdminColumnType.int4.length == 4)
        #expect(AdminColumnType.int8.oid == 20 && AdminColumnType.int8.length == 8)
        #expect(AdminColumnType.numeric.oid == 1700 && AdminColumnType.numeric.length == -1)
    }

    @Test("SHOW HELP is a notice; SHOW LIFEGUARD is Lifeguard's own")
    func others() {
        #expect(AdminColumns.of(.help) == nil)
        #expect(AdminColumns.of(.lifeguard)?.first?.name == "database")
        #expect(AdminColumns.of(.lifeguard)?.contains { $0.name == "wait_p99_us" } == true)
    }
}
