"""
Listeners at runtime and the listener settings, end to end through the real binary: the
`listener list|add|remove|set` commands and the ListListeners / AddListener / RemoveListener /
UpdateListener RPCs (grpcio), the config file's new keys, and bad input in both (config: exit 2
with FILE:LINE; API: INVALID_ARGUMENT with the database and the live state unchanged).
"""

import json
import os
import socket
import sqlite3
import subprocess
import unittest

import mcp
import admin_pb as pb
from test_admin import AdminCase, APP

CHECK_TIMEOUT = 20


def dump_db(path):
    """Every row of every table but schema_migrations, to compare before and after."""
    db = sqlite3.connect(path, timeout=10)
    try:
        out = {}
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            if name.startswith("sqlite_") or name == "schema_migrations":
                continue
            out[name] = sorted(db.execute("SELECT * FROM %s" % name))
        return out
    finally:
        db.close()


class EdgeCase(AdminCase):

    def listeners(self):
        return {l["addr"]: l["settings"] for l in json.loads(self.ok("listener", "list", "--json"))}


class RuntimeListeners(EdgeCase):

    def test_add_serves_at_once_and_remove_keeps_established_streams(self):
        backend = self.raw_backend("echo")
        # Three loops: the new listener must be bound on the worker loops too.
        self.proxy = self.start_proxy([(self.laddr, None, [(APP, backend.addr())])],
                                      proxy={"workers": "3"}, extra=self.grpc_section())
        self.proxy.wait_log(r"admin API listening on unix:")
        self.config = self.proxy.config_path
        port = mcp.free_port()
        new = "127.0.0.1:%d" % port
        self.ok("listener", "add", new, "--max-connections", "20")
        self.ok("routes", "add", new, APP, backend.addr())
        self.assertEqual(self.listeners()[new]["max_connections"], 20)

        # Served at once: a hello is relayed through the new listener (on whichever loop the
        # kernel picks: repeat so that more than one worker loop is likely to take one).
        streams = []
        for _ in range(12):
            s = self.connect("127.0.0.1", port)
            hello = mcp.client_hello(APP)
            s.sendall(hello)
            self.assertEqual(self.recv_exactly(s, len(hello)), hello)
            streams.append(s)

        self.ok("listener", "remove", new)
        self.assertNotIn(new, self.listeners())
        # New connections are refused at once...
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=mcp.IO_TIMEOUT).close()
        # ... and established ones run on, both ways.
        for s in streams:
            s.sendall(b"still here")
            self.assertEqual(self.recv_exactly(s, 10), b"still here")
        for s in streams:
            s.close()
        self.proxy.wait_conn(count=12, listener=new, outcome="ok")

    def test_add_existing_in_use_and_remove_unknown(self):
        self.start_admin()
        before = dump_db(self.db)
        self.refused("ALREADY_EXISTS", "listener", "add", self.laddr)
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        taken = "127.0.0.1:%d" % busy.getsockname()[1]
        self.refused("FAILED_PRECONDITION", "listener", "add", taken)
        self.refused("FAILED_PRECONDITION", "listener", "add", "192.0.2.1:443")
        self.refused("NOT_FOUND", "listener", "remove", "127.0.0.1:1")
        self.refused("NOT_FOUND", "listener", "set", "127.0.0.1:1", "--max-connections", "1")
        self.assertEqual(dump_db(self.db), before)
        self.assertEqual(list(self.listeners()), [self.laddr])

    def test_set_changes_only_the_given_settings(self):
        self.start_admin(maxc=5)
        L = self.laddr
        self.ok("listener", "set", L, "--proxy-protocol", "on", "--proxy-from", "10.0.0.0/8",
                "--proxy-from", "192.0.2.0/24", "--rate-limit", "20/1s")
        s = self.listeners()[L]
        self.assertEqual((s["max_connections"], s["proxy_protocol"], s["proxy_from"],
                          s["rate_limit"], s["fallback"], s["max_connections_per_client"]),
                         (5, True, ["10.0.0.0/8", "192.0.2.0/24"], "20/1s", "", 0))
        self.ok("listener", "set", L, "--max-per-client", "3", "--fallback", "127.0.0.1:9")
        s = self.listeners()[L]
        self.assertEqual((s["max_connections"], s["proxy_protocol"], s["proxy_from"],
                          s["rate_limit"], s["fallback"], s["max_connections_per_client"]),
                         (5, True, ["10.0.0.0/8", "192.0.2.0/24"], "20/1s", "127.0.0.1:9", 3))
        self.ok("listener", "set", L, "--proxy-from", "172.16.0.0/12", "--fallback", "none",
                "--rate-limit", "0", "--proxy-protocol", "off")
        s = self.listeners()[L]
        self.assertEqual((s["proxy_protocol"], s["proxy_from"], s["rate_limit"], s["fallback"],
                          s["max_connections_per_client"]),
                         (False, ["172.16.0.0/12"], "0", "", 3))
        # status shows the same settings.
        st = self.status()["listeners"][0]["settings"]
        self.assertEqual(st["proxy_from"], ["172.16.0.0/12"])
        self.assertIn("max_connections_per_client=3", self.ok("status"))

    def test_settings_and_listeners_survive_a_restart(self):
        self.start_admin()
        new = "127.0.0.1:%d" % mcp.free_port()
        self.ok("listener", "add", new, "--proxy-protocol", "on", "--proxy-from", "10.0.0.0/8",
                "--rate-limit", "5/2m", "--max-per-client", "2", "--fallback", "127.0.0.1:9")
        self.ok("listener", "set", self.laddr, "--max-connections", "4")
        before = self.listeners()
        self.proxy.stop()
        self.proxy = self.start_proxy([(self.laddr, None, [])], extra=self.grpc_section(),
                                      wait=False)
        self.proxy.wait_ready(2)
        self.proxy.wait_log(r"admin API listening on unix:")
        self.config = self.proxy.config_path
        self.assertEqual(self.listeners(), before)
        self.assertEqual(before[new]["rate_limit"], "5/2m")

    @staticmethod
    def recv_exactly(s, n):
        got = b""
        while len(got) < n:
            chunk = s.recv(n - len(got))
            if not chunk:
                break
            got += chunk
        return got


