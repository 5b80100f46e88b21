/*
 * store_listeners: a listener's settings in the store (docs/ARCHITECTURE.md, "Store"): add
 * with settings, read, update the fields a mask names, remove (routes and proxy_from cascade).
 *
 * mcp_store_load(), the older visitor without the settings, is here too: an adapter onto
 * mcp_store_load_ex().
 *
 * Each write is several statements (the listener row, then its proxy_from rows) inside one
 * mcp__store_write_begin/end pair (lib/store.c), so a failure at any statement - a duplicate
 * proxy_from entry, a CHECK constraint - leaves the database as it was. These writes are rare
 * (admin calls, seeding), so statements are prepared per call rather than kept on the handle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "mcproxy/store.h"
#include "store_internal.h"

void mcp_store_listener_settings_init(mcp_store_listener_settings_t *s)
{
  memset(s, 0, sizeof(*s));
}

void mcp_store_listener_settings_free(mcp_store_listener_settings_t *s)
{
  if (s == NULL)
    return;
  free(s->storage_);
  memset(s, 0, sizeof(*s));
}

/* Prepares sql, recording SQLite's message on failure. */
static int prep(mcp_store_t *st, const char *sql, sqlite3_stmt **stmt, const char *what)
{
  int rc = sqlite3_prepare_v2(mcp__store_db(st), sql, -1, stmt, NULL);
  return rc == SQLITE_OK ? 0 : mcp__store_sqlfail(st, rc, what);
}

/* Steps a statement that returns no rows, then finalises it. */
static int run(mcp_store_t *st, sqlite3_stmt *stmt, const char *what)
{
  int rc = sqlite3_step(stmt);
  int code = rc == SQLITE_DONE ? 0 : mcp__store_sqlfail(st, rc, what);
  sqlite3_finalize(stmt);
  return code;
}

/* The checks every write makes on the fields it writes. */
static int check_settings(mcp_store_t *st, const char *addr, const mcp_store_listener_settings_t *s,
                          unsigned mask)
{
  const struct {
    unsigned bit;
    int64_t v;
    const char *name;
  } nums[] = {
      {MCP_STORE_LS_MAX_CONNECTIONS, s->max_connections, "max_connections"},
      {MCP_STORE_LS_RATE_LIMIT_COUNT, s->rate_limit_count, "rate_limit_count"},
      {MCP_STORE_LS_RATE_LIMIT_PERIOD_MS, s->rate_limit_period_ms, "rate_limit_period_ms"},
      {MCP_STORE_LS_MAX_CONNECTIONS_PER_CLIENT, s->max_connections_per_client,
       "max_connections_per_client"},
  };
  for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
    if ((mask & nums[i].bit) && nums[i].v < 0) {
      mcp__store_errf(st, "listener %s: %s %lld is negative", addr, nums[i].name,
                      (long long)nums[i].v);
      return MCP_ERANGE;
    }
  }
  if ((mask & MCP_STORE_LS_PROXY_PROTOCOL) && s->proxy_protocol != 0 && s->proxy_protocol != 1) {
    mcp__store_errf(st, "listener %s: proxy_protocol must be 0 or 1", addr);
    return MCP_EINVAL;
  }
  if (mask & MCP_STORE_LS_PROXY_FROM) {
    if (s->proxy_from_count > 0 && s->proxy_from == NULL) {
      mcp__store_errf(st, "listener %s: missing proxy_from list", addr);
      return MCP_EINVAL;
    }
    for (size_t i = 0; i < s->proxy_from_count; i++) {
      if (s->proxy_from[i] == NULL) {
        mcp__store_errf(st, "listener %s: missing proxy_from entry", addr);
        return MCP_EINVAL;
      }
    }
  }
  return 0;
}

