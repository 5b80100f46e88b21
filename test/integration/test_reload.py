"""
Hitless reload and upgrade (SPEC §10; docs/RUNBOOK.md "Reload" and "Upgrade"): SIGHUP and
`mc-proxy reload` hand the listening sockets and the database to a new process of the binary on
disk while clients keep connecting; a broken config or a new binary that fails leaves the old
process serving; admin changes across the hand-over are applied once or refused, never lost.

The server runs from a copy of the built binary in the test's temp dir, so the test can replace
that file (as a package upgrade does) and check which file each process runs.
"""

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request

import mcp

APP = "app.example.com"
STREAM = "stream.example.com"


def alive(pid):
    """True while PID runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Load:
    """
    About 50 TLS connections a second through the proxy (handshake, one echo, close) and three
    long streams that send data continuously and check every byte comes back.
    """

    def __init__(self, port, cafile, rate=50, nstreams=3):
        self.port, self.cafile, self.rate = port, cafile, rate
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []  # (kind, repr)
        self.streams = []   # per stream: [sent bytearray, received bytearray, error or None]
        self.threads = [threading.Thread(target=self._clients, daemon=True)]
        for i in range(nstreams):
            st = [bytearray(), bytearray(), None]
            self.streams.append(st)
            self.threads.append(threading.Thread(target=self._stream, args=(i, st), daemon=True))
        self.conn_threads = []

    def start(self):
        for t in self.threads:
            t.start()

    def _one(self, n):
        payload = b"hello-%d" % n
        try:
            t = mcp.tls_connect("127.0.0.1", self.port, APP, self.cafile, timeout=10)
            try:
                got = mcp.tls_roundtrip(t, payload)
            finally:
                t.close()
            if got != APP.encode() + b":" + payload:
                raise AssertionError("wrong answer %r" % got)
            with self.lock:
                self.ok += 1
        except ConnectionRefusedError as e:
            with self.lock:
                self.failures.append(("refused", repr(e)))
        except ConnectionResetError as e:
            with self.lock:
                self.failures.append(("reset", repr(e)))
        except Exception as e:  # noqa: BLE001 - every other failure is counted too
            with self.lock:
                self.failures.append(("other", repr(e)))

    def _clients(self):
        n = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            t = threading.Thread(target=self._one, args=(n,), daemon=True)
            t.start()
            self.conn_threads.append(t)
            n += 1
            next_at += 1.0 / self.rate
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def _stream(self, i, st):
        sent, received = st[0], st[1]
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            s.settimeout(10)
            hello = mcp.client_hello(STREAM)
            s.sendall(hello)
            sent += hello
            k = 0
            while not self.stop.is_set():
                chunk = bytes((i * 31 + k + j) % 251 for j in range(1500))
                s.sendall(chunk)
                sent += chunk
                k += 1
                while len(received) < len(sent):
                    data = s.recv(65536)
                    if not data:
                        raise AssertionError("stream %d: EOF mid-stream" % i)
                    received += data
                self.stop.wait(0.02)
            s.shutdown(socket.SHUT_WR)
            while True:
                data = s.recv(65536)
                if not data:
                    break
                received += data
            s.close()
        except Exception as e:  # noqa: BLE001
            st[2] = repr(e)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        for t in self.conn_threads:
            t.join(timeout=30)


class Reload(mcp.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.bin = os.path.join(self.dir, "bin", "mc-proxy")
        os.makedirs(os.path.dirname(self.bin))
        shutil.copy2(mcp.binary(), self.bin)
        self.pidfile = self.db + ".pid"
        self.sock = os.path.join(self.dir, "admin.sock")
        self.extra_pids = []
        self.addCleanup(self._stop_extra)

    def _stop_extra(self):
        """Processes started by a reload are no children of the test: stop them by PID."""
        for pid in self.extra_pids:
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for pid in self.extra_pids:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def start(self, workers=2, shutdown="60s", grpc=True, metrics_port=None):
        self.app = self.tls_backend(APP)
        self.echo = self.raw_backend("echo")
        self.port = mcp.free_port()
        extra = "\n[grpc]\naddr = unix:%s\n" % self.sock if grpc else ""
        if metrics_port:
            extra += "\n[metrics]\naddr = 127.0.0.1:%d\n" % metrics_port
        real_binary = mcp.binary
        mcp.binary = lambda: self.bin
        try:
            p = self.start_proxy([("127.0.0.1:%d" % self.port, None,
                                   [(APP, self.app.addr()), (STREAM, self.echo.addr())])],
                                 proxy={"workers": str(workers), "shutdown_timeout": shutdown},
                                 extra=extra)
        finally:
            mcp.binary = real_binary
        mcp.wait_for(lambda: self.serving_pid() == p.pid, 10, what="pid file")
        return p

    def serving_pid(self):
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def cli(self, *args, env=None):
        return subprocess.run([mcp.binary()] + list(args), capture_output=True, text=True,
                              timeout=90, env=env)

    def wait_takeover(self, old):
        pid = mcp.wait_for(lambda: self.serving_pid() not in (0, old) and self.serving_pid(), 40,
                           what="a new pid in %s" % self.pidfile)
        self.extra_pids.append(pid)
        return pid

    def swap_binary(self):
        """Replaces the file at self.bin with a copy that differs (as an upgrade does)."""
        tmp = self.bin + ".new"
        shutil.copy2(mcp.binary(), tmp)
        with open(tmp, "ab") as f:
            f.write(os.urandom(64))
        os.replace(tmp, self.bin)
        return os.stat(self.bin).st_ino

    def runs_file(self, pid, ino):
        return os.stat("/proc/%d/exe" % pid).st_ino == ino

    def routes_in_db(self):
        con = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=10)
        try:
            return {h for (h,) in con.execute("SELECT hostname FROM routes")}
        finally:
            con.close()

    # ---- the tests ----

    def test_five_reloads_two_upgrades_under_load(self):
        proxy = self.start(workers=2, shutdown="60s")
        load = Load(self.port, self.app.cert)
        load.start()
        time.sleep(1.0)
        pid = proxy.pid
        pids = [pid]
        for i in range(5):
            ino = self.swap_binary() if i in (1, 3) else os.stat(self.bin).st_ino
            if i % 2 == 0:
                r = self.cli("reload", "-c", proxy.config_path)
                self.assertEqual(r.returncode, 0, r.stderr + proxy.log_text()[-3000:])
                self.assertIn("handed over to pid", r.stdout)
            else:
                os.kill(pid, signal.SIGHUP)
            new = self.wait_takeover(pid)
            self.assertNotEqual(new, pid)
            self.assertTrue(self.runs_file(new, ino), "pid %d does not run %s" % (new, self.bin))
            self.assertEqual(os.readlink("/proc/%d/exe" % new), self.bin)
            pid = new
            pids.append(pid)
            time.sleep(1.0)  # traffic on the new process before the next reload
        load.finish()
        served = load.ok
        print("served %d connections across five reloads" % served)
        kinds = [k for k, _ in load.failures]
        self.assertEqual(kinds.count("refused"), 0, load.failures[:5])
        self.assertEqual(kinds.count("reset"), 0, load.failures[:5])
        self.assertEqual(load.failures, [], "log:\n" + proxy.log_text()[-4000:])
        self.assertGreater(served, 200)
        for i, (sent, received, err) in enumerate(load.streams):
            self.assertIsNone(err, "stream %d" % i)
            self.assertGreater(len(sent), 100000, "stream %d sent too little" % i)
            self.assertEqual(bytes(received), bytes(sent), "stream %d not byte-exact" % i)
        # Every old process drained and exited once its streams ended; the first one is ours.
        self.assertEqual(proxy.wait_exit(30), 0, proxy.log_text()[-3000:])
        proxy.exit_checked = True
        for old in pids[1:-1]:
            mcp.wait_for(lambda: not alive(old), 30, what="old pid %d to exit" % old)
        self.assertTrue(alive(pids[-1]))
        log = proxy.log_text()
        self.assertEqual(log.count("took over the listeners and the database"), 5)
        self.assertEqual(log.count("info stopped"), 5, log[-3000:])
        # The serving process answers admin calls and still has both routes.
        r = self.cli("routes", "list", "-c", proxy.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(APP, r.stdout)

    def test_a_broken_config_keeps_the_old_process_serving(self):
        proxy = self.start(workers=1, shutdown="2s")
        with open(proxy.config_path) as f:
            good = f.read()
        with open(proxy.config_path, "w") as f:
            f.write(good.replace("shutdown_timeout = 2s", "shutdown_timeout = forever"))
        r = self.cli("reload", "-c", proxy.config_path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("reload refused", r.stderr)
        self.assertIn("shutdown_timeout", r.stderr)
        os.kill(proxy.pid, signal.SIGHUP)
        proxy.wait_log(r"SIGHUP: the config does not pass check: .*shutdown_timeout.*keeping")
        time.sleep(0.3)
        self.assertEqual(self.serving_pid(), proxy.pid)
        t = mcp.tls_connect("127.0.0.1", self.port, APP, self.app.cert)
        self.assertEqual(mcp.tls_roundtrip(t, b"x"), APP.encode() + b":x")
        t.close()
        # Fixed, the same command reloads.
        with open(proxy.config_path, "w") as f:
            f.write(good)
        r = self.cli("reload", "-c", proxy.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.wait_takeover(proxy.pid)
        self.assertEqual(proxy.wait_exit(20), 0)
        proxy.exit_checked = True

    def test_a_new_binary_that_fails_leaves_the_old_one_serving(self):
        proxy = self.start(workers=2, shutdown="2s")
        with open(self.bin + ".new", "w") as f:
            f.write("#!/bin/sh\necho broken upgrade >&2\nexit 3\n")
        os.chmod(self.bin + ".new", 0o755)
        os.replace(self.bin + ".new", self.bin)
        r = self.cli("reload", "-c", proxy.config_path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("exited with status 3 before it was ready", r.stderr)
        proxy.wait_log(r"SIGHUP: reload failed: .*status 3.*keeping the running process")
        self.assertEqual(self.serving_pid(), proxy.pid)
        # Still serving traffic, and the admin API is back with the database lock.
        t = mcp.tls_connect("127.0.0.1", self.port, APP, self.app.cert)
        self.assertEqual(mcp.tls_roundtrip(t, b"y"), APP.encode() + b":y")
        t.close()
        r = self.cli("routes", "add", "-c", proxy.config_path, "127.0.0.1:%d" % self.port,
                     "after.example.com", "127.0.0.1:9")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("after.example.com", self.routes_in_db())

    def healthz(self, port):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def test_the_metrics_endpoint_moves_to_the_new_process_and_back_on_failure(self):
        mport = mcp.free_port()
        proxy = self.start(workers=1, shutdown="2s", metrics_port=mport)
        mcp.wait_for(lambda: self.healthz(mport) == 200, 10, what="/healthz 200")
        # A failed hand-over: the old process takes the endpoint back.
        good = self.bin + ".good"
        shutil.copy2(self.bin, good)
        with open(self.bin + ".new", "w") as f:
            f.write("#!/bin/sh\nexit 3\n")
        os.chmod(self.bin + ".new", 0o755)
        os.replace(self.bin + ".new", self.bin)
        r = self.cli("reload", "-c", proxy.config_path)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        mcp.wait_for(lambda: self.healthz(mport) == 200, 10, what="/healthz back on the old pid")
        # A hand-over that works: the new process serves /metrics on the same address.
        os.replace(good, self.bin)
        r = self.cli("reload", "-c", proxy.config_path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        new = self.wait_takeover(proxy.pid)
        proxy.wait_exit(20) if hasattr(proxy, "wait_exit") else None
        mcp.wait_for(lambda: self.healthz(mport) == 200, 10, what="/healthz from the new pid")
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as m:
            self.assertIn(b"mcproxy_build_info", m.read())
        self.assertTrue(alive(new))

    def test_admin_changes_across_the_hand_over_are_applied_once_or_refused(self):
        proxy = self.start(workers=2, shutdown="2s")
        laddr = "127.0.0.1:%d" % self.port
        results = {}
        stop = threading.Event()

        def adder(k):
            n = 0
            while not stop.is_set() and n < 200:
                host = "h%d-%d.example.com" % (k, n)
                r = self.cli("routes", "add", "-c", proxy.config_path, laddr, host, "127.0.0.1:9")
                results[host] = (r.returncode, r.stderr.strip())
                n += 1

        threads = [threading.Thread(target=adder, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        r = self.cli("reload", "-c", proxy.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        new = self.wait_takeover(proxy.pid)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        in_db = self.routes_in_db()
        oks = [h for h, (rc, _) in results.items() if rc == 0]
        refused = {h: err for h, (rc, err) in results.items() if rc != 0}
        self.assertGreater(len(oks), 5)
        print("admin changes: %d OK, %d refused" % (len(oks), len(refused)))
        for h in oks:
            self.assertIn(h, in_db, "OK'd change lost: " + h)
        for h, err in refused.items():
            self.assertNotIn(h, in_db, "refused change applied: %s (%s)" % (h, err))
            self.assertIn("UNAVAILABLE", err)
        # The new process serves the changes made before it took over.
        r = self.cli("routes", "list", "-c", proxy.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        for h in oks:
            self.assertIn(h, r.stdout)
        self.assertTrue(alive(new))

    def test_admin_commands_find_the_config_in_MC_PROXY_CONFIG(self):
        proxy = self.start(workers=1, shutdown="2s")
        env = dict(os.environ, MC_PROXY_CONFIG=proxy.config_path)
        r = self.cli("status", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("127.0.0.1:%d" % self.port, r.stdout)
        env_missing = dict(os.environ)
        env_missing.pop("MC_PROXY_CONFIG", None)
        if not os.path.exists("/srv/mc-proxy/mc-proxy.ini"):
            r = self.cli("status", env=env_missing)
            self.assertEqual(r.returncode, 2)
            self.assertIn("MC_PROXY_CONFIG", r.stderr)
        r = self.cli("reload", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.wait_takeover(proxy.pid)
        self.assertEqual(proxy.wait_exit(20), 0)
        proxy.exit_checked = True


class ConfigDrift(mcp.ProxyTestCase):
    """After the first run the database wins; check and the start-up log say where they differ."""

    def test_check_and_startup_warn_with_a_count_and_the_first_differences(self):
        port = mcp.free_port()
        laddr = "127.0.0.1:%d" % port
        proxy = self.start_proxy([(laddr, None, [("a.example.com", "127.0.0.1:9")])])
        r = subprocess.run([mcp.binary(), "check", "-c", proxy.config_path],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual((r.returncode, "warning" in r.stderr), (0, False), r.stderr)
        self.assertEqual(proxy.stop(), 0)
        proxy.exit_checked = True
        # The file now names seven other routes and drops the seeded one.
        routes = [("r%d.example.com" % i, "127.0.0.1:9") for i in range(7)]
        with open(proxy.config_path, "w") as f:
            f.write(mcp.config_text(self.db, listeners=[(laddr, None, routes)]))
        r = subprocess.run([mcp.binary(), "check", "-c", proxy.config_path],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(": ok (", r.stdout)
        self.assertIn("warning: 8 differences between this file's listeners, routes and rules "
                      "and the database", r.stderr)
        shown = [l for l in r.stderr.splitlines() if "only in the" in l]
        self.assertEqual(len(shown), 5, r.stderr)
        self.assertIn("only in the database: route %s a.example.com 127.0.0.1:9" % laddr,
                      r.stderr)
        p2 = restart_proxy(self, proxy.config_path)
        lines = p2.wait_log(r" warn 8 differences between the listeners, routes and rules in ")
        self.assertTrue(lines)
        self.assertEqual(len([l for l in p2.log_lines() if " warn   only in the " in l]), 5)


def restart_proxy(case, config_path):
    p = mcp.Proxy(config_path, os.path.join(case.dir, "proxy-restart.log"))
    case.proxies.append(p)
    p.wait_ready(1)
    return p


if __name__ == "__main__":
    unittest.main()
