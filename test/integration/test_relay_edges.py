"""
The relay's edge cases under the edge-triggered event set (lib/conn.c, lib/relay.c): each test
makes data arrive in an order where a wrongly cleared rd/wr flag would stall the connection
until its idle timeout, and asserts that every byte and the FIN still get through, promptly.

Urgent data, backpressure and resumption, data and FIN that arrive while the backend connect is
still in progress, data and FIN in one segment, a refused ClientHello that came in pieces, and
a small exchange that must not wait behind a bulk transfer on the same loop. Everything runs
with the splice relay (the default) and again with `relay = copy` (EdgesCopy).
"""

import array
import signal
import socket
import struct
import threading
import time
import unittest

import mcp
from mcp import ProxyTestCase

APP = "app.example.com"
BULK = "bulk.example.com"
MB = 1 << 20
PROMPT = 2.0  # what "promptly" means here: far below the 30 s idle timeout


def recv_exact(s, n, timeout=PROMPT):
    """Exactly N bytes from S within TIMEOUT seconds, or AssertionError saying what came."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("got %d of %d bytes within %.1fs" % (len(buf), n, timeout))
        s.settimeout(left)
        try:
            chunk = s.recv(n - len(buf))
        except socket.timeout:
            continue
        if not chunk:
            raise AssertionError("EOF after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def counter_bytes(nbytes):
    """NBYTES of a pattern where no 4-byte-aligned piece repeats within 1 MiB and every MiB
    starts with its own number: a lost, doubled or reordered chunk changes the bytes."""
    block = array.array("I", range(MB // 4)).tobytes()
    blocks = [struct.pack("<I", 0xB10C0000 + i) + block[4:] for i in range(nbytes // MB)]
    return b"".join(blocks)


class FnBackend(mcp.RawBackend):
    """A RawBackend whose connections are served by FN(backend, conn, idx)."""

    def __init__(self, fn):
        self.fn = fn
        self.sent = 0
        self.go = threading.Event()
        super().__init__("record")

    def serve(self, c, idx):
        return self.fn(self, c, idx)


class SlowAccept:
    """
    A listening socket (backlog 0) whose accept queue is full: one filler connection sits in
    it, so the kernel drops further SYNs and a connect to it hangs until the SYN is sent again
    (about 1 s later). free() accepts the filler; the next SYN then gets in.
    """

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(0)
        self.addr = "127.0.0.1:%d" % self.ls.getsockname()[1]
        self.filler = socket.socket()
        self.filler.connect(self.ls.getsockname())
        self.filler_port = self.filler.getsockname()[1]
        self.others = []

    def free(self):
        c, _ = self.ls.accept()
        self.others.append(c)
        if c.getpeername()[1] != self.filler_port:
            raise AssertionError("the first connection in the queue was not the filler")

    def accept_proxy(self, timeout):
        """The proxy's connection, once the kernel lets it in; returns (conn, seconds waited)."""
        t0 = time.monotonic()
        self.ls.settimeout(timeout)
        c, _ = self.ls.accept()
        self.others.append(c)
        return c, time.monotonic() - t0

    def close(self):
        for s in self.others + [self.filler, self.ls]:
            s.close()


def wait_for_quietly(pred, timeout, interval=0.01):
    """Polls pred() until true or TIMEOUT passes; the caller asserts what it then finds."""
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(interval)


