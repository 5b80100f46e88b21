// A C++ program that uses libmcproxy through its installed headers (test/integration/
// test_cxx_consumer.py builds and runs it). Each public header is included on its own and one
// of its functions is called, so a header without extern "C" guards leaves a C++-mangled
// reference the C library cannot satisfy, and the link fails.
//
// usage: consumer DB_PATH    (DB_PATH: a SQLite file to create; prints "ok" on success)
#include <mcproxy/backend.h>
#include <mcproxy/client_limits.h>
#include <mcproxy/conn.h>
#include <mcproxy/error.h>
#include <mcproxy/firewall.h>
#include <mcproxy/geoip.h>
#include <mcproxy/hash.h>
#include <mcproxy/hostname.h>
#include <mcproxy/listener.h>
#include <mcproxy/mcproxy.h>
#include <mcproxy/proxy_protocol.h>
#include <mcproxy/routes.h>
#include <mcproxy/sni.h>
#include <mcproxy/store.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

int failures = 0;

void expect(bool ok, const std::string &what)
{
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    failures++;
  }
}

} // namespace

int main(int argc, char **argv)
{
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer DB_PATH\n");
    return 2;
  }
  // The headers' rule: the library never handles SIGPIPE, the program does.
  std::signal(SIGPIPE, SIG_IGN);

  // mcproxy.h
  std::string version = mcp_version();
  std::printf("version %s\n", version.c_str());
  expect(!version.empty(), "mcp_version");

  // error.h
  expect(std::strlen(mcp_strerror(MCP_ENOENT)) > 0, "mcp_strerror");

  // sni.h
  char host[MCP_HOSTNAME_MAX + 1];
  const char *mixed = "App.Example.COM.";
  int n = mcp_hostname_normalize(mixed, std::strlen(mixed), host);
  expect(n > 0 && std::string(host) == "app.example.com", "mcp_hostname_normalize");

  // router.h
  mcp_routes_t *rt = nullptr;
  expect(mcp_routes_new(&rt) == MCP_OK && rt != nullptr, "mcp_routes_new");
  expect(mcp_routes_put(rt, "app.example.com", "127.0.0.1:9443") == MCP_OK, "mcp_routes_put");
  const mcp_backend_t *be = mcp_routes_lookup(rt, "app.example.com", 15);
  expect(be != nullptr && std::string(be->text) == "127.0.0.1:9443", "mcp_routes_lookup");
  mcp_routes_unref(rt);

  // firewall.h
  mcp_firewall_t *fw = nullptr;
  expect(mcp_firewall_new(&fw) == MCP_OK && fw != nullptr, "mcp_firewall_new");
  expect(mcp_firewall_add(fw, MCP_FIREWALL_CIDR, "198.51.100.0/24") == MCP_OK, "mcp_firewall_add");
  expect(mcp_firewall_count(fw) == 1, "mcp_firewall_count");
  mcp_firewall_unref(fw);

  // listener.h
  struct sockaddr_storage ss;
  char text[64];
  expect(mcp_listener_addr_parse("127.0.0.1:8443", &ss, text) == MCP_OK, "mcp_listener_addr_parse");
  expect(ss.ss_family == AF_INET, "listen address family");
  expect(std::strlen(mcp_conn_outcome_name(MCP_CONN_OUTCOME_OK)) > 0, "mcp_conn_outcome_name");

  // sni.h
  expect(std::strlen(mcp_sni_strerror(MCP_SNI_ENOTTLS)) > 0, "mcp_sni_strerror");

  // backend.h, hash.h, geoip.h
  mcp_backend_t backend;
  expect(mcp_backend_parse("[::1]:9443", &backend) == MCP_OK, "mcp_backend_parse");
  expect(mcp_hash_fnv1a(MCP_HASH_FNV1A_INIT, "a", 1) != MCP_HASH_FNV1A_INIT, "mcp_hash_fnv1a");
  mcp_geoip_t *geo = nullptr;
  char gerr[256];
  expect(mcp_geoip_open("/nonexistent.mmdb", &geo, gerr, sizeof gerr) != MCP_OK,
         "mcp_geoip_open refuses a missing file");

  // proxy_protocol.h, client_limits.h
  struct sockaddr_in src = {}, dst = {};
  src.sin_family = dst.sin_family = AF_INET;
  inet_pton(AF_INET, "192.0.2.1", &src.sin_addr);
  inet_pton(AF_INET, "192.0.2.2", &dst.sin_addr);
  src.sin_port = htons(40000);
  dst.sin_port = htons(443);
  uint8_t hdr[MCP_PROXY_PROTOCOL_WRITE_MAX];
  int hlen = mcp_proxy_protocol_write_v2(hdr, sizeof hdr, (const struct sockaddr *)&src,
                                         (const struct sockaddr *)&dst);
  mcp_proxy_protocol_t parsed;
  expect(hlen > 0 && mcp_proxy_protocol_parse(hdr, (size_t)hlen, &parsed) == hlen,
         "mcp_proxy_protocol_write_v2/parse");
  mcp_client_limits_key_t key;
  expect(mcp_client_limits_key((const struct sockaddr *)&src, &key) == MCP_OK,
         "mcp_client_limits_key");

  // store.h
  mcp_store_t *st = nullptr;
  char err[256] = "";
  expect(mcp_store_open(argv[1], 1000, &st, err, sizeof err) == MCP_OK,
         std::string("mcp_store_open: ") + err);
  if (st != nullptr) {
    int version = 0;
    expect(mcp_store_schema_version(st, &version) == MCP_OK &&
               version == MCP_STORE_SCHEMA_VERSION,
           "schema version");
    mcp_store_close(st);
  }

  if (failures != 0)
    return 1;
  std::puts("ok");
  return 0;
}
