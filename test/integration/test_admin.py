"""
The admin API (SPEC §4, §5) over its unix socket: every RPC through the real CLI and through
Python's grpcio, status codes, persistence across a restart, write-through when the database
refuses writes, the socket's mode and ownership, live traffic while the state changes, and
shutdown with calls in flight. TCP + mutual TLS is in test_admin_tls.py.
"""

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import threading
import time
import unittest

import grpc

import admin_pb as pb
import mcp
from mcp import ProxyTestCase

APP = "app.example.com"
DEADLINE = 8.0  # the CLI's own deadline is 5 s; a reply must come well within this


class AdminCase(ProxyTestCase):
    """A proxy with one listener and [grpc] on a unix socket in the test's temp dir."""

    def setUp(self):
        super().setUp()
        self.sock = os.path.join(self.dir, "admin.sock")
        self.port = mcp.free_port()
        self.laddr = "127.0.0.1:%d" % self.port

    def grpc_section(self, extra=""):
        return "\n[grpc]\naddr = unix:%s\n%s" % (self.sock, extra)

    def start_admin(self, routes=(), maxc=None, firewall=(), grpc_extra="", wait=True):
        self.proxy = self.start_proxy([(self.laddr, maxc, list(routes))], firewall=firewall,
                                      extra=self.grpc_section(grpc_extra), wait=wait)
        if wait:
            self.proxy.wait_log(r"admin API listening on unix:")
        self.config = self.proxy.config_path
        return self.proxy

    def cli(self, *args, config=None, timeout=20):
        """Runs `mc-proxy CMD -c CONFIG ARGS...`; options first so that `--` may precede ARGS."""
        argv = [mcp.binary(), args[0]]
        if config is not False:
            argv += ["-c", config or self.config]
        argv += list(args[1:])
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        r.elapsed = time.monotonic() - t0
        for marker in mcp.SANITIZER_MARKERS:
            self.assertNotIn(marker, r.stderr, "sanitizer report from %s" % argv)
        return r

    def ok(self, *args, **kw):
        r = self.cli(*args, **kw)
        self.assertEqual(r.returncode, 0, "%s: %s%s" % (args, r.stdout, r.stderr))
        return r.stdout

    def refused(self, status, *args, **kw):
        """Asserts exit 1 with the one-line "mc-proxy: STATUS: message" on stderr."""
        r = self.cli(*args, **kw)
        self.assertEqual(r.returncode, 1, "%s: %s%s" % (args, r.stdout, r.stderr))
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("mc-proxy: %s: " % status), r.stderr)
        self.assertLess(r.elapsed, DEADLINE)
        return lines[0]

    def status(self):
        return json.loads(self.ok("status", "--json"))

    def routes(self):
        return [(r["listener"], r["hostname"], r["backend"])
                for r in json.loads(self.ok("routes", "list", "--json"))]

    def rules(self):
        return [(r["type"], r["value"]) for r in json.loads(self.ok("firewall", "list", "--json"))]

    def client(self):
        c = pb.Client("unix:" + self.sock)
        self.addCleanup(c.close)
        return c

    def hello_roundtrip(self, hostname, source=None):
        """Connects, sends a ClientHello for HOSTNAME and expects the echo backend to echo it."""
        s = self.connect("127.0.0.1", self.port, source=source)
        hello = mcp.client_hello(hostname)
        s.sendall(hello)
        got = b""
        while len(got) < len(hello):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        self.assertEqual(got, hello, "not relayed to the backend for %s" % hostname)
        return s


    def outcome_from(self, source):
        """How a connection from SOURCE ends without sending anything: eof, reset or timeout.
        The reset may come so early that connect() itself reports it."""
        try:
            s = self.connect("127.0.0.1", self.port, source=source)
        except ConnectionResetError:
            return "reset"
        return mcp.read_until_closed(s)[0]


