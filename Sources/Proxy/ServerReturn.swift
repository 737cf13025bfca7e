import ConnectionPool
import NIOCore
import PoolCore
import ProxyCore

/// Carries out a ``ReturnPlan`` decided by the session: the connection goes back to its pool under the lease that
/// held it, after the plan's commands, or is closed.
enum ServerReturn {
    /// - Parameter ledger: what the connection owed when it was given back; a FATAL in it means the server ended it.
    static func run(
        _ plan: ReturnPlan,
        server: ServerConnection,
        lease: RequestID,
        ledger: ServerLedger,
        pool: ProxyPool,
        mode: PoolMode
    ) {
        switch plan {
        case .release:
            pool.pool.release(server, lease: lease)
        case .discard:
            // A connection that still works is closed as unfit for reuse, which is normal work; one that is gone
            // or going (the server closed it, or said FATAL) broke.
            if server.isActive && !ledger.fatal {
                pool.pool.retire(server, lease: lease, reason: .dirty)
            } else {
                pool.pool.discard(server, lease: lease)
            }
        case .reset(let commands):
            guard server.isActive else {
                pool.pool.discard(server, lease: lease)
                return
            }
            Self.run(commands[...], on: server).whenComplete { result in
                switch result {
                case .success(true):
                    break
                case .success(false):
                    pool.pool.retire(server, lease: lease, reason: .resetFailed)
                    return
                case .failure:
                    pool.pool.discard(server, lease: lease)
                    return
                }
                if plan.clearsPreparedStatements { server.clearPreparedStatements() }
                if mode == .session {
                    // DISCARD ALL resets what PostgreSQL does not report back.
                    server.parameters.withLock { parameters in
                        for name in SessionParameters.unreported { parameters[name] = nil }
                    }
                }
                pool.pool.release(server, lease: lease)
            }
        }
    }

    /// Runs `commands` one after the other; true when each succeeded and the last left the connection idle.
    private static func run(_ commands: ArraySlice<String>, on server: ServerConnection) -> EventLoopFuture<Bool> {
        guard let command = commands.first else { return server.eventLoop.makeSucceededFuture(true) }
        return server.run(command).flatMap { result in
            guard result.error == nil else { return server.eventLoop.makeSucceededFuture(false) }
            if commands.count == 1 { return server.eventLoop.makeSucceededFuture(result.status == .idle) }
            return Self.run(commands.dropFirst(), on: server)
        }
    }
}
