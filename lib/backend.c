/*
 * backend: parsing a route's backend ("IPv4:port", "[IPv6]:port", "hostname:port") into its
 * canonical form, and telling whether a backend would loop back to one of our own listeners.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcproxy/backend.h"
#include "mcproxy/error.h"
#include "mcproxy/hostname.h"

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

/* Whether f is one of this host's interface addresses (getifaddrs). */
static int flat_is_local(const flat_addr_t *f)
{
  struct ifaddrs *ifs, *it;
  int found = 0;

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

int mcp_backend_loops_to(const mcp_backend_t *backend, const struct sockaddr *listen_addr)
{
  flat_addr_t b, l;

  if (!backend || !listen_addr || flatten(&backend->addr.sa, &b) != 0 ||
      flatten(listen_addr, &l) != 0)
    return 0;
  if (b.port != l.port)
    return 0;
  if (flat_same_addr(&b, &l))
    return 1;
  /* Connecting to the unspecified address reaches the local host, so a loopback listener too. */
  if (flat_is_unspecified(&b) && flat_is_loopback(&l))
    return 1;
  if (!flat_is_unspecified(&l))
    return 0;
  /*
   * A wildcard listener. An IPv4 one only accepts IPv4; an IPv6 one is dual-stack on Linux by
   * default and accepts both, so any local backend address on that port reaches it.
   */
  if (l.family == AF_INET && b.family != AF_INET)
    return 0;
  return flat_is_loopback(&b) || flat_is_unspecified(&b) || flat_is_local(&b);
}
