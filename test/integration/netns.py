"""
A network namespace of its own for one process under test, with chosen loopback ports forwarded
to the host's loopback (used by test_cluster.py to run a second mc-proxy that binds the same
listener addresses as the first; see its docstring).

  ns = NetNS()                      # `ip netns add` + loopback up; needs root and iproute2
  ns.forward(port)                  # 127.0.0.1:port inside -> 127.0.0.1:port of the host
  ns.argv(["mc-proxy", ...])        # the command line that runs it inside
  ns.socket()                       # a TCP socket of the namespace: connect() reaches inside
  ns.close()                        # forwarders stopped, namespace deleted

A socket belongs to the namespace of the thread that created it, whatever thread uses it later;
so the namespace's sockets are created on a short-lived thread that has entered it with
setns(2), and the forwarders' upstream connections are made from the test's own threads.
"""

import ctypes
import os
import socket
import subprocess
import threading
import unittest
import uuid

import mcp

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def skip_unless_possible():
    """Skips the calling test unless namespaces can be made here (root, iproute2)."""
    if os.geteuid() != 0:
        raise unittest.SkipTest("network namespaces need root")
    if not os.access("/usr/sbin/ip", os.X_OK) and not os.access("/sbin/ip", os.X_OK):
        raise unittest.SkipTest("iproute2's ip is not installed")


def _ip(*args):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError("ip %s: %s" % (" ".join(args), r.stderr.strip()))


class NetNS:
    def __init__(self):
        self.name = "mcp-" + uuid.uuid4().hex[:10]
        _ip("netns", "add", self.name)
        self._stop = threading.Event()
        self._listeners = []
        self._conns = []
        self._lock = threading.Lock()
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def argv(self, argv):
        return ["ip", "netns", "exec", self.name] + list(argv)

    def _inside(self, fn):
        """fn() run on a fresh thread that entered the namespace; its result or exception."""
        out = {}

        def run():
            try:
                fd = os.open("/run/netns/" + self.name, os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                out["v"] = fn()
            except BaseException as e:  # handed to the caller
                out["e"] = e
        t = threading.Thread(target=run)
        t.start()
        t.join(30)
        if "e" in out:
            raise out["e"]
        return out["v"]

    def socket(self, family=socket.AF_INET):
        return self._inside(lambda: socket.socket(family, socket.SOCK_STREAM))

    def connect(self, host, port, timeout=10.0, source=None):
        """A TCP connection made inside, optionally from SOURCE (any of 127.0.0.0/8 works)."""
        return mcp.connect(host, port, source=source, timeout=timeout, new_socket=self.socket)

    def forward(self, port, host="127.0.0.1"):
        """Relays connections to HOST:PORT inside the namespace to HOST:PORT on the host. A
        connection the host side refuses is closed at once (as a refusal would look)."""
        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(64)
            return s
        ls = self._inside(make)
        ls.settimeout(0.1)
        self._listeners.append(ls)
        threading.Thread(target=self._accept, args=(ls, host, port), daemon=True).start()

    def _accept(self, ls, host, port):
        while not self._stop.is_set():
            try:
                down, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            down.settimeout(None)
            try:
                up = socket.create_connection((host, port), timeout=5)
                up.settimeout(None)
            except OSError:
                down.close()
                continue
            with self._lock:
                self._conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            # A reset or a close on one side: both go, as a broken path would.
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        for s in self._listeners:
            s.close()
        with self._lock:
            for s in self._conns:
                try:
                    s.close()
                except OSError:
                    pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
