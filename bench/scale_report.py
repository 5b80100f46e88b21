"""Helpers of bench/scale.sh: generates large route tables and firewalls, times startups, and
turns the raw results into markdown tables.

usage:
  scale_report.py routes N BACKEND           N "route =" lines, app.example.com -> BACKEND among
                                             them, every other name -> an address where nothing
                                             listens (a misrouted connection fails loudly)
  scale_report.py cidrs N SEED               N distinct "block_cidr =" lines, random public
                                             IPv4 and IPv6 ranges, none containing 127.0.0.1
  scale_report.py startup CPU TIMEOUT CMD... run CMD pinned to CPU, time exec -> the first
                                             "listening on" line on stderr, read its RSS, stop
                                             it with SIGTERM; prints one key=value line
  scale_report.py report RAW                 raw lines -> markdown tables

Every raw line is key=value pairs with exp= (base, routes, firewall, idle, startup, workers,
lookup, wildlookup), variant=, round= and the measured figures; a line with errors, a
setup_error or a non-zero rc= yields ERROR in its cell instead of a figure.
"""
import ipaddress
import os
import random
import re
import select
import signal
import statistics
import subprocess
import sys
import time


def gen_routes(n, backend):
    # The benchmark's name sits in the middle of the table, not first or last, so it is found
    # among the others rather than in a slot a small table would give it anyway.
    mid = n // 2
    for i in range(n):
        if i == mid:
            print(f"route = app.example.com {backend}")
        else:
            print(f"route = s{i:06d}.t{i % 997}.example.net 127.0.0.2:9")


def gen_cidrs(n, seed):
    rng = random.Random(seed)
    # First octets 1-223 except 10 and 127: public unicast space, never loopback.
    firsts = [o for o in range(1, 224) if o not in (10, 127)]
    loopback = ipaddress.ip_address("127.0.0.1")
    seen = set()
    while len(seen) < n:
        if rng.random() < 0.5:
            # Blocklist-sized ranges (/20 to single hosts), so that few of them overlap and
            # merge: the lookup index really holds about as many ranges as there are rules.
            addr = (rng.choice(firsts) << 24) | rng.getrandbits(24)
            prefix = rng.randint(20, 32)
            net = ipaddress.ip_network((addr, prefix), strict=False)
        else:
            # 2000::/3 (global unicast) never contains ::ffff:127.0.0.1 or ::1.
            addr = (0x2 << 125) | rng.getrandbits(125)
            prefix = rng.randint(32, 128)
            net = ipaddress.ip_network((addr, prefix), strict=False)
        if net.version == 4 and loopback in net:
            continue
        seen.add(str(net))
    for net in sorted(seen):
        print(f"block_cidr = {net}")


def rss_kib(pid):
    fields = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])
    except OSError:
        pass
    return fields.get("VmRSS", -1), fields.get("VmHWM", -1)


