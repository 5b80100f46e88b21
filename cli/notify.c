/* notify: readiness messages for the service manager. See notify.h. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

int notify_send(const char *fmt, ...)
{
  const char *name = getenv("NOTIFY_SOCKET");
  if (!name || !name[0])
    return 0;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  size_t len = strlen(name);
  if ((name[0] != '/' && name[0] != '@') || len >= sizeof(sa.sun_path)) {
    errno = EINVAL;
    return -1;
  }
  memcpy(sa.sun_path, name, len);
  if (name[0] == '@')
    sa.sun_path[0] = '\0'; /* abstract namespace: the length, not a NUL, ends the name */
  socklen_t salen =
      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] == '/' ? 1 : 0));

  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(msg)) {
    errno = EMSGSIZE;
    return -1;
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  ssize_t sent = sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  int saved = errno;
  close(fd);
  errno = saved;
  return sent == n ? 0 : -1;
}
