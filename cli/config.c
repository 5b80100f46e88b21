/*
 * config: loads the INI file (docs/man/mc-proxy.ini.5) with inih.
 *
 * inih is driven through ini_parse_stream() with a line reader of our own, because the stock
 * parser leaves several gaps that matter for a config an operator must be able to trust:
 * - This inih is built without INI_HANDLER_LINENO, so the handler is not told the line; the
 *   reader counts lines, and the handler runs before the next line is read.
 * - inih splits a line longer than its buffer into two lines; the reader refuses it instead.
 * - With multi-line values on, an indented line is taken as a continuation of the previous
 *   value; the reader strips indentation so that every line stands on its own.
 * - inih's section buffer is 50 bytes and stops at the first ']', which would cut
 *   `[listener "[2001:db8::1]:443"]` short, and a section without keys never reaches the
 *   handler; the reader parses section headers itself and the handler ignores inih's idea of
 *   the section.
 *
 * The first problem found stops the load: config_load() frees what it built and returns -1
 * with one "FILE:LINE: problem" message, so the program never starts half-configured.
 *
 * Longer than our usual 600 lines on purpose: it is one parser, and every part of it (reader,
 * sections, keys, whole-file checks) works on the same loader state and reports through the same
 * fail(); split up, that state would need an internal header shared by all the pieces.
 * Its tests are test/unit/test_config.c.
 */
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "config.h"
#include "log.h"
#include "mcproxy/client_limits.h"
#include "mcproxy/listener.h"
#include "mcproxy/hash.h"
#include "mcproxy/hostname.h"

/*
 * Limits that keep a hostile or mistaken file from exhausting memory. Larger tables belong in
 * the database (through the admin API), not in the seed file.
 */
#define CONFIG_MAX_LISTENERS 1024
#define CONFIG_MAX_ROUTES 100000 /* in the whole file, so also per listener */
#define CONFIG_MAX_RULES 1000000
#define CONFIG_MAX_WORKERS 1024
#define CONFIG_MAX_DURATION_MS (365ULL * 24 * 3600 * 1000)

/*
 * The line buffer we ask inih for, where the library lets us choose: a route with a 253-byte
 * hostname and an IPv6 backend needs about 320 bytes, more than inih's default of 200.
 */
#define CONFIG_LINE_BUF 1024

/*
 * Debian's libinih exposes its compile-time options as globals (ini_max_line among them);
 * upstream builds do not. A weak reference links against both, and is NULL on the latter.
 */
#pragma weak ini_max_line

/* Shown in messages instead of values longer than this. */
#define SHOW "%.80s"

typedef enum section_e {
  SEC_NONE = 0,
  SEC_DATABASE,
  SEC_PROXY,
  SEC_GRPC,
  SEC_FIREWALL,
  SEC_LISTENER,
  SEC_CLUSTER,
  SEC_METRICS,
  SEC_COUNT
} section_t;

static const char *const section_names[SEC_COUNT] = {
    [SEC_DATABASE] = "database",
    [SEC_PROXY] = "proxy",
    [SEC_GRPC] = "grpc",
    [SEC_FIREWALL] = "firewall",
    [SEC_CLUSTER] = "cluster",
};

typedef enum kind_e {
  KIND_PATH,
  KIND_DURATION,
  KIND_WORKERS,
  KIND_RELAY,
  KIND_LOG_LEVEL,
  KIND_GRPC_ADDR,
  KIND_MODE,
  KIND_CLIENT_AUTH,
  KIND_ETCD_ENDPOINTS,
  KIND_ETCD_PREFIX
} kind_t;

/* The single-valued keys, each of which may appear once in the file. */
typedef enum key_id_e {
  K_DB_PATH,
  K_CONNECT_TIMEOUT,
  K_IDLE_TIMEOUT,
  K_HANDSHAKE_TIMEOUT,
  K_SHUTDOWN_TIMEOUT,
  K_WORKERS,
  K_RELAY,
  K_LOG_LEVEL,
  K_GRPC_ADDR,
  K_SOCKET_MODE,
  K_TLS_CERT,
  K_TLS_KEY,
  K_CLIENT_CA,
  K_CLIENT_AUTH,
  K_CLIENT_CERT,
  K_CLIENT_KEY,
  K_SERVER_CA,
  K_GEOIP_DB,
  K_ETCD,
  K_ETCD_PREFIX,
  K_ETCD_CA,
  K_ETCD_CERT,
  K_ETCD_KEY,
  K_COUNT
} key_id_t;

static const struct key_def_s {
  section_t sec;
  const char *name;
  kind_t kind;
  size_t off; /* where the value goes in config_t */
  size_t size;
} key_defs[K_COUNT] = {
#define FIELD(f) offsetof(config_t, f), sizeof(((config_t *)0)->f)
    [K_DB_PATH] = {SEC_DATABASE, "path", KIND_PATH, FIELD(db_path)},
    [K_CONNECT_TIMEOUT] = {SEC_PROXY, "connect_timeout", KIND_DURATION, FIELD(connect_timeout_ms)},
    [K_IDLE_TIMEOUT] = {SEC_PROXY, "idle_timeout", KIND_DURATION, FIELD(idle_timeout_ms)},
    [K_HANDSHAKE_TIMEOUT] = {SEC_PROXY, "handshake_timeout", KIND_DURATION,
                             FIELD(handshake_timeout_ms)},
    [K_SHUTDOWN_TIMEOUT] = {SEC_PROXY, "shutdown_timeout", KIND_DURATION,
                            FIELD(shutdown_timeout_ms)},
    [K_WORKERS] = {SEC_PROXY, "workers", KIND_WORKERS, FIELD(workers)},
    [K_RELAY] = {SEC_PROXY, "relay", KIND_RELAY, FIELD(copy_relay)},
    [K_LOG_LEVEL] = {SEC_PROXY, "log_level", KIND_LOG_LEVEL, FIELD(log_level)},
    [K_GRPC_ADDR] = {SEC_GRPC, "addr", KIND_GRPC_ADDR, FIELD(grpc_addr)},
    [K_SOCKET_MODE] = {SEC_GRPC, "socket_mode", KIND_MODE, FIELD(socket_mode)},
    [K_TLS_CERT] = {SEC_GRPC, "tls_cert", KIND_PATH, FIELD(tls_cert)},
    [K_TLS_KEY] = {SEC_GRPC, "tls_key", KIND_PATH, FIELD(tls_key)},
    [K_CLIENT_CA] = {SEC_GRPC, "client_ca", KIND_PATH, FIELD(client_ca)},
    [K_CLIENT_AUTH] = {SEC_GRPC, "client_auth", KIND_CLIENT_AUTH, FIELD(client_auth_none)},
    [K_CLIENT_CERT] = {SEC_GRPC, "client_cert", KIND_PATH, FIELD(client_cert)},
    [K_CLIENT_KEY] = {SEC_GRPC, "client_key", KIND_PATH, FIELD(client_key)},
    [K_SERVER_CA] = {SEC_GRPC, "server_ca", KIND_PATH, FIELD(server_ca)},
    [K_GEOIP_DB] = {SEC_FIREWALL, "geoip_db", KIND_PATH, FIELD(geoip_db)},
    [K_ETCD] = {SEC_CLUSTER, "etcd", KIND_ETCD_ENDPOINTS, FIELD(etcd_endpoints)},
    [K_ETCD_PREFIX] = {SEC_CLUSTER, "prefix", KIND_ETCD_PREFIX, FIELD(cluster_prefix)},
    [K_ETCD_CA] = {SEC_CLUSTER, "etcd_ca", KIND_PATH, FIELD(etcd_ca)},
    [K_ETCD_CERT] = {SEC_CLUSTER, "etcd_cert", KIND_PATH, FIELD(etcd_cert)},
    [K_ETCD_KEY] = {SEC_CLUSTER, "etcd_key", KIND_PATH, FIELD(etcd_key)},
#undef FIELD
};

