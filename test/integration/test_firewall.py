"""Global firewall (SPEC §6 step 2): blocked clients get a RST and zero bytes."""

import os
import signal
import unittest

import mcp
from mcp import ProxyTestCase

APP = "app.example.com"


class Firewall(ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.app = self.tls_backend(APP)
        self.mmdb = os.path.join(self.dir, "country.mmdb")
        mcp.build_mmdb(self.mmdb, {"127.0.0.3/32": "KP", "127.0.0.4/32": "DE"})
        self.nblocked = 0
        self.port = mcp.free_port()
        self.port6 = mcp.free_port("::1")
        routes = [(APP, self.app.addr())]
        self.proxy = self.start_proxy(
            [("127.0.0.1:%d" % self.port, None, routes), ("[::1]:%d" % self.port6, None, routes)],
            firewall=[("geoip_db", self.mmdb), ("block_ip", "127.0.0.2"),
                      ("block_cidr", "127.0.0.16/28"), ("block_cidr", "::1/128"),
                      ("block_country", "KP")])

    def assert_blocked(self, source, host="127.0.0.1"):
        port = self.port6 if ":" in host else self.port
        accepts = self.app.accepts
        how, data = mcp.probe(host, port, source=source, timeout=5)
        self.assertEqual((how, data), ("reset", b""), "client %s" % source)
        self.nblocked += 1
        c = self.proxy.wait_conn(outcome="blocked", count=self.nblocked)[-1]
        self.assertEqual(c["client"].rsplit(":", 1)[0].strip("[]"), source)
        self.assertEqual(c["sni"], "-")
        self.assertEqual(c["bytes_out"], 0)
        self.assertEqual(self.app.accepts, accepts)

    def assert_passes(self, source):
        t = self.tls_client("127.0.0.1", self.port, APP, self.app.cert, source=source)
        self.assertEqual(mcp.tls_roundtrip(t, b"ok"), APP.encode() + b":ok")
        t.close()

    def test_blocked_ip_is_reset(self):
        self.assert_blocked("127.0.0.2")

    def test_blocked_cidr_v4_is_reset(self):
        self.assert_blocked("127.0.0.17")

    def test_blocked_cidr_v4_range_ends_are_exact(self):
        # 127.0.0.16/28 is .16 to .31: both ends blocked, the neighbours outside pass.
        self.assert_blocked("127.0.0.16")
        self.assert_blocked("127.0.0.31")
        self.assert_passes("127.0.0.15")
        self.assert_passes("127.0.0.32")

    def test_blocked_cidr_v6_is_reset(self):
        self.assert_blocked("::1", host="::1")

    def test_blocked_country_is_reset(self):
        self.assert_blocked("127.0.0.3")

    def test_unblocked_client_gets_through(self):
        self.assert_passes("127.0.0.4")
        self.assertEqual(self.proxy.wait_conn(outcome="ok")[0]["client"].split(":")[0],
                         "127.0.0.4")

    def test_blocked_client_sending_a_hello_is_still_reset(self):
        how, data = mcp.probe("127.0.0.1", self.port, source="127.0.0.2",
                              send=mcp.client_hello(APP), timeout=5)
        self.assertEqual((how, data), ("reset", b""))
        self.proxy.wait_conn(outcome="blocked")
        self.assertEqual(self.app.accepts, 0)

    def test_sighup_reopens_the_geoip_database(self):
        self.assert_blocked("127.0.0.3")
        self.assert_passes("127.0.0.4")
        mcp.build_mmdb(self.mmdb, {"127.0.0.3/32": "DE", "127.0.0.4/32": "KP"})
        self.proxy.signal(signal.SIGHUP)
        self.proxy.wait_log(r"SIGHUP: reopened")
        # The reload handed over to a new process (test_reload.py): stop it after the test.
        with open(self.db + ".pid") as f:
            self.addCleanup(os.kill, int(f.read()), signal.SIGTERM)
        self.assert_passes("127.0.0.3")
        self.assert_blocked("127.0.0.4")

    def test_sighup_with_a_broken_geoip_file_keeps_the_old_one(self):
        with open(self.mmdb + ".tmp", "wb") as f:
            f.write(b"not a maxmind db" * 100)
        os.replace(self.mmdb + ".tmp", self.mmdb)
        self.proxy.signal(signal.SIGHUP)
        self.proxy.wait_log(r"SIGHUP: .*keeping")
        self.assert_blocked("127.0.0.3")
        self.assert_passes("127.0.0.4")



class MappedListener(ProxyTestCase):

    def test_ipv4_mapped_client_is_checked_as_its_ipv4_address(self):
        # A listener on an IPv4-mapped IPv6 address sees IPv4 clients as ::ffff:a.b.c.d; the
        # firewall must still match them against the IPv4 rules.
        self.app = self.tls_backend(APP)
        port = mcp.free_port()
        proxy = self.start_proxy([("[::ffff:127.0.0.1]:%d" % port, None,
                                   [(APP, self.app.addr())])],
                                 firewall=[("block_ip", "127.0.0.2"),
                                           ("block_cidr", "127.0.0.16/28")])
        for source in ("127.0.0.2", "127.0.0.17"):
            self.assertEqual(mcp.probe("127.0.0.1", port, source=source, timeout=5),
                             ("reset", b""), source)
        t = self.tls_client("127.0.0.1", port, APP, self.app.cert, source="127.0.0.4")
        self.assertEqual(mcp.tls_roundtrip(t, b"m"), APP.encode() + b":m")
        blocked = proxy.wait_conn(outcome="blocked", count=2)
        # The proxy saw IPv6 (mapped) client addresses, so the IPv4 rules matched mapped ones.
        self.assertEqual(sorted(c["client"].rsplit(":", 1)[0] for c in blocked),
                         ["[::ffff:127.0.0.17]", "[::ffff:127.0.0.2]"])

if __name__ == "__main__":
    unittest.main()
