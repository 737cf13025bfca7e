import ConnectionPool
import NIOCore
import PoolCore
import ProxyCore

/// Carries out a ``ReturnPlan`` decided by the session: the connection goes back to its pool under the lease that
/// held it, after the plan's commands, or is closed.
enum ServerReturn {
    static func run(_ plan: ReturnPlan, server: ServerConnection, lease: RequestID, pool: ProxyPool, mode: PoolMode) {
        switch plan {
        case .release:
            pool.pool.release(server, lease: lease)
        case .discard:
            pool.pool.discard(server, lease: lease)
        case .reset(let commands):
            guard server.isActive else {
                pool.pool.discard(server, lease: lease)
                return
            }
            Self.run(commands[...], on: server).whenComplete { result in
                guard case .success(true) = result else {
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
