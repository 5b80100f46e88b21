/* drift: the config's listeners, routes and rules against the database's. See drift.h. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "drift.h"

int drift_add(drift_set_t *s, const char *fmt, ...)
{
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    char **v = realloc(s->v, cap * sizeof(*v));
    if (!v)
      return MCP_ENOMEM;
    s->v = v;
    s->cap = cap;
  }
  va_list ap;
  va_start(ap, fmt);
  int rc = vasprintf(&s->v[s->n], fmt, ap);
  va_end(ap);
  if (rc < 0)
    return MCP_ENOMEM;
  s->n++;
  return 0;
}

void drift_free(drift_set_t *s)
{
  for (size_t i = 0; i < s->n; i++)
    free(s->v[i]);
  free(s->v);
  memset(s, 0, sizeof(*s));
}

/* A rate limit as "N/Pms" (exact whatever the unit it was written in), or NULL when off. */
static const char *rate_text(uint32_t count, uint32_t period_ms, char buf[32])
{
  if (!count)
    return NULL;
  snprintf(buf, 32, "%lu/%lums", (unsigned long)count, (unsigned long)period_ms);
  return buf;
}

int drift_add_listener(drift_set_t *s, const char *addr, const listener_settings_t *ls)
{
  char rate[32];
  int err = drift_add(s, "listener %s max_connections=%lld", addr, (long long)ls->max_connections);
  if (!err && ls->proxy_protocol)
    err = drift_add(s, "listener %s proxy_protocol=on", addr);
  for (size_t i = 0; i < ls->nproxy_from && !err; i++)
    err = drift_add(s, DRIFT_PROXY_FROM_FMT, addr, ls->proxy_from[i]);
  if (!err && ls->fallback[0])
    err = drift_add(s, "listener %s fallback=%s", addr, ls->fallback);
  if (!err && rate_text(ls->rate_count, ls->rate_period_ms, rate))
    err = drift_add(s, "listener %s rate_limit=%s", addr, rate);
  if (!err && ls->max_per_client)
    err = drift_add(s, "listener %s max_connections_per_client=%lld", addr,
                    (long long)ls->max_per_client);
  return err;
}

int drift_add_route(drift_set_t *s, const char *addr, const char *hostname, const char *backend,
                    int send_proxy)
{
  if (send_proxy == 1 || send_proxy == 2)
    return drift_add(s, "route %s %s %s send-proxy-v%d", addr, hostname, backend, send_proxy);
  return drift_add(s, "route %s %s %s", addr, hostname, backend);
}

int drift_from_config(const config_t *cfg, drift_set_t *s)
{
  int err = 0;
  for (size_t i = 0; i < cfg->nlisteners && !err; i++) {
    const config_listener_t *cl = &cfg->listeners[i];
    listener_settings_t ls = cl->settings;
    ls.max_connections = cl->max_connections;
    err = drift_add_listener(s, cl->addr, &ls);
    for (size_t j = 0; j < cl->nroutes && !err; j++)
      err = drift_add_route(s, cl->addr, cl->routes[j].hostname, cl->routes[j].backend,
                            cl->routes[j].send_proxy);
  }
  for (size_t i = 0; i < cfg->nrules && !err; i++)
    err =
        drift_add(s, "rule %s %s", mcp_firewall_type_name(cfg->rules[i].type), cfg->rules[i].value);
  return err;
}

