"""
Hostname backends through the real binary: every resolved address is tried in order, an
address of one of our own listeners is never connected to, and answers are cached.

The proxy runs in a private mount namespace whose /etc/hosts is a file of this test (bind
mounted), so a name can resolve to exactly the addresses a test needs, and rewriting that file
shows whether the proxy asks again. Needs root (unshare, mount); skipped otherwise.
"""

import os
import socket
import subprocess
import time
import unittest

import mcp
from mcp import ProxyTestCase

APP = "app.example.com"


def can_unshare():
    try:
        return subprocess.run(["unshare", "--mount", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@unittest.skipUnless(can_unshare(), "needs unshare --mount (root)")
class BackendResolve(ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.hosts = os.path.join(self.dir, "hosts")
        self.write_hosts("127.0.0.1 localhost\n")
        # The proxy starts through a wrapper that gives it our hosts file (exec keeps its pid).
        self.wrapper = os.path.join(self.dir, "in-ns.sh")
        with open(self.wrapper, "w") as f:
            f.write('#!/bin/sh\nexec unshare --mount --propagation private sh -c '
                    '\'mount --bind "$0" /etc/hosts && exec "$@"\' %s %s "$@"\n'
                    % (self.hosts, mcp.binary()))
        os.chmod(self.wrapper, 0o755)
        old = os.environ["MCP_BINARY"]
        os.environ["MCP_BINARY"] = self.wrapper
        self.addCleanup(os.environ.__setitem__, "MCP_BINARY", old)

    def write_hosts(self, text):
        # In place: the bind mount follows the inode, and glibc reads the file on every lookup.
        with open(self.hosts, "r+" if os.path.exists(self.hosts) else "w") as f:
            f.seek(0)
            f.truncate()
            f.write(text)

    def resolved_order(self, name):
        """The addresses getaddrinfo gives for name under our hosts file, in order."""
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              'mount --bind "$0" /etc/hosts && getent ahostsv6 -s "$1" >/dev/null;'
                              ' getent ahosts "$1"', self.hosts, name],
                             capture_output=True, text=True, timeout=10).stdout
        seen = []
        for line in out.splitlines():
            addr = line.split()[0]
            if addr not in seen:
                seen.append(addr)
        return seen

    def hello_through(self, port):
        s = self.connect("127.0.0.1", port)
        s.sendall(mcp.vector("openssl_tls13"))
        return s

    def test_every_address_is_tried_in_order(self):
        # "localhost" resolves to ::1 first, then 127.0.0.1; the backend listens on 127.0.0.1
        # only, so the first attempt is refused and the second one must be made.
        self.write_hosts("::1 localhost\n127.0.0.1 localhost\n")
        order = self.resolved_order("localhost")
        self.assertEqual(order[:2], ["::1", "127.0.0.1"], "precondition: ::1 first")
        b = self.raw_backend("echo")
        port = mcp.free_port()
        proxy = self.start_proxy([("127.0.0.1:%d" % port, None,
                                   [(APP, "localhost:%d" % b.port)])])
        s = self.hello_through(port)
        hello = mcp.vector("openssl_tls13")
        self.assertEqual(b.wait_received(len(hello)), hello)
        s.close()
        c = proxy.wait_conn(outcome="ok")[0]
        self.assertEqual(c["backend"], "localhost:%d" % b.port)

    def test_a_backend_that_resolves_to_our_own_listener_is_never_connected_to(self):
        # Written in the config (the admin-time check is the cli's): a route on 127.0.0.1:P to
        # localhost:P. Without the check one hello makes the proxy connect to itself until it
        # runs out of descriptors.
        self.write_hosts("127.0.0.1 localhost\n")
        port = mcp.free_port()
        proxy = self.start_proxy([("127.0.0.1:%d" % port, None,
                                   [(APP, "LOCALHOST.:%d" % port)])])
        fds_before = len(os.listdir("/proc/%d/fd" % proxy.pid))
        for _ in range(3):
            s = self.hello_through(port)
            how, data = mcp.read_until_closed(s)
            self.assertEqual(data, b"")
        conns = proxy.wait_conn(outcome="backend_error", count=3)
        self.assertEqual(len(proxy.conns()), 3, proxy.log_text())
        self.assertTrue(all(c["backend"] == "localhost:%d" % port for c in conns))
        time.sleep(0.3)
        fds_after = len(os.listdir("/proc/%d/fd" % proxy.pid))
        self.assertLessEqual(fds_after, fds_before + 2)
        self.assertEqual(len(proxy.conns()), 3, "the proxy accepted connections from itself")

    def test_answers_are_cached(self):
        # The first connect resolves cache.test to the backend; then the hosts file points the
        # name nowhere. Within the cache's lifetime (30 s) the proxy keeps the first answer.
        self.write_hosts("127.0.0.1 cache.test\n")
        b = self.raw_backend("echo")
        port = mcp.free_port()
        proxy = self.start_proxy([("127.0.0.1:%d" % port, None,
                                   [(APP, "cache.test:%d" % b.port)])])
        hello = mcp.vector("openssl_tls13")
        s = self.hello_through(port)
        self.assertEqual(b.wait_received(len(hello)), hello)
        s.close()
        proxy.wait_conn(outcome="ok")
        self.write_hosts("192.0.2.1 cache.test\n")
        self.assertEqual(self.resolved_order("cache.test"), ["192.0.2.1"])
        s = self.hello_through(port)
        self.assertEqual(b.wait_received(len(hello), idx=1), hello)
        s.close()
        proxy.wait_conn(outcome="ok", count=2)


if __name__ == "__main__":
    unittest.main()
