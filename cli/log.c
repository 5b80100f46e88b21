/*
 * log: one line per event on stderr. See log.h.
 *
 * Lines never go to stderr from the thread that logs them: they are appended to a bounded queue
 * that one writer thread empties with blocking writes. A reader that does not keep up (a stalled
 * journal, a full pipe) therefore never stalls an event loop; once the queue is full, lines are
 * dropped and counted, and the writer reports the count when writing works again
 * (docs/RUNBOOK.md, "Log lines dropped"). The writer is woken by the first line after a write
 * and lets more gather for a moment (LINGER_NS) before writing them all.
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"

static int min_level = LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};
static const int priorities[] = {JOURNAL_PRIORITY_DEBUG, JOURNAL_PRIORITY_INFO,
                                 JOURNAL_PRIORITY_WARNING, JOURNAL_PRIORITY_ERR};

void log_set_level(int level)
{
  min_level = level;
}

int log_level_parse(const char *name)
{
  for (int i = 0; i < 4; i++)
    if (!strcmp(name, names[i]))
      return i;
  return -1;
}

/* ---- formatting ---- */

#define LINE_MAX_LEN 2048

static int needs_escape(unsigned char c)
{
  return c < 0x20 || c == 0x7f || c == '\\';
}

size_t log_escape(char *dst, size_t dstlen, const char *src, size_t srclen)
{
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
  if (dstlen == 0)
    return 0;
  for (size_t i = 0; i < srclen; i++) {
    unsigned char c = (unsigned char)src[i];
    if (!needs_escape(c)) {
      if (n + 1 >= dstlen)
        break;
      dst[n++] = (char)c;
      continue;
    }
    if (n + 4 >= dstlen) /* whole escapes only: never a dangling "\x0" */
      break;
    dst[n++] = '\\';
    dst[n++] = 'x';
    dst[n++] = hex[c >> 4];
    dst[n++] = hex[c & 15];
  }
  dst[n] = '\0';
  return n;
}

/* Whether stderr is the journal: decided once, on the first line. */
static pthread_once_t journal_once = PTHREAD_ONCE_INIT;
static int to_journal;

static void detect_journal(void)
{
  to_journal = journal_stream_is(STDERR_FILENO);
}

/*
 * Writes a line's prefix (journal priority, time, level name and a space) at line; returns its
 * length, at most PREFIX_MAX.
 */
#define PREFIX_MAX 64

static size_t format_prefix(char *line, int level)
{
  struct timeval tv;
  struct tm tm;
  size_t n = 0;
  pthread_once(&journal_once, detect_journal);
  if (to_journal) {
    const char *jp = journal_prefix(priorities[level]);
    n = strlen(jp);
    memcpy(line, jp, n);
  }
  gettimeofday(&tv, NULL);
  /* The date and time to the second, formatted once per second per thread: every connection
   * writes a line, and strftime costs more than the rest of the line. */
  static __thread time_t stamp_sec = -1;
  static __thread char stamp[32];
  static __thread size_t stamp_len;
  if (tv.tv_sec != stamp_sec) {
    gmtime_r(&tv.tv_sec, &tm);
    stamp_len = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    stamp_sec = tv.tv_sec;
  }
  memcpy(line + n, stamp, stamp_len);
  n += stamp_len;
  int ms = (int)(tv.tv_usec / 1000);
  line[n++] = '.';
  line[n++] = (char)('0' + ms / 100);
  line[n++] = (char)('0' + ms / 10 % 10);
  line[n++] = (char)('0' + ms % 10);
  line[n++] = 'Z';
  line[n++] = ' ';
  size_t name_len = strlen(names[level]);
  memcpy(line + n, names[level], name_len);
  n += name_len;
  line[n++] = ' ';
  return n;
}

/*
 * The length of the longest prefix of s (len bytes) with nothing to escape. Eight bytes at a
 * time: a word is passed over when none of its bytes is below 0x20, 0x7f or a backslash (the
 * tests can only err towards "maybe", and then the bytes are looked at one by one). Every line
 * goes through here, so this is the log's hot loop. See log.h.
 */
size_t log_clean_prefix(const char *s, size_t len)
{
  const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t x, del, bsl;
    memcpy(&x, s + i, 8);
    del = x ^ (ones * 0x7f);
    bsl = x ^ (ones * '\\');
    if (((x - ones * 0x20) & ~x & highs) | ((del - ones) & ~del & highs) |
        ((bsl - ones) & ~bsl & highs))
      break;
  }
  while (i < len && !needs_escape((unsigned char)s[i]))
    i++;
  return i;
}

/*
 * The message of len bytes at msg (inside a line of LINE_MAX_LEN bytes whose prefix ends at
 * msg, room bytes left from msg on) is escaped in place (log_escape) and the newline put after
 * it; returns the message's new length, newline included. The common case has nothing to escape
 * and costs one scan.
 */
static size_t finish_message(char *msg, size_t len, size_t room)
{
  if (len > room - 2)
    len = room - 2;
  size_t i = log_clean_prefix(msg, len);
  if (i < len) {
    char raw[LINE_MAX_LEN];
    memcpy(raw, msg + i, len - i);
    len = i + log_escape(msg + i, room - i - 1, raw, len - i);
  }
  msg[len++] = '\n';
  return len;
}

