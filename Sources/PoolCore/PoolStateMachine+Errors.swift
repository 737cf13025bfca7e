extension PoolStateMachine {
    /// Names the pool, what is in use against the limit, how many wait, and the settings to change.
    func timeoutError() -> PoolError {
        let config = self.configuration
        var message =
            "pool_timeout: no server connection for pool \(self.key) within \(format(config.poolTimeout)): "
            + "\(self.counts.used) of \(config.maxConnections) connections in use "
            + "(pool_size \(config.poolSize) + max_overflow \(config.maxOverflow))"
        if self.counts.connecting > 0 {
            message += ", \(self.counts.connecting) connecting"
        }
        message += ", \(self.counts.waiting) \(self.counts.waiting == 1 ? "client" : "clients") waiting; "
        if self.connectsDeferred {
            message +=
                "the database's max_db_connections holds new connections back: raise it, or size the pools of the "
                + "database to fit it"
        } else {
            message += "raise pool_size or max_overflow, or pool_timeout if such waits are expected"
        }
        return PoolError(code: .timeout, message: message)
    }

    func connectFailedError(_ failing: ConnectFailing) -> PoolError {
        let attempts = failing.failures == 1 ? "1 attempt" : "\(failing.failures) attempts in a row"
        let message =
            "pool \(self.key): could not open a server connection within pool_timeout "
            + "(\(format(self.configuration.poolTimeout))), \(attempts) failed; last error "
            + "(\(failing.lastError.reason.rawValue)): \(failing.lastError.message)"
        return PoolError(code: .connectFailed, message: message, connectError: failing.lastError)
    }

    /// The server's own words: what a client connecting directly would have been told.
    func refusedError(_ error: ConnectError) -> PoolError {
        PoolError(code: .refused, message: error.message, connectError: error)
    }

    func shuttingDownError() -> PoolError {
        PoolError(code: .shuttingDown, message: "pool \(self.key) is shutting down; no new server connections")
    }

    func cancelledError() -> PoolError {
        PoolError(code: .cancelled, message: "request for a server connection from pool \(self.key) was cancelled")
    }
}

/// `250ms`, `30s`, `1.5s`: the forms the configuration accepts.
func format(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    let milliseconds = attoseconds / 1_000_000_000_000_000
    if milliseconds == 0 { return "\(seconds)s" }
    if seconds == 0 { return "\(milliseconds)ms" }
    return "\(seconds * 1000 + milliseconds)ms"
}
