/*
 * The admin commands (docs/man/mc-proxy.1): status, routes and firewall (listener is in
 * listener_cmds.c) talk to a running instance over gRPC (admin_client.h). Exit status per cli.h: 0 ok, 1 the server said
 * no or could not be reached (one line "mc-proxy: STATUS: message" on stderr), 2 usage or config
 * errors.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin_client.h"
#include "admin_cmds.h"
#include "certs.h"
#include "cli.h"
#include "config.h"
#include "mc_proxy/v1/admin.pb-c.h"
#include "mcproxy/mcproxy.h"

/* Where the package puts the config (docs/man/mc-proxy.1). */
#define DEFAULT_CONFIG "/srv/mc-proxy/mc-proxy.ini"

/* ---- options shared by the commands that talk to the server ---- */

static const char conn_help[] =
    "  -c, --config FILE   the config whose [grpc] addr names the server (default:\n"
    "                      $MC_PROXY_CONFIG, else " DEFAULT_CONFIG ")\n"
    "      --addr ADDR     talk to ADDR (unix:/path or host:port) instead\n"
    "      --cert FILE     client certificate for a TCP addr ([grpc] client_cert)\n"
    "      --key FILE      its private key ([grpc] client_key)\n"
    "      --ca FILE       CA that signed the server's certificate ([grpc] server_ca)\n"
    "  -h, --help          this help\n";

enum {
  OPT_CERT = 256,
  OPT_KEY,
  OPT_CA,
  OPT_ADDR,
  OPT_JSON,
  OPT_SEND_PROXY,
  OPT_MAX_CONNECTIONS,
  OPT_PROXY_PROTOCOL,
  OPT_PROXY_FROM,
  OPT_FALLBACK,
  OPT_RATE_LIMIT,
  OPT_MAX_PER_CLIENT,
};

/*
 * Parses argv (argv[0] is the command name); options may come anywhere, getopt_long moves the
 * positional arguments to the end. Returns -1 to go on, or the exit status to return at once.
 */
int parse_opts(const char *cmd, const char *usage, int allow_json, int argc, char **argv, opts_t *o)
{
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"cert", required_argument, NULL, OPT_CERT},
      {"key", required_argument, NULL, OPT_KEY},
      {"ca", required_argument, NULL, OPT_CA},
      {"addr", required_argument, NULL, OPT_ADDR},
      {"json", no_argument, NULL, OPT_JSON},
      {"send-proxy", required_argument, NULL, OPT_SEND_PROXY},
      {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
      {"proxy-protocol", required_argument, NULL, OPT_PROXY_PROTOCOL},
      {"proxy-from", required_argument, NULL, OPT_PROXY_FROM},
      {"fallback", required_argument, NULL, OPT_FALLBACK},
      {"rate-limit", required_argument, NULL, OPT_RATE_LIMIT},
      {"max-per-client", required_argument, NULL, OPT_MAX_PER_CLIENT},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  memset(o, 0, sizeof(*o));
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      o->config = optarg;
      break;
    case OPT_CERT:
      o->cert = optarg;
      break;
    case OPT_KEY:
      o->key = optarg;
      break;
    case OPT_CA:
      o->ca = optarg;
      break;
    case OPT_ADDR:
      o->addr = optarg;
      break;
    case OPT_JSON:
      if (!allow_json)
        return cli_usage_error(cmd, "--json is not an option of this command");
      o->json = 1;
      break;
    case OPT_SEND_PROXY:
      o->send_proxy = optarg;
      break;
    case OPT_MAX_CONNECTIONS:
    case OPT_PROXY_PROTOCOL:
    case OPT_FALLBACK:
    case OPT_RATE_LIMIT:
    case OPT_MAX_PER_CLIENT:
      o->setting[ch == OPT_MAX_CONNECTIONS  ? SET_MAX_CONNECTIONS
                 : ch == OPT_PROXY_PROTOCOL ? SET_PROXY_PROTOCOL
                 : ch == OPT_FALLBACK       ? SET_FALLBACK
                 : ch == OPT_RATE_LIMIT     ? SET_RATE_LIMIT
                                            : SET_MAX_PER_CLIENT] = optarg;
      o->nsettings++;
      break;
    case OPT_PROXY_FROM:
      if (o->nproxy_from >= CONFIG_PROXY_FROM_MAX)
        return cli_usage_error(cmd, "at most %d --proxy-from", CONFIG_PROXY_FROM_MAX);
      o->proxy_from[o->nproxy_from++] = optarg;
      o->proxy_from_set = 1;
      o->nsettings++;
      break;
    case 'h':
      fputs(usage, stdout);
      fputs(conn_help, stdout);
      return EXIT_OK;
    case ':':
      return cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
    default:
      return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  o->nargs = argc - optind;
  o->args = argv + optind;
  if (o->nsettings && strcmp(cmd, "listener"))
    return cli_usage_error(cmd, "listener settings go with the listener command");
  if (o->send_proxy && strcmp(cmd, "routes"))
    return cli_usage_error(cmd, "--send-proxy goes with routes add");
  /* Without -c: $MC_PROXY_CONFIG, then the packaged default path if it exists. */
  if (!o->config && !o->addr) {
    const char *env = getenv("MC_PROXY_CONFIG");
    if (env && env[0])
      o->config = env;
    else if (access(DEFAULT_CONFIG, F_OK) == 0)
      o->config = DEFAULT_CONFIG;
  }
  if (!o->config && !o->addr)
    return cli_usage_error(cmd, "-c FILE is required (or MC_PROXY_CONFIG, or a config at "
                                DEFAULT_CONFIG ")");
  return -1;
}

