/*
 * log: the executable's one-line-per-event log on stderr:
 * "2026-11-26T10:00:00.123Z info message". Any thread may log.
 *
 * - Every message is escaped with log_escape(): control characters and backslash become \xNN,
 *   so text from outside (admin input) can never end a line early or forge another one.
 * - When stderr is the journal (JOURNAL_STREAM, see journal.h) each line starts with its syslog
 *   priority, "<3>" error, "<4>" warn, "<6>" info, "<7>" debug; otherwise lines are unchanged.
 * - No caller ever waits for stderr: lines go to a bounded queue that a writer thread empties.
 *   When it is full, lines are dropped and counted (log_dropped_total()), and a warn line
 *   reports the count once writing works again (at most every 10 s). See docs/RUNBOOK.md.
 */
#ifndef MCP_CLI_LOG_H
#define MCP_CLI_LOG_H

#include <stddef.h>
#include <uv.h>

enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Messages below level are dropped. Default LOG_INFO. */
void log_set_level(int level);
/* Parses "debug", "info", "warn", "error"; returns the level or -1. */
int log_level_parse(const char *name);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Copies srclen bytes of src into dst (dstlen bytes, NUL-terminated), writing each control
 * character (0x00-0x1f, 0x7f) and backslash as "\xNN" (lowercase hex). Stops early, never in
 * the middle of an escape, when dst is full. Returns the length written. Any thread.
 */
size_t log_escape(char *dst, size_t dstlen, const char *src, size_t srclen);

/* How many leading bytes of s (len bytes) log_escape would copy unchanged. Any thread. */
size_t log_clean_prefix(const char *s, size_t len);

/* Lines dropped since start because stderr did not keep up (for the metrics). Any thread. */
unsigned long long log_dropped_total(void);

/*
 * Like log_msg, but the line goes into a buffer of the calling thread, written out by
 * log_flush() (or when the buffer fills). The data plane logs each connection this way and each
 * loop flushes once per iteration, so a busy loop writes many lines with one write(2).
 */
void log_buffered(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * log_buffered without a format walk or a copy: the caller writes its message straight into
 * the calling thread's buffer. log_buffered_begin returns where the message goes and its room
 * in *room (the message may be cut there), or NULL when level is below the minimum (then nothing
 * is to be written and log_buffered_end must not be called). log_buffered_end(len) ends the
 * line after len message bytes (more than *room counts as *room): it is escaped as log_msg's
 * and the newline added. No other log call of this thread may come in between.
 */
char *log_buffered_begin(int level, size_t *room);
void log_buffered_end(size_t len);
/* Writes out the calling thread's buffered lines, if any. */
void log_flush(void);

/*
 * Starts prepare, a handle that writes the calling thread's buffered lines (log_buffered) in
 * every iteration of loop before it waits for I/O, so lines from the previous iteration's
 * callbacks (close callbacks included) go out together. It does not keep the loop alive. Call it
 * on the thread that runs loop, once per loop.
 */
void log_flush_each_iteration(uv_loop_t *loop, uv_prepare_t *prepare);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
