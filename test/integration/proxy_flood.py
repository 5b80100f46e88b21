"""
A flood of distinct client addresses through one trusted PROXY peer, for the memory bound of the
per-client table (test_client_table.py, bench/client_table.py).

Each connection sends a PROXY v2 header naming client address number i (10.0.0.0 + i, IPv4,
so 16.7 million are available) and one byte that is not TLS. The proxy reads the header, counts
the client in its table (step 4 of the data plane), rejects the byte at once (outcome unrouted)
and closes; we wait for that close, so every address has been through the table before we go
on, and then reset our end (SO_LINGER 0): neither side keeps a TIME_WAIT, and hundreds of
thousands of connections fit in the ephemeral ports. Up to `inflight` connections are open at
once, kept below the listen backlog so that no SYN is dropped (a dropped SYN costs a 1 s retry).
"""
import errno
import selectors
import socket
import struct
import time

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
LINGER0 = struct.pack("ii", 1, 0)


def v2_header(n, dport):
    """The PROXY v2 header of client number n: source 10.0.0.0 + n, port 1024 + n % 60000."""
    src = struct.pack("!I", (10 << 24) + n)
    addrs = src + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 1024 + n % 60000, dport)
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


def flood(host, port, start, count, inflight=200, deadline=None, on_progress=None,
          progress_every=10000):
    """
    Presents clients start .. start+count-1, each once. on_progress(done) is called after every
    progress_every completed connections. Returns (done, failures): failures are connections
    that did not end with the proxy's close (a reset or an error instead). Raises
    AssertionError when deadline (time.monotonic()) passes.
    """
    sel = selectors.DefaultSelector()
    nxt, end = start, start + count
    done = failures = 0
    open_ = 0

    def launch(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        s.setblocking(False)
        rc = s.connect_ex((host, port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(rc, "connect: %s" % errno.errorcode.get(rc, rc))
        sel.register(s, selectors.EVENT_WRITE, n)

    try:
        while done < count:
            while open_ < inflight and nxt < end:
                launch(nxt)
                nxt += 1
                open_ += 1
            if deadline is not None and time.monotonic() > deadline:
                raise AssertionError("flood: %d of %d connections done at the deadline"
                                     % (done, count))
            for key, mask in sel.select(timeout=1.0):
                s, n = key.fileobj, key.data
                if mask & selectors.EVENT_WRITE:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err == 0:
                        try:
                            s.send(v2_header(n, port) + b"\x00")
                            sel.modify(s, selectors.EVENT_READ, n)
                            continue
                        except OSError:
                            pass
                    ended = False
                else:
                    try:
                        ended = s.recv(64) == b""
                    except BlockingIOError:
                        continue
                    except OSError:
                        ended = False
                sel.unregister(s)
                s.close()
                open_ -= 1
                done += 1
                failures += 0 if ended else 1
                if on_progress and done % progress_every == 0:
                    on_progress(done)
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return done, failures


def one(host, port, n, timeout=10.0):
    """Client n once, blocking: 'eof' when the proxy closed, 'reset' when it reset us."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        s.sendall(v2_header(n, port) + b"\x00")
        try:
            return "eof" if s.recv(64) == b"" else "data"
        except ConnectionResetError:
            return "reset"
    finally:
        s.close()
