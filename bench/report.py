"""Turns bench/run.sh's raw results into markdown tables.

usage: report.py RAW_FILE

Each line of RAW_FILE is one measurement: key=value pairs with at least round=, target=,
phase= (rate, stream1, stream8, idle, and with BENCH_MODES rate_fin, rate64, rate64_fin,
tls), the load generator's figures, its error counters, its
exit status rc= and the backend's count of altered hellos backend_bad=. A measurement with any
error yields no figure: its cell reads ERROR, because a refused or misrouted connection must
never pass for a fast one.
"""
import statistics
import sys

PEERS = ("haproxy", "nginx", "sniproxy")

# (column title, phase, key, better): better is "low" or "high"; None = informative only.
FIGURES = [
    ("conn/s", "rate", "conn_per_s", "high"),
    ("CPU µs/conn", "rate", "cpu_us_per_conn", "low"),
    ("proxy CPU % (rate)", "rate", "proxy_cpu_pct", None),
    ("p50 µs", "rate", "p50_us", "low"),
    ("p99 µs", "rate", "p99_us", "low"),
    ("MB/s 1 conn", "stream1", "mb_per_s", "high"),
    ("MB/s 8 conns", "stream8", "mb_per_s", "high"),
    ("CPU ms/GB 1 conn", "stream1", "cpu_ms_per_gb", "low"),
    ("CPU ms/GB 8 conns", "stream8", "cpu_ms_per_gb", "low"),
    ("KiB/idle conn", "idle", "kib_per_conn", "low"),
]

# The phases BENCH_MODES adds, in tables of their own (printed only when the run has them).
SHAPES = [
    ("conn/s FIN", "rate_fin", "conn_per_s", "high"),
    ("CPU µs/conn FIN", "rate_fin", "cpu_us_per_conn", "low"),
    ("p99 µs FIN", "rate_fin", "p99_us", "low"),
    ("conn/s 64", "rate64", "conn_per_s", "high"),
    ("CPU µs/conn 64", "rate64", "cpu_us_per_conn", "low"),
    ("p99 µs 64", "rate64", "p99_us", "low"),
    ("conn/s 64 FIN", "rate64_fin", "conn_per_s", "high"),
    ("CPU µs/conn 64 FIN", "rate64_fin", "cpu_us_per_conn", "low"),
    ("p99 µs 64 FIN", "rate64_fin", "p99_us", "low"),
]
TLS = [
    ("TLS conn/s", "tls", "conn_per_s", "high"),
    ("TLS p50 µs", "tls", "p50_us", "low"),
    ("TLS p99 µs", "tls", "p99_us", "low"),
    ("proxy CPU µs/conn", "tls", "cpu_us_per_conn", "low"),
    ("backend CPU µs/conn", "tls", "backend_cpu_us_per_conn", None),
    ("client CPU µs/conn", "tls", "client_cpu_us_per_conn", None),
    ("proxy share of CPU %", "tls", "proxy_share_pct", "low"),
]
GROUPS = [
    ("", FIGURES),
    ("More shapes (BENCH_MODES fin / c64): rate mode with a FIN close, and with 64 loops.",
     SHAPES),
    ("TLS handshake (BENCH_MODES tls): full handshake, 1 KiB reply, close_notify both ways; "
     "the share is the proxy's CPU over proxy + backend + client CPU per connection.", TLS),
]

# Issue 14's per-connection targets, for every rate phase the run has (both close modes).
TARGETS14 = [(f"{kind}{suffix}", op, bound)
             for suffix in ("", " FIN", " 64", " 64 FIN")
             for kind, op, bound in (("CPU µs/conn", "<=", 0.95), ("conn/s", ">=", 1.0),
                                     ("p99 µs", "<=", 1.0))]

# mc-proxy's targets from issue 4: (figure title, comparison, bound) on the ratio to the best peer.
TARGETS = [
    ("KiB/idle conn", "<=", 0.5),
    ("CPU ms/GB 1 conn", "<=", 0.6),
    ("CPU ms/GB 8 conns", "<=", 0.6),
    ("CPU µs/conn", "<=", 0.8),
    ("MB/s 1 conn", ">=", 1.2),
    ("p99 µs", "<=", 1.0),
]


def parse(path):
    runs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
            if "target" in kv and "phase" in kv:
                runs.append(kv)
    return runs


def failed(run):
    if "setup_error" in run:
        return True
    for key in ("errors", "backend_bad", "rc"):
        if run.get(key, "1") != "0":
            return True
    return False


