/*
 * certs: the admin API's certificate files, checked and made with mbedTLS.
 *
 * gRPC's own TLS (OpenSSL inside libgrpc) reports a bad certificate late and vaguely ("handshake
 * failed"), so every admin cert, key and CA is checked here first and each problem is reported
 * naming the file: unreadable or not PEM, a key that does not belong to the certificate, a
 * certificate that has expired or is not valid yet, a CA that did not sign the certificate.
 *
 * certs_generate() backs `mc-proxy certs`: a small local CA plus a server and a client
 * certificate it signed (ECDSA P-256, SHA-256), enough for TCP + mutual TLS out of the box.
 *
 * All functions are synchronous file work: call them at startup or from a command, never on a
 * thread that must not block. Errors come back as -1 with a one-line message in err.
 */
#ifndef MCP_CLI_CERTS_H
#define MCP_CLI_CERTS_H

#include <stddef.h>

#include "config.h"

/* The purpose a certificate is checked for (its extendedKeyUsage, when it has one). */
typedef enum certs_role_e {
  CERTS_SERVER,
  CERTS_CLIENT,
} certs_role_t;

/*
 * Checks a certificate and its private key: both readable PEM, the key matching the
 * certificate, the certificate within its validity period and usable for role. Returns 0 or -1.
 */
int certs_check_pair(const char *cert_path, const char *key_path, certs_role_t role, char *err,
                     size_t errlen);

/* Checks that a CA file is readable PEM holding at least one CA certificate that is in date. */
int certs_check_ca(const char *ca_path, char *err, size_t errlen);

/*
 * Checks that the certificate in cert_path was issued and signed by a CA in ca_path. Returns 0
 * when it was, -1 with a message when the CA's name matches the certificate's issuer but the
 * signature does not verify (the usual mistake: files from two runs of `mc-proxy certs`), and 1
 * with a message when the certificate names another issuer altogether (a public server
 * certificate used with a private client CA is a legitimate set-up, so callers warn).
 */
int certs_check_signed_by(const char *cert_path, const char *ca_path, char *err, size_t errlen);

/*
 * Checks the server side of cfg's [grpc] section: tls_cert/tls_key (certs_check_pair), client_ca
 * (certs_check_ca) and whether client_ca signed tls_cert. Returns 0 or -1; a warning (a
 * tls_cert issued by another CA than client_ca) is written to warn (may be NULL), else warn is
 * set to "". Does nothing for a unix-socket admin address without TLS files.
 */
int certs_check_config(const config_t *cfg, char *err, size_t errlen, char *warn, size_t warnlen);

/*
 * Writes ca.pem, ca.key, server.pem, server.key, client.pem and client.key to dir (created with
 * mode 0700 if missing). The server certificate carries the subjectAltNames localhost,
 * 127.0.0.1 and ::1 plus each of sans (a DNS name or an IP literal). Keys are written with mode
 * 0600. Refuses to overwrite: if any of the six files exists, nothing is written. Returns 0 or -1.
 */
int certs_generate(const char *dir, const char *const *sans, size_t nsans, char *err,
                   size_t errlen);

/* 1 if name is acceptable as a subjectAltName (a DNS name, "*.name", or an IP literal). */
int certs_san_valid(const char *name);

#endif
