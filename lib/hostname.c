/*
 * hostname: the DNS hostname rule (see include/mcproxy/hostname.h).
 *
 * A label is 1-63 bytes of [A-Za-z0-9-] that neither starts nor ends with a hyphen ("xn--"
 * inside a label is fine). Refusing edge hyphens matters beyond tidiness: a name that one side
 * (the proxy) accepts and another (a backend's certificate matcher, a resolver) refuses is a
 * name the two can be steered apart on, so mc-proxy holds the strict form everywhere.
 */
#include <string.h>

#include "mcproxy/error.h"
#include "mcproxy/hostname.h"

#define LABEL_MAX 63

static int is_name_byte(unsigned char c)
{
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

int mcp_hostname_normalize(const char *in, size_t len, char *out)
{
  size_t i, label = 0;

  if (len > 0 && in[len - 1] == '.')
    len--;
  if (len == 0 || len > MCP_HOSTNAME_MAX)
    return MCP_EINVAL;

  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)in[i];

    if (c == '.') {
      /* An empty label ("a..b", ".a"), or one that ends with a hyphen. */
      if (label == 0 || out[i - 1] == '-')
        return MCP_EINVAL;
      label = 0;
      out[i] = '.';
      continue;
    }
    if (c >= 'A' && c <= 'Z')
      c = (unsigned char)(c - 'A' + 'a');
    if (!is_name_byte(c))
      return MCP_EINVAL;
    if (label == 0 && c == '-')
      return MCP_EINVAL;
    if (++label > LABEL_MAX)
      return MCP_EINVAL;
    out[i] = (char)c;
  }
  /* The trailing dot was dropped above, so an empty last label means "a..": refused. */
  if (label == 0 || out[len - 1] == '-')
    return MCP_EINVAL;
  out[len] = '\0';
  return (int)len;
}

int mcp_hostname_normalize_pattern(const char *in, size_t len, char *out)
{
  size_t rest;
  int n;

  if (len == 0 || in[0] != '*')
    return mcp_hostname_normalize(in, len, out);
  /* "*" must be a whole label followed by at least one more: "*.example.com". */
  if (len < 3 || in[1] != '.')
    return MCP_EINVAL;
  /* The suffix must leave room for "*." within MCP_HOSTNAME_MAX (and within out). */
  rest = len - 2;
  if (in[len - 1] == '.')
    rest--;
  if (rest > MCP_HOSTNAME_MAX - 2)
    return MCP_EINVAL;
  n = mcp_hostname_normalize(in + 2, len - 2, out + 2);
  if (n < 0)
    return MCP_EINVAL;
  out[0] = '*';
  out[1] = '.';
  return n + 2;
}
