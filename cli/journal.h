/*
 * journal: whether stderr goes to the systemd journal, so log lines can carry their syslog
 * priority as a "<N>" prefix (the journal strips it and files the line at that priority, so
 * `journalctl -p warning` finds warnings). systemd sets JOURNAL_STREAM to "<device>:<inode>" of
 * the stream it connected; it is inherited by children whose stderr may be something else, so
 * it counts only when it matches the descriptor's own fstat().
 */
#ifndef MCP_CLI_JOURNAL_H
#define MCP_CLI_JOURNAL_H

#include <stdbool.h>

/* Whether fd is the stream JOURNAL_STREAM names. Reads the environment; call at start-up. */
bool journal_stream_is(int fd);

/* Syslog priorities the log levels map to (see syslog(3)). */
#define JOURNAL_PRIORITY_ERR 3
#define JOURNAL_PRIORITY_WARNING 4
#define JOURNAL_PRIORITY_INFO 6
#define JOURNAL_PRIORITY_DEBUG 7

/* The line prefix for a syslog priority 0-7: "<0>" .. "<7>" (static), "" out of range. */
const char *journal_prefix(int priority);

#endif