static int cmp_str(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void note(char show[][256], size_t *nshow, const char *where, const char *line)
{
  if (*nshow < DRIFT_SHOW)
    snprintf(show[(*nshow)++], 256, "only in the %s: %s", where, line);
}

size_t drift_compare(drift_set_t *cfg, drift_set_t *db, char show[][256], size_t *nshow)
{
  *nshow = 0;
  if (cfg->n)
    qsort(cfg->v, cfg->n, sizeof(char *), cmp_str);
  if (db->n)
    qsort(db->v, db->n, sizeof(char *), cmp_str);
  size_t i = 0, j = 0, count = 0;
  while (i < cfg->n || j < db->n) {
    int c = i == cfg->n ? 1 : j == db->n ? -1 : strcmp(cfg->v[i], db->v[j]);
    if (c == 0) {
      i++;
      j++;
      continue;
    }
    count++;
    if (c < 0)
      note(show, nshow, "config", cfg->v[i++]);
    else
      note(show, nshow, "database", db->v[j++]);
  }
  return count;
}

/* ---- reading the database for check ---- */

/*
 * check only reads: the database is opened read-only with SQLite directly (mcp_store_open would
 * create a missing file and migrate an older schema, which a check run by another user or by a
 * newer binary must never do). A schema other than this binary's is not compared.
 */
static int read_db(sqlite3 *db, drift_set_t *s)
{
  static const char *const queries[] = {
      "SELECT addr, max_connections, proxy_protocol, fallback, rate_limit_count,"
      " rate_limit_period_ms, max_connections_per_client FROM listeners",
      "SELECT l.addr, p.cidr FROM listener_proxy_from p JOIN listeners l ON l.id = p.listener_id",
      "SELECT l.addr, r.hostname, r.backend, r.send_proxy FROM routes r"
      " JOIN listeners l ON l.id = r.listener_id",
      "SELECT 'rule ' || type || ' ' || value FROM firewall_rules",
  };
  for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, queries[i], -1, &st, NULL) != SQLITE_OK)
      return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *t0 = (const char *)sqlite3_column_text(st, 0);
      int err;
      if (!t0) {
        continue;
      } else if (i == 0) {
        /* proxy_from comes from its own table (the next query), so nproxy_from stays 0 here. */
        listener_settings_t ls;
        memset(&ls, 0, sizeof(ls));
        const char *fb = (const char *)sqlite3_column_text(st, 3);
        ls.max_connections = sqlite3_column_int64(st, 1);
        ls.proxy_protocol = sqlite3_column_int(st, 2) != 0;
        snprintf(ls.fallback, sizeof(ls.fallback), "%s", fb ? fb : "");
        ls.rate_count = (uint32_t)sqlite3_column_int64(st, 4);
        ls.rate_period_ms = (uint32_t)sqlite3_column_int64(st, 5);
        ls.max_per_client = sqlite3_column_int64(st, 6);
        err = drift_add_listener(s, t0, &ls);
      } else if (i == 1) {
        err = drift_add(s, DRIFT_PROXY_FROM_FMT, t0, (const char *)sqlite3_column_text(st, 1));
      } else if (i == 2) {
        err = drift_add_route(s, t0, (const char *)sqlite3_column_text(st, 1),
                              (const char *)sqlite3_column_text(st, 2), sqlite3_column_int(st, 3));
      } else {
        err = drift_add(s, "%s", t0);
      }
      if (err) {
        rc = SQLITE_NOMEM;
        break;
      }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
      return -1;
  }
  return 0;
}

static int64_t schema_version(sqlite3 *db)
{
  sqlite3_stmt *st = NULL;
  int64_t v = -1;
  if (sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1, &st,
                         NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

size_t drift_check(const config_t *cfg)
{
  struct stat sb;
  if (stat(cfg->db_path, &sb) != 0)
    return 0; /* no database yet: the first run seeds it from this file */
  sqlite3 *db = NULL;
  drift_set_t fromdb = {0}, fromcfg = {0};
  size_t count = 0;
  int rc = sqlite3_open_v2(cfg->db_path, &db, SQLITE_OPEN_READONLY, NULL);
  if (rc == SQLITE_OK)
    sqlite3_busy_timeout(db, 2000);
  if (rc != SQLITE_OK || schema_version(db) != MCP_STORE_SCHEMA_VERSION ||
      read_db(db, &fromdb) != 0) {
    fprintf(stderr, "%s: note: not compared with the database %s (%s)\n", cfg->path, cfg->db_path,
            db ? sqlite3_errmsg(db) : "cannot open");
  } else if (fromdb.n > 0 && drift_from_config(cfg, &fromcfg) == 0) {
    char show[DRIFT_SHOW][256];
    size_t nshow = 0;
    count = drift_compare(&fromcfg, &fromdb, show, &nshow);
    if (count) {
      fprintf(stderr,
              "%s: warning: %zu difference%s between this file's listeners, routes and rules "
              "and the database %s, which is the source of truth (the file's copies are "
              "ignored):\n",
              cfg->path, count, count == 1 ? "" : "s", cfg->db_path);
      for (size_t i = 0; i < nshow; i++)
        fprintf(stderr, "%s: warning:   %s\n", cfg->path, show[i]);
    }
  }
  drift_free(&fromdb);
  drift_free(&fromcfg);
  sqlite3_close(db);
  return count;
}
