"""
The edge data plane through the real binary with real sockets: PROXY protocol in (trusted
peers, v1 and v2, the header's address for the firewall, limits and logs; untrusted, malformed
and slow headers), PROXY protocol out (send-proxy-v1/v2 before the hello), wildcard and
fallback routes, and the per-client limits (rate_limit, max_connections_per_client) with many
client addresses presented through PROXY headers and distinct loopback sources.
"""

import socket
import struct
import time
import unittest

import mcp
from test_admin import APP
from test_edge_admin import EdgeCase

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, dst="127.0.0.1", sport=40000, dport=443):
    return ("PROXY TCP4 %s %s %d %d\r\n" % (src, dst, sport, dport)).encode()


def v2(src, dst="127.0.0.1", sport=40000, dport=443):
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


def recv_exactly(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


class ProxyIn(EdgeCase):

    def setUp(self):
        super().setUp()
        self.backend = self.raw_backend("echo")
        self.start_admin(routes=[(APP, self.backend.addr())])
        self.ok("listener", "set", self.laddr, "--proxy-protocol", "on",
                "--proxy-from", "127.0.0.1/32", "--proxy-from", "127.0.0.2/32")

    def relayed_through(self, header, source="127.0.0.1"):
        s = self.connect("127.0.0.1", self.port, source=source)
        hello = mcp.client_hello(APP)
        s.sendall(header + hello)
        self.assertEqual(recv_exactly(s, len(hello)), hello)
        s.close()

    def test_v1_and_v2_headers_name_the_client(self):
        self.relayed_through(v1("203.0.113.7", sport=41000))
        self.relayed_through(v2("198.51.100.9", sport=42000), source="127.0.0.2")
        a = self.proxy.wait_conn(client="203.0.113.7:41000", outcome="ok")[0]
        b = self.proxy.wait_conn(client="198.51.100.9:42000", outcome="ok")[0]
        # bytes_in counts what went to the backend: the hello, not the PROXY header.
        self.assertEqual(a["bytes_in"], len(mcp.client_hello(APP)))
        self.assertEqual(b["bytes_in"], len(mcp.client_hello(APP)))
        # Only the hello reached the backend.
        self.assertEqual(self.backend.wait_received(len(mcp.client_hello(APP)), idx=0),
                         mcp.client_hello(APP))
        # Header and hello split over several writes, one byte at a time.
        s = self.connect("127.0.0.1", self.port)
        for b1 in v2("192.0.2.44", sport=43000) + mcp.client_hello(APP):
            s.sendall(bytes([b1]))
        self.assertEqual(recv_exactly(s, len(mcp.client_hello(APP))), mcp.client_hello(APP))
        s.close()
        self.proxy.wait_conn(client="192.0.2.44:43000", outcome="ok")

    def test_unknown_and_local_use_the_peer(self):
        self.relayed_through(b"PROXY UNKNOWN\r\n")
        self.relayed_through(V2_SIG + bytes([0x20, 0x00, 0, 0]))
        self.proxy.wait_conn(count=2, outcome="ok")
        oks = [c for c in self.proxy.conns() if c["outcome"] == "ok"]
        self.assertEqual(len(oks), 2)
        for c in oks:
            self.assertTrue(c["client"].startswith("127.0.0.1:"), c)

    def test_untrusted_peer_is_reset(self):
        how, _ = mcp.probe("127.0.0.1", self.port, source="127.0.0.3",
                           send=v1("203.0.113.7") + mcp.client_hello(APP))
        self.assertEqual(how, "reset")
        self.proxy.wait_conn(outcome="proxy_error")
        self.assertEqual(self.backend.accepts, 0)

    def test_malformed_and_missing_headers_are_closed(self):
        for data in (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",   # too many fields
                     b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n",   # not an address
                     b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",     # wrong family
                     b"PROXY " + b"x" * 120,                      # no CRLF within 107 bytes
                     mcp.client_hello(APP)):                      # no header at all
            with self.subTest(data=data[:40]):
                how, got = mcp.probe("127.0.0.1", self.port, send=data)
                self.assertEqual((how, got), ("eof", b""))
        self.proxy.wait_conn(count=5, outcome="proxy_error")
        self.assertEqual(self.backend.accepts, 0)
        st = self.status()["listeners"][0]
        self.assertEqual(st["unrouted_total"], 0)

    def test_firewall_and_status_see_the_header_address(self):
        self.ok("firewall", "add", "ip", "203.0.113.66")
        how, _ = mcp.probe("127.0.0.1", self.port, send=v1("203.0.113.66") + mcp.client_hello(APP))
        self.assertEqual(how, "reset")
        self.proxy.wait_conn(client="203.0.113.66:40000", outcome="blocked")
        # The trusted peer itself is not blocked: another client through it is served.
        self.relayed_through(v1("203.0.113.67"))


class SlowHeader(EdgeCase):

    def test_header_not_complete_within_handshake_timeout(self):
        backend = self.raw_backend("echo")
        self.proxy = self.start_proxy([(self.laddr, None, [(APP, backend.addr())])],
                                      proxy={"handshake_timeout": "700ms"},
                                      extra=self.grpc_section())
        self.proxy.wait_log(r"admin API listening on unix:")
        self.config = self.proxy.config_path
        self.ok("listener", "set", self.laddr, "--proxy-protocol", "on",
                "--proxy-from", "127.0.0.0/8")
        s = self.connect("127.0.0.1", self.port)
        s.sendall(b"PROXY TCP4 1.2.")
        t0 = time.monotonic()
        self.assertEqual(mcp.read_until_closed(s), ("eof", b""))
        self.assertLess(time.monotonic() - t0, 5)
        self.proxy.wait_conn(outcome="proxy_error")


class ClientLimits(EdgeCase):

    def setUp(self):
        super().setUp()
        self.backend = self.raw_backend("echo")
        self.start_admin(routes=[(APP, self.backend.addr())])

    def stream(self, header=b"", source=None):
        s = self.connect("127.0.0.1", self.port, source=source)
        hello = mcp.client_hello(APP)
        s.sendall(header + hello)
        got = recv_exactly(s, len(hello))
        return s, got == hello

    def refused(self, header=b"", source=None):
        how, _ = mcp.probe("127.0.0.1", self.port, source=source,
                           send=header + mcp.client_hello(APP))
        return how

    def test_max_per_client_by_loopback_source(self):
        self.ok("listener", "set", self.laddr, "--max-per-client", "2")
        a1, ok1 = self.stream(source="127.0.0.2")
        a2, ok2 = self.stream(source="127.0.0.2")
        self.assertTrue(ok1 and ok2)
        self.assertEqual(self.refused(source="127.0.0.2"), "eof")
        self.proxy.wait_log(r"client=127\.0\.0\.2:\d+ .*outcome=rate_limited")
        # Another client is not affected.
        b1, okb = self.stream(source="127.0.0.3")
        self.assertTrue(okb)
        # When one of the first client's connections ends, it may open another.
        a1.close()
        self.proxy.wait_log(r"client=127\.0\.0\.2:\d+ .*outcome=ok")
        a3, ok3 = self.stream(source="127.0.0.2")
        self.assertTrue(ok3)
        self.assertEqual(self.status()["listeners"][0].get("settings", {})
                         .get("max_connections_per_client"), 2)

    def test_rate_limit_through_proxy_headers_from_a_trusted_peer(self):
        self.ok("listener", "set", self.laddr, "--proxy-protocol", "on",
                "--proxy-from", "127.0.0.1/32", "--rate-limit", "3/1m")
        # Many distinct clients through one trusted peer: each gets its own bucket.
        for i in range(50):
            s, ok = self.stream(v1("10.1.%d.%d" % (i // 200, i % 200 + 1)))
            self.assertTrue(ok, i)
            s.close()
        # One client: three in a minute, then refused (FIN) until the bucket refills.
        for i in range(3):
            s, ok = self.stream(v2("192.0.2.200"))
            self.assertTrue(ok, i)
            s.close()
        self.assertEqual(self.refused(v2("192.0.2.200")), "eof")
        self.proxy.wait_log(r"client=192\.0\.2\.200:40000 .*outcome=rate_limited")
        # An IPv6 client's /64 is one key: two addresses in one /64 share the bucket.
        hdr = lambda a: ("PROXY TCP6 %s ::1 40000 443\r\n" % a).encode()
        for i in range(3):
            s, ok = self.stream(hdr("2001:db8:1:2::%x" % (i + 1)))
            self.assertTrue(ok, i)
            s.close()
        self.assertEqual(self.refused(hdr("2001:db8:1:2::99")), "eof")
        s, ok = self.stream(hdr("2001:db8:1:3::1"))
        self.assertTrue(ok)


if __name__ == "__main__":
    unittest.main()
