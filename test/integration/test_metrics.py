"""
[metrics] addr on the real server: /metrics checked by promtool and scraped by a real Prometheus
after known traffic (every outcome counted as sent, bytes as logged), /healthz while serving and
draining, `status --json` showing the same counters, and bad input (404, 405, an unparsable
addr, a port in use, a slowloris against the metrics port). See docs/RUNBOOK.md.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import mcp
from mcp import ProxyTestCase

APP = "app.example.com"
DEAD = "dead.example.com"


def http_get(port, path, method="GET", host="127.0.0.1", source=None):
    """(status, body) of one HTTP request to the metrics endpoint."""
    c = http.client.HTTPConnection(host, port, timeout=mcp.IO_TIMEOUT,
                                   source_address=(source, 0) if source else None)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} of a Prometheus text body."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, rest = series.partition("{")
        labels = {}
        for part in rest.rstrip("}").split(",") if rest else []:
            k, _, v = part.partition("=")
            labels[k] = v.strip('"')
        out[(name, frozenset(labels.items()))] = float(value)
    return out


def sample(metrics, name, **labels):
    return metrics.get((name, frozenset(labels.items())))


class MetricsBase(ProxyTestCase):

    def start_with_metrics(self, listeners, extra="", **kw):
        self.mport = mcp.free_port()
        extra = "\n[metrics]\naddr = 127.0.0.1:%d\n%s" % (self.mport, extra)
        p = self.start_proxy(listeners, extra=extra, **kw)
        p.wait_log(r"metrics on http://127\.0\.0\.1:%d/metrics" % self.mport)
        return p

    def metrics(self):
        st, body = http_get(self.mport, "/metrics")
        self.assertEqual(st, 200, body)
        return body


class KnownTraffic(MetricsBase):
    """Every outcome the tests can cause, counted in /metrics, Prometheus and `status`."""

    def setUp(self):
        super().setUp()
        self.echo = self.raw_backend("echo")
        self.dead = mcp.free_port()
        self.p1, self.p2 = mcp.free_port(), mcp.free_port()
        self.l1, self.l2 = "127.0.0.1:%d" % self.p1, "127.0.0.1:%d" % self.p2
        self.sock = os.path.join(self.dir, "admin.sock")
        self.proxy = self.start_with_metrics(
            [(self.l1, None, [(APP, self.echo.addr()), (DEAD, "127.0.0.1:%d" % self.dead)]),
             (self.l2, 1, [(APP, self.echo.addr())])],
            proxy={"handshake_timeout": "500ms"},
            firewall=[("block_ip", "127.0.0.2")],
            extra="\n[grpc]\naddr = unix:%s\n" % self.sock)

    def relay_ok(self, port, payload):
        s = self.connect("127.0.0.1", port)
        data = mcp.client_hello(APP) + payload
        s.sendall(data)
        got = b""
        deadline = time.monotonic() + mcp.IO_TIMEOUT
        while len(got) < len(data) and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        self.assertEqual(got, data)
        return s

    def make_traffic(self):
        """Sends known traffic; returns the expected counts {(listener, outcome): n}."""
        for n in (1000, 70000):
            self.relay_ok(self.p1, os.urandom(n)).close()
        for host in ("nope.example.net", "other.example.org"):
            s = self.connect("127.0.0.1", self.p1)
            s.sendall(mcp.client_hello(host))
            mcp.read_until_closed(s)
        try:  # blocked: reset, maybe before connect() returns
            mcp.read_until_closed(self.connect("127.0.0.1", self.p1, source="127.0.0.2"))
        except ConnectionResetError:
            pass
        s = self.connect("127.0.0.1", self.p1)
        s.sendall(mcp.client_hello(DEAD))
        mcp.read_until_closed(s)
        s = self.connect("127.0.0.1", self.p1)  # silent: handshake_timeout
        mcp.read_until_closed(s, timeout=5)
        held = self.relay_ok(self.p2, b"held")  # l2 is full now (max_connections 1)
        s = self.connect("127.0.0.1", self.p2)
        mcp.read_until_closed(s)
        held.close()
        expected = {(self.l1, "ok"): 2, (self.l1, "unrouted"): 2, (self.l1, "blocked"): 1,
                    (self.l1, "backend_error"): 1, (self.l1, "timeout"): 1,
                    (self.l2, "ok"): 1, (self.l2, "limit"): 1}
        self.proxy.wait_conn(count=sum(expected.values()))
        return expected

    def logged_bytes(self):
        b = {}
        for c in self.proxy.conns():
            for d in ("in", "out"):
                b[(c["listener"], d)] = b.get((c["listener"], d), 0) + c["bytes_" + d]
        return b

    def test_counts_match_in_metrics_promtool_prometheus_and_status(self):
        expected = self.make_traffic()
        nbytes = self.logged_bytes()
        self.assertGreater(nbytes[(self.l1, "in")], 71000)

        def settled():
            m = parse_metrics(self.metrics())
            return m if sample(m, "mcproxy_connections_active", listener=self.l2) == 0 else None
        m = mcp.wait_for(settled, 5, interval=0.1, what="the gauges to settle")
        for listener in (self.l1, self.l2):
            for outcome in ("ok", "unrouted", "blocked", "limit", "backend_error", "timeout"):
                self.assertEqual(sample(m, "mcproxy_connections_total", listener=listener,
                                        outcome=outcome),
                                 expected.get((listener, outcome), 0), (listener, outcome))
            for d in ("in", "out"):
                self.assertEqual(sample(m, "mcproxy_bytes_total", listener=listener,
                                        direction=d), nbytes[(listener, d)])
        self.assertEqual(sample(m, "mcproxy_routes", listener=self.l1), 2)
        self.assertEqual(sample(m, "mcproxy_firewall_rules"), 1)
        self.assertEqual(sample(m, "mcproxy_handshake_seconds_count", listener=self.l1), 5)
        self.assertEqual(sample(m, "mcproxy_backend_connect_seconds_count", listener=self.l1), 2)
        self.assertEqual(sample(m, "mcproxy_connection_duration_seconds_count",
                                listener=self.l1), 7)
        self.assertEqual(sample(m, "mcproxy_log_lines_dropped_total"), 0)
        self.assertIsNotNone(sample(m, "process_open_fds"))
        self.assertTrue(any(k[0] == "mcproxy_build_info" for k in m))

        # promtool on the live output
        self.promtool_check(self.metrics())

        # mc-proxy status --json
        out = subprocess.run([mcp.binary(), "status", "-c", self.proxy.config_path, "--json"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        st = {l["addr"]: l for l in json.loads(out.stdout)["listeners"]}
        self.assertEqual(st[self.l1]["ok_total"], 2)
        self.assertEqual(st[self.l1]["timeout_total"], 1)
        self.assertEqual(st[self.l1]["backend_error_total"], 1)
        self.assertEqual(st[self.l1]["bytes_in_total"], nbytes[(self.l1, "in")])
        self.assertEqual(st[self.l1]["bytes_out_total"], nbytes[(self.l1, "out")])
        self.assertEqual(st[self.l2]["rejected_limit_total"], 1)
        table = subprocess.run([mcp.binary(), "status", "-c", self.proxy.config_path],
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertIn("  %s: ok 2, timeout 1, backend_error 1" % self.l1, table.stdout)
        self.assertIn("bytes in %d, out %d" % (nbytes[(self.l1, "in")], nbytes[(self.l1, "out")]),
                      table.stdout)

        # admin changes, by method and gRPC code
        for args, rc in ((("routes", "add", self.l1, "new.example.com", self.echo.addr()), 0),
                         (("routes", "remove", self.l1, "missing.example.com"), 1)):
            r = subprocess.run([mcp.binary(), args[0], "-c", self.proxy.config_path] +
                               list(args[1:]), capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, rc, r.stderr)
        m = parse_metrics(self.metrics())
        self.assertEqual(sample(m, "mcproxy_admin_changes_total", method="AddRoute", code="0"), 1)
        self.assertEqual(sample(m, "mcproxy_admin_changes_total", method="RemoveRoute",
                                code="5"), 1)
        mcp.wait_for(lambda: sample(parse_metrics(self.metrics()), "mcproxy_routes",
                                    listener=self.l1) == 3, 5, interval=0.1,
                     what="mcproxy_routes to show the added route")

        # a real Prometheus scraping every second
        self.prometheus_agrees(expected, nbytes)

    def promtool_check(self, body):
        if not shutil.which("promtool"):
            self.skipTest("promtool is not installed (Debian package prometheus)")
        r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def prometheus_agrees(self, expected, nbytes):
        if not shutil.which("prometheus"):
            self.skipTest("prometheus is not installed (Debian package prometheus)")
        pdir = tempfile.mkdtemp(prefix="mcp-prom-", dir=self.dir)
        with open(os.path.join(pdir, "prometheus.yml"), "w") as f:
            f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "scrape_configs:\n"
                    "  - job_name: mcproxy\n"
                    "    static_configs: [{targets: ['127.0.0.1:%d']}]\n" % self.mport)
        pport = mcp.free_port()
        log = open(os.path.join(pdir, "prometheus.log"), "w")
        proc = subprocess.Popen(["prometheus", "--config.file=" + os.path.join(pdir, "prometheus.yml"),
                                 "--storage.tsdb.path=" + os.path.join(pdir, "data"),
                                 "--web.listen-address=127.0.0.1:%d" % pport,
                                 "--log.level=warn"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.addCleanup(log.close)
        self.addCleanup(mcp._stop_child, proc)

        def query(q):
            url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (pport, urllib.parse.quote(q))
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    res = json.load(r)["data"]["result"]
            except OSError:
                return None
            return float(res[0]["value"][1]) if res else None

        def has(q, want):
            return query(q) == want
        mcp.wait_for(lambda: has('up{job="mcproxy"}', 1), 60, interval=0.5,
                     what="Prometheus to scrape mc-proxy")
        for (listener, outcome), n in expected.items():
            q = 'mcproxy_connections_total{listener="%s",outcome="%s"}' % (listener, outcome)
            mcp.wait_for(lambda: has(q, n), 10, interval=0.5, what=q + " == %d" % n)
        for (listener, d), n in nbytes.items():
            q = 'mcproxy_bytes_total{listener="%s",direction="%s"}' % (listener, d)
            mcp.wait_for(lambda: has(q, n), 10, interval=0.5, what=q + " == %d" % n)
        q = 'mcproxy_handshake_seconds_count{listener="%s"}' % self.l1
        mcp.wait_for(lambda: has(q, 5), 10, interval=0.5, what=q)
        mcp.wait_for(lambda: query("process_resident_memory_bytes"), 10, interval=0.5,
                     what="process metrics in Prometheus")


class Endpoint(MetricsBase):

    def test_healthz_serving_then_draining_and_wrong_paths_and_methods(self):
        echo = self.raw_backend("echo")
        port = mcp.free_port()
        p = self.start_with_metrics([("127.0.0.1:%d" % port, None, [(APP, echo.addr())])],
                                    proxy={"shutdown_timeout": "3s"})
        self.assertEqual(http_get(self.mport, "/healthz"), (200, "ok\n"))
        self.assertEqual(http_get(self.mport, "/nope")[0], 404)
        self.assertEqual(http_get(self.mport, "/metrics/x")[0], 404)
        self.assertEqual(http_get(self.mport, "/metrics", method="POST")[0], 405)
        self.assertEqual(http_get(self.mport, "/healthz", method="DELETE")[0], 405)
        # A relayed connection keeps the server draining after SIGTERM.
        s = self.connect("127.0.0.1", port)
        s.sendall(mcp.client_hello(APP))
        echo.wait_received(10)
        p.signal(signal.SIGTERM)
        st = mcp.wait_for(lambda: http_get(self.mport, "/healthz")[0] == 503, 2,
                          interval=0.05, what="/healthz 503 while draining")
        self.assertTrue(st)
        s.close()
        self.assertEqual(p.wait_exit(10), 0)
        p.exit_checked = True

    def test_unparsable_addr_exits_2_with_file_and_line(self):
        path = os.path.join(self.dir, "bad.ini")
        with open(path, "w") as f:
            f.write(mcp.config_text(self.db, listeners=[("127.0.0.1:%d" % mcp.free_port(), None,
                                                         [])]))
            f.write("\n[metrics]\naddr = localhost:notaport\n")
        with open(path) as f:
            lines = f.read().splitlines()
        line = lines.index("addr = localhost:notaport") + 1
        r = subprocess.run([mcp.binary(), "server", "-c", path], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("%s:%d" % (path, line), r.stderr)
        self.assertIn("[metrics] addr", r.stderr)
        r = subprocess.run([mcp.binary(), "check", "-c", path], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)

    def test_port_in_use_exits_1_naming_the_address(self):
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        mport = taken.getsockname()[1]
        p = self.start_proxy([("127.0.0.1:%d" % mcp.free_port(), None, [])], wait=False,
                             extra="\n[metrics]\naddr = 127.0.0.1:%d\n" % mport)
        self.assertEqual(p.wait_exit(20), 1, p.log_text())
        p.exit_checked = True
        self.assertIn("127.0.0.1:%d" % mport, p.log_text())
        self.assertIn("[metrics] addr", p.log_text())

    def test_slowloris_on_the_metrics_port_does_not_stop_proxying(self):
        echo = self.raw_backend("echo")
        port = mcp.free_port()
        p = self.start_with_metrics([("127.0.0.1:%d" % port, None, [(APP, echo.addr())])])
        rss0 = p.rss_kb()
        slow = []
        for i in range(120):  # from four addresses; each sends half a request and stalls
            s = socket.socket()
            s.settimeout(2)
            s.bind(("127.0.0.%d" % (4 + i % 4), 0))
            try:
                s.connect(("127.0.0.1", self.mport))
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            except OSError:
                pass
            slow.append(s)
            self.sockets.append(s)
        t0 = time.monotonic()
        for n in range(20):
            s = self.connect("127.0.0.1", port)
            data = mcp.client_hello(APP) + b"x" * n
            s.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = s.recv(65536)
                self.assertTrue(chunk, "proxy closed a relayed connection during the slowloris")
                got += chunk
            s.close()
        self.assertLess(time.monotonic() - t0, 5)
        # Another address still gets its scrape.
        st, body = http_get(self.mport, "/metrics", source="127.0.0.9")
        self.assertEqual(st, 200)
        self.assertIn("mcproxy_connections_total", body)
        self.assertLess(p.rss_kb() - rss0, 20 * 1024)
        p.wait_conn(outcome="ok", count=20)


if __name__ == "__main__":
    unittest.main()
