/* placeholder */
#include "cli.h"
int cmd_server(int argc, char **argv) { return cli_usage_error("server", "not built yet"); }
