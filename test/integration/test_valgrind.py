"""
The real binary under valgrind (memcheck): start, proxied TLS connections through an
`openssl s_server` backend on two worker loops, an admin change, SIGTERM; and the plain
start/stop of one loop with no traffic (the shutdown use-after-free of issue 9 D). Each run must
exit 0 with no valgrind error (--error-exitcode=9). Skipped without valgrind, and for sanitizer
builds (ASan and valgrind do not mix). Also run alone by `make valgrind` (part of `make all`).
"""
import os
import shutil
import signal
import subprocess
import unittest

import admin_pb as pb
import mcp
from mcp import ProxyTestCase

APP = "app.example.com"
VALGRIND_READY = 90.0  # valgrind slows start-up 20-50x; the machine may be busy


def sanitizer_build():
    cache = os.path.join(os.environ.get("MCP_BUILD_DIR", ""), "CMakeCache.txt")
    try:
        with open(cache) as f:
            return "MCP_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


@unittest.skipUnless(shutil.which("valgrind"), "valgrind is not installed")
@unittest.skipIf(sanitizer_build(), "a sanitizer build cannot run under valgrind")
class Valgrind(ProxyTestCase):

    def run_valgrind(self, config_text):
        path = os.path.join(self.dir, "vg.ini")
        with open(path, "w") as f:
            f.write(config_text)
        log = open(os.path.join(self.dir, "vg.log"), "w+")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            ["valgrind", "--error-exitcode=9", "--leak-check=full",
             "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
             "--trace-children=no", "-q", mcp.binary(), "server", "-c", path],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def stop():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.addCleanup(stop)
        self.proc, self.log = proc, log
        return proc

    def log_text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def wait_log(self, text, timeout=VALGRIND_READY):
        def found():
            if self.proc.poll() is not None:
                raise AssertionError("exited (%s) early:\n%s" % (self.proc.returncode,
                                                                 self.log_text()))
            return text in self.log_text()
        mcp.wait_for(found, timeout, interval=0.2, what=repr(text))

    def sigterm_and_check(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=VALGRIND_READY)
        text = self.log_text()
        self.assertEqual(rc, 0, "valgrind/mc-proxy exit status; log:\n" + text)
        self.assertNotRegex(text, r"==\d+==", "valgrind reported:\n" + text)
        self.assertIn(" stopped", text)

    def test_start_and_stop_with_no_traffic(self):
        # The reproduction of issue 9 D: one loop, one listener, SIGTERM after start-up.
        port = mcp.free_port()
        self.run_valgrind(mcp.config_text(self.db, proxy={"workers": "1"}, listeners=[
            ("127.0.0.1:%d" % port, None, [("a.example.com", "127.0.0.1:%d" % mcp.free_port())])]))
        self.wait_log("listening on ")
        self.sigterm_and_check()

    def test_tls_connections_and_an_admin_change(self):
        backend, cert = self.openssl_backend(APP)
        port = mcp.free_port()
        laddr = "127.0.0.1:%d" % port
        sock = os.path.join(self.dir, "admin.sock")
        self.run_valgrind(mcp.config_text(
            self.db, proxy={"workers": "2"}, listeners=[(laddr, None, [(APP, backend)])],
            extra="\n[grpc]\naddr = unix:%s\n" % sock))
        self.wait_log("admin API listening on")
        for _ in range(4):
            t = mcp.tls_connect("127.0.0.1", port, APP, cert, timeout=30)
            try:
                t.sendall(b"GET / HTTP/1.0\r\n\r\n")
                how, got = mcp.read_until_closed(t, timeout=30)
            finally:
                t.close()
            self.assertEqual(how, "eof")
            self.assertIn(b"HTTP/1.0 200", got)
        # An admin change goes through control, the store and both loops.
        c = pb.Client("unix:" + sock)
        try:
            c.call("AddRoute", pb.msg("AddRouteRequest")(
                listener_addr=laddr, route=pb.msg("Route")(hostname="b.example.com",
                                                           backend=backend)))
        finally:
            c.close()
        self.wait_log("b.example.com")
        t = mcp.tls_connect("127.0.0.1", port, APP, cert, timeout=30)
        t.close()
        self.sigterm_and_check()


if __name__ == "__main__":
    unittest.main()
