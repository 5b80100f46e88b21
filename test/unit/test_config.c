/*
 * Unit tests for the executable's config parser (cli/config.c): real files in a fresh temporary
 * directory per test, loaded with config_load(). Every error must name the file and the line
 * ("FILE:LINE: problem"); the good file must come back with every value in place.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "mcproxy/listener.h"
#include "workers.h"

typedef struct ctx_s {
  char dir[64];
  char path[128];
  config_t cfg;
  char err[1024];
} ctx_t;

static int setup(void **state)
{
  ctx_t *t = calloc(1, sizeof(*t));
  if (!t)
    return -1;
  snprintf(t->dir, sizeof(t->dir), "/tmp/mcp-config-test-XXXXXX");
  if (!mkdtemp(t->dir)) {
    free(t);
    return -1;
  }
  snprintf(t->path, sizeof(t->path), "%s/mc-proxy.ini", t->dir);
  *state = t;
  return 0;
}

static int teardown(void **state)
{
  ctx_t *t = *state;
  config_free(&t->cfg);
  unlink(t->path);
  rmdir(t->dir);
  free(t);
  return 0;
}

/* Writes text as the config file and loads it; returns config_load's result. */
static int load(ctx_t *t, const char *text)
{
  FILE *f = fopen(t->path, "w");
  assert_non_null(f);
  assert_int_equal(fputs(text, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
  config_free(&t->cfg);
  return config_load(t->path, &t->cfg, t->err, sizeof(t->err));
}

/* Loads text, which must fail on line (0: no line) with a message containing what. */
static void expect_error(ctx_t *t, const char *text, int line, const char *what)
{
  assert_int_equal(load(t, text), -1);
  char prefix[256];
  if (line > 0)
    snprintf(prefix, sizeof(prefix), "%s:%d: ", t->path, line);
  else
    snprintf(prefix, sizeof(prefix), "%s: ", t->path);
  if (strncmp(t->err, prefix, strlen(prefix)) != 0 || !strstr(t->err, what))
    fail_msg("want \"%s...%s\", got \"%s\"", prefix, what, t->err);
  /* A failed load leaves nothing behind to free. */
  assert_null(t->cfg.listeners);
  assert_int_equal(t->cfg.nlisteners, 0);
}

#define DB "[database]\npath = state.db\n"

static void good_config_loads_every_value(void **state)
{
  ctx_t *t = *state;
  int rc = load(t, "; a comment\n"
                   "[database]\n"
                   "path = state.db\n"
                   "[proxy]\n"
                   "connect_timeout = 250ms\n"
                   "idle_timeout = 2m\n"
                   "handshake_timeout = 3\n"
                   "shutdown_timeout = 1h\n"
                   "workers = 4\n"
                   "relay = copy\n"
                   "log_level = warn\n"
                   "[grpc]\n"
                   "addr = unix:admin.sock\n"
                   "socket_mode = 0660\n"
                   "[firewall]\n"
                   "block_ip = 192.0.2.1\n"
                   "block_cidr = 10.0.0.0/8\n"
                   "[listener \"127.0.0.1:8443\"]\n"
                   "max_connections = 100\n"
                   "route = App.Example.COM 127.0.0.1:9443\n"
                   "route = b.example [::1]:9444\n"
                   "[listener \"[::1]:8444\"]\n");
  if (rc != 0)
    fail_msg("%s", t->err);
  config_t *c = &t->cfg;
  /* mkdtemp's directory may sit behind a symbolic link; compare the file names. */
  assert_non_null(strstr(c->db_path, "/state.db"));
  assert_int_equal(c->db_path[0], '/');
  assert_int_equal(c->connect_timeout_ms, 250);
  assert_int_equal(c->idle_timeout_ms, 120000);
  assert_int_equal(c->handshake_timeout_ms, 3000);
  assert_int_equal(c->shutdown_timeout_ms, 3600000);
  assert_int_equal(c->workers, 4);
  assert_int_equal(c->copy_relay, 1);
  assert_int_equal(c->log_level, LOG_WARN);
  assert_int_equal(c->has_grpc, 1);
  assert_int_equal(c->grpc_is_unix, 1);
  assert_int_equal(strncmp(c->grpc_addr, "unix:/", 6), 0);
  assert_non_null(strstr(c->grpc_addr, "/admin.sock"));
  assert_int_equal(c->socket_mode, 0660);
  assert_int_equal(c->nrules, 2);
  assert_string_equal(c->rules[0].value, "192.0.2.1");
  assert_int_equal(c->rules[0].line, 16);
  assert_string_equal(c->rules[1].value, "10.0.0.0/8");
  assert_int_equal(c->nlisteners, 2);
  assert_string_equal(c->listeners[0].addr, "127.0.0.1:8443");
  assert_int_equal(c->listeners[0].max_connections, 100);
  assert_int_equal(c->listeners[0].nroutes, 2);
  assert_string_equal(c->listeners[0].routes[0].hostname, "app.example.com");
  assert_string_equal(c->listeners[0].routes[0].backend, "127.0.0.1:9443");
  assert_int_equal(c->listeners[0].routes[0].line, 20);
  assert_string_equal(c->listeners[0].routes[1].backend, "[::1]:9444");
  assert_string_equal(c->listeners[1].addr, "[::1]:8444");
  assert_int_equal(c->listeners[1].nroutes, 0);
}

static void defaults_apply_when_keys_are_absent(void **state)
{
  ctx_t *t = *state;
  if (load(t, DB) != 0)
    fail_msg("%s", t->err);
  assert_int_equal(t->cfg.connect_timeout_ms, 5000);
  assert_int_equal(t->cfg.idle_timeout_ms, 300000);
  assert_int_equal(t->cfg.handshake_timeout_ms, 10000);
  assert_int_equal(t->cfg.shutdown_timeout_ms, 30000);
  assert_int_equal(t->cfg.workers, 0);
  assert_int_equal(t->cfg.copy_relay, 0);
  assert_int_equal(t->cfg.log_level, LOG_INFO);
  assert_int_equal(t->cfg.has_grpc, 0);
  assert_int_equal(t->cfg.nlisteners, 0);
}

static void free_seed_keeps_settings(void **state)
{
  ctx_t *t = *state;
  if (load(t, DB "[proxy]\nworkers = 2\n[listener \"127.0.0.1:1\"]\nroute = a.example "
                 "127.0.0.1:2\n") != 0)
    fail_msg("%s", t->err);
  config_free_seed(&t->cfg);
  assert_null(t->cfg.listeners);
  assert_int_equal(t->cfg.nlisteners, 0);
  assert_int_equal(t->cfg.workers, 2);
}

static void durations_parse_every_unit(void **state)
{
  (void)state;
  uint64_t ms = 0;
  assert_int_equal(config_parse_duration("250ms", &ms), 0);
  assert_int_equal(ms, 250);
  assert_int_equal(config_parse_duration("5s", &ms), 0);
  assert_int_equal(ms, 5000);
  assert_int_equal(config_parse_duration("7", &ms), 0);
  assert_int_equal(ms, 7000);
  assert_int_equal(config_parse_duration("2m", &ms), 0);
  assert_int_equal(ms, 120000);
  assert_int_equal(config_parse_duration("1h", &ms), 0);
  assert_int_equal(ms, 3600000);
  assert_int_equal(config_parse_duration("0", &ms), 0);
  assert_int_equal(ms, 0);
}

static void durations_refuse_garbage(void **state)
{
  (void)state;
  uint64_t ms = 42;
  const char *bad[] = {"",
                       "s",
                       "-1s",
                       "1.5s",
                       "5 s",
                       "5sec",
                       "1d",
                       "ms5",
                       "99999999999999999999",
                       "18446744073709551615h",
                       NULL};
  for (int i = 0; bad[i]; i++)
    if (config_parse_duration(bad[i], &ms) == 0)
      fail_msg("\"%s\" parsed", bad[i]);
  assert_int_equal(ms, 42);
}

static void duration_errors_name_the_line(void **state)
{
  ctx_t *t = *state;
  expect_error(t, DB "[proxy]\nidle_timeout = soon\n", 4, "bad duration \"soon\"");
  expect_error(t, DB "[proxy]\nconnect_timeout = 0s\n", 4, "must be more than zero");
  expect_error(t, DB "[proxy]\nshutdown_timeout = 8761h\n", 4, "too long (at most 8760h)");
}

static void limit_errors_name_the_line(void **state)
{
  ctx_t *t = *state;
  expect_error(t, DB "[proxy]\nworkers = 0\n", 4, "expected a whole number from 1 to 1024");
  expect_error(t, DB "[proxy]\nworkers = 1025\n", 4, "from 1 to 1024");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nmax_connections = -1\n", 4, "max_connections");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nmax_connections = 5\nmax_connections = 6\n", 5,
               "duplicate key, first on line 4");
}

static void value_errors_name_the_line(void **state)
{
  ctx_t *t = *state;
  expect_error(t, DB "[proxy]\nrelay = fast\n", 4, "expected splice or copy");
  expect_error(t, DB "[proxy]\nlog_level = loud\n", 4, "expected debug, info, warn or error");
  expect_error(t, DB "[grpc]\naddr = unix:x.sock\nsocket_mode = 0800\n", 5,
               "expected octal permissions");
  expect_error(t, DB "[grpc]\naddr = unix:\n", 4, "\"unix:\" needs a socket path");
  expect_error(t, DB "[firewall]\nblock_ip = 300.1.1.1\n", 4, "is not");
  expect_error(t, DB "[firewall]\nblock_ip = 192.0.2.1\nblock_ip = 192.0.2.1\n", 5,
               "duplicate rule 192.0.2.1, first on line 4");
  expect_error(t, DB "[proxy]\nworkers =\n", 4, "empty value");
}

static void structure_errors_name_the_line(void **state)
{
  ctx_t *t = *state;
  expect_error(t, "path = x.db\n", 1, "outside any section");
  expect_error(t, DB "[nonsense]\n", 3, "unknown section [nonsense]");
  expect_error(t, DB "[proxy\n", 3, "section header must end with ']'");
  expect_error(t, DB "[proxy]\n[proxy]\n", 4, "duplicate section [proxy], first on line 3");
  expect_error(t, DB "[proxy]\ncolour = blue\n", 4, "unknown key \"colour\"");
  expect_error(t, DB "[proxy]\nworkers = 2\nworkers = 3\n", 5, "duplicate key, first on line 4");
  expect_error(t, DB "just words\n", 3, "syntax error");
  expect_error(t, DB "[listener 127.0.0.1:1]\n", 3, "expected [listener \"ADDR\"]");
}

static void listener_and_route_errors_name_the_line(void **state)
{
  ctx_t *t = *state;
  expect_error(t, DB "[listener \"127.0.0.1:0\"]\n", 3, "port 0 is not a listen port");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\n[listener \"127.0.0.1:1\"]\n", 4,
               "duplicate listener 127.0.0.1:1, first on line 3");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nroute = a.example\n", 4,
               "expected \"HOSTNAME BACKEND\"");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nroute = bad_host! 127.0.0.1:2\n", 4,
               "bad hostname");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nroute = a.example nowhere\n", 4, "backend");
  expect_error(t,
               DB "[listener \"127.0.0.1:1\"]\nroute = a.example 127.0.0.1:2\n"
                  "route = A.example 127.0.0.1:3\n",
               5, "duplicate hostname a.example, first on line 4");
}