/*
 * Formats one line, newline included, into line (LINE_MAX_LEN bytes); returns its length. The
 * message is escaped (log_escape) as a whole, so no text that reaches a log line, admin input
 * included, can end it early or forge another one.
 */
static size_t format_line(char *line, int level, const char *fmt, va_list ap)
{
  size_t n = format_prefix(line, level);
  int m = vsnprintf(line + n, LINE_MAX_LEN - n - 1, fmt, ap);
  if (m < 0)
    m = 0;
  return n + finish_message(line + n, (size_t)m, LINE_MAX_LEN - n);
}

/* ---- the queue and its writer thread ---- */

#define QUEUE_CAP (256 * 1024)
#define REPORT_INTERVAL_S 10
/*
 * Once woken, the writer lets lines gather this long before it writes them, so a busy proxy
 * wakes it (a futex wake, and a context switch on the loop's core) about 50 times a second
 * rather than once every few connections. A queue half full, or stopping, cuts the wait short.
 */
#define LINGER_NS (20 * 1000 * 1000)
#define LINGER_CUT (QUEUE_CAP / 2)

/*
 * Two buffers: loop threads append to fill while the writer writes out; they swap when the
 * writer is done. Everything here is guarded by mu.
 */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t wake; /* the writer: lines queued, drops to report, or stopping */
  pthread_cond_t idle; /* log_drain: the writer has nothing left */
  char *fill, *out;
  size_t fill_len;
  int running, stopping, writing;
  unsigned long long unreported; /* dropped since the last report */
  struct timespec next_report;   /* CLOCK_MONOTONIC; no report before this */
  pthread_t thread;
} q = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_ullong dropped_total;

unsigned long long log_dropped_total(void)
{
  return atomic_load(&dropped_total);
}