/* Replaces listener id's proxy_from rows with s's list. */
static int write_proxy_from(mcp_store_t *st, int64_t id, const mcp_store_listener_settings_t *s)
{
  sqlite3_stmt *stmt;
  int code = prep(st, "DELETE FROM listener_proxy_from WHERE listener_id = ?1", &stmt,
                  "writing proxy_from");
  if (code != 0)
    return code;
  sqlite3_bind_int64(stmt, 1, id);
  code = run(st, stmt, "writing proxy_from");
  for (size_t i = 0; code == 0 && i < s->proxy_from_count; i++) {
    code = prep(st, "INSERT INTO listener_proxy_from (listener_id, cidr) VALUES (?1, ?2)", &stmt,
                "writing proxy_from");
    if (code != 0)
      break;
    sqlite3_bind_int64(stmt, 1, id);
    sqlite3_bind_text(stmt, 2, s->proxy_from[i], -1, SQLITE_TRANSIENT);
    code = run(st, stmt, "writing proxy_from");
    if (code != 0) {
      /* The UNIQUE(listener_id, cidr) constraint: the same entry twice. */
      mcp__store_errf(st, "proxy_from %s: %s", s->proxy_from[i], sqlite3_errmsg(mcp__store_db(st)));
      code = MCP_EINVAL;
    }
  }
  return code;
}

/* The listener's id (MCP_ENOENT if none). */
static int listener_id(mcp_store_t *st, const char *addr, int64_t *id)
{
  sqlite3_stmt *stmt;
  int code = prep(st, "SELECT id FROM listeners WHERE addr = ?1", &stmt, "finding listener");
  if (code != 0)
    return code;
  sqlite3_bind_text(stmt, 1, addr, -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    *id = sqlite3_column_int64(stmt, 0);
  } else if (rc == SQLITE_DONE) {
    mcp__store_errf(st, "no listener %s", addr);
    code = MCP_ENOENT;
  } else {
    code = mcp__store_sqlfail(st, rc, "finding listener");
  }
  sqlite3_finalize(stmt);
  return code;
}

/* The invariant the schema cannot state: proxy_protocol on needs a proxy_from entry. */
static int check_proxy_invariant(mcp_store_t *st, const char *addr, int64_t id)
{
  sqlite3_stmt *stmt;
  int code = prep(st,
                  "SELECT proxy_protocol = 1 AND NOT EXISTS (SELECT 1 FROM listener_proxy_from"
                  " WHERE listener_id = ?1) FROM listeners WHERE id = ?1",
                  &stmt, "checking proxy_from");
  if (code != 0)
    return code;
  sqlite3_bind_int64(stmt, 1, id);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW && sqlite3_column_int(stmt, 0) != 0) {
    mcp__store_errf(st, "listener %s: proxy_protocol on needs at least one proxy_from", addr);
    code = MCP_EINVAL;
  } else if (rc != SQLITE_ROW) {
    code = mcp__store_sqlfail(st, rc == SQLITE_DONE ? SQLITE_ERROR : rc, "checking proxy_from");
  }
  sqlite3_finalize(stmt);
  return code;
}

