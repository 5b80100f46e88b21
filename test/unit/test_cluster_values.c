/*
 * cluster_values: etcd keys and JSON values of a fleet's state (cli/cluster_values.h).
 * One behaviour per test; every refusal also checks that the message names the problem.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster_values.h"
#include "mcproxy/error.h"

#define P "/mc-proxy/"

static char err[512];

static int key(const char *k, cluster_key_t *out)
{
  err[0] = '\0';
  return cluster_key_parse(P, k, strlen(k), out, err, sizeof(err));
}

static void key_refused(const char *k, const char *why)
{
  cluster_key_t out;
  assert_int_equal(key(k, &out), MCP_EINVAL);
  if (!strstr(err, why))
    fail_msg("key \"%s\": error \"%s\" does not mention \"%s\"", k, err, why);
}

static void listener_key_parses(void **state)
{
  cluster_key_t k;
  assert_int_equal(key(P "listeners/0.0.0.0:443", &k), 0);
  assert_int_equal(k.kind, CLUSTER_LISTENER);
  assert_string_equal(k.listener, "0.0.0.0:443");
  assert_int_equal(key(P "listeners/[::1]:8443", &k), 0);
  assert_string_equal(k.listener, "[::1]:8443");
}

static void route_key_parses_plain_and_wildcard(void **state)
{
  cluster_key_t k;
  assert_int_equal(key(P "routes/127.0.0.1:443/app.example.com", &k), 0);
  assert_int_equal(k.kind, CLUSTER_ROUTE);
  assert_string_equal(k.listener, "127.0.0.1:443");
  assert_string_equal(k.hostname, "app.example.com");
  assert_int_equal(key(P "routes/[2001:db8::1]:443/*.example.com", &k), 0);
  assert_string_equal(k.listener, "[2001:db8::1]:443");
  assert_string_equal(k.hostname, "*.example.com");
}

static void firewall_key_keeps_the_cidr_slash(void **state)
{
  cluster_key_t k;
  assert_int_equal(key(P "firewall/cidr/198.51.100.0/24", &k), 0);
  assert_int_equal(k.kind, CLUSTER_FIREWALL);
  assert_int_equal(k.fw_type, MCP_FIREWALL_CIDR);
  assert_string_equal(k.fw_value, "198.51.100.0/24");
  assert_int_equal(key(P "firewall/cidr/2001:db8::/32", &k), 0);
  assert_string_equal(k.fw_value, "2001:db8::/32");
  assert_int_equal(key(P "firewall/ip/192.0.2.10", &k), 0);
  assert_int_equal(k.fw_type, MCP_FIREWALL_IP);
  assert_int_equal(key(P "firewall/country/KP", &k), 0);
  assert_int_equal(k.fw_type, MCP_FIREWALL_COUNTRY);
  assert_string_equal(k.fw_value, "KP");
}

static void key_outside_prefix_is_enoent(void **state)
{
  cluster_key_t k;
  assert_int_equal(key("/other/listeners/0.0.0.0:443", &k), MCP_ENOENT);
  assert_int_equal(key("/mc-proxy", &k), MCP_ENOENT);
}

static void unknown_keys_are_refused(void **state)
{
  key_refused(P "settings/x", "matches no pattern");
  key_refused(P "", "matches no pattern");
  key_refused(P "listeners/", "matches no pattern");
  key_refused(P "routes", "matches no pattern");
  key_refused(P "listener/0.0.0.0:443", "matches no pattern");
  key_refused(P "routes/0.0.0.0:443", "ADDR/HOSTNAME");
  key_refused(P "routes/0.0.0.0:443/a.example.com/extra", "more than");
  key_refused(P "firewall/ip", "TYPE/VALUE");
  key_refused(P "firewall/port/443", "unknown firewall rule type");
}

static void garbage_in_keys_is_refused(void **state)
{
  key_refused(P "listeners/localhost:443", "bad listener address");
  key_refused(P "listeners/0.0.0.0:99999", "bad listener address");
  key_refused(P "routes/0.0.0.0:443/bad_host!", "bad hostname");
  key_refused(P "routes/0.0.0.0:443/", "bad hostname");
  key_refused(P "routes/0.0.0.0:443/*.", "bad hostname");
  key_refused(P "routes/0.0.0.0:443/a.*.example.com", "bad hostname");
  key_refused(P "firewall/cidr/10.0.0.0/33", "bad cidr rule value");
  key_refused(P "firewall/ip/999.1.1.1", "bad ip rule value");
  key_refused(P "firewall/country/KPX", "bad country rule value");

  static const char nul_key[] = P "listeners/0.0.0.0:443\0junk";
  cluster_key_t k;
  assert_int_equal(cluster_key_parse(P, nul_key, sizeof(nul_key) - 1, &k, err, sizeof(err)),
                   MCP_EINVAL);
  assert_non_null(strstr(err, "NUL"));
}

static void non_canonical_keys_are_refused(void **state)
{
  key_refused(P "routes/0.0.0.0:443/App.Example.com", "not canonical");
  key_refused(P "routes/0.0.0.0:443/app.example.com.", "not canonical");
  key_refused(P "firewall/cidr/10.1.2.3/8", "write \"10.0.0.0/8\"");
  key_refused(P "firewall/country/kp", "not canonical");
  key_refused(P "listeners/[0:0::1]:443", "not canonical");
}

static void key_format_round_trips(void **state)
{
  static const char *const keys[] = {
      P "listeners/0.0.0.0:443",
      P "routes/[::1]:443/*.example.com",
      P "firewall/cidr/198.51.100.0/24",
      P "firewall/country/KP",
  };
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    cluster_key_t k;
    char buf[512];
    assert_int_equal(key(keys[i], &k), 0);
    assert_int_equal(cluster_key_format(P, &k, buf, sizeof(buf)), (int)strlen(keys[i]));
    assert_string_equal(buf, keys[i]);
  }
  cluster_key_t k;
  char small[8];
  assert_int_equal(key(keys[0], &k), 0);
  assert_int_equal(cluster_key_format(P, &k, small, sizeof(small)), MCP_ERANGE);
}

static int listener(const char *json, cluster_listener_t *out)
{
  err[0] = '\0';
  return cluster_listener_parse(json, strlen(json), out, err, sizeof(err));
}

static void listener_value_parses_every_field(void **state)
{
  cluster_listener_t l;
  assert_int_equal(listener("{\"max_connections\":100,\"proxy_protocol\":true,"
                            "\"proxy_from\":[\"10.1.2.3/8\",\"192.0.2.1\",\"2001:db8::/32\"],"
                            "\"fallback\":\"127.0.0.1:8443\",\"rate_limit\":\"20/1s\","
                            "\"max_connections_per_client\":5}",
                            &l),
                   0);
  assert_int_equal(l.max_connections, 100);
  assert_true(l.proxy_protocol);
  assert_int_equal(l.n_proxy_from, 3);
  assert_string_equal(l.proxy_from[0], "10.0.0.0/8");
  assert_string_equal(l.proxy_from[1], "192.0.2.1/32");
  assert_string_equal(l.proxy_from[2], "2001:db8::/32");
  assert_string_equal(l.fallback, "127.0.0.1:8443");
  assert_int_equal(l.rate_limit_count, 20);
  assert_int_equal(l.rate_limit_period_ms, 1000);
  assert_int_equal(l.max_connections_per_client, 5);
  cluster_listener_release(&l);
}

static void listener_value_absent_fields_are_defaults_and_unknown_ignored(void **state)
{
  cluster_listener_t l;
  assert_int_equal(listener("{}", &l), 0);
  assert_int_equal(l.max_connections, 0);
  assert_false(l.proxy_protocol);
  assert_int_equal(l.n_proxy_from, 0);
  assert_string_equal(l.fallback, "");
  assert_int_equal(l.rate_limit_count, 0);
  assert_int_equal(l.max_connections_per_client, 0);
  cluster_listener_release(&l);

  assert_int_equal(listener("{\"colour\":\"blue\",\"future\":{\"x\":[1,2]},"
                            "\"max_connections\":7,\"rate_limit\":\"0\"}",
                            &l),
                   0);
  assert_int_equal(l.max_connections, 7);
  cluster_listener_release(&l);
}

static void listener_refused(const char *json, const char *why)
{
  cluster_listener_t l;
  assert_int_equal(listener(json, &l), MCP_EINVAL);
  assert_null(l.proxy_from);
  if (!strstr(err, why))
    fail_msg("value %s: error \"%s\" does not mention \"%s\"", json, err, why);
}

static void listener_bad_values_are_refused(void **state)
{
  listener_refused("", "not JSON");
  listener_refused("not json at all", "not JSON");
  listener_refused("{\"max_connections\":1", "not JSON");
  listener_refused("[1,2]", "not a JSON object");
  listener_refused("42", "not a JSON object");
  listener_refused("\"text\"", "not a JSON object");
  listener_refused("{\"max_connections\":-1}", "must not be negative");
  listener_refused("{\"max_connections\":\"10\"}", "must be an integer");
  listener_refused("{\"max_connections\":1.5}", "must be an integer");
  listener_refused("{\"max_connections_per_client\":true}", "must be an integer");
  listener_refused("{\"proxy_protocol\":\"on\"}", "true or false");
  listener_refused("{\"proxy_protocol\":true}", "\"proxy_from\" is empty");
  listener_refused("{\"proxy_protocol\":true,\"proxy_from\":\"10.0.0.0/8\"}", "must be an array");
  listener_refused("{\"proxy_from\":[\"10.0.0.0/8\",\"nonsense\"]}", "nonsense");
  listener_refused("{\"proxy_from\":[1]}", "not a string");
  listener_refused("{\"fallback\":\"nowhere\"}", "not a backend");
  listener_refused("{\"fallback\":8443}", "must be a string");
  listener_refused("{\"rate_limit\":\"20\"}", "N/PERIOD");
  listener_refused("{\"rate_limit\":20}", "must be a string");
  listener_refused("{\"max_connections\":1,\"max_connections\":2}", "duplicate");
}

static void listener_json_round_trips(void **state)
{
  cluster_listener_t l, back;
  assert_int_equal(listener("{\"max_connections\":3,\"proxy_protocol\":true,"
                            "\"proxy_from\":[\"10.0.0.0/8\"],\"fallback\":\"[::1]:9443\","
                            "\"rate_limit\":\"5/250ms\",\"max_connections_per_client\":2}",
                            &l),
                   0);
  char *json = cluster_listener_to_json(&l);
  assert_non_null(json);
  assert_string_equal(json, "{\"max_connections\":3,\"proxy_protocol\":true,"
                            "\"proxy_from\":[\"10.0.0.0/8\"],\"fallback\":\"[::1]:9443\","
                            "\"rate_limit\":\"5/250ms\",\"max_connections_per_client\":2}");
  assert_int_equal(listener(json, &back), 0);
  assert_int_equal(back.rate_limit_period_ms, 250);
  assert_string_equal(back.proxy_from[0], "10.0.0.0/8");
  free(json);
  cluster_listener_release(&back);
  cluster_listener_release(&l);
}

static int route(const char *json, cluster_route_t *out)
{
  err[0] = '\0';
  return cluster_route_parse(json, strlen(json), out, err, sizeof(err));
}

static void route_value_parses(void **state)
{
  cluster_route_t r;
  assert_int_equal(route("{\"backend\":\"127.0.0.1:8443\",\"send_proxy\":\"v2\"}", &r), 0);
  assert_string_equal(r.backend, "127.0.0.1:8443");
  assert_int_equal(r.send_proxy, CLUSTER_SEND_PROXY_V2);
  assert_int_equal(route("{\"backend\":\"Backend.Internal.:443\",\"weight\":3}", &r), 0);
  assert_string_equal(r.backend, "backend.internal:443");
  assert_int_equal(r.send_proxy, CLUSTER_SEND_PROXY_NONE);
  assert_int_equal(route("{\"backend\":\"[::1]:443\",\"send_proxy\":\"v1\"}", &r), 0);
  assert_int_equal(r.send_proxy, CLUSTER_SEND_PROXY_V1);

  char *json = cluster_route_to_json(&r);
  assert_string_equal(json, "{\"backend\":\"[::1]:443\",\"send_proxy\":\"v1\"}");
  free(json);
}

static void route_refused(const char *json, const char *why)
{
  cluster_route_t r;
  assert_int_equal(route(json, &r), MCP_EINVAL);
  if (!strstr(err, why))
    fail_msg("value %s: error \"%s\" does not mention \"%s\"", json, err, why);
}

static void route_bad_values_are_refused(void **state)
{
  route_refused("127.0.0.1:8443", "not JSON");
  route_refused("{}", "no \"backend\"");
  route_refused("{\"backend\":\"\"}", "no \"backend\"");
  route_refused("{\"backend\":\"127.0.0.1\"}", "not a backend");
  route_refused("{\"backend\":\"127.0.0.1:0\"}", "not a backend");
  route_refused("{\"backend\":[\"127.0.0.1:1\"]}", "must be a string");
  route_refused("{\"backend\":\"127.0.0.1:1\",\"send_proxy\":\"v3\"}", "\"send_proxy\"");
  route_refused("{\"backend\":\"127.0.0.1:1\",\"send_proxy\":2}", "must be a string");
  route_refused("{\"backend\":\"127.0.0.1:1\\u0000x\"}", "not JSON");
  route_refused("\xff\xfe{}", "not JSON");
}

static void firewall_value_is_any_object(void **state)
{
  assert_int_equal(cluster_firewall_parse("{}", 2, err, sizeof(err)), 0);
  assert_int_equal(cluster_firewall_parse("{\"note\":\"abuse\"}", 16, err, sizeof(err)), 0);
  assert_int_equal(cluster_firewall_parse("", 0, err, sizeof(err)), MCP_EINVAL);
  assert_int_equal(cluster_firewall_parse("null", 4, err, sizeof(err)), MCP_EINVAL);
  assert_non_null(strstr(err, "not a JSON object"));
}

static void rate_limits_parse(void **state)
{
  int64_t n, ms;
  assert_int_equal(cluster_rate_limit_parse("0", &n, &ms), 0);
  assert_int_equal(n, 0);
  assert_int_equal(cluster_rate_limit_parse("20/1s", &n, &ms), 0);
  assert_int_equal(ms, 1000);
  assert_int_equal(cluster_rate_limit_parse("3/2m", &n, &ms), 0);
  assert_int_equal(ms, 120000);
  assert_int_equal(cluster_rate_limit_parse("1/1h", &n, &ms), 0);
  assert_int_equal(ms, 3600000);
  assert_int_equal(cluster_rate_limit_parse("7/10", &n, &ms), 0);
  assert_int_equal(ms, 10000);
  static const char *const bad[] = {"",     "00",   "0/1s",  "5/",    "5/0s",
                                    "5/1d", "x/1s", "5/1s ", "-5/1s", "1/9999999999999s"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    if (cluster_rate_limit_parse(bad[i], &n, &ms) != MCP_EINVAL)
      fail_msg("rate limit \"%s\" was accepted", bad[i]);
}

static int entry(const char *k, const char *v, int is_delete, cluster_entry_t *out)
{
  err[0] = '\0';
  return cluster_entry_parse(P, k, strlen(k), v, v ? strlen(v) : 0, is_delete, out, err,
                             sizeof(err));
}

static void entries_parse_key_and_value_together(void **state)
{
  cluster_entry_t e;
  assert_int_equal(entry(P "listeners/0.0.0.0:443",
                         "{\"proxy_protocol\":true,"
                         "\"proxy_from\":[\"10.0.0.0/8\"]}",
                         0, &e),
                   0);
  assert_int_equal(e.key.kind, CLUSTER_LISTENER);
  assert_true(e.listener.proxy_protocol);
  assert_int_equal(e.listener.n_proxy_from, 1);
  cluster_entry_release(&e);

  assert_int_equal(entry(P "routes/0.0.0.0:443/a.example.com", "{\"backend\":\"[::1]:1\"}", 0, &e),
                   0);
  assert_string_equal(e.route.backend, "[::1]:1");
  cluster_entry_release(&e);

  assert_int_equal(entry(P "firewall/country/KP", "{}", 0, &e), 0);
  assert_int_equal(e.key.fw_type, MCP_FIREWALL_COUNTRY);
  cluster_entry_release(&e);
}

static void entry_deletes_need_only_a_valid_key(void **state)
{
  cluster_entry_t e;
  assert_int_equal(entry(P "routes/0.0.0.0:443/a.example.com", NULL, 1, &e), 0);
  assert_true(e.is_delete);
  assert_string_equal(e.key.hostname, "a.example.com");
  cluster_entry_release(&e);
  assert_int_equal(entry(P "routes/nonsense", NULL, 1, &e), MCP_EINVAL);
}

static void entry_with_a_bad_value_is_refused_whole(void **state)
{
  cluster_entry_t e;
  assert_int_equal(entry(P "listeners/0.0.0.0:443", "{\"max_connections\":-5}", 0, &e), MCP_EINVAL);
  assert_null(e.listener.proxy_from);
  assert_non_null(strstr(err, "negative"));
  assert_int_equal(entry(P "routes/0.0.0.0:443/a.example.com", "garbage", 0, &e), MCP_EINVAL);
  assert_non_null(strstr(err, "not JSON"));
  assert_int_equal(entry(P "firewall/ip/192.0.2.1", "[]", 0, &e), MCP_EINVAL);
  assert_int_equal(entry(P "unknown/x", "{}", 0, &e), MCP_EINVAL);
  assert_non_null(strstr(err, "matches no pattern"));
  assert_int_equal(entry("/elsewhere/x", "{}", 0, &e), MCP_ENOENT);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(listener_key_parses),
      cmocka_unit_test(route_key_parses_plain_and_wildcard),
      cmocka_unit_test(firewall_key_keeps_the_cidr_slash),
      cmocka_unit_test(key_outside_prefix_is_enoent),
      cmocka_unit_test(unknown_keys_are_refused),
      cmocka_unit_test(garbage_in_keys_is_refused),
      cmocka_unit_test(non_canonical_keys_are_refused),
      cmocka_unit_test(key_format_round_trips),
      cmocka_unit_test(listener_value_parses_every_field),
      cmocka_unit_test(listener_value_absent_fields_are_defaults_and_unknown_ignored),
      cmocka_unit_test(listener_bad_values_are_refused),
      cmocka_unit_test(listener_json_round_trips),
      cmocka_unit_test(route_value_parses),
      cmocka_unit_test(route_bad_values_are_refused),
      cmocka_unit_test(firewall_value_is_any_object),
      cmocka_unit_test(rate_limits_parse),
      cmocka_unit_test(entries_parse_key_and_value_together),
      cmocka_unit_test(entry_deletes_need_only_a_valid_key),
      cmocka_unit_test(entry_with_a_bad_value_is_refused_whole),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
