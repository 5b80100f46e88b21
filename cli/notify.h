/*
 * notify: the service manager's readiness protocol (Type=notify), written by hand: one datagram
 * of "KEY=VALUE" lines sent to the unix socket named by $NOTIFY_SOCKET (a path, or an abstract
 * name when it starts with '@'). Without $NOTIFY_SOCKET nothing is sent. See docs/RUNBOOK.md.
 */
#ifndef MCP_CLI_NOTIFY_H
#define MCP_CLI_NOTIFY_H

/*
 * Sends the printf-formatted message (lines separated by '\n') in one datagram. Returns 0 when
 * it was sent or there is nowhere to send it, -1 (errno set) when sending failed. Any thread.
 */
int notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
