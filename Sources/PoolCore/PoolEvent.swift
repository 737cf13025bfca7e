/// What can happen to a pool; fed to ``PoolStateMachine/handle(_:now:)``.
public enum PoolEvent: Sendable, Equatable {
    /// Open `min_size` connections.
    case start
    /// A client asks for a connection. The id must be new. Among idle connections, one with the same `affinity`
    /// (the event loop the client runs on, say) is preferred; the order in which waiters are served does not change.
    case leaseRequested(RequestID, affinity: Int? = nil)
    /// The client went away; a request still waiting is failed with ``PoolError/Code/cancelled``.
    case requestCancelled(RequestID)
    /// The factory opened a connection asked for by ``PoolAction/createConnection(_:affinity:)``; `affinity` is matched
    /// against requests' (see ``leaseRequested(_:affinity:)``).
    case connectionEstablished(ConnectionID, affinity: Int? = nil)
    /// The factory could not open the connection.
    case connectFailed(ConnectionID, ConnectError)
    /// A client gave back, in a clean state, the connection it leased with this request. A release that names
    /// any other lease (an earlier one, or one of another client) is stale: ignored and observed as
    /// ``PoolObservation/staleRelease``, so that a connection is never handed out twice.
    case connectionReleased(ConnectionID, lease: RequestID)
    /// A connection broke: while leased with `lease` (a stale lease is ignored, as for a release), or, with no
    /// lease named, while idle or being pinged.
    case connectionBroken(ConnectionID, lease: RequestID?, ConnectionErrorReason)
    /// The holder of `lease` gives the connection back to be closed: it works, but is not fit for another client
    /// (replies still owed, a reset that failed). Part of normal work, not an error.
    case connectionRetired(ConnectionID, lease: RequestID, CloseReason)
    /// A ping asked for by ``PoolAction/ping(_:for:)`` answered.
    case pingSucceeded(ConnectionID)
    /// A ping asked for by ``PoolAction/ping(_:for:)`` failed.
    case pingFailed(ConnectionID)
    /// A timer asked for by ``PoolAction/scheduleTimer(_:)`` reached its deadline.
    case timerFired(PoolTimer)
    /// New settings (configuration reload).
    case reconfigure(PoolConfiguration)
    /// Every connection opened (or being opened) so far is stale: its server address or credentials changed, or an
    /// operator asked (`RECONNECT`). Idle ones close now, the others when they come back; as `pool_recycle`.
    case reconnect
    /// Stop handing out, fail the waiters, close idle connections now and the others when they come back.
    case shutdown
    /// The drain timeout passed: close leased connections too.
    case closeLeased
    /// The connect asked for by ``PoolAction/createConnection(_:affinity:)`` is not made: the database's
    /// `max_db_connections` is reached. The pool opens nothing more until ``connectPermitted``; its waiters keep
    /// waiting, up to `pool_timeout`.
    case connectDeferred(ConnectionID)
    /// There is room under the database's `max_db_connections` again: the pool opens what it still needs.
    case connectPermitted
    /// Another pool of the database needs room under `max_db_connections`: close the least recently used idle
    /// connection, if there is one (PgBouncer's eviction). Counted as closed for `idle`.
    case evictIdle
}

/// What the live pool must do; returned by ``PoolStateMachine/handle(_:now:)`` in the order to run them.
public enum PoolAction: Sendable, Equatable {
    /// Open a new server connection with this id; with `affinity`, where a request with that affinity runs (the
    /// waiter it is opened for), so that the two need no thread hop.
    case createConnection(ConnectionID, affinity: Int? = nil)
    /// Hand the connection to the request.
    case lease(ConnectionID, to: RequestID)
    /// Check the connection before it goes to the request; answer with `pingSucceeded` or `pingFailed`.
    case ping(ConnectionID, for: RequestID)
    /// Close the connection; the pool has forgotten it.
    case close(ConnectionID, CloseReason)
    /// Fail the request with this error.
    case failRequest(RequestID, PoolError)
    /// Feed `timer` back as ``PoolEvent/timerFired(_:)`` at its deadline.
    case scheduleTimer(PoolTimer)
    /// The timer is no longer needed.
    case cancelTimer(PoolTimer.ID)
    /// Report to the observer.
    case observe(PoolObservation)
    /// Shutdown finished: no connection is left.
    case shutdownComplete
}
