/* log: one line per event on stderr. See log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <errno.h>
#include <pthread.h>
#include <unistd.h>

static int min_level = LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

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

#define LINE_MAX_LEN 2048

/* Formats one line, newline included, into line (LINE_MAX_LEN bytes); returns its length. */
static size_t format_line(char *line, int level, const char *fmt, va_list ap)
{
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  size_t n = strftime(line, LINE_MAX_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
  n += (size_t)snprintf(line + n, LINE_MAX_LEN - n, ".%03dZ %s ", (int)(tv.tv_usec / 1000),
                        names[level]);
  int m = vsnprintf(line + n, LINE_MAX_LEN - n - 1, fmt, ap);
  if (m < 0)
    m = 0;
  n += (size_t)m;
  if (n > LINE_MAX_LEN - 2)
    n = LINE_MAX_LEN - 2;
  line[n++] = '\n';
  return n;
}

/*
 * Serialises writes to stderr. A write larger than PIPE_BUF to a pipe or a socket (journald) is
 * not atomic, so without it a flush of one loop could be split by another thread's lines.
 */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

/* write(2) straight to stderr, whole, under write_lock. */
static void write_all(const char *buf, size_t len)
{
  pthread_mutex_lock(&write_lock);
  while (len > 0) {
    ssize_t n = write(STDERR_FILENO, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    buf += n;
    len -= (size_t)n;
  }
  pthread_mutex_unlock(&write_lock);
}

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
  write_all(line, n);
}

#define BUFFER_SIZE 16384
static __thread char buffer[BUFFER_SIZE];
static __thread size_t buffered;

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

void log_flush(void)
{
  if (!buffered)
    return;
  write_all(buffer, buffered);
  buffered = 0;
}

static void on_prepare(uv_prepare_t *h)
{
  log_flush();
}

void log_flush_each_iteration(uv_loop_t *loop, uv_prepare_t *prepare)
{
  uv_prepare_init(loop, prepare);
  uv_prepare_start(prepare, on_prepare);
  uv_unref((uv_handle_t *)prepare); /* it must not keep the loop alive on its own */
}