static void a_route_to_our_own_listener_is_a_loop(void **state)
{
  ctx_t *t = *state;
  expect_error(t,
               DB "[listener \"127.0.0.1:8443\"]\nroute = a.example 127.0.0.1:9000\n"
                  "[listener \"127.0.0.1:9000\"]\n",
               4, "loops back to this proxy's listener 127.0.0.1:9000");
}

static void the_loop_check_is_shared(void **state)
{
  (void)state;
  mcp_backend_t b;
  struct sockaddr_storage addrs[3];
  assert_int_equal(mcp_listener_addr_parse("127.0.0.1:8444", &addrs[0], NULL), 0);
  assert_int_equal(mcp_listener_addr_parse("0.0.0.0:8443", &addrs[1], NULL), 0);
  assert_int_equal(mcp_listener_addr_parse("127.0.0.1:8443", &addrs[2], NULL), 0);
  assert_int_equal(mcp_backend_parse("127.0.0.1:8443", &b), 0);
  assert_int_equal(config_find_loop(&b, addrs, 3), 1); /* the wildcard comes first */
  assert_int_equal(config_find_loop(&b, &addrs[2], 1), 0);
  assert_int_equal(config_find_loop(&b, addrs, 1), -1);
  assert_int_equal(config_find_loop(&b, addrs, 0), -1);
}

