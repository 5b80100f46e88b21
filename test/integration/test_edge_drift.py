"""
Config drift for the listener settings of issue 10: after the first run the database holds the
listeners, and `check` and the server's start-up compare the file with it. A listener's
proxy_protocol, proxy_from, fallback, rate_limit and max_connections_per_client and a route's
send-proxy are compared too, each difference named; the same settings written another way
(another unit, another order) are no difference.
"""
import os
import subprocess
import unittest

import mcp
from test_admin import AdminCase

CHECK_TIMEOUT = 20

# One listener's settings as seeded; the variants below change one line each.
SEED = {
    "proxy_protocol": "proxy_protocol = on",
    "proxy_from": "proxy_from = 127.0.0.0/8\nproxy_from = ::1/128",
    "fallback": "fallback = 127.0.0.1:9",
    "rate_limit": "rate_limit = 20/1s",
    "per_client": "max_connections_per_client = 4",
    "route": "route = a.example.com 127.0.0.1:9 send-proxy-v2",
}


def listener_section(addr, settings):
    return '\n[listener "%s"]\n%s\n' % (addr, "\n".join(settings.values()))


class EdgeDrift(AdminCase):

    def write_config(self, settings):
        with open(self.config, "w") as f:
            f.write(mcp.config_text(self.db, extra=self.grpc_section() +
                                    listener_section(self.laddr, settings)))

    def check(self):
        r = subprocess.run([mcp.binary(), "check", "-c", self.config], capture_output=True,
                           text=True, timeout=CHECK_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(": ok (", r.stdout)
        for marker in mcp.SANITIZER_MARKERS:
            self.assertNotIn(marker, r.stderr)
        return r.stderr

    def seed(self):
        """Runs the server once on SEED (the first run writes it to the database) and stops."""
        self.proxy = self.start_proxy([], extra=self.grpc_section() +
                                      listener_section(self.laddr, SEED), wait=False)
        self.proxy.wait_ready(1)
        self.proxy.wait_log(r"admin API listening on unix:")
        self.config = self.proxy.config_path
        self.assertNotIn(" warn ", self.proxy.log_text())

    def stop(self):
        self.assertEqual(self.proxy.stop(), 0)
        self.proxy.exit_checked = True

    def test_check_names_each_setting_that_differs(self):
        self.seed()
        self.stop()
        self.assertNotIn("warning", self.check())

        # The same settings, written another way: no difference.
        same = dict(SEED, proxy_from="proxy_from = ::1/128\nproxy_from = 127.1.2.3/8",
                    rate_limit="rate_limit = 20/1000ms")
        self.write_config(same)
        self.assertNotIn("warning", self.check())

        L = self.laddr
        variants = [
            ("proxy_protocol", "proxy_protocol = off", [],
             ["listener %s proxy_protocol=on" % L]),
            ("proxy_from", "proxy_from = 127.0.0.0/8\nproxy_from = 10.0.0.0/8",
             ["listener %s proxy_from=10.0.0.0/8" % L], ["listener %s proxy_from=::1/128" % L]),
            ("fallback", "fallback = 127.0.0.1:10",
             ["listener %s fallback=127.0.0.1:10" % L], ["listener %s fallback=127.0.0.1:9" % L]),
            ("fallback", "", [], ["listener %s fallback=127.0.0.1:9" % L]),
            ("rate_limit", "rate_limit = 20/2s", ["listener %s rate_limit=20/2000ms" % L],
             ["listener %s rate_limit=20/1000ms" % L]),
            ("rate_limit", "rate_limit = 0", [], ["listener %s rate_limit=20/1000ms" % L]),
            ("per_client", "max_connections_per_client = 5",
             ["listener %s max_connections_per_client=5" % L],
             ["listener %s max_connections_per_client=4" % L]),
            ("route", "route = a.example.com 127.0.0.1:9 send-proxy-v1",
             ["route %s a.example.com 127.0.0.1:9 send-proxy-v1" % L],
             ["route %s a.example.com 127.0.0.1:9 send-proxy-v2" % L]),
            ("route", "route = a.example.com 127.0.0.1:9",
             ["route %s a.example.com 127.0.0.1:9" % L],
             ["route %s a.example.com 127.0.0.1:9 send-proxy-v2" % L]),
        ]
        for key, line, in_config, in_db in variants:
            with self.subTest(line=line or "no " + key):
                self.write_config(dict(SEED, **{key: line}))
                err = self.check()
                n = len(in_config) + len(in_db)
                self.assertIn("warning: %d difference%s between this file's listeners, routes and "
                              "rules and the database" % (n, "" if n == 1 else "s"), err)
                shown = sorted(l.split("only in the ", 1)[1] for l in err.splitlines()
                               if "only in the " in l)
                self.assertEqual(shown, sorted(["config: " + t for t in in_config] +
                                               ["database: " + t for t in in_db]), err)

    def test_database_changed_at_runtime_is_reported_at_start_up(self):
        self.seed()
        # The API changes the database; the file still says what was seeded.
        self.ok("listener", "set", self.laddr, "--fallback", "127.0.0.1:11", "--max-per-client",
                "6", "--proxy-from", "127.0.0.0/8")
        self.ok("routes", "add", self.laddr, "a.example.com", "127.0.0.1:9", "--send-proxy", "v1")
        self.stop()
        expected = sorted([
            "config: listener %s fallback=127.0.0.1:9" % self.laddr,
            "database: listener %s fallback=127.0.0.1:11" % self.laddr,
            "config: listener %s max_connections_per_client=4" % self.laddr,
            "database: listener %s max_connections_per_client=6" % self.laddr,
            "config: listener %s proxy_from=::1/128" % self.laddr,
            "config: route %s a.example.com 127.0.0.1:9 send-proxy-v2" % self.laddr,
            "database: route %s a.example.com 127.0.0.1:9 send-proxy-v1" % self.laddr,
        ])
        err = self.check()
        self.assertIn("warning: 7 differences", err)
        shown = [l.split("only in the ", 1)[1] for l in err.splitlines() if "only in the " in l]
        self.assertEqual(len(shown), 5, err)
        self.assertTrue(set(shown) <= set(expected), err)

        # The server reads the database through the store, not with check's own queries: the
        # same differences.
        p = mcp.Proxy(self.config, os.path.join(self.dir, "restart.log"))
        self.proxies.append(p)
        p.wait_ready(1)
        p.wait_log(r" warn 7 differences between the listeners, routes and rules in ")
        logged = [l.split("only in the ", 1)[1] for l in p.log_lines() if " only in the " in l]
        self.assertEqual(logged, shown)

        # Written back into the file, the database's settings are no difference at all.
        self.write_config(dict(SEED, fallback="fallback = 127.0.0.1:11",
                               per_client="max_connections_per_client = 6",
                               proxy_from="proxy_from = 127.0.0.0/8",
                               route="route = a.example.com 127.0.0.1:9 send-proxy-v1"))
        self.assertNotIn("warning", self.check())


if __name__ == "__main__":
    unittest.main()
