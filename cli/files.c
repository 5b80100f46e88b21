/* files: PEM reading and lock files, shared by the server and the admin commands. */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

char *files_read_pem(const char *what, const char *path, char *err, size_t errlen)
{
  const char *sep = what ? " " : "";
  what = what ? what : "";
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s%s%s: cannot read: %s", what, sep, path, strerror(errno));
    return NULL;
  }
  char *buf = malloc(FILES_PEM_MAX + 1);
  size_t n = buf ? fread(buf, 1, FILES_PEM_MAX + 1, f) : 0;
  int bad = !buf || ferror(f) || n > FILES_PEM_MAX;
  fclose(f);
  if (bad) {
    snprintf(err, errlen, "%s%s%s: cannot read (unreadable or larger than 1 MiB)", what, sep, path);
    free(buf);
    return NULL;
  }
  buf[n] = '\0';
  return buf;
}

int files_lock(const char *path)
{
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return FILES_LOCK_OPEN;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return FILES_LOCK_HELD;
  }
  return fd;
}