class BadInput(EdgeCase):

    def test_api_refuses_bad_settings_and_changes_nothing(self):
        self.start_admin(routes=[(APP, "127.0.0.1:9")])
        c = self.client()
        S = pb.msg("ListenerSettings")
        L = self.laddr
        new = "127.0.0.1:%d" % mcp.free_port()
        bad = [
            ("UpdateListener", L, S(proxy_from=["10.0.0.300/8"], proxy_from_set=True)),
            ("UpdateListener", L, S(proxy_protocol=True)),
            ("UpdateListener", L, S(proxy_protocol=True, proxy_from=[], proxy_from_set=True)),
            ("UpdateListener", L, S(fallback="nowhere")),
            ("UpdateListener", L, S(fallback=L)),
            ("UpdateListener", L, S(rate_limit_count=10, rate_limit_period_ms=0)),
            ("UpdateListener", L, S(rate_limit_count=-1, rate_limit_period_ms=1000)),
            ("UpdateListener", L, S(max_connections=-1)),
            ("UpdateListener", L, S(max_connections_per_client=-5)),
            ("AddListener", new, S(proxy_protocol=True)),
            ("AddListener", new, S(fallback=new)),
            ("AddListener", "nonsense", S()),
            ("AddListener", "127.0.0.1:0", S()),
        ]
        before_db = dump_db(self.db)
        before_live = self.listeners()
        for method, addr, settings in bad:
            with self.subTest(method=method, addr=addr, settings=str(settings)):
                with self.assertRaises(Exception) as cm:
                    c.call(method, pb.msg(method + "Request")(listener_addr=addr,
                                                             settings=settings))
                self.assertEqual(pb.status_of(cm.exception), "INVALID_ARGUMENT")
        for host in ("a.*.example.com", "*", "*.", "**.example.com"):
            with self.subTest(host=host):
                self.refused("INVALID_ARGUMENT", "routes", "add", L, host, "127.0.0.1:9")
        self.assertEqual(dump_db(self.db), before_db)
        self.assertEqual(self.listeners(), before_live)
        # The bad AddListener bound nothing.
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(new.rsplit(":", 1)[1])),
                                     timeout=mcp.IO_TIMEOUT).close()

    def test_cli_usage_errors_exit_2(self):
        self.start_admin()
        for argv in (("listener", "set", self.laddr),
                     ("listener", "set", self.laddr, "--proxy-protocol", "maybe"),
                     ("listener", "set", self.laddr, "--rate-limit", "10/0s"),
                     ("listener", "add"),
                     ("listener", "remove", self.laddr, "--max-connections", "1"),
                     ("routes", "add", self.laddr, APP, "127.0.0.1:9", "--send-proxy", "v3"),
                     ("routes", "list", "--max-connections", "3")):
            with self.subTest(argv=argv):
                r = self.cli(*argv)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)


