/*
 * certs: checking and making the admin API's certificates with mbedTLS 2.28. See certs.h.
 *
 * mbedTLS is used for files only: the TLS on the admin wire is gRPC's own. 2.28 has no writer
 * for subjectAltName or extendedKeyUsage, so those two extensions are DER-encoded here with the
 * asn1write functions and attached with mbedtls_x509write_crt_set_extension().
 */
#include "certs.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>

#include "mcproxy/hostname.h"

/* ---- checking ---- */

static void tls_error(int ret, char *buf, size_t len)
{
  mbedtls_strerror(ret, buf, len);
}

/* Fails with the OS's reason when path cannot be opened for reading (mbedTLS would only say
 * "file read error"). */
static int check_readable(const char *what, const char *path, char *err, size_t errlen)
{
  if (!path || !path[0]) {
    snprintf(err, errlen, "%s: no file given", what);
    return -1;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s %s: cannot read: %s", what, path, strerror(errno));
    return -1;
  }
  fclose(f);
  return 0;
}

static int load_crt(const char *what, const char *path, mbedtls_x509_crt *crt, int allow_partial,
                    char *err, size_t errlen)
{
  char why[160];
  if (check_readable(what, path, err, errlen) != 0)
    return -1;
  int ret = mbedtls_x509_crt_parse_file(crt, path);
  if (ret < 0) {
    tls_error(ret, why, sizeof(why));
    snprintf(err, errlen, "%s %s: not a PEM certificate (%s)", what, path, why);
    return -1;
  }
  if (ret > 0 && !allow_partial) {
    snprintf(err, errlen, "%s %s: %d certificate(s) in the file do not parse", what, path, ret);
    return -1;
  }
  if (crt->version == 0) {
    snprintf(err, errlen, "%s %s: no certificate in the file", what, path);
    return -1;
  }
  return 0;
}

static void fmt_time(const mbedtls_x509_time *t, char *buf, size_t len)
{
  snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02dZ", t->year, t->mon, t->day, t->hour, t->min,
           t->sec);
}

static int check_dates(const char *what, const char *path, const mbedtls_x509_crt *crt, char *err,
                       size_t errlen)
{
  char when[32];
  if (mbedtls_x509_time_is_past(&crt->valid_to)) {
    fmt_time(&crt->valid_to, when, sizeof(when));
    snprintf(err, errlen, "%s %s: the certificate expired at %s", what, path, when);
    return -1;
  }
  if (mbedtls_x509_time_is_future(&crt->valid_from)) {
    fmt_time(&crt->valid_from, when, sizeof(when));
    snprintf(err, errlen, "%s %s: the certificate is not valid until %s", what, path, when);
    return -1;
  }
  return 0;
}

int certs_check_pair(const char *cert_path, const char *key_path, certs_role_t role, char *err,
                     size_t errlen)
{
  const char *what = role == CERTS_SERVER ? "server certificate" : "client certificate";
  const char *kwhat = role == CERTS_SERVER ? "server key" : "client key";
  mbedtls_x509_crt crt;
  mbedtls_pk_context key;
  char why[160];
  int rc = -1;

  mbedtls_x509_crt_init(&crt);
  mbedtls_pk_init(&key);
  if (load_crt(what, cert_path, &crt, 0, err, errlen) != 0)
    goto out;
  if (check_readable(kwhat, key_path, err, errlen) != 0)
    goto out;
  int ret = mbedtls_pk_parse_keyfile(&key, key_path, NULL);
  if (ret != 0) {
    tls_error(ret, why, sizeof(why));
    snprintf(err, errlen, "%s %s: not an unencrypted PEM private key (%s)", kwhat, key_path, why);
    goto out;
  }
  if (mbedtls_pk_check_pair(&crt.pk, &key) != 0) {
    snprintf(err, errlen, "%s %s does not match the certificate %s", kwhat, key_path, cert_path);
    goto out;
  }
  if (check_dates(what, cert_path, &crt, err, errlen) != 0)
    goto out;
  const char *oid = role == CERTS_SERVER ? MBEDTLS_OID_SERVER_AUTH : MBEDTLS_OID_CLIENT_AUTH;
  size_t oidlen = role == CERTS_SERVER ? MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)
                                       : MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH);
  if (mbedtls_x509_crt_check_extended_key_usage(&crt, oid, oidlen) != 0) {
    snprintf(err, errlen, "%s %s: its extendedKeyUsage does not allow %s", what, cert_path,
             role == CERTS_SERVER ? "TLS server authentication" : "TLS client authentication");
    goto out;
  }
  rc = 0;
