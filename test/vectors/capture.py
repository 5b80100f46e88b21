#!/usr/bin/python3
"""Re-captures the ClientHello test vectors from real TLS clients on loopback.

For each client a one-shot server listens on 127.0.0.1 (a random port), accepts one
connection, reads TLS records until they hold a complete ClientHello handshake message,
saves exactly those records' bytes to <name>.bin next to this script and closes. The
client then fails (no ServerHello ever comes), which is expected.

Usage: /usr/bin/python3 test/vectors/capture.py [name ...]   (default: all)
Needs openssl, curl and wget (Debian's wget uses GnuTLS, a second TLS stack).
"""
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 10.0
MAX_BYTES = 64 * 1024


def read_client_hello(conn):
    """Returns the raw records carrying the first handshake message (the ClientHello)."""
    data = b""
    hs = b""
    pos = 0
    conn.settimeout(TIMEOUT)
    while len(data) < MAX_BYTES:
        # Walk every complete record we have, collecting handshake bytes.
        while len(data) - pos >= 5:
            ctype, _ver, rlen = struct.unpack("!BHH", data[pos:pos + 5])
            if ctype != 22:
                raise ValueError("record type %d before the ClientHello completed" % ctype)
            if len(data) - pos - 5 < rlen:
                break
            hs += data[pos + 5:pos + 5 + rlen]
            pos += 5 + rlen
            if len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
                return data[:pos]
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("client closed before a complete ClientHello")
        data += chunk
    raise ValueError("no ClientHello within %d bytes" % MAX_BYTES)


def capture(name, client):
    """Runs client(port) against a one-shot capture server and saves <name>.bin."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(TIMEOUT)
    port = srv.getsockname()[1]
    result = {}

    def serve():
        try:
            conn, _ = srv.accept()
            with conn:
                result["hello"] = read_client_hello(conn)
        except Exception as e:  # reported below, the client side must still be reaped
            result["error"] = e

    t = threading.Thread(target=serve)
    t.start()
    try:
        client(port)
    finally:
        t.join(TIMEOUT + 5)
        srv.close()
    if "hello" not in result:
        raise RuntimeError("%s: %s" % (name, result.get("error", "no connection")))
    path = os.path.join(HERE, name + ".bin")
    with open(path, "wb") as f:
        f.write(result["hello"])
    print("%-24s %5d bytes" % (name + ".bin", len(result["hello"])))


def run(argv):
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=TIMEOUT + 5, check=False)


def openssl(*extra):
    return lambda port: run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] +
                            list(extra))


def curl(port):
    run(["curl", "-sk", "--max-time", "5", "--resolve", "app.example.com:%d:127.0.0.1" % port,
         "https://app.example.com:%d/" % port])


def wget(port):
    run(["wget", "-q", "-t", "1", "-T", "5", "--no-check-certificate", "-O", "/dev/null",
         "https://localhost:%d/" % port])


def python_ssl(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        try:
            with ctx.wrap_socket(s, server_hostname="py.Example.ORG"):
                pass
        except (ssl.SSLError, OSError):
            pass  # the capture server hangs up instead of answering


# name -> (client, hostname the vector carries, normalised); keep README.md in step.
CLIENTS = {
    "openssl_tls12": openssl("-servername", "app.example.com", "-tls1_2"),
    "openssl_tls13": openssl("-servername", "app.example.com", "-tls1_3"),
    "openssl_nosni": openssl("-noservername"),
    "curl": curl,
    "python_ssl": python_ssl,
    "wget_gnutls": wget,
}


def derive_fragmented(src="curl", name="curl_fragmented", sizes=(1, 2, 1, 100, 3)):
    """Re-frames a captured single-record hello into several records (the last one takes the
    rest): the msg_type and the 24-bit length each end up split across records. Real stacks
    rarely fragment a ClientHello this way, but TLS allows it and the fuzzer needs the seed."""
    with open(os.path.join(HERE, src + ".bin"), "rb") as f:
        raw = f.read()
    msg = raw[5:5 + struct.unpack("!H", raw[3:5])[0]]
    out, off = b"", 0
    for n in list(sizes) + [len(msg)]:
        part = msg[off:off + n]
        if not part:
            break
        out += struct.pack("!BHH", 22, 0x0301, len(part)) + part
        off += len(part)
    with open(os.path.join(HERE, name + ".bin"), "wb") as f:
        f.write(out)
    print("%-24s %5d bytes (derived from %s.bin)" % (name + ".bin", len(out), src))


def main():
    names = sys.argv[1:] or list(CLIENTS)
    for name in names:
        capture(name, CLIENTS[name])
    if "curl" in names:
        derive_fragmented()


if __name__ == "__main__":
    main()
