"""
The newcomer's first try: `make devserver`, then the one command README's quick start shows.

The test runs the real Makefile target (with SRV= a temporary directory, BUILD= the tree ctest
built, and the example config's ports moved to free ones so that it cannot collide with anything
else on the machine), waits for the proxy and the demo TLS backend, fetches a page through the
proxy with curl exactly as README does, and checks the proxy logged outcome=ok. A Ctrl-C (SIGINT
to the process group) must stop the proxy cleanly and take the demo backend with it.

Needs MCP_BUILD_DIR (set by ctest).
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import unittest

from mcp import SOURCE_DIR, STOP_TIMEOUT, free_port, wait_for

READY_TIMEOUT = 120  # `make` checks the Debian packages and the build first


class DevserverTest(unittest.TestCase):
    def setUp(self):
        self.build = os.environ.get("MCP_BUILD_DIR")
        if not self.build:
            self.skipTest("MCP_BUILD_DIR is not set (run through ctest)")
        for tool in ("openssl", "curl", "make"):
            if not shutil.which(tool):
                self.skipTest(tool + " is not installed")
        self.srv = tempfile.mkdtemp(prefix="mcp-devserver-")
        self.addCleanup(shutil.rmtree, self.srv, True)

    def example(self):
        with open(os.path.join(SOURCE_DIR, "examples", "mc-proxy.ini")) as f:
            return f.read()

    def test_example_routes_to_the_demo_backend(self):
        with open(os.path.join(SOURCE_DIR, "Makefile")) as f:
            demo = re.search(r"(?m)^DEMO_BACKEND\s*\?=\s*(\S+)$", f.read()).group(1)
        routes = dict(re.findall(r"(?m)^route = (\S+) (\S+)$", self.example()))
        self.assertEqual(routes.get("app.example.com"), demo)
        self.assertEqual(routes.get("localhost"), demo)
        listener = re.search(r'(?m)^\[listener "127\.0\.0\.1:(\d+)"\]$', self.example()).group(1)
        with open(os.path.join(SOURCE_DIR, "README.md")) as f:
            readme = f.read()
        # The command README tells a newcomer to run, against the example's ports.
        self.assertIn("curl -k --resolve app.example.com:{0}:127.0.0.1 https://app.example.com:{0}/"
                      .format(listener), readme)

    def test_first_request_through_the_devserver_succeeds(self):
        listen = free_port()
        backend = free_port()
        example = self.example()
        self.assertIn('[listener "127.0.0.1:8443"]', example)
        cfg = (example.replace("/srv/mc-proxy", self.srv)
               .replace("127.0.0.1:8443", "127.0.0.1:%d" % listen)
               .replace("127.0.0.1:9443", "127.0.0.1:%d" % backend))
        with open(os.path.join(self.srv, "mc-proxy.ini"), "w") as f:
            f.write(cfg)
        log_path = os.path.join(self.srv, "devserver.log")
        env = dict(os.environ)
        for v in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
            env.pop(v, None)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                ["make", "-s", "-C", SOURCE_DIR, "devserver", "SRV=" + self.srv,
                 "BUILD=" + self.build, "DEMO_BACKEND=127.0.0.1:%d" % backend, "JOBS=1"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

        def text():
            with open(log_path) as f:
                return f.read()

        def stop():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            try:
                return proc.wait(STOP_TIMEOUT + 5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
                raise
        try:
            wait_for(lambda: "listening on 127.0.0.1:%d" % listen in text() or proc.poll()
                     is not None, READY_TIMEOUT, what="the devserver to listen")
            self.assertIsNone(proc.poll(), text())
            m = re.search(r"demo TLS backend on 127\.0\.0\.1:%d \(pid (\d+)\)" % backend, text())
            self.assertIsNotNone(m, text())
            demo_pid = int(m.group(1))

            # README's command, with the test's port.
            out = subprocess.run(
                ["curl", "-sk", "--max-time", "10", "--resolve",
                 "app.example.com:%d:127.0.0.1" % listen,
                 "https://app.example.com:%d/" % listen],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
            self.assertEqual(out.returncode, 0, out.stderr + text())
            self.assertIn("s_server", out.stdout)
            wait_for(lambda: re.search(r"conn listener=127\.0\.0\.1:%d .*sni=app\.example\.com "
                                       r"backend=127\.0\.0\.1:%d outcome=ok" % (listen, backend),
                                       text()), 10, what="outcome=ok in the log")
        finally:
            rc = stop()
        # make itself dies of the SIGINT as it does on any Ctrl-C; the proxy must drain and
        # exit by itself, and the demo backend must go with it.
        self.assertIn(rc, (0, -signal.SIGINT), text())
        wait_for(lambda: re.search(r"(?m) info stopped$", text()), STOP_TIMEOUT,
                 what="the proxy's clean stop; log:\n" + text())

        def demo_gone():
            try:
                with open("/proc/%d/cmdline" % demo_pid, "rb") as f:
                    return b"s_server" not in f.read()
            except OSError:
                return True
        wait_for(demo_gone, STOP_TIMEOUT, what="the demo backend to stop with the devserver")


if __name__ == "__main__":
    unittest.main()
