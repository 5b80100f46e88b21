/*
 * backend: parsing a route's backend ("IPv4:port", "[IPv6]:port", "hostname:port") into its
 * canonical form, and telling whether a backend would loop back to one of our own listeners.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend_internal.h"
#include "mcproxy/backend.h"
#include "mcproxy/error.h"
#include "mcproxy/hostname.h"
#include "resolver.h"

/*
 * Parses a port of 1-5 decimal digits with value 1-65535. A sign, a leading zero, spaces or any
 * other byte is rejected: ports are written one way only, so the canonical text is unambiguous.
 */
static int parse_port(const char *s, size_t len, uint16_t *port)
{
  uint32_t v = 0;

  if (len == 0 || len > 5 || s[0] == '0')
    return MCP_EINVAL;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return MCP_EINVAL;
    v = v * 10 + (uint32_t)(s[i] - '0');
  }
  if (v < 1 || v > 65535)
    return MCP_EINVAL;
  *port = (uint16_t)v;
  return 0;
}

/*
 * A hostname backend is resolved with getaddrinfo() at connect time, and glibc's resolver first
 * tries inet_aton(), which accepts "127.1", "2130706433" or "0x7f.1" as IP addresses. Such a
 * name would slip past the loop check (hostnames are not resolved there), so numeric-looking
 * names are refused: anything inet_aton() accepts, and any name whose last label is all digits
 * (no top-level domain is numeric, and "1.2.3.256" is a typo, not a host).
 */
static int hostname_is_numeric(const char *host, size_t len)
{
  struct in_addr tmp;
  size_t i = len;

  if (inet_aton(host, &tmp))
    return 1;
  while (i > 0 && host[i - 1] != '.')
    i--;
  for (; i < len; i++)
    if (host[i] < '0' || host[i] > '9')
      return 0;
  return 1;
}

int mcp_backend_parse(const char *in, mcp_backend_t *out)
{
  mcp_backend_t b;
  const char *colon;
  size_t len, hlen;
  char host[MCP_HOSTNAME_MAX + 2];
  char name[MCP_HOSTNAME_MAX + 1];
  char ip[INET6_ADDRSTRLEN];

  if (!in || !out)
    return MCP_EINVAL;
  len = strnlen(in, MCP_BACKEND_MAX);
  if (len == 0 || len >= MCP_BACKEND_MAX)
    return MCP_EINVAL;
  colon = memrchr(in, ':', len);
  if (!colon)
    return MCP_EINVAL;
  memset(&b, 0, sizeof(b));
  if (parse_port(colon + 1, len - (size_t)(colon + 1 - in), &b.port) != 0)
    return MCP_EINVAL;
  hlen = (size_t)(colon - in);

  if (hlen > 0 && in[0] == '[') {
    /* "[v6]:port": the bracket must close right before the port's colon. */
    if (hlen < 3 || in[hlen - 1] != ']' || hlen - 2 >= sizeof(ip))
      return MCP_EINVAL;
    size_t alen = hlen - 2;
    memcpy(ip, in + 1, alen);
    ip[alen] = '\0';
    if (inet_pton(AF_INET6, ip, &b.addr.in6.sin6_addr) != 1)
      return MCP_EINVAL;
    b.addr.in6.sin6_family = AF_INET6;
    b.addr.in6.sin6_port = htons(b.port);
    inet_ntop(AF_INET6, &b.addr.in6.sin6_addr, ip, sizeof(ip));
    snprintf(b.text, sizeof(b.text), "[%s]:%u", ip, (unsigned)b.port);
    *out = b;
    return 0;
  }

  /* A colon left in the host part is an IPv6 address without brackets, or junk. */
  if (hlen == 0 || hlen > MCP_HOSTNAME_MAX + 1 || memchr(in, ':', hlen))
    return MCP_EINVAL;
  memcpy(host, in, hlen);
  host[hlen] = '\0';
  if (inet_pton(AF_INET, host, &b.addr.in.sin_addr) == 1) {
    b.addr.in.sin_family = AF_INET;
    b.addr.in.sin_port = htons(b.port);
    inet_ntop(AF_INET, &b.addr.in.sin_addr, ip, sizeof(ip));
    snprintf(b.text, sizeof(b.text), "%s:%u", ip, (unsigned)b.port);
    *out = b;
    return 0;
  }

  int n = mcp_hostname_normalize(host, hlen, name);
  if (n < 0 || hostname_is_numeric(name, (size_t)n))
    return MCP_EINVAL;
  b.addr.sa.sa_family = AF_UNSPEC;
  b.host_len = (uint16_t)n;
  snprintf(b.text, sizeof(b.text), "%s:%u", name, (unsigned)b.port);
  *out = b;
  return 0;
}

