/*
 * admin_cmds: what the admin commands share (admin_cmds.c: status, routes, firewall;
 * listener_cmds.c: listener): their options, the client connection, one call, JSON strings, and
 * how a listener's settings are printed. Main thread of a command only.
 */
#ifndef MCP_CLI_ADMIN_CMDS_H
#define MCP_CLI_ADMIN_CMDS_H

#include "admin_client.h"
#include "config.h"
#include "mc_proxy/v1/admin.pb-c.h"

/* The listener settings options, in the order of opts_t.setting[]. */
enum {
  SET_MAX_CONNECTIONS,
  SET_PROXY_PROTOCOL,
  SET_FALLBACK,
  SET_RATE_LIMIT,
  SET_MAX_PER_CLIENT,
  SET_COUNT
};

typedef struct opts_s {
  const char *config;
  const char *cert, *key, *ca;
  const char *addr;
  int json;
  const char *send_proxy;         /* routes add --send-proxy */
  const char *setting[SET_COUNT]; /* listener --max-connections ... (NULL: not given) */
  const char *proxy_from[CONFIG_PROXY_FROM_MAX];
  int nproxy_from, proxy_from_set; /* --proxy-from, repeatable */
  int nsettings;                   /* how many listener settings options were given */
  int nargs;
  char **args; /* positional arguments, the subcommand included */
} opts_t;

/*
 * Parses argv (argv[0] is the command name); options may come anywhere. Returns -1 to go on, or
 * the exit status to return at once. Listener settings are refused for other commands.
 */
int parse_opts(const char *cmd, const char *usage, int allow_json, int argc, char **argv,
               opts_t *o);
/* Opens a client from the options and the config. Returns 0 or the exit status. */
int connect_client(const char *cmd, const opts_t *o, admin_client_t **out);
/* One call; on failure prints "mc-proxy: STATUS: message" and returns EXIT_REFUSED. */
int rpc(admin_client_t *c, const char *method, const void *req,
        const ProtobufCMessageDescriptor *resp_desc, void *resp_out);
void free_msg(void *m);
/* Prints s as a JSON string. */
void json_str(const char *s);

/* A listener's settings as "key=value ..." text, or as a JSON object (listener_cmds.c). NULL
 * settings print as the defaults. */
void format_settings(const McProxy__V1__ListenerSettings *s, char *buf, size_t len);
void print_settings_json(const McProxy__V1__ListenerSettings *s);

/* Cluster mode's state (GetStatus) as text lines, or as a JSON object with --json. Text prints
 * nothing when cluster mode is off. */
void print_cluster_status(const McProxy__V1__ClusterStatus *cs, int json);

#endif