class ConfigErrors(unittest.TestCase):
    """Each bad value stops `check` and `server` with exit 2 and FILE:LINE: problem."""

    CASES = [
        ("proxy_from = 10.0.0.300/8", "not a CIDR range"),
        ("proxy_protocol = on", "proxy_protocol = on needs proxy_from"),
        ("rate_limit = 10/0s", "the period must be more than zero"),
        ("route = a.*.example.com 127.0.0.1:9", "bad hostname"),
        ("route = * 127.0.0.1:9", "bad hostname"),
        ("fallback = 127.0.0.1:%(port)d", "loops back to this proxy's listener"),
        ("route = a.example.com 127.0.0.1:9 send-proxy-v3", "send-proxy-v1 or send-proxy-v2"),
    ]

    def test_each_error_names_file_and_line(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="mcp-edge-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", d]))
        port = mcp.free_port()
        for line, problem in self.CASES:
            text = ("[database]\npath = %s/db\n\n[listener \"127.0.0.1:%d\"]\n%s\n"
                    % (d, port, line % {"port": port}))
            path = os.path.join(d, "bad.ini")
            with open(path, "w") as f:
                f.write(text)
            for cmd in ("check", "server"):
                with self.subTest(line=line, cmd=cmd):
                    r = subprocess.run([mcp.binary(), cmd, "-c", path], capture_output=True,
                                       text=True, timeout=CHECK_TIMEOUT)
                    self.assertEqual(r.returncode, 2, r.stderr)
                    self.assertIn("%s:5: " % path, r.stderr)
                    self.assertIn(problem, r.stderr)
            self.assertFalse(os.path.exists(os.path.join(d, "db")), "a bad config made a db")

    def test_good_keys_pass_check(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="mcp-edge-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", d]))
        path = os.path.join(d, "good.ini")
        with open(path, "w") as f:
            f.write("[database]\npath = %s/db\n\n[listener \"127.0.0.1:%d\"]\n"
                    "proxy_protocol = on\nproxy_from = 127.0.0.0/8\nproxy_from = ::1/128\n"
                    "fallback = 127.0.0.1:9\nrate_limit = 20/1s\nmax_connections_per_client = 4\n"
                    "route = *.example.com 127.0.0.1:9 send-proxy-v2\n"
                    "route = a.example.com 127.0.0.1:9 send-proxy-v1\n" % (d, mcp.free_port()))
        r = subprocess.run([mcp.binary(), "check", "-c", path], capture_output=True, text=True,
                           timeout=CHECK_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