out:
  mbedtls_pk_free(&key);
  mbedtls_x509_crt_free(&crt);
  return rc;
}

int certs_check_ca(const char *ca_path, char *err, size_t errlen)
{
  mbedtls_x509_crt ca;
  int rc = -1, usable = 0;
  char last[512] = "";

  mbedtls_x509_crt_init(&ca);
  if (load_crt("CA", ca_path, &ca, 1, err, errlen) != 0)
    goto out;
  /* A bundle may hold several CAs; it is usable when one of them is an in-date CA. */
  for (const mbedtls_x509_crt *c = &ca; c && c->version; c = c->next) {
    if (!c->ca_istrue) {
      snprintf(last, sizeof(last), "CA %s: the certificate is not a CA (basicConstraints)",
               ca_path);
      continue;
    }
    if (check_dates("CA", ca_path, c, last, sizeof(last)) != 0)
      continue;
    usable = 1;
    break;
  }
  if (!usable) {
    snprintf(err, errlen, "%s", last[0] ? last : "CA: no usable certificate");
    goto out;
  }
  rc = 0;
out:
  mbedtls_x509_crt_free(&ca);
  return rc;
}

int certs_check_signed_by(const char *cert_path, const char *ca_path, char *err, size_t errlen)
{
  mbedtls_x509_crt crt, ca;
  uint32_t flags = 0;
  int rc = -1;

  mbedtls_x509_crt_init(&crt);
  mbedtls_x509_crt_init(&ca);
  if (load_crt("certificate", cert_path, &crt, 0, err, errlen) != 0 ||
      load_crt("CA", ca_path, &ca, 1, err, errlen) != 0)
    goto out;

  int named = 0;
  for (const mbedtls_x509_crt *c = &ca; c && c->version; c = c->next)
    if (c->subject_raw.len == crt.issuer_raw.len &&
        !memcmp(c->subject_raw.p, crt.issuer_raw.p, crt.issuer_raw.len))
      named = 1;
  /* Dates are reported by the pair and CA checks; here only the signature chain matters. */
  int ret = mbedtls_x509_crt_verify(&crt, &ca, NULL, NULL, &flags, NULL, NULL);
  flags &= ~(uint32_t)(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE);
  if (ret == 0 || flags == 0) {
    rc = 0;
  } else if (named) {
    snprintf(err, errlen,
             "certificate %s was not signed by the CA %s (same issuer name, different key: files "
             "from two different CAs?)",
             cert_path, ca_path);
  } else {
    char issuer[256] = "?";
    mbedtls_x509_dn_gets(issuer, sizeof(issuer), &crt.issuer);
    snprintf(err, errlen, "certificate %s was issued by \"%s\", not by the CA %s", cert_path,
             issuer, ca_path);
    rc = 1;
  }
out:
  mbedtls_x509_crt_free(&ca);
  mbedtls_x509_crt_free(&crt);
  return rc;
}

int certs_check_config(const config_t *cfg, char *err, size_t errlen, char *warn, size_t warnlen)
{
  if (warn && warnlen)
    warn[0] = '\0';
  if (!cfg->has_grpc)
    return 0;
  if (cfg->grpc_is_unix && !cfg->tls_cert[0] && !cfg->tls_key[0] && !cfg->client_ca[0])
    return 0;
  if (!cfg->tls_cert[0] || !cfg->tls_key[0]) {
    snprintf(err, errlen, "%s: [grpc] needs both tls_cert and tls_key for %s", cfg->path,
             cfg->grpc_addr);
    return -1;
  }
  if (cfg->grpc_is_unix) {
    snprintf(err, errlen, "%s: [grpc] tls_cert/tls_key/client_ca apply to a TCP addr only, not %s",
             cfg->path, cfg->grpc_addr);
    return -1;
  }
  if (certs_check_pair(cfg->tls_cert, cfg->tls_key, CERTS_SERVER, err, errlen) != 0)
    return -1;
  if (!cfg->client_ca[0]) {
    /* client_auth = none (config.c refuses this case otherwise). */
    if (warn && warnlen)
      snprintf(warn, warnlen,
               "client_auth = none: no client certificate is required; anyone who can reach %s "
               "can change routes",
               cfg->grpc_addr);
    return 0;
  }
  if (certs_check_ca(cfg->client_ca, err, errlen) != 0)
    return -1;
  char msg[1024];
  int rc = certs_check_signed_by(cfg->tls_cert, cfg->client_ca, msg, sizeof(msg));
  if (rc < 0) {
    snprintf(err, errlen, "%s", msg);
    return -1;
  }
  if (rc > 0 && warn && warnlen)
    snprintf(warn, warnlen, "%s (fine if clients trust that issuer)", msg);
  return 0;
}