/* The UPDATE for one scalar field; the column names come from this fixed table only. */
static int update_field(mcp_store_t *st, int64_t id, const char *column, int64_t num,
                        const char *text)
{
  char sql[128];
  sqlite3_stmt *stmt;
  snprintf(sql, sizeof(sql), "UPDATE listeners SET %s = ?2 WHERE id = ?1", column);
  int code = prep(st, sql, &stmt, "updating listener");
  if (code != 0)
    return code;
  sqlite3_bind_int64(stmt, 1, id);
  if (text)
    sqlite3_bind_text(stmt, 2, text, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_int64(stmt, 2, num);
  return run(st, stmt, "updating listener");
}

static int update_in_tx(mcp_store_t *st, const char *addr, const mcp_store_listener_settings_t *s,
                        unsigned mask)
{
  int64_t id = 0;
  int code = listener_id(st, addr, &id);
  const char *fallback = s->fallback ? s->fallback : "";

  if (code == 0 && (mask & MCP_STORE_LS_MAX_CONNECTIONS))
    code = update_field(st, id, "max_connections", s->max_connections, NULL);
  if (code == 0 && (mask & MCP_STORE_LS_PROXY_PROTOCOL))
    code = update_field(st, id, "proxy_protocol", s->proxy_protocol, NULL);
  if (code == 0 && (mask & MCP_STORE_LS_FALLBACK))
    code = update_field(st, id, "fallback", 0, fallback);
  if (code == 0 && (mask & MCP_STORE_LS_RATE_LIMIT_COUNT))
    code = update_field(st, id, "rate_limit_count", s->rate_limit_count, NULL);
  if (code == 0 && (mask & MCP_STORE_LS_RATE_LIMIT_PERIOD_MS))
    code = update_field(st, id, "rate_limit_period_ms", s->rate_limit_period_ms, NULL);
  if (code == 0 && (mask & MCP_STORE_LS_MAX_CONNECTIONS_PER_CLIENT))
    code = update_field(st, id, "max_connections_per_client", s->max_connections_per_client, NULL);
  if (code == 0 && (mask & MCP_STORE_LS_PROXY_FROM))
    code = write_proxy_from(st, id, s);
  if (code == 0)
    code = check_proxy_invariant(st, addr, id);
  return code;
}

int mcp_store_listener_update(mcp_store_t *st, const char *addr,
                              const mcp_store_listener_settings_t *s, unsigned mask)
{
  if (addr == NULL || s == NULL || (mask & ~(unsigned)MCP_STORE_LS_ALL)) {
    mcp__store_errf(st, "missing or invalid argument");
    return MCP_EINVAL;
  }
  int code = check_settings(st, addr, s, mask);
  if (code != 0)
    return code;
  code = mcp__store_write_begin(st, "updating listener");
  if (code != 0)
    return code;
  return mcp__store_write_end(st, update_in_tx(st, addr, s, mask), "updating listener");
}

int mcp_store_listener_set_settings(mcp_store_t *st, const char *addr,
                                    const mcp_store_listener_settings_t *s)
{
  return mcp_store_listener_update(st, addr, s, MCP_STORE_LS_ALL);
}

int mcp_store_listener_set_max_connections(mcp_store_t *st, const char *addr,
                                           int64_t max_connections)
{
  mcp_store_listener_settings_t s;
  mcp_store_listener_settings_init(&s);
  s.max_connections = max_connections;
  return mcp_store_listener_update(st, addr, &s, MCP_STORE_LS_MAX_CONNECTIONS);
}

static int add_in_tx(mcp_store_t *st, const char *addr, const mcp_store_listener_settings_t *s)
{
  sqlite3_stmt *stmt;
  int code = prep(st,
                  "INSERT INTO listeners (addr, " MCP__STORE_SETTINGS_COLUMNS
                  ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                  &stmt, "adding listener");
  if (code != 0)
    return code;
  sqlite3_bind_text(stmt, 1, addr, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(stmt, 2, s->max_connections);
  sqlite3_bind_int(stmt, 3, s->proxy_protocol);
  sqlite3_bind_text(stmt, 4, s->fallback ? s->fallback : "", -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(stmt, 5, s->rate_limit_count);
  sqlite3_bind_int64(stmt, 6, s->rate_limit_period_ms);
  sqlite3_bind_int64(stmt, 7, s->max_connections_per_client);
  int rc = sqlite3_step(stmt);
  sqlite3_finalize(stmt);
  if (rc == SQLITE_CONSTRAINT_UNIQUE) {
    mcp__store_errf(st, "listener %s already exists", addr);
    return MCP_EEXIST;
  }
  if (rc != SQLITE_DONE)
    return mcp__store_sqlfail(st, rc, "adding listener");
  int64_t id = sqlite3_last_insert_rowid(mcp__store_db(st));
  code = write_proxy_from(st, id, s);
  if (code == 0)
    code = check_proxy_invariant(st, addr, id);
  return code;
}

int mcp_store_listener_add_settings(mcp_store_t *st, const char *addr,
                                    const mcp_store_listener_settings_t *s)
{
  mcp_store_listener_settings_t defaults;
  if (s == NULL) {
    mcp_store_listener_settings_init(&defaults);
    s = &defaults;
  }
  if (addr == NULL) {
    mcp__store_errf(st, "missing argument");
    return MCP_EINVAL;
  }
  int code = check_settings(st, addr, s, MCP_STORE_LS_ALL);
  if (code != 0)
    return code;
  code = mcp__store_write_begin(st, "adding listener");
  if (code != 0)
    return code;
  return mcp__store_write_end(st, add_in_tx(st, addr, s), "adding listener");
}

int mcp_store_listener_add(mcp_store_t *st, const char *addr, int64_t max_connections)
{
  mcp_store_listener_settings_t s;
  mcp_store_listener_settings_init(&s);
  s.max_connections = max_connections;
  return mcp_store_listener_add_settings(st, addr, &s);
}

int mcp_store_listener_remove(mcp_store_t *st, const char *addr)
{
  sqlite3_stmt *stmt;
  if (addr == NULL) {
    mcp__store_errf(st, "missing argument");
    return MCP_EINVAL;
  }
  int code = mcp__store_write_begin(st, "removing listener");
  if (code != 0)
    return code;
  code = prep(st, "DELETE FROM listeners WHERE addr = ?1", &stmt, "removing listener");
  if (code == 0) {
    sqlite3_bind_text(stmt, 1, addr, -1, SQLITE_TRANSIENT);
    code = run(st, stmt, "removing listener");
  }
  if (code == 0 && sqlite3_changes(mcp__store_db(st)) == 0) {
    mcp__store_errf(st, "no listener %s", addr);
    code = MCP_ENOENT;
  }
  return mcp__store_write_end(st, code, "removing listener");
}

/* A string list being collected, then packed into one allocation. */
struct strs {
  char **v;
  size_t n, cap, bytes;
};

static int strs_push(struct strs *l, const char *s)
{
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 8;
    char **v = realloc(l->v, cap * sizeof(*v));
    if (v == NULL)
      return MCP_ENOMEM;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n] = strdup(s);
  if (l->v[l->n] == NULL)
    return MCP_ENOMEM;
  l->bytes += strlen(s) + 1;
  l->n++;
  return 0;
}

static void strs_free(struct strs *l)
{
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
}

int mcp__store_settings_from_row(mcp_store_t *st, sqlite3_stmt *row, int col, int64_t id,
                                 mcp_store_listener_settings_t *out)
{
  struct strs list = {0};
  sqlite3_stmt *stmt;
  int rc = SQLITE_DONE;

  mcp_store_listener_settings_init(out);
  const unsigned char *fb = sqlite3_column_text(row, col + 2);
  int code = strs_push(&list, fb ? (const char *)fb : "");
  if (code == 0)
    code = prep(st, "SELECT cidr FROM listener_proxy_from WHERE listener_id = ?1 ORDER BY cidr",
                &stmt, "reading proxy_from");
  if (code != 0) {
    strs_free(&list);
    return code;
  }
  sqlite3_bind_int64(stmt, 1, id);
  while (code == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const unsigned char *cidr = sqlite3_column_text(stmt, 0);
    code = strs_push(&list, cidr ? (const char *)cidr : "");
  }
  if (code == 0 && rc != SQLITE_DONE)
    code = mcp__store_sqlfail(st, rc, "reading proxy_from");
  sqlite3_finalize(stmt);

  /* One block: the proxy_from pointer array, then every string (fallback first). */
  size_t nfrom = list.n - 1;
  char *block = code == 0 ? malloc(nfrom * sizeof(char *) + list.bytes) : NULL;
  if (code == 0 && block == NULL)
    code = MCP_ENOMEM;
  if (code != 0) {
    strs_free(&list);
    return code;
  }
  const char **ptrs = (const char **)(void *)block;
  char *p = block + nfrom * sizeof(char *);
  for (size_t i = 0; i < list.n; i++) {
    size_t len = strlen(list.v[i]) + 1;
    memcpy(p, list.v[i], len);
    if (i == 0)
      out->fallback = p;
    else
      ptrs[i - 1] = p;
    p += len;
  }
  strs_free(&list);
  out->storage_ = block;
  out->proxy_from = nfrom ? ptrs : NULL;
  out->proxy_from_count = nfrom;
  out->max_connections = sqlite3_column_int64(row, col);
  out->proxy_protocol = sqlite3_column_int(row, col + 1);
  out->rate_limit_count = sqlite3_column_int64(row, col + 3);
  out->rate_limit_period_ms = sqlite3_column_int64(row, col + 4);
  out->max_connections_per_client = sqlite3_column_int64(row, col + 5);
  return 0;
}

int mcp_store_listener_get(mcp_store_t *st, const char *addr, mcp_store_listener_settings_t *out)
{
  sqlite3_stmt *stmt;
  mcp_store_listener_settings_init(out);
  if (addr == NULL) {
    mcp__store_errf(st, "missing argument");
    return MCP_EINVAL;
  }
  /* A savepoint outside a transaction is a read transaction: both queries see one snapshot. */
  int rc = sqlite3_exec(mcp__store_db(st), "SAVEPOINT mcp_read", NULL, NULL, NULL);
  if (rc != SQLITE_OK)
    return mcp__store_sqlfail(st, rc, "reading listener");
  int code = prep(st, "SELECT id, " MCP__STORE_SETTINGS_COLUMNS " FROM listeners WHERE addr = ?1",
                  &stmt, "reading listener");
  if (code == 0) {
    sqlite3_bind_text(stmt, 1, addr, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      code = mcp__store_settings_from_row(st, stmt, 1, sqlite3_column_int64(stmt, 0), out);
    } else if (rc == SQLITE_DONE) {
      mcp__store_errf(st, "no listener %s", addr);
      code = MCP_ENOENT;
    } else {
      code = mcp__store_sqlfail(st, rc, "reading listener");
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_exec(mcp__store_db(st), "RELEASE mcp_read", NULL, NULL, NULL);
  return code;
}

/* mcp_store_load()'s visitor behind the _ex callbacks. */
struct load_adapter {
  const mcp_store_visitor_t *v;
  void *data;
};

static int adapt_listener(void *data, const char *addr, const mcp_store_listener_settings_t *s)
{
  struct load_adapter *a = data;
  return a->v->listener(a->data, addr, s->max_connections);
}

static int adapt_route(void *data, const char *listener_addr, const char *hostname,
                       const char *backend, mcp_send_proxy_t send_proxy)
{
  struct load_adapter *a = data;
  (void)send_proxy;
  return a->v->route(a->data, listener_addr, hostname, backend);
}

static int adapt_rule(void *data, mcp_firewall_type_t type, const char *value)
{
  struct load_adapter *a = data;
  return a->v->rule(a->data, type, value);
}

int mcp_store_load(mcp_store_t *st, const mcp_store_visitor_t *visitor, void *data)
{
  struct load_adapter a = {visitor, data};
  mcp_store_visitor_ex_t ex = {NULL, NULL, NULL};
  if (visitor != NULL) {
    ex.listener = visitor->listener ? adapt_listener : NULL;
    ex.route = visitor->route ? adapt_route : NULL;
    ex.rule = visitor->rule ? adapt_rule : NULL;
  }
  return mcp_store_load_ex(st, &ex, &a);
}
