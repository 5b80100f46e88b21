/*
 * files: the two small file chores the server and the admin commands share: reading a PEM file
 * into memory and taking an exclusive lock file. Synchronous; any thread that may block.
 */
#ifndef MCP_CLI_FILES_H
#define MCP_CLI_FILES_H

#include <stddef.h>

/* Credential files are small; anything bigger is not one. */
#define FILES_PEM_MAX (1 << 20)

/*
 * Reads the whole file at path (at most FILES_PEM_MAX bytes) into a NUL-terminated string the
 * caller frees (wipe it first when it is a key). Returns NULL with a one-line message in err,
 * which starts with "WHAT PATH: " (or "PATH: " when what is NULL).
 */
char *files_read_pem(const char *what, const char *path, char *err, size_t errlen);

/* What files_lock() could not do; errno says why. */
enum { FILES_LOCK_OPEN = -1, FILES_LOCK_HELD = -2 };

/*
 * Opens (creating it with mode 0600, never following a symbolic link) and locks the file at
 * path with an exclusive, non-blocking flock, held until the descriptor is closed. Returns the
 * descriptor, FILES_LOCK_OPEN when it cannot be opened, or FILES_LOCK_HELD when it cannot be
 * locked (errno EWOULDBLOCK: another process holds it). errno is kept for the message.
 */
int files_lock(const char *path);

#endif