/*
 * A set of strings, each remembered with the line it was first seen on, so that duplicates
 * (rules, and hostnames within a listener) are found in O(1) even in a file of 100,000 rules.
 * Open addressing with linear probing; the capacity is a power of two, at most half full.
 */
typedef struct seen_slot_s {
  char *key;
  int line;
} seen_slot_t;

typedef struct seen_set_s {
  seen_slot_t *slots;
  size_t cap;
  size_t count;
} seen_set_t;

typedef struct loader_s {
  config_t *cfg;
  FILE *f;
  char dir[PATH_MAX]; /* the config file's directory, absolute */
  char *err;
  size_t errlen;
  int line;   /* the line inih is working on */
  int failed; /* set with the first error; the reader then ends the parse */
  int err_line;
  int metrics_addr_line; /* [metrics] addr seen on this line, or 0 */

  section_t sec;
  char sec_label[CONFIG_ADDR_MAX + 16]; /* "[proxy]" or "[listener \"ADDR\"]" for messages */
  size_t cur;                           /* index of the current listener (SEC_LISTENER) */
  int cur_max_line;                     /* where its max_connections was set, or 0 */
  int cur_line[4];                      /* where its listener_setting() keys were set, or 0 */
  int sec_line[SEC_COUNT];              /* where each global section started, or 0 */
  int key_line[K_COUNT];                /* where each single-valued key was set, or 0 */
  int first_country_line;
  size_t nroutes; /* in the whole file */
  seen_set_t seen;
} loader_t;

/* ---- small helpers ---- */

static uint64_t hash_str(const char *s)
{
  return mcp_hash_fnv1a(MCP_HASH_FNV1A_INIT, s, strlen(s));
}

static int seen_grow(seen_set_t *s)
{
  size_t cap = s->cap ? s->cap * 2 : 64;
  seen_slot_t *slots = calloc(cap, sizeof(*slots));
  if (!slots)
    return -1;
  for (size_t i = 0; i < s->cap; i++) {
    if (!s->slots[i].key)
      continue;
    size_t j = hash_str(s->slots[i].key) & (cap - 1);
    while (slots[j].key)
      j = (j + 1) & (cap - 1);
    slots[j] = s->slots[i];
  }
  free(s->slots);
  s->slots = slots;
  s->cap = cap;
  return 0;
}

/* Returns the line of an earlier equal key, 0 after remembering key at line, -1 on ENOMEM. */
static int seen_check(seen_set_t *s, const char *key, int line)
{
  if ((s->count + 1) * 2 > s->cap && seen_grow(s) != 0)
    return -1;
  size_t mask = s->cap - 1;
  for (size_t i = hash_str(key) & mask;; i = (i + 1) & mask) {
    if (!s->slots[i].key) {
      char *copy = strdup(key);
      if (!copy)
        return -1;
      s->slots[i].key = copy;
      s->slots[i].line = line;
      s->count++;
      return 0;
    }
    if (!strcmp(s->slots[i].key, key))
      return s->slots[i].line;
  }
}

static void seen_free(seen_set_t *s)
{
  for (size_t i = 0; i < s->cap; i++)
    free(s->slots[i].key);
  free(s->slots);
  memset(s, 0, sizeof(*s));
}

/*
 * Makes room for element n of an array that holds n elements: capacities go 8, 16, 32, ...
 * so the capacity is implied by the count and needs no field of its own.
 */
static int grow_array(void **arr, size_t n, size_t elsize)
{
  size_t cap;
  if (n == 0)
    cap = 8;
  else if (n >= 8 && (n & (n - 1)) == 0)
    cap = n * 2;
  else
    return 0;
  void *p = realloc(*arr, cap * elsize);
  if (!p)
    return -1;
  *arr = p;
  return 0;
}

/* Records the first error as "FILE:LINE: message" (or "FILE: message" for line 0). */
__attribute__((format(printf, 3, 4))) static int fail(loader_t *ld, int line, const char *fmt, ...)
{
  if (ld->failed)
    return 0;
  ld->failed = 1;
  ld->err_line = line;
  int n = line > 0 ? snprintf(ld->err, ld->errlen, "%s:%d: ", ld->cfg->path, line)
                   : snprintf(ld->err, ld->errlen, "%s: ", ld->cfg->path);
  if (n >= 0 && (size_t)n < ld->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->errlen - n, fmt, ap);
    va_end(ap);
  }
  return 0; /* what an inih handler returns for an error */
}

static int is_blank(char c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Digits only, no sign, at most max. Returns 0 and sets *out, or -1. */
static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
  uint64_t n = 0;
  if (!*s)
    return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    unsigned d = (unsigned)(*s - '0');
    if (n > (max - d) / 10)
      return -1;
    n = n * 10 + d;
  }
  *out = n;
  return 0;
}

int config_parse_duration(const char *text, uint64_t *ms)
{
  uint64_t n = 0;
  const char *p = text;
  if (!p || *p < '0' || *p > '9')
    return -1;
  for (; *p >= '0' && *p <= '9'; p++) {
    unsigned d = (unsigned)(*p - '0');
    if (n > (UINT64_MAX - d) / 10)
      return -1;
    n = n * 10 + d;
  }
  uint64_t unit;
  if (!strcmp(p, "ms"))
    unit = 1;
  else if (!*p || !strcmp(p, "s"))
    unit = 1000;
  else if (!strcmp(p, "m"))
    unit = 60 * 1000;
  else if (!strcmp(p, "h"))
    unit = 3600 * 1000;
  else
    return -1;
  if (n > UINT64_MAX / unit)
    return -1;
  *ms = n * unit;
  return 0;
}

/* Resolves a path from the file against the config file's directory. */
static int resolve_path(loader_t *ld, const char *what, const char *value, char *out, size_t size)
{
  int n = value[0] == '/' ? snprintf(out, size, "%s", value)
                          : snprintf(out, size, "%s/%s", ld->dir, value);
  if (n < 0 || (size_t)n >= size)
    return fail(ld, ld->line, "%s %s: path too long", ld->sec_label, what);
  return 1;
}