/* ---- making ---- */

#define CA_DAYS 3650
#define LEAF_DAYS 825

int certs_san_valid(const char *name)
{
  unsigned char ip[16];
  char canon[MCP_HOSTNAME_MAX + 1];
  if (!name || !name[0])
    return 0;
  if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1)
    return 1;
  if (!strncmp(name, "*.", 2))
    name += 2;
  return mcp_hostname_normalize(name, strlen(name), canon) >= 0;
}

/* Prepends one DER element (tag, length, contents) in front of *p; returns its size or < 0. */
static int der_prepend(unsigned char **p, unsigned char *start, int tag, const void *data,
                       size_t len)
{
  int a = mbedtls_asn1_write_raw_buffer(p, start, data, len);
  if (a < 0)
    return a;
  int b = mbedtls_asn1_write_len(p, start, len);
  if (b < 0)
    return b;
  int c = mbedtls_asn1_write_tag(p, start, (unsigned char)tag);
  if (c < 0)
    return c;
  return a + b + c;
}

/* Wraps the len bytes just written before *p in a SEQUENCE. */
static int der_sequence(unsigned char **p, unsigned char *start, size_t len)
{
  int b = mbedtls_asn1_write_len(p, start, len);
  if (b < 0)
    return b;
  int c = mbedtls_asn1_write_tag(p, start, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
  if (c < 0)
    return c;
  return (int)len + b + c;
}

/* subjectAltName ::= SEQUENCE OF GeneralName; dNSName [2] IA5String, iPAddress [7] OCTET STRING. */
static int set_san(mbedtls_x509write_cert *crt, const char *const *names, size_t n)
{
  unsigned char buf[4096];
  unsigned char *p = buf + sizeof(buf);
  size_t len = 0;
  for (size_t i = n; i-- > 0;) {
    unsigned char ip[16];
    int ret;
    if (inet_pton(AF_INET, names[i], ip) == 1)
      ret = der_prepend(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7, ip, 4);
    else if (inet_pton(AF_INET6, names[i], ip) == 1)
      ret = der_prepend(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7, ip, 16);
    else
      ret = der_prepend(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2, names[i], strlen(names[i]));
    if (ret < 0)
      return ret;
    len += (size_t)ret;
  }
  int total = der_sequence(&p, buf, len);
  if (total < 0)
    return total;
  return mbedtls_x509write_crt_set_extension(crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                             MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, p,
                                             (size_t)total);
}

/* extendedKeyUsage ::= SEQUENCE OF KeyPurposeId. */
static int set_eku(mbedtls_x509write_cert *crt, certs_role_t role)
{
  unsigned char buf[64];
  unsigned char *p = buf + sizeof(buf);
  int ret = role == CERTS_SERVER
                ? mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_SERVER_AUTH,
                                         MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH))
                : mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_CLIENT_AUTH,
                                         MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH));
  if (ret < 0)
    return ret;
  int total = der_sequence(&p, buf, (size_t)ret);
  if (total < 0)
    return total;
  return mbedtls_x509write_crt_set_extension(crt, MBEDTLS_OID_EXTENDED_KEY_USAGE,
                                             MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, p,
                                             (size_t)total);
}

typedef struct pem_s {
  unsigned char crt[4096];
  unsigned char key[1024];
} pem_t;

typedef struct gen_s {
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_pk_context ca_key;
  char ca_name[128];
} gen_t;

