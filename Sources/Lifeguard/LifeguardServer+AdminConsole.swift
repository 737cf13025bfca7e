import AdminConsole
import LifeguardConfig
import Logging
import Proxy
import ServiceLifecycle

extension LifeguardServer {
    /// The admin console's `RELOAD` (as SIGHUP) and `SHUTDOWN` (plain: at once, as SIGQUIT; `WAIT_FOR_SERVERS` as
    /// SIGINT; `WAIT_FOR_CLIENTS` as SIGTERM).
    static func consoleHooks(
        state: ServerState,
        proxy: ProxyServer,
        group: ServiceGroup,
        logger: Logger
    ) -> AdminConsoleHooks {
        AdminConsoleHooks(
            reload: { ConfigurationReloader(state: state, logger: logger).reload(trigger: "RELOAD") },
            shutdown: { mode in
                logger.info("SHUTDOWN from the admin console", metadata: ["mode": "\(mode.rawValue)"])
                let shutdown: ProxyServer.ShutdownMode =
                    switch mode {
                    case .immediate: .immediate
                    case .waitForServers: .waitForServers
                    case .waitForClients: .waitForClients
                    }
                guard proxy.requestShutdown(shutdown) else { return }
                Task { await group.triggerGracefulShutdown() }
            }
        )
    }
}