/* A wildcard listen address is reached through loopback, which `mc-proxy certs` names. */
static void client_target(const char *addr, char *out, size_t outlen)
{
  if (!addr)
    addr = "";
  if (!strncmp(addr, "0.0.0.0:", 8))
    snprintf(out, outlen, "127.0.0.1:%s", addr + 8);
  else if (!strncmp(addr, "[::]:", 5))
    snprintf(out, outlen, "[::1]:%s", addr + 5);
  else
    snprintf(out, outlen, "%s", addr);
}

/* Opens a client from the options and the config. Returns 0 or the exit status. */
int connect_client(const char *cmd, const opts_t *o, admin_client_t **out)
{
  static config_t cfg;
  static char target[PATH_MAX + 16];
  char err[1024];
  const char *cert = o->cert, *key = o->key, *ca = o->ca;

  if (o->config) {
    if (config_load(o->config, &cfg, err, sizeof(err)) != 0) {
      fprintf(stderr, "mc-proxy: %s\n", err);
      return EXIT_USAGE;
    }
    if (!o->addr && !cfg.has_grpc) {
      fprintf(stderr, "mc-proxy: %s has no [grpc] section: the admin API is off\n", o->config);
      config_free(&cfg);
      return EXIT_USAGE;
    }
    client_target(o->addr ? o->addr : cfg.grpc_addr, target, sizeof(target));
    if (!cert && cfg.client_cert[0])
      cert = cfg.client_cert;
    if (!key && cfg.client_key[0])
      key = cfg.client_key;
    if (!ca && cfg.server_ca[0])
      ca = cfg.server_ca;
  } else {
    client_target(o->addr, target, sizeof(target));
  }

  int is_unix = !strncmp(target, "unix:", 5);
  int rc = EXIT_USAGE;
  if (!is_unix) {
    if (!!cert != !!key) {
      rc = cli_usage_error(cmd, "--cert and --key go together");
      goto out;
    }
    if (cert && certs_check_pair(cert, key, CERTS_CLIENT, err, sizeof(err)) != 0) {
      fprintf(stderr, "mc-proxy: %s\n", err);
      goto out;
    }
    if (ca && certs_check_ca(ca, err, sizeof(err)) != 0) {
      fprintf(stderr, "mc-proxy: %s\n", err);
      goto out;
    }
  }
  admin_client_opts_t co = {
      .target = target,
      .ca_path = is_unix ? NULL : ca,
      .cert_path = is_unix ? NULL : cert,
      .key_path = is_unix ? NULL : key,
  };
  if (admin_client_open(&co, out, err, sizeof(err)) != 0) {
    fprintf(stderr, "mc-proxy: %s\n", err);
    goto out;
  }
  rc = 0;
out:
  if (o->config)
    config_free(&cfg);
  return rc;
}

