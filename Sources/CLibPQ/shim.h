#ifndef LIFEGUARD_CLIBPQ_SHIM_H
#define LIFEGUARD_CLIBPQ_SHIM_H

// libpq's client API; pkg-config (libpq) supplies -I/usr/include/postgresql.
#include <libpq-fe.h>

#endif
