"""Timeouts and backend faults: handshake_timeout, connect_timeout, idle_timeout, backend down."""

import socket
import time
import unittest

import mcp
from mcp import ProxyTestCase

APP = "app.example.com"
HANDSHAKE = 0.5
IDLE = 1.0
CONNECT = 1.0
SLACK = 0.05  # the proxy's loop clock may lag ours by a few ms


class Timeouts(ProxyTestCase):

    def start(self, backend_addr):
        self.port = mcp.free_port()
        self.proxy = self.start_proxy(
            [("127.0.0.1:%d" % self.port, None, [(APP, backend_addr)])],
            proxy={"handshake_timeout": "%dms" % (HANDSHAKE * 1000),
                   "idle_timeout": "%dms" % (IDLE * 1000),
                   "connect_timeout": "%dms" % (CONNECT * 1000)})

    def time_to_close(self, s, limit):
        """Seconds until S is closed by the proxy (EOF expected), at most LIMIT."""
        t0 = time.monotonic()
        how, data = mcp.read_until_closed(s, timeout=limit)
        took = time.monotonic() - t0
        self.assertEqual(how, "eof", "after %.2fs, got %r" % (took, data[:100]))
        return took, data

    # ---- handshake_timeout ----

    def test_silent_client_is_closed_after_handshake_timeout(self):
        b = self.raw_backend()
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        took, data = self.time_to_close(s, HANDSHAKE * 6)
        self.assertEqual(data, b"")
        self.assertGreaterEqual(took, HANDSHAKE - SLACK)
        self.assertLess(took, HANDSHAKE * 3)
        c = self.proxy.wait_conn(outcome="timeout")[0]
        self.assertEqual((c["sni"], c["backend"], c["bytes_in"]), ("-", "-", 0))
        self.assertEqual(b.accepts, 0)

    def test_partial_clienthello_then_silence_is_closed_after_handshake_timeout(self):
        b = self.raw_backend()
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        hello = mcp.vector("openssl_tls13")
        s.sendall(hello[:len(hello) // 2])
        took, data = self.time_to_close(s, HANDSHAKE * 6)
        self.assertEqual(data, b"")
        self.assertGreaterEqual(took, HANDSHAKE - SLACK)
        self.assertLess(took, HANDSHAKE * 3)
        self.proxy.wait_conn(outcome="timeout")
        self.assertEqual(b.accepts, 0)

    def test_many_half_sent_hellos_hold_bounded_memory_and_all_time_out(self):
        """A slowloris-style crowd: 400 clients each send the first 100 bytes of a ClientHello
        and stop. The proxy holds one hello buffer (18 KiB) each at most, and closes every one
        of them at handshake_timeout, with a FIN, without reaching the backend."""
        b = self.raw_backend()
        self.start(b.addr())
        base_kb = self.proxy.rss_kb()
        part = mcp.vector("curl")[:100]
        socks = []
        t0 = time.monotonic()
        for _ in range(400):
            s = self.connect("127.0.0.1", self.port)
            s.sendall(part)
            socks.append(s)
        # While they are all pending (well inside handshake_timeout, if the machine keeps up):
        time.sleep(max(0.0, HANDSHAKE / 2 - (time.monotonic() - t0)))
        pending_kb = self.proxy.rss_kb() - base_kb
        self.proxy.wait_conn(outcome="timeout", count=400, timeout=30)
        for grown_kb in (pending_kb, self.proxy.rss_kb() - base_kb):
            self.assertLess(grown_kb, 400 * 19,
                            "RSS grew %d KiB for 400 half-open hellos" % grown_kb)
        for s in socks:
            how, data = mcp.read_until_closed(s, timeout=5)
            self.assertEqual((how, data), ("eof", b""))
            s.close()
        self.assertEqual(b.accepts, 0)

    def test_slow_trickle_does_not_extend_the_handshake_deadline(self):
        # One byte every 100 ms: each byte is progress, but the whole ClientHello must arrive
        # within handshake_timeout (a slowloris must not hold a slot for long).
        b = self.raw_backend()
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = mcp.vector("openssl_tls13")
        t0 = time.monotonic()
        closed = False
        for i in range(len(hello)):
            try:
                s.sendall(hello[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            s.settimeout(0.1)
            try:
                if s.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            if time.monotonic() - t0 > HANDSHAKE * 6:
                break
        took = time.monotonic() - t0
        self.assertTrue(closed, "still open after %.2fs of trickling" % took)
        self.assertLess(took, HANDSHAKE * 3)
        self.proxy.wait_conn(outcome="timeout")
        self.assertEqual(b.accepts, 0)

    # ---- backend faults ----

    def test_backend_down_closes_the_client_promptly(self):
        dead = mcp.free_port()  # nothing listens there: connect is refused
        self.start("127.0.0.1:%d" % dead)
        s = self.connect("127.0.0.1", self.port)
        s.sendall(mcp.vector("openssl_tls13"))
        took, data = self.time_to_close(s, 5)
        self.assertEqual(data, b"")
        self.assertLess(took, CONNECT)
        c = self.proxy.wait_conn(outcome="backend_error")[0]
        self.assertEqual((c["sni"], c["backend"]), (APP, "127.0.0.1:%d" % dead))

    def test_backend_that_never_answers_is_given_up_after_connect_timeout(self):
        # A listening socket whose accept queue is full drops further SYNs, so the proxy's
        # connect hangs until connect_timeout.
        full = socket.socket()
        self.sockets.append(full)
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        addr = full.getsockname()
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            self.sockets.append(f)
            try:
                f.connect(addr)
            except BlockingIOError:
                pass
        time.sleep(0.2)  # let the filler handshakes settle into the accept queue
        self.start("127.0.0.1:%d" % addr[1])
        s = self.connect("127.0.0.1", self.port)
        s.sendall(mcp.vector("openssl_tls13"))
        took, data = self.time_to_close(s, CONNECT * 6)
        self.assertEqual(data, b"")
        self.assertGreaterEqual(took, CONNECT - SLACK)
        self.assertLess(took, CONNECT * 3)
        c = self.proxy.wait_conn(sni=APP)[0]
        # SPEC §6 names no outcome for a connect timeout; either is an honest description.
        self.assertIn(c["outcome"], ("timeout", "backend_error"), c)
        self.assertEqual(c["sni"], APP)

    # ---- idle_timeout ----

    def relayed_pair(self):
        b = self.raw_backend("echo")
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        hello = mcp.vector("openssl_tls13")
        s.sendall(hello)
        got = b""
        while len(got) < len(hello):
            chunk = s.recv(65536)
            self.assertTrue(chunk, "EOF before the echo")
            got += chunk
        self.assertEqual(got, hello)
        return b, s

    def test_idle_relayed_pair_is_closed_after_idle_timeout(self):
        b, s = self.relayed_pair()
        took, data = self.time_to_close(s, IDLE * 6)
        self.assertEqual(data, b"")
        self.assertGreaterEqual(took, IDLE - SLACK)
        self.assertLess(took, IDLE * 3)
        # The backend side was closed too: it read EOF.
        self.assertEqual(b.wait_ended(0, timeout=IDLE * 3), "eof")
        c = self.proxy.wait_conn(outcome="timeout")[0]
        self.assertEqual(c["sni"], APP)

    def test_traffic_keeps_a_pair_alive_past_idle_timeout(self):
        b, s = self.relayed_pair()
        t0 = time.monotonic()
        while time.monotonic() - t0 < IDLE * 2.5:
            s.sendall(b"tick")
            self.assertEqual(s.recv(4), b"tick")
            time.sleep(IDLE / 4)
        self.assertNotIn(0, b.ended)
        self.assertEqual(self.proxy.conns(), [])
        took, _ = self.time_to_close(s, IDLE * 6)
        self.assertLess(took, IDLE * 3)


if __name__ == "__main__":
    unittest.main()
