/*
 * geoip: a reference-counted, read-only MaxMind DB file, used by the firewall's country rules.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <maxminddb.h>

#include "mcproxy/error.h"
#include "mcproxy/geoip.h"

struct mcp_geoip_s {
  atomic_uint refs;
  MMDB_s mmdb;
};

int mcp_geoip_open(const char *path, mcp_geoip_t **out, char *err, size_t errlen)
{
  mcp_geoip_t *g;
  int status;

  if (!path || !out)
    return MCP_EINVAL;
  *out = NULL;
  g = calloc(1, sizeof(*g));
  if (!g) {
    if (err && errlen)
      snprintf(err, errlen, "%s: out of memory", path);
    return MCP_ENOMEM;
  }
  status = MMDB_open(path, MMDB_MODE_MMAP, &g->mmdb);
  if (status != MMDB_SUCCESS) {
    int saved = errno;
    if (err && errlen) {
      if (status == MMDB_FILE_OPEN_ERROR || status == MMDB_IO_ERROR)
        snprintf(err, errlen, "%s: %s (%s)", path, MMDB_strerror(status), strerror(saved));
      else
        snprintf(err, errlen, "%s: %s", path, MMDB_strerror(status));
    }
    free(g);
    return MCP_EIO;
  }
  atomic_init(&g->refs, 1);
  *out = g;
  return 0;
}

mcp_geoip_t *mcp_geoip_ref(mcp_geoip_t *g)
{
  if (g)
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
  return g;
}

void mcp_geoip_unref(mcp_geoip_t *g)
{
  if (g && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1) {
    MMDB_close(&g->mmdb);
    free(g);
  }
}

/* Copies a two-letter ISO code from map.iso_code of the entry, if there is one. */
static int entry_country(MMDB_entry_s *entry, const char *map, char cc[3])
{
  MMDB_entry_data_s data;

  if (MMDB_get_value(entry, &data, map, "iso_code", NULL) != MMDB_SUCCESS || !data.has_data ||
      data.type != MMDB_DATA_TYPE_UTF8_STRING || data.data_size != 2)
    return MCP_ENOENT;
  for (int i = 0; i < 2; i++) {
    char c = data.utf8_string[i];
    if (c >= 'a' && c <= 'z')
      c = (char)(c - 'a' + 'A');
    if (c < 'A' || c > 'Z')
      return MCP_ENOENT;
    cc[i] = c;
  }
  cc[2] = '\0';
  return 0;
}

int mcp_geoip_country(const mcp_geoip_t *g, const struct sockaddr *addr, char cc[3])
{
  struct sockaddr_in v4;
  int mmdb_err = 0;

  if (!g || !addr || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
    return MCP_ENOENT;
  /*
   * Look IPv4-mapped clients up as IPv4: that works in IPv4-only databases and in IPv6 ones
   * whether or not they alias ::ffff:0:0/96 to the IPv4 tree.
   */
  if (addr->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      memset(&v4, 0, sizeof(v4));
      v4.sin_family = AF_INET;
      memcpy(&v4.sin_addr, in6->sin6_addr.s6_addr + 12, 4);
      addr = (const struct sockaddr *)&v4;
    }
  }
  MMDB_lookup_result_s res = MMDB_lookup_sockaddr(&g->mmdb, addr, &mmdb_err);
  if (mmdb_err != MMDB_SUCCESS || !res.found_entry)
    return MCP_ENOENT;
  if (entry_country(&res.entry, "country", cc) == 0)
    return 0;
  return entry_country(&res.entry, "registered_country", cc);
}
