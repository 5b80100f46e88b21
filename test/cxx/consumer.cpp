// A C++ program that uses libmcproxy through its installed headers (test/integration/
// test_cxx_consumer.py builds and runs it). Each public header is included on its own and one
// of its functions is called, so a header without extern "C" guards leaves a C++-mangled
// reference the C library cannot satisfy, and the link fails.
//
// usage: consumer DB_PATH    (DB_PATH: a SQLite file to create; prints "ok" on success)
#include <mcproxy/error.h>
#include <mcproxy/firewall.h>
#include <mcproxy/listener.h>
#include <mcproxy/mcproxy.h>
#include <mcproxy/router.h>
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
  mcp_routes_t *rt = mcp_routes_new();
  expect(rt != nullptr, "mcp_routes_new");
  expect(mcp_routes_put(rt, "app.example.com", "127.0.0.1:9443") == MCP_OK, "mcp_routes_put");
  const mcp_backend_t *be = mcp_routes_lookup(rt, "app.example.com", 15);
  expect(be != nullptr && std::string(be->text) == "127.0.0.1:9443", "mcp_routes_lookup");
  mcp_routes_unref(rt);

  // firewall.h
  mcp_firewall_t *fw = mcp_firewall_new();
  expect(fw != nullptr, "mcp_firewall_new");
  expect(mcp_firewall_add(fw, MCP_FW_CIDR, "198.51.100.0/24") == MCP_OK, "mcp_firewall_add");
  expect(mcp_firewall_count(fw) == 1, "mcp_firewall_count");
  mcp_firewall_unref(fw);

  // listener.h
  struct sockaddr_storage ss;
  char text[64];
  expect(mcp_listen_addr_parse("127.0.0.1:8443", &ss, text) == MCP_OK, "mcp_listen_addr_parse");
  expect(ss.ss_family == AF_INET, "listen address family");
  expect(std::strlen(mcp_outcome_name(MCP_OUTCOME_OK)) > 0, "mcp_outcome_name");

  // store.h
  mcp_store_t *st = nullptr;
  char err[256] = "";
  expect(mcp_store_open(argv[1], 1000, &st, err, sizeof err) == MCP_OK,
         std::string("mcp_store_open: ") + err);
  if (st != nullptr) {
    expect(mcp_store_schema_version(st) == MCP_STORE_SCHEMA_VERSION, "schema version");
    mcp_store_close(st);
  }

  if (failures != 0)
    return 1;
  std::puts("ok");
  return 0;
}