class RoundTrips(AdminCase):

    def test_every_rpc_round_trips_through_the_cli(self):
        backend = "127.0.0.1:%d" % mcp.free_port()
        mmdb = os.path.join(self.dir, "geo.mmdb")
        mcp.build_mmdb(mmdb, {"192.0.2.0/24": "KP"})
        self.start_admin(routes=[(APP, backend)], firewall=[("geoip_db", mmdb)])
        L = self.laddr
        # (command, expected state after it): routes, rules, max_connections.
        steps = [
            (("routes", "add", L, "New.Example.COM.", "127.0.0.1:9"),
             {(L, APP, backend), (L, "new.example.com", "127.0.0.1:9")}, set(), 0),
            (("routes", "add", L, "new.example.com", "[::1]:10"),  # upsert
             {(L, APP, backend), (L, "new.example.com", "[::1]:10")}, set(), 0),
            (("routes", "remove", L, "new.example.com"), {(L, APP, backend)}, set(), 0),
            (("firewall", "add", "ip", "192.0.2.7"), {(L, APP, backend)},
             {("ip", "192.0.2.7")}, 0),
            (("firewall", "add", "ip", "192.0.2.7"), {(L, APP, backend)},  # idempotent
             {("ip", "192.0.2.7")}, 0),
            (("firewall", "add", "cidr", "198.51.100.9/24"), {(L, APP, backend)},
             {("ip", "192.0.2.7"), ("cidr", "198.51.100.0/24")}, 0),
            (("firewall", "add", "country", "kp"), {(L, APP, backend)},
             {("ip", "192.0.2.7"), ("cidr", "198.51.100.0/24"), ("country", "KP")}, 0),
            (("firewall", "remove", "cidr", "198.51.100.0/24"), {(L, APP, backend)},
             {("ip", "192.0.2.7"), ("country", "KP")}, 0),
            (("listener", "set-max-connections", L, "7"), {(L, APP, backend)},
             {("ip", "192.0.2.7"), ("country", "KP")}, 7),
            (("listener", "set-max-connections", L, "0"), {(L, APP, backend)},
             {("ip", "192.0.2.7"), ("country", "KP")}, 0),
        ]
        for argv, routes, rules, maxc in steps:
            with self.subTest(argv=argv):
                self.ok(*argv)
                self.assertEqual(set(self.routes()), routes)
                self.assertEqual(set(self.rules()), rules)
                st = self.status()
                self.assertEqual(st["listeners"][0]["max_connections"], maxc)
                self.assertEqual(st["listeners"][0]["route_count"], len(routes))
                self.assertEqual(st["firewall_rule_count"], len(rules))

    def test_status_table_and_json(self):
        self.start_admin(routes=[(APP, "127.0.0.1:9")], maxc=5)
        version = self.ok("version", config=False).split()[-1]
        table = self.ok("status")
        self.assertIn("mc-proxy %s, up " % version, table)
        row = [l for l in table.splitlines() if l.startswith(self.laddr)]
        self.assertEqual(len(row), 1, table)
        self.assertEqual(row[0].split()[1:], ["1", "0/5", "0", "0", "0", "0"])
        st = self.status()
        self.assertEqual(st["version"], version)
        self.assertLessEqual(abs(st["started_at_unix"] - time.time()), 60)
        self.assertEqual(st["listeners"][0]["addr"], self.laddr)
        # A connection that sends no ClientHello is counted when it ends (accepted, unrouted).
        s = self.connect("127.0.0.1", self.port)
        s.sendall(b"not tls at all")
        self.assertEqual(mcp.read_until_closed(s)[0], "eof")
        self.proxy.wait_conn(outcome="unrouted")
        lst = self.status()["listeners"][0]
        self.assertEqual((lst["accepted_total"], lst["unrouted_total"]), (1, 1))

    def test_options_may_follow_positionals_and_listing_by_listener(self):
        self.start_admin(routes=[(APP, "127.0.0.1:9")])
        r = self.cli("routes", "add", self.laddr, "b.example.com", "127.0.0.1:10", "-c",
                     self.config, config=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = self.cli("routes", "list", self.laddr, "--config", self.config, config=False)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("b.example.com", out.stdout)
        self.assertIn(APP, out.stdout)

    def test_grpcio_client_calls_get_status_and_add_route(self):
        backend = self.raw_backend("echo")
        self.start_admin()
        c = self.client()
        st = c.call("GetStatus")
        self.assertEqual(st.version, self.ok("version", config=False).split()[-1])
        self.assertEqual([l.addr for l in st.listeners], [self.laddr])
        self.assertEqual(st.listeners[0].route_count, 0)
        c.call("AddRoute", pb.msg("AddRouteRequest")(
            listener_addr=self.laddr,
            route=pb.msg("Route")(hostname=APP, backend=backend.addr())))
        self.assertEqual(self.routes(), [(self.laddr, APP, backend.addr())])
        self.assertEqual(c.call("GetStatus").listeners[0].route_count, 1)
        lr = c.call("ListRoutes", pb.msg("ListRoutesRequest")(listener_addr=self.laddr))
        self.assertEqual([(r.hostname, r.backend) for r in lr.routes], [(APP, backend.addr())])
        # And it is in force for the next connection.
        self.hello_roundtrip(APP)


class StatusCodes(AdminCase):

    def test_cli_errors_map_to_spec_status_codes(self):
        self.start_admin(routes=[(APP, "127.0.0.1:9")], firewall=[("block_ip", "192.0.2.1")])
        L = self.laddr
        before = (self.routes(), self.rules(), self.status()["listeners"])
        table = [
            ("NOT_FOUND", ("routes", "add", "127.0.0.1:1", "a.example.com", "127.0.0.1:9")),
            ("NOT_FOUND", ("routes", "remove", L, "missing.example.com")),
            ("NOT_FOUND", ("routes", "list", "127.0.0.1:1")),
            ("NOT_FOUND", ("firewall", "remove", "ip", "192.0.2.77")),
            ("NOT_FOUND", ("firewall", "remove", "country", "KP")),
            ("NOT_FOUND", ("listener", "set-max-connections", "127.0.0.1:1", "5")),
            ("INVALID_ARGUMENT", ("listener", "set-max-connections", L, "--", "-1")),
            ("INVALID_ARGUMENT", ("routes", "add", L, "bad_host!.example.com", "127.0.0.1:9")),
            ("INVALID_ARGUMENT", ("routes", "add", L, "a" * 64 + ".example.com", "127.0.0.1:9")),
            ("INVALID_ARGUMENT", ("routes", "add", L, "a.example.com", "not-a-backend")),
            ("INVALID_ARGUMENT", ("routes", "add", L, "a.example.com", "127.0.0.1:0")),
            ("INVALID_ARGUMENT", ("routes", "add", L, "a.example.com", L)),
            ("INVALID_ARGUMENT", ("firewall", "add", "cidr", "10.0.0.0/33")),
            ("INVALID_ARGUMENT", ("firewall", "add", "ip", "300.1.1.1")),
            ("INVALID_ARGUMENT", ("firewall", "add", "country", "KPX")),
            ("INVALID_ARGUMENT", ("firewall", "add", "country", "K1")),
            ("FAILED_PRECONDITION", ("firewall", "add", "country", "kp")),
        ]
        for status, argv in table:
            with self.subTest(argv=argv):
                self.refused(status, *argv)
        self.assertEqual((self.routes(), self.rules(), self.status()["listeners"]), before)

    def test_grpc_level_errors(self):
        self.start_admin(routes=[(APP, "127.0.0.1:9")])
        c = self.client()
        Route, Rule = pb.msg("Route"), pb.msg("FirewallRule")
        add_route = pb.msg("AddRouteRequest")
        svc = "/" + pb.SERVICE + "/"
        table = [
            ("INVALID_ARGUMENT", lambda: c.call_raw("AddRoute", b"\xff\xff\xff\xff")),
            ("INVALID_ARGUMENT", lambda: c.call_raw("AddRoute", b"\x0a\x05ab")),  # truncated
            ("UNIMPLEMENTED", lambda: c.call_raw(None, b"", path=svc + "DropAllTables")),
            ("UNIMPLEMENTED", lambda: c.call_raw(None, b"", path="/other.v1.Service/GetStatus")),
            ("INVALID_ARGUMENT", lambda: c.call("AddRoute", add_route(listener_addr=self.laddr))),
            ("INVALID_ARGUMENT", lambda: c.call("AddRoute", add_route(
                listener_addr=self.laddr,
                route=Route(hostname="a.example.com\0.evil", backend="127.0.0.1:9")))),
            ("INVALID_ARGUMENT", lambda: c.call("AddRoute", add_route(
                listener_addr=self.laddr,
                route=Route(hostname="a." * 200 + "com", backend="127.0.0.1:9")))),
            ("INVALID_ARGUMENT", lambda: c.call("AddFirewallRule", pb.msg(
                "AddFirewallRuleRequest")(rule=Rule(type=0, value="192.0.2.1")))),
            ("INVALID_ARGUMENT", lambda: c.call("AddFirewallRule", pb.msg(
                "AddFirewallRuleRequest")(rule=Rule(type=9, value="192.0.2.1")))),
            ("INVALID_ARGUMENT", lambda: c.call("SetListenerMaxConnections", pb.msg(
                "SetListenerMaxConnectionsRequest")(listener_addr=self.laddr,
                                                    max_connections=-5))),
            ("INVALID_ARGUMENT", lambda: c.call("ListRoutes")),
            ("NOT_FOUND", lambda: c.call("ListRoutes", pb.msg("ListRoutesRequest")(
                listener_addr="[::1]:1"))),
            ("RESOURCE_EXHAUSTED", lambda: c.call("AddRoute", add_route(
                listener_addr=self.laddr,
                route=Route(hostname="x" * 100000, backend="127.0.0.1:9")))),
        ]
        for i, (status, fn) in enumerate(table):
            with self.subTest(case=i, want=status):
                with self.assertRaises(grpc.RpcError) as cm:
                    fn()
                self.assertEqual(pb.status_of(cm.exception), status, cm.exception.details())
        self.assertEqual(self.routes(), [(self.laddr, APP, "127.0.0.1:9")])
        # The server is still fine after all that.
        self.assertEqual(c.call("GetStatus").listeners[0].route_count, 1)

    def test_usage_errors_exit_2_and_help_exits_0(self):
        self.start_admin()
        L = self.laddr
        usage = [
            ("routes",), ("routes", "add", L), ("routes", "frob"), ("routes", "remove", L),
            ("routes", "add", L, "a.example.com", "127.0.0.1:9", "--json"),
            ("firewall",), ("firewall", "add", "mac", "x"), ("firewall", "list", "extra"),
            ("listener", "set-max-connections", L, "abc"), ("listener", "frob"),
            ("status", "--bogus"), ("status", "extra"), ("listener", "set-max-connections", L),
        ]
        for argv in usage:
            with self.subTest(argv=argv):
                r = self.cli(*argv)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn("--help", r.stderr)
        for cmd in ("status", "routes", "firewall", "listener", "certs"):
            with self.subTest(help=cmd):
                r = self.cli(cmd, "--help", config=False)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("usage: mc-proxy %s" % cmd, r.stdout)
        r = self.cli("status", config=False)  # no -c
        self.assertEqual(r.returncode, 2)
        r = self.cli("status", config=os.path.join(self.dir, "missing.ini"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing.ini", r.stderr)

    def test_server_that_is_down_gives_one_line_and_exit_1(self):
        cfg = os.path.join(self.dir, "down.ini")
        with open(cfg, "w") as f:
            f.write(mcp.config_text(self.db, listeners=[(self.laddr, None, [])])
                    + self.grpc_section())
        for argv in (("status",), ("routes", "list"), ("firewall", "list"),
                     ("routes", "add", self.laddr, APP, "127.0.0.1:9")):
            with self.subTest(argv=argv):
                self.refused("UNAVAILABLE", *argv, config=cfg)


class Persistence(AdminCase):

    def test_changes_survive_a_restart_and_are_in_force(self):
        old = self.raw_backend("echo")
        new = self.raw_backend("echo")
        self.start_admin(routes=[(APP, old.addr())])
        self.ok("routes", "add", self.laddr, "new.example.com", new.addr())
        self.ok("routes", "add", self.laddr, APP, new.addr())  # replace
        self.ok("firewall", "add", "ip", "127.0.0.5")
        self.ok("listener", "set-max-connections", self.laddr, "1")
        self.assertEqual(self.proxy.stop(), 0)

        # Same database; the config's seed (APP -> old, no limit, no rule) is ignored now.
        self.start_admin(routes=[(APP, old.addr())])
        self.assertEqual(set(self.routes()), {(self.laddr, APP, new.addr()),
                                              (self.laddr, "new.example.com", new.addr())})
        self.assertEqual(self.rules(), [("ip", "127.0.0.5")])
        self.assertEqual(self.status()["listeners"][0]["max_connections"], 1)

        # The rule: a client from 127.0.0.5 is reset.
        self.assertEqual(self.outcome_from("127.0.0.5"), "reset")
        self.proxy.wait_conn(outcome="blocked")
        # The routes: both names reach the new backend.
        s1 = self.hello_roundtrip("new.example.com")
        self.assertEqual(new.accepts, 1)
        # The limit: with one connection open, the next is closed at once.
        s2 = self.connect("127.0.0.1", self.port)
        self.assertEqual(mcp.read_until_closed(s2), ("eof", b""))
        self.proxy.wait_conn(outcome="limit")
        s1.close()
        self.proxy.wait_conn(outcome="ok")
        self.hello_roundtrip(APP)
        self.assertEqual((old.accepts, new.accepts), (0, 2))


class WriteThrough(AdminCase):

    def hold_write_lock(self):
        """A second writer on the database: BEGIN IMMEDIATE takes SQLite's write lock."""
        db = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        return db

    def db_rows(self):
        db = sqlite3.connect(self.db, timeout=10)
        try:
            routes = sorted(db.execute("SELECT hostname, backend FROM routes"))
            rules = sorted(db.execute("SELECT type, value FROM firewall_rules"))
            limits = sorted(db.execute("SELECT addr, max_connections FROM listeners"))
            return routes, rules, limits
        finally:
            db.close()

    def test_locked_database_gives_unavailable_and_changes_nothing(self):
        backend = self.raw_backend("echo")
        self.start_admin(routes=[(APP, backend.addr())])
        before_db = self.db_rows()
        before_live = (self.routes(), self.rules(), self.status()["listeners"])
        lock = self.hold_write_lock()
        try:
            for argv in (("routes", "add", self.laddr, "new.example.com", backend.addr()),
                         ("routes", "remove", self.laddr, APP),
                         ("firewall", "add", "ip", "127.0.0.9"),
                         ("listener", "set-max-connections", self.laddr, "1")):
                with self.subTest(argv=argv):
                    self.refused("UNAVAILABLE", *argv)
            # Traffic is not stalled by the locked database: the old route still works.
            self.hello_roundtrip(APP).close()
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        self.assertEqual(self.db_rows(), before_db)
        self.assertEqual((self.routes(), self.rules()), before_live[:2])
        after = self.status()["listeners"][0]
        self.assertEqual((after["max_connections"], after["route_count"]),
                         (before_live[2][0]["max_connections"], 1))
        # Not in force either: new.example.com is not routed, and 127.0.0.9 is not blocked.
        s = self.connect("127.0.0.1", self.port, source="127.0.0.9")
        s.sendall(mcp.client_hello("new.example.com"))
        self.assertEqual(mcp.read_until_closed(s), ("eof", b""))
        self.proxy.wait_conn(outcome="unrouted")
        # Once the lock is gone the same change goes through.
        self.ok("routes", "add", self.laddr, "new.example.com", backend.addr())
        self.assertIn(("new.example.com", backend.addr()), self.db_rows()[0])


class Socket(AdminCase):

    def test_socket_mode(self):
        for extra, want in (("", 0o600), ("socket_mode = 0660\n", 0o660)):
            with self.subTest(socket_mode=oct(want)):
                p = self.start_admin(grpc_extra=extra)
                st = os.stat(self.sock)
                self.assertTrue(stat.S_ISSOCK(st.st_mode))
                self.assertEqual(stat.S_IMODE(st.st_mode), want)
                self.ok("status")
                self.assertEqual(p.stop(), 0)

    def test_a_live_socket_is_not_stolen(self):
        self.start_admin()
        first = self.proxy
        other_port = mcp.free_port()
        cfg = os.path.join(self.dir, "second.ini")
        with open(cfg, "w") as f:
            f.write(mcp.config_text(os.path.join(self.dir, "second.db"),
                                    listeners=[("127.0.0.1:%d" % other_port, None, [])])
                    + self.grpc_section())
        second = mcp.Proxy(cfg, os.path.join(self.dir, "second.log"))
        self.proxies.append(second)
        rc = second.wait_exit(mcp.READY_TIMEOUT)
        second.exit_checked = True
        self.assertNotEqual(rc, 0)
        self.assertIn("in use by another running mc-proxy", second.log_text())
        # The first instance still owns and answers on the socket.
        self.assertEqual(self.status()["listeners"][0]["addr"], self.laddr)
        self.assertIsNone(first.proc.poll())

    def test_a_stale_socket_is_replaced(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.sock)
        s.close()  # the file stays, nobody listens: what a crash leaves behind
        self.start_admin()
        self.proxy.wait_log(r"removed the stale socket")
        self.ok("status")

    def test_a_path_that_is_not_a_socket_is_left_alone(self):
        with open(self.sock, "w") as f:
            f.write("precious")
        p = self.start_admin(wait=False)
        rc = p.wait_exit(mcp.READY_TIMEOUT)
        p.exit_checked = True
        self.assertNotEqual(rc, 0)
        self.assertIn("is not a socket", p.log_text())
        with open(self.sock) as f:
            self.assertEqual(f.read(), "precious")


class LiveTraffic(AdminCase):

    def test_established_connections_survive_route_and_limit_changes(self):
        backend = self.raw_backend("echo")
        self.start_admin(routes=[(APP, backend.addr())])
        hello = mcp.vector("curl")  # a real curl ClientHello for app.example.com

        # A client streaming through an established connection the whole time.
        c1 = self.connect("127.0.0.1", self.port)
        c1.sendall(hello)
        self.assertEqual(self.recv_exactly(c1, len(hello)), hello)
        stop = threading.Event()
        result = {"bytes": 0, "error": None}

        def stream():
            try:
                i = 0
                while not stop.is_set():
                    chunk = b"%08d" % i * 128
                    c1.sendall(chunk)
                    if self.recv_exactly(c1, len(chunk)) != chunk:
                        raise AssertionError("echo mismatch")
                    result["bytes"] += len(chunk)
                    i += 1
                    time.sleep(0.005)
            except Exception as e:  # reported below
                result["error"] = e
        t = threading.Thread(target=stream, daemon=True)
        t.start()

        def streamed_more(since):
            mcp.wait_for(lambda: result["bytes"] > since or result["error"], 10,
                         what="more streamed bytes")
            self.assertIsNone(result["error"])
            return result["bytes"]

        n = streamed_more(0)
        self.ok("routes", "remove", self.laddr, APP)
        n = streamed_more(n)
        # New connections follow the new state: no route -> closed.
        s = self.connect("127.0.0.1", self.port)
        s.sendall(hello)
        self.assertEqual(mcp.read_until_closed(s), ("eof", b""))
        self.proxy.wait_conn(outcome="unrouted")

        self.ok("routes", "add", self.laddr, APP, backend.addr())
        n = streamed_more(n)
        c2 = self.connect("127.0.0.1", self.port)
        c2.sendall(hello)
        self.assertEqual(self.recv_exactly(c2, len(hello)), hello)

        # Two active, limit lowered to 1: both stay, the next is refused.
        self.ok("listener", "set-max-connections", self.laddr, "1")
        n = streamed_more(n)
        self.assertEqual(self.status()["listeners"][0]["active_connections"], 2)
        s = self.connect("127.0.0.1", self.port)
        self.assertEqual(mcp.read_until_closed(s), ("eof", b""))
        self.proxy.wait_conn(outcome="limit")
        c2.sendall(b"still here")
        self.assertEqual(self.recv_exactly(c2, 10), b"still here")
        n = streamed_more(n)

        stop.set()
        t.join(timeout=10)
        self.assertIsNone(result["error"])
        self.assertEqual([c for c in self.proxy.conns() if c["outcome"] == "ok"], [])

    @staticmethod
    def recv_exactly(s, n):
        got = b""
        while len(got) < n:
            chunk = s.recv(n - len(got))
            if not chunk:
                break
            got += chunk
        return got


class Shutdown(AdminCase):

    def test_sigterm_with_a_write_in_flight(self):
        self.start_admin(routes=[(APP, "127.0.0.1:9")])
        lock = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            cli = subprocess.Popen([mcp.binary(), "routes", "add", "-c", self.config, self.laddr,
                                    "new.example.com", "127.0.0.1:9"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # The write is waiting on the lock (busy timeout 2 s) when the signal comes.
            time.sleep(1.0)
            self.proxy.signal(signal.SIGTERM)
            self.assert_exit(self.proxy, 0, 15)
            out, err = cli.communicate(timeout=15)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        self.assertEqual(cli.returncode, 1, err)
        self.assertTrue(err.startswith("mc-proxy: UNAVAILABLE: "), err)
        self.assertEqual(self.proxy.sanitizer_reports(), [])

    def wait_admin_peer(self, timeout=10):
        """Waits (bounded) until a client holds a connection to the admin socket: the server's
        accepted end shows in /proc/net/unix with the socket's path and state connected."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open("/proc/net/unix") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 8 and fields[7] == self.sock and fields[5] == "03":
                        return
            time.sleep(0.02)
        self.fail("no client connected to the admin socket within %s s" % timeout)

    def test_sigterm_while_a_write_waits_then_commits_tells_the_truth(self):
        """The write is waiting on the lock when SIGTERM comes; the lock goes away during the
        drain, the write commits, and the client is told it was saved (not UNAVAILABLE for a
        change that did happen). The proxy then exits 0 with no sanitizer report."""
        self.start_admin(routes=[(APP, "127.0.0.1:9")])
        lock = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        cli = subprocess.Popen([mcp.binary(), "routes", "add", "-c", self.config, self.laddr,
                                "new.example.com", "127.0.0.1:9"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The client is a new process (slow to start under load or ASan): wait until it
            # has connected to the admin socket, then give the request a moment to reach the
            # write, which then waits in SQLite's busy handler (2 s).
            self.wait_admin_peer()
            time.sleep(0.3)
            self.proxy.signal(signal.SIGTERM)
            time.sleep(0.6)  # no connections: the drain has nothing else to wait for
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        out, err = cli.communicate(timeout=15)
        self.assert_exit(self.proxy, 0, 15)
        self.assertEqual(cli.returncode, 0, err)
        self.assertIn("saved", out)
        db = sqlite3.connect(self.db, timeout=10)
        try:
            routes = sorted(db.execute("SELECT hostname, backend FROM routes"))
        finally:
            db.close()
        self.assertIn(("new.example.com", "127.0.0.1:9"), routes)
        self.assertEqual(self.proxy.sanitizer_reports(), [])

    def test_sigterm_with_an_idle_client_connected(self):
        self.start_admin()
        c = self.client()
        c.call("GetStatus")  # the channel stays connected
        self.proxy.signal(signal.SIGTERM)
        self.assertLess(self.assert_exit(self.proxy, 0, 15), 10)
        self.assertIn("admin API stopped", self.proxy.log_text())
        self.assertFalse(os.path.exists(self.sock))

    def test_many_concurrent_calls_then_sigterm(self):
        self.start_admin()
        errors = []

        def hammer(i):
            try:
                with pb.Client("unix:" + self.sock) as c:
                    for j in range(20):
                        c.call("AddRoute", pb.msg("AddRouteRequest")(
                            listener_addr=self.laddr,
                            route=pb.msg("Route")(hostname="h%d-%d.example.com" % (i, j),
                                                  backend="127.0.0.1:9")))
                        c.call("GetStatus")
            except Exception as e:
                errors.append(e)
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(self.status()["listeners"][0]["route_count"], 80)
        self.proxy.signal(signal.SIGTERM)
        self.assert_exit(self.proxy, 0, 15)


if __name__ == "__main__":
    unittest.main()