/* ---- sections (parsed by the reader) ---- */

static int start_listener(loader_t *ld, const char *addr_text)
{
  config_t *cfg = ld->cfg;
  struct sockaddr_storage ss;
  char canon[CONFIG_ADDR_MAX];
  if (strlen(addr_text) >= CONFIG_ADDR_MAX || mcp_listener_addr_parse(addr_text, &ss, canon) != 0)
    return fail(ld, ld->line,
                "[listener \"" SHOW "\"]: bad listen address (expected IPv4:port or [IPv6]:port)",
                addr_text);
  /* sin_port and sin6_port share their offset. Port 0 would give every worker its own port. */
  if (((struct sockaddr_in *)&ss)->sin_port == 0)
    return fail(ld, ld->line, "[listener \"" SHOW "\"]: port 0 is not a listen port", addr_text);
  for (size_t i = 0; i < cfg->nlisteners; i++)
    if (!strcmp(cfg->listeners[i].addr, canon))
      return fail(ld, ld->line, "duplicate listener %s, first on line %d", canon,
                  cfg->listeners[i].line);
  if (cfg->nlisteners >= CONFIG_MAX_LISTENERS)
    return fail(ld, ld->line, "too many listeners (at most %d)", CONFIG_MAX_LISTENERS);
  if (grow_array((void **)&cfg->listeners, cfg->nlisteners, sizeof(*cfg->listeners)) != 0)
    return fail(ld, ld->line, "out of memory");

  config_listener_t *l = &cfg->listeners[cfg->nlisteners];
  memset(l, 0, sizeof(*l));
  memcpy(l->addr, canon, sizeof(l->addr));
  l->line = ld->line;
  ld->cur = cfg->nlisteners++;
  ld->cur_max_line = 0;
  memset(ld->cur_line, 0, sizeof(ld->cur_line));
  ld->sec = SEC_LISTENER;
  snprintf(ld->sec_label, sizeof(ld->sec_label), "[listener \"%s\"]", canon);
  return 1;
}

/* ---- [metrics] (its own section code: addr only) ---- */

static int start_metrics(loader_t *ld)
{
  if (ld->sec_line[SEC_METRICS])
    return fail(ld, ld->line, "duplicate section [metrics], first on line %d",
                ld->sec_line[SEC_METRICS]);
  ld->sec_line[SEC_METRICS] = ld->line;
  ld->sec = SEC_METRICS;
  ld->cfg->has_metrics = 1;
  snprintf(ld->sec_label, sizeof(ld->sec_label), "[metrics]");
  return 1;
}

static int metrics_key(loader_t *ld, const char *name, const char *value)
{
  config_t *cfg = ld->cfg;
  if (strcmp(name, "addr") != 0)
    return fail(ld, ld->line, "[metrics]: unknown key \"" SHOW "\"", name);
  if (ld->metrics_addr_line)
    return fail(ld, ld->line, "[metrics] addr: duplicate key, first on line %d",
                ld->metrics_addr_line);
  struct sockaddr_storage ss;
  char canon[CONFIG_ADDR_MAX];
  if (strlen(value) >= CONFIG_ADDR_MAX || mcp_listener_addr_parse(value, &ss, canon) != 0)
    return fail(ld, ld->line,
                "[metrics] addr: bad address \"" SHOW "\" (expected IPv4:port or [IPv6]:port)",
                value);
  if (((struct sockaddr_in *)&ss)->sin_port == 0)
    return fail(ld, ld->line, "[metrics] addr: port 0 is not a listen port");
  memcpy(cfg->metrics_addr, canon, sizeof(cfg->metrics_addr));
  ld->metrics_addr_line = ld->line;
  return 1;
}

static int check_metrics(loader_t *ld)
{
  if (ld->cfg->has_metrics && !ld->cfg->metrics_addr[0])
    return fail(ld, ld->sec_line[SEC_METRICS], "[metrics] addr is required in a [metrics] section");
  return 1;
}

/*
 * Parses a section header (line starts with '['). inih also sees the line, but its notion of
 * the section is never used. Returns 1, or 0 after recording an error.
 */
static int parse_section(loader_t *ld, char *line)
{
  char buf[CONFIG_LINE_BUF];
  size_t len = strlen(line);
  if (len >= sizeof(buf))
    return fail(ld, ld->line, "line too long");
  memcpy(buf, line, len + 1);

  /* Drop an inline comment (';' after whitespace, as inih does) and trailing whitespace. */
  for (size_t i = 1; i < len; i++) {
    if (buf[i] == ';' && is_blank(buf[i - 1])) {
      buf[i] = '\0';
      len = i;
      break;
    }
  }
  while (len > 0 && is_blank(buf[len - 1]))
    buf[--len] = '\0';
  if (len < 2 || buf[len - 1] != ']')
    return fail(ld, ld->line, "section header must end with ']'");
  buf[--len] = '\0';

  char *name = buf + 1;
  while (is_blank(*name))
    name++;
  while (len > 1 && is_blank(buf[len - 1]))
    buf[--len] = '\0';

  if (!strncmp(name, "listener", 8) && is_blank(name[8])) {
    char *q = name + 8;
    while (is_blank(*q))
      q++;
    size_t qlen = strlen(q);
    if (qlen < 2 || q[0] != '"' || q[qlen - 1] != '"')
      return fail(ld, ld->line, "[" SHOW "]: expected [listener \"ADDR\"]", name);
    q[qlen - 1] = '\0';
    return start_listener(ld, q + 1);
  }
  if (!strcmp(name, "metrics"))
    return start_metrics(ld);
  for (int s = SEC_DATABASE; s <= SEC_CLUSTER; s++) {
    if (!section_names[s] || strcmp(name, section_names[s]) != 0)
      continue;
    if (ld->sec_line[s])
      return fail(ld, ld->line, "duplicate section [%s], first on line %d", name, ld->sec_line[s]);
    ld->sec_line[s] = ld->line;
    ld->sec = (section_t)s;
    snprintf(ld->sec_label, sizeof(ld->sec_label), "[%s]", name);
    if (s == SEC_GRPC)
      ld->cfg->has_grpc = 1;
    if (s == SEC_CLUSTER)
      ld->cfg->has_cluster = 1;
    return 1;
  }
  return fail(ld, ld->line, "unknown section [" SHOW "]", name);
}

/* ---- the reader ---- */

/*
 * Reads one line into buf (num bytes) for inih. Ends the parse (returns NULL) at the end of
 * the file or at the first error, which the caller then reports.
 */
