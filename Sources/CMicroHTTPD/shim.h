#ifndef LIFEGUARD_CMICROHTTPD_SHIM_H
#define LIFEGUARD_CMICROHTTPD_SHIM_H

// libmicrohttpd's header expects the socket types to be declared first.
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <microhttpd.h>
// Debian's libmicrohttpd does its TLS with GnuTLS: client-certificate policy is set on each connection's GnuTLS session.
#include <gnutls/gnutls.h>

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

/// What the TLS handshake asks of a client certificate: exporter-toolkit's `client_auth_type` values, which are Go's
/// `tls.ClientAuthType`.
enum lifeguard_client_auth {
    LIFEGUARD_CLIENT_AUTH_NONE = 0,
    LIFEGUARD_CLIENT_AUTH_REQUEST = 1,
    LIFEGUARD_CLIENT_AUTH_REQUIRE_ANY = 2,
    LIFEGUARD_CLIENT_AUTH_VERIFY_IF_GIVEN = 3,
    LIFEGUARD_CLIENT_AUTH_REQUIRE_AND_VERIFY = 4,
};

/// libmicrohttpd only ever asks for a client certificate (`GNUTLS_CERT_REQUEST` when a trust store is set) and never
/// verifies it. This sets the policy on the connection's GnuTLS session before its handshake: `GNUTLS_CERT_REQUIRE`
/// makes a missing certificate fail the handshake, and `gnutls_session_set_verify_cert` makes GnuTLS verify the one
/// sent against `MHD_OPTION_HTTPS_MEM_TRUST` during the handshake, failing it when verification fails.
/// `cls` carries the `lifeguard_client_auth` value.
static void lifeguard_mhd_notify_connection(
    void *cls,
    struct MHD_Connection *connection,
    void **socket_context,
    enum MHD_ConnectionNotificationCode code
) {
    (void)socket_context;
    if (code != MHD_CONNECTION_NOTIFY_STARTED) {
        return;
    }
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (info == NULL || info->tls_session == NULL) {
        return;
    }
    gnutls_session_t session = (gnutls_session_t)info->tls_session;
    switch ((enum lifeguard_client_auth)(intptr_t)cls) {
    case LIFEGUARD_CLIENT_AUTH_NONE:
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_IGNORE);
        break;
    case LIFEGUARD_CLIENT_AUTH_REQUEST:
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUEST);
        break;
    case LIFEGUARD_CLIENT_AUTH_REQUIRE_ANY:
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
        break;
    case LIFEGUARD_CLIENT_AUTH_VERIFY_IF_GIVEN:
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUEST);
        gnutls_session_set_verify_cert(session, NULL, 0);
        break;
    case LIFEGUARD_CLIENT_AUTH_REQUIRE_AND_VERIFY:
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(session, NULL, 0);
        break;
    }
}

/// Whether the request's connection satisfies `mode` after the handshake: a second check of what the handshake
/// enforced, so that a libmicrohttpd that set up sessions differently could never let an unverified client through.
static inline int lifeguard_mhd_client_certificate_ok(struct MHD_Connection *connection, enum lifeguard_client_auth mode) {
    if (mode == LIFEGUARD_CLIENT_AUTH_NONE || mode == LIFEGUARD_CLIENT_AUTH_REQUEST) {
        return 1;
    }
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (info == NULL || info->tls_session == NULL) {
        return 0;
    }
    gnutls_session_t session = (gnutls_session_t)info->tls_session;
    unsigned int count = 0;
    const gnutls_datum_t *peers = gnutls_certificate_get_peers(session, &count);
    int present = peers != NULL && count > 0;
    if (!present) {
        return mode == LIFEGUARD_CLIENT_AUTH_VERIFY_IF_GIVEN;
    }
    if (mode == LIFEGUARD_CLIENT_AUTH_REQUIRE_ANY) {
        return 1;
    }
    unsigned int status = 0;
    return gnutls_certificate_verify_peers2(session, &status) == GNUTLS_E_SUCCESS && status == 0;
}

/// Whether GnuTLS accepts the TLS material as libmicrohttpd will hand it over: the certificate with its key, the trust
/// store (may be NULL) and the priority string. 0 when it does, else a GnuTLS error code. Checked before a daemon is
/// started, so that a refusal leaves the daemon in service untouched.
static inline int lifeguard_gnutls_check(const char *cert_pem, const char *key_pem, const char *trust_pem,
                                         const char *priorities) {
    gnutls_certificate_credentials_t credentials;
    int status = gnutls_certificate_allocate_credentials(&credentials);
    if (status < 0) {
        return status;
    }
    gnutls_datum_t cert = {(unsigned char *)cert_pem, (unsigned int)strlen(cert_pem)};
    gnutls_datum_t key = {(unsigned char *)key_pem, (unsigned int)strlen(key_pem)};
    status = gnutls_certificate_set_x509_key_mem(credentials, &cert, &key, GNUTLS_X509_FMT_PEM);
    if (status >= 0 && trust_pem != NULL) {
        gnutls_datum_t trust = {(unsigned char *)trust_pem, (unsigned int)strlen(trust_pem)};
        status = gnutls_certificate_set_x509_trust_mem(credentials, &trust, GNUTLS_X509_FMT_PEM);
        if (status == 0) {
            status = GNUTLS_E_NO_CERTIFICATE_FOUND;
        }
    }
    gnutls_certificate_free_credentials(credentials);
    if (status < 0) {
        return status;
    }
    gnutls_priority_t priority;
    status = gnutls_priority_init(&priority, priorities, NULL);
    if (status < 0) {
        return status;
    }
    gnutls_priority_deinit(priority);
    return 0;
}

/// Starts an HTTPS daemon on an already bound and listening socket: certificate and key (PEM), an optional trust
/// store for client certificates (PEM, may be NULL), a GnuTLS priority string (the TLS versions), and the client
/// certificate policy. Wraps the variadic `MHD_start_daemon`; `flags` must include `MHD_USE_TLS`.
static inline struct MHD_Daemon *lifeguard_mhd_start_tls_daemon(
    unsigned int flags,
    MHD_socket listen_fd,
    unsigned int connection_limit,
    unsigned int connection_timeout_seconds,
    MHD_AccessHandlerCallback handler,
    void *handler_cls,
    const char *cert_pem,
    const char *key_pem,
    const char *trust_pem,
    const char *priorities,
    enum lifeguard_client_auth client_auth
) {
    void *auth_cls = (void *)(intptr_t)client_auth;
    if (trust_pem == NULL) {
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
            MHD_OPTION_HTTPS_MEM_CERT, cert_pem,
            MHD_OPTION_HTTPS_MEM_KEY, key_pem,
            MHD_OPTION_HTTPS_PRIORITIES, priorities,
            MHD_OPTION_NOTIFY_CONNECTION, lifeguard_mhd_notify_connection, auth_cls,
            MHD_OPTION_END
        );
    }
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
        MHD_OPTION_HTTPS_MEM_CERT, cert_pem,
        MHD_OPTION_HTTPS_MEM_KEY, key_pem,
        MHD_OPTION_HTTPS_MEM_TRUST, trust_pem,
        MHD_OPTION_HTTPS_PRIORITIES, priorities,
        MHD_OPTION_NOTIFY_CONNECTION, lifeguard_mhd_notify_connection, auth_cls,
        MHD_OPTION_END
    );
}

#endif