static int new_key(gen_t *g, mbedtls_pk_context *pk)
{
  int ret = mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
  if (ret)
    return ret;
  return mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*pk), mbedtls_ctr_drbg_random,
                             &g->drbg);
}

static void x509_time(time_t t, char out[16])
{
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 16, "%Y%m%d%H%M%S", &tm);
}

/*
 * Issues one certificate for key into pem->crt, signed by g->ca_key (the CA signs itself when
 * key is the CA key). sans/nsans only for the server.
 */
static int issue(gen_t *g, mbedtls_pk_context *key, const char *subject, int days, int is_ca,
                 certs_role_t role, const char *const *sans, size_t nsans, pem_t *pem)
{
  mbedtls_x509write_cert crt;
  mbedtls_mpi serial;
  unsigned char sbytes[16];
  char from[16], to[16];
  int ret;

  mbedtls_x509write_crt_init(&crt);
  mbedtls_mpi_init(&serial);
  if ((ret = mbedtls_ctr_drbg_random(&g->drbg, sbytes, sizeof(sbytes))) != 0)
    goto out;
  sbytes[0] = (unsigned char)((sbytes[0] & 0x7f) | 0x01); /* positive, full length */
  if ((ret = mbedtls_mpi_read_binary(&serial, sbytes, sizeof(sbytes))) != 0)
    goto out;
  /* Backdated an hour so that a client whose clock lags a little still accepts it. */
  time_t now = time(NULL);
  x509_time(now - 3600, from);
  x509_time(now + (time_t)days * 86400, to);

  mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
  mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(&crt, key);
  mbedtls_x509write_crt_set_issuer_key(&crt, &g->ca_key);
  if ((ret = mbedtls_x509write_crt_set_serial(&crt, &serial)) != 0 ||
      (ret = mbedtls_x509write_crt_set_validity(&crt, from, to)) != 0 ||
      (ret = mbedtls_x509write_crt_set_subject_name(&crt, subject)) != 0 ||
      (ret = mbedtls_x509write_crt_set_issuer_name(&crt, g->ca_name)) != 0 ||
      (ret = mbedtls_x509write_crt_set_basic_constraints(&crt, is_ca, is_ca ? 0 : -1)) != 0 ||
      (ret = mbedtls_x509write_crt_set_subject_key_identifier(&crt)) != 0 ||
      (ret = mbedtls_x509write_crt_set_authority_key_identifier(&crt)) != 0)
    goto out;
  unsigned int usage = is_ca ? MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN
                             : MBEDTLS_X509_KU_DIGITAL_SIGNATURE;
  if ((ret = mbedtls_x509write_crt_set_key_usage(&crt, usage)) != 0)
    goto out;
  if (!is_ca && (ret = set_eku(&crt, role)) != 0)
    goto out;
  if (nsans && (ret = set_san(&crt, sans, nsans)) != 0)
    goto out;
  ret = mbedtls_x509write_crt_pem(&crt, pem->crt, sizeof(pem->crt), mbedtls_ctr_drbg_random,
                                  &g->drbg);
  if (ret)
    goto out;
  ret = mbedtls_pk_write_key_pem(key, pem->key, sizeof(pem->key));
out:
  mbedtls_mpi_free(&serial);
  mbedtls_x509write_crt_free(&crt);
  return ret;
}

static const char *const file_names[6] = {"ca.pem",     "ca.key",     "server.pem",
                                          "server.key", "client.pem", "client.key"};

static int write_new_file(const char *path, const unsigned char *data, mode_t mode, char *err,
                          size_t errlen)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  size_t len = strlen((const char *)data), off = 0;
  while (off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      snprintf(err, errlen, "%s: %s", path, n < 0 ? strerror(errno) : "short write");
      close(fd);
      return -1;
    }
    off += (size_t)n;
  }
  /* The umask may have narrowed the mode; make it exactly what the file needs. */
  if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* Adds name to list unless already there (case-insensitively); returns the new count. */
static size_t add_unique(const char **list, size_t n, size_t cap, const char *name)
{
  for (size_t i = 0; i < n; i++)
    if (!strcasecmp(list[i], name))
      return n;
  if (n < cap)
    list[n++] = name;
  return n;
}

