"""
Wildcard and fallback routes, and the PROXY header sent to a route's backend, end to end
through the real binary: routes from the config file (seeded) and from the admin API, raw
backends that record every byte they receive.
"""

import json
import socket
import struct
import unittest

import mcp
from test_edge_admin import EdgeCase

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def relay(port, hostname, source=None):
    """Sends a hello for HOSTNAME (None: no SNI); returns what came back (echo) or b""."""
    s = mcp.connect("127.0.0.1", port, source=source)
    hello = mcp.client_hello(hostname)
    s.sendall(hello)
    got = b""
    while len(got) < len(hello):
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    s.close()
    return got == hello


class Wildcards(EdgeCase):

    def test_exact_then_longest_wildcard_then_fallback(self):
        exact, deep, wide, fb = (self.raw_backend("echo") for _ in range(4))
        self.start_admin(routes=[("app.example.com", exact.addr()),
                                 ("*.b.example.com", deep.addr()),
                                 ("*.example.com", wide.addr())])
        cases = [("app.example.com", exact), ("APP.Example.com.", exact),
                 ("x.b.example.com", deep), ("y.x.b.example.com", deep),
                 ("b.example.com", wide), ("other.example.com", wide)]
        for name, backend in cases:
            with self.subTest(name=name):
                before = backend.accepts
                self.assertTrue(relay(self.port, name))
                self.assertEqual(backend.accepts, before + 1)
        # Not covered by any route, and no fallback: closed, unrouted.
        for name in ("example.com", "example.org", None):
            with self.subTest(name=name):
                self.assertFalse(relay(self.port, name))
        self.proxy.wait_conn(count=3, outcome="unrouted")

        # With a fallback, the same connections go there, and it is counted.
        self.ok("listener", "set", self.laddr, "--fallback", fb.addr())
        for name in ("example.com", "example.org", None):
            with self.subTest(fallback=name):
                self.assertTrue(relay(self.port, name))
        self.assertEqual(fb.accepts, 3)
        # An exact or wildcard route still wins over the fallback.
        self.assertTrue(relay(self.port, "z.example.com"))
        self.assertEqual(fb.accepts, 3)
        self.proxy.wait_conn(sni="-", backend=fb.addr(), outcome="ok")
        # Removing the fallback restores the close.
        self.ok("listener", "set", self.laddr, "--fallback", "none")
        self.assertFalse(relay(self.port, "example.org"))

    def test_wildcards_over_the_api_and_listed(self):
        wide = self.raw_backend("echo")
        self.start_admin()
        self.ok("routes", "add", self.laddr, "*.Tenants.example.com", wide.addr())
        self.assertTrue(relay(self.port, "acme.tenants.example.com"))
        self.assertFalse(relay(self.port, "tenants.example.com"))
        self.assertIn((self.laddr, "*.tenants.example.com", wide.addr()), self.routes())
        self.ok("routes", "remove", self.laddr, "*.tenants.example.com")
        self.assertFalse(relay(self.port, "acme.tenants.example.com"))

    def test_config_seeds_fallback_and_wildcards(self):
        wide, fb = self.raw_backend("echo"), self.raw_backend("echo")
        extra = ('\n[listener "%s"]\nfallback = %s\nroute = *.Example.net %s send-proxy-v1\n'
                 % (self.laddr, fb.addr(), wide.addr())) + self.grpc_section()
        self.proxy = self.start_proxy([], extra=extra, wait=False)
        self.proxy.wait_ready(1)
        self.proxy.wait_log(r"admin API listening on unix:")
        self.config = self.proxy.config_path
        self.assertTrue(relay(self.port, None))
        s = mcp.connect("127.0.0.1", self.port)
        s.sendall(mcp.client_hello("a.example.net"))
        got = wide.wait_received(len(mcp.client_hello("a.example.net")) + 20)
        s.close()
        self.assertTrue(got.startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 "), got[:60])
        self.assertEqual(fb.accepts, 1)
        self.assertEqual(self.listeners()[self.laddr]["fallback"], fb.addr())
        self.assertIn({"listener": self.laddr, "hostname": "*.example.net",
                       "backend": wide.addr(), "send_proxy": "v1"},
                      json.loads(self.ok("routes", "list", "--json")))


class SendProxy(EdgeCase):

    def setUp(self):
        super().setUp()
        self.backend = self.raw_backend("record")
        self.start_admin()

    def header_and_hello(self, idx, hello):
        data = self.backend.wait_received(len(hello) + 16, idx=idx)
        mcp.wait_for(lambda: self.backend.received[idx].endswith(hello), mcp.IO_TIMEOUT,
                     what="the whole hello at the backend")
        data = bytes(self.backend.received[idx])
        self.assertTrue(data.endswith(hello), data)
        return data[:len(data) - len(hello)]

    def test_v1_and_v2_headers_before_the_hello(self):
        hello = mcp.client_hello("app.example.com")
        for idx, (version, source) in enumerate((("v1", "127.0.0.2"), ("v2", "127.0.0.3"))):
            self.ok("routes", "add", self.laddr, "app.example.com", self.backend.addr(),
                    "--send-proxy", version)
            s = self.connect("127.0.0.1", self.port, source=source)
            s.sendall(hello)
            sport = s.getsockname()[1]
            header = self.header_and_hello(idx, hello)
            if version == "v1":
                self.assertEqual(header, ("PROXY TCP4 %s 127.0.0.1 %d %d\r\n"
                                          % (source, sport, self.port)).encode())
            else:
                body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + \
                    struct.pack("!HH", sport, self.port)
                self.assertEqual(header, V2_SIG + b"\x21\x11" + struct.pack("!H", 12) + body)
            s.close()
        # A route without the option sends the hello alone.
        self.ok("routes", "add", self.laddr, "app.example.com", self.backend.addr())
        s = self.connect("127.0.0.1", self.port)
        s.sendall(hello)
        self.assertEqual(self.backend.wait_received(len(hello), idx=2), hello)
        listed = [r for r in json.loads(self.ok("routes", "list", "--json"))]
        self.assertEqual(listed[0]["send_proxy"], "none")

    def test_v2_for_an_ipv6_client(self):
        hello = mcp.client_hello("app.example.com")
        port = mcp.free_port("::1")
        six = "[::1]:%d" % port
        self.ok("listener", "add", six)
        self.ok("routes", "add", six, "app.example.com", self.backend.addr(), "--send-proxy", "v2")
        s = mcp.connect("::1", port)
        self.sockets.append(s)
        s.sendall(hello)
        sport = s.getsockname()[1]
        header = self.header_and_hello(0, hello)
        lo = socket.inet_pton(socket.AF_INET6, "::1")
        self.assertEqual(header, V2_SIG + b"\x21\x21" + struct.pack("!H", 36) + lo + lo +
                         struct.pack("!HH", sport, port))


if __name__ == "__main__":
    unittest.main()
