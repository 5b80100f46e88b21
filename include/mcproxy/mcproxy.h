/* libmcproxy: the umbrella header. */
#ifndef MCPROXY_MCPROXY_H
#define MCPROXY_MCPROXY_H

#include "mcproxy/error.h"
#include "mcproxy/sni.h"
#include "mcproxy/router.h"
#include "mcproxy/firewall.h"
#include "mcproxy/listener.h"
#include "mcproxy/store.h"
#include "mcproxy/proxy_protocol.h"
#include "mcproxy/client_limits.h"

/* The library's version, "MAJOR.MINOR.PATCH". */
const char *mcp_version(void);

#endif
