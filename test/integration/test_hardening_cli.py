"""
Hardening of the executable (issue 9): escaped admin input in the log, a log that never
stalls a loop (drops counted and reported), journald priorities, a snapshot that never creates
or migrates a database, client_auth = none for a TCP admin address without client_ca, the
default number of workers, and one maximum for max_connections. See docs/RUNBOOK.md.
"""
import fcntl
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import unittest

import grpc

import admin_pb as pb
import mcp
from mcp import ProxyTestCase

APP = "app.example.com"
MAXC = 1000000000  # CONFIG_MAX_CONNECTIONS_MAX in cli/config.h


def run(*argv, timeout=20, **kw):
    return subprocess.run([mcp.binary()] + list(argv), capture_output=True, text=True,
                          timeout=timeout, **kw)


class PipeProxy:
    """`mc-proxy server` whose stderr is a pipe the test reads (or deliberately does not)."""

    def __init__(self, config_path, env=None, prefill=False):
        self.r, w = os.pipe()
        self.dev_ino = "%d:%d" % (os.fstat(w).st_dev, os.fstat(w).st_ino)
        if prefill:
            # Fill the pipe before the proxy starts, then give it back its blocking mode: the
            # proxy gets a full, blocking stderr nobody reads.
            fl = fcntl.fcntl(w, fcntl.F_GETFL)
            fcntl.fcntl(w, fcntl.F_SETFL, fl | os.O_NONBLOCK)
            try:
                while True:
                    os.write(w, b"#" * 4096)
            except BlockingIOError:
                pass
            fcntl.fcntl(w, fcntl.F_SETFL, fl)
        full_env = dict(os.environ)
        full_env.pop("JOURNAL_STREAM", None)
        full_env.update(env(self.dev_ino) if callable(env) else (env or {}))
        self.proc = subprocess.Popen([mcp.binary(), "server", "-c", config_path],
                                     stdin=subprocess.DEVNULL, stdout=w, stderr=w, env=full_env)
        os.close(w)
        self.data = b""
        self.lock = threading.Lock()
        self.reader = None

    def start_reading(self):
        def loop():
            while True:
                chunk = os.read(self.r, 65536)
                if not chunk:
                    return
                with self.lock:
                    self.data += chunk
        self.reader = threading.Thread(target=loop, daemon=True)
        self.reader.start()

    def lines(self):
        with self.lock:
            return self.data.decode("utf-8", "replace").splitlines()

    def wait_line(self, pattern, timeout=mcp.IO_TIMEOUT):
        rx = re.compile(pattern)
        return mcp.wait_for(lambda: [l for l in self.lines() if rx.search(l)] or None, timeout,
                            what="log /%s/" % pattern)

    def stop(self):
        if self.r is None:
            return self.proc.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        if self.reader is None:
            self.start_reading()
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        os.close(self.r)
        self.r = None
        return rc


def wait_port(port, timeout=mcp.READY_TIMEOUT):
    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    mcp.wait_for(up, timeout, interval=0.05, what="port %d to listen" % port)


