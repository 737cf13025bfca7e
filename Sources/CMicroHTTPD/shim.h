#ifndef LIFEGUARD_CMICROHTTPD_SHIM_H
#define LIFEGUARD_CMICROHTTPD_SHIM_H

// libmicrohttpd's header expects the socket types to be declared first.
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <microhttpd.h>

// Swift cannot call C variadic functions, so the variadic entry points are wrapped here with exactly the options
// Lifeguard uses.

/// Starts a daemon on an already bound and listening socket, with a connection limit and an idle timeout.
/// Wraps the variadic `MHD_start_daemon`.
static inline struct MHD_Daemon *lifeguard_mhd_start_daemon(
    unsigned int flags,
    MHD_socket listen_fd,
    unsigned int connection_limit,
    unsigned int connection_timeout_seconds,
    MHD_AccessHandlerCallback handler,
    void *handler_cls
) {
    return MHD_start_daemon(
        flags,
        0,
        NULL,
        NULL,
        handler,
        handler_cls,
        MHD_OPTION_LISTEN_SOCKET, listen_fd,
        MHD_OPTION_CONNECTION_LIMIT, connection_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, connection_timeout_seconds,
        MHD_OPTION_END
    );
}

/// Number of connections the daemon has open now. Wraps the variadic `MHD_get_daemon_info`.
static inline unsigned int lifeguard_mhd_current_connections(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return info == NULL ? 0 : info->num_connections;
}

#endif
