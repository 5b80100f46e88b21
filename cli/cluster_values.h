/*
 * cluster_values: the keys and JSON values that hold a fleet's desired state in etcd
 * (docs/SCALING.md; the key layout is in this header), parsed into C structs and written back out.
 *
 *   PREFIX listeners/ADDR           {"max_connections":0,"proxy_protocol":false,"proxy_from":[],
 *                                    "fallback":"","rate_limit":"0","max_connections_per_client":0}
 *   PREFIX routes/ADDR/HOSTNAME     {"backend":"127.0.0.1:8443","send_proxy":"v2"}
 *   PREFIX firewall/TYPE/VALUE      {}        (TYPE ip, cidr or country; a CIDR keeps its '/')
 *
 * Keys must be in canonical form (the form mc-proxy itself writes: listen addresses as
 * mcp_listener_addr_parse prints them, lowercase hostnames, firewall values as mcp_firewall_normalize
 * prints them). A key that means the same thing as another but is spelled differently is
 * refused rather than aliased, so a later delete of one spelling can never remove state that
 * another spelling created.
 *
 * Values are JSON objects (parsed with libjansson). Unknown fields are ignored, absent fields
 * take their defaults, a field of the wrong type or out of range fails the whole value, and so
 * does a duplicated field. Nothing here touches the store or the network: every function is
 * pure over its arguments and safe on any thread.
 *
 * Errors: 0 on success; MCP_EINVAL (with a one-line reason in err) for a key or value that does
 * not parse; MCP_ENOENT for a key outside the prefix; MCP_ENOMEM.
 */
#ifndef MCP_CLUSTER_VALUES_H
#define MCP_CLUSTER_VALUES_H

#include <stddef.h>
#include <stdint.h>

#include "mcproxy/firewall.h"
#include "mcproxy/backend.h"
#include "mcproxy/routes.h"
#include "mcproxy/hostname.h"

/* Longest canonical listen address ("[" IPv6 "]:" port), as mcp_listener_addr_parse's text. */
#define CLUSTER_ADDR_MAX 64
/* Longest route hostname: a hostname, or "*." and a hostname. */
#define CLUSTER_HOSTNAME_MAX (MCP_HOSTNAME_MAX + 2)

typedef enum cluster_kind_e {
  CLUSTER_LISTENER = 1,
  CLUSTER_ROUTE = 2,
  CLUSTER_FIREWALL = 3,
} cluster_kind_t;

/* A parsed key. Plain value; the caller owns it. */
typedef struct cluster_key_s {
  cluster_kind_t kind;
  char listener[CLUSTER_ADDR_MAX];         /* LISTENER and ROUTE */
  char hostname[CLUSTER_HOSTNAME_MAX + 1]; /* ROUTE: lowercase, maybe "*.example.com" */
  mcp_firewall_type_t fw_type;                   /* FIREWALL */
  char fw_value[MCP_FIREWALL_VALUE_MAX];         /* FIREWALL: canonical */
} cluster_key_t;

/* How a route introduces the client to its backend. */
typedef enum cluster_send_proxy_e {
  CLUSTER_SEND_PROXY_NONE = 0,
  CLUSTER_SEND_PROXY_V1 = 1,
  CLUSTER_SEND_PROXY_V2 = 2,
} cluster_send_proxy_t;

/*
 * A listener's settings. proxy_from is an array of n_proxy_from canonical CIDRs allocated by
 * cluster_listener_parse and released with cluster_listener_release; everything else is inline.
 */
typedef struct cluster_listener_s {
  int64_t max_connections; /* 0 = unlimited */
  int proxy_protocol;      /* 1: every connection starts with a PROXY header */
  char (*proxy_from)[MCP_FIREWALL_VALUE_MAX];
  size_t n_proxy_from;
  char fallback[MCP_BACKEND_MAX];     /* canonical backend, "" = none */
  int64_t rate_limit_count;           /* 0 = off */
  int64_t rate_limit_period_ms;       /* > 0 when rate_limit_count > 0 */
  int64_t max_connections_per_client; /* 0 = unlimited */
} cluster_listener_t;

typedef struct cluster_route_s {
  char backend[MCP_BACKEND_MAX]; /* canonical, as mcp_backend_parse prints it */
  cluster_send_proxy_t send_proxy;
} cluster_route_t;

/*
 * Parses key (key_len bytes, need not be NUL-terminated) under prefix (NUL-terminated, e.g.
 * "/mc-proxy/"). Returns 0, MCP_ENOENT when key does not start with prefix, or MCP_EINVAL
 * when the rest matches no pattern, is not canonical, or carries a malformed address, hostname
 * or rule (err says which).
 */
int cluster_key_parse(const char *prefix, const char *key, size_t key_len, cluster_key_t *out,
                      char *err, size_t errlen);

/* Writes prefix + the key's path to buf (NUL-terminated). Returns its length, or MCP_ERANGE
 * when buf is too small. */
int cluster_key_format(const char *prefix, const cluster_key_t *key, char *buf, size_t buflen);

/* Parses a listener value (len bytes of JSON). On success *out owns its proxy_from array. */
int cluster_listener_parse(const char *json, size_t len, cluster_listener_t *out, char *err,
                           size_t errlen);
/* Frees what cluster_listener_parse allocated (the struct itself is the caller's). */
void cluster_listener_release(cluster_listener_t *l);

/* Parses a route value. */
int cluster_route_parse(const char *json, size_t len, cluster_route_t *out, char *err,
                        size_t errlen);

/* Checks a firewall value: any JSON object (its fields are ignored). */
int cluster_firewall_parse(const char *json, size_t len, char *err, size_t errlen);

/*
 * One key-value pair as a watch event or a read delivers it, parsed whole: the key, and for a
 * put the value of its kind. A delete needs a valid key only. On failure nothing is left to
 * release and err says what is wrong (for the caller to report, count and skip).
 */
typedef struct cluster_entry_s {
  cluster_key_t key;
  int is_delete;
  cluster_listener_t listener; /* put of a LISTENER key; release with cluster_entry_release */
  cluster_route_t route;       /* put of a ROUTE key */
} cluster_entry_t;

int cluster_entry_parse(const char *prefix, const char *key, size_t key_len, const char *value,
                        size_t value_len, int is_delete, cluster_entry_t *out, char *err,
                        size_t errlen);
void cluster_entry_release(cluster_entry_t *e);

/*
 * The JSON text of a listener or route, every field written, in a malloc'd NUL-terminated
 * string the caller frees; NULL when out of memory. Parsing the result gives back the input.
 */
char *cluster_listener_to_json(const cluster_listener_t *l);
char *cluster_route_to_json(const cluster_route_t *r);

/*
 * Parses a rate limit: "0" (off) or "N/PERIOD" with N >= 1 and PERIOD a duration ("250ms",
 * "1s", "2m", "1h"; a bare number is seconds) of at least 1 ms. Returns 0 or MCP_EINVAL.
 */
int cluster_rate_limit_parse(const char *text, int64_t *count, int64_t *period_ms);

#endif
