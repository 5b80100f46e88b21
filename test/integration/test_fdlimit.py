"""Descriptor exhaustion: a flood under a low RLIMIT_NOFILE neither crashes nor spins the proxy."""

import os
import socket
import ssl
import time
import unittest

import mcp
from mcp import ProxyTestCase

APP = "app.example.com"
NOFILE = 64
FLOOD = 200


class FdLimit(ProxyTestCase):

    def test_flood_past_the_fd_limit_neither_spins_nor_crashes_and_recovers(self):
        app = self.tls_backend(APP)
        port = mcp.free_port()
        # A long handshake_timeout keeps the flood's connections open in the proxy while we
        # measure; they hold every descriptor the proxy has left.
        proxy = self.start_proxy([("127.0.0.1:%d" % port, None, [(APP, app.addr())])],
                                 proxy={"handshake_timeout": "60s"}, nofile=NOFILE)
        t = self.tls_client("127.0.0.1", port, APP, app.cert)
        self.assertEqual(mcp.tls_roundtrip(t, b"pre"), APP.encode() + b":pre")
        t.close()

        flood = []
        deadline = time.monotonic() + 30
        try:
            for _ in range(FLOOD):
                if time.monotonic() > deadline:
                    break
                try:
                    flood.append(mcp.connect("127.0.0.1", port, timeout=5))
                except OSError:
                    pass  # a connect refused or timed out under the flood is fine
            self.assertGreater(len(flood), NOFILE, "the flood must exceed the proxy's limit")
            # Let the proxy reach its limit: it stops accepting at its descriptor reserve
            # (docs/RUNBOOK.md), short of NOFILE.
            fd_dir = "/proc/%d/fd" % proxy.pid
            proxy.wait_log(r"descriptor reserve reached", timeout=15)
            self.assertLess(len(os.listdir(fd_dir)), NOFILE - 4)

            cpu0, wall0 = proxy.cpu_seconds(), time.monotonic()
            time.sleep(2.0)
            cpu1, wall1 = proxy.cpu_seconds(), time.monotonic()
            share = (cpu1 - cpu0) / (wall1 - wall0)
            print("\nfd limit: %d flood connections, proxy fds %d/%d, CPU %.0f%% of a core "
                  "over %.1fs" % (len(flood), len(os.listdir(fd_dir)), NOFILE, share * 100,
                                  wall1 - wall0))
            self.assertIsNone(proxy.proc.poll(), "the proxy died under the flood")
            self.assertLess(share, 0.5, "the accept loop spins")
        finally:
            for s in flood:
                s.close()

        # Once the flood is gone the proxy serves again (it sees EOF on each held connection
        # and frees its descriptors; give that a bounded while).
        def serves():
            try:
                c = mcp.tls_connect("127.0.0.1", port, APP, app.cert, timeout=3)
            except (OSError, ssl.SSLError):
                return False
            try:
                return mcp.tls_roundtrip(c, b"post") == APP.encode() + b":post"
            except (OSError, ssl.SSLError):
                return False
            finally:
                c.close()
        mcp.wait_for(serves, 30, interval=0.5, what="the proxy to serve again")
        self.assertIsNone(proxy.proc.poll())


if __name__ == "__main__":
    unittest.main()