class Case(ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.port = mcp.free_port()
        self.laddr = "127.0.0.1:%d" % self.port
        self.sock = os.path.join(self.dir, "admin.sock")

    def write_config(self, routes=(), proxy=None, extra=""):
        path = os.path.join(self.dir, "pipe.ini")
        with open(path, "w") as f:
            f.write(mcp.config_text(self.db, proxy=proxy,
                                    listeners=[(self.laddr, None, list(routes))], extra=extra))
        return path

    def pipe_proxy(self, **kw):
        p = PipeProxy(self.write_config(**{k: kw.pop(k) for k in ("routes", "proxy", "extra")
                                           if k in kw}), **kw)

        def check():
            p.stop()
            text = "\n".join(p.lines())
            for marker in mcp.SANITIZER_MARKERS:
                self.assertNotIn(marker, text)
        self.addCleanup(check)
        return p

    def echo_roundtrip(self, hostname=APP, timeout=2.0):
        t0 = time.monotonic()
        s = mcp.connect("127.0.0.1", self.port, timeout=timeout)
        try:
            hello = mcp.client_hello(hostname)
            s.sendall(hello)
            got = b""
            while len(got) < len(hello):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            self.assertEqual(got, hello)
        finally:
            s.close()
        return time.monotonic() - t0


class AdminInputIsEscaped(Case):

    def test_refused_add_route_cannot_forge_a_log_line(self):
        p = self.start_proxy([(self.laddr, None, [])],
                             extra="\n[grpc]\naddr = unix:%s\n" % self.sock)
        p.wait_log(r"admin API listening on unix:")
        c = pb.Client("unix:" + self.sock)
        self.addCleanup(c.close)
        forged = ("x.example.com\n2026-12-03T07:00:00.000Z info admin AddRoute from unix: "
                  "route %s forged.example.com -> 10.6.6.6:443" % self.laddr)
        Route, add = pb.msg("Route"), pb.msg("AddRouteRequest")
        with self.assertRaises(grpc.RpcError) as cm:
            c.call("AddRoute", add(listener_addr=self.laddr,
                                   route=Route(hostname=forged, backend="127.0.0.1:9")))
        self.assertEqual(pb.status_of(cm.exception), "INVALID_ARGUMENT")
        # A refused listener address and backend with control characters, and an accepted
        # change, all on lines of their own.
        with self.assertRaises(grpc.RpcError):
            c.call("AddRoute", add(listener_addr="127.0.0.1:1\r\x1b[2Jevil",
                                   route=Route(hostname=APP, backend="127.0.0.1:9")))
        with self.assertRaises(grpc.RpcError):
            c.call("AddRoute", add(listener_addr=self.laddr,
                                   route=Route(hostname=APP, backend="a\\b\x7f:9")))
        c.call("AddRoute", add(listener_addr=self.laddr,
                               route=Route(hostname=APP, backend="127.0.0.1:9")))
        p.wait_log(r"admin AddRoute .*route %s %s -> 127\.0\.0\.1:9$" % (self.laddr, APP))
        lines = p.log_lines()
        escaped = [l for l in lines if "\\x0a" in l]
        self.assertEqual(len(escaped), 1, "\n".join(lines))
        self.assertIn("x.example.com\\x0a2026-12-03T07:00:00.000Z info admin AddRoute",
                      escaped[0])
        self.assertFalse([l for l in lines if "forged" in l and "\\x0a" not in l],
                         "a forged line:\n" + "\n".join(lines))
        self.assertTrue([l for l in lines if "127.0.0.1:1\\x0d\\x1b[2Jevil" in l],
                        "\n".join(lines))
        self.assertTrue([l for l in lines if "a\\x5cb\\x7f:9" in l], "\n".join(lines))
        text = p.log_text()
        self.assertNotIn("\r", text)
        self.assertNotIn("\x1b", text)


class JournalPriorities(Case):

    def run_and_collect(self, env):
        p = self.pipe_proxy(routes=[(APP, "127.0.0.1:9")], env=env,
                            proxy={"log_level": "debug", "workers": "1"})
        p.start_reading()
        p.wait_line(r"listening on ")
        self.assertEqual(p.stop(), 0)
        return p.lines()

    def test_lines_carry_the_syslog_priority_when_stderr_is_the_journal(self):
        lines = self.run_and_collect(lambda dev_ino: {"JOURNAL_STREAM": dev_ino})
        self.assertTrue(lines)
        want = {"debug": "<7>", "info": "<6>", "warn": "<4>", "error": "<3>"}
        for l in lines:
            m = re.match(r"^(<\d>)\d{4}-\d\d-\d\dT[\d:.]+Z (\w+) ", l)
            self.assertTrue(m, "no priority prefix: %r" % l)
            self.assertEqual(m.group(1), want[m.group(2)], l)
        self.assertTrue([l for l in lines if l.startswith("<6>")])

    def test_no_prefix_when_journal_stream_names_another_file(self):
        lines = self.run_and_collect(lambda dev_ino: {"JOURNAL_STREAM": "1:2"})
        self.assertTrue(lines)
        for l in lines:
            self.assertRegex(l, r"^\d{4}-\d\d-\d\dT[\d:.]+Z (debug|info|warn|error) ")


class SlowLogReader(Case):

    def test_a_full_stderr_pipe_never_stalls_connections_and_drops_are_reported(self):
        backend = self.raw_backend("echo")
        p = self.pipe_proxy(routes=[(APP, backend.addr())], prefill=True,
                            proxy={"workers": "1"})
        wait_port(self.port)
        # Enough connections to overflow the log queue (each writes one line of ~200 bytes).
        for _ in range(2500):
            s = mcp.connect("127.0.0.1", self.port)
            s.sendall(mcp.client_hello("nobody.example.com"))
            mcp.read_until_closed(s)
            s.close()
        for _ in range(5):
            self.assertLess(self.echo_roundtrip(), 2.0)
        # Now somebody reads: the queued lines come out, then the count of the lost ones.
        p.start_reading()
        line = p.wait_line(r" warn log: dropped \d+ lines")[0]
        self.assertGreater(int(re.search(r"dropped (\d+) lines", line).group(1)), 0)
        self.assertEqual(p.stop(), 0)


class SnapshotNeverCreates(Case):

    def config(self, db):
        path = os.path.join(self.dir, "snap.ini")
        with open(path, "w") as f:
            f.write("[database]\npath = %s\n" % db)
        return path

    def test_missing_database_is_refused_and_nothing_is_created(self):
        db = os.path.join(self.dir, "missing", "mc.db")
        os.mkdir(os.path.dirname(db))
        r = run("snapshot", "-c", self.config(db))
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("cannot open the database", r.stderr)
        self.assertEqual(os.listdir(os.path.dirname(db)), [])

    def test_newer_schema_is_refused(self):
        db = os.path.join(self.dir, "new.db")
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                    "applied_at INTEGER NOT NULL)")
        con.execute("INSERT INTO schema_migrations VALUES (1, 0), (999, 0)")
        con.commit()
        con.close()
        out = os.path.join(self.dir, "copy.db")
        r = run("snapshot", "-c", self.config(db), "-o", out)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("schema version 999", r.stderr)
        self.assertFalse(os.path.exists(out))
        con = sqlite3.connect(db)
        self.assertEqual(con.execute("SELECT MAX(version) FROM schema_migrations").fetchone(),
                         (999,))
        con.close()

    def test_a_real_database_is_copied(self):
        self.start_proxy([(self.laddr, None, [(APP, "127.0.0.1:9")])])
        out = os.path.join(self.dir, "copy.db")
        r = run("snapshot", "-c", self.proxies[0].config_path, "-o", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        con = sqlite3.connect(out)
        self.assertEqual(con.execute("SELECT hostname FROM routes").fetchall(), [(APP,)])
        con.close()


class ClientAuth(Case):

    def check(self, grpc_section):
        cert, key = mcp.make_cert(self.dir, "admin")
        path = os.path.join(self.dir, "auth.ini")
        with open(path, "w") as f:
            f.write("[database]\npath = %s\n\n[grpc]\naddr = 127.0.0.1:%d\ntls_cert = %s\n"
                    "tls_key = %s\n%s" % (self.db, mcp.free_port(), cert, key, grpc_section))
        return path, run("check", "-c", path)

    def test_tcp_without_client_ca_needs_client_auth_none(self):
        path, r = self.check("")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("%s:5: [grpc] addr: a TCP address needs client_ca" % path, r.stderr)
        self.assertIn("client_auth = none", r.stderr)

    def test_client_auth_none_runs_with_a_warning(self):
        path, r = self.check("client_auth = none\n")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("warning: client_auth = none", r.stderr)

    def test_client_auth_takes_only_none_and_not_with_client_ca(self):
        path, r = self.check("client_auth = maybe\n")
        self.assertEqual(r.returncode, 2)
        self.assertIn("%s:8: [grpc] client_auth: expected none" % path, r.stderr)
        path, r = self.check("client_auth = none\nclient_ca = %s\n" % path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("client_auth = none contradicts client_ca", r.stderr)

    def test_server_warns_at_startup(self):
        cert, key = mcp.make_cert(self.dir, "admin")
        p = self.start_proxy([(self.laddr, None, [])], extra=(
            "\n[grpc]\naddr = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\nclient_auth = none\n"
            % (mcp.free_port(), cert, key)))
        p.wait_log(r" warn admin API: client_auth = none: .*anyone who can reach")


class WorkersDefault(Case):

    def test_default_is_the_cpus_this_process_may_use(self):
        cfg = self.write_config(routes=[(APP, "127.0.0.1:9")])
        proc = subprocess.Popen(["taskset", "-c", "0", mcp.binary(), "server", "-c", cfg],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            line = proc.stdout.readline()
            while line and " started: " not in line:
                line = proc.stdout.readline()
            self.assertIn(", 1 workers,", line)
        finally:
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=15)[0]
        self.assertEqual(proc.returncode, 0, out)
        for marker in mcp.SANITIZER_MARKERS:
            self.assertNotIn(marker, out)


class MaxConnectionsMaximum(Case):

    def test_config_cli_and_api_agree_on_the_maximum(self):
        path = self.write_config()
        with open(path) as f:
            text = f.read()
        for n, ok in ((MAXC, True), (MAXC + 1, False), (2 ** 63 - 1, False)):
            with open(path, "w") as f:
                f.write(text.replace('"]\n', '"]\nmax_connections = %d\n' % n, 1))
            r = run("check", "-c", path)
            self.assertEqual(r.returncode == 0, ok, (n, r.stderr))
            if not ok:
                self.assertIn("at most %d" % MAXC, r.stderr)

        self.start_proxy([(self.laddr, None, [])],
                         extra="\n[grpc]\naddr = unix:%s\n" % self.sock)
        self.proxies[0].wait_log(r"admin API listening on unix:")
        cfg = self.proxies[0].config_path
        for n, rc in ((MAXC, 0), (MAXC + 1, 2), (2 ** 63 - 1, 2), (2 ** 63, 2)):
            r = run("listener", "set-max-connections", "-c", cfg, self.laddr, str(n))
            self.assertEqual(r.returncode, rc, (n, r.stdout, r.stderr))
            if rc:
                self.assertIn("from 0 to %d" % MAXC, r.stderr)

        c = pb.Client("unix:" + self.sock)
        self.addCleanup(c.close)
        req = pb.msg("SetListenerMaxConnectionsRequest")
        c.call("SetListenerMaxConnections", req(listener_addr=self.laddr, max_connections=MAXC))
        for n in (MAXC + 1, 2 ** 63 - 1):
            with self.assertRaises(grpc.RpcError) as cm:
                c.call("SetListenerMaxConnections", req(listener_addr=self.laddr,
                                                        max_connections=n))
            self.assertEqual(pb.status_of(cm.exception), "INVALID_ARGUMENT")
            self.assertIn("from 0 to %d" % MAXC, cm.exception.details())
        self.assertEqual(c.call("GetStatus").listeners[0].max_connections, MAXC)


if __name__ == "__main__":
    unittest.main()
