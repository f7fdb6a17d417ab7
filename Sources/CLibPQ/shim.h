#ifndef CLIBPQ_SHIM_H
#define CLIBPQ_SHIM_H
// Debian installs the header under /usr/include/postgresql; pkg-config libpq adds that path.
#include <libpq-fe.h>
#endif
