/*
 * etcd_client without a server: endpoint and option checks, prefix ranges, malformed
 * transactions. Everything that talks to etcd is in test/integration/test_etcd_client.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "etcd_client.h"

static char err[512];

static int open_one(const char *ep, etcd_client_t **c)
{
  const char *eps[] = {ep};
  etcd_client_opts_t opts = {.endpoints = eps, .n_endpoints = 1};
  err[0] = '\0';
  return etcd_client_open(&opts, c, err, sizeof(err));
}

static void good_endpoints_open_without_connecting(void **state)
{
  static const char *const good[] = {"http://127.0.0.1:2379", "http://[::1]:2379/",
                                     "http://etcd.internal:2379", "https://10.0.0.5:2379"};
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    etcd_client_t *c = NULL;
    if (open_one(good[i], &c) != 0)
      fail_msg("endpoint %s refused: %s", good[i], err);
    assert_string_equal(etcd_client_endpoint(c), good[i]);
    etcd_client_close(c);
  }
}

static void bad_endpoints_are_refused(void **state)
{
  static const char *const bad[] = {
      "127.0.0.1:2379",      "http://127.0.0.1",       "http://127.0.0.1:",
      "http://127.0.0.1:0",  "http://127.0.0.1:70000", "http://127.0.0.1:23x9",
      "unix:/run/etcd.sock", "http://:2379",           "http://127.0.0.1:2379/v3/kv"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    etcd_client_t *c = NULL;
    if (open_one(bad[i], &c) != ETCD_EINVAL)
      fail_msg("endpoint %s accepted", bad[i]);
    assert_null(c);
    assert_non_null(strstr(err, bad[i]));
  }
}

static void endpoint_lists_are_checked_whole(void **state)
{
  etcd_client_t *c = NULL;
  const char *mixed[] = {"http://127.0.0.1:2379", "https://127.0.0.2:2379"};
  etcd_client_opts_t opts = {.endpoints = mixed, .n_endpoints = 2};
  assert_int_equal(etcd_client_open(&opts, &c, err, sizeof(err)), ETCD_EINVAL);
  assert_non_null(strstr(err, "mix"));

  opts.n_endpoints = 0;
  assert_int_equal(etcd_client_open(&opts, &c, err, sizeof(err)), ETCD_EINVAL);

  const char *many[ETCD_MAX_ENDPOINTS + 1];
  for (size_t i = 0; i < ETCD_MAX_ENDPOINTS + 1; i++)
    many[i] = "http://127.0.0.1:2379";
  opts.endpoints = many;
  opts.n_endpoints = ETCD_MAX_ENDPOINTS + 1;
  assert_int_equal(etcd_client_open(&opts, &c, err, sizeof(err)), ETCD_EINVAL);
}

static void tls_files_are_read_at_open(void **state)
{
  etcd_client_t *c = NULL;
  const char *eps[] = {"https://127.0.0.1:2379"};
  etcd_client_opts_t opts = {.endpoints = eps, .n_endpoints = 1, .cert_path = "/nonexistent.pem"};
  assert_int_equal(etcd_client_open(&opts, &c, err, sizeof(err)), ETCD_EINVAL);
  assert_non_null(strstr(err, "go together"));
  opts.key_path = "/nonexistent.key";
  assert_int_equal(etcd_client_open(&opts, &c, err, sizeof(err)), ETCD_EINVAL);
  assert_non_null(strstr(err, "/nonexistent.pem"));
}

static void prefix_end_is_the_next_key_after_the_prefix(void **state)
{
  char buf[16];
  memset(buf, 'x', sizeof(buf));
  assert_int_equal(etcd_prefix_end("/mc-proxy/", 10, buf), 10);
  assert_string_equal(buf, "/mc-proxy0"); /* NUL-terminated: callers pass it as a C string */
  assert_int_equal(etcd_prefix_end("a\xff\xff", 3, buf), 1);
  assert_string_equal(buf, "b");
  assert_int_equal(etcd_prefix_end("\xff", 1, buf), 0);
  assert_int_equal(etcd_prefix_end("", 0, buf), 0);
}

static void malformed_transactions_fail_before_any_call(void **state)
{
  etcd_client_t *c = NULL;
  etcd_txn_result_t r;
  assert_int_equal(open_one("http://127.0.0.1:9", &c), 0);

  etcd_op_t put_no_value = {.type = ETCD_OP_PUT, .key = "/k"};
  etcd_txn_t txn = {.success = &put_no_value, .n_success = 1};
  assert_int_equal(etcd_client_txn(c, &txn, &r, err, sizeof(err)), ETCD_EINVAL);

  etcd_op_t bad_type = {.type = 99, .key = "/k"};
  txn.success = &bad_type;
  assert_int_equal(etcd_client_txn(c, &txn, &r, err, sizeof(err)), ETCD_EINVAL);

  etcd_compare_t no_value = {.key = "/k", .target = ETCD_TARGET_VALUE};
  etcd_op_t put = {.type = ETCD_OP_PUT, .key = "/k", .value = "v"};
  etcd_txn_t txn2 = {.compare = &no_value, .n_compare = 1, .success = &put, .n_success = 1};
  assert_int_equal(etcd_client_txn(c, &txn2, &r, err, sizeof(err)), ETCD_EINVAL);
  etcd_client_close(c);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(good_endpoints_open_without_connecting),
      cmocka_unit_test(bad_endpoints_are_refused),
      cmocka_unit_test(endpoint_lists_are_checked_whole),
      cmocka_unit_test(tls_files_are_read_at_open),
      cmocka_unit_test(prefix_end_is_the_next_key_after_the_prefix),
      cmocka_unit_test(malformed_transactions_fail_before_any_call),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
