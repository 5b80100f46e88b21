"""
The service manager's notify protocol (docs/RUNBOOK.md "Reload"): the test binds the unix
datagram socket NOTIFY_SOCKET names (a path, then an abstract '@' name), as systemd would, and
checks what arrives and from which process: READY=1 once listening; on a reload RELOADING=1
from the old process, then MAINPID=<new pid> and READY=1 from the new one and the same from the
old one (the main process, for NotifyAccess=main); STOPPING=1 on SIGTERM.
"""

import os
import signal
import socket
import struct
import time
import unittest

import mcp

APP = "app.example.com"


class Notify(mcp.ProxyTestCase):

    def listen(self, name):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        s.bind(name if not name.startswith("@") else "\0" + name[1:])
        s.settimeout(mcp.IO_TIMEOUT)
        self.addCleanup(s.close)
        return s

    def recv(self, s):
        """(message text, sender pid) of the next datagram."""
        data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        return data.decode(), pid

    def run_protocol(self, name):
        s = self.listen(name)
        app = self.tls_backend(APP)
        port = mcp.free_port()
        old_env = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = name
        try:
            proxy = self.start_proxy([("127.0.0.1:%d" % port, None, [(APP, app.addr())])],
                                     proxy={"workers": "2"})
        finally:
            if old_env is None:
                os.environ.pop("NOTIFY_SOCKET", None)
            else:
                os.environ["NOTIFY_SOCKET"] = old_env
        msg, pid = self.recv(s)
        self.assertEqual((msg, pid), ("READY=1", proxy.pid))
        # The listener accepts by the time READY=1 was sent.
        mcp.connect("127.0.0.1", port).close()

        os.kill(proxy.pid, signal.SIGHUP)
        msg, pid = self.recv(s)
        self.assertEqual(pid, proxy.pid)
        lines = msg.split("\n")
        self.assertEqual(lines[0], "RELOADING=1")
        self.assertRegex(lines[1], r"^MONOTONIC_USEC=\d+$")
        msg, pid = self.recv(s)
        self.assertNotEqual(pid, proxy.pid)
        self.addCleanup(self.stop_pid, pid)
        self.assertEqual(msg, "MAINPID=%d\nREADY=1" % pid)
        # The same from the old (still main) process, for NotifyAccess=main.
        self.assertEqual(self.recv(s), ("MAINPID=%d\nREADY=1" % pid, proxy.pid))
        # The old process drains without telling the manager it stops: the service goes on.
        self.assertEqual(proxy.wait_exit(20), 0)
        proxy.exit_checked = True
        os.kill(pid, signal.SIGTERM)
        msg, sender = self.recv(s)
        self.assertEqual((msg, sender), ("STOPPING=1", pid))
        s.settimeout(0.3)
        with self.assertRaises(socket.timeout):
            self.recv(s)

    def stop_pid(self, pid):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        return
                os.kill(pid, signal.SIGTERM)
            except OSError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def test_path_socket(self):
        self.run_protocol(os.path.join(self.dir, "notify.sock"))

    def test_abstract_socket(self):
        self.run_protocol("@mcp-notify-test-%d-%d" % (os.getpid(), time.monotonic_ns()))

    def test_a_refused_reload_says_ready_again(self):
        s = self.listen(os.path.join(self.dir, "notify.sock"))
        os.environ["NOTIFY_SOCKET"] = os.path.join(self.dir, "notify.sock")
        try:
            proxy = self.start_proxy([("127.0.0.1:%d" % mcp.free_port(), None, [])])
        finally:
            os.environ.pop("NOTIFY_SOCKET", None)
        self.assertEqual(self.recv(s), ("READY=1", proxy.pid))
        with open(proxy.config_path, "a") as f:
            f.write("this is not ini\n")
        proxy.signal(signal.SIGHUP)
        self.assertTrue(self.recv(s)[0].startswith("RELOADING=1\n"))
        self.assertEqual(self.recv(s), ("READY=1", proxy.pid))
        proxy.stop()
        self.assertEqual(self.recv(s), ("STOPPING=1", proxy.pid))


if __name__ == "__main__":
    unittest.main()
