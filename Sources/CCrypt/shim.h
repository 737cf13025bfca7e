#ifndef LIFEGUARD_CCRYPT_SHIM_H
#define LIFEGUARD_CCRYPT_SHIM_H

// libxcrypt's crypt_rn: the reentrant crypt that never returns a static buffer, so that several threads may verify
// passwords at once. Debian's libxcrypt verifies bcrypt ($2b$, $2a$, $2y$) among others.
#include <crypt.h>

#endif