#define SAN_MAX 64

int certs_generate(const char *dir, const char *const *sans, size_t nsans, char *err, size_t errlen)
{
  char paths[6][4096];
  const char *all_sans[SAN_MAX];
  size_t n = 0;
  pem_t pems[3];
  char why[160];
  int rc = -1, ret = 0, written = 0;
  gen_t g;
  mbedtls_pk_context server_key, client_key;

  n = add_unique(all_sans, n, SAN_MAX, "localhost");
  n = add_unique(all_sans, n, SAN_MAX, "127.0.0.1");
  n = add_unique(all_sans, n, SAN_MAX, "::1");
  for (size_t i = 0; i < nsans; i++) {
    if (!certs_san_valid(sans[i])) {
      snprintf(err, errlen, "--san %s: not a DNS name or an IP address", sans[i]);
      return -1;
    }
    if (n == SAN_MAX) {
      snprintf(err, errlen, "too many --san names (at most %d)", SAN_MAX - 3);
      return -1;
    }
    n = add_unique(all_sans, n, SAN_MAX, sans[i]);
  }

  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "%s: cannot create the directory: %s", dir, strerror(errno));
    return -1;
  }
  for (int i = 0; i < 6; i++) {
    struct stat st;
    if ((size_t)snprintf(paths[i], sizeof(paths[i]), "%s/%s", dir, file_names[i]) >=
        sizeof(paths[i])) {
      snprintf(err, errlen, "%s: path too long", dir);
      return -1;
    }
    if (lstat(paths[i], &st) == 0) {
      snprintf(err, errlen, "%s already exists; refusing to overwrite (use another --out)",
               paths[i]);
      return -1;
    }
  }

  memset(&g, 0, sizeof(g));
  mbedtls_entropy_init(&g.entropy);
  mbedtls_ctr_drbg_init(&g.drbg);
  mbedtls_pk_init(&g.ca_key);
  mbedtls_pk_init(&server_key);
  mbedtls_pk_init(&client_key);
  static const char pers[] = "mc-proxy certs";
  snprintf(g.ca_name, sizeof(g.ca_name), "CN=mc-proxy admin CA,O=mc-proxy");
  if ((ret = mbedtls_ctr_drbg_seed(&g.drbg, mbedtls_entropy_func, &g.entropy,
                                   (const unsigned char *)pers, sizeof(pers) - 1)) != 0 ||
      (ret = new_key(&g, &g.ca_key)) != 0 || (ret = new_key(&g, &server_key)) != 0 ||
      (ret = new_key(&g, &client_key)) != 0)
    goto fail_tls;
  if ((ret = issue(&g, &g.ca_key, g.ca_name, CA_DAYS, 1, CERTS_SERVER, NULL, 0, &pems[0])) != 0 ||
      (ret = issue(&g, &server_key, "CN=mc-proxy admin server,O=mc-proxy", LEAF_DAYS, 0,
                   CERTS_SERVER, all_sans, n, &pems[1])) != 0 ||
      (ret = issue(&g, &client_key, "CN=mc-proxy admin client,O=mc-proxy", LEAF_DAYS, 0,
                   CERTS_CLIENT, NULL, 0, &pems[2])) != 0)
    goto fail_tls;

  for (written = 0; written < 6; written++) {
    const pem_t *pem = &pems[written / 2];
    int is_key = written % 2;
    if (write_new_file(paths[written], is_key ? pem->key : pem->crt, is_key ? 0600 : 0644, err,
                       errlen) != 0)
      goto fail_write;
  }
  rc = 0;
  goto out;

fail_tls:
  tls_error(ret, why, sizeof(why));
  snprintf(err, errlen, "generating the certificates failed: %s", why);
  goto out;
fail_write:
  /* All or nothing: a half-written set would only confuse the next run. */
  for (int i = 0; i < written; i++)
    unlink(paths[i]);
out:
  mbedtls_platform_zeroize(pems, sizeof(pems));
  mbedtls_pk_free(&client_key);
  mbedtls_pk_free(&server_key);
  mbedtls_pk_free(&g.ca_key);
  mbedtls_ctr_drbg_free(&g.drbg);
  mbedtls_entropy_free(&g.entropy);
  return rc;
}
