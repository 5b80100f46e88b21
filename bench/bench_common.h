/* Helpers shared by the benchmark's load generator and backend.
 *
 * The bench tools are deliberately independent of libmcproxy: they talk to whichever proxy is
 * under test only through sockets, use plain epoll, and read the kernel's accounting of other
 * processes from /proc. Everything here is static so each tool is one translation unit plus
 * this header. */
#ifndef MCP_BENCH_COMMON_H
#define MCP_BENCH_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The largest ClientHello the tools accept: 16 KiB of handshake message plus record headers. */
#define BENCH_HELLO_MAX (16384 + 5 * 64)

/* Size of the repeating pattern the backend streams in throughput mode; the generator checks
 * every byte it receives against the same pattern, so a proxy that drops, duplicates or reorders
 * bytes is caught instead of producing a fast result. */
#define BENCH_PATTERN_PERIOD 65536u

/* The fixed first bytes of every reply, so a reply from something other than the bench backend
 * (a misrouted connection reaching another server) is recognised. */
#define BENCH_REPLY_MAGIC "MCPB-REPLY\n"

static inline uint64_t bench_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Byte i of the stream pattern. Not a constant byte, so an offset error shows up. */
static inline uint8_t bench_pattern_byte(uint64_t i)
{
  uint32_t x = (uint32_t)(i % BENCH_PATTERN_PERIOD);
  return (uint8_t)((x * 131u) ^ (x >> 8) ^ 0x5a);
}

/* Fills buf[0..len) with the pattern starting at stream offset 0 (callers index into it with
 * offset % BENCH_PATTERN_PERIOD, so len must be at least PERIOD plus the largest chunk). */
static inline void bench_pattern_fill(uint8_t *buf, size_t len)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = bench_pattern_byte(i);
}

/* The reply of rate/idle mode: the magic, then pattern bytes. */
static inline void bench_reply_fill(uint8_t *buf, size_t len)
{
  size_t m = strlen(BENCH_REPLY_MAGIC);
  for (size_t i = 0; i < len; i++)
    buf[i] = i < m ? (uint8_t)BENCH_REPLY_MAGIC[i] : bench_pattern_byte(i);
}

/* Parses "A.B.C.D:PORT" (IPv4 only: the bench runs on 127.0.0.0/8). Returns 0 or -1. */
static inline int bench_parse_addr(const char *s, struct sockaddr_in *out)
{
  char host[64];
  const char *colon = strrchr(s, ':');
  if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
    return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end != '\0' || port <= 0 || port > 65535)
    return -1;
  memset(out, 0, sizeof(*out));
  out->sin_family = AF_INET;
  out->sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
    return -1;
  return 0;
}

/* Reads a whole small file into a malloc'd buffer. Returns its length, or -1. */
static inline ssize_t bench_load_file(const char *path, uint8_t **out, size_t max)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0 || (size_t)st.st_size > max) {
    close(fd);
    return -1;
  }
  uint8_t *buf = malloc((size_t)st.st_size);
  size_t got = 0;
  while (buf != NULL && got < (size_t)st.st_size) {
    ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
    if (n <= 0) {
      free(buf);
      buf = NULL;
      break;
    }
    got += (size_t)n;
  }
  close(fd);
  if (buf == NULL)
    return -1;
  *out = buf;
  return (ssize_t)got;
}

/* Closing with SO_LINGER {1, 0} sends a RST and leaves no TIME_WAIT socket behind; load tests
 * open tens of thousands of short connections and would otherwise exhaust the TIME_WAIT table. */
static inline void bench_close_reset(int fd)
{
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(fd);
}

/* utime + stime of a process, in clock ticks, from /proc/PID/stat (the kernel's own accounting;
 * it covers every thread of the process). Returns -1 if the process is gone. */
static inline long long bench_proc_cpu_ticks(int pid)
{
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  /* The command name may contain spaces and parentheses; fields resume after the last ')'. */
  char *p = strrchr(buf, ')');
  if (p == NULL)
    return -1;
  p++;
  /* After ')' come field 3 (state) ... field 14 (utime), field 15 (stime). */
  unsigned long long ut = 0, st = 0;
  int field = 2;
  char *save = NULL;
  for (char *tok = strtok_r(p, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
    field++;
    if (field == 14)
      ut = strtoull(tok, NULL, 10);
    else if (field == 15) {
      st = strtoull(tok, NULL, 10);
      return (long long)(ut + st);
    }
  }
  return -1;
}

/* VmRSS of a process in KiB from /proc/PID/status, or -1. */
static inline long long bench_proc_rss_kib(int pid)
{
  char path[64], buf[4096];
  snprintf(path, sizeof(path), "/proc/%d/status", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  const char *p = strstr(buf, "\nVmRSS:");
  if (p == NULL)
    return -1;
  return strtoll(p + 7, NULL, 10);
}

#endif
