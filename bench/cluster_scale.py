#!/usr/bin/env python3
"""
Cluster mode at scale (issue 13, "Scale"; figures in docs/SCALING.md). Run through
bench/cluster_scale.sh, which documents the environment; this does the work:

 1. a one-member etcd on loopback (own data dir, own ports);
 2. a database seeded with CS_ROUTES routes on one listener (a single-host mc-proxy started once
    on a config that lists them), then `mc-proxy cluster import` of it into the empty prefix:
    the routes reach etcd the way an operator's would;
 3. two instances with [cluster], each on a fresh database, started one after the other: time
    from exec to the log line "cluster: applied PREFIX at revision N", RSS then, and the time of
    a restart that resumes from the stored revision. Instance A runs in this network
    namespace; B in a namespace of its own (a veth pair to this one, private /30 addresses), so
    that both can bind the same listener address as two hosts of a fleet would;
 4. CS_RATE puts per second for CS_SECS seconds (each replaces one route's value, through etcd's
    JSON gateway on a kept-alive HTTP connection), while a thread per instance polls its
    applied revision (GetStatus on its admin socket, about every millisecond). A put's latency
    on an instance is from sending the put to the first poll that shows a revision at or past
    the put's; p50, p99 and max per instance.

Every process started here is stopped by PID, the namespace and veth pair are removed, and the
temporary directory is deleted unless CS_KEEP=1. Results: a markdown table on stdout and in
OUT_DIR/cluster-scale-results.md.
"""

import base64
import bisect
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "test", "integration"))
import admin_pb as pb  # noqa: E402  (the grpcio client of the integration tests)

ETCD = "/usr/bin/etcd"
PREFIX = "/bench/"
NS_HOST_IP, NS_IP = "10.201.77.1", "10.201.77.2"


def env_int(name, default):
    return int(os.environ.get(name, default))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def backend(i):
    """Backends are never connected to: documentation addresses (RFC 5737), never a loop."""
    return "192.0.2.%d:%d" % (1 + i % 250, 1000 + i % 60000)


def alive(p, log):
    if p.poll() is not None:
        raise RuntimeError("%s exited with %s; see %s" % (p.args[-1], p.returncode, log))


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