static void whole_file_errors(void **state)
{
  ctx_t *t = *state;
  expect_error(t, "[proxy]\nworkers = 2\n", 0, "[database] path is required");
  expect_error(t, DB "[grpc]\nsocket_mode = 0600\n", 3, "[grpc] addr is required");
  expect_error(t, DB "[grpc]\naddr = 127.0.0.1:9443\n", 4, "needs tls_cert and tls_key");
  expect_error(t, DB "[grpc]\naddr = 127.0.0.1:9443\ntls_cert = c.pem\n", 5,
               "tls_cert needs tls_key");
  expect_error(t, DB "[grpc]\naddr = unix:a.sock\ntls_cert = c.pem\ntls_key = k.pem\n", 5,
               "applies to a TCP addr only");
  expect_error(t, DB "[firewall]\nblock_country = NL\n", 4, "block_country needs geoip_db");
}

static void file_level_errors(void **state)
{
  ctx_t *t = *state;
  char err[512];
  config_t cfg;
  assert_int_equal(config_load("/nonexistent/mc-proxy.ini", &cfg, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "/nonexistent/mc-proxy.ini: cannot open"));

  char line[2100];
  memset(line, 'x', sizeof(line) - 2);
  line[sizeof(line) - 2] = '\n';
  line[sizeof(line) - 1] = '\0';
  char text[2200];
  snprintf(text, sizeof(text), DB "; %s", line);
  expect_error(t, text, 3, "line too long");

  FILE *f = fopen(t->path, "w");
  assert_non_null(f);
  fwrite(DB "[proxy]\nwork\0ers = 2\n", 1, sizeof(DB) - 1 + 21, f);
  fclose(f);
  assert_int_equal(config_load(t->path, &t->cfg, t->err, sizeof(t->err)), -1);
  assert_non_null(strstr(t->err, ":4: NUL byte in line"));
}

