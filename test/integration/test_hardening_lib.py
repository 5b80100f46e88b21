"""
Data-plane hardening through the real binary (docs/RUNBOOK.md): the descriptor reserve keeps the
admin API alive after a flood under a low RLIMIT_NOFILE; a one-byte client holds a small hello
buffer; outcomes error, backend_error (connect timeout) and shutdown.
"""

import os
import re
import resource
import socket
import struct
import subprocess
import time
import unittest

import mcp
from mcp import ProxyTestCase

APP = "app.example.com"


class DescriptorReserve(ProxyTestCase):

    def start_capped(self, nofile):
        """A proxy with one listener, the admin API on a unix socket, and RLIMIT_NOFILE soft =
        hard = nofile; returns it, the admin socket, the listener's port and its /proc fd dir."""
        sock = os.path.join(self.dir, "admin.sock")
        port = mcp.free_port()
        proxy = self.start_proxy([("127.0.0.1:%d" % port, None, [(APP, "127.0.0.1:9")])],
                                 proxy={"handshake_timeout": "60s", "workers": "1"},
                                 extra="\n[grpc]\naddr = unix:%s\n" % sock, nofile=nofile)
        proxy.wait_log(r"admin API listening on unix:")
        return proxy, sock, port, "/proc/%d/fd" % proxy.pid

    def test_admin_answers_after_a_flood_past_the_descriptor_limit(self):
        # soft = hard = 128: the server cannot raise its limit, so the flood meets it.
        nofile, flood_n = 128, 200
        proxy, sock, port, fd_dir = self.start_capped(nofile)
        baseline = len(os.listdir(fd_dir))

        flood = []
        try:
            for _ in range(flood_n):
                try:
                    flood.append(mcp.connect("127.0.0.1", port, timeout=5))
                except OSError:
                    pass
            self.assertGreater(len(flood), nofile)
            # Let the proxy take what it will of the flood, then ask the admin API during it.
            mcp.wait_for(lambda: proxy.log_text().count("descriptor reserve reached") or
                         len(os.listdir(fd_dir)) >= nofile - 8, 15, interval=0.1,
                         what="the proxy to stop accepting")
            time.sleep(0.5)
            held = len(os.listdir(fd_dir))
            during = self.status(proxy)
            print("\nfd reserve: %d flood connections, proxy fds %d/%d (baseline %d)"
                  % (len(flood), held, nofile, baseline))
        finally:
            for s in flood:
                s.close()
        mcp.wait_for(lambda: len(os.listdir(fd_dir)) <= baseline + 2, 30, interval=0.2,
                     what="the proxy's descriptors to come back")
        after = self.status(proxy)
        self.assertEqual(during.returncode, 0, "status during the flood: " + during.stderr)
        self.assertEqual(after.returncode, 0, after.stdout + after.stderr)
        self.assertIn("127.0.0.1:%d" % port, after.stdout)
        self.assertLessEqual(held, nofile - 16, "the data plane ate into the reserve")
        proxy.wait_log(r"descriptor reserve reached")
        proxy.wait_log(r"accepting resumed")

    def test_a_connection_refused_inside_the_reserve_is_logged_as_limit(self):
        # Descriptors held outside the data plane (admin connections) push the lowest free
        # number into the reserve while no connection is live: the next client is accepted on
        # a descriptor of the reserve and refused. It must leave a log line (outcome=limit),
        # as a refusal at max_connections does, and count under rejected_limit_total.
        nofile = 128
        proxy, sock, port, fd_dir = self.start_capped(nofile)
        held = []
        client = None
        try:
            # The reserve line is 128 - 32 = 96: fill the proxy up to about 100 descriptors.
            while len(os.listdir(fd_dir)) < 100 and len(held) < 110:
                before = len(os.listdir(fd_dir))
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(sock)
                held.append(s)
                mcp.wait_for(lambda: len(os.listdir(fd_dir)) > before, 5, interval=0.02,
                             what="the admin server to take the connection")
            client = mcp.connect("127.0.0.1", port, timeout=5)
            client.settimeout(5)
            self.assertEqual(client.recv(1), b"", "the refused client gets a normal close")
            proxy.wait_log(r"conn listener=127\.0\.0\.1:%d client=127\.0\.0\.1:\d+ sni=- "
                           r"backend=- outcome=limit " % port)
            proxy.wait_log(r"descriptor reserve reached")
        finally:
            if client:
                client.close()
            for s in held:
                s.close()
        mcp.wait_for(lambda: "accepting resumed" in proxy.log_text(), 30, interval=0.2,
                     what="accepting to resume")
        st = subprocess.run([mcp.binary(), "status", "--json", "-c", proxy.config_path],
                            capture_output=True, text=True, timeout=20)
        self.assertEqual(st.returncode, 0, st.stderr)
        self.assertRegex(st.stdout, r'"rejected_limit_total":[1-9]')
        limit_lines = proxy.log_text().count("outcome=limit")
        self.assertEqual(limit_lines, int(re.search(r'"rejected_limit_total":(\d+)',
                                                    st.stdout).group(1)),
                         "every refusal at the reserve leaves one line")

    def status(self, proxy):
        return subprocess.run([mcp.binary(), "status", "-c", proxy.config_path],
                              capture_output=True, text=True, timeout=20)


