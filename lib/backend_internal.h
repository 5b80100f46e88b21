/*
 * Internal: the registry of this process's listen addresses (lib/backend.c), which every
 * backend connect checks (mcp_backend_is_own_listener). lib/listener.c registers a listener's
 * socket once it listens and unregisters it before closing it.
 */
#ifndef MCPROXY_BACKEND_INTERNAL_H
#define MCPROXY_BACKEND_INTERNAL_H

/* Registers the address the listening socket fd is bound to (counted; any thread). */
void mcp__backend_self_add(int fd);
/* Drops one registration of fd's address; call before closing fd. */
void mcp__backend_self_remove(int fd);

#endif