static void edge_settings_load(void **state)
{
  ctx_t *t = *state;
  int rc = load(t, DB "[listener \"127.0.0.1:8443\"]\n"
                      "proxy_protocol = on\n"
                      "proxy_from = 10.0.0.0/8\n"
                      "proxy_from = 2001:DB8::/32\n"
                      "fallback = 127.0.0.1:9000\n"
                      "rate_limit = 20/1s\n"
                      "max_connections_per_client = 4\n"
                      "route = *.Example.com 127.0.0.1:9443 send-proxy-v2\n"
                      "route = a.example.com 127.0.0.1:9444 send-proxy-v1\n"
                      "route = b.example.com 127.0.0.1:9445\n"
                      "[listener \"127.0.0.1:8444\"]\n"
                      "rate_limit = 0\n");
  if (rc != 0)
    fail_msg("%s", t->err);
  const config_listener_t *l = &t->cfg.listeners[0];
  assert_int_equal(l->settings.proxy_protocol, 1);
  assert_int_equal(l->settings.nproxy_from, 2);
  assert_string_equal(l->settings.proxy_from[0], "10.0.0.0/8");
  assert_string_equal(l->settings.proxy_from[1], "2001:db8::/32");
  assert_string_equal(l->settings.fallback, "127.0.0.1:9000");
  assert_int_equal(l->settings.rate_count, 20);
  assert_int_equal(l->settings.rate_period_ms, 1000);
  assert_int_equal(l->settings.max_per_client, 4);
  assert_string_equal(l->routes[0].hostname, "*.example.com");
  assert_int_equal(l->routes[0].send_proxy, 2);
  assert_int_equal(l->routes[1].send_proxy, 1);
  assert_int_equal(l->routes[2].send_proxy, 0);
  assert_int_equal(t->cfg.listeners[1].settings.rate_count, 0);
  assert_int_equal(t->cfg.listeners[1].settings.proxy_protocol, 0);
}

static void edge_errors_name_the_line(void **state)
{
  ctx_t *t = *state;
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nproxy_from = 10.0.0.300/8\n", 4,
               "not a CIDR range");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nproxy_protocol = on\n", 4,
               "proxy_protocol = on needs proxy_from");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nproxy_protocol = maybe\n", 4,
               "expected on or off");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nrate_limit = 10/0s\n", 4,
               "the period must be more than zero");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nrate_limit = ten\n", 4, "N/PERIOD");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nmax_connections_per_client = -1\n", 4,
               "whole number");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nfallback = nowhere\n", 4, "bad backend");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nroute = a.*.example.com 127.0.0.1:2\n", 4,
               "bad hostname");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nroute = * 127.0.0.1:2\n", 4, "bad hostname");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nroute = a.example 127.0.0.1:2 send-proxy\n", 4,
               "send-proxy-v1 or send-proxy-v2");
  expect_error(t,
               DB "[listener \"127.0.0.1:8443\"]\nfallback = 127.0.0.1:9000\n"
                  "[listener \"127.0.0.1:9000\"]\n",
               4, "fallback: backend 127.0.0.1:9000 loops back");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nfallback = 127.0.0.1:2\nfallback = 127.0.0.1:3\n",
               5, "duplicate key, first on line 4");
}

