/* libmcproxy: the umbrella header. */
#ifndef MCPROXY_MCPROXY_H
#define MCPROXY_MCPROXY_H

#include "mcproxy/error.h"
#include "mcproxy/hostname.h"
#include "mcproxy/sni.h"
#include "mcproxy/hash.h"
#include "mcproxy/backend.h"
#include "mcproxy/routes.h"
#include "mcproxy/geoip.h"
#include "mcproxy/firewall.h"
#include "mcproxy/listener.h"
#include "mcproxy/store.h"
#include "mcproxy/proxy_protocol.h"
#include "mcproxy/client_limits.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/* The library's version, "MAJOR.MINOR.PATCH". */
const char *mcp_version(void);

#ifdef __cplusplus
}
#endif

#endif