def startup(cpu, timeout, cmd):
    def pin():
        os.sched_setaffinity(0, {cpu})

    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=pin)
    deadline = t0 + timeout
    buf = b""
    ready_ms = None
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(proc.stderr.fileno(), 65536)
        if not chunk:
            break  # exited before listening
        buf += chunk
        if b"listening on" in buf:
            ready_ms = (time.monotonic() - t0) * 1000.0
            break
    # "listening on ADDR (N routes, ...)": what the proxy really loaded, so a table that
    # silently came out smaller than intended shows.
    m = re.search(rb"listening on \S+ \((\d+) routes", buf)
    routes = int(m.group(1)) if m else -1
    m = re.search(rb"(\d+) firewall rules", buf)
    rules = int(m.group(1)) if m else -1
    rss = hwm = -1
    if ready_ms is not None:
        # Let the worker threads settle before reading what startup left resident.
        time.sleep(0.2)
        rss, hwm = rss_kib(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        # Drain stderr so a chatty shutdown cannot block on a full pipe.
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    ok = ready_ms is not None and proc.returncode == 0
    print(f"startup_ms={ready_ms if ready_ms is not None else float('nan'):.1f} "
          f"routes={routes} rules={rules} rss_kib={rss} hwm_kib={hwm} exit={proc.returncode} "
          f"errors={0 if ok else 1} rc={0 if ok else 1}")
    if not ok:
        tail = buf.decode("utf-8", "replace").strip().splitlines()[-3:]
        print("startup failed: " + " | ".join(tail), file=sys.stderr)
    return 0 if ok else 1


# ---- report ----

def parse(path):
    runs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
            if "exp" in kv and "variant" in kv:
                runs.append(kv)
    return runs


def failed(run):
    if "setup_error" in run:
        return True
    return any(run.get(k, "0") != "0" for k in ("errors", "backend_bad", "rc"))


def number(run, key):
    try:
        v = float(run[key])
    except (KeyError, ValueError):
        return None
    return None if v != v else v


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


# Counts, shown without decimals.
COUNTS = ("routes", "rules", "idle_up", "n")


def cell(runs, key):
    """Median (min–max) over the runs, or ERROR when any run failed."""
    if not runs:
        return "–", None
    if any(failed(r) for r in runs):
        return "ERROR", None
    vals = [v for v in (number(r, key) for r in runs) if v is not None]
    if not vals:
        return "–", None
    med = statistics.median(vals)
    if key in COUNTS:
        return " – ".join(f"{v:,.0f}" for v in sorted({min(vals), max(vals)})), med
    if min(vals) == max(vals):
        return fmt(med), med
    return f"{fmt(med)} ({fmt(min(vals))}–{fmt(max(vals))})", med


def table(runs, exps, title, columns, ratio_key=None):
    """One table: a row per (exp, variant) of the given experiments, in first-seen order, and
    a column per (title, key); ratio_key adds the ratio of each row's median to the first's."""
    rows = [r for r in runs if r["exp"] in exps]
    if not rows:
        return
    keys = []
    for r in rows:
        if (r["exp"], r["variant"]) not in keys:
            keys.append((r["exp"], r["variant"]))
    heads = ["variant", "runs"] + [c[0] for c in columns]
    if ratio_key:
        heads.append(f"{ratio_key[0]} vs first row")
    print(f"**{title}**")
    print()
    print("| " + " | ".join(heads) + " |")
    print("|---|---:|" + "---:|" * (len(heads) - 2))
    base = None
    for k in keys:
        vr = [r for r in rows if (r["exp"], r["variant"]) == k]
        label = vr[0].get("label", k[1]).replace("_", " ")
        cells = [label, str(len(vr))]
        for _, key in columns:
            cells.append(cell(vr, key)[0])
        if ratio_key:
            _, med = cell(vr, ratio_key[1])
            if base is None:
                base = med
            cells.append(f"{med / base:.2f}×" if med is not None and base else "–")
        print("| " + " | ".join(cells) + " |")
    print()


def report(path):
    runs = parse(path)
    rate_cols = [("conn/s", "conn_per_s"), ("CPU µs/conn", "cpu_us_per_conn"),
                 ("proxy CPU %", "proxy_cpu_pct"), ("p50 µs", "p50_us"), ("p99 µs", "p99_us")]
    table(runs, ("base", "routes"), "Route table size (rate mode; proxy on CPU 0, load on CPU 1)",
          rate_cols, ("CPU µs/conn", "cpu_us_per_conn"))
    table(runs, ("base", "firewall"), "Firewall size (rate mode; proxy on CPU 0, load on CPU 1)",
          rate_cols, ("CPU µs/conn", "cpu_us_per_conn"))
    table(runs, ("idle",), "Concurrent idle proxied connections (proxy RSS)",
          [("connections up", "idle_up"), ("RSS before KiB", "rss_before_kib"),
           ("RSS after KiB", "rss_after_kib"), ("KiB/conn", "kib_per_conn")])
    table(runs, ("startup",), "Startup (exec → \"listening on\" on stderr; proxy on CPU 0)",
          [("routes loaded", "routes"), ("rules loaded", "rules"),
           ("ms to listening", "startup_ms"),
           ("RSS after start KiB", "rss_kib"),
           ("peak RSS KiB", "hwm_kib")],
          ("ms", "startup_ms"))
    table(runs, ("lookup",), "Lookups alone (ns per lookup, best of 5 × 2,000,000; CPU 0)",
          [("entries", "n"), ("same key, ns", "ns_same"), ("65,536 random keys, ns", "ns_random")])
    table(runs, ("wildlookup",),
          "Route lookups with wildcard routes (ns per lookup, best of 5 × 2,000,000; CPU 0; "
          "wildcard hit = a.b.wK.example.net under *.wK.example.net, miss = 4 failed probes)",
          [("entries", "n"), ("exact, same key", "ns_same"), ("exact, random", "ns_random"),
           ("wildcard hit, random", "ns_wild"), ("miss, random", "ns_miss")])
    table(runs, ("workers",), "Workers (rate mode, nothing pinned)", rate_cols,
          ("conn/s", "conn_per_s"))
    return 1 if any(failed(r) for r in runs) else 0


def main(argv):
    if len(argv) >= 4 and argv[1] == "routes":
        gen_routes(int(argv[2]), argv[3])
        return 0
    if len(argv) >= 4 and argv[1] == "cidrs":
        gen_cidrs(int(argv[2]), int(argv[3]))
        return 0
    if len(argv) >= 5 and argv[1] == "startup":
        return startup(int(argv[2]), float(argv[3]), argv[4:])
    if len(argv) == 3 and argv[1] == "report":
        return report(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