class HelloBuffer(ProxyTestCase):

    @unittest.skipIf(mcp.sanitizer_build(), "AddressSanitizer's redzones and quarantine "
                     "inflate every allocation: the RSS bound is for real builds")
    def test_one_byte_clients_hold_small_buffers(self):
        clients = 3000
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard < clients + 200:
            self.skipTest("needs %d descriptors, hard limit %d" % (clients + 200, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        port = mcp.free_port()
        proxy = self.start_proxy([("127.0.0.1:%d" % port, None, [(APP, "127.0.0.1:9")])],
                                 proxy={"handshake_timeout": "60s", "workers": "1"})
        # Warm up allocator and pools with a first batch, then measure a second one.
        socks = []

        def open_batch(n):
            for _ in range(n):
                s = mcp.connect("127.0.0.1", port, timeout=5)
                s.sendall(b"\x16")
                socks.append(s)

        try:
            open_batch(200)
            time.sleep(0.5)
            before = proxy.rss_kb()
            open_batch(clients)
            fd_dir = "/proc/%d/fd" % proxy.pid
            mcp.wait_for(lambda: len(os.listdir(fd_dir)) >= clients + 200, 30, interval=0.2,
                         what="the proxy to accept every client")
            time.sleep(1.0)  # let every first byte be read
            after = proxy.rss_kb()
            per_conn = (after - before) * 1024 / clients
            print("\nhello buffer: RSS %d kB -> %d kB for %d one-byte clients: %.0f B each"
                  % (before, after, clients, per_conn))
            self.assertLess(per_conn, 2048)
        finally:
            for s in socks:
                s.close()


class Outcomes(ProxyTestCase):

    def start(self, backend, proxy=None):
        self.port = mcp.free_port()
        self.proxy = self.start_proxy([("127.0.0.1:%d" % self.port, None, [(APP, backend)])],
                                      proxy=proxy)

    def test_backend_reset_mid_stream_is_error(self):
        b = self.raw_backend("noread")
        self.start(b.addr())
        s = self.connect("127.0.0.1", self.port)
        s.sendall(mcp.vector("openssl_tls13"))
        mcp.wait_for(lambda: b.conns, mcp.IO_TIMEOUT, what="the backend connection")
        s.sendall(b"more bytes after the hello")
        # The backend resets its side (SO_LINGER 0) while the relay runs.
        bc = b.conns[0]
        bc.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        bc.close()
        mcp.read_until_closed(s, timeout=5)
        c = self.proxy.wait_conn(sni=APP)[0]
        self.assertEqual(c["outcome"], "error", c)

    def test_connect_timeout_is_backend_error(self):
        # A listening socket whose accept queue is full drops new SYNs: the connect hangs.
        full = socket.socket()
        self.sockets.append(full)
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            self.sockets.append(f)
            try:
                f.connect(full.getsockname())
            except BlockingIOError:
                pass
        time.sleep(0.2)
        self.start("127.0.0.1:%d" % full.getsockname()[1], proxy={"connect_timeout": "500ms"})
        s = self.connect("127.0.0.1", self.port)
        s.sendall(mcp.vector("openssl_tls13"))
        mcp.read_until_closed(s, timeout=10)
        c = self.proxy.wait_conn(sni=APP)[0]
        self.assertEqual(c["outcome"], "backend_error", c)

    def test_connection_cut_at_the_end_of_the_drain_is_shutdown(self):
        b = self.raw_backend("echo")
        self.start(b.addr(), proxy={"shutdown_timeout": "1s"})
        s = self.connect("127.0.0.1", self.port)
        hello = mcp.vector("openssl_tls13")
        s.sendall(hello)
        self.assertEqual(b.wait_received(len(hello)), hello)
        self.proxy.signal(15)
        self.assert_exit(self.proxy, 0, timeout=15)
        c = [c for c in self.proxy.conns() if c.get("sni") == APP]
        self.assertEqual(len(c), 1, self.proxy.log_text())
        self.assertEqual(c[0]["outcome"], "shutdown", c[0])


if __name__ == "__main__":
    unittest.main()
