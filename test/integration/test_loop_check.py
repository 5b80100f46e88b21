"""
A route whose backend would reach one of this proxy's own listeners is refused when it is added,
for hostname backends too (issue 9, B): "localhost" names in any spelling, over the admin API
and in the config file, and the database is left as it was.
"""
import os
import sqlite3
import subprocess
import unittest

import mcp
from test_admin import AdminCase, APP


class HostnameLoopAdmin(AdminCase):

    def routes_in_db(self):
        db = sqlite3.connect(self.db, timeout=10)
        try:
            return sorted(db.execute("SELECT hostname, backend FROM routes"))
        finally:
            db.close()

    def test_localhost_spellings_of_our_own_port_are_refused(self):
        self.start_admin(routes=[(APP, "127.0.0.1:9")])
        before = self.routes_in_db()
        for backend in ("localhost:%d" % self.port, "LOCALHOST:%d" % self.port,
                        "localhost.:%d" % self.port, "api.localhost:%d" % self.port):
            with self.subTest(backend=backend):
                line = self.refused("INVALID_ARGUMENT", "routes", "add", self.laddr,
                                    "loop.example.com", backend)
                self.assertIn("loop", line)
        self.assertEqual(self.routes_in_db(), before)

    def test_localhost_on_another_port_is_accepted(self):
        self.start_admin()
        other = mcp.free_port()
        self.ok("routes", "add", self.laddr, "other.example.com", "localhost:%d" % other)
        self.assertIn(("other.example.com", "localhost:%d" % other), self.routes_in_db())


class HostnameLoopConfig(mcp.ProxyTestCase):

    def test_check_refuses_a_localhost_route_to_its_own_listener(self):
        port = mcp.free_port()
        path = os.path.join(self.dir, "mc.ini")
        with open(path, "w") as f:
            f.write("[database]\npath = %s/mc.db\n[listener \"127.0.0.1:%d\"]\n"
                    "route = a.example.com LOCALHOST.:%d\n" % (self.dir, port, port))
        r = subprocess.run([mcp.binary(), "check", "-c", path], capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("%s:4:" % path, r.stderr)
        self.assertIn("loop", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "mc.db")))


if __name__ == "__main__":
    unittest.main()
