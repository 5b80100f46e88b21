"""Turns bench/run.sh's raw results into markdown tables.

usage: report.py RAW_FILE

Each line of RAW_FILE is one measurement: key=value pairs with at least round=, target=,
phase= (rate, stream1, stream8, idle), the load generator's figures, its error counters, its
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

    # cells[target][title] = (median, min, max, n) or ("ERROR", bad, total) or None
    cells = {}
    errors = {}
    for t in targets:
        cells[t] = {}
        errors[t] = 0
        for r in runs:
            if r["target"] == t and failed(r):
                errors[t] += int(r.get("errors", "1") or 1) + int(r.get("backend_bad", "0") or 0)
        for title, phase, key, _ in FIGURES:
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

    print("Median over the rounds, (min–max) when there were several. MB = 10^6 bytes, "
          "GB = 10^9 bytes; CPU is utime+stime of the proxy's processes from /proc.\n")
    print("| target | " + " | ".join(f[0] for f in FIGURES) + " | errors |")
    print("|---|" + "---:|" * len(FIGURES) + "---:|")
    for t in targets:
        row = []
        for title, *_ in FIGURES:
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

    # Ratios to the best peer: the best median among HAProxy, nginx and sniproxy per figure.
    best = {}
    for title, _, _, better in FIGURES:
        if better is None:
            continue
        vals = [(median(p, title), p) for p in PEERS if median(p, title) is not None]
        if vals:
            best[title] = (max if better == "high" else min)(vals)
    ranked = [f for f in FIGURES if f[3] is not None]
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

    if "mc-proxy" in targets:
        print("\nmc-proxy against the targets of issue 4 (ratio to the best peer):\n")
        print("| figure | target | mc-proxy | met |")
        print("|---|---|---:|---|")
        for title, op, bound in TARGETS:
            m = median("mc-proxy", title)
            if title not in best or m is None:
                print(f"| {title} | {op} {bound}× | – | no figure |")
                continue
            ratio = m / best[title][0] if best[title][0] else float("inf")
            ok = ratio <= bound if op == "<=" else ratio >= bound
            print(f"| {title} | {op} {bound}× | {ratio:.2f}× | {'yes' if ok else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
