/*
 * Unit tests of cli/journal.c: JOURNAL_STREAM counts only when it names the descriptor's own
 * device and inode (a real pipe and a real file here), and the priority prefixes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "journal.h"

static void set_stream_of(int fd)
{
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  char v[64];
  snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
  setenv("JOURNAL_STREAM", v, 1);
}

static void matching_stream_is_the_journal(void **state)
{
  int p[2];
  assert_int_equal(pipe(p), 0);
  set_stream_of(p[1]);
  assert_true(journal_stream_is(p[1]));
  close(p[0]);
  close(p[1]);
}

static void inherited_stream_of_another_fd_is_not(void **state)
{
  int p[2], q[2];
  assert_int_equal(pipe(p), 0);
  assert_int_equal(pipe(q), 0);
  set_stream_of(p[1]);
  assert_false(journal_stream_is(q[1])); /* stderr redirected elsewhere by a parent */
  FILE *f = tmpfile();
  assert_false(journal_stream_is(fileno(f)));
  fclose(f);
  close(p[0]);
  close(p[1]);
  close(q[0]);
  close(q[1]);
}

static void absent_or_malformed_variable_is_not(void **state)
{
  int p[2];
  assert_int_equal(pipe(p), 0);
  unsetenv("JOURNAL_STREAM");
  assert_false(journal_stream_is(p[1]));
  const char *bad[] = {"", "12", "12:", ":34", "a:b", "1:2:3", "1:2x"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    setenv("JOURNAL_STREAM", bad[i], 1);
    assert_false(journal_stream_is(p[1]));
  }
  set_stream_of(p[1]);
  assert_false(journal_stream_is(-1));
  unsetenv("JOURNAL_STREAM");
  close(p[0]);
  close(p[1]);
}

static void prefixes_are_syslog_priorities(void **state)
{
  assert_string_equal(journal_prefix(JOURNAL_PRIORITY_ERR), "<3>");
  assert_string_equal(journal_prefix(JOURNAL_PRIORITY_WARNING), "<4>");
  assert_string_equal(journal_prefix(JOURNAL_PRIORITY_INFO), "<6>");
  assert_string_equal(journal_prefix(JOURNAL_PRIORITY_DEBUG), "<7>");
  assert_string_equal(journal_prefix(8), "");
  assert_string_equal(journal_prefix(-1), "");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(matching_stream_is_the_journal),
      cmocka_unit_test(inherited_stream_of_another_fd_is_not),
      cmocka_unit_test(absent_or_malformed_variable_is_not),
      cmocka_unit_test(prefixes_are_syslog_priorities),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
