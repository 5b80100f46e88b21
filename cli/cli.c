/* cli: what every command shares (see cli.h); the commands themselves live in their own files. */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "mc-proxy %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'mc-proxy %s --help'.\n", cmd);
  return EXIT_USAGE;
}