/* One call; on failure prints "mc-proxy: STATUS: message" and returns EXIT_REFUSED. */
int rpc(admin_client_t *c, const char *method, const void *req,
        const ProtobufCMessageDescriptor *resp_desc, void *resp_out)
{
  char msg[1024];
  ProtobufCMessage *resp = NULL;
  int code = admin_client_call(c, method, req, resp_desc, &resp, msg, sizeof(msg));
  if (code != 0) {
    fprintf(stderr, "mc-proxy: %s: %s\n", admin_status_name(code), msg[0] ? msg : "(no message)");
    return EXIT_REFUSED;
  }
  *(ProtobufCMessage **)resp_out = resp;
  return EXIT_OK;
}

void free_msg(void *m)
{
  if (m)
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- JSON output ---- */

void json_str(const char *s)
{
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20 || ch == 0x7f)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

/* ---- status ---- */

static const char status_usage[] =
    "usage: mc-proxy status -c FILE [--json]\n"
    "\n"
    "Asks a running mc-proxy for its version, uptime and, per listener, its routes, active and\n"
    "maximum connections and counters.\n"
    "\n"
    "      --json          print JSON instead of a table\n";

static void format_uptime(int64_t secs, char *buf, size_t len)
{
  if (secs < 0)
    secs = 0;
  int64_t d = secs / 86400, h = secs / 3600 % 24, m = secs / 60 % 60, s = secs % 60;
  if (d)
    snprintf(buf, len, "%" PRId64 "d %" PRId64 "h %" PRId64 "m", d, h, m);
  else if (h)
    snprintf(buf, len, "%" PRId64 "h %" PRId64 "m %" PRId64 "s", h, m, s);
  else if (m)
    snprintf(buf, len, "%" PRId64 "m %" PRId64 "s", m, s);
  else
    snprintf(buf, len, "%" PRId64 "s", s);
}

/* Unix seconds as "2026-12-03T10:00:00Z". */
static void format_utc(int64_t unix_s, char *buf, size_t len)
{
  time_t t = (time_t)unix_s;
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void print_cluster_status(const McProxy__V1__ClusterStatus *cs, int json)
{
  if (json) {
    if (!cs || !cs->enabled) {
      printf("{\"enabled\":false}");
      return;
    }
    printf("{\"enabled\":true,\"prefix\":");
    json_str(cs->prefix);
    printf(",\"connected\":%s,\"endpoint\":", cs->connected ? "true" : "false");
    json_str(cs->endpoint);
    printf(",\"since_unix\":%" PRId64 ",\"applied_revision\":%" PRId64
           ",\"skipped_total\":%" PRId64 ",\"last_error\":",
           cs->since_unix, cs->applied_revision, cs->skipped_total);
    json_str(cs->last_error);
    printf("}");
    return;
  }
  if (!cs || !cs->enabled)
    return; /* single-host mode: nothing to say */
  char since[32];
  format_utc(cs->since_unix, since, sizeof(since));
  if (cs->connected)
    printf("cluster: connected to %s since %s; prefix %s; applied revision %" PRId64
           "; %" PRId64 " values skipped\n",
           cs->endpoint, since, cs->prefix, cs->applied_revision, cs->skipped_total);
  else
    printf("cluster: DISCONNECTED since %s (%s); serving applied revision %" PRId64
           " of prefix %s; admin changes are refused\n",
           since, cs->last_error, cs->applied_revision, cs->prefix);
  if (cs->connected && cs->skipped_total > 0 && cs->last_error[0])
    printf("  last skipped: %s\n", cs->last_error);
}

static void print_status(const McProxy__V1__GetStatusResponse *st, int json)
{
  int64_t now = (int64_t)time(NULL);
  if (json) {
    printf("{\"version\":");
    json_str(st->version);
    printf(",\"started_at_unix\":%" PRId64 ",\"uptime_seconds\":%" PRId64
           ",\"firewall_rule_count\":%d,\"listeners\":[",
           st->started_at_unix, now - st->started_at_unix, st->firewall_rule_count);
    for (size_t i = 0; i < st->n_listeners; i++) {
      const McProxy__V1__ListenerStatus *l = st->listeners[i];
      printf("%s{\"addr\":", i ? "," : "");
      json_str(l->addr);
      printf(",\"route_count\":%d,\"active_connections\":%" PRId64 ",\"max_connections\":%" PRId64
             ",\"accepted_total\":%" PRId64 ",\"rejected_limit_total\":%" PRId64
             ",\"blocked_total\":%" PRId64 ",\"unrouted_total\":%" PRId64,
             l->route_count, l->active_connections, l->max_connections, l->accepted_total,
             l->rejected_limit_total, l->blocked_total, l->unrouted_total);
      printf(",\"ok_total\":%" PRId64 ",\"timeout_total\":%" PRId64
             ",\"backend_error_total\":%" PRId64 ",\"rate_limited_total\":%" PRId64
             ",\"proxy_error_total\":%" PRId64 ",\"error_total\":%" PRId64
             ",\"shutdown_total\":%" PRId64 ",\"fallback_total\":%" PRId64
             ",\"bytes_in_total\":%" PRId64 ",\"bytes_out_total\":%" PRId64,
             l->ok_total, l->timeout_total, l->backend_error_total, l->rate_limited_total,
             l->proxy_error_total, l->error_total, l->shutdown_total, l->fallback_total,
             l->bytes_in_total, l->bytes_out_total);
      printf(",\"settings\":");
      print_settings_json(l->settings);
      printf("}");
    }
    printf("],\"cluster\":");
    print_cluster_status(st->cluster, 1);
    printf("}\n");
    return;
  }
  char up[64], since[32];
  time_t started = (time_t)st->started_at_unix;
  struct tm tm;
  gmtime_r(&started, &tm);
  strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm);
  format_uptime(now - st->started_at_unix, up, sizeof(up));
  printf("mc-proxy %s, up %s (since %s)\n", st->version, up, since);
  printf("firewall rules: %d\n", st->firewall_rule_count);
  print_cluster_status(st->cluster, 0);
  printf("\n");
  printf("%-24s %6s %16s %10s %9s %9s %9s\n", "LISTENER", "ROUTES", "ACTIVE/MAX", "ACCEPTED",
         "LIMITED", "BLOCKED", "UNROUTED");
  for (size_t i = 0; i < st->n_listeners; i++) {
    const McProxy__V1__ListenerStatus *l = st->listeners[i];
    char am[48];
    if (l->max_connections > 0)
      snprintf(am, sizeof(am), "%" PRId64 "/%" PRId64, l->active_connections, l->max_connections);
    else
      snprintf(am, sizeof(am), "%" PRId64 "/unlimited", l->active_connections);
    printf("%-24s %6d %16s %10" PRId64 " %9" PRId64 " %9" PRId64 " %9" PRId64 "\n", l->addr,
           l->route_count, am, l->accepted_total, l->rejected_limit_total, l->blocked_total,
           l->unrouted_total);
  }
  /* How connections ended (counted when they end) and the bytes they relayed, indented under
   * the table so that each listener still has one row starting with its address. */
  printf("\nconnections ended, and bytes relayed (in = client to backend):\n");
  for (size_t i = 0; i < st->n_listeners; i++) {
    const McProxy__V1__ListenerStatus *l = st->listeners[i];
    printf("  %s: ok %" PRId64 ", timeout %" PRId64 ", backend_error %" PRId64
           ", rate_limited %" PRId64 ", proxy_error %" PRId64 ", error %" PRId64
           ", shutdown %" PRId64 "; bytes in %" PRId64 ", out %" PRId64 "\n",
           l->addr, l->ok_total, l->timeout_total, l->backend_error_total, l->rate_limited_total,
           l->proxy_error_total, l->error_total, l->shutdown_total, l->bytes_in_total,
           l->bytes_out_total);
  }
  printf("\nSETTINGS\n");
  for (size_t i = 0; i < st->n_listeners; i++) {
    char line[2048];
    format_settings(st->listeners[i]->settings, line, sizeof(line));
    printf("  %s %s\n", st->listeners[i]->addr, line);
  }
}

int cmd_status(int argc, char **argv)
{
  opts_t o;
  int rc = parse_opts("status", status_usage, 1, argc, argv, &o);
  if (rc >= 0)
    return rc;
  if (o.nargs > 0)
    return cli_usage_error("status", "unexpected argument '%s'", o.args[0]);
  admin_client_t *c = NULL;
  if ((rc = connect_client("status", &o, &c)) != 0)
    return rc;
  McProxy__V1__GetStatusRequest req = MC_PROXY__V1__GET_STATUS_REQUEST__INIT;
  McProxy__V1__GetStatusResponse *resp = NULL;
  rc = rpc(c, "GetStatus", &req, &mc_proxy__v1__get_status_response__descriptor, &resp);
  if (rc == EXIT_OK)
    print_status(resp, o.json);
  free_msg(resp);
  admin_client_close(c);
  return rc;
}

/* ---- routes ---- */

static const char routes_usage[] =
    "usage: mc-proxy routes list -c FILE [--json] [LISTENER]\n"
    "       mc-proxy routes add -c FILE LISTENER HOSTNAME BACKEND [--send-proxy v1|v2]\n"
    "       mc-proxy routes remove -c FILE LISTENER HOSTNAME\n"
    "\n"
    "Shows or changes the routes of a running mc-proxy. 'add' adds or replaces the route for\n"
    "HOSTNAME; BACKEND is IPv4:port, [IPv6]:port or hostname:port. HOSTNAME may be a wildcard\n"
    "*.example.com (any name ending in .example.com; the longest match wins, an exact name\n"
    "first). Changes are saved to the database before they take effect, and apply to new\n"
    "connections only.\n"
    "\n"
    "      --send-proxy v1|v2  add: the backend gets a PROXY protocol header (the client's\n"
    "                      address) before the client's bytes\n"
    "      --json          list: print JSON\n";

static const char *send_proxy_name(McProxy__V1__ProxyProtocolVersion v)
{
  switch (v) {
  case MC_PROXY__V1__PROXY_PROTOCOL_VERSION__PROXY_PROTOCOL_V1:
    return "v1";
  case MC_PROXY__V1__PROXY_PROTOCOL_VERSION__PROXY_PROTOCOL_V2:
    return "v2";
  default:
    return "none";
  }
}

static int list_routes_of(admin_client_t *c, const char *listener,
                          McProxy__V1__ListRoutesResponse **out)
{
  McProxy__V1__ListRoutesRequest req = MC_PROXY__V1__LIST_ROUTES_REQUEST__INIT;
  req.listener_addr = (char *)listener;
  return rpc(c, "ListRoutes", &req, &mc_proxy__v1__list_routes_response__descriptor, out);
}

static int routes_list(admin_client_t *c, const opts_t *o)
{
  const char *only = o->nargs == 2 ? o->args[1] : NULL;
  McProxy__V1__GetStatusResponse *st = NULL;
  size_t n = 1;
  int rc;
  if (!only) {
    McProxy__V1__GetStatusRequest req = MC_PROXY__V1__GET_STATUS_REQUEST__INIT;
    if ((rc = rpc(c, "GetStatus", &req, &mc_proxy__v1__get_status_response__descriptor, &st)))
      return rc;
    n = st->n_listeners;
  }
  McProxy__V1__ListRoutesResponse **lists = calloc(n ? n : 1, sizeof(*lists));
  if (!lists) {
    free_msg(st);
    fprintf(stderr, "mc-proxy: out of memory\n");
    return EXIT_REFUSED;
  }
  rc = EXIT_OK;
  for (size_t i = 0; i < n && rc == EXIT_OK; i++)
    rc = list_routes_of(c, only ? only : st->listeners[i]->addr, &lists[i]);
  if (rc == EXIT_OK && o->json) {
    printf("[");
    int first = 1;
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < lists[i]->n_routes; j++) {
        printf("%s{\"listener\":", first ? "" : ",");
        json_str(lists[i]->listener_addr);
        printf(",\"hostname\":");
        json_str(lists[i]->routes[j]->hostname);
        printf(",\"backend\":");
        json_str(lists[i]->routes[j]->backend);
        printf(",\"send_proxy\":");
        json_str(send_proxy_name(lists[i]->routes[j]->send_proxy));
        printf("}");
        first = 0;
      }
    printf("]\n");
  } else if (rc == EXIT_OK) {
    printf("%-24s %-40s %-30s %s\n", "LISTENER", "HOSTNAME", "BACKEND", "SEND-PROXY");
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < lists[i]->n_routes; j++)
        printf("%-24s %-40s %-30s %s\n", lists[i]->listener_addr, lists[i]->routes[j]->hostname,
               lists[i]->routes[j]->backend, send_proxy_name(lists[i]->routes[j]->send_proxy));
  }
  for (size_t i = 0; i < n; i++)
    free_msg(lists[i]);
  free(lists);
  free_msg(st);
  return rc;
}

