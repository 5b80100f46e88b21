/*
 * cluster_values: etcd keys and JSON values of a fleet's desired state. See cluster_values.h.
 *
 * Keys are split by hand (they are paths, not JSON); values go through libjansson. Every
 * address, hostname, backend and rule is checked with the same libmcproxy function the config
 * file and the admin API use, so the three agree on what is valid.
 */
#include "cluster_values.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>

#include "mcproxy/error.h"
#include "mcproxy/listener.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return MCP_EINVAL;
}

/* ---- keys -------------------------------------------------------------------------------- */

static int parse_listener_part(const char *s, size_t len, char *out, char *err, size_t errlen)
{
  char buf[CLUSTER_ADDR_MAX];
  struct sockaddr_storage ss;

  if (len == 0 || len >= sizeof(buf))
    return fail(err, errlen, "bad listener address in key");
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (mcp_listener_addr_parse(buf, &ss, out) != 0)
    return fail(err, errlen, "bad listener address \"%s\" in key", buf);
  if (strcmp(buf, out) != 0)
    return fail(err, errlen, "listener address \"%s\" is not canonical (write \"%s\")", buf, out);
  return 0;
}

static int parse_hostname_part(const char *s, size_t len, char *out, char *err, size_t errlen)
{
  size_t skip = 0;

  if (len >= 2 && s[0] == '*' && s[1] == '.')
    skip = 2;
  if (len <= skip || len > CLUSTER_HOSTNAME_MAX ||
      mcp_hostname_normalize(s + skip, len - skip, out + skip) < 0)
    return fail(err, errlen, "bad hostname \"%.*s\" in key", (int)(len > 300 ? 300 : len), s);
  if (skip)
    memcpy(out, "*.", 2);
  if (strlen(out) != len || memcmp(out, s, len) != 0)
    return fail(err, errlen, "hostname \"%.*s\" is not canonical (write \"%s\")", (int)len, s, out);
  return 0;
}

static int parse_firewall_part(const char *s, size_t len, cluster_key_t *out, char *err,
                               size_t errlen)
{
  const char *slash = memchr(s, '/', len);
  char type[16], value[MCP_FIREWALL_VALUE_MAX];

  if (!slash || (size_t)(slash - s) >= sizeof(type))
    return fail(err, errlen, "firewall key needs TYPE/VALUE");
  memcpy(type, s, (size_t)(slash - s));
  type[slash - s] = '\0';
  if (mcp_firewall_type_parse(type, &out->fw_type) != 0)
    return fail(err, errlen, "unknown firewall rule type \"%s\" (ip, cidr or country)", type);
  size_t vlen = len - (size_t)(slash - s) - 1;
  if (vlen == 0 || vlen >= sizeof(value))
    return fail(err, errlen, "bad %s rule value in key", type);
  memcpy(value, slash + 1, vlen);
  value[vlen] = '\0';
  if (mcp_firewall_normalize(out->fw_type, value, out->fw_value) != 0)
    return fail(err, errlen, "bad %s rule value \"%s\" in key", type, value);
  if (strcmp(value, out->fw_value) != 0)
    return fail(err, errlen, "%s rule \"%s\" is not canonical (write \"%s\")", type, value,
                out->fw_value);
  return 0;
}

int cluster_key_parse(const char *prefix, const char *key, size_t key_len, cluster_key_t *out,
                      char *err, size_t errlen)
{
  size_t plen = strlen(prefix);

  memset(out, 0, sizeof(*out));
  if (key_len < plen || memcmp(key, prefix, plen) != 0) {
    if (err && errlen)
      snprintf(err, errlen, "key is outside the prefix \"%s\"", prefix);
    return MCP_ENOENT;
  }
  const char *p = key + plen;
  size_t len = key_len - plen;
  if (memchr(p, '\0', len))
    return fail(err, errlen, "key holds a NUL byte");

  if (len > 10 && !memcmp(p, "listeners/", 10)) {
    out->kind = CLUSTER_LISTENER;
    return parse_listener_part(p + 10, len - 10, out->listener, err, errlen);
  }
  if (len > 7 && !memcmp(p, "routes/", 7)) {
    const char *rest = p + 7;
    size_t rlen = len - 7;
    /* A listen address never holds a '/', nor does a hostname: exactly one separator. */
    const char *slash = memchr(rest, '/', rlen);
    if (!slash)
      return fail(err, errlen, "route key needs ADDR/HOSTNAME");
    out->kind = CLUSTER_ROUTE;
    int rc = parse_listener_part(rest, (size_t)(slash - rest), out->listener, err, errlen);
    if (rc)
      return rc;
    size_t hlen = rlen - (size_t)(slash - rest) - 1;
    if (memchr(slash + 1, '/', hlen))
      return fail(err, errlen, "route key has more than ADDR/HOSTNAME");
    return parse_hostname_part(slash + 1, hlen, out->hostname, err, errlen);
  }
  if (len > 9 && !memcmp(p, "firewall/", 9)) {
    out->kind = CLUSTER_FIREWALL;
    return parse_firewall_part(p + 9, len - 9, out, err, errlen);
  }
  return fail(err, errlen,
              "key matches no pattern (listeners/ADDR, routes/ADDR/HOSTNAME, "
              "firewall/TYPE/VALUE)");
}

