#include "journal.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

bool journal_stream_is(int fd)
{
  const char *env = getenv("JOURNAL_STREAM");
  if (!env || !*env)
    return false;
  unsigned long long dev, ino;
  char extra;
  if (sscanf(env, "%llu:%llu%c", &dev, &ino, &extra) != 2)
    return false;
  struct stat st;
  if (fstat(fd, &st) != 0)
    return false;
  return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

const char *journal_prefix(int priority)
{
  static const char *const prefixes[] = {"<0>", "<1>", "<2>", "<3>", "<4>", "<5>", "<6>", "<7>"};
  if (priority < 0 || priority > 7)
    return "";
  return prefixes[priority];
}