int cmd_routes(int argc, char **argv)
{
  opts_t o;
  int rc = parse_opts("routes", routes_usage, 1, argc, argv, &o);
  if (rc >= 0)
    return rc;
  if (o.nargs < 1)
    return cli_usage_error("routes", "say list, add or remove");
  const char *sub = o.args[0];
  if (!strcmp(sub, "list")) {
    if (o.nargs > 2)
      return cli_usage_error("routes", "list takes at most one LISTENER");
  } else if (!strcmp(sub, "add")) {
    if (o.nargs != 4)
      return cli_usage_error("routes", "add takes LISTENER HOSTNAME BACKEND");
  } else if (!strcmp(sub, "remove")) {
    if (o.nargs != 3)
      return cli_usage_error("routes", "remove takes LISTENER HOSTNAME");
  } else {
    return cli_usage_error("routes", "unknown subcommand '%s' (list, add, remove)", sub);
  }
  if (o.json && strcmp(sub, "list"))
    return cli_usage_error("routes", "--json goes with list only");
  McProxy__V1__ProxyProtocolVersion send_proxy =
      MC_PROXY__V1__PROXY_PROTOCOL_VERSION__PROXY_PROTOCOL_NONE;
  if (o.send_proxy && strcmp(sub, "add"))
    return cli_usage_error("routes", "--send-proxy goes with add only");
  if (o.send_proxy && !strcmp(o.send_proxy, "v1"))
    send_proxy = MC_PROXY__V1__PROXY_PROTOCOL_VERSION__PROXY_PROTOCOL_V1;
  else if (o.send_proxy && !strcmp(o.send_proxy, "v2"))
    send_proxy = MC_PROXY__V1__PROXY_PROTOCOL_VERSION__PROXY_PROTOCOL_V2;
  else if (o.send_proxy && strcmp(o.send_proxy, "none"))
    return cli_usage_error("routes", "--send-proxy takes v1 or v2, not '%s'", o.send_proxy);

  admin_client_t *c = NULL;
  if ((rc = connect_client("routes", &o, &c)) != 0)
    return rc;
  if (!strcmp(sub, "list")) {
    rc = routes_list(c, &o);
  } else if (!strcmp(sub, "add")) {
    McProxy__V1__Route route = MC_PROXY__V1__ROUTE__INIT;
    route.hostname = o.args[2];
    route.backend = o.args[3];
    route.send_proxy = send_proxy;
    McProxy__V1__AddRouteRequest req = MC_PROXY__V1__ADD_ROUTE_REQUEST__INIT;
    req.listener_addr = o.args[1];
    req.route = &route;
    McProxy__V1__AddRouteResponse *resp = NULL;
    rc = rpc(c, "AddRoute", &req, &mc_proxy__v1__add_route_response__descriptor, &resp);
    if (rc == EXIT_OK)
      printf("route %s -> %s on %s saved\n", o.args[2], o.args[3], o.args[1]);
    free_msg(resp);
  } else {
    McProxy__V1__RemoveRouteRequest req = MC_PROXY__V1__REMOVE_ROUTE_REQUEST__INIT;
    req.listener_addr = o.args[1];
    req.hostname = o.args[2];
    McProxy__V1__RemoveRouteResponse *resp = NULL;
    rc = rpc(c, "RemoveRoute", &req, &mc_proxy__v1__remove_route_response__descriptor, &resp);
    if (rc == EXIT_OK)
      printf("route %s on %s removed\n", o.args[2], o.args[1]);
    free_msg(resp);
  }
  admin_client_close(c);
  return rc;
}

