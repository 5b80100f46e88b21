/*
 * Unit tests of the hostname rule (lib/hostname.c): mcp_hostname_normalize(), used for SNI,
 * route and backend names alike, and the wildcard-aware mcp_hostname_normalize_pattern().
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "mcproxy/error.h"
#include "mcproxy/hostname.h"

static int norm(const char *s, char *out)
{
  return mcp_hostname_normalize(s, strlen(s), out);
}

static int pat(const char *s, char *out)
{
  return mcp_hostname_normalize_pattern(s, strlen(s), out);
}

/* ---- mcp_hostname_normalize ------------------------------------------------------------- */

static void normalize_lowercases_and_drops_one_trailing_dot(void **state)
{
  char out[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(norm("WWW.Example.COM.", out), 15);
  assert_string_equal(out, "www.example.com");
  assert_int_equal(norm("localhost", out), 9);
  assert_string_equal(out, "localhost");
  assert_int_equal(norm("0.9", out), 3);
  assert_int_equal(norm("example.com..", out), MCP_EINVAL);
}

static void normalize_allows_hyphens_inside_a_label(void **state)
{
  char out[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(norm("xn--bcher-kva.example", out), 21);
  assert_string_equal(out, "xn--bcher-kva.example");
  assert_int_equal(norm("a-b.c--d.e", out), 10);
  assert_int_equal(norm("A-B", out), 3);
  assert_string_equal(out, "a-b");
}

static void normalize_refuses_label_starting_or_ending_with_hyphen(void **state)
{
  char out[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(norm("-a.example.com", out), MCP_EINVAL);
  assert_int_equal(norm("a-.example.com", out), MCP_EINVAL);
  assert_int_equal(norm("a.-example.com", out), MCP_EINVAL);
  assert_int_equal(norm("a.example-.com", out), MCP_EINVAL);
  assert_int_equal(norm("a.example.com-", out), MCP_EINVAL);
  assert_int_equal(norm("a.example.com-.", out), MCP_EINVAL);
  assert_int_equal(norm("a.example.-com", out), MCP_EINVAL);
  assert_int_equal(norm("-", out), MCP_EINVAL);
  assert_int_equal(norm("--", out), MCP_EINVAL);
  assert_int_equal(norm("-lead.trail-.-", out), MCP_EINVAL);
}

static void normalize_rejects_empty_labels_and_bad_bytes(void **state)
{
  char out[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(norm("", out), MCP_EINVAL);
  assert_int_equal(norm(".", out), MCP_EINVAL);
  assert_int_equal(norm("..", out), MCP_EINVAL);
  assert_int_equal(norm(".a", out), MCP_EINVAL);
  assert_int_equal(norm("a..b", out), MCP_EINVAL);
  assert_int_equal(norm("a_b", out), MCP_EINVAL);
  assert_int_equal(norm("a b", out), MCP_EINVAL);
  assert_int_equal(norm("a*.b", out), MCP_EINVAL);
  assert_int_equal(norm("*.b", out), MCP_EINVAL); /* patterns only through _pattern() */
  assert_int_equal(norm("a/b", out), MCP_EINVAL);
  assert_int_equal(mcp_hostname_normalize("ab\0c", 4, out), MCP_EINVAL);
  assert_int_equal(mcp_hostname_normalize("\x80", 1, out), MCP_EINVAL);
}

static void normalize_enforces_label_and_name_limits(void **state)
{
  char out[MCP_HOSTNAME_MAX + 1], in[300];

  memset(in, 'b', sizeof(in));
  assert_int_equal(mcp_hostname_normalize(in, 63, out), 63);
  assert_int_equal(mcp_hostname_normalize(in, 64, out), MCP_EINVAL);
  in[63] = '.';
  assert_int_equal(mcp_hostname_normalize(in, 64, out), 63); /* trailing dot */
  in[63] = in[127] = in[191] = '.';
  assert_int_equal(mcp_hostname_normalize(in, 253, out), 253);
  assert_int_equal(out[253], '\0');
  assert_int_equal(mcp_hostname_normalize(in, 254, out), MCP_EINVAL);
  in[253] = '.';
  assert_int_equal(mcp_hostname_normalize(in, 254, out), 253);
  assert_int_equal(mcp_hostname_normalize(in, 255, out), MCP_EINVAL);
}

static void normalize_reads_only_len_bytes(void **state)
{
  char out[MCP_HOSTNAME_MAX + 1];

  /* in is not NUL-terminated: the bytes after len must not matter. */
  assert_int_equal(mcp_hostname_normalize("abc_def", 3, out), 3);
  assert_string_equal(out, "abc");
  assert_int_equal(mcp_hostname_normalize("abc-def", 4, out), MCP_EINVAL); /* "abc-" */
}

/* ---- mcp_hostname_normalize_pattern ----------------------------------------------------- */

static void pattern_accepts_star_as_whole_first_label(void **state)
{
  char out[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(pat("*.example.com", out), 13);
  assert_string_equal(out, "*.example.com");
  assert_int_equal(pat("*.Example.COM.", out), 13);
  assert_string_equal(out, "*.example.com");
  assert_int_equal(pat("*.localhost", out), 11);
}

static void pattern_accepts_plain_hostnames_too(void **state)
{
  char out[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(pat("App.Example.com.", out), 15);
  assert_string_equal(out, "app.example.com");
  assert_int_equal(pat("-a.example.com", out), MCP_EINVAL);
}

static void pattern_refuses_misplaced_or_partial_stars(void **state)
{
  char out[MCP_HOSTNAME_MAX + 1];

  assert_int_equal(pat("*", out), MCP_EINVAL);
  assert_int_equal(pat("*.", out), MCP_EINVAL);
  assert_int_equal(pat("*..", out), MCP_EINVAL);
  assert_int_equal(pat("**.example.com", out), MCP_EINVAL);
  assert_int_equal(pat("*a.example.com", out), MCP_EINVAL);
  assert_int_equal(pat("a*.example.com", out), MCP_EINVAL);
  assert_int_equal(pat("a.*.example.com", out), MCP_EINVAL);
  assert_int_equal(pat("*.*.example.com", out), MCP_EINVAL);
  assert_int_equal(pat("example.*", out), MCP_EINVAL);
  assert_int_equal(pat("*.-a.example.com", out), MCP_EINVAL);
  assert_int_equal(pat("*.a-.example.com", out), MCP_EINVAL);
  assert_int_equal(pat("*.a..b", out), MCP_EINVAL);
  assert_int_equal(pat("", out), MCP_EINVAL);
}

static void pattern_length_counts_the_star_label(void **state)
{
  char out[MCP_HOSTNAME_MAX + 1], in[300];

  /* "*." + 251 bytes = 253: the longest pattern; 252 bytes after "*." is one too many. */
  memset(in, 'c', sizeof(in));
  in[0] = '*', in[1] = '.';
  in[2 + 63] = in[2 + 127] = in[2 + 191] = '.';
  assert_int_equal(mcp_hostname_normalize_pattern(in, 253, out), 253);
  assert_int_equal(out[253], '\0');
  assert_memory_equal(out, in, 253);
  in[253] = '.';
  assert_int_equal(mcp_hostname_normalize_pattern(in, 254, out), 253);
  in[253] = 'c';
  assert_int_equal(mcp_hostname_normalize_pattern(in, 254, out), MCP_EINVAL);
  assert_int_equal(mcp_hostname_normalize_pattern(in, 255, out), MCP_EINVAL);
  /* Same when the suffix itself would be a full-length hostname. */
  in[2 + 253] = '.';
  assert_int_equal(mcp_hostname_normalize_pattern(in, 256, out), MCP_EINVAL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(normalize_lowercases_and_drops_one_trailing_dot),
      cmocka_unit_test(normalize_allows_hyphens_inside_a_label),
      cmocka_unit_test(normalize_refuses_label_starting_or_ending_with_hyphen),
      cmocka_unit_test(normalize_rejects_empty_labels_and_bad_bytes),
      cmocka_unit_test(normalize_enforces_label_and_name_limits),
      cmocka_unit_test(normalize_reads_only_len_bytes),
      cmocka_unit_test(pattern_accepts_star_as_whole_first_label),
      cmocka_unit_test(pattern_accepts_plain_hostnames_too),
      cmocka_unit_test(pattern_refuses_misplaced_or_partial_stars),
      cmocka_unit_test(pattern_length_counts_the_star_label),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