int cluster_key_format(const char *prefix, const cluster_key_t *key, char *buf, size_t buflen)
{
  int n;

  switch (key->kind) {
  case CLUSTER_LISTENER:
    n = snprintf(buf, buflen, "%slisteners/%s", prefix, key->listener);
    break;
  case CLUSTER_ROUTE:
    n = snprintf(buf, buflen, "%sroutes/%s/%s", prefix, key->listener, key->hostname);
    break;
  case CLUSTER_FIREWALL:
    n = snprintf(buf, buflen, "%sfirewall/%s/%s", prefix, mcp_firewall_type_name(key->fw_type),
                 key->fw_value);
    break;
  default:
    return MCP_EINVAL;
  }
  if (n < 0 || (size_t)n >= buflen)
    return MCP_ERANGE;
  return n;
}

/* ---- values ------------------------------------------------------------------------------ */

/* Loads len bytes as one JSON object; duplicate fields are an error, not "last one wins". */
static json_t *load_object(const char *text, size_t len, const char *what, char *err, size_t errlen)
{
  json_error_t jerr;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);

  if (!root) {
    fail(err, errlen, "%s value is not JSON: %s (at byte %d)", what, jerr.text, jerr.position);
    return NULL;
  }
  if (!json_is_object(root)) {
    fail(err, errlen, "%s value is not a JSON object", what);
    json_decref(root);
    return NULL;
  }
  return root;
}

/* An optional non-negative integer field; absent or null keeps *out. */
static int get_count(json_t *obj, const char *name, int64_t *out, char *err, size_t errlen)
{
  json_t *v = json_object_get(obj, name);

  if (!v || json_is_null(v))
    return 0;
  if (!json_is_integer(v))
    return fail(err, errlen, "\"%s\" must be an integer", name);
  json_int_t n = json_integer_value(v);
  if (n < 0 || n > INT64_MAX)
    return fail(err, errlen, "\"%s\" must not be negative", name);
  *out = (int64_t)n;
  return 0;
}

/* An optional string field; absent or null gives "". */
static int get_string(json_t *obj, const char *name, const char **out, char *err, size_t errlen)
{
  json_t *v = json_object_get(obj, name);

  *out = "";
  if (!v || json_is_null(v))
    return 0;
  if (!json_is_string(v))
    return fail(err, errlen, "\"%s\" must be a string", name);
  *out = json_string_value(v);
  return 0;
}

static int parse_proxy_from(json_t *obj, cluster_listener_t *l, char *err, size_t errlen)
{
  json_t *arr = json_object_get(obj, "proxy_from");

  if (!arr || json_is_null(arr))
    return 0;
  if (!json_is_array(arr))
    return fail(err, errlen, "\"proxy_from\" must be an array of CIDRs");
  size_t n = json_array_size(arr);
  if (n == 0)
    return 0;
  l->proxy_from = calloc(n, sizeof(*l->proxy_from));
  if (!l->proxy_from)
    return MCP_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(arr, i);
    if (!json_is_string(v))
      return fail(err, errlen, "\"proxy_from\" entry %zu is not a string", i);
    const char *s = json_string_value(v);
    /* A bare address means that one host: the same rule as its /32 or /128. */
    int rc = strchr(s, '/') ? mcp_firewall_normalize(MCP_FIREWALL_CIDR, s, l->proxy_from[i])
                            : mcp_firewall_normalize(MCP_FIREWALL_IP, s, l->proxy_from[i]);
    if (rc != 0)
      return fail(err, errlen, "\"proxy_from\" entry \"%s\" is not a CIDR", s);
    if (!strchr(s, '/')) {
      size_t used = strlen(l->proxy_from[i]);
      snprintf(l->proxy_from[i] + used, MCP_FIREWALL_VALUE_MAX - used, "/%d",
               strchr(l->proxy_from[i], ':') ? 128 : 32);
    }
    l->n_proxy_from++;
  }
  return 0;
}