static char *read_line(char *buf, int num, void *stream)
{
  loader_t *ld = stream;
  if (ld->failed || num < 4)
    return NULL;

  if (ld->line == INT_MAX) {
    fail(ld, 0, "too many lines");
    return NULL;
  }
  size_t n = 0;
  int c = EOF;
  while ((c = getc(ld->f)) != EOF) {
    if (c == '\0') {
      fail(ld, ld->line + 1, "NUL byte in line");
      return NULL;
    }
    if (n + 1 >= (size_t)num) {
      /* inih would silently continue the rest of the line as a new one. */
      fail(ld, ld->line + 1, "line too long (at most %d bytes)", num - 2);
      return NULL;
    }
    buf[n++] = (char)c;
    if (c == '\n')
      break;
  }
  if (c == EOF && ferror(ld->f)) {
    fail(ld, ld->line + 1, "cannot read: %s", strerror(errno));
    return NULL;
  }
  if (n == 0)
    return NULL;
  buf[n] = '\0';
  ld->line++;

  /* A UTF-8 byte order mark, then indentation: neither means anything here. */
  char *start = buf;
  if (ld->line == 1 && !strncmp(start, "\xEF\xBB\xBF", 3))
    start += 3;
  while (*start == ' ' || *start == '\t')
    start++;
  if (start != buf)
    memmove(buf, start, strlen(start) + 1);

  if (buf[0] == '[' && !parse_section(ld, buf))
    return NULL;
  return buf;
}

/* ---- [cluster] ---- */

/*
 * etcd = URL[, URL...]: each "http://HOST:PORT" or "https://HOST:PORT" (no path), separated by
 * commas and/or blanks, at most CONFIG_ETCD_MAX_ENDPOINTS of them.
 */
static int set_etcd_endpoints(loader_t *ld, const char *value)
{
  config_t *cfg = ld->cfg;
  const char *p = value;
  cfg->netcd = 0;
  while (*p) {
    while (*p == ',' || is_blank(*p))
      p++;
    if (!*p)
      break;
    size_t len = strcspn(p, ", \t");
    if (cfg->netcd == CONFIG_ETCD_MAX_ENDPOINTS)
      return fail(ld, ld->line, "[cluster] etcd: at most %d endpoints", CONFIG_ETCD_MAX_ENDPOINTS);
    if (len >= sizeof(cfg->etcd_endpoints[0]))
      return fail(ld, ld->line, "[cluster] etcd: endpoint \"%.40s...\" is too long", p);
    char *url = cfg->etcd_endpoints[cfg->netcd];
    memcpy(url, p, len);
    url[len] = '\0';
    size_t scheme = !strncmp(url, "http://", 7) ? 7 : !strncmp(url, "https://", 8) ? 8 : 0;
    mcp_backend_t b;
    if (!scheme || strchr(url + scheme, '/') || mcp_backend_parse(url + scheme, &b) != 0)
      return fail(ld, ld->line,
                  "[cluster] etcd: bad endpoint \"" SHOW "\" (expected http://HOST:PORT or "
                  "https://HOST:PORT)",
                  url);
    cfg->netcd++;
    p += len;
  }
  if (cfg->netcd == 0)
    return fail(ld, ld->line, "[cluster] etcd: no endpoint given");
  return 1;
}

/* prefix = the key prefix of this fleet's state: printable, no blanks, ends with '/'. */
static int set_etcd_prefix(loader_t *ld, const char *value)
{
  size_t len = strlen(value);
  int ok = len >= 1 && len < sizeof(ld->cfg->cluster_prefix) && value[len - 1] == '/';
  for (size_t i = 0; ok && i < len; i++)
    ok = value[i] > ' ' && value[i] < 0x7f;
  if (!ok)
    return fail(ld, ld->line,
                "[cluster] prefix: \"" SHOW "\" is not a key prefix (printable ASCII without "
                "blanks, ending with '/', at most %zu bytes)",
                value, sizeof(ld->cfg->cluster_prefix) - 1);
  memcpy(ld->cfg->cluster_prefix, value, len + 1);
  return 1;
}

static int check_cluster(loader_t *ld)
{
  config_t *cfg = ld->cfg;
  if (!cfg->has_cluster)
    return 1;
  if (cfg->netcd == 0)
    return fail(ld, ld->sec_line[SEC_CLUSTER], "[cluster] etcd is required in a [cluster] section");
  if (!cfg->etcd_cert[0] != !cfg->etcd_key[0])
    return fail(ld, ld->sec_line[SEC_CLUSTER],
                "[cluster] etcd_cert and etcd_key go together (both or neither)");
  if (!cfg->cluster_prefix[0])
    snprintf(cfg->cluster_prefix, sizeof(cfg->cluster_prefix), "%s", CONFIG_ETCD_PREFIX);
  return 1;
}

/* ---- keys ---- */

static int set_single(loader_t *ld, key_id_t id, const char *value)
{
  const struct key_def_s *def = &key_defs[id];
  config_t *cfg = ld->cfg;
  void *field = (char *)cfg + def->off;
  uint64_t n;

  switch (def->kind) {
  case KIND_PATH:
    return resolve_path(ld, def->name, value, field, def->size);

  case KIND_DURATION:
    if (config_parse_duration(value, &n) != 0)
      return fail(ld, ld->line,
                  "%s %s: bad duration \"" SHOW "\" (use e.g. 250ms, 5s, 2m, 1h; a bare number "
                  "is seconds)",
                  ld->sec_label, def->name, value);
    if (n == 0)
      return fail(ld, ld->line, "%s %s: must be more than zero", ld->sec_label, def->name);
    if (n > CONFIG_MAX_DURATION_MS)
      return fail(ld, ld->line, "%s %s: \"" SHOW "\" is too long (at most 8760h)", ld->sec_label,
                  def->name, value);
    *(uint64_t *)field = n;
    return 1;

  case KIND_WORKERS:
    if (parse_uint(value, CONFIG_MAX_WORKERS, &n) != 0 || n == 0)
      return fail(ld, ld->line, "%s %s: expected a whole number from 1 to %d, got \"" SHOW "\"",
                  ld->sec_label, def->name, CONFIG_MAX_WORKERS, value);
    *(int *)field = (int)n;
    return 1;

  case KIND_RELAY:
    if (strcmp(value, "splice") && strcmp(value, "copy"))
      return fail(ld, ld->line, "%s %s: expected splice or copy, got \"" SHOW "\"", ld->sec_label,
                  def->name, value);
    *(int *)field = !strcmp(value, "copy");
    return 1;

  case KIND_LOG_LEVEL: {
    int level = log_level_parse(value);
    if (level < 0)
      return fail(ld, ld->line, "%s %s: expected debug, info, warn or error, got \"" SHOW "\"",
                  ld->sec_label, def->name, value);
    *(int *)field = level;
    return 1;
  }

  case KIND_CLIENT_AUTH:
    /* Only the one explicit opt-out exists: client certificates are asked for via client_ca. */
    if (strcmp(value, "none"))
      return fail(ld, ld->line, "%s %s: expected none, got \"" SHOW "\"", ld->sec_label,
                  def->name, value);
    *(int *)field = 1;
    return 1;

  case KIND_MODE: {
    size_t len = strlen(value);
    unsigned mode = 0;
    int ok = len >= 1 && len <= 4;
    for (size_t i = 0; ok && i < len; i++) {
      if (value[i] < '0' || value[i] > '7')
        ok = 0;
      else
        mode = mode * 8 + (unsigned)(value[i] - '0');
    }
    if (!ok || mode > 0777)
      return fail(ld, ld->line, "%s %s: expected octal permissions like 0600, got \"" SHOW "\"",
                  ld->sec_label, def->name, value);
    *(unsigned *)field = mode;
    return 1;
  }

  case KIND_GRPC_ADDR:
    if (!strncmp(value, "unix:", 5)) {
      char path[PATH_MAX];
      if (!value[5])
        return fail(ld, ld->line, "%s addr: \"unix:\" needs a socket path", ld->sec_label);
      if (!resolve_path(ld, def->name, value + 5, path, sizeof(path)))
        return 0;
      size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
      if (strlen(path) > max)
        return fail(ld, ld->line, "%s addr: socket path %s is too long (at most %zu bytes)",
                    ld->sec_label, path, max);
      snprintf(cfg->grpc_addr, sizeof(cfg->grpc_addr), "unix:%s", path);
      cfg->grpc_is_unix = 1;
      return 1;
    } else {
      mcp_backend_t b;
      if (strlen(value) >= MCP_BACKEND_MAX + 8 || mcp_backend_parse(value, &b) != 0)
        return fail(ld, ld->line,
                    "%s addr: bad address \"" SHOW "\" (expected unix:/path or host:port)",
                    ld->sec_label, value);
      snprintf(cfg->grpc_addr, sizeof(cfg->grpc_addr), "%s", b.text);
      cfg->grpc_is_unix = 0;
      return 1;
    }

  case KIND_ETCD_ENDPOINTS:
    return set_etcd_endpoints(ld, value);

  case KIND_ETCD_PREFIX:
    return set_etcd_prefix(ld, value);
  }
  return fail(ld, ld->line, "internal error: unhandled key kind");
}

