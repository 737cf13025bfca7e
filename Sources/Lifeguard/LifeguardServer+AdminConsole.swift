import AdminConsole
import LifeguardConfig
import Logging
import Proxy
import ServiceLifecycle

extension LifeguardServer {
    /// The admin console's `RELOAD` (as SIGHUP) and `SHUTDOWN` (as SIGTERM: stop accepting, let transactions finish up
    /// to `drain_timeout`, then stop).
    static func consoleHooks(state: ServerState, group: ServiceGroup, logger: Logger) -> AdminConsoleHooks {
        AdminConsoleHooks(
            reload: { ConfigurationReloader(state: state, logger: logger).reloadFromConsole() },
            shutdown: { mode in
                logger.info("SHUTDOWN from the admin console", metadata: ["mode": "\(mode.rawValue)"])
                Task { await group.triggerGracefulShutdown() }
            }
        )
    }
}

extension ConfigurationReloader {
    /// One reload, as on SIGHUP; false when the new configuration was refused (the reason is logged).
    func reloadFromConsole() -> Bool {
        let current = self.state.configuration
        let next: LifeguardConfiguration
        do {
            next = try current.reloaded()
        } catch {
            for line in error.lines { self.logger.error("reload failed: \(line)") }
            self.logger.error("reload failed: keeping the configuration in force")
            self.state.metrics.setConfigReloadSuccessful(false)
            return false
        }
        do {
            try self.state.reload(next)
        } catch {
            self.logger.error("reload failed: \(error)")
            self.state.metrics.setConfigReloadSuccessful(false)
            return false
        }
        self.state.metrics.setConfigReloadSuccessful(true)
        self.logger.info("configuration reloaded (RELOAD on the admin console)")
        return true
    }
}
