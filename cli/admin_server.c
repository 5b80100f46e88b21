/* placeholder until the admin API lands */
#include <stdio.h>
#include "admin_server.h"
int admin_server_start(server_t *srv, char *err, size_t errlen)
{
  snprintf(err, errlen, "the admin API is not built yet");
  return -1;
}
void admin_server_stop(server_t *srv) {}