static int add_rule(loader_t *ld, mcp_firewall_type_t type, const char *name, const char *value)
{
  config_t *cfg = ld->cfg;
  char canon[MCP_FIREWALL_VALUE_MAX];
  static const char *const expected[] = {
      [MCP_FIREWALL_IP] = "an IPv4 or IPv6 address",
      [MCP_FIREWALL_CIDR] = "a CIDR range like 198.51.100.0/24 or 2001:db8::/32",
      [MCP_FIREWALL_COUNTRY] = "a two-letter ISO 3166-1 country code",
  };
  if (mcp_firewall_normalize(type, value, canon) != 0)
    return fail(ld, ld->line, "[firewall] %s: \"" SHOW "\" is not %s", name, value, expected[type]);

  char key[MCP_FIREWALL_VALUE_MAX + 8];
  snprintf(key, sizeof(key), "F%d %s", (int)type, canon);
  int first = seen_check(&ld->seen, key, ld->line);
  if (first < 0)
    return fail(ld, ld->line, "out of memory");
  if (first > 0)
    return fail(ld, ld->line, "[firewall] %s: duplicate rule %s, first on line %d", name, canon,
                first);
  if (cfg->nrules >= CONFIG_MAX_RULES)
    return fail(ld, ld->line, "too many firewall rules (at most %d in the config)",
                CONFIG_MAX_RULES);
  if (grow_array((void **)&cfg->rules, cfg->nrules, sizeof(*cfg->rules)) != 0)
    return fail(ld, ld->line, "out of memory");
  config_rule_t *r = &cfg->rules[cfg->nrules++];
  memset(r, 0, sizeof(*r));
  r->type = type;
  memcpy(r->value, canon, sizeof(r->value));
  r->line = ld->line;
  if (type == MCP_FIREWALL_COUNTRY && !ld->first_country_line)
    ld->first_country_line = ld->line;
  return 1;
}

/* The next whitespace-separated field of *p: its start and length (0 at the end). */
static const char *next_field(const char **p, size_t *len)
{
  while (is_blank(**p))
    (*p)++;
  const char *start = *p;
  while (**p && !is_blank(**p))
    (*p)++;
  *len = (size_t)(*p - start);
  return start;
}

static int add_route(loader_t *ld, const char *value)
{
  config_t *cfg = ld->cfg;
  config_listener_t *l = &cfg->listeners[ld->cur];

  /* HOSTNAME BACKEND [send-proxy-v1|send-proxy-v2], separated by whitespace. */
  const char *p = value;
  size_t host_len, backend_len, opt_len, extra_len;
  const char *host = next_field(&p, &host_len);
  const char *backend = next_field(&p, &backend_len);
  const char *opt = next_field(&p, &opt_len);
  next_field(&p, &extra_len);
  if (host_len == 0 || backend_len == 0 || extra_len != 0)
    return fail(ld, ld->line,
                "%s route: expected \"HOSTNAME BACKEND\" and at most send-proxy-v1 or "
                "send-proxy-v2, got \"" SHOW "\"",
                ld->sec_label, value);
  int send_proxy = 0;
  if (opt_len == 13 && !strncmp(opt, "send-proxy-v1", 13))
    send_proxy = 1;
  else if (opt_len == 13 && !strncmp(opt, "send-proxy-v2", 13))
    send_proxy = 2;
  else if (opt_len != 0)
    return fail(ld, ld->line,
                "%s route: expected \"HOSTNAME BACKEND\" and at most send-proxy-v1 or "
                "send-proxy-v2, got \"" SHOW "\"",
                ld->sec_label, value);

  char hostname[MCP_HOSTNAME_MAX + 1];
  if (mcp_hostname_normalize_pattern(host, host_len, hostname) < 0)
    return fail(ld, ld->line,
                "%s route: bad hostname \"%.*s\" (a DNS name, or \"*.\" and a DNS name; the "
                "\"*\" only as the whole first label)",
                ld->sec_label, (int)(host_len > 80 ? 80 : host_len), host);

  char btext[MCP_BACKEND_MAX + 8];
  mcp_backend_t b;
  if (backend_len >= sizeof(btext))
    backend_len = sizeof(btext) - 1; /* too long to be valid; the parse below says so */
  memcpy(btext, backend, backend_len);
  btext[backend_len] = '\0';
  if (mcp_backend_parse(btext, &b) != 0)
    return fail(ld, ld->line,
                "%s route: bad backend \"" SHOW "\" (expected IPv4:port, [IPv6]:port or "
                "hostname:port)",
                ld->sec_label, btext);

  char key[MCP_HOSTNAME_MAX + 32];
  snprintf(key, sizeof(key), "R%zu %s", ld->cur, hostname);
  int first = seen_check(&ld->seen, key, ld->line);
  if (first < 0)
    return fail(ld, ld->line, "out of memory");
  if (first > 0)
    return fail(ld, ld->line, "%s route: duplicate hostname %s, first on line %d", ld->sec_label,
                hostname, first);
  if (ld->nroutes >= CONFIG_MAX_ROUTES)
    return fail(ld, ld->line, "too many routes (at most %d in the config)", CONFIG_MAX_ROUTES);
  if (grow_array((void **)&l->routes, l->nroutes, sizeof(*l->routes)) != 0)
    return fail(ld, ld->line, "out of memory");
  config_route_t *r = &l->routes[l->nroutes++];
  memset(r, 0, sizeof(*r));
  memcpy(r->hostname, hostname, sizeof(r->hostname));
  snprintf(r->backend, sizeof(r->backend), "%s", b.text);
  r->send_proxy = send_proxy;
  r->line = ld->line;
  ld->nroutes++;
  return 1;
}