def number(run, key):
    try:
        v = float(run[key])
    except (KeyError, ValueError):
        return None
    return None if v != v else v  # NaN: the figure does not apply (e.g. CPU of "direct")


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    runs = parse(sys.argv[1])
    targets = []
    for r in runs:
        if r["target"] not in targets:
            targets.append(r["target"])
    phases = {r["phase"] for r in runs}
    every = [f for _, figs in GROUPS for f in figs]

    # cells[target][title] = (median, min, max, n) or ("ERROR", bad, total) or None
    cells = {}
    errors = {}
    for t in targets:
        cells[t] = {}
        errors[t] = 0
        for r in runs:
            if r["target"] == t and failed(r):
                errors[t] += int(r.get("errors", "1") or 1) + int(r.get("backend_bad", "0") or 0)
        for title, phase, key, _ in every:
            mine = [r for r in runs if r["target"] == t and r["phase"] == phase]
            bad = [r for r in mine if failed(r)]
            if bad:
                cells[t][title] = ("ERROR", len(bad), len(mine))
                continue
            vals = [v for v in (number(r, key) for r in mine) if v is not None]
            if not vals:
                cells[t][title] = None
                continue
            cells[t][title] = (statistics.median(vals), min(vals), max(vals), len(vals))

    def median(t, title):
        c = cells.get(t, {}).get(title)
        if c is None or c[0] == "ERROR":
            return None
        return c[0]

    # Ratios to the best peer: the best median among HAProxy, nginx and sniproxy per figure.
    best = {}
    for title, _, _, better in every:
        if better is None:
            continue
        vals = [(median(p, title), p) for p in PEERS if median(p, title) is not None]
        if vals:
            best[title] = (max if better == "high" else min)(vals)

    print("Median over the rounds, (min–max) when there were several. MB = 10^6 bytes, "
          "GB = 10^9 bytes; CPU is utime+stime of the proxy's processes from /proc.")
    for heading, figs in GROUPS:
        figs = [f for f in figs if f[1] in phases]
        if not figs:
            continue
        if heading:
            print(f"\n{heading}")
        print_group(figs, targets, cells, errors, best, median)

    rows = [(TARGETS, "issue 4", "rate"), (TARGETS14, "issue 14", None)]
    if "mc-proxy" in targets:
        for table, name, need in rows:
            table = [x for x in table if any(f[0] == x[0] and f[1] in phases for f in every)]
            if not table or (need and need not in phases):
                continue
            print(f"\nmc-proxy against the targets of {name} (ratio to the best peer):\n")
            print("| figure | target | mc-proxy | met |")
            print("|---|---|---:|---|")
            for title, op, bound in table:
                m = median("mc-proxy", title)
                if title not in best or m is None:
                    print(f"| {title} | {op} {bound}× | – | no figure |")
                    continue
                ratio = m / best[title][0] if best[title][0] else float("inf")
                ok = ratio <= bound if op == "<=" else ratio >= bound
                print(f"| {title} | {op} {bound}× | {ratio:.2f}× | {'yes' if ok else 'NO'} |")
    return 0


def print_group(figs, targets, cells, errors, best, median):
    print()
    print("| target | " + " | ".join(f[0] for f in figs) + " | errors |")
    print("|---|" + "---:|" * len(figs) + "---:|")
    for t in targets:
        row = []
        for title, *_ in figs:
            c = cells[t][title]
            if c is None:
                row.append("–")
            elif c[0] == "ERROR":
                row.append(f"ERROR ({c[1]}/{c[2]} runs)")
            elif c[3] > 1:
                row.append(f"{fmt(c[0])} ({fmt(c[1])}–{fmt(c[2])})")
            else:
                row.append(fmt(c[0]))
        print(f"| {t} | " + " | ".join(row) + f" | {errors[t]} |")
    ranked = [f for f in figs if f[3] is not None]
    print("\nRatio of each median to the best peer's median (best peer named per column; "
          "for conn/s and MB/s higher is better, for the rest lower is better).\n")
    print("| target | " + " | ".join(
        f"{f[0]} (best: {best[f[0]][1]})" if f[0] in best else f[0] for f in ranked) + " |")
    print("|---|" + "---:|" * len(ranked))
    for t in targets:
        row = []
        for title, *_ in ranked:
            m = median(t, title)
            if title not in best or m is None or best[title][0] == 0:
                row.append("ERROR" if (cells[t][title] or ("",))[0] == "ERROR" else "–")
            else:
                row.append(f"{m / best[title][0]:.2f}×")
        print(f"| {t} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
