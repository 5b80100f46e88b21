"""
PROXY protocol against real peers that mc-proxy did not write (Debian's haproxy 2.6 and nginx
1.22 with its stream module), each started in the foreground with its own generated config on
free loopback ports and stopped by PID:

  client (127.0.0.2 / 127.0.0.3) -> HAProxy `server ... send-proxy[-v2]` -> mc-proxy
  (proxy_protocol = on, proxy_from = 127.0.0.1/32) -> route send-proxy-v1|v2 -> nginx stream
  `listen ... proxy_protocol` (answers with the address it was told) or HAProxy `accept-proxy`
  (logs the address it was told).

Each test checks that the address the backend sees is the original client's loopback source.
"""

import os
import re
import shutil
import signal
import subprocess
import time
import unittest

import mcp
from test_admin import APP
from test_edge_admin import EdgeCase

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def have_peers():
    return os.access(HAPROXY, os.X_OK) and os.access(NGINX, os.X_OK) and \
        os.path.exists(STREAM_MODULE)


class Peer:
    """A peer process in the foreground; stopped by its PID."""

    def __init__(self, argv, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_port(self, port):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("peer exited with %s:\n%s" % (self.proc.returncode,
                                                                   self.text()))
            try:
                mcp.connect("127.0.0.1", port, timeout=1).close()
                return True
            except OSError:
                return False
        mcp.wait_for(up, mcp.READY_TIMEOUT, interval=0.05, what="peer on port %d" % port)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.log.close()


@unittest.skipUnless(have_peers(), "haproxy and nginx (libnginx-mod-stream) are not installed")
class RealPeers(EdgeCase):

    def peer(self, argv, name):
        p = Peer(argv, os.path.join(self.dir, name + ".log"))
        self.addCleanup(p.stop)
        return p

    def nginx_backend(self):
        """nginx stream: reads a PROXY header (v1 or v2), logs the client it was told when the
        session ends, and passes the bytes on to an echo server."""
        echo = self.raw_backend("echo")
        port = mcp.free_port()
        prefix = os.path.join(self.dir, "nginx")
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        self.nginx_log = os.path.join(prefix, "access.log")
        with open(conf, "w") as f:
            f.write("load_module %s;\n"
                    "daemon off;\nmaster_process off;\nworker_processes 1;\n"
                    "pid %s/nginx.pid;\nerror_log %s/error.log info;\n"
                    "events { worker_connections 64; }\n"
                    "stream {\n"
                    "  log_format seen \"seen=$proxy_protocol_addr:$proxy_protocol_port\";\n"
                    "  access_log %s seen;\n"
                    "  server {\n"
                    "    listen 127.0.0.1:%d proxy_protocol;\n"
                    "    proxy_pass %s;\n"
                    "  }\n"
                    "}\n" % (STREAM_MODULE, prefix, prefix, self.nginx_log, port, echo.addr()))
        p = self.peer([NGINX, "-p", prefix, "-c", conf], "nginx")
        p.wait_port(port)
        return "127.0.0.1:%d" % port

    def nginx_seen(self):
        try:
            with open(self.nginx_log) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def haproxy(self, name, body):
        cfg = os.path.join(self.dir, name + ".cfg")
        with open(cfg, "w") as f:
            f.write("global\n  log stdout format raw local0 info\n"
                    "defaults\n  mode tcp\n  log global\n  timeout connect 5s\n"
                    "  timeout client 30s\n  timeout server 30s\n" + body)
        return self.peer([HAPROXY, "-db", "-f", cfg], name)

    def haproxy_front(self, version):
        """HAProxy as the load balancer in front of mc-proxy, sending a PROXY header."""
        port = mcp.free_port()
        p = self.haproxy("front-%s" % version,
                         "frontend fe\n  bind 127.0.0.1:%d\n  default_backend be\n"
                         "backend be\n  server mcp %s %s\n"
                         % (port, self.laddr, "send-proxy-v2" if version == "v2" else "send-proxy"))
        p.wait_port(port)
        return port

    def haproxy_backend(self):
        """HAProxy `accept-proxy` behind mc-proxy: logs the client it was told, then echoes."""
        echo = self.raw_backend("echo")
        port = mcp.free_port()
        p = self.haproxy("back", "frontend fe\n  bind 127.0.0.1:%d accept-proxy\n"
                                 "  log-format \"seen=%%ci:%%cp\"\n  default_backend be\n"
                                 "backend be\n  server echo %s\n" % (port, echo.addr()))
        p.wait_port(port)
        return p, "127.0.0.1:%d" % port

    def start_edge(self):
        self.start_admin()
        self.ok("listener", "set", self.laddr, "--proxy-protocol", "on",
                "--proxy-from", "127.0.0.1/32")

    def echoed(self, port, source):
        """A hello from SOURCE through port, echoed back; returns the client's own port."""
        s = self.connect("127.0.0.1", port, source=source)
        hello = mcp.client_hello(APP)
        s.sendall(hello)
        got = b""
        while len(got) < len(hello):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        self.assertEqual(got, hello, "the hello was not relayed both ways unchanged")
        cport = s.getsockname()[1]
        s.close()
        return cport

    def test_haproxy_in_front_nginx_behind(self):
        self.start_edge()
        nginx = self.nginx_backend()
        fronts = {v: self.haproxy_front(v) for v in ("v1", "v2")}
        for out in ("v1", "v2"):
            self.ok("routes", "add", self.laddr, APP, nginx, "--send-proxy", out)
            for version, front in fronts.items():
                for source in ("127.0.0.2", "127.0.0.3"):
                    with self.subTest(front=version, out=out, source=source):
                        cport = self.echoed(front, source)
                        # mc-proxy took the client from HAProxy's header ...
                        self.proxy.wait_conn(client="%s:%d" % (source, cport), outcome="ok")
                        # ... and told nginx the same client.
                        mcp.wait_for(lambda: "seen=%s:%d" % (source, cport) in self.nginx_seen(),
                                     mcp.IO_TIMEOUT, what="nginx to log %s:%d" % (source, cport))

    def test_haproxy_accept_proxy_behind(self):
        self.start_admin()
        back, addr = self.haproxy_backend()
        for out in ("v1", "v2"):
            self.ok("routes", "add", self.laddr, APP, addr, "--send-proxy", out)
            for source in ("127.0.0.2", "127.0.0.3"):
                cport = self.echoed(self.port, source)
                mcp.wait_for(lambda: "seen=%s:%d" % (source, cport) in back.text(),
                             mcp.IO_TIMEOUT, what="haproxy to log %s:%d" % (source, cport))


if __name__ == "__main__":
    unittest.main()
