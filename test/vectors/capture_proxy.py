#!/usr/bin/python3
"""Captures real PROXY protocol headers sent by HAProxy, for test/unit/test_proxy_protocol.c.

HAProxy runs in the foreground with a generated config under a temporary directory: one
frontend per case on loopback, each forwarding to a one-shot server of ours through a
`server ... send-proxy` or `send-proxy-v2` line. A client connects to the frontend from a
chosen source address and sends "hello"; the server reads until it holds the whole PROXY
header, checks that "hello" (or its start) follows, and saves exactly the header's bytes to
haproxy_<case>.bin next to this script (described in PROXY_PROTOCOL.md).

Usage: /usr/bin/python3 test/vectors/capture_proxy.py      (needs haproxy; Debian 12 has 2.6)
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 10.0
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"

# name: (client family, client source, frontend address, server line options)
CASES = {
    "v1_tcp4": (socket.AF_INET, "127.0.0.2", "127.0.0.1", "send-proxy"),
    "v1_tcp6": (socket.AF_INET6, "::1", "::1", "send-proxy"),
    "v2_tcp4": (socket.AF_INET, "127.0.0.3", "127.0.0.1", "send-proxy-v2"),
    "v2_tcp6": (socket.AF_INET6, "::1", "::1", "send-proxy-v2"),
    "v2_tlvs": (socket.AF_INET, "127.0.0.4", "127.0.0.1",
                "send-proxy-v2 proxy-v2-options crc32c,unique-id"),
}


def free_port(family, host):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def header_length(data):
    """Length of the PROXY header at the start of data, or None while incomplete."""
    if data.startswith(V2_SIG):
        if len(data) < 16:
            return None
        total = 16 + int.from_bytes(data[14:16], "big")
        return total if len(data) >= total else None
    end = data.find(b"\r\n")
    return end + 2 if end >= 0 else None


def main():
    if shutil.which("haproxy") is None:
        sys.exit("haproxy not found (apt-get install haproxy)")
    tmp = tempfile.mkdtemp(prefix="capture_proxy.")
    servers, lines = {}, ["global", "  pidfile %s/haproxy.pid" % tmp,
                          "defaults", "  mode tcp", "  timeout connect 5s",
                          "  timeout client 5s", "  timeout server 5s",
                          "  unique-id-format mcp-%ci-%cp"]
    fronts = {}
    for name, (family, _src, front, opts) in CASES.items():
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        servers[name] = srv
        fport = free_port(family, front)
        fronts[name] = fport
        bind = "[%s]:%d" % (front, fport) if family == socket.AF_INET6 else "%s:%d" % (front, fport)
        lines += ["listen %s" % name, "  bind %s" % bind,
                  "  server s 127.0.0.1:%d %s" % (srv.getsockname()[1], opts)]
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write("\n".join(lines) + "\n")
    proc = subprocess.Popen(["haproxy", "-db", "-f", cfg])
    try:
        time.sleep(1.0)
        for name, (family, src, front, _opts) in CASES.items():
            with socket.socket(family, socket.SOCK_STREAM) as c:
                c.settimeout(TIMEOUT)
                c.bind((src, 0))
                c.connect((front, fronts[name]))
                c.sendall(b"hello")
                servers[name].settimeout(TIMEOUT)
                conn, _ = servers[name].accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    data = b""
                    while header_length(data) is None:
                        chunk = conn.recv(4096)
                        if not chunk:
                            sys.exit("%s: connection closed before a whole header" % name)
                        data += chunk
                    n = header_length(data)
                    rest = data[n:]
                    if not b"hello".startswith(rest[:5]):
                        sys.exit("%s: unexpected bytes after the header: %r" % (name, rest))
                    with open(os.path.join(HERE, "haproxy_%s.bin" % name), "wb") as out:
                        out.write(data[:n])
                    print("%s: %d bytes, client %s port %d" % (name, n, src, c.getsockname()[1]))
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
