/*
 * etcd_kv: Range (one page, or a whole prefix in pages at one revision) and Txn, built from and
 * read back into the plain structs of etcd_client.h. The calls themselves go through
 * etcd__call (etcd_client.c), which handles endpoints and deadlines.
 */
#include "etcd_client_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd/api/etcdserverpb/rpc.pb-c.h"

#define PAGE_DEFAULT 10000

void etcd_range_release(etcd_range_t *r)
{
  for (size_t i = 0; i < r->n_kvs; i++)
    etcd__kv_release(&r->kvs[i]);
  free(r->kvs);
  memset(r, 0, sizeof(*r));
}

void etcd_txn_release(etcd_txn_result_t *r)
{
  for (size_t i = 0; i < r->n_gets; i++)
    etcd_range_release(&r->gets[i]);
  free(r->gets);
  memset(r, 0, sizeof(*r));
}

size_t etcd_prefix_end(const char *prefix, size_t prefix_len, char *buf)
{
  memcpy(buf, prefix, prefix_len);
  /* Drop trailing 0xff bytes, then add one to the last byte left. */
  while (prefix_len > 0 && (unsigned char)buf[prefix_len - 1] == 0xff)
    prefix_len--;
  if (prefix_len > 0)
    buf[prefix_len - 1] = (char)((unsigned char)buf[prefix_len - 1] + 1);
  buf[prefix_len] = '\0'; /* callers pass it on as a C string */
  return prefix_len;
}

/* ---- Range ------------------------------------------------------------------------------- */

/* Moves a RangeResponse's pairs to the end of out. */
static int append_kvs(etcd_range_t *out, const Etcdserverpb__RangeResponse *r)
{
  if (r->n_kvs == 0)
    return 0;
  etcd_kv_t *kvs = realloc(out->kvs, (out->n_kvs + r->n_kvs) * sizeof(*kvs));
  if (!kvs)
    return ETCD_ENOMEM;
  out->kvs = kvs;
  for (size_t i = 0; i < r->n_kvs; i++) {
    if (etcd__kv_copy(&out->kvs[out->n_kvs], r->kvs[i]) != 0)
      return ETCD_ENOMEM;
    out->n_kvs++;
  }
  return 0;
}

static int range_bytes(etcd_client_t *c, const char *key, size_t key_len, const char *end,
                       size_t end_len, int64_t revision, int64_t limit, etcd_range_t *out,
                       char *err, size_t errlen)
{
  Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
  ProtobufCMessage *msg;

  req.key.data = (uint8_t *)key;
  req.key.len = key_len;
  req.range_end.data = (uint8_t *)end;
  req.range_end.len = end ? end_len : 0;
  req.revision = revision;
  req.limit = limit;
  int rc = etcd__call(c, "/etcdserverpb.KV/Range", &req.base,
                      &etcdserverpb__range_response__descriptor, 0, &msg, err, errlen);
  if (rc)
    return rc;
  Etcdserverpb__RangeResponse *resp = (Etcdserverpb__RangeResponse *)msg;
  out->revision = resp->header ? resp->header->revision : 0;
  out->more = resp->more;
  out->count = resp->count;
  rc = append_kvs(out, resp);
  if (rc)
    snprintf(err, errlen, "out of memory");
  protobuf_c_message_free_unpacked(msg, NULL);
  return rc;
}

int etcd_client_range(etcd_client_t *c, const char *key, const char *range_end, int64_t revision,
                      int64_t limit, etcd_range_t *out, char *err, size_t errlen)
{
  memset(out, 0, sizeof(*out));
  int rc = range_bytes(c, key, strlen(key), range_end, range_end ? strlen(range_end) : 0, revision,
                       limit, out, err, errlen);
  if (rc)
    etcd_range_release(out);
  return rc;
}

