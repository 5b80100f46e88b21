/* mc-proxy: dispatches to one command; each lives in its own file (see cli.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "log.h"
#include "mcproxy/mcproxy.h"

static const char usage[] =
    "usage: mc-proxy COMMAND [OPTIONS] [ARGS]\n"
    "\n"
    "A Layer-4 TLS SNI proxy and router.\n"
    "\n"
    "Commands:\n"
    "  server -c FILE                         run the proxy in the foreground\n"
    "  check -c FILE                          validate a config (and its admin certs)\n"
    "  snapshot -c FILE [-o OUT]              online backup of the database\n"
    "  status -c FILE [--json]                ask a running instance for its state\n"
    "  routes list|add|remove -c FILE ...     show or change routes\n"
    "  firewall list|add|remove -c FILE ...   show or change firewall rules\n"
    "  listener set-max-connections -c FILE ADDR N\n"
    "  certs --out DIR [--san NAME]...        write a local admin CA, server and client cert\n"
    "  version                                print the version\n"
    "\n"
    "Run 'mc-proxy COMMAND --help' for a command's options.\n";

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

static const struct {
  const char *name;
  int (*run)(int argc, char **argv);
} commands[] = {
    {"server", cmd_server},     {"check", cmd_check},       {"snapshot", cmd_snapshot},
    {"status", cmd_status},     {"routes", cmd_routes},     {"firewall", cmd_firewall},
    {"listener", cmd_listener}, {"certs", cmd_certs},
};

/*
 * The server raises its soft descriptor limit to the hard one: every connection costs two
 * descriptors, and the listeners keep a reserve below the limit for the admin API
 * (docs/RUNBOOK.md, "Running out of file descriptors"). Called by cmd_server once the log level
 * is set, before it opens anything.
 */
void cli_raise_nofile(void)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  if (rl.rlim_cur == rl.rlim_max) {
    log_info("descriptor limit %llu (soft = hard)", (unsigned long long)rl.rlim_cur);
    return;
  }
  rlim_t before = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
    log_info("descriptor limit raised from %llu to the hard limit %llu",
             (unsigned long long)before, (unsigned long long)rl.rlim_max);
  else
    log_warn("descriptor limit %llu: could not raise it to %llu", (unsigned long long)before,
             (unsigned long long)rl.rlim_max);
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    fputs(usage, stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    fputs(usage, stdout);
    return EXIT_OK;
  }
  if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
    printf("mc-proxy %s\n", mcp_version());
    return EXIT_OK;
  }
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    if (!strcmp(cmd, commands[i].name))
      return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "mc-proxy: unknown command '%s'\n\n%s", cmd, usage);
  return EXIT_USAGE;
}
