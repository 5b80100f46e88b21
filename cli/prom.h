/*
 * prom: writes the Prometheus text exposition format (version 0.0.4) into a growable buffer,
 * and keeps fixed-bucket histograms that cost the data plane two relaxed atomic stores.
 *
 * Writing. A prom_buf_t collects one scrape's body. Every writer appends; an allocation failure
 * sets b->failed and turns later appends into no-ops, so a renderer checks once at the end.
 * Families are written as prom_family() (the HELP and TYPE lines) followed by its samples.
 * Label values and HELP text are escaped here; metric and label names are the caller's
 * constants and are not checked.
 *
 * Counting. Each loop thread owns its own counters and histograms (plain structs of atomics that
 * only that thread writes, with relaxed loads and stores, so no locked instruction on the hot
 * path). A scrape, on any other thread, reads them with relaxed loads and sums them; it never
 * takes a lock a loop could wait on. A scrape may see one observation half applied (its bucket
 * but not yet its sum); the next scrape sees it whole.
 *
 * Process metrics. prom_process_metrics() writes the standard process_* families from
 * /proc/self (Linux only). The design is in docs/METRICS.md.
 */
#ifndef MCP_CLI_PROM_H
#define MCP_CLI_PROM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the output buffer ------------------------------------------------------------------- */

/* One scrape's text. Owned by whoever declared it; free with prom_buf_free() or take data. */
typedef struct prom_buf_s {
  char *data; /* NUL-terminated when len > 0 */
  size_t len;
  size_t cap;
  int failed; /* set once an allocation failed; the text is then incomplete */
} prom_buf_t;

void prom_buf_init(prom_buf_t *b);
void prom_buf_free(prom_buf_t *b);

/*
 * Hands the text to the caller (free() it) and leaves b empty. Returns NULL when an allocation
 * failed while writing (b is then freed), so a half-written scrape is never served.
 */
char *prom_buf_take(prom_buf_t *b, size_t *len);

/* Appends raw text (printf-style). For anything the helpers below do not cover. */
void prom_printf(prom_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- families and samples ---------------------------------------------------------------- */

typedef enum {
  PROM_COUNTER,
  PROM_GAUGE,
  PROM_HISTOGRAM,
  PROM_UNTYPED,
} prom_type_t;

/* One label; value is escaped (\\, \", newline) when written. */
typedef struct prom_label_s {
  const char *name;
  const char *value;
} prom_label_t;

/* Writes "# HELP name help" (help escaped) and "# TYPE name type". Once per family. */
void prom_family(prom_buf_t *b, const char *name, prom_type_t type, const char *help);

/* Writes one sample line: name{labels} value. nlabels may be 0 (labels then unused). */
void prom_sample(prom_buf_t *b, const char *name, const prom_label_t *labels, size_t nlabels,
                 double value);

/* The same for an integer value (exact past 2^53, which a double is not). */
void prom_sample_u64(prom_buf_t *b, const char *name, const prom_label_t *labels, size_t nlabels,
                     uint64_t value);

/* Writes text escaped for a label value (\\, \", \n) without quotes. Exposed for tests. */
void prom_escape_label(prom_buf_t *b, const char *value);

/* ---- per-thread counters ----------------------------------------------------------------- */

/* A counter or gauge written by one thread only. Zero-initialised is zero. */
typedef _Atomic uint64_t prom_counter_t;

/* Owner thread only: a load and a store, both relaxed (no lock prefix on x86-64). */
static inline void prom_counter_add(prom_counter_t *c, uint64_t v)
{
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v, memory_order_relaxed);
}

/* Any thread. */
static inline uint64_t prom_counter_read(const prom_counter_t *c)
{
  return atomic_load_explicit((prom_counter_t *)c, memory_order_relaxed);
}

/* ---- histograms -------------------------------------------------------------------------- */

#define PROM_HIST_MAX_BUCKETS 16

/* Upper bounds of the finite buckets, ascending, in nanoseconds; +Inf is implied. Immutable. */
typedef struct prom_buckets_s {
  size_t n; /* at most PROM_HIST_MAX_BUCKETS */
  uint64_t le_ns[PROM_HIST_MAX_BUCKETS];
} prom_buckets_t;

/* 0.5 ms .. 10 s: TLS handshake (accept to route decided) and backend connect times. */
extern const prom_buckets_t prom_buckets_latency;
/* 10 ms .. 1 day: how long a proxied connection lasted. */
extern const prom_buckets_t prom_buckets_duration;

/*
 * One thread's histogram. Written by that thread only (prom_hist_observe), read by a scraper on
 * any thread (prom_hist_snapshot_add). count[i] is the number of observations that fell in
 * bucket i alone (not cumulative); count[n] is the +Inf bucket. The total count is their sum,
 * so _count always equals the +Inf bucket in what is rendered.
 */
typedef struct prom_hist_s {
  const prom_buckets_t *buckets;
  _Atomic uint64_t count[PROM_HIST_MAX_BUCKETS + 1];
  _Atomic uint64_t sum_ns;
} prom_hist_t;

/* Sets h to empty with the given buckets (a static layout above, or the caller's). */
void prom_hist_init(prom_hist_t *h, const prom_buckets_t *buckets);

/* Owner thread only. Records one observation of ns nanoseconds. */
static inline void prom_hist_observe(prom_hist_t *h, uint64_t ns)
{
  const prom_buckets_t *b = h->buckets;
  size_t i = 0;
  while (i < b->n && ns > b->le_ns[i])
    i++;
  atomic_store_explicit(&h->count[i], atomic_load_explicit(&h->count[i], memory_order_relaxed) + 1,
                        memory_order_relaxed);
  atomic_store_explicit(&h->sum_ns, atomic_load_explicit(&h->sum_ns, memory_order_relaxed) + ns,
                        memory_order_relaxed);
}

/* The sum of several threads' histograms, owned by the scraper (plain numbers, no atomics). */
typedef struct prom_hist_snapshot_s {
  const prom_buckets_t *buckets;
  uint64_t count[PROM_HIST_MAX_BUCKETS + 1];
  uint64_t sum_ns;
} prom_hist_snapshot_t;

void prom_hist_snapshot_init(prom_hist_snapshot_t *s, const prom_buckets_t *buckets);

/* Any thread. Adds h into s; both must use the same buckets (else nothing is added). */
void prom_hist_snapshot_add(prom_hist_snapshot_t *s, const prom_hist_t *h);

/*
 * Writes the samples of one histogram series: name_bucket{labels,le="..."} (cumulative, +Inf
 * last), name_sum{labels} in seconds and name_count{labels}. The family line (prom_family with
 * PROM_HISTOGRAM) is the caller's, once before all series of the family.
 */
void prom_hist_render(prom_buf_t *b, const char *name, const prom_label_t *labels, size_t nlabels,
                      const prom_hist_snapshot_t *s);

/* ---- process metrics --------------------------------------------------------------------- */

/*
 * Writes process_cpu_seconds_total, process_open_fds, process_max_fds,
 * process_virtual_memory_bytes, process_resident_memory_bytes and process_start_time_seconds
 * for the calling process, read from /proc. A value that cannot be read is left out (its family
 * too). Any thread; it opens a few files and lists /proc/self/fd.
 */
void prom_process_metrics(prom_buf_t *b);

#endif