static void rates_parse(void **state)
{
  (void)state;
  uint32_t n, ms;
  char err[128];
  assert_int_equal(config_parse_rate("100/1m", &n, &ms, err, sizeof(err)), 0);
  assert_int_equal(n, 100);
  assert_int_equal(ms, 60000);
  assert_int_equal(config_parse_rate("5/250ms", &n, &ms, err, sizeof(err)), 0);
  assert_int_equal(ms, 250);
  assert_int_equal(config_parse_rate("0", &n, &ms, err, sizeof(err)), 0);
  assert_int_equal(n, 0);
  assert_int_equal(config_parse_rate("10/0s", &n, &ms, err, sizeof(err)), -1);
  assert_int_equal(config_parse_rate("10/2d", &n, &ms, err, sizeof(err)), -1);
  assert_int_equal(config_parse_rate("/1s", &n, &ms, err, sizeof(err)), -1);
  assert_int_equal(config_parse_rate("10/25h", &n, &ms, err, sizeof(err)), -1);
}

/* One maximum for max_connections (config.h), shared with the command line and the admin API. */
static void max_connections_has_one_maximum(void **state)
{
  ctx_t *t = *state;
  if (load(t, DB "[listener \"127.0.0.1:1\"]\nmax_connections = 1000000000\n") != 0)
    fail_msg("%s", t->err);
  assert_int_equal(t->cfg.listeners[0].max_connections, CONFIG_MAX_CONNECTIONS_MAX);
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nmax_connections = 1000000001\n", 4,
               "at most 1000000000");
  expect_error(t, DB "[listener \"127.0.0.1:1\"]\nmax_connections = 9223372036854775807\n", 4,
               "at most 1000000000");
}

/* A TCP admin address without client certificates is an explicit choice: client_auth = none. */
static void tcp_admin_without_client_ca_needs_client_auth_none(void **state)
{
  ctx_t *t = *state;
#define TCP "[grpc]\naddr = 127.0.0.1:9443\ntls_cert = c.pem\ntls_key = k.pem\n"
  expect_error(t, DB TCP, 4,
               "needs client_ca (clients must present a certificate), or "
               "client_auth = none");
  if (load(t, DB TCP "client_auth = none\n") != 0)
    fail_msg("%s", t->err);
  assert_int_equal(t->cfg.client_auth_none, 1);
  if (load(t, DB TCP "client_ca = ca.pem\n") != 0)
    fail_msg("%s", t->err);
  assert_int_equal(t->cfg.client_auth_none, 0);
  expect_error(t, DB TCP "client_auth = optional\n", 7, "client_auth: expected none");
  expect_error(t, DB TCP "client_ca = ca.pem\nclient_auth = none\n", 8, "contradicts client_ca");
  expect_error(t, DB "[grpc]\naddr = unix:a.sock\nclient_auth = none\n", 5,
               "client_auth: applies to a TCP addr only");
#undef TCP
}

