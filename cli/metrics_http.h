/*
 * metrics_http: the `[metrics] addr` HTTP endpoint (see docs/METRICS.md).
 *
 * Served by libmicrohttpd on one thread of its own (its internal polling thread), never on a
 * worker loop, so a slow or hostile HTTP client cannot delay the data plane:
 *   GET /metrics  200, Content-Type text/plain; version=0.0.4, body from the render callback
 *                 (500 when the callback returns NULL)
 *   GET /healthz  200 "ok\n" while serving, 503 "not serving\n" otherwise
 *   HEAD          as GET without the body
 *   other paths   404;  other methods 405 with "Allow: GET, HEAD"
 *
 * Hardening: at most max_connections connections in all and per_ip_connections from one client
 * address (more are accepted and closed at once), each closed after timeout_s seconds without
 * progress, each holding at most conn_memory bytes for its request. A slowloris therefore costs
 * a bounded amount of memory, cannot starve clients from other addresses, and never touches
 * the proxy's loops.
 *
 * Threads: metrics_http_start/stop on one thread (the main loop in mc-proxy);
 * metrics_http_set_serving from any thread; the render callback runs on the HTTP thread, one
 * call at a time.
 */
#ifndef MCP_CLI_METRICS_HTTP_H
#define MCP_CLI_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct metrics_http_s metrics_http_t;

/*
 * Produces one /metrics body: returns a malloc'd buffer (freed by the endpoint) and its length
 * in *len, or NULL on failure (the client then gets 500). Runs on the HTTP thread and must not
 * block on a worker loop: read per-loop counters with relaxed atomic loads (see prom.h).
 */
typedef char *(*metrics_http_render_fn)(void *data, size_t *len);

/* Limits; a zero field takes the default shown. */
typedef struct metrics_http_options_s {
  unsigned max_connections;    /* 32 */
  unsigned per_ip_connections; /* 4 */
  unsigned timeout_s;          /* 10: idle seconds before a connection is closed */
  size_t conn_memory;          /* 16384: bytes per connection for the request */
} metrics_http_options_t;

/*
 * Binds addr ("IPv4:port" or "[IPv6]:port", the listener address syntax; port 0 lets the kernel
 * choose, see metrics_http_port) and starts serving on a new thread. render(data, ...) makes
 * each /metrics body. The endpoint starts as not serving (/healthz 503) until
 * metrics_http_set_serving(h, true). opts may be NULL for the defaults.
 *
 * Returns 0 and *out, or a negative errno-style code with a message in err: -EINVAL for an
 * address that does not parse, -EADDRINUSE (or another bind/listen errno) naming the address
 * when it cannot be bound, -ENOMEM or -EIO when the server cannot start.
 */
int metrics_http_start(metrics_http_t **out, const char *addr, metrics_http_render_fn render,
                       void *data, const metrics_http_options_t *opts, char *err, size_t errlen);

/* Any thread. true: /healthz answers 200; false (draining, or listeners not bound yet): 503. */
void metrics_http_set_serving(metrics_http_t *h, bool serving);

/* The bound TCP port (the kernel's choice when addr asked for port 0). */
int metrics_http_port(const metrics_http_t *h);

/* The number of HTTP connections open now (for tests and diagnostics). */
unsigned metrics_http_connections(const metrics_http_t *h);

/* Stops serving, closes every connection and the socket, joins the thread, frees h. NULL ok. */
void metrics_http_stop(metrics_http_t *h);

#endif
