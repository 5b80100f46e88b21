/*
 * store_sync: the sync_state table (how far an outside source of desired state has been
 * applied) and clearing the whole state for a full re-read. See mcproxy/store.h.
 *
 * These are rare writes (one per applied batch of changes, or per full re-read), so each
 * prepares its statement when called rather than holding one in the handle's table.
 */
#include <stddef.h>

#include <sqlite3.h>

#include "mcproxy/store.h"
#include "store_internal.h"

/* Prepares sql, binds source (when not NULL) as ?1 and revision as ?2 (when >= 0). */
static int prepare(mcp_store_t *st, const char *sql, const char *source, int64_t revision,
                   sqlite3_stmt **out, const char *what)
{
  int rc = sqlite3_prepare_v2(mcp__store_db(st), sql, -1, out, NULL);
  if (rc != SQLITE_OK)
    return mcp__store_sqlfail(st, rc, what);
  if (source)
    sqlite3_bind_text(*out, 1, source, -1, SQLITE_STATIC);
  if (revision >= 0)
    sqlite3_bind_int64(*out, 2, revision);
  return 0;
}

int mcp_store_sync_revision(mcp_store_t *st, const char *source, int64_t *revision)
{
  sqlite3_stmt *stmt;
  *revision = 0;
  if (!source)
    return MCP_EINVAL;
  int code = prepare(st, "SELECT revision FROM sync_state WHERE source = ?1", source, -1, &stmt,
                     "reading the sync revision");
  if (code)
    return code;
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW)
    *revision = sqlite3_column_int64(stmt, 0);
  else if (rc != SQLITE_DONE)
    code = mcp__store_sqlfail(st, rc, "reading the sync revision");
  sqlite3_finalize(stmt);
  return code;
}

/* Runs one prepared write inside mcp__store_write_begin/end. */
static int write_one(mcp_store_t *st, sqlite3_stmt *stmt, const char *what)
{
  int code = mcp__store_write_begin(st, what);
  if (!code) {
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
      code = mcp__store_sqlfail(st, rc, what);
    code = mcp__store_write_end(st, code, what);
  }
  sqlite3_finalize(stmt);
  return code;
}

int mcp_store_set_sync_revision(mcp_store_t *st, const char *source, int64_t revision)
{
  sqlite3_stmt *stmt;
  if (!source || revision < 0)
    return MCP_EINVAL;
  int code = prepare(st,
                     "INSERT INTO sync_state(source, revision) VALUES (?1, ?2)"
                     " ON CONFLICT(source) DO UPDATE SET revision = excluded.revision",
                     source, revision, &stmt, "recording the sync revision");
  return code ? code : write_one(st, stmt, "recording the sync revision");
}

int mcp_store_sync_forget(mcp_store_t *st)
{
  sqlite3_stmt *stmt;
  int code = prepare(st, "DELETE FROM sync_state", NULL, -1, &stmt, "dropping the sync revisions");
  return code ? code : write_one(st, stmt, "dropping the sync revisions");
}

int mcp_store_clear(mcp_store_t *st)
{
  sqlite3_stmt *stmt;
  /* Routes and proxy_from rows go with their listener (ON DELETE CASCADE). */
  int code = prepare(st, "DELETE FROM listeners", NULL, -1, &stmt, "clearing the listeners");
  if (!code)
    code = write_one(st, stmt, "clearing the listeners");
  if (!code)
    code = prepare(st, "DELETE FROM firewall_rules", NULL, -1, &stmt, "clearing the rules");
  if (!code)
    code = write_one(st, stmt, "clearing the rules");
  return code;
}
