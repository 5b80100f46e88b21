#include "metrics_http.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "mcproxy/listener.h"

struct metrics_http_s {
  struct MHD_Daemon *daemon; /* owns the listening socket once started */
  metrics_http_render_fn render;
  void *data;
  atomic_bool serving;
  int port;
};

static int bind_socket(const char *addr, int *port, char *err, size_t errlen);
static int bound_port(int fd);
static void close_if_ours(int fd, int port);
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls);

int metrics_http_start(metrics_http_t **out, const char *addr, metrics_http_render_fn render,
                       void *data, const metrics_http_options_t *opts, char *err, size_t errlen)
{
  metrics_http_options_t o = {0};
  if (opts)
    o = *opts;
  if (!o.max_connections)
    o.max_connections = 32;
  if (!o.per_ip_connections)
    o.per_ip_connections = 4;
  if (!o.timeout_s)
    o.timeout_s = 10;
  if (!o.conn_memory)
    o.conn_memory = 16384;

  metrics_http_t *h = calloc(1, sizeof(*h));
  if (!h) {
    snprintf(err, errlen, "metrics: out of memory");
    return -ENOMEM;
  }
  h->render = render;
  h->data = data;
  atomic_init(&h->serving, false);

  int fd = bind_socket(addr, &h->port, err, errlen);
  if (fd < 0) {
    free(h);
    return fd;
  }

  /* One internal thread polls every connection with epoll; no thread per connection, so the
   * render callback never runs twice at once. The socket is ours (bound above, for a clear
   * error) and MHD closes it when stopped. */
  h->daemon = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD, 0, NULL, NULL, on_request, h,
                               MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
                               o.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                               o.per_ip_connections, MHD_OPTION_CONNECTION_TIMEOUT, o.timeout_s,
                               MHD_OPTION_CONNECTION_MEMORY_LIMIT, o.conn_memory, MHD_OPTION_END);
  if (!h->daemon) {
    close_if_ours(fd, h->port);
    free(h);
    snprintf(err, errlen, "metrics: cannot start the HTTP server on %s", addr);
    return -EIO;
  }
  *out = h;
  return 0;
}

/* Parses addr and returns a listening, non-blocking TCP socket bound to it, or -errno. */
static int bind_socket(const char *addr, int *port, char *err, size_t errlen)
{
  struct sockaddr_storage ss;
  char text[64];
  if (mcp_listener_addr_parse(addr, &ss, text) != 0) {
    snprintf(err, errlen, "metrics: invalid address \"%.64s\" (want IPv4:port or [IPv6]:port)",
             addr);
    return -EINVAL;
  }
  socklen_t sslen =
      ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "metrics: socket for %s: %s", text, strerror(e));
    return -e;
  }
  /* SO_REUSEADDR so a restart is not refused over TIME_WAIT; never SO_REUSEPORT, so a second
   * instance gets EADDRINUSE instead of silently sharing the port. */
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (ss.ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, 64) != 0) {
    int e = errno;
    snprintf(err, errlen, "metrics: cannot listen on %s: %s", text, strerror(e));
    close(fd);
    return -e;
  }
  *port = bound_port(fd);
  if (*port < 0) {
    int e = errno;
    snprintf(err, errlen, "metrics: getsockname on %s: %s", text, strerror(e));
    close(fd);
    return -e;
  }
  return fd;
}

/* The local port fd is bound to, or -1. */
static int bound_port(int fd)
{
  struct sockaddr_storage ss = {0};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return -1;
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  errno = EAFNOSUPPORT;
  return -1;
}

/*
 * Closes fd after a failed MHD start unless MHD already did (which it does on some failure
 * paths): fd is still ours if it is a listening socket on our port.
 */
static void close_if_ours(int fd, int port)
{
  int listening = 0;
  socklen_t ilen = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) == 0 && listening &&
      bound_port(fd) == port)
    close(fd);
}

void metrics_http_set_serving(metrics_http_t *h, bool serving)
{
  atomic_store(&h->serving, serving);
}

int metrics_http_port(const metrics_http_t *h)
{
  return h->port;
}

unsigned metrics_http_connections(const metrics_http_t *h)
{
  const union MHD_DaemonInfo *info =
      MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
  return info ? info->num_connections : 0;
}

void metrics_http_stop(metrics_http_t *h)
{
  if (!h)
    return;
  MHD_stop_daemon(h->daemon);
  free(h);
}

/* ---- requests ---------------------------------------------------------------------------- */

/* Queues a response whose body is a static string. */
static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *body)
{
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  enum MHD_Result ret = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result reply_metrics(metrics_http_t *h, struct MHD_Connection *conn)
{
  size_t len = 0;
  char *body = h->render ? h->render(h->data, &len) : NULL;
  if (!body)
    return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "metrics unavailable\n");
  struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                          "text/plain; version=0.0.4; charset=utf-8");
  enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return ret;
}

/*
 * Called by MHD once the request line and headers are in. Nothing here needs a request body,
 * so every request is answered on its first call; MHD discards any body that follows.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
  metrics_http_t *h = cls;
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
  if (strcmp(url, "/metrics") == 0)
    return reply_metrics(h, conn);
  if (strcmp(url, "/healthz") == 0) {
    if (atomic_load(&h->serving))
      return reply_text(conn, MHD_HTTP_OK, "ok\n");
    return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not serving\n");
  }
  return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}