class Bench:
    def __init__(self, build):
        self.build = build
        self.mcp = os.path.join(build, "cli", "mc-proxy")
        self.routes = env_int("CS_ROUTES", 100000)
        self.rate = env_int("CS_RATE", 100)
        self.secs = env_int("CS_SECS", 30)
        self.keep = os.environ.get("CS_KEEP") == "1"
        self.out_dir = os.environ.get("CS_OUT", build)
        self.dir = tempfile.mkdtemp(prefix="mcp-cluster-scale-")
        self.procs = []
        self.ns = None
        self.veth = None
        self.listen = "127.0.0.1:%d" % free_port()
        self.results = []  # (what, A, B)
        self.notes = []

    # ---- processes ----

    def spawn(self, argv, log, ns=None):
        if ns:
            argv = ["ip", "netns", "exec", ns] + argv  # ip execs the command: same PID
        f = open(log, "ab")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        f.close()
        self.procs.append(p)
        return p

    def stop(self, p, timeout=20):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        return p.returncode

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        if self.ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        if self.veth:
            subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        if self.keep:
            print("kept %s" % self.dir, file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- the namespace of instance B ----

    def make_netns(self):
        if os.geteuid() != 0 or not shutil.which("ip"):
            self.notes.append("instance B skipped: its network namespace needs root and ip(8)")
            return False
        tag = "mcpcs%d" % (os.getpid() % 1000000)
        self.ns, self.veth = tag, tag + "h"
        cmds = [["ip", "netns", "add", tag],
                ["ip", "-n", tag, "link", "set", "lo", "up"],
                ["ip", "link", "add", tag + "h", "type", "veth", "peer", "name", tag + "n"],
                ["ip", "link", "set", tag + "n", "netns", tag],
                ["ip", "addr", "add", NS_HOST_IP + "/30", "dev", tag + "h"],
                ["ip", "link", "set", tag + "h", "up"],
                ["ip", "-n", tag, "addr", "add", NS_IP + "/30", "dev", tag + "n"],
                ["ip", "-n", tag, "link", "set", tag + "n", "up"]]
        for c in cmds:
            r = subprocess.run(c, capture_output=True, text=True)
            if r.returncode != 0:
                self.notes.append("instance B skipped: %s: %s" % (" ".join(c), r.stderr.strip()))
                return False
        return True

    # ---- etcd ----

    def start_etcd(self, with_ns):
        self.etcd_port, peer = free_port(), free_port()
        urls = ["http://127.0.0.1:%d" % self.etcd_port]
        if with_ns:
            urls.append("http://%s:%d" % (NS_HOST_IP, self.etcd_port))
        peer_url = "http://127.0.0.1:%d" % peer
        self.etcd = self.spawn(
            [ETCD, "--name", "m0", "--data-dir", os.path.join(self.dir, "etcd"),
             "--listen-client-urls", ",".join(urls), "--advertise-client-urls", urls[0],
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", "m0=" + peer_url, "--initial-cluster-state", "new",
             "--experimental-watch-progress-notify-interval", "1s",
             "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"],
            os.path.join(self.dir, "etcd.log"))

        def healthy():
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=2)
                c.request("GET", "/health")
                ok = c.getresponse().status == 200
                c.close()
                return ok
            except OSError:
                return False
        wait_for(healthy, 30, "etcd healthy", 0.1)

    def etcd_post(self, conn, path, body):
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("etcd %s: %d %s" % (path, r.status, data[:200]))
        return json.loads(data)

    # ---- configs ----

    def write_config(self, name, db, cluster_url=None, routes=False, grpc=True):
        path = os.path.join(self.dir, name + ".ini")
        with open(path, "w") as f:
            f.write("[database]\npath = %s\n\n[proxy]\nlog_level = info\n" % db)
            if grpc:
                f.write("\n[grpc]\naddr = unix:%s\n" % os.path.join(self.dir, name + ".sock"))
            if cluster_url:
                f.write("\n[cluster]\netcd = %s\nprefix = %s\n" % (cluster_url, PREFIX))
            f.write('\n[listener "%s"]\n' % self.listen)
            if routes:
                for i in range(self.routes):
                    f.write("route = h%06d.example.com %s\n" % (i, backend(i)))
        return path

    def log_has(self, log, pattern):
        try:
            with open(log, errors="replace") as f:
                m = re.search(pattern, f.read())
        except OSError:
            return None
        return m

    # ---- steps ----

    def seed_and_import(self):
        db = os.path.join(self.dir, "seed.db")
        self.write_config("seed", db, routes=True, grpc=False)
        log = os.path.join(self.dir, "seed.log")
        t0 = time.monotonic()
        p = self.spawn([self.mcp, "server", "-c", os.path.join(self.dir, "seed.ini")], log)
        wait_for(lambda: alive(p, log) or self.log_has(log, r" started: "), 300,
                 "the seeding server", 0.05)
        seed_s = time.monotonic() - t0
        if self.stop(p) != 0:
            raise RuntimeError("the seeding server exited with %s" % p.returncode)
        cfg = self.write_config("import", db, "http://127.0.0.1:%d" % self.etcd_port,
                                routes=False, grpc=False)
        t0 = time.monotonic()
        r = subprocess.run([self.mcp, "cluster", "import", "-c", cfg], capture_output=True,
                           text=True, timeout=600)
        import_s = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError("cluster import failed: %s" % r.stderr)
        m = re.search(r"imported (\d+) keys .* in (\d+) transactions; etcd revision (\d+)", r.stdout)
        self.import_rev = int(m.group(3))
        self.notes.append("seeding a single-host database with %d routes from its config: %.1f s"
                          % (self.routes, seed_s))
        self.notes.append("`mc-proxy cluster import`: %s keys in %s transactions, %.1f s "
                          "(etcd revision %s)" % (m.group(1), m.group(2), import_s, m.group(3)))

    def start_instance(self, name, url, ns, fresh=True):
        db = os.path.join(self.dir, name + ".db")
        cfg = self.write_config(name, db, url)
        log = os.path.join(self.dir, name + ".log")
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.unlink(db + suffix)
        with open(log, "a") as f:
            f.write("---- start ----\n")
        start_mark = os.path.getsize(log)
        t0 = time.monotonic()
        p = self.spawn([self.mcp, "server", "-c", cfg], log, ns)

        def since_start(pattern):
            alive(p, log)
            with open(log, errors="replace") as f:
                f.seek(start_mark)
                return re.search(pattern, f.read())
        if fresh:
            m = wait_for(lambda: since_start(r"cluster: applied \S+ at revision (\d+)"), 600,
                         "instance %s to apply the prefix" % name, 0.005)
        else:
            m = wait_for(lambda: since_start(r" started: "), 600,
                         "instance %s to start" % name, 0.005)
        took = time.monotonic() - t0
        if p.poll() is not None:
            raise RuntimeError("instance %s exited: see %s" % (name, log))
        return p, took, os.path.join(self.dir, name + ".sock")

    def check_instance(self, name, sock, strict=True):
        c = pb.Client("unix:" + sock)
        try:
            st = c.call("GetStatus", pb.msg("GetStatusRequest")())
        finally:
            c.close()
        routes = sum(l.route_count for l in st.listeners)
        if routes != self.routes or not st.cluster.connected:
            if not strict:
                return None
            raise RuntimeError("instance %s: %d routes, connected=%s" % (
                name, routes, st.cluster.connected))
        return st.cluster.applied_revision

    def load(self, instances):
        """CS_RATE puts/s for CS_SECS s; returns {name: [latency ms...]} and etcd's put times."""
        stop = threading.Event()
        seen = {name: ([], []) for name, _ in instances}  # revisions, times (both ascending)

        def poll(name, sock):
            c = pb.Client("unix:" + sock)
            revs, times = seen[name]
            last = -1
            req = pb.msg("GetStatusRequest")()
            try:
                while not stop.is_set():
                    rev = c.call("GetStatus", req).cluster.applied_revision
                    now = time.monotonic()
                    if rev > last:
                        revs.append(rev)
                        times.append(now)
                        last = rev
                    time.sleep(0.001)
            finally:
                c.close()
        threads = [threading.Thread(target=poll, args=i, daemon=True) for i in instances]
        for t in threads:
            t.start()
        conn = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=10)
        puts = []  # (revision, sent, acknowledged)
        rnd = random.Random(13)
        n = self.rate * self.secs
        t_start = time.monotonic() + 0.5
        for i in range(n):
            due = t_start + i / float(self.rate)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            key = "%sroutes/%s/h%06d.example.com" % (PREFIX, self.listen,
                                                     rnd.randrange(self.routes))
            value = json.dumps({"backend": backend(i + 1)})
            sent = time.monotonic()
            r = self.etcd_post(conn, "/v3/kv/put", {
                "key": base64.b64encode(key.encode()).decode(),
                "value": base64.b64encode(value.encode()).decode()})
            puts.append((int(r["header"]["revision"]), sent, time.monotonic()))
        late = max(0.0, time.monotonic() - (t_start + n / float(self.rate)))
        last_rev = puts[-1][0]
        for name, _ in instances:
            wait_for(lambda: seen[name][0] and seen[name][0][-1] >= last_rev, 30,
                     "instance %s to apply the last put" % name)
        stop.set()
        for t in threads:
            t.join(10)
        conn.close()
        lat = {}
        for name, _ in instances:
            revs, times = seen[name]
            lat[name] = [(times[bisect.bisect_left(revs, rev)] - sent) * 1000.0
                         for rev, sent, _ in puts]
        etcd_ms = [(ack - sent) * 1000.0 for _, sent, ack in puts]
        return lat, etcd_ms, late

    def run(self):
        with_ns = self.make_netns()
        self.start_etcd(with_ns)
        self.seed_and_import()
        instances = [("A", "http://127.0.0.1:%d" % self.etcd_port, None)]
        if with_ns:
            instances.append(("B", "http://%s:%d" % (NS_HOST_IP, self.etcd_port), self.ns))
        started = {}
        start_s, rss, restart_s = {}, {}, {}
        for name, url, ns in instances:
            p, took, sock = self.start_instance(name, url, ns)
            self.check_instance(name, sock)
            start_s[name], rss[name] = took, rss_mib(p.pid)
            # A restart resumes from the revision stored with the data: no full read.
            if self.stop(p) != 0:
                raise RuntimeError("instance %s exited with %s" % (name, p.returncode))
            p, took, sock = self.start_instance(name, url, ns, fresh=False)
            wait_for(lambda: self.check_instance(name, sock, False), 30, "instance %s in step" % name)
            restart_s[name] = took
            started[name] = (p, sock)
        lat, etcd_ms, late = self.load([(n, started[n][1]) for n, _, _ in instances])
        rss_after = {n: rss_mib(started[n][0].pid) for n, _, _ in instances}
        for n, _, _ in instances:
            if self.stop(started[n][0]) != 0:
                raise RuntimeError("instance %s exited with %s" % (n, started[n][0].returncode))

        names = [n for n, _, _ in instances]
        row = lambda what, fmt, d: self.results.append((what, [fmt % d[n] for n in names]))
        row("start on a fresh database → applied (full read of %d keys)" % (self.routes + 1),
            "%.2f s", start_s)
        row("RSS once applied", "%.0f MiB", rss)
        row("restart on its database (resumes after the stored revision) → started", "%.2f s",
            restart_s)
        for p in (50, 99):
            row("put → applied, p%d (%d puts/s for %d s)" % (p, self.rate, self.secs), "%.1f ms",
                {n: pct(lat[n], p) for n in names})
        row("put → applied, max", "%.1f ms", {n: max(lat[n]) for n in names})
        row("RSS after the puts", "%.0f MiB", rss_after)
        self.notes.append("etcd's own put latency (send → acknowledged): p50 %.1f ms, p99 %.1f ms"
                          % (pct(etcd_ms, 50), pct(etcd_ms, 99)))
        if late > 0.5:
            self.notes.append("the put generator fell %.1f s behind its schedule" % late)
        return names

    def report(self, names):
        lines = ["| | %s |" % " | ".join("instance %s" % n for n in names),
                 "|---|%s" % ("---:|" * len(names))]
        for what, vals in self.results:
            lines.append("| %s | %s |" % (what, " | ".join(vals)))
        lines.append("")
        lines += ["- " + n for n in self.notes]
        text = "\n".join(lines) + "\n"
        sys.stdout.write(text)
        try:
            with open(os.path.join(self.out_dir, "cluster-scale-results.md"), "w") as f:
                f.write(text)
        except OSError as e:
            print("cannot write the results file: %s" % e, file=sys.stderr)


def main():
    if len(sys.argv) != 2:
        print("usage: bench/cluster_scale.py BUILD_DIR", file=sys.stderr)
        return 2
    b = Bench(os.path.abspath(sys.argv[1]))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(1))
    try:
        names = b.run()
        b.report(names)
        return 0
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print("cluster_scale: %s (files in %s)" % (e, b.dir), file=sys.stderr)
        b.keep = True
        return 1
    finally:
        b.cleanup()


if __name__ == "__main__":
    sys.exit(main())