/* [cluster]: endpoints, prefix and TLS files load; every bad value names its line. */
static void cluster_section_loads_and_refuses_bad_values(void **state)
{
  ctx_t *t = *state;
  int rc = load(t, "[database]\npath = a.db\n"
                   "[cluster]\n"
                   "etcd = http://127.0.0.1:2379, http://127.0.0.2:2379 https://etcd.example:2379\n"
                   "etcd_ca = ca.pem\n");
  if (rc != 0)
    fail_msg("%s", t->err);
  assert_int_equal(t->cfg.has_cluster, 1);
  assert_int_equal(t->cfg.netcd, 3);
  assert_string_equal(t->cfg.etcd_endpoints[2], "https://etcd.example:2379");
  assert_string_equal(t->cfg.cluster_prefix, CONFIG_ETCD_PREFIX); /* the default */
  assert_non_null(strstr(t->cfg.etcd_ca, "/ca.pem"));             /* relative to the file */
  assert_int_equal(load(t, "[database]\npath = a.db\n[cluster]\netcd = http://[::1]:2379\n"
                           "prefix = /fleet/a/\n"),
                   0);
  assert_string_equal(t->cfg.cluster_prefix, "/fleet/a/");
  assert_int_equal(load(t, "[database]\npath = a.db\n"), 0);
  assert_int_equal(t->cfg.has_cluster, 0);

  const char *head = "[database]\npath = a.db\n[cluster]\n";
  struct {
    const char *body;
    int line;
    const char *what;
  } bad[] = {
      {"prefix = /x/\n", 3, "etcd is required"},
      {"etcd = 127.0.0.1:2379\n", 4, "bad endpoint"},
      {"etcd = ftp://127.0.0.1:2379\n", 4, "bad endpoint"},
      {"etcd = http://127.0.0.1:2379/v3\n", 4, "bad endpoint"},
      {"etcd = http://127.0.0.1\n", 4, "bad endpoint"},
      {"etcd = http://\n", 4, "bad endpoint"},
      {"etcd = , ,\n", 4, "no endpoint"},
      {"etcd = http://a:1 http://a:2 http://a:3 http://a:4 http://a:5 http://a:6 http://a:7 "
       "http://a:8 http://a:9 http://a:10 http://a:11 http://a:12 http://a:13 http://a:14 "
       "http://a:15 http://a:16 http://a:17\n",
       4, "at most 16"},
      {"etcd = http://a:1\nprefix = /no-slash\n", 5, "not a key prefix"},
      {"etcd = http://a:1\nprefix = /with blank/\n", 5, "not a key prefix"},
      {"etcd = http://a:1\netcd = http://a:2\n", 5, "duplicate"},
      {"etcd = http://a:1\netcd_cert = c.pem\n", 3, "go together"},
      {"etcd = http://a:1\nendpoints = x\n", 5, "unknown key"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[1024];
    snprintf(text, sizeof(text), "%s%s", head, bad[i].body);
    expect_error(t, text, bad[i].line, bad[i].what);
  }
  /* A second [cluster] is refused like any other duplicate section. */
  expect_error(t, "[database]\npath = a.db\n[cluster]\netcd = http://a:1\n[cluster]\n", 5,
               "duplicate section");
}

static void write_file(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

/* The default workers count is capped by the smallest cgroup v2 quota on the way to the root. */
static void cgroup_cpu_quota_caps_the_default_workers(void **state)
{
  ctx_t *t = *state;
  char root[128], path[256], proc[128];
  snprintf(root, sizeof(root), "%s/cg", t->dir);
  snprintf(proc, sizeof(proc), "%s/cgroup", t->dir);
  assert_int_equal(mkdir(root, 0700), 0);
  snprintf(path, sizeof(path), "%s/a", root);
  assert_int_equal(mkdir(path, 0700), 0);
  snprintf(path, sizeof(path), "%s/a/b", root);
  assert_int_equal(mkdir(path, 0700), 0);

  write_file(proc, "12:cpu,cpuacct:/ignored\n0::/a/b\n");
  assert_int_equal(workers_cgroup_cpu_limit(root, proc), 0); /* no cpu.max anywhere */
  snprintf(path, sizeof(path), "%s/a/b/cpu.max", root);
  write_file(path, "max 100000\n");
  assert_int_equal(workers_cgroup_cpu_limit(root, proc), 0); /* "max": no quota */
  write_file(path, "150000 100000\n");
  assert_int_equal(workers_cgroup_cpu_limit(root, proc), 2); /* 1.5 CPUs round up */
  snprintf(path, sizeof(path), "%s/a/cpu.max", root);
  write_file(path, "50000 100000\n");
  assert_int_equal(workers_cgroup_cpu_limit(root, proc), 1); /* a parent's smaller quota */
  snprintf(path, sizeof(path), "%s/cpu.max", root);
  write_file(path, "400000 100000\n");
  assert_int_equal(workers_cgroup_cpu_limit(root, proc), 1);
  write_file(proc, "12:cpu,cpuacct:/only-v1\n");
  assert_int_equal(workers_cgroup_cpu_limit(root, proc), 0); /* no unified hierarchy */
  assert_int_equal(workers_cgroup_cpu_limit(root, "/nonexistent/cgroup"), 0);
  assert_true(workers_default_count() >= 1);

  unlink(path);
  snprintf(path, sizeof(path), "%s/a/cpu.max", root);
  unlink(path);
  snprintf(path, sizeof(path), "%s/a/b/cpu.max", root);
  unlink(path);
  snprintf(path, sizeof(path), "%s/a/b", root);
  rmdir(path);
  snprintf(path, sizeof(path), "%s/a", root);
  rmdir(path);
  rmdir(root);
  unlink(proc);
}

/* Control characters and backslash become \xNN; a full buffer never ends inside an escape. */
static void log_escape_leaves_no_control_characters(void **state)
{
  (void)state;
  char out[64];
  const char in[] = "a\nb\\c\x7f\x1b[2J\r\x01.example";
  size_t n = log_escape(out, sizeof(out), in, sizeof(in) - 1);
  assert_string_equal(out, "a\\x0ab\\x5cc\\x7f\\x1b[2J\\x0d\\x01.example");
  assert_int_equal(n, strlen(out));
  n = log_escape(out, 5, "ab\ncd", 5); /* room for "ab" and not a whole "\x0a" */
  assert_string_equal(out, "ab");
  assert_int_equal(n, 2);
  n = log_escape(out, sizeof(out), "plain.example.com", 17);
  assert_string_equal(out, "plain.example.com");
}

/*
 * log_clean_prefix scans eight bytes at a time: it must stop exactly where a byte-by-byte scan
 * stops, for every byte value at every position of a word and around every word boundary.
 */
static void log_clean_prefix_agrees_with_a_byte_scan(void **state)
{
  (void)state;
  char s[40];
  for (size_t len = 0; len <= sizeof(s); len++) {
    for (size_t at = 0; at < len; at++) {
      for (int v = 0; v < 256; v++) {
        memset(s, 'a', sizeof(s));
        /* neighbours that tempt a word-wise test into borrows: 0x80, 0xff, 0x20, 0x7e, 0x5d */
        for (size_t k = 0; k < len; k++)
          s[k] = (char)"a\x80\xff \x7e]b"[(k * 7 + (size_t)v) % 7];
        s[at] = (char)v;
        size_t want = 0;
        while (want < len) {
          unsigned char c = (unsigned char)s[want];
          if (c < 0x20 || c == 0x7f || c == '\\')
            break;
          want++;
        }
        assert_int_equal(log_clean_prefix(s, len), want);
      }
    }
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(good_config_loads_every_value, setup, teardown),
      cmocka_unit_test_setup_teardown(defaults_apply_when_keys_are_absent, setup, teardown),
      cmocka_unit_test_setup_teardown(free_seed_keeps_settings, setup, teardown),
      cmocka_unit_test(durations_parse_every_unit),
      cmocka_unit_test(durations_refuse_garbage),
      cmocka_unit_test_setup_teardown(duration_errors_name_the_line, setup, teardown),
      cmocka_unit_test_setup_teardown(limit_errors_name_the_line, setup, teardown),
      cmocka_unit_test_setup_teardown(value_errors_name_the_line, setup, teardown),
      cmocka_unit_test_setup_teardown(structure_errors_name_the_line, setup, teardown),
      cmocka_unit_test_setup_teardown(listener_and_route_errors_name_the_line, setup, teardown),
      cmocka_unit_test_setup_teardown(a_route_to_our_own_listener_is_a_loop, setup, teardown),
      cmocka_unit_test(the_loop_check_is_shared),
      cmocka_unit_test_setup_teardown(whole_file_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(file_level_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(edge_settings_load, setup, teardown),
      cmocka_unit_test_setup_teardown(cluster_section_loads_and_refuses_bad_values, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(edge_errors_name_the_line, setup, teardown),
      cmocka_unit_test(rates_parse),
      cmocka_unit_test_setup_teardown(max_connections_has_one_maximum, setup, teardown),
      cmocka_unit_test_setup_teardown(tcp_admin_without_client_ca_needs_client_auth_none, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(cgroup_cpu_quota_caps_the_default_workers, setup, teardown),
      cmocka_unit_test(log_escape_leaves_no_control_characters),
      cmocka_unit_test(log_clean_prefix_agrees_with_a_byte_scan),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