/* ---- firewall ---- */

static const char firewall_usage[] =
    "usage: mc-proxy firewall list -c FILE [--json]\n"
    "       mc-proxy firewall add -c FILE ip|cidr|country VALUE\n"
    "       mc-proxy firewall remove -c FILE ip|cidr|country VALUE\n"
    "\n"
    "Shows or changes the firewall of a running mc-proxy: blocked client IPs, CIDR ranges and\n"
    "countries (ISO 3166-1 alpha-2; needs [firewall] geoip_db). A blocked client gets a TCP RST.\n"
    "\n"
    "      --json          list: print JSON\n";

static int firewall_change(admin_client_t *c, const opts_t *o)
{
  mcp_firewall_type_t type;
  if (mcp_firewall_type_parse(o->args[1], &type) != 0)
    return cli_usage_error("firewall", "rule type '%s' is not ip, cidr or country", o->args[1]);
  McProxy__V1__FirewallRule rule = MC_PROXY__V1__FIREWALL_RULE__INIT;
  rule.type = (McProxy__V1__FirewallRuleType)type;
  rule.value = o->args[2];
  int add = !strcmp(o->args[0], "add"), rc;
  ProtobufCMessage *resp = NULL;
  if (add) {
    McProxy__V1__AddFirewallRuleRequest req = MC_PROXY__V1__ADD_FIREWALL_RULE_REQUEST__INIT;
    req.rule = &rule;
    rc = rpc(c, "AddFirewallRule", &req, &mc_proxy__v1__add_firewall_rule_response__descriptor,
             &resp);
  } else {
    McProxy__V1__RemoveFirewallRuleRequest req = MC_PROXY__V1__REMOVE_FIREWALL_RULE_REQUEST__INIT;
    req.rule = &rule;
    rc = rpc(c, "RemoveFirewallRule", &req,
             &mc_proxy__v1__remove_firewall_rule_response__descriptor, &resp);
  }
  if (rc == EXIT_OK)
    printf("firewall %s %s %s\n", o->args[1], o->args[2], add ? "added" : "removed");
  free_msg(resp);
  return rc;
}