def read_to_eof(c, timeout):
    """Everything C sends until its EOF, within TIMEOUT: (bytes, saw_eof)."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(data), False
        c.settimeout(left)
        try:
            chunk = c.recv(65536)
        except socket.timeout:
            return bytes(data), False
        if not chunk:
            return bytes(data), True
        data += chunk


class Edges(ProxyTestCase):
    RELAY = None

    def start(self, routes, **proxy):
        """One listener with ROUTES [(hostname, backend addr)], one worker loop."""
        proxy.setdefault("workers", "1")
        if self.RELAY:
            proxy.setdefault("relay", self.RELAY)
        self.port = mcp.free_port()
        self.proxy = self.start_proxy([("127.0.0.1:%d" % self.port, None, routes)], proxy=proxy)

    def client(self, nodelay=True):
        s = self.connect("127.0.0.1", self.port)
        if nodelay:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def assert_ok(self, bytes_in=None, bytes_out=None, sni=APP):
        c = self.proxy.wait_conn(timeout=5, sni=sni)[0]
        self.assertEqual(c["outcome"], "ok", c)
        if bytes_in is not None:
            self.assertEqual(c["bytes_in"], bytes_in, c)
        if bytes_out is not None:
            self.assertEqual(c["bytes_out"], bytes_out, c)
        return c

    # ---- urgent data in the middle of the stream ----

    def urgent(self, bulk=0, gap=0.0, shut=False, stopped=False, repeat=1):
        """hello [+ bulk], then b"abc", b"X" as urgent data, b"def": the backend must get
        everything but the urgent byte within PROMPT, then (shut) EOF. stopped: the proxy is
        stopped (SIGSTOP) while the three (and the FIN) arrive, so its first read after
        SIGCONT stops short at the urgent mark with b"def" already queued behind it.
        repeat: that many connections one after the other, for orders that depend on timing."""
        b = self.raw_backend("record")
        self.start([(APP, b.addr())])
        hello = mcp.client_hello(APP)
        head = bytes(range(256)) * (bulk // 256)
        want = hello + head + b"abcdef"
        for i in range(repeat):
            s = self.client()
            s.sendall(hello)
            b.wait_received(len(hello), idx=i)
            if head:
                s.sendall(head)
            if stopped:
                b.wait_received(len(hello) + len(head), idx=i)
                self.proxy.signal(signal.SIGSTOP)
                self.addCleanup(self.proxy.signal, signal.SIGCONT)
            s.sendall(b"abc")
            time.sleep(gap)
            self.assertEqual(s.send(b"X", socket.MSG_OOB), 1)
            time.sleep(gap)
            s.sendall(b"def")
            if shut:
                s.shutdown(socket.SHUT_WR)
            if stopped:
                time.sleep(0.1)  # everything is in the proxy's receive queue
                self.proxy.signal(signal.SIGCONT)
            what = "connection %d of %d" % (i + 1, repeat)
            wait_for_quietly(lambda: len(b.received[i]) >= len(want) or i in b.ended, PROMPT)
            got = bytes(b.received[i])
            self.assertEqual(
                len(got), len(want),
                "%s: the backend got %d bytes ending %r (%s), not %d ending %r"
                % (what, len(got), got[-9:], b.ended.get(i, "open"), len(want), want[-9:]))
            self.assertTrue(got == want, "%s: other bytes than sent (urgent byte in?)" % what)
            if not shut:
                s.shutdown(socket.SHUT_WR)
            self.assertEqual(b.wait_ended(i, timeout=PROMPT), "eof", what)
            self.assertEqual(bytes(b.received[i]), want, what)
            self.assertEqual(mcp.read_until_closed(s, timeout=PROMPT), ("eof", b""), what)
        for c in self.proxy.wait_conn(timeout=5, count=repeat, sni=APP):
            self.assertEqual((c["outcome"], c["bytes_in"], c["bytes_out"]),
                             ("ok", len(want), 0), c)

    def test_urgent_byte_mid_stream_is_dropped_and_the_rest_flows(self):
        self.urgent()

    def test_urgent_byte_with_gaps_between_the_sends(self):
        self.urgent(gap=0.05)

    def test_urgent_byte_after_bulk_data(self):
        self.urgent(bulk=256 * 1024)

    def test_urgent_byte_after_bulk_data_with_gaps(self):
        self.urgent(bulk=256 * 1024, gap=0.05)

    def test_urgent_byte_then_fin(self):
        self.urgent(shut=True)

    def test_urgent_byte_after_bulk_then_fin(self):
        # Bulk makes the splice relay splice; the urgent byte, the bytes behind it and the
        # FIN may then arrive while it is splicing, before their event is seen. Whether they
        # do depends on timing (here one connection in 5 to 50), hence 150 connections.
        self.urgent(bulk=MB, shut=True, repeat=150)

    def test_urgent_byte_queued_with_the_data_around_it(self):
        self.urgent(stopped=True)

    def test_urgent_byte_queued_with_the_data_around_it_and_fin(self):
        self.urgent(stopped=True, shut=True)

    def test_urgent_byte_after_bulk_queued_with_the_data_around_it(self):
        self.urgent(bulk=256 * 1024, stopped=True)

    def test_urgent_byte_after_bulk_queued_with_the_data_around_it_and_fin(self):
        self.urgent(bulk=256 * 1024, stopped=True, shut=True)

    # ---- backpressure backend -> client, then resumption ----

    def test_stalled_client_bounds_memory_and_then_gets_every_byte(self):
        total = 64 * MB
        payload = counter_bytes(total)
        hello = mcp.client_hello(APP)

        def push(be, c, idx):
            be.record(idx, recv_exact(c, len(hello), timeout=mcp.IO_TIMEOUT))
            be.go.wait(mcp.IO_TIMEOUT)
            view = memoryview(payload)
            c.settimeout(60)
            while be.sent < total:
                before = be.sent
                be.sent += c.send(view[be.sent:be.sent + 256 * 1024])
                if be.sent // (8 * MB) != before // (8 * MB):
                    # A pause now and then lets the proxy drain this socket (EAGAIN), so the
                    # next bytes need a new edge: one it only gets if it reads again after
                    # the stall.
                    time.sleep(0.1)
            c.shutdown(socket.SHUT_WR)
            rest, eof = read_to_eof(c, 60)
            be.record(idx, rest)
            return "eof" if eof else "closed"

        b = FnBackend(push)
        self.backends.append(b)
        self.start([(APP, b.addr())])
        # A fixed receive buffer keeps what the kernel holds for the stalled client small
        # (no autotuning), so the stall must reach the backend through the proxy.
        s = socket.socket()
        self.sockets.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        s.settimeout(mcp.IO_TIMEOUT)
        s.connect(("127.0.0.1", self.port))
        s.sendall(hello)
        b.wait_received(len(hello))
        time.sleep(0.2)
        base = peak = self.proxy.rss_kb()
        b.go.set()
        stall_end = time.monotonic() + 2.0
        while time.monotonic() < stall_end:
            peak = max(peak, self.proxy.rss_kb())
            time.sleep(0.05)
        sent_in_stall = b.sent
        self.assertLess(sent_in_stall, total, "the backend was never held back")
        self.assertGreater(sent_in_stall, 0, "the backend sent nothing")
        grew_mb = (peak - base) / 1024
        self.assertLess(grew_mb, 20, "proxy RSS %d kB -> %d kB during the stall" % (base, peak))

        got = bytearray(total)
        view = memoryview(got)
        n = 0
        deadline = time.monotonic() + 30
        s.settimeout(5)  # a stalled relay shows as 5 s without a byte
        while n < total and time.monotonic() < deadline:
            try:
                k = s.recv_into(view[n:])
            except socket.timeout:
                break
            if k == 0:
                break
            n += k
        self.assertEqual(n, total, "the client got %d of %d bytes" % (n, total))
        self.assertTrue(got == payload, "the bytes differ from what the backend sent")
        self.assertEqual(mcp.read_until_closed(s, timeout=PROMPT), ("eof", b""))
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(b.wait_ended(0, timeout=PROMPT), "eof")
        self.assert_ok(bytes_in=len(hello), bytes_out=total)

    # ---- client data and FIN while the backend connect is slow ----

    def slow_connect(self, byte_by_byte):
        slow = SlowAccept()
        self.addCleanup(slow.close)
        time.sleep(0.1)  # the filler's handshake settles into the accept queue
        self.start([(APP, slow.addr)], connect_timeout="4s")
        s = self.client()
        hello = mcp.client_hello(APP)
        body = bytes(range(256)) * 8
        if byte_by_byte:
            # The first byte alone, so the first read after accept finds an incomplete hello
            # and the client socket joins the event set; then the rest, a byte per send.
            s.sendall(hello[:1])
            time.sleep(0.05)
            for i in range(1, len(hello)):
                s.sendall(hello[i:i + 1])
        else:
            s.sendall(hello)
        # The hello is routed (and the connect started) before the body and the FIN come,
        # so they are not read along with the hello's last bytes.
        time.sleep(0.05)
        s.sendall(body)
        s.shutdown(socket.SHUT_WR)
        sent_at = time.monotonic()
        time.sleep(0.3)
        slow.free()
        c, _ = slow.accept_proxy(timeout=3.5)
        waited = time.monotonic() - sent_at
        # The proxy's first SYN was dropped: it got in with the one sent again ~1 s later,
        # long after the body and the FIN were in.
        self.assertGreater(waited, 0.5, "the connect was not slow (%.2fs)" % waited)
        data, eof = read_to_eof(c, PROMPT)
        self.assertEqual(len(data), len(hello) + len(body))
        self.assertTrue(data == hello + body, "the backend got other bytes than sent")
        self.assertTrue(eof, "no EOF at the backend within %.1fs" % PROMPT)
        c.shutdown(socket.SHUT_WR)
        self.assertEqual(mcp.read_until_closed(s, timeout=PROMPT), ("eof", b""))
        self.assert_ok(bytes_in=len(hello) + len(body), bytes_out=0)

    def test_data_and_fin_during_slow_connect_hello_in_one_write(self):
        self.slow_connect(byte_by_byte=False)

    def test_data_and_fin_during_slow_connect_hello_byte_by_byte(self):
        self.slow_connect(byte_by_byte=True)

    # ---- data and FIN together ----

    def client_data_and_fin_in_one_segment(self, size):
        b = self.raw_backend("record")
        self.start([(APP, b.addr())])
        s = self.client(nodelay=False)
        hello = mcp.client_hello(APP)
        s.sendall(hello)
        b.wait_received(len(hello))
        body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        s.sendall(body)
        s.shutdown(socket.SHUT_WR)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        self.assertEqual(b.wait_ended(0, timeout=PROMPT), "eof")
        self.assertEqual(len(b.received[0]), len(hello) + size)
        self.assertTrue(bytes(b.received[0]) == hello + body)
        self.assertEqual(mcp.read_until_closed(s, timeout=PROMPT), ("eof", b""))
        self.assert_ok(bytes_in=len(hello) + size, bytes_out=0)

    def test_client_data_and_fin_together_small(self):
        self.client_data_and_fin_in_one_segment(1000)

    def test_client_data_and_fin_together_bulk(self):
        self.client_data_and_fin_in_one_segment(300 * 1000)

    def backend_reply_and_close(self, size):
        hello = mcp.client_hello(APP)
        reply = (b"reply-" * (size // 6 + 1))[:size]

        def answer(be, c, idx):
            be.record(idx, recv_exact(c, len(hello), timeout=mcp.IO_TIMEOUT))
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            c.sendall(reply)
            c.close()  # the reply and the FIN leave together when the cork goes with it
            return "closed"

        b = FnBackend(answer)
        self.backends.append(b)
        self.start([(APP, b.addr())])
        s = self.client()
        s.sendall(hello)
        how, data = mcp.read_until_closed(s, timeout=PROMPT)
        self.assertEqual(how, "eof", "after %d of %d bytes" % (len(data), size))
        self.assertEqual(len(data), size)
        self.assertTrue(data == reply)
        s.shutdown(socket.SHUT_WR)
        self.assert_ok(bytes_in=len(hello), bytes_out=size)

    def test_backend_reply_and_close_together_small(self):
        self.backend_reply_and_close(1000)

    def test_backend_reply_and_close_together_bulk(self):
        self.backend_reply_and_close(300 * 1000)

    # ---- a refused ClientHello that came in pieces ----

    def refused_in_pieces(self, cuts):
        b = self.raw_backend("record")
        self.start([(APP, b.addr())])
        s = self.client()
        hello = mcp.client_hello("unknown.example.net")
        edges = [0] + list(cuts) + [len(hello)]
        for lo, hi in zip(edges, edges[1:]):
            s.sendall(hello[lo:hi])
            time.sleep(0.03)
        self.assertEqual(mcp.read_until_closed(s, timeout=PROMPT), ("eof", b""))
        c = self.proxy.wait_conn(timeout=5, sni="unknown.example.net")[0]
        self.assertEqual(c["outcome"], "unrouted", c)
        self.assertEqual(c["bytes_in"], len(hello), c)
        self.assertEqual(b.accepts, 0)

    def test_refused_hello_in_three_pieces_is_closed_with_a_fin(self):
        self.refused_in_pieces([1, 40])

    def test_refused_hello_byte_by_byte_is_closed_with_a_fin(self):
        self.refused_in_pieces(range(1, len(mcp.client_hello("unknown.example.net"))))

    # ---- fairness: a ping-pong next to a bulk transfer on one loop ----

    def test_ping_pong_is_not_held_up_by_a_bulk_transfer(self):
        stop = threading.Event()
        self.addCleanup(stop.set)

        def stream(be, c, idx):
            be.record(idx, recv_exact(c, len(mcp.client_hello(BULK)), timeout=mcp.IO_TIMEOUT))
            chunk = b"\x5a" * (256 * 1024)
            c.settimeout(5)
            while not stop.is_set():
                be.sent += c.send(chunk)
            return "closed"

        bulk_be = FnBackend(stream)
        self.backends.append(bulk_be)
        echo = self.raw_backend("echo")
        self.start([(APP, echo.addr()), (BULK, bulk_be.addr())])

        bulk = self.client()
        bulk.sendall(mcp.client_hello(BULK))
        got = [0]

        def drain():
            buf = bytearray(256 * 1024)
            bulk.settimeout(5)
            try:
                while not stop.is_set():
                    n = bulk.recv_into(buf)
                    if n == 0:
                        return
                    got[0] += n
            except OSError:
                return

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        mcp.wait_for(lambda: got[0] > 8 * MB, 10, what="the bulk transfer to get going")

        s = self.client()
        hello = mcp.client_hello(APP)
        s.sendall(hello)
        self.assertEqual(recv_exact(s, len(hello)), hello)
        times = []
        before = got[0]
        for i in range(20):
            msg = b"ping%04d" % i
            t0 = time.monotonic()
            s.sendall(msg)
            self.assertEqual(recv_exact(s, len(msg)), msg)
            times.append(time.monotonic() - t0)
        during = got[0] - before
        stop.set()
        reader.join(timeout=5)
        self.assertGreater(during, MB, "the bulk transfer stalled during the ping-pong")
        slowest = max(times)
        self.assertLess(slowest, 0.2, "round trips (ms): %s" % [round(t * 1000) for t in times])
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(mcp.read_until_closed(s, timeout=PROMPT), ("eof", b""))
        self.assert_ok(bytes_in=len(hello) + 160, bytes_out=len(hello) + 160)


class EdgesCopy(Edges):
    """The same with the copying relay."""
    RELAY = "copy"


if __name__ == "__main__":
    unittest.main()
