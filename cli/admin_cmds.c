/* placeholder: admin commands (owned by the admin API work) */
#include "cli.h"
int cmd_status(int argc, char **argv) { return cli_usage_error("status", "not built yet"); }
int cmd_routes(int argc, char **argv) { return cli_usage_error("routes", "not built yet"); }
int cmd_firewall(int argc, char **argv) { return cli_usage_error("firewall", "not built yet"); }
int cmd_listener(int argc, char **argv) { return cli_usage_error("listener", "not built yet"); }
int cmd_certs(int argc, char **argv) { return cli_usage_error("certs", "not built yet"); }