static int firewall_list(admin_client_t *c, const opts_t *o)
{
  McProxy__V1__ListFirewallRulesRequest req = MC_PROXY__V1__LIST_FIREWALL_RULES_REQUEST__INIT;
  McProxy__V1__ListFirewallRulesResponse *resp = NULL;
  int rc = rpc(c, "ListFirewallRules", &req,
               &mc_proxy__v1__list_firewall_rules_response__descriptor, &resp);
  if (rc != EXIT_OK)
    return rc;
  if (o->json)
    printf("[");
  else
    printf("%-8s %s\n", "TYPE", "VALUE");
  for (size_t i = 0; i < resp->n_rules; i++) {
    const char *t = mcp_firewall_type_name((mcp_firewall_type_t)resp->rules[i]->type);
    if (o->json) {
      printf("%s{\"type\":", i ? "," : "");
      json_str(t ? t : "unknown");
      printf(",\"value\":");
      json_str(resp->rules[i]->value);
      printf("}");
    } else {
      printf("%-8s %s\n", t ? t : "unknown", resp->rules[i]->value);
    }
  }
  if (o->json)
    printf("]\n");
  free_msg(resp);
  return EXIT_OK;
}

int cmd_firewall(int argc, char **argv)
{
  opts_t o;
  int rc = parse_opts("firewall", firewall_usage, 1, argc, argv, &o);
  if (rc >= 0)
    return rc;
  if (o.nargs < 1)
    return cli_usage_error("firewall", "say list, add or remove");
  const char *sub = o.args[0];
  if (!strcmp(sub, "list")) {
    if (o.nargs != 1)
      return cli_usage_error("firewall", "list takes no arguments");
  } else if (!strcmp(sub, "add") || !strcmp(sub, "remove")) {
    if (o.nargs != 3)
      return cli_usage_error("firewall", "%s takes ip|cidr|country VALUE", sub);
    mcp_firewall_type_t type;
    if (mcp_firewall_type_parse(o.args[1], &type) != 0)
      return cli_usage_error("firewall", "rule type '%s' is not ip, cidr or country", o.args[1]);
  } else {
    return cli_usage_error("firewall", "unknown subcommand '%s' (list, add, remove)", sub);
  }
  if (o.json && strcmp(sub, "list"))
    return cli_usage_error("firewall", "--json goes with list only");

  admin_client_t *c = NULL;
  if ((rc = connect_client("firewall", &o, &c)) != 0)
    return rc;
  rc = !strcmp(sub, "list") ? firewall_list(c, &o) : firewall_change(c, &o);
  admin_client_close(c);
  return rc;
}
