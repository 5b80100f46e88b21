/*
 * certs_cmd: `mc-proxy certs`, which writes a local CA and admin certificates signed by it
 * (certs_generate in certs.c). Exit status per cli.h.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "certs.h"
#include "cli.h"

static const char certs_usage[] =
    "usage: mc-proxy certs --out DIR [--san NAME|IP]...\n"
    "\n"
    "Writes a small local CA and admin certificates signed by it to DIR: ca.pem, ca.key,\n"
    "server.pem, server.key (subjectAltNames localhost, 127.0.0.1, ::1 and each --san),\n"
    "client.pem and client.key (ECDSA P-256). Keys get mode 0600. Existing files are never\n"
    "overwritten. Then, in the config:\n"
    "\n"
    "  [grpc]\n"
    "  addr = 127.0.0.1:9443\n"
    "  tls_cert = DIR/server.pem\n"
    "  tls_key = DIR/server.key\n"
    "  client_ca = DIR/ca.pem\n"
    "  client_cert = DIR/client.pem\n"
    "  client_key = DIR/client.key\n"
    "  server_ca = DIR/ca.pem\n"
    "\n"
    "  -o, --out DIR       where to write (created if missing)\n"
    "      --san NAME      another DNS name or IP address for the server certificate\n"
    "  -h, --help          this help\n";

int cmd_certs(int argc, char **argv)
{
  static const struct option longopts[] = {
      {"out", required_argument, NULL, 'o'},
      {"san", required_argument, NULL, 's'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *out = NULL;
  const char **sans = calloc((size_t)argc + 1, sizeof(*sans));
  size_t nsans = 0;
  int ch, rc;
  if (!sans) {
    fprintf(stderr, "mc-proxy: out of memory\n");
    return EXIT_REFUSED;
  }
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'o':
      out = optarg;
      break;
    case 's':
      if (!certs_san_valid(optarg)) {
        rc = cli_usage_error("certs", "--san %s: not a DNS name or an IP address", optarg);
        goto done;
      }
      sans[nsans++] = optarg;
      break;
    case 'h':
      fputs(certs_usage, stdout);
      rc = EXIT_OK;
      goto done;
    case ':':
      rc = cli_usage_error("certs", "option '%s' needs a value", argv[optind - 1]);
      goto done;
    default:
      rc = cli_usage_error("certs", "unknown option '%s'", argv[optind - 1]);
      goto done;
    }
  }
  if (optind < argc) {
    rc = cli_usage_error("certs", "unexpected argument '%s'", argv[optind]);
    goto done;
  }
  if (!out) {
    rc = cli_usage_error("certs", "--out DIR is required");
    goto done;
  }
  char err[1024];
  if (certs_generate(out, (const char *const *)sans, nsans, err, sizeof(err)) != 0) {
    fprintf(stderr, "mc-proxy: %s\n", err);
    rc = EXIT_REFUSED;
    goto done;
  }
  printf("wrote %s/ca.pem, ca.key, server.pem, server.key, client.pem, client.key\n", out);
  rc = EXIT_OK;
done:
  free(sans);
  return rc;
}
