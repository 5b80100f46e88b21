/* mc-proxy: dispatches to one command; each lives in its own file (see cli.h). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "reload.h"
#include "mcproxy/mcproxy.h"

static const char usage[] =
    "usage: mc-proxy COMMAND [OPTIONS] [ARGS]\n"
    "\n"
    "A Layer-4 TLS SNI proxy and router.\n"
    "\n"
    "Commands:\n"
    "  server -c FILE                         run the proxy in the foreground\n"
    "  check -c FILE                          validate a config (and its admin certs)\n"
    "  reload -c FILE                         hand the running server over to a new process\n"
    "  snapshot -c FILE [-o OUT]              online backup of the database\n"
    "  status -c FILE [--json]                ask a running instance for its state\n"
    "  routes list|add|remove -c FILE ...     show or change routes\n"
    "  firewall list|add|remove -c FILE ...   show or change firewall rules\n"
    "  listener set-max-connections -c FILE ADDR N\n"
    "  cluster import|status -c FILE          fleet mode: push this state into etcd, or compare\n"
    "  certs --out DIR [--san NAME]...        write a local admin CA, server and client cert\n"
    "  version                                print the version\n"
    "\n"
    "Run 'mc-proxy COMMAND --help' for a command's options.\n";

static const struct {
  const char *name;
  int (*run)(int argc, char **argv);
} commands[] = {
    {"server", cmd_server},     {"check", cmd_check},   {"snapshot", cmd_snapshot},
    {"status", cmd_status},     {"routes", cmd_routes}, {"firewall", cmd_firewall},
    {"listener", cmd_listener}, {"certs", cmd_certs},   {"reload", cmd_reload},
    {"cluster", cmd_cluster},
};

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
