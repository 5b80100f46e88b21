"""The relay: half-close, backpressure and bounded memory, errors, hostname backends."""

import socket
import struct
import threading
import time
import unittest

import mcp
from mcp import ProxyTestCase

APP = "app.example.com"
MB = 1 << 20


class Relay(ProxyTestCase):
    """Every test here runs with the default relay (splice), and again in RelayCopy."""
    RELAY = None

    def start(self, backend_addr, **proxy):
        if self.RELAY:
            proxy.setdefault("relay", self.RELAY)
        self.port = mcp.free_port()
        self.proxy = self.start_proxy(
            [("127.0.0.1:%d" % self.port, None, [(APP, backend_addr)])], proxy=proxy)

    def test_client_half_close_still_receives_the_backends_reply(self):
        reply = b"reply after your EOF" * 1000
        b = self.raw_backend("reply_eof", reply=reply)
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        hello = mcp.vector("openssl_tls12")
        s.sendall(hello + b"request")
        s.shutdown(socket.SHUT_WR)
        how, data = mcp.read_until_closed(s)
        self.assertEqual((how, data), ("eof", reply))
        self.assertEqual(bytes(b.received[0]), hello + b"request")
        c = self.proxy.wait_conn(outcome="ok")[0]
        self.assertEqual((c["bytes_in"], c["bytes_out"]), (len(hello) + 7, len(reply)))

    def test_backend_half_close_still_receives_the_clients_data(self):
        b = self.raw_backend("reply_first", reply=b"banner")
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        hello = mcp.vector("openssl_tls12")
        s.sendall(hello)
        how, data = mcp.read_until_closed(s)
        self.assertEqual((how, data), ("eof", b"banner"))
        # Our read side saw EOF; our write side still works and reaches the backend.
        s.sendall(b"late data" * 100)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(b.wait_ended(0), "eof")
        self.assertEqual(bytes(b.received[0]), hello + b"late data" * 100)
        self.proxy.wait_conn(outcome="ok")

    def test_client_reset_closes_the_backend_side(self):
        b = self.raw_backend("echo")
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        hello = mcp.vector("openssl_tls12")
        s.sendall(hello)
        b.wait_received(len(hello))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        self.assertIn(b.wait_ended(0), ("eof", "reset"))
        self.proxy.wait_conn(sni=APP)

    def test_backend_reset_closes_the_client_side(self):
        b = self.raw_backend("noread")
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        s.sendall(mcp.vector("openssl_tls12"))
        mcp.wait_for(lambda: b.conns, mcp.IO_TIMEOUT, what="the backend connection")
        bc = b.conns[0]
        bc.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        bc.close()
        how, data = mcp.read_until_closed(s, timeout=5)
        self.assertIn(how, ("eof", "reset"))
        self.assertEqual(data, b"")
        self.proxy.wait_conn(sni=APP)

    def test_hostname_backend_is_resolved_at_connect_time(self):
        # Listen on both loopback families so the test does not depend on which one
        # "localhost" resolves to first here.
        b = self.raw_backend("echo", hosts=("127.0.0.1", "::1"))
        self.start("localhost:%d" % b.port)
        s = self.connect("127.0.0.1", self.port)
        hello = mcp.vector("openssl_tls13")
        s.sendall(hello)
        self.assertEqual(b.wait_received(len(hello)), hello)
        # A clean end both ways (closing with the echo unread would be a reset: outcome error).
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(mcp.read_until_closed(s, timeout=5), ("eof", hello))
        s.close()
        c = self.proxy.wait_conn(outcome="ok")[0]
        self.assertEqual(c["backend"], "localhost:%d" % b.port)

    def test_stalled_backend_bounds_proxy_memory(self):
        # The backend reads nothing until its gate opens. The client pushes up to 200 MB; the
        # proxy must stop reading it once its writes to the backend back up, so the client's
        # sends stall and the proxy's RSS stays flat. Then the gate opens and every byte arrives.
        b = self.raw_backend("gate")
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        hello = mcp.vector("openssl_tls13")
        s.sendall(hello)
        mcp.wait_for(lambda: b.accepts, mcp.IO_TIMEOUT, what="the backend connection")
        time.sleep(0.2)
        base = self.proxy.rss_kb()
        peak = base
        chunk = b"\xa5" * (256 * 1024)
        sent = 0
        stalled = False
        s.settimeout(2.0)
        deadline = time.monotonic() + 60
        while sent < 200 * MB and time.monotonic() < deadline:
            try:
                sent += s.send(chunk)
            except socket.timeout:
                stalled = True
                break
            peak = max(peak, self.proxy.rss_kb())
        peak = max(peak, self.proxy.rss_kb())
        self.assertTrue(stalled, "sent %d MB without stalling" % (sent // MB))
        grew_mb = (peak - base) / 1024
        print("\nbackpressure: client stalled after %.1f MB; proxy RSS %d kB -> peak %d kB "
              "(+%.1f MB)" % (sent / MB, base, peak, grew_mb))
        self.assertLess(grew_mb, 20)
        # Nothing was lost: open the gate, finish, and count the bytes at the backend.
        b.gate.set()
        s.settimeout(mcp.IO_TIMEOUT)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(b.wait_ended(0, timeout=60), "eof")
        self.assertEqual(len(b.received[0]), len(hello) + sent)
        self.assertEqual(bytes(b.received[0][:len(hello)]), hello)
        c = self.proxy.wait_conn(outcome="ok")[0]
        self.assertEqual(c["bytes_in"], len(hello) + sent)

    def test_large_transfer_both_ways_is_exact(self):
        b = self.raw_backend("echo")
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        hello = mcp.vector("openssl_tls13")
        payload = bytes(range(256)) * (16 * 1024)  # 4 MiB
        s.sendall(hello)
        got = bytearray()

        sender = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
        sender.start()
        how, data = mcp.read_until_closed(s, timeout=60)
        sender.join(timeout=60)
        got += data
        self.assertEqual(how, "eof")
        self.assertEqual(len(got), len(hello) + len(payload))
        self.assertEqual(bytes(got), hello + payload)


class RelayCopy(Relay):
    """The same behaviour when bytes are copied through a buffer instead of spliced."""
    RELAY = "copy"


if __name__ == "__main__":
    unittest.main()
