/* placeholder: check and snapshot (owned by the config work) */
#include "cli.h"
int cmd_check(int argc, char **argv) { return cli_usage_error("check", "not built yet"); }
int cmd_snapshot(int argc, char **argv) { return cli_usage_error("snapshot", "not built yet"); }