static int parse_listener_fields(json_t *obj, cluster_listener_t *l, char *err, size_t errlen)
{
  const char *s;
  int rc;

  if ((rc = get_count(obj, "max_connections", &l->max_connections, err, errlen)) ||
      (rc = get_count(obj, "max_connections_per_client", &l->max_connections_per_client, err,
                      errlen)))
    return rc;

  json_t *pp = json_object_get(obj, "proxy_protocol");
  if (pp && !json_is_null(pp)) {
    if (!json_is_boolean(pp))
      return fail(err, errlen, "\"proxy_protocol\" must be true or false");
    l->proxy_protocol = json_is_true(pp);
  }
  if ((rc = parse_proxy_from(obj, l, err, errlen)))
    return rc;
  if (l->proxy_protocol && l->n_proxy_from == 0)
    return fail(err, errlen, "\"proxy_protocol\" is on but \"proxy_from\" is empty");

  if ((rc = get_string(obj, "fallback", &s, err, errlen)))
    return rc;
  if (*s) {
    mcp_backend_t b;
    if (mcp_backend_parse(s, &b) != 0)
      return fail(err, errlen, "\"fallback\" \"%s\" is not a backend (HOST:PORT)", s);
    snprintf(l->fallback, sizeof(l->fallback), "%s", b.text);
  }

  if ((rc = get_string(obj, "rate_limit", &s, err, errlen)))
    return rc;
  if (*s && cluster_rate_limit_parse(s, &l->rate_limit_count, &l->rate_limit_period_ms) != 0)
    return fail(err, errlen, "\"rate_limit\" \"%s\" is not 0 or N/PERIOD", s);
  return 0;
}

int cluster_listener_parse(const char *json, size_t len, cluster_listener_t *out, char *err,
                           size_t errlen)
{
  memset(out, 0, sizeof(*out));
  json_t *obj = load_object(json, len, "listener", err, errlen);
  if (!obj)
    return MCP_EINVAL;
  int rc = parse_listener_fields(obj, out, err, errlen);
  json_decref(obj);
  if (rc) {
    cluster_listener_release(out);
    if (rc == MCP_ENOMEM)
      fail(err, errlen, "out of memory");
  }
  return rc;
}

void cluster_listener_release(cluster_listener_t *l)
{
  free(l->proxy_from);
  l->proxy_from = NULL;
  l->n_proxy_from = 0;
}

int cluster_route_parse(const char *json, size_t len, cluster_route_t *out, char *err,
                        size_t errlen)
{
  const char *backend, *sp;
  mcp_backend_t b;
  int rc = MCP_EINVAL;

  memset(out, 0, sizeof(*out));
  json_t *obj = load_object(json, len, "route", err, errlen);
  if (!obj)
    return MCP_EINVAL;
  if (get_string(obj, "backend", &backend, err, errlen) ||
      get_string(obj, "send_proxy", &sp, err, errlen))
    goto out;
  if (!*backend) {
    fail(err, errlen, "route value has no \"backend\"");
    goto out;
  }
  if (mcp_backend_parse(backend, &b) != 0) {
    fail(err, errlen, "\"backend\" \"%s\" is not a backend (HOST:PORT)", backend);
    goto out;
  }
  snprintf(out->backend, sizeof(out->backend), "%s", b.text);
  if (!*sp || !strcmp(sp, "none"))
    out->send_proxy = CLUSTER_SEND_PROXY_NONE;
  else if (!strcmp(sp, "v1"))
    out->send_proxy = CLUSTER_SEND_PROXY_V1;
  else if (!strcmp(sp, "v2"))
    out->send_proxy = CLUSTER_SEND_PROXY_V2;
  else {
    fail(err, errlen, "\"send_proxy\" \"%s\" is not \"\", \"v1\" or \"v2\"", sp);
    goto out;
  }
  rc = 0;

out:
  json_decref(obj);
  return rc;
}

int cluster_firewall_parse(const char *json, size_t len, char *err, size_t errlen)
{
  json_t *obj = load_object(json, len, "firewall rule", err, errlen);
  if (!obj)
    return MCP_EINVAL;
  json_decref(obj);
  return 0;
}

/* ---- whole entries ---------------------------------------------------------------------- */