int etcd_client_get_prefix(etcd_client_t *c, const char *prefix, int64_t page_size,
                           etcd_range_t *out, char *err, size_t errlen)
{
  size_t plen = strlen(prefix);
  char *end = malloc(plen + 1), *next = NULL;
  int rc = ETCD_ENOMEM;

  memset(out, 0, sizeof(*out));
  if (!end)
    goto out;
  size_t elen = etcd_prefix_end(prefix, plen, end);
  if (elen == 0) { /* the whole keyspace: range_end "\0" */
    end[0] = '\0';
    elen = 1;
  }
  if (page_size <= 0)
    page_size = PAGE_DEFAULT;
  const char *key = plen ? prefix : "";
  size_t klen = plen ? plen : 1; /* key "\0" with range_end "\0" = every key */
  int64_t revision = 0;
  for (;;) {
    etcd_range_t page = {0};
    rc = range_bytes(c, key, klen, end, elen, revision, page_size, &page, err, errlen);
    if (rc) {
      etcd_range_release(&page);
      goto out;
    }
    if (revision == 0)
      out->revision = revision = page.revision;
    /* Move the page's pairs over without copying them again. */
    etcd_kv_t *kvs = realloc(out->kvs, (out->n_kvs + page.n_kvs + 1) * sizeof(*kvs));
    if (!kvs) {
      etcd_range_release(&page);
      rc = ETCD_ENOMEM;
      goto out;
    }
    out->kvs = kvs;
    if (page.n_kvs) /* an empty page has no array at all: memcpy from NULL is undefined */
      memcpy(out->kvs + out->n_kvs, page.kvs, page.n_kvs * sizeof(*kvs));
    out->n_kvs += page.n_kvs;
    free(page.kvs);
    if (!page.more || page.n_kvs == 0)
      break;
    /* The next page starts just after the last key: that key plus a NUL byte. */
    const etcd_kv_t *last = &out->kvs[out->n_kvs - 1];
    free(next);
    if (!(next = malloc(last->key_len + 1))) {
      rc = ETCD_ENOMEM;
      goto out;
    }
    memcpy(next, last->key, last->key_len);
    next[last->key_len] = '\0';
    key = next;
    klen = last->key_len + 1;
  }
  rc = 0;

out:
  if (rc == ETCD_ENOMEM)
    snprintf(err, errlen, "out of memory");
  if (rc)
    etcd_range_release(out);
  free(end);
  free(next);
  return rc;
}

/* ---- Txn --------------------------------------------------------------------------------- */

/* The protobuf-c structs of one op; filled in place, pointing at the caller's strings. */
typedef struct op_msgs_s {
  Etcdserverpb__RequestOp op;
  Etcdserverpb__PutRequest put;
  Etcdserverpb__DeleteRangeRequest del;
  Etcdserverpb__RangeRequest get;
} op_msgs_t;

static ProtobufCBinaryData bytes_of(const char *s)
{
  ProtobufCBinaryData b = {.len = s ? strlen(s) : 0, .data = (uint8_t *)s};
  return b;
}

static int fill_ops(const etcd_op_t *ops, size_t n, op_msgs_t *m, Etcdserverpb__RequestOp **ptrs)
{
  for (size_t i = 0; i < n; i++) {
    etcdserverpb__request_op__init(&m[i].op);
    ptrs[i] = &m[i].op;
    switch (ops[i].type) {
    case ETCD_OP_PUT:
      etcdserverpb__put_request__init(&m[i].put);
      m[i].put.key = bytes_of(ops[i].key);
      m[i].put.value = bytes_of(ops[i].value);
      m[i].op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
      m[i].op.request_put = &m[i].put;
      break;
    case ETCD_OP_DELETE:
      etcdserverpb__delete_range_request__init(&m[i].del);
      m[i].del.key = bytes_of(ops[i].key);
      m[i].del.range_end = bytes_of(ops[i].range_end);
      m[i].op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
      m[i].op.request_delete_range = &m[i].del;
      break;
    case ETCD_OP_GET:
      etcdserverpb__range_request__init(&m[i].get);
      m[i].get.key = bytes_of(ops[i].key);
      m[i].get.range_end = bytes_of(ops[i].range_end);
      m[i].op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
      m[i].op.request_range = &m[i].get;
      break;
    default:
      return ETCD_EINVAL;
    }
    if (!ops[i].key || (ops[i].type == ETCD_OP_PUT && !ops[i].value))
      return ETCD_EINVAL;
  }
  return 0;
}