int config_parse_rate(const char *text, uint32_t *count, uint32_t *period_ms, char *err,
                      size_t errlen)
{
  uint64_t n, ms;
  if (!strcmp(text, "0")) {
    *count = 0;
    *period_ms = 0;
    return 0;
  }
  const char *slash = strchr(text, '/');
  char num[24];
  if (!slash || (size_t)(slash - text) >= sizeof(num)) {
    snprintf(err, errlen, "expected N/PERIOD like 20/1s, or 0 for off");
    return -1;
  }
  memcpy(num, text, (size_t)(slash - text));
  num[slash - text] = '\0';
  if (parse_uint(num, UINT32_MAX, &n) != 0 || config_parse_duration(slash + 1, &ms) != 0) {
    snprintf(err, errlen, "expected N/PERIOD like 20/1s, or 0 for off");
    return -1;
  }
  if (n > 0 && ms == 0) {
    snprintf(err, errlen, "the period must be more than zero");
    return -1;
  }
  if (n > MCP_CLIENT_LIMITS_MAX_RATE || ms > MCP_CLIENT_LIMITS_MAX_PERIOD_MS) {
    snprintf(err, errlen, "at most %u connections per period of at most 24h",
             MCP_CLIENT_LIMITS_MAX_RATE);
    return -1;
  }
  *count = (uint32_t)n;
  *period_ms = n ? (uint32_t)ms : 0;
  return 0;
}

int config_check_settings(const listener_settings_t *s, char *err, size_t errlen)
{
  char canon[MCP_FIREWALL_VALUE_MAX];
  if (s->max_connections < 0 || s->max_per_client < 0) {
    snprintf(err, errlen, "limits must be >= 0");
    return -1;
  }
  if (s->max_per_client > UINT32_MAX) {
    snprintf(err, errlen, "max_connections_per_client is at most %u", UINT32_MAX);
    return -1;
  }
  mcp_client_limits_settings_t cl = {s->rate_count, s->rate_period_ms, 0};
  if (mcp_client_limits_check(&cl) != 0) {
    snprintf(err, errlen, "rate_limit: the period must be from 1ms to 24h, the count at most %u",
             MCP_CLIENT_LIMITS_MAX_RATE);
    return -1;
  }
  if (s->nproxy_from > CONFIG_PROXY_FROM_MAX) {
    snprintf(err, errlen, "proxy_from holds at most %d ranges", CONFIG_PROXY_FROM_MAX);
    return -1;
  }
  for (size_t i = 0; i < s->nproxy_from; i++)
    if (mcp_firewall_normalize(MCP_FIREWALL_CIDR, s->proxy_from[i], canon) != 0) {
      snprintf(err, errlen, "proxy_from: \"" SHOW "\" is not a CIDR range", s->proxy_from[i]);
      return -1;
    }
  if (s->proxy_protocol && s->nproxy_from == 0) {
    snprintf(err, errlen,
             "proxy_protocol = on needs proxy_from (the peers that may send a PROXY header)");
    return -1;
  }
  return 0;
}

/*
 * The single-valued listener keys besides max_connections, by index (0 proxy_protocol,
 * 1 fallback, 2 rate_limit, 3 max_connections_per_client); their lines are in cur_line[].
 */
static int listener_setting(loader_t *ld, int which, const char *name, const char *value)
{
  config_listener_t *l = &ld->cfg->listeners[ld->cur];
  listener_settings_t *s = &l->settings;
  char why[128];
  uint64_t n;
  if (ld->cur_line[which])
    return fail(ld, ld->line, "%s %s: duplicate key, first on line %d", ld->sec_label, name,
                ld->cur_line[which]);
  ld->cur_line[which] = ld->line;
  switch (which) {
  case 0:
    if (strcmp(value, "on") && strcmp(value, "off"))
      return fail(ld, ld->line, "%s proxy_protocol: expected on or off, got \"" SHOW "\"",
                  ld->sec_label, value);
    s->proxy_protocol = !strcmp(value, "on");
    l->proxy_protocol_line = ld->line;
    return 1;
  case 1: {
    mcp_backend_t b;
    if (strlen(value) >= MCP_BACKEND_MAX || mcp_backend_parse(value, &b) != 0)
      return fail(ld, ld->line,
                  "%s fallback: bad backend \"" SHOW "\" (expected IPv4:port, [IPv6]:port or "
                  "hostname:port)",
                  ld->sec_label, value);
    snprintf(s->fallback, sizeof(s->fallback), "%s", b.text);
    l->fallback_line = ld->line;
    return 1;
  }
  case 2:
    if (config_parse_rate(value, &s->rate_count, &s->rate_period_ms, why, sizeof(why)) != 0)
      return fail(ld, ld->line, "%s rate_limit: \"" SHOW "\": %s", ld->sec_label, value, why);
    return 1;
  default:
    if (parse_uint(value, UINT32_MAX, &n) != 0)
      return fail(ld, ld->line, "%s %s: expected a whole number >= 0, got \"" SHOW "\"",
                  ld->sec_label, name, value);
    s->max_per_client = (int64_t)n;
    return 1;
  }
}

static int add_proxy_from(loader_t *ld, const char *value)
{
  listener_settings_t *s = &ld->cfg->listeners[ld->cur].settings;
  char canon[MCP_FIREWALL_VALUE_MAX];
  if (mcp_firewall_normalize(MCP_FIREWALL_CIDR, value, canon) != 0)
    return fail(ld, ld->line,
                "%s proxy_from: \"" SHOW "\" is not a CIDR range like 10.0.0.0/8 or "
                "2001:db8::/32",
                ld->sec_label, value);
  for (size_t i = 0; i < s->nproxy_from; i++)
    if (!strcmp(s->proxy_from[i], canon))
      return fail(ld, ld->line, "%s proxy_from: duplicate range %s", ld->sec_label, canon);
  if (s->nproxy_from >= CONFIG_PROXY_FROM_MAX)
    return fail(ld, ld->line, "%s proxy_from: at most %d ranges", ld->sec_label,
                CONFIG_PROXY_FROM_MAX);
  memcpy(s->proxy_from[s->nproxy_from++], canon, sizeof(canon));
  return 1;
}

