/* libmcproxy: the umbrella header. */
#ifndef MCPROXY_MCPROXY_H
#define MCPROXY_MCPROXY_H

#include "mcproxy/error.h"
#include "mcproxy/sni.h"
#include "mcproxy/hash.h"
#include "mcproxy/backend.h"
#include "mcproxy/routes.h"
#include "mcproxy/geoip.h"
#include "mcproxy/firewall.h"
#include "mcproxy/listener.h"
#include "mcproxy/store.h"

/* The library's version, "MAJOR.MINOR.PATCH". */
const char *mcp_version(void);

#endif
