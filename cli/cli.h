/*
 * The mc-proxy commands. Each takes the arguments after its own name (argv[0] is the command
 * name) and returns the process exit status: 0 ok, 1 the server said no or could not be
 * reached, 2 usage or config error. Options may come before or after positional arguments.
 */
#ifndef MCP_CLI_CLI_H
#define MCP_CLI_CLI_H

#define EXIT_OK 0
#define EXIT_REFUSED 1
#define EXIT_USAGE 2

int cmd_server(int argc, char **argv);   /* server.c */
int cmd_check(int argc, char **argv);    /* local_cmds.c */
int cmd_snapshot(int argc, char **argv); /* local_cmds.c */
int cmd_status(int argc, char **argv);   /* admin_cmds.c */
int cmd_routes(int argc, char **argv);   /* admin_cmds.c */
int cmd_firewall(int argc, char **argv); /* admin_cmds.c */
int cmd_listener(int argc, char **argv); /* listener_cmds.c */
int cmd_certs(int argc, char **argv);    /* certs_cmd.c */
int cmd_cluster(int argc, char **argv);  /* cluster_cmds.c */

/*
 * Opens an mc-proxy database read-only for a command that needs no server (never created,
 * never migrated; the server may be writing). A schema newer than this build knows, older than
 * min_version, or none at all is refused. Returns NULL after printing "mc-proxy CMD: ..." on
 * stderr. local_cmds.c
 */
struct sqlite3;
struct sqlite3 *cli_open_db_readonly(const char *cmd, const char *path, int min_version);

/* Prints the "see --help" hint for a usage error and returns EXIT_USAGE. cli.c */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
