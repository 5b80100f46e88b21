/*
 * firewall: the global block list (single IPs, CIDR ranges, GeoIP countries).
 *
 * Like route tables, a firewall is built or cloned and edited by one thread, sealed, then
 * shared as an immutable snapshot by reference count (atomic ref/unref). mcp_firewall_seal()
 * builds the lookup index after a batch of edits (so seeding 100,000 rules is not quadratic);
 * mcp_listener_set_firewall() seals before publishing. Lookups: single IPs O(1) (hash), CIDRs
 * O(log n) over merged ranges (IPv4 and IPv6), countries via one libmaxminddb lookup. An
 * IPv4-mapped IPv6 client (::ffff:a.b.c.d) is checked as its IPv4 address.
 */
#ifndef MCPROXY_FIREWALL_H
#define MCPROXY_FIREWALL_H

#include <stddef.h>
#include <sys/socket.h>

#include "mcproxy/error.h"
#include "mcproxy/geoip.h"

/* Signals: libmcproxy never installs a signal handler or changes a signal mask. It writes to
 * sockets with send(2) (MSG_NOSIGNAL) and splice(2), and splice raises SIGPIPE when a peer has
 * gone, so a program that runs listeners must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * it starts one. */
#ifdef __cplusplus
extern "C" {
#endif

/* Rule types; the values match FirewallRuleType in the admin proto. */
typedef enum mcp_firewall_type_e {
  MCP_FIREWALL_IP = 1,
  MCP_FIREWALL_CIDR = 2,
  MCP_FIREWALL_COUNTRY = 3,
} mcp_firewall_type_t;

/* Longest canonical rule value ("ffff:...:ffff/128" is 43 bytes), plus NUL. */
#define MCP_FIREWALL_VALUE_MAX 48

/* "ip", "cidr", "country" (the names used by the store and the CLI), or NULL. */
const char *mcp_firewall_type_name(mcp_firewall_type_t type);
/* The inverse of mcp_firewall_type_name; returns 0 and sets *type, or MCP_EINVAL. */
int mcp_firewall_type_parse(const char *name, mcp_firewall_type_t *type);

/*
 * Validates a rule value and writes its canonical text to out (MCP_FIREWALL_VALUE_MAX bytes):
 * IP addresses as inet_ntop prints them (IPv4-mapped IPv6 becomes IPv4), CIDRs as
 * "network/prefix" with host bits cleared, countries as two uppercase ASCII letters.
 * Returns 0 or MCP_EINVAL.
 */
int mcp_firewall_normalize(mcp_firewall_type_t type, const char *value, char *out);

typedef struct mcp_firewall_s mcp_firewall_t;

/* Creates an empty firewall with reference count 1 in *out. Returns 0 or MCP_ENOMEM. */
int mcp_firewall_new(mcp_firewall_t **out);
/*
 * Creates a deep copy of src (rules and GeoIP reference; NULL: an empty firewall) with
 * reference count 1 in *out. Returns 0 or MCP_ENOMEM (*out untouched).
 */
int mcp_firewall_clone(const mcp_firewall_t *src, mcp_firewall_t **out);

/*
 * Adds a rule (value validated and normalised as by mcp_firewall_normalize). Idempotent: returns 0
 * when added and when the rule was already there; else MCP_EINVAL or MCP_ENOMEM.
 * Country rules are accepted without a GeoIP database (they then match nothing); the admin
 * layer refuses them with FAILED_PRECONDITION before calling this. Unpublished firewalls only.
 */
int mcp_firewall_add(mcp_firewall_t *fw, mcp_firewall_type_t type, const char *value);
/* Removes a rule. Returns 0, MCP_EINVAL, or MCP_ENOENT. Unpublished firewalls only. */
int mcp_firewall_remove(mcp_firewall_t *fw, mcp_firewall_type_t type, const char *value);
/* Replaces the GeoIP database used for country rules (takes a new reference; NULL clears). */
void mcp_firewall_set_geoip(mcp_firewall_t *fw, mcp_geoip_t *geoip);
mcp_geoip_t *mcp_firewall_geoip(const mcp_firewall_t *fw);

/*
 * Builds the lookup index after edits. Returns 0, MCP_EINVAL (NULL) or MCP_ENOMEM. Idempotent
 * and safe to call from several threads at once on the same firewall (a process-wide lock: the
 * first call builds, the others find it sealed), so one unsealed firewall may be handed to
 * listeners on several loops. Editing a firewall while another thread seals or checks it is
 * still forbidden: edit before publishing only.
 */
int mcp_firewall_seal(mcp_firewall_t *fw);

/*
 * A predicate (it cannot fail): returns 1 if the client address is blocked, 0 if not. fw must
 * be sealed. Any thread.
 */
int mcp_firewall_check(const mcp_firewall_t *fw, const struct sockaddr *client);

size_t mcp_firewall_count(const mcp_firewall_t *fw);
size_t mcp_firewall_country_count(const mcp_firewall_t *fw);

/*
 * Calls cb for every rule, ordered by type then value; stops early and returns cb's value when
 * it is non-zero, else returns 0.
 */
typedef int (*mcp_firewall_rule_cb)(void *data, mcp_firewall_type_t type, const char *value);
int mcp_firewall_foreach(const mcp_firewall_t *fw, mcp_firewall_rule_cb cb, void *data);

mcp_firewall_t *mcp_firewall_ref(mcp_firewall_t *fw);
void mcp_firewall_unref(mcp_firewall_t *fw);

#ifdef __cplusplus
}
#endif

#endif