/* An address reduced for comparison: IPv4-mapped IPv6 becomes IPv4. */
typedef struct {
  int family; /* AF_INET or AF_INET6 */
  uint8_t a[16];
  uint16_t port;
} flat_addr_t;

static int flatten(const struct sockaddr *sa, flat_addr_t *f)
{
  memset(f, 0, sizeof(*f));
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    f->family = AF_INET;
    memcpy(f->a, &in->sin_addr, 4);
    f->port = ntohs(in->sin_port);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    f->port = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      f->family = AF_INET;
      memcpy(f->a, in6->sin6_addr.s6_addr + 12, 4);
    } else {
      f->family = AF_INET6;
      memcpy(f->a, &in6->sin6_addr, 16);
    }
    return 0;
  }
  return -1;
}

static int flat_is_unspecified(const flat_addr_t *f)
{
  static const uint8_t zero[16];
  return memcmp(f->a, zero, f->family == AF_INET ? 4 : 16) == 0;
}

static int flat_is_loopback(const flat_addr_t *f)
{
  static const uint8_t v6_loopback[16] = {[15] = 1};
  if (f->family == AF_INET)
    return f->a[0] == 127;
  return memcmp(f->a, v6_loopback, 16) == 0;
}

static int flat_same_addr(const flat_addr_t *x, const flat_addr_t *y)
{
  return x->family == y->family && memcmp(x->a, y->a, x->family == AF_INET ? 4 : 16) == 0;
}

/*
 * Whether f is one of this host's interface addresses (getifaddrs). With cached set, the
 * answer comes from a copy refreshed at most every LOCAL_REFRESH_MS (the connect-time check
 * runs per connection and must not ask the kernel each time); else it asks now.
 */
#define LOCAL_REFRESH_MS 10000
#define LOCAL_MAX 64

static struct {
  pthread_mutex_t mu;
  uint64_t when_ms;
  int n;
  flat_addr_t a[LOCAL_MAX];
} local_cache = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int flat_is_local(const flat_addr_t *f, int cached)
{
  struct ifaddrs *ifs, *it;
  int found = 0;

  if (cached) {
    pthread_mutex_lock(&local_cache.mu);
    uint64_t now = mono_ms();
    if (local_cache.when_ms == 0 || now - local_cache.when_ms >= LOCAL_REFRESH_MS) {
      local_cache.n = 0;
      if (getifaddrs(&ifs) == 0) {
        for (it = ifs; it && local_cache.n < LOCAL_MAX; it = it->ifa_next)
          if (it->ifa_addr && flatten(it->ifa_addr, &local_cache.a[local_cache.n]) == 0)
            local_cache.n++;
        freeifaddrs(ifs);
      }
      local_cache.when_ms = now ? now : 1;
    }
    for (int i = 0; i < local_cache.n && !found; i++)
      found = flat_same_addr(&local_cache.a[i], f);
    pthread_mutex_unlock(&local_cache.mu);
    return found;
  }
  if (getifaddrs(&ifs) != 0)
    return 0;
  for (it = ifs; it && !found; it = it->ifa_next) {
    flat_addr_t ia;
    if (!it->ifa_addr || flatten(it->ifa_addr, &ia) != 0)
      continue;
    found = flat_same_addr(&ia, f);
  }
  freeifaddrs(ifs);
  return found;
}

static int flat_loops_to(const flat_addr_t *b, const flat_addr_t *l, int cached)
{
  if (b->port != l->port)
    return 0;
  if (flat_same_addr(b, l))
    return 1;
  /* Connecting to the unspecified address reaches the local host, so a loopback listener too. */
  if (flat_is_unspecified(b) && flat_is_loopback(l))
    return 1;
  if (!flat_is_unspecified(l))
    return 0;
  /*
   * A wildcard listener. An IPv4 one only accepts IPv4; an IPv6 one is dual-stack on Linux by
   * default and accepts both, so any local backend address on that port reaches it.
   */
  if (l->family == AF_INET && b->family != AF_INET)
    return 0;
  return flat_is_loopback(b) || flat_is_unspecified(b) || flat_is_local(b, cached);
}

int mcp_backend_loops_to(const mcp_backend_t *backend, const struct sockaddr *listen_addr)
{
  flat_addr_t b, l;

  if (!backend || !listen_addr || flatten(&backend->addr.sa, &b) != 0 ||
      flatten(listen_addr, &l) != 0)
    return 0;
  return flat_loops_to(&b, &l, 0);
}

/* ---- this process's listen addresses ---- */

/*
 * Every started listener's bound address, with a count (listeners of one address on several
 * loops share an entry). Any thread, under a read-write lock: every backend connect reads it.
 */