static int fill_compares(const etcd_compare_t *cmp, size_t n, Etcdserverpb__Compare *m,
                         Etcdserverpb__Compare **ptrs)
{
  for (size_t i = 0; i < n; i++) {
    etcdserverpb__compare__init(&m[i]);
    ptrs[i] = &m[i];
    if (!cmp[i].key || (unsigned)cmp[i].result > ETCD_CMP_NOT_EQUAL)
      return ETCD_EINVAL;
    m[i].key = bytes_of(cmp[i].key);
    m[i].range_end = bytes_of(cmp[i].range_end);
    m[i].result = (Etcdserverpb__Compare__CompareResult)cmp[i].result;
    m[i].target = (Etcdserverpb__Compare__CompareTarget)cmp[i].target;
    switch (cmp[i].target) {
    case ETCD_TARGET_VERSION:
      m[i].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
      m[i].version = cmp[i].number;
      break;
    case ETCD_TARGET_CREATE:
      m[i].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
      m[i].create_revision = cmp[i].number;
      break;
    case ETCD_TARGET_MOD:
      m[i].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
      m[i].mod_revision = cmp[i].number;
      break;
    case ETCD_TARGET_VALUE:
      if (!cmp[i].value)
        return ETCD_EINVAL;
      m[i].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
      m[i].value = bytes_of(cmp[i].value);
      break;
    default:
      return ETCD_EINVAL;
    }
  }
  return 0;
}

static int txn_result(const Etcdserverpb__TxnResponse *resp, etcd_txn_result_t *out)
{
  out->succeeded = resp->succeeded;
  out->revision = resp->header ? resp->header->revision : 0;
  for (size_t i = 0; i < resp->n_responses; i++) {
    const Etcdserverpb__ResponseOp *r = resp->responses[i];
    if (r->response_case != ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
      continue;
    etcd_range_t *gets = realloc(out->gets, (out->n_gets + 1) * sizeof(*gets));
    if (!gets)
      return ETCD_ENOMEM;
    out->gets = gets;
    etcd_range_t *g = &out->gets[out->n_gets++];
    memset(g, 0, sizeof(*g));
    g->revision = out->revision;
    g->more = r->response_range->more;
    if (append_kvs(g, r->response_range) != 0)
      return ETCD_ENOMEM;
  }
  return 0;
}

int etcd_client_txn(etcd_client_t *c, const etcd_txn_t *txn, etcd_txn_result_t *out, char *err,
                    size_t errlen)
{
  Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
  size_t nops = txn->n_success + txn->n_failure;
  op_msgs_t *ops = calloc(nops + 1, sizeof(*ops));
  Etcdserverpb__RequestOp **op_ptrs = calloc(nops + 1, sizeof(*op_ptrs));
  Etcdserverpb__Compare *cmps = calloc(txn->n_compare + 1, sizeof(*cmps));
  Etcdserverpb__Compare **cmp_ptrs = calloc(txn->n_compare + 1, sizeof(*cmp_ptrs));
  ProtobufCMessage *msg = NULL;
  int rc = ETCD_ENOMEM;

  memset(out, 0, sizeof(*out));
  if (!ops || !op_ptrs || !cmps || !cmp_ptrs) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  if (fill_compares(txn->compare, txn->n_compare, cmps, cmp_ptrs) != 0 ||
      fill_ops(txn->success, txn->n_success, ops, op_ptrs) != 0 ||
      fill_ops(txn->failure, txn->n_failure, ops + txn->n_success, op_ptrs + txn->n_success) != 0) {
    snprintf(err, errlen, "malformed transaction");
    rc = ETCD_EINVAL;
    goto out;
  }
  req.n_compare = txn->n_compare;
  req.compare = cmp_ptrs;
  req.n_success = txn->n_success;
  req.success = op_ptrs;
  req.n_failure = txn->n_failure;
  req.failure = op_ptrs + txn->n_success;
  rc = etcd__call(c, "/etcdserverpb.KV/Txn", &req.base, &etcdserverpb__txn_response__descriptor, 1,
                  &msg, err, errlen);
  if (rc)
    goto out;
  rc = txn_result((Etcdserverpb__TxnResponse *)msg, out);
  if (rc) {
    snprintf(err, errlen, "out of memory");
    etcd_txn_release(out);
  }

out:
  if (msg)
    protobuf_c_message_free_unpacked(msg, NULL);
  free(ops);
  free(op_ptrs);
  free(cmps);
  free(cmp_ptrs);
  return rc;
}
