/* drift: the config's listeners, routes and rules against the database's. See drift.h. */
#include <stdarg.h>
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

int drift_from_config(const config_t *cfg, drift_set_t *s)
{
  int err = 0;
  for (size_t i = 0; i < cfg->nlisteners && !err; i++) {
    const config_listener_t *cl = &cfg->listeners[i];
    err =
        drift_add(s, "listener %s max_connections=%lld", cl->addr, (long long)cl->max_connections);
    for (size_t j = 0; j < cl->nroutes && !err; j++)
      err = drift_add(s, "route %s %s %s", cl->addr, cl->routes[j].hostname, cl->routes[j].backend);
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
      "SELECT 'listener ' || addr || ' max_connections=' || max_connections FROM listeners",
      "SELECT 'route ' || l.addr || ' ' || r.hostname || ' ' || r.backend FROM routes r"
      " JOIN listeners l ON l.id = r.listener_id",
      "SELECT 'rule ' || type || ' ' || value FROM firewall_rules",
  };
  for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, queries[i], -1, &st, NULL) != SQLITE_OK)
      return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
      if (drift_add(s, "%s", (const char *)sqlite3_column_text(st, 0)) != 0) {
        rc = SQLITE_NOMEM;
        break;
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
