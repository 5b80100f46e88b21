#include <uv.h>

#include "mcproxy/mcproxy.h"

#ifndef MCP_VERSION
#define MCP_VERSION "0.0.0"
#endif

const char *mcp_version(void)
{
  return MCP_VERSION;
}

const char *mcp_strerror(int code)
{
  switch (code) {
  case MCP_OK:
    return "success";
  case MCP_EINVAL:
    return "invalid argument";
  case MCP_ENOENT:
    return "not found";
  case MCP_EEXIST:
    return "already exists";
  case MCP_ENOMEM:
    return "out of memory";
  case MCP_EBUSY:
    return "database is busy or locked";
  case MCP_EIO:
    return "storage or file error";
  case MCP_ELOOP:
    return "backend is one of this proxy's own listeners";
  case MCP_ERANGE:
    return "value out of range";
  case MCP_ENEWER:
    return "database was written by a newer mc-proxy";
  case MCP_ENOGEOIP:
    return "no GeoIP database is loaded";
  case MCP_EPROXY_NOTPROXY:
    return "not a PROXY protocol header";
  case MCP_EPROXY_MALFORMED:
    return "malformed PROXY protocol header";
  case MCP_EPROXY_FAMILY:
    return "PROXY protocol header with an unsupported protocol or address family";
  case MCP_EPROXY_TOOBIG:
    return "PROXY protocol header too long";
  case MCP_ERATELIMITED:
    return "client over its rate or connection limit";
  default:
    if (code <= MCP_SNI_ENOTTLS && code >= MCP_SNI_ETOOBIG)
      return mcp_sni_strerror(code);
    return uv_strerror(code);
  }
}
