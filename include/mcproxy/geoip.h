/*
 * geoip: an open GeoIP (MaxMind DB) file, for the firewall's country rules.
 */
#ifndef MCPROXY_GEOIP_H
#define MCPROXY_GEOIP_H

#include <stddef.h>
#include <sys/socket.h>

#include "mcproxy/error.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/*
 * An open GeoIP (MaxMind DB) file, reference counted so that a firewall snapshot in use keeps
 * the old file open while SIGHUP opens a new one. Lookups are thread-safe.
 */
typedef struct mcp_geoip_s mcp_geoip_t;

/* Opens path. Returns 0, or MCP_EIO with a message naming the file and the problem in err. */
int mcp_geoip_open(const char *path, mcp_geoip_t **out, char *err, size_t errlen);
mcp_geoip_t *mcp_geoip_ref(mcp_geoip_t *g);
void mcp_geoip_unref(mcp_geoip_t *g);
/* Writes the client's ISO country code (2 letters + NUL) to cc and returns 0, or MCP_ENOENT. */
int mcp_geoip_country(const mcp_geoip_t *g, const struct sockaddr *addr, char cc[3]);

#ifdef __cplusplus
}
#endif

#endif
