"""
Loops through the settings of issue 10, refused when they are made, alike in the file and over
the admin API:
- a fallback given as a hostname that is one of this proxy's own listeners ("localhost" in any
  spelling): UpdateListener and AddListener answer INVALID_ARGUMENT with the database, the live
  settings and the bound sockets unchanged; `check` exits 2 naming the file and line;
- a listener added at the address an existing route's or fallback's backend points at (its
  traffic would come straight back): AddListener answers INVALID_ARGUMENT and binds nothing; the
  config refuses the same listeners.
"""
import os
import socket
import subprocess
import unittest

import mcp
import admin_pb as pb
from test_admin import APP
from test_edge_admin import EdgeCase, dump_db

CHECK_TIMEOUT = 20


def refused_connect(addr):
    """True when nothing listens on the IPv4 or [IPv6] ADDR (connection refused)."""
    host, port = addr.rsplit(":", 1)
    host = host.strip("[]")
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    try:
        socket.create_connection((host, int(port)), timeout=mcp.IO_TIMEOUT).close()
        return False
    except ConnectionRefusedError:
        return True


class ApiLoops(EdgeCase):

    def call_refused(self, c, method, addr, settings):
        with self.assertRaises(Exception) as cm:
            c.call(method, pb.msg(method + "Request")(listener_addr=addr, settings=settings))
        self.assertEqual(pb.status_of(cm.exception), "INVALID_ARGUMENT", str(cm.exception))
        self.assertIn("loop", str(cm.exception))

    def test_hostname_fallback_to_our_own_listener_is_refused(self):
        self.start_admin(routes=[(APP, "127.0.0.1:9")])
        c = self.client()
        S = pb.msg("ListenerSettings")
        L, port = self.laddr, self.port
        new_port = mcp.free_port()
        new = "127.0.0.1:%d" % new_port
        before_db, before_live = dump_db(self.db), self.listeners()
        for name in ("localhost", "LOCALHOST.", "api.localhost"):
            with self.subTest(name=name):
                # To this listener itself, to the listener being added, and across the two.
                self.call_refused(c, "UpdateListener", L, S(fallback="%s:%d" % (name, port)))
                self.call_refused(c, "AddListener", new, S(fallback="%s:%d" % (name, new_port)))
                self.call_refused(c, "AddListener", new, S(fallback="%s:%d" % (name, port),
                                                           max_connections=3))
                line = self.refused("INVALID_ARGUMENT", "listener", "set", L, "--fallback",
                                    "%s:%d" % (name, port))
                self.assertIn("loop", line)
        self.assertEqual(dump_db(self.db), before_db)
        self.assertEqual(self.listeners(), before_live)
        self.assertTrue(refused_connect(new), "a refused AddListener left its socket bound")

        # A localhost name on a port nobody here listens on is a fine fallback, and a refused
        # request left nothing behind that stops a good one.
        other = "localhost:%d" % mcp.free_port()
        self.ok("listener", "set", L, "--fallback", other)
        self.ok("listener", "add", new, "--fallback", other)
        self.assertEqual(self.listeners()[L]["fallback"], other)
        self.assertEqual(self.listeners()[new]["fallback"], other)

    def test_listener_at_a_route_or_fallback_backend_is_refused(self):
        ports = [mcp.free_port() for _ in range(3)]
        self.start_admin(routes=[(APP, "127.0.0.1:%d" % ports[0]),
                                 ("b.example.com", "localhost:%d" % ports[1])])
        self.ok("listener", "set", self.laddr, "--fallback", "127.0.0.1:%d" % ports[2])
        c = self.client()
        S = pb.msg("ListenerSettings")
        before_db, before_live = dump_db(self.db), self.listeners()
        cases = [
            ("127.0.0.1:%d" % ports[0], "route %s on %s" % (APP, self.laddr)),
            ("0.0.0.0:%d" % ports[0], "route %s" % APP),
            ("127.0.0.1:%d" % ports[1], "route b.example.com"),
            ("[::1]:%d" % ports[1], "route b.example.com"),
            ("127.0.0.1:%d" % ports[2], "fallback 127.0.0.1:%d" % ports[2]),
        ]
        for addr, what in cases:
            with self.subTest(addr=addr):
                with self.assertRaises(Exception) as cm:
                    c.call("AddListener", pb.msg("AddListenerRequest")(listener_addr=addr,
                                                                       settings=S()))
                self.assertEqual(pb.status_of(cm.exception), "INVALID_ARGUMENT")
                self.assertIn(what, str(cm.exception))
                self.assertIn("loop", str(cm.exception))
                self.assertTrue(refused_connect(addr), "%s was bound" % addr)
        line = self.refused("INVALID_ARGUMENT", "listener", "add", "127.0.0.1:%d" % ports[0])
        self.assertIn("loop", line)
        self.assertEqual(dump_db(self.db), before_db)
        self.assertEqual(self.listeners(), before_live)

        # Once the route goes, the address is free to listen on.
        self.ok("routes", "remove", self.laddr, APP)
        self.ok("listener", "add", "127.0.0.1:%d" % ports[0])
        self.assertIn("127.0.0.1:%d" % ports[0], self.listeners())


class ConfigLoops(unittest.TestCase):
    """The file refuses what the API refuses: exit 2 with FILE:LINE, for check and server."""

    def setUp(self):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="mcp-loops-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))

    def assert_refused(self, body, line):
        path = os.path.join(self.dir, "loop.ini")
        with open(path, "w") as f:
            f.write("[database]\npath = %s/db\n%s" % (self.dir, body))
        for cmd in ("check", "server"):
            with self.subTest(cmd=cmd, body=body):
                r = subprocess.run([mcp.binary(), cmd, "-c", path], capture_output=True,
                                   text=True, timeout=CHECK_TIMEOUT)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn("%s:%d: " % (path, line), r.stderr)
                self.assertIn("loop", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "db")))

    def test_localhost_fallback_to_our_own_listener(self):
        a, b = mcp.free_port(), mcp.free_port()
        for name in ("localhost", "Localhost.", "x.localhost"):
            # Its own listener, and another listener of the file.
            self.assert_refused('[listener "127.0.0.1:%d"]\nfallback = %s:%d\n' % (a, name, a), 4)
            self.assert_refused('[listener "127.0.0.1:%d"]\nmax_connections = 1\n'
                                'fallback = %s:%d\n[listener "[::1]:%d"]\n' % (a, name, b, b), 5)

    def test_listener_at_another_listeners_backend(self):
        a, b = mcp.free_port(), mcp.free_port()
        for backend in ("127.0.0.1:%d" % b, "localhost:%d" % b):
            self.assert_refused('[listener "127.0.0.1:%d"]\nroute = a.example.com %s\n'
                                '[listener "0.0.0.0:%d"]\n' % (a, backend, b), 4)
            self.assert_refused('[listener "127.0.0.1:%d"]\nfallback = %s\n'
                                '[listener "127.0.0.1:%d"]\n' % (a, backend, b), 4)

    def test_localhost_on_a_port_we_do_not_listen_on_passes(self):
        path = os.path.join(self.dir, "ok.ini")
        with open(path, "w") as f:
            f.write("[database]\npath = %s/db\n[listener \"127.0.0.1:%d\"]\n"
                    "fallback = localhost:%d\nroute = a.example.com localhost:%d\n"
                    % (self.dir, mcp.free_port(), mcp.free_port(), mcp.free_port()))
        r = subprocess.run([mcp.binary(), "check", "-c", path], capture_output=True, text=True,
                           timeout=CHECK_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