typedef struct {
  flat_addr_t addr;
  int count;
} self_entry_t;

static struct {
  pthread_rwlock_t lock;
  self_entry_t *e;
  int n, cap;
} self = {.lock = PTHREAD_RWLOCK_INITIALIZER};

static int fd_flat(int fd, flat_addr_t *f)
{
  struct sockaddr_storage ss = {0};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return -1;
  return flatten((struct sockaddr *)&ss, f);
}

static int self_find(const flat_addr_t *f)
{
  for (int i = 0; i < self.n; i++)
    if (self.e[i].addr.port == f->port && flat_same_addr(&self.e[i].addr, f))
      return i;
  return -1;
}

void mcp__backend_self_add(int fd)
{
  flat_addr_t f;
  if (fd_flat(fd, &f) != 0)
    return;
  pthread_rwlock_wrlock(&self.lock);
  int i = self_find(&f);
  if (i >= 0) {
    self.e[i].count++;
  } else {
    if (self.n == self.cap) {
      int cap = self.cap ? 2 * self.cap : 8;
      self_entry_t *e = reallocarray(self.e, (size_t)cap, sizeof(*e));
      if (!e) {
        pthread_rwlock_unlock(&self.lock);
        return;
      }
      self.e = e;
      self.cap = cap;
    }
    self.e[self.n].addr = f;
    self.e[self.n].count = 1;
    self.n++;
  }
  pthread_rwlock_unlock(&self.lock);
}

void mcp__backend_self_remove(int fd)
{
  flat_addr_t f;
  if (fd_flat(fd, &f) != 0)
    return;
  pthread_rwlock_wrlock(&self.lock);
  int i = self_find(&f);
  if (i >= 0 && --self.e[i].count == 0)
    self.e[i] = self.e[--self.n];
  pthread_rwlock_unlock(&self.lock);
}

int mcp_backend_is_own_listener(const struct sockaddr *addr)
{
  flat_addr_t b;
  int found = 0;
  if (!addr || flatten(addr, &b) != 0)
    return 0;
  pthread_rwlock_rdlock(&self.lock);
  for (int i = 0; i < self.n && !found; i++)
    found = flat_loops_to(&b, &self.e[i].addr, 1);
  pthread_rwlock_unlock(&self.lock);
  return found;
}

/* ---- the loop check when a route is added ---- */

/* "localhost" and any name under it mean the loopback addresses (RFC 6761), whatever DNS says. */
static int name_is_localhost(const char *name, size_t len)
{
  static const char lh[] = "localhost";
  const size_t n = sizeof(lh) - 1;
  if (len == n)
    return memcmp(name, lh, n) == 0;
  return len > n && name[len - n - 1] == '.' && memcmp(name + len - n, lh, n) == 0;
}

static int any_loops(const struct sockaddr *a, const struct sockaddr *const *listen, size_t n)
{
  flat_addr_t b, l;
  if (flatten(a, &b) != 0)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (listen[i] && flatten(listen[i], &l) == 0 && flat_loops_to(&b, &l, 0))
      return 1;
  return 0;
}

int mcp_backend_check_loop(const mcp_backend_t *backend, const struct sockaddr *const *listen_addrs,
                           size_t n, unsigned timeout_ms)
{
  if (!backend || (!listen_addrs && n > 0))
    return MCP_EINVAL;
  if (backend->addr.sa.sa_family != AF_UNSPEC)
    return any_loops(&backend->addr.sa, listen_addrs, n) ? MCP_ELOOP : 0;

  char name[MCP_HOSTNAME_MAX + 1];
  memcpy(name, backend->text, backend->host_len);
  name[backend->host_len] = '\0';
  struct sockaddr_in6 a[MCP__RESOLVE_MAX_ADDRS + 2];
  int count = 0;
  if (name_is_localhost(name, backend->host_len)) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a[count++];
    memset(a, 0, 2 * sizeof(a[0]));
    v4->sin_family = AF_INET;
    v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a[count].sin6_family = AF_INET6;
    a[count++].sin6_addr = in6addr_loopback;
  }
  int got = 0;
  if (mcp__resolve_wait(name, timeout_ms ? timeout_ms : MCP_BACKEND_CHECK_TIMEOUT_MS, a + count,
                        MCP__RESOLVE_MAX_ADDRS, &got) == 0)
    count += got;
  for (int i = 0; i < count; i++) {
    a[i].sin6_port = htons(backend->port); /* sin_port sits at the same offset */
    if (any_loops((const struct sockaddr *)&a[i], listen_addrs, n))
      return MCP_ELOOP;
  }
  return 0;
}
