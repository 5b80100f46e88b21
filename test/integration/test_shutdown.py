"""Graceful shutdown (SPEC §6): SIGTERM drains, shutdown_timeout bounds it, a 2nd signal exits 1."""

import signal
import socket
import time
import unittest

import mcp
from mcp import ProxyTestCase

APP = "app.example.com"


class Shutdown(ProxyTestCase):

    def start(self, shutdown_timeout, workers=None):
        self.app = self.tls_backend(APP)
        self.port = mcp.free_port()
        proxy = {"shutdown_timeout": shutdown_timeout}
        if workers:
            proxy["workers"] = str(workers)
        self.proxy = self.start_proxy(
            [("127.0.0.1:%d" % self.port, None, [(APP, self.app.addr())])], proxy=proxy)
        self.t = self.tls_client("127.0.0.1", self.port, APP, self.app.cert)
        self.assertEqual(mcp.tls_roundtrip(self.t, b"before"), APP.encode() + b":before")

    def refused(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            # A connection queued on a listening socket as it closes is reset (with several
            # SO_REUSEPORT loops they close one after another): not refused yet, poll again.
            return False
        s.close()
        return False

    def test_sigterm_drains_an_active_connection_then_exits_0(self):
        self.start("20s")
        self.proxy.signal(signal.SIGTERM)
        self.proxy.wait_log(r"shutting down")
        # The listener is closed: new connections are refused...
        mcp.wait_for(self.refused, 5, what="the listener to close")
        # ...while the active one keeps working, for longer than a moment.
        for i in range(3):
            time.sleep(0.3)
            self.assertEqual(mcp.tls_roundtrip(self.t, b"during %d" % i),
                             APP.encode() + b":during %d" % i)
        self.assertIsNone(self.proxy.proc.poll())
        # Once the client finishes, the process exits 0 by itself, long before the 20 s bound.
        self.t.close()
        took = self.assert_exit(self.proxy, 0, timeout=10)
        self.assertLess(took, 8)
        self.assertEqual(self.proxy.conns()[-1]["outcome"], "ok")

    def test_sigterm_drains_connections_on_every_worker_loop(self):
        self.start("20s", workers=2)
        more = [self.tls_client("127.0.0.1", self.port, APP, self.app.cert) for _ in range(5)]
        self.proxy.signal(signal.SIGTERM)
        self.proxy.wait_log(r"shutting down")
        mcp.wait_for(self.refused, 5, what="the listener to close")
        for i, t in enumerate([self.t] + more):
            self.assertEqual(mcp.tls_roundtrip(t, b"w%d" % i), APP.encode() + b":w%d" % i)
            t.close()
        self.assertLess(self.assert_exit(self.proxy, 0, timeout=10), 8)
        self.assertEqual(len(self.proxy.conns()), 6)

    def test_sigterm_with_no_connections_exits_0_at_once(self):
        self.start("20s")
        self.t.close()
        self.proxy.wait_conn(outcome="ok")
        self.proxy.signal(signal.SIGTERM)
        took = self.assert_exit(self.proxy, 0, timeout=10)
        self.assertLess(took, 5)

    def test_shutdown_timeout_closes_what_is_left_and_exits_0(self):
        self.start("1s")
        t0 = time.monotonic()
        self.proxy.signal(signal.SIGTERM)
        self.assert_exit(self.proxy, 0, timeout=15)
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 6)
        # The remaining client was closed, not left hanging.
        how, _ = mcp.read_until_closed(self.t, timeout=5)
        self.assertIn(how, ("eof", "reset"))
        self.assertIn("shutdown_timeout reached", self.proxy.log_text())

    def test_second_sigterm_exits_1_at_once(self):
        self.start("30s")
        self.proxy.signal(signal.SIGTERM)
        self.proxy.wait_log(r"shutting down")
        self.proxy.signal(signal.SIGTERM)
        took = self.assert_exit(self.proxy, 1, timeout=5)
        self.assertLess(took, 3)

    def test_sigint_also_drains_and_exits_0(self):
        self.start("20s")
        self.proxy.signal(signal.SIGINT)
        self.proxy.wait_log(r"shutting down")
        self.assertEqual(mcp.tls_roundtrip(self.t, b"int"), APP.encode() + b":int")
        self.t.close()
        self.assert_exit(self.proxy, 0, timeout=10)


if __name__ == "__main__":
    unittest.main()