int cluster_entry_parse(const char *prefix, const char *key, size_t key_len, const char *value,
                        size_t value_len, int is_delete, cluster_entry_t *out, char *err,
                        size_t errlen)
{
  memset(out, 0, sizeof(*out));
  out->is_delete = is_delete;
  int rc = cluster_key_parse(prefix, key, key_len, &out->key, err, errlen);
  if (rc || is_delete)
    return rc;
  switch (out->key.kind) {
  case CLUSTER_LISTENER:
    return cluster_listener_parse(value, value_len, &out->listener, err, errlen);
  case CLUSTER_ROUTE:
    return cluster_route_parse(value, value_len, &out->route, err, errlen);
  case CLUSTER_FIREWALL:
    return cluster_firewall_parse(value, value_len, err, errlen);
  }
  return MCP_EINVAL;
}

void cluster_entry_release(cluster_entry_t *e)
{
  cluster_listener_release(&e->listener);
}

/* ---- writing ----------------------------------------------------------------------------- */

/* Shortest exact text for a period: "1h", "2m", "5s" or "250ms". */
static void format_period(int64_t ms, char *buf, size_t len)
{
  if (ms % 3600000 == 0)
    snprintf(buf, len, "%" PRId64 "h", ms / 3600000);
  else if (ms % 60000 == 0)
    snprintf(buf, len, "%" PRId64 "m", ms / 60000);
  else if (ms % 1000 == 0)
    snprintf(buf, len, "%" PRId64 "s", ms / 1000);
  else
    snprintf(buf, len, "%" PRId64 "ms", ms);
}

char *cluster_listener_to_json(const cluster_listener_t *l)
{
  char rate[64], period[32];
  char *text = NULL;

  if (l->rate_limit_count > 0) {
    format_period(l->rate_limit_period_ms, period, sizeof(period));
    snprintf(rate, sizeof(rate), "%" PRId64 "/%s", l->rate_limit_count, period);
  } else {
    snprintf(rate, sizeof(rate), "0");
  }
  json_t *from = json_array();
  for (size_t i = 0; from && i < l->n_proxy_from; i++)
    if (json_array_append_new(from, json_string(l->proxy_from[i])) != 0) {
      json_decref(from);
      return NULL;
    }
  json_t *obj = json_pack("{s:I, s:b, s:o, s:s, s:s, s:I}", "max_connections",
                          (json_int_t)l->max_connections, "proxy_protocol", l->proxy_protocol,
                          "proxy_from", from, "fallback", l->fallback, "rate_limit", rate,
                          "max_connections_per_client", (json_int_t)l->max_connections_per_client);
  if (obj) {
    text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
  }
  return text;
}

char *cluster_route_to_json(const cluster_route_t *r)
{
  static const char *const names[] = {"", "v1", "v2"};
  char *text = NULL;
  unsigned sp = (unsigned)r->send_proxy < 3 ? (unsigned)r->send_proxy : 0;

  json_t *obj = json_pack("{s:s, s:s}", "backend", r->backend, "send_proxy", names[sp]);
  if (obj) {
    text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
  }
  return text;
}

/* ---- rate limits ------------------------------------------------------------------------- */

/* Parses a decimal number of at most 12 digits into *out; returns the characters used. */
static size_t parse_digits(const char *s, int64_t *out)
{
  size_t i = 0;
  int64_t n = 0;

  while (s[i] >= '0' && s[i] <= '9' && i < 12)
    n = n * 10 + (s[i++] - '0');
  *out = n;
  return (s[i] >= '0' && s[i] <= '9') ? 0 : i;
}

int cluster_rate_limit_parse(const char *text, int64_t *count, int64_t *period_ms)
{
  int64_t n, p, unit;

  if (!strcmp(text, "0")) {
    *count = 0;
    *period_ms = 0;
    return 0;
  }
  size_t used = parse_digits(text, &n);
  if (used == 0 || n < 1 || text[used] != '/')
    return MCP_EINVAL;
  const char *per = text + used + 1;
  used = parse_digits(per, &p);
  if (used == 0)
    return MCP_EINVAL;
  const char *suffix = per + used;
  if (!*suffix || !strcmp(suffix, "s"))
    unit = 1000;
  else if (!strcmp(suffix, "ms"))
    unit = 1;
  else if (!strcmp(suffix, "m"))
    unit = 60000;
  else if (!strcmp(suffix, "h"))
    unit = 3600000;
  else
    return MCP_EINVAL;
  if (p < 1)
    return MCP_EINVAL;
  *count = n;
  *period_ms = p * unit;
  return 0;
}
