#!/usr/bin/env python3
"""
The per-client table's memory bound through the real binary: one trusted PROXY peer presents
COUNT distinct client addresses (default 1,000,000) to a listener with rate_limit and
max_connections_per_client set, and the proxy's RSS is printed at checkpoints. The table holds
at most 65,536 clients (include/mcproxy/client_limits.h), so RSS must rise by about the table's
bound while the first 65,536 arrive and then stay flat, however many more come.

  bench/client_table.py [--build BUILD] [--count N] [--every N] [--workers N]

The proxy runs with log_level = warn (no line per connection) and `workers` loops; the flood is
test/integration/proxy_flood.py (about 10,000 connections/s from one Python process here).
At the end it checks the table's behaviour when full: client 0 (tracked, its one token spent) is
refused a second connection (outcome rate_limited), the last client (arrived when the table was
full, so admitted untracked) is not, as `status --json` counts them. Exit status 0, or 1 when
a check fails. Figures of a run
are in docs/RUNBOOK.md ("Per-client limits").
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "test", "integration"))
import proxy_flood  # noqa: E402

TABLE_ENTRIES = 65536
TABLE_MAX_BYTES = 57 * TABLE_ENTRIES + 16384  # MCP_CLIENT_LIMITS_MAX_BYTES(65536)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def wait_listening(port, proc, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("mc-proxy exited with %s" % proc.returncode)
        try:
            # A connection without a header is closed at the handshake timeout; reset it now.
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, proxy_flood.LINGER0)
            s.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mc-proxy not listening on %d after %.0f s" % (port, timeout))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(os.path.dirname(HERE), "build"))
    ap.add_argument("--count", type=int, default=1000000)
    ap.add_argument("--every", type=int, default=100000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    binary = os.path.join(args.build, "cli", "mc-proxy")
    d = tempfile.mkdtemp(prefix="mcp-client-table-")
    port = free_port()
    with open(os.path.join(d, "mc-proxy.ini"), "w") as f:
        f.write("[database]\npath = %s/mc-proxy.db\n[proxy]\nworkers = %d\nlog_level = warn\n"
                "[grpc]\naddr = unix:%s/admin.sock\n"
                '[listener "127.0.0.1:%d"]\nproxy_protocol = on\nproxy_from = 127.0.0.0/8\n'
                "rate_limit = 1/1h\nmax_connections_per_client = 1\n"
                % (d, args.workers, d, port))
    log = open(os.path.join(d, "proxy.log"), "wb")
    proc = subprocess.Popen([binary, "server", "-c", os.path.join(d, "mc-proxy.ini")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    ok = True

    def rate_limited():
        r = subprocess.run([binary, "status", "-c", os.path.join(d, "mc-proxy.ini"), "--json"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("status: " + r.stderr)
        return json.loads(r.stdout)["listeners"][0]["rate_limited_total"]

    try:
        wait_listening(port, proc)
        t0 = time.monotonic()
        base = rss_kb(proc.pid)
        rows = [(0, base, 0.0)]

        def checkpoint(done):
            rows.append((done, rss_kb(proc.pid), time.monotonic() - t0))
            n, kb, t = rows[-1]
            print("%9d addresses  RSS %7d KiB  (+%6d KiB)  %6.1f s" % (n, kb, kb - base, t),
                  flush=True)

        print("mc-proxy %s, workers = %d; table bound %d entries, at most %d KiB"
              % (binary, args.workers, TABLE_ENTRIES, TABLE_MAX_BYTES // 1024))
        print("%9d addresses  RSS %7d KiB" % (0, base), flush=True)
        marks = sorted(set([TABLE_ENTRIES // 2, TABLE_ENTRIES + 4464] +
                           list(range(args.every, args.count + 1, args.every))))
        done = 0
        failures = 0
        for m in marks:
            if m > args.count:
                break
            d_, f_ = proxy_flood.flood("127.0.0.1", port, done, m - done)
            done += d_
            failures += f_
            checkpoint(done)
        if done < args.count:
            d_, f_ = proxy_flood.flood("127.0.0.1", port, done, args.count - done)
            done += d_
            failures += f_
            checkpoint(done)

        after_full = [r for r in rows if r[0] >= TABLE_ENTRIES + 4464]
        if after_full:
            growth = rows[-1][1] - after_full[0][1]
            print("RSS growth from %d to %d addresses: %+d KiB"
                  % (after_full[0][0], rows[-1][0], growth))
        print("RSS growth from 0 to %d addresses: %+d KiB (table bound %d KiB)"
              % (rows[-1][0], rows[-1][1] - base, TABLE_MAX_BYTES // 1024))
        print("connections not closed by the proxy: %d" % failures)
        # Every address was new: none may have been refused.
        during = rate_limited()
        # The table when full: client 0 is tracked (its token spent), the last one is not.
        proxy_flood.one("127.0.0.1", port, 0)
        after_first = rate_limited()
        for _ in range(2):
            proxy_flood.one("127.0.0.1", port, args.count - 1)
        after_last = rate_limited()
        print("rate_limited: %d during the flood; client 0 again: +%d; the last client twice: +%d"
              % (during, after_first - during, after_last - after_first))
        # Past the bound the last client is untracked (+0); below it, tracked like client 0 and
        # refused both times (+2).
        last_refused = 0 if args.count > TABLE_ENTRIES + 4464 else 2
        ok = failures == 0 and during == 0 and after_first == during + 1 and \
            after_last == after_first + last_refused
        print("checks: %s" % ("ok" if ok else "FAILED"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    shutil.rmtree(d, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