static int listener_key(loader_t *ld, const char *name, const char *value)
{
  if (!strcmp(name, "route"))
    return add_route(ld, value);
  if (!strcmp(name, "proxy_from"))
    return add_proxy_from(ld, value);
  if (!strcmp(name, "proxy_protocol"))
    return listener_setting(ld, 0, name, value);
  if (!strcmp(name, "fallback"))
    return listener_setting(ld, 1, name, value);
  if (!strcmp(name, "rate_limit"))
    return listener_setting(ld, 2, name, value);
  if (!strcmp(name, "max_connections_per_client"))
    return listener_setting(ld, 3, name, value);
  if (!strcmp(name, "max_connections")) {
    uint64_t n;
    if (ld->cur_max_line)
      return fail(ld, ld->line, "%s max_connections: duplicate key, first on line %d",
                  ld->sec_label, ld->cur_max_line);
    if (parse_uint(value, CONFIG_MAX_CONNECTIONS_MAX, &n) != 0)
      return fail(ld, ld->line,
                  "%s max_connections: expected a whole number >= 0 and at most %d, got \"" SHOW
                  "\"",
                  ld->sec_label, CONFIG_MAX_CONNECTIONS_MAX, value);
    ld->cfg->listeners[ld->cur].max_connections = (int64_t)n;
    ld->cfg->listeners[ld->cur].settings.max_connections = (int64_t)n;
    ld->cur_max_line = ld->line;
    return 1;
  }
  return fail(ld, ld->line, "%s: unknown key \"" SHOW "\"", ld->sec_label, name);
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
  loader_t *ld = user;
  (void)section; /* the reader tracks sections itself; see the top of the file */
  if (ld->failed)
    return 0;
  if (ld->sec == SEC_NONE)
    return fail(ld, ld->line, "key \"" SHOW "\" outside any section", name);
  if (!value || !*value)
    return fail(ld, ld->line, "%s %s: empty value", ld->sec_label, name);
  if (ld->sec == SEC_LISTENER)
    return listener_key(ld, name, value);
  if (ld->sec == SEC_METRICS)
    return metrics_key(ld, name, value);

  if (ld->sec == SEC_FIREWALL) {
    if (!strcmp(name, "block_ip"))
      return add_rule(ld, MCP_FIREWALL_IP, name, value);
    if (!strcmp(name, "block_cidr"))
      return add_rule(ld, MCP_FIREWALL_CIDR, name, value);
    if (!strcmp(name, "block_country"))
      return add_rule(ld, MCP_FIREWALL_COUNTRY, name, value);
  }
  for (int id = 0; id < K_COUNT; id++) {
    if (key_defs[id].sec != ld->sec || strcmp(key_defs[id].name, name) != 0)
      continue;
    if (ld->key_line[id])
      return fail(ld, ld->line, "%s %s: duplicate key, first on line %d", ld->sec_label, name,
                  ld->key_line[id]);
    ld->key_line[id] = ld->line;
    return set_single(ld, (key_id_t)id, value);
  }
  return fail(ld, ld->line, "%s: unknown key \"" SHOW "\"", ld->sec_label, name);
}

/* ---- checks that need the whole file ---- */

static int check_grpc(loader_t *ld)
{
  config_t *cfg = ld->cfg;
  if (!cfg->has_grpc)
    return 1;
  if (!cfg->grpc_addr[0])
    return fail(ld, ld->sec_line[SEC_GRPC], "[grpc] addr is required in a [grpc] section");
  if (cfg->grpc_is_unix) {
    /* The unix socket is protected by its file mode; TLS files there would be silently unused. */
    static const key_id_t tls_keys[] = {K_TLS_CERT, K_TLS_KEY, K_CLIENT_CA, K_CLIENT_AUTH};
    int first = 0;
    const char *name = NULL;
    for (size_t i = 0; i < sizeof(tls_keys) / sizeof(tls_keys[0]); i++) {
      int line = ld->key_line[tls_keys[i]];
      if (line && (!first || line < first)) {
        first = line;
        name = key_defs[tls_keys[i]].name;
      }
    }
    if (first)
      return fail(ld, first, "[grpc] %s: applies to a TCP addr only, not %s", name, cfg->grpc_addr);
  }
  if (cfg->tls_cert[0] && !cfg->tls_key[0])
    return fail(ld, ld->key_line[K_TLS_CERT], "[grpc] tls_cert needs tls_key");
  if (cfg->tls_key[0] && !cfg->tls_cert[0])
    return fail(ld, ld->key_line[K_TLS_KEY], "[grpc] tls_key needs tls_cert");
  if (!cfg->grpc_is_unix && !cfg->tls_cert[0])
    return fail(ld, ld->key_line[K_GRPC_ADDR],
                "[grpc] addr: a TCP address needs tls_cert and tls_key (the admin API is never "
                "served without TLS over TCP)");
  if (cfg->client_ca[0] && !cfg->tls_cert[0])
    return fail(ld, ld->key_line[K_CLIENT_CA], "[grpc] client_ca needs tls_cert and tls_key");
  /* Without client certificates anyone who reaches the port may change routes: opt in only. */
  if (!cfg->grpc_is_unix && !cfg->client_ca[0] && !cfg->client_auth_none)
    return fail(ld, ld->key_line[K_GRPC_ADDR],
                "[grpc] addr: a TCP address needs client_ca (clients must present a certificate), "
                "or client_auth = none to let any client that reaches %s change routes",
                cfg->grpc_addr);
  if (cfg->client_ca[0] && cfg->client_auth_none)
    return fail(ld, ld->key_line[K_CLIENT_AUTH],
                "[grpc] client_auth = none contradicts client_ca (which requires client "
                "certificates); keep one");
  if (cfg->client_cert[0] && !cfg->client_key[0])
    return fail(ld, ld->key_line[K_CLIENT_CERT], "[grpc] client_cert needs client_key");
  if (cfg->client_key[0] && !cfg->client_cert[0])
    return fail(ld, ld->key_line[K_CLIENT_KEY], "[grpc] client_key needs client_cert");
  return 1;
}

int config_find_loop(const mcp_backend_t *backend, const struct sockaddr_storage *listen_addrs,
                     size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (mcp_backend_loops_to(backend, (const struct sockaddr *)&listen_addrs[i]))
      return (int)i;
  return -1;
}

/*
 * "localhost" and "*.localhost" always mean the loopback addresses, so the file's check can
 * judge them without DNS. Other hostname backends are not resolved here (a file may hold
 * 100,000 routes): the admin API resolves them when a route is added, and no connect ever
 * reaches one of our own listeners.
 */
static int is_localhost_name(const mcp_backend_t *b)
{
  static const char name[] = "localhost";
  size_t n = sizeof(name) - 1;
  if (b->host_len < n || strncmp(b->text + b->host_len - n, name, n) != 0)
    return 0;
  return b->host_len == n || b->text[b->host_len - n - 1] == '.';
}