/* write(2) straight to stderr, whole; returns 0, or -1 when stderr refused it. */
static int write_all(const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t n = write(STDERR_FILENO, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static unsigned long long count_lines(const char *buf, size_t len)
{
  unsigned long long lines = 0;
  for (size_t i = 0; i < len; i++)
    lines += buf[i] == '\n';
  return lines;
}

static void count_dropped(unsigned long long lines)
{
  atomic_fetch_add(&dropped_total, lines);
  q.unreported += lines;
}

/* Waits, under mu, until LINGER_NS have passed since the writer was woken, or LINGER_CUT. */
static void linger(void)
{
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_nsec += LINGER_NS;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  while (!q.stopping && q.fill_len < LINGER_CUT)
    if (pthread_cond_timedwait(&q.wake, &q.mu, &until) == ETIMEDOUT)
      break;
}

static int report_due(void)
{
  struct timespec now;
  if (!q.unreported)
    return 0;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > q.next_report.tv_sec ||
         (now.tv_sec == q.next_report.tv_sec && now.tv_nsec >= q.next_report.tv_nsec);
}

/* Queues the warning that says how many lines were lost. Under mu. */
static void queue_report(void)
{
  char line[LINE_MAX_LEN];
  size_t n = (size_t)snprintf(line, sizeof(line), "%s",
                             to_journal ? journal_prefix(priorities[LOG_WARN]) : "");
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  n += strftime(line + n, sizeof(line) - n, "%Y-%m-%dT%H:%M:%S", &tm);
  n += (size_t)snprintf(line + n, sizeof(line) - n,
                        ".%03dZ warn log: dropped %llu lines (stderr did not keep up; %llu since "
                        "start)\n",
                        (int)(tv.tv_usec / 1000), q.unreported, log_dropped_total());
  if (q.fill_len + n > QUEUE_CAP)
    return; /* no room yet: reported on a later turn */
  memcpy(q.fill + q.fill_len, line, n);
  q.fill_len += n;
  q.unreported = 0;
  clock_gettime(CLOCK_MONOTONIC, &q.next_report);
  q.next_report.tv_sec += REPORT_INTERVAL_S;
}

static void *writer_main(void *arg)
{
  (void)arg;
  pthread_mutex_lock(&q.mu);
  for (;;) {
    if (report_due())
      queue_report();
    if (q.fill_len == 0) {
      if (q.stopping)
        break;
      pthread_cond_broadcast(&q.idle);
      if (q.unreported)
        pthread_cond_timedwait(&q.wake, &q.mu, &q.next_report);
      else
        pthread_cond_wait(&q.wake, &q.mu);
      continue;
    }
    linger();
    char *buf = q.fill;
    size_t len = q.fill_len;
    q.fill = q.out;
    q.fill_len = 0;
    q.out = buf;
    q.writing = 1;
    pthread_mutex_unlock(&q.mu);
    int rc = write_all(buf, len);
    pthread_mutex_lock(&q.mu);
    q.writing = 0;
    if (rc != 0)
      count_dropped(count_lines(buf, len));
  }
  q.running = 0;
  pthread_cond_broadcast(&q.idle);
  pthread_mutex_unlock(&q.mu);
  return NULL;
}

/* Waits (bounded) until the writer has written everything queued, and ends it. At exit. */
static void log_drain(void)
{
  pthread_mutex_lock(&q.mu);
  if (!q.running) {
    pthread_mutex_unlock(&q.mu);
    return;
  }
  q.stopping = 1;
  pthread_cond_signal(&q.wake);
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += 2; /* a reader that never reads again must not hold the exit forever */
  int rc = 0;
  while (q.running && rc != ETIMEDOUT)
    rc = pthread_cond_timedwait(&q.idle, &q.mu, &until);
  int done = !q.running;
  pthread_mutex_unlock(&q.mu);
  if (done) {
    pthread_join(q.thread, NULL);
    free(q.fill);
    free(q.out);
    q.fill = q.out = NULL;
  }
}

/*
 * A child of fork() has no writer thread: it writes its lines directly (blocking), as before the
 * first line. Its copy of the queue is forgotten; the parent writes those lines.
 */
static void after_fork_in_child(void)
{
  pthread_mutex_init(&q.mu, NULL);
  q.running = 0;
  q.fill_len = 0;
}

static pthread_once_t writer_once = PTHREAD_ONCE_INIT;

static void start_writer(void)
{
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&q.wake, &attr);
  pthread_cond_init(&q.idle, &attr);
  pthread_condattr_destroy(&attr);
  q.fill = malloc(QUEUE_CAP);
  q.out = malloc(QUEUE_CAP);
  if (!q.fill || !q.out)
    goto fail;
  q.running = 1;
  if (pthread_create(&q.thread, NULL, writer_main, NULL) != 0) {
    q.running = 0;
    goto fail;
  }
  pthread_setname_np(q.thread, "mc-proxy-log"); /* for top -H, ps -L and /proc/PID/task */
  atexit(log_drain);
  pthread_atfork(NULL, NULL, after_fork_in_child);
  return;
fail:
  /* Without a writer, lines are written directly (blocking), as a last resort. */
  free(q.fill);
  free(q.out);
  q.fill = q.out = NULL;
}

/* Hands buf (whole lines) to the writer, or drops it when the queue is full. Never blocks on I/O. */
static void enqueue(const char *buf, size_t len)
{
  pthread_once(&writer_once, start_writer);
  pthread_mutex_lock(&q.mu);
  if (!q.running) {
    write_all(buf, len);
  } else if (q.fill_len + len > QUEUE_CAP) {
    count_dropped(count_lines(buf, len));
  } else {
    /* The writer waits for the first line, and while it lingers for LINGER_CUT. */
    size_t before = q.fill_len;
    memcpy(q.fill + q.fill_len, buf, len);
    q.fill_len += len;
    if (before == 0 || (before < LINGER_CUT && q.fill_len >= LINGER_CUT))
      pthread_cond_signal(&q.wake);
  }
  pthread_mutex_unlock(&q.mu);
}

/* ---- the logging functions ---- */

void log_msg(int level, const char *fmt, ...)
{
  if (level < min_level)
    return;
  char line[LINE_MAX_LEN];
  va_list ap;
  va_start(ap, fmt);
  size_t n = format_line(line, level, fmt, ap);
  va_end(ap);
  log_flush(); /* keep this thread's lines in order */
  enqueue(line, n);
}

#define BUFFER_SIZE 16384
static __thread char buffer[BUFFER_SIZE];
static __thread size_t buffered;
static __thread size_t pending_prefix; /* between log_buffered_begin and log_buffered_end */

void log_buffered(int level, const char *fmt, ...)
{
  if (level < min_level)
    return;
  if (buffered > BUFFER_SIZE - LINE_MAX_LEN)
    log_flush();
  va_list ap;
  va_start(ap, fmt);
  buffered += format_line(buffer + buffered, level, fmt, ap);
  va_end(ap);
}

char *log_buffered_begin(int level, size_t *room)
{
  if (level < min_level)
    return NULL;
  if (buffered > BUFFER_SIZE - LINE_MAX_LEN)
    log_flush();
  size_t n = format_prefix(buffer + buffered, level);
  pending_prefix = n;
  /* Two bytes stay free: the newline, and the NUL a formatter may write at the end. */
  *room = LINE_MAX_LEN - n - 2;
  return buffer + buffered + n;
}

void log_buffered_end(size_t len)
{
  size_t n = pending_prefix;
  if (len > LINE_MAX_LEN - n - 2)
    len = LINE_MAX_LEN - n - 2;
  buffered += n + finish_message(buffer + buffered + n, len, LINE_MAX_LEN - n);
}

void log_flush(void)
{
  if (!buffered)
    return;
  enqueue(buffer, buffered);
  buffered = 0;
}

static void on_prepare(uv_prepare_t *h)
{
  (void)h;
  log_flush();
}

void log_flush_each_iteration(uv_loop_t *loop, uv_prepare_t *prepare)
{
  uv_prepare_init(loop, prepare);
  uv_prepare_start(prepare, on_prepare);
  uv_unref((uv_handle_t *)prepare); /* it must not keep the loop alive on its own */
}
