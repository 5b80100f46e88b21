"""
The per-client table's hard bound through the real binary (SPEC section 6, step 4; the bound is
in include/mcproxy/client_limits.h: 65,536 clients, MCP_CLIENT_LIMITS_MAX_BYTES of memory).

This test is the trusted PROXY peer: it presents 160,000 distinct client addresses (well past
the bound) in PROXY v2 headers to a listener with rate_limit and max_connections_per_client set
(test/integration/proxy_flood.py). The proxy's RSS may grow by the table's bound plus a fixed
margin, and once the table is full (70,000 addresses) it must stay flat: another 90,000 clients
in an unbounded table would add over 4 MiB. The table must also still work when full: a tracked
client is refused a second connection, and a client that arrived when it was full is admitted
untracked (client_limits.h says why it fails open). bench/client_table.py runs 1,000,000.
"""
import json
import os
import subprocess
import sys
import time
import unittest

import mcp
import proxy_flood

TABLE_ENTRIES = 65536
TABLE_MAX_KIB = (57 * TABLE_ENTRIES + 16384) // 1024  # MCP_CLIENT_LIMITS_MAX_BYTES(65536)
FULL = 70000           # addresses after which the table is full
COUNT = 160000         # addresses in all
FLAT_MARGIN_KIB = 1536  # allowed RSS growth from FULL to COUNT (unbounded: > 4 MiB)
FIXED_MARGIN_KIB = 2048  # allowed RSS growth beyond the table's bound, from start to COUNT
FLOOD_TIMEOUT = 200.0


@unittest.skipIf(mcp.sanitizer_build(), "AddressSanitizer's shadow memory and quarantine make "
                 "RSS say nothing about the table")
class ClientTableBound(mcp.ProxyTestCase):

    def status(self):
        r = subprocess.run([mcp.binary(), "status", "-c", self.proxy.config_path, "--json"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)["listeners"][0]

    def wait_up(self):
        """The admin API answers (log_level = warn: no "listening" line to wait for)."""
        def up():
            if self.proxy.proc.poll() is not None:
                raise AssertionError("proxy exited: " + self.proxy.log_text())
            r = subprocess.run([mcp.binary(), "status", "-c", self.proxy.config_path],
                               capture_output=True, text=True, timeout=30)
            return r.returncode == 0
        mcp.wait_for(up, mcp.READY_TIMEOUT, interval=0.1, what="the admin API")

    def test_rss_stays_flat_past_the_table_bound(self):
        self.port = mcp.free_port()
        laddr = "127.0.0.1:%d" % self.port
        self.proxy = self.start_proxy(
            [], proxy={"workers": "2", "log_level": "warn"}, wait=False,
            extra="\n[grpc]\naddr = unix:%s/admin.sock\n\n[listener \"%s\"]\n"
                  "proxy_protocol = on\nproxy_from = 127.0.0.0/8\nrate_limit = 1/1h\n"
                  "max_connections_per_client = 1\n" % (self.dir, laddr))
        self.wait_up()
        deadline = time.monotonic() + FLOOD_TIMEOUT

        base = self.proxy.rss_kb()
        done, failures = proxy_flood.flood("127.0.0.1", self.port, 0, FULL, deadline=deadline)
        at_full = self.proxy.rss_kb()
        d2, f2 = proxy_flood.flood("127.0.0.1", self.port, FULL, COUNT - FULL, deadline=deadline)
        at_end = self.proxy.rss_kb()
        done += d2
        failures += f2
        figures = ("RSS %d KiB at the start, %d KiB after %d addresses, %d KiB after %d"
                   % (base, at_full, FULL, at_end, COUNT))
        print("\n" + figures)

        self.assertEqual((done, failures), (COUNT, 0), "every connection ends with our close")
        self.assertLessEqual(at_end - at_full, FLAT_MARGIN_KIB, figures)
        self.assertLessEqual(at_end - base, TABLE_MAX_KIB + FIXED_MARGIN_KIB, figures)

        # The table at work, full: every address was new, so none was refused; client 0 was
        # counted (its one token is spent), the last client came when there was no room.
        self.assertEqual(self.status()["rate_limited_total"], 0)
        self.assertEqual(proxy_flood.one("127.0.0.1", self.port, 0), "eof")
        self.assertEqual(self.status()["rate_limited_total"], 1)
        for _ in range(2):
            self.assertEqual(proxy_flood.one("127.0.0.1", self.port, COUNT - 1), "eof")
        self.assertEqual(self.status()["rate_limited_total"], 1)


class BenchScript(unittest.TestCase):
    """bench/client_table.py, smoke-sized (below the bound), so that the script keeps working."""

    @unittest.skipIf(mcp.sanitizer_build(), "the bench script runs the build's binary as is")
    def test_smoke(self):
        build = os.environ.get("MCP_BUILD_DIR")
        if not build:
            self.skipTest("MCP_BUILD_DIR is not set (run through ctest)")
        script = os.path.join(mcp.SOURCE_DIR, "bench", "client_table.py")
        r = subprocess.run([sys.executable, script, "--build", build, "--count", "3000",
                            "--every", "1000", "--workers", "1"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("     3000 addresses  RSS", r.stdout)
        self.assertIn("rate_limited: 0 during the flood; client 0 again: +1; the last client "
                      "twice: +2", r.stdout)
        self.assertIn("checks: ok", r.stdout)


if __name__ == "__main__":
    unittest.main()