int config_find_loop_any(const mcp_backend_t *b, const struct sockaddr_storage *addrs, size_t n)
{
  if (b->addr.sa.sa_family != AF_UNSPEC)
    return config_find_loop(b, addrs, n);
  if (!is_localhost_name(b))
    return -1;
  for (size_t i = 0; i < n; i++) {
    const struct sockaddr *one = (const struct sockaddr *)&addrs[i];
    if (mcp_backend_check_loop(b, &one, 1, 0) == MCP_ELOOP)
      return (int)i;
  }
  return -1;
}

/*
 * A route or fallback whose backend is one of the file's own listeners would connect to itself
 * forever: IP backends, and "localhost" names (config_find_loop_any). The admin API refuses the
 * same (control.c): a route or fallback added later, and a listener added at the address of an
 * existing route's or fallback's backend.
 */
static int check_loops(loader_t *ld)
{
  config_t *cfg = ld->cfg;
  if (cfg->nlisteners == 0)
    return 1;
  /* Parsed once: a file may hold 1,024 listeners and 100,000 routes. */
  struct sockaddr_storage *addrs = calloc(cfg->nlisteners, sizeof(*addrs));
  if (!addrs)
    return fail(ld, 0, "out of memory");
  int ok = 1;
  for (size_t i = 0; i < cfg->nlisteners && ok; i++)
    if (mcp_listener_addr_parse(cfg->listeners[i].addr, &addrs[i], NULL) != 0)
      ok = fail(ld, cfg->listeners[i].line, "listener address no longer parses");
  for (size_t i = 0; i < cfg->nlisteners && ok; i++) {
    const config_listener_t *l = &cfg->listeners[i];
    mcp_backend_t fb;
    int j;
    if (l->settings.fallback[0] && mcp_backend_parse(l->settings.fallback, &fb) == 0 &&
        (j = config_find_loop_any(&fb, addrs, cfg->nlisteners)) >= 0)
      ok = fail(ld, l->fallback_line,
                "[listener \"%s\"] fallback: backend %s loops back to this proxy's listener %s",
                l->addr, fb.text, cfg->listeners[j].addr);
    for (size_t r = 0; r < l->nroutes && ok; r++) {
      mcp_backend_t b;
      if (mcp_backend_parse(l->routes[r].backend, &b) != 0)
        ok = fail(ld, l->routes[r].line, "route backend no longer parses");
      else if ((j = config_find_loop_any(&b, addrs, cfg->nlisteners)) >= 0)
        ok = fail(ld, l->routes[r].line,
                  "[listener \"%s\"] route: backend %s loops back to this proxy's listener %s",
                  l->addr, b.text, cfg->listeners[j].addr);
    }
  }
  free(addrs);
  return ok;
}

static int check_whole(loader_t *ld)
{
  config_t *cfg = ld->cfg;
  if (!cfg->db_path[0])
    return fail(ld, 0, "[database] path is required");
  if (!check_metrics(ld))
    return 0;
  if (!check_cluster(ld))
    return 0;
  if (!check_grpc(ld))
    return 0;
  for (size_t i = 0; i < cfg->nlisteners; i++) {
    const config_listener_t *l = &cfg->listeners[i];
    if (l->settings.proxy_protocol && l->settings.nproxy_from == 0)
      return fail(ld, l->proxy_protocol_line,
                  "[listener \"%s\"] proxy_protocol = on needs proxy_from (the peers that may "
                  "send a PROXY header)",
                  l->addr);
  }
  if (ld->first_country_line && !cfg->geoip_db[0])
    return fail(ld, ld->first_country_line,
                "[firewall] block_country needs geoip_db (a MaxMind country database)");
  return check_loops(ld);
}

/* ---- entry points ---- */

static int config_dir(loader_t *ld, const char *path)
{
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof(tmp), "%s", path);
  char *slash = strrchr(tmp, '/');
  const char *dir = ".";
  if (slash == tmp)
    dir = "/";
  else if (slash) {
    *slash = '\0';
    dir = tmp;
  }
  if (!realpath(dir, ld->dir))
    return fail(ld, 0, "cannot resolve its directory: %s", strerror(errno));
  return 1;
}

int config_load(const char *path, config_t *cfg, char *err, size_t errlen)
{
  loader_t ld;
  memset(&ld, 0, sizeof(ld));
  memset(cfg, 0, sizeof(*cfg));
  ld.cfg = cfg;
  ld.err = err;
  ld.errlen = errlen;
  if (errlen > 0)
    err[0] = '\0';

  cfg->connect_timeout_ms = 5 * 1000;
  cfg->idle_timeout_ms = 5 * 60 * 1000;
  cfg->handshake_timeout_ms = 10 * 1000;
  cfg->shutdown_timeout_ms = 30 * 1000;
  cfg->log_level = LOG_INFO;
  cfg->socket_mode = 0600;
  if (strlen(path) >= sizeof(cfg->path)) {
    snprintf(err, errlen, "%.64s...: config path too long", path);
    return -1;
  }
  memcpy(cfg->path, path, strlen(path) + 1);

  ld.f = fopen(path, "r");
  if (!ld.f) {
    fail(&ld, 0, "cannot open: %s", strerror(errno));
    goto fail;
  }
  struct stat st;
  if (fstat(fileno(ld.f), &st) == 0 && S_ISDIR(st.st_mode)) {
    fail(&ld, 0, "cannot open: %s", strerror(EISDIR));
    goto fail;
  }
  if (!config_dir(&ld, path))
    goto fail;

  if (&ini_max_line != NULL && ini_max_line < CONFIG_LINE_BUF)
    ini_max_line = CONFIG_LINE_BUF;
  int rc = ini_parse_stream(read_line, &ld, on_key, &ld);
  /*
   * inih returns the first line it found wrong: one of ours (the handler said no), or a line
   * it could not parse at all, which it reports only here.
   */
  if (rc > 0 && (!ld.failed || rc < ld.err_line)) {
    ld.failed = 0;
    fail(&ld, rc, "syntax error (expected \"key = value\", \"[section]\" or a ; comment)");
  } else if (rc < 0 && !ld.failed) {
    fail(&ld, 0, "cannot parse (inih error %d)", rc);
  }
  if (ld.failed || !check_whole(&ld))
    goto fail;

  fclose(ld.f);
  seen_free(&ld.seen);
  return 0;

fail:
  if (ld.f)
    fclose(ld.f);
  seen_free(&ld.seen);
  config_free(cfg);
  return -1;
}

void config_free_seed(config_t *cfg)
{
  for (size_t i = 0; i < cfg->nlisteners; i++)
    free(cfg->listeners[i].routes);
  free(cfg->listeners);
  free(cfg->rules);
  cfg->listeners = NULL;
  cfg->nlisteners = 0;
  cfg->rules = NULL;
  cfg->nrules = 0;
}

void config_free(config_t *cfg)
{
  if (!cfg)
    return;
  config_free_seed(cfg);
  memset(cfg, 0, sizeof(*cfg));
}
