"""
Shared harness for the integration tests that run the real `mc-proxy server` binary.

Everything here uses real sockets on loopback (127.0.0.0/8 and ::1), real files in a per-test
temporary directory and real TLS; every wait is bounded by a deadline. The API is small:

  ProxyTestCase          unittest.TestCase base: a temp dir per test (self.dir), and
                         self.start_proxy(), self.tls_backend(), self.raw_backend(),
                         self.openssl_backend(),
                         self.connect(), self.tls_client(); everything started through these is
                         stopped in tearDown, which also asserts the proxy exited 0 (unless the
                         test checked the exit itself) and that its stderr holds no sanitizer
                         report.
  Proxy                  a running `mc-proxy server`: .pid, .log_text(), .conns(),
                         .wait_conn(), .wait_log(), .signal(), .wait_exit(), .stop(), .rss_kb(),
                         .cpu_seconds().
  free_port(host)        a port that was free a moment ago.
  config_text(...)       an INI config (SPEC §3) from Python values.
  make_cert(dir, name)   a self-signed P-256 cert for NAME: returns (cert_path, key_path).
  TLSBackend, RawBackend threaded servers that count accepts and record what they receive.
  read_until_closed(s)   ("eof" | "reset" | "timeout", bytes received).
  probe(host, port, ...) connect, optionally send, read_until_closed.
  vector(name)           the bytes of test/vectors/NAME.bin.
  client_hello(host)     a minimal hand-built TLS ClientHello record carrying SNI HOST.
  build_mmdb(path, map)  a tiny GeoIP2-Country-shaped MaxMind DB, e.g. {"127.0.0.3/32": "KP"}.

Log lines of ended connections look like
  "... info conn listener=A client=C sni=S backend=B outcome=O bytes_in=N bytes_out=N duration_ms=N"
and parse_conn() turns one into a dict (numbers as int).
"""

import ctypes
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
VECTORS = os.path.join(SOURCE_DIR, "test", "vectors")
MMDB_SCRIPT = os.path.join(SOURCE_DIR, "test", "mmdb", "make-mmdb.pl")

# Generous bounds: the suite runs under ASan on 2 cores, often two test files at once.
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 10.0

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: AddressSanitizer")


def binary():
    path = os.environ.get("MCP_BINARY")
    if not path:
        raise unittest.SkipTest("MCP_BINARY is not set (run through ctest)")
    return path


def wait_for(pred, timeout, interval=0.02, what="condition"):
    """Polls pred() until it returns a true value (which is returned) or timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# ---- addresses and ports ----

_given_ports = set()
_port_lock = threading.Lock()


def free_port(host="127.0.0.1"):
    """A port that was free on HOST a moment ago, never the same one twice in this process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        with _port_lock:
            if port not in _given_ports:
                _given_ports.add(port)
                return port
    raise RuntimeError("no free port")


def hostport(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


# ---- config ----

def config_text(db, proxy=None, firewall=(), listeners=(), extra=""):
    """
    An INI config. proxy: dict of [proxy] keys; firewall: list of (key, value) pairs (repeatable
    keys); listeners: list of (addr, max_connections or None, [(hostname, backend), ...]).
    Durations default short so tests stay quick: connect 1s, idle 30s, handshake 10s, shutdown 2s.
    """
    p = {"connect_timeout": "1s", "idle_timeout": "30s", "handshake_timeout": "10s",
         "shutdown_timeout": "2s"}
    p.update(proxy or {})
    out = ["[database]", "path = %s" % db, "", "[proxy]"]
    out += ["%s = %s" % kv for kv in p.items()]
    if firewall:
        out += ["", "[firewall]"] + ["%s = %s" % kv for kv in firewall]
    for addr, maxc, routes in listeners:
        out += ["", '[listener "%s"]' % addr]
        if maxc is not None:
            out.append("max_connections = %d" % maxc)
        out += ["route = %s %s" % r for r in routes]
    return "\n".join(out) + "\n" + extra


# ---- the proxy process ----

PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None

CONN_RE = re.compile(r"\bconn (listener=.*)$")


def parse_conn(line):
    """The key=value fields of a connection log line as a dict, or None for other lines."""
    m = CONN_RE.search(line)
    if not m:
        return None
    d = {}
    for tok in m.group(1).split():
        k, _, v = tok.partition("=")
        d[k] = int(v) if k in ("bytes_in", "bytes_out", "duration_ms") and v.isdigit() else v
    return d


class Proxy:
    """A `mc-proxy server -c CONFIG` child process with its stderr in a file."""

    def __init__(self, config_path, stderr_path, nofile=None, wrap=None):
        """wrap(argv) -> argv, e.g. to run it inside a network namespace (netns.py); the
        wrapper must exec the server in the same process so that .pid stays its pid."""
        self.config_path = config_path
        self.stderr_path = stderr_path
        self.exit_checked = False
        self.stopping = False
        env = dict(os.environ)
        # Sanitizer reports go to stderr (checked at teardown); leaks are reported at exit.
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")

        def preexec():
            # If the test runner dies (a ctest timeout kills it), the proxy dies with it
            # instead of lingering as an orphan.
            if _libc is not None:
                _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self._err = open(stderr_path, "wb")
        argv = [binary(), "server", "-c", config_path]
        self.proc = subprocess.Popen(wrap(argv) if wrap else argv,
                                     stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err,
                                     env=env, preexec_fn=preexec, close_fds=True)
        self.pid = self.proc.pid

    def log_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines(self):
        return self.log_text().splitlines()

    def conns(self):
        """Every connection log line so far, parsed, in order."""
        return [d for d in map(parse_conn, self.log_lines()) if d]

    def wait_log(self, pattern, timeout=IO_TIMEOUT, count=1):
        """Waits until the log has COUNT lines matching regex PATTERN; returns them."""
        rx = re.compile(pattern)

        def found():
            if self.proc.poll() is not None and len(
                    [l for l in self.log_lines() if rx.search(l)]) < count:
                raise AssertionError("proxy exited (%s) while waiting for /%s/; log:\n%s"
                                     % (self.proc.returncode, pattern, self.log_text()))
            hits = [l for l in self.log_lines() if rx.search(l)]
            return hits if len(hits) >= count else None
        return wait_for(found, timeout, what="log /%s/ x%d" % (pattern, count))

    def wait_conn(self, timeout=IO_TIMEOUT, count=1, **match):
        """Waits for COUNT connection lines whose fields equal MATCH; returns the matching ones."""
        def found():
            hits = [c for c in self.conns()
                    if all(str(c.get(k)) == str(v) for k, v in match.items())]
            return hits if len(hits) >= count else None
        try:
            return wait_for(found, timeout, what="conn line %r" % match)
        except AssertionError:
            raise AssertionError("no conn line matching %r within %.1fs; log:\n%s"
                                 % (match, timeout, self.log_text()))

    def wait_ready(self, nlisteners, timeout=READY_TIMEOUT):
        self.wait_log(r"listening on ", timeout=timeout, count=nlisteners)

    def signal(self, sig):
        if self.proc.poll() is None:
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
            os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        """The exit status, or raises AssertionError if still running after TIMEOUT."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("proxy still running %.1fs later" % timeout)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then SIGKILL after TIMEOUT. Returns the exit status (negative if killed)."""
        if self.proc.poll() is None:
            # A second SIGTERM would mean "exit now with 1": send one only if none was sent.
            if not self.stopping:
                self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._err.close()
        return self.proc.returncode

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)

    def cpu_seconds(self):
        """utime + stime of the process so far, in seconds."""
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # Fields after "(comm)" start at field 3 (state); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sanitizer_reports(self):
        text = self.log_text()
        return [m for m in SANITIZER_MARKERS if m in text]


# ---- TLS material ----

def make_cert(directory, name):
    """A self-signed P-256 certificate for NAME (CN and DNS SAN). Returns (cert, key) paths."""
    cert = os.path.join(directory, "%s.crt" % name)
    key = os.path.join(directory, "%s.key" % name)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=%s" % name,
                    "-addext", "subjectAltName=DNS:%s" % name, "-days", "2",
                    "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return cert, key


def cert_der(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


# ---- backends ----

class _Backend:
    """A threaded TCP server on one or more loopback addresses sharing one port."""

    def __init__(self, hosts=("127.0.0.1",)):
        self.port = 0  # the first bind picks a free port; the other hosts share it
        self.accepts = 0
        self.received = []          # bytearray of what each connection sent, in accept order
        self.ended = {}             # connection index -> "eof" | "reset" | "error" | "closed"
        self.gate = threading.Event()  # "gate" mode: reading starts when this is set
        self.conns = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks = []
        for h in hosts:
            fam = socket.AF_INET6 if ":" in h else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((h, self.port))
            self.port = s.getsockname()[1]
            s.listen(256)
            s.settimeout(0.1)
            self._socks.append(s)
        self._threads = [threading.Thread(target=self._accept_loop, args=(s,), daemon=True)
                         for s in self._socks]
        for t in self._threads:
            t.start()

    def addr(self, host=None):
        return hostport(host or self._socks[0].getsockname()[0], self.port)

    def _accept_loop(self, ls):
        while not self._stop.is_set():
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.accepts += 1
                idx = len(self.received)
                self.received.append(bytearray())
                self.conns.append(c)
            c.settimeout(IO_TIMEOUT)
            threading.Thread(target=self._serve_guarded, args=(c, idx), daemon=True).start()

    def _serve_guarded(self, c, idx):
        how = "closed"
        try:
            how = self.serve(c, idx) or "closed"
        except ConnectionResetError:
            how = "reset"
        except (OSError, ssl.SSLError):
            how = "error"
        finally:
            self.ended[idx] = how
            try:
                c.close()
            except OSError:
                pass

    def record(self, idx, data):
        with self._lock:
            self.received[idx] += data

    def serve(self, c, idx):
        raise NotImplementedError

    def close(self):
        self._stop.set()
        self.gate.set()
        for s in self._socks:
            s.close()
        with self._lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass
        for t in self._threads:
            t.join(timeout=5)


class TLSBackend(_Backend):
    """
    A Python ssl server for hostname NAME with its own self-signed certificate (.cert, .key).
    Each connection: TLS handshake, then every chunk received is answered with NAME + b":" +
    chunk (an echo that also says which backend answered), until EOF.
    """

    def __init__(self, directory, name, hosts=("127.0.0.1",)):
        self.name = name
        self.cert, self.key = make_cert(directory, name)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(self.cert, self.key)
        super().__init__(hosts)

    def serve(self, c, idx):
        with self.ctx.wrap_socket(c, server_side=True) as t:
            while True:
                data = t.recv(65536)
                if not data:
                    return "eof"
                self.record(idx, data)
                t.sendall(self.name.encode() + b":" + data)


class RawBackend(_Backend):
    """
    A plain TCP server that records the raw bytes each connection sends. MODE:
      "echo"       sends back every chunk as received, until EOF;
      "reply_eof"  reads to EOF, then sends REPLY and closes (for half-close tests);
      "record"     reads to EOF and records, sends nothing;
      "reply_first" sends REPLY, shuts down its write side, then reads to EOF;
      "noread"     never reads; keeps the connection open until close() (backpressure tests);
      "gate"       reads nothing until .gate is set, then reads to EOF and records.
    """

    def __init__(self, mode="echo", reply=b"", hosts=("127.0.0.1",)):
        self.mode = mode
        self.reply = reply
        super().__init__(hosts)

    def serve(self, c, idx):
        if self.mode == "noread":
            self._stop.wait(600)
            return "closed"
        if self.mode == "gate":
            self.gate.wait(600)
        if self.mode == "reply_first":
            c.sendall(self.reply)
            c.shutdown(socket.SHUT_WR)
        c.settimeout(60)
        while True:
            data = c.recv(65536)
            if not data:
                break
            self.record(idx, data)
            if self.mode == "echo":
                c.sendall(data)
        if self.mode == "reply_eof":
            c.sendall(self.reply)
        return "eof"

    def wait_received(self, nbytes, idx=0, timeout=IO_TIMEOUT):
        """Waits until connection IDX has sent at least NBYTES; returns a copy of them."""
        wait_for(lambda: len(self.received) > idx and len(self.received[idx]) >= nbytes,
                 timeout, what="%d bytes at the backend" % nbytes)
        with self._lock:
            return bytes(self.received[idx])

    def wait_ended(self, idx=0, timeout=IO_TIMEOUT):
        """Waits until connection IDX ended; returns how (eof, reset, error, closed)."""
        return wait_for(lambda: self.ended.get(idx), timeout,
                        what="backend connection %d to end" % idx)


# ---- clients ----

def connect(host, port, source=None, timeout=IO_TIMEOUT, new_socket=None):
    """A plain TCP connection to HOST:PORT, optionally from source address SOURCE. NEW_SOCKET(family)
    makes the socket (netns.py: one inside a network namespace)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = new_socket(fam) if new_socket else socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def sanitizer_build():
    """True when MCP_BUILD_DIR is a sanitizer build (memory figures are not comparable there,
    and valgrind cannot run it)."""
    cache = os.path.join(os.environ.get("MCP_BUILD_DIR", ""), "CMakeCache.txt")
    try:
        with open(cache) as f:
            return "MCP_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


def read_until_closed(s, timeout=IO_TIMEOUT):
    """Reads until EOF, reset or TIMEOUT. Returns (how, data), how in eof/reset/timeout."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout", bytes(data)
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return "timeout", bytes(data)
        except ConnectionResetError:
            return "reset", bytes(data)
        if not chunk:
            return "eof", bytes(data)
        data += chunk


def probe(host, port, source=None, send=b"", timeout=IO_TIMEOUT):
    """
    Connects (from SOURCE), sends SEND, and reads until the proxy closes: (how, data) as in
    read_until_closed. A reset that lands before connect() returns counts as ("reset", b"").
    """
    try:
        s = connect(host, port, source=source, timeout=timeout)
    except ConnectionResetError:
        return "reset", b""
    with s:
        if send:
            try:
                s.sendall(send)
            except ConnectionResetError:
                # The reset arrived while sending: the kernel reports it to this one call and
                # a later read would only see EOF, so this is the answer.
                return "reset", b""
            except BrokenPipeError:
                pass  # the proxy closed first; the read below tells FIN from RST
        return read_until_closed(s, timeout)


def tls_context(cafile):
    """A client context that trusts only CAFILE (the backend's own self-signed cert)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def tls_connect(host, port, server_hostname, cafile, source=None, timeout=IO_TIMEOUT):
    """A verified TLS connection through the proxy; the handshake is done on return."""
    raw = connect(host, port, source=source, timeout=timeout)
    try:
        return tls_context(cafile).wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def tls_roundtrip(t, payload):
    """Sends PAYLOAD on TLS socket T and reads the echo backend's full answer."""
    t.sendall(payload)
    want = None
    got = b""
    deadline = time.monotonic() + IO_TIMEOUT
    while time.monotonic() < deadline:
        chunk = t.recv(65536)
        if not chunk:
            break
        got += chunk
        if want is None and b":" in got:
            want = got.index(b":") + 1 + len(payload)
        if want is not None and len(got) >= want:
            break
    return got


def vector(name):
    with open(os.path.join(VECTORS, name + ".bin"), "rb") as f:
        return f.read()


def client_hello(hostname, record_version=0x0301):
    """
    A minimal but well-formed TLS 1.2 ClientHello record whose SNI is HOSTNAME sent exactly as
    given (any case, trailing dot kept), or with no SNI extension when HOSTNAME is None.
    """
    exts = b""
    if hostname is not None:
        name = hostname.encode("ascii")
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        sni = struct.pack("!H", len(entry)) + entry
        exts += struct.pack("!HH", 0, len(sni)) + sni
    # supported_groups (secp256r1), ec_point_formats (uncompressed), signature_algorithms
    # (ecdsa_secp256r1_sha256): enough for a real TLS 1.2 server to answer it.
    groups = struct.pack("!HH", 2, 23)
    exts += struct.pack("!HH", 10, len(groups)) + groups
    exts += struct.pack("!HH", 11, 2) + b"\x01\x00"
    sig = struct.pack("!HH", 2, 0x0403)
    exts += struct.pack("!HH", 13, len(sig)) + sig
    body = (struct.pack("!H", 0x0303) + bytes(range(32)) + b"\x00"
            + struct.pack("!H", 4) + struct.pack("!HH", 0xc02b, 0x002f)
            + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16" + struct.pack("!HH", record_version, len(hs)) + hs


# ---- GeoIP ----

_MMDB_FALLBACK = r'''
use strict; use warnings;
use MaxMind::DB::Writer::Tree;
my $out = shift @ARGV;
my %types = (country => 'map', registered_country => 'map', continent => 'map', names => 'map',
             iso_code => 'utf8_string', code => 'utf8_string', en => 'utf8_string',
             geoname_id => 'uint32');
my $tree = MaxMind::DB::Writer::Tree->new(
  ip_version => 6, record_size => 24, database_type => 'GeoIP2-Country',
  languages => ['en'], description => { en => 'mc-proxy test' },
  remove_reserved_networks => 0, alias_ipv6_to_ipv4 => 1,
  map_key_type_callback => sub { $types{$_[0]} });
for my $arg (@ARGV) {
  my ($net, $cc) = split /=/, $arg;
  $tree->insert_network($net, { country => { iso_code => $cc, names => { en => $cc } } });
}
open my $fh, '>:raw', $out or die "$out: $!";
$tree->write_tree($fh);
close $fh or die;
'''


def build_mmdb(path, mapping):
    """Writes a MaxMind DB at PATH mapping each network to a country, via a temp file + rename."""
    tmp = path + ".tmp"
    args = ["%s=%s" % kv for kv in mapping.items()]
    if os.path.exists(MMDB_SCRIPT):
        cmd = ["perl", MMDB_SCRIPT, tmp] + args
    else:
        cmd = ["perl", "-e", _MMDB_FALLBACK, tmp] + args
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("building %s failed: %s" % (path, r.stderr.decode()))
    os.replace(tmp, path)


# ---- the test base class ----

def _stop_child(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class ProxyTestCase(unittest.TestCase):
    """Temp dir per test; everything started through the helpers is cleaned up in tearDown."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mcp-it-")
        self.db = os.path.join(self.dir, "mc-proxy.db")
        self.proxies = []
        self.backends = []
        self.sockets = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass
        problems = []
        for p in self.proxies:
            checked = p.exit_checked
            rc = p.stop()
            reports = p.sanitizer_reports()
            if reports:
                problems.append("sanitizer report(s) %s in proxy stderr:\n%s"
                                % (reports, p.log_text()[-20000:]))
            elif not checked and rc != 0:
                problems.append("proxy exited with %s on SIGTERM; log:\n%s"
                                % (rc, p.log_text()[-5000:]))
        for b in self.backends:
            b.close()
        if problems:
            keep = self.dir + ".failed"
            shutil.rmtree(keep, ignore_errors=True)
            shutil.move(self.dir, keep)
            self.fail("\n".join(problems) + "\n(files kept in %s)" % keep)
        shutil.rmtree(self.dir, ignore_errors=True)

    def start_proxy(self, listeners, proxy=None, firewall=(), nofile=None, wait=True, extra="",
                    db=None):
        """
        Writes a config (see config_text; the first proxy of a test uses mc-proxy.ini and
        self.db), starts the proxy and waits until it listens.
        """
        n = len(self.proxies)
        path = os.path.join(self.dir, "mc-proxy.ini" if n == 0 else "mc-proxy-%d.ini" % n)
        with open(path, "w") as f:
            f.write(config_text(db or self.db, proxy=proxy, firewall=firewall,
                                listeners=listeners, extra=extra))
        p = Proxy(path, os.path.join(self.dir, "proxy-%d.log" % len(self.proxies)),
                  nofile=nofile)
        self.proxies.append(p)
        if wait:
            p.wait_ready(len(listeners))
        return p

    def tls_backend(self, name, hosts=("127.0.0.1",)):
        b = TLSBackend(self.dir, name, hosts)
        self.backends.append(b)
        return b

    def openssl_backend(self, name):
        """
        `openssl s_server -www` for NAME on 127.0.0.1 with its own self-signed cert: answers
        an HTTP GET with a status page. Returns (addr, cert_path); stopped in tearDown.
        """
        cert, key = make_cert(self.dir, name)
        port = free_port()
        proc = subprocess.Popen(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port,
                                 "-cert", cert, "-key", key, "-www", "-naccept", "1000"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.addCleanup(_stop_child, proc)

        def up():
            if proc.poll() is not None:
                raise AssertionError("openssl s_server exited with %s" % proc.returncode)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, READY_TIMEOUT, interval=0.05, what="openssl s_server to listen")
        return "127.0.0.1:%d" % port, cert

    def raw_backend(self, mode="echo", reply=b"", hosts=("127.0.0.1",)):
        b = RawBackend(mode, reply, hosts)
        self.backends.append(b)
        return b

    def connect(self, host, port, source=None, timeout=IO_TIMEOUT):
        s = connect(host, port, source=source, timeout=timeout)
        self.sockets.append(s)
        return s

    def tls_client(self, host, port, server_hostname, cafile, source=None):
        t = tls_connect(host, port, server_hostname, cafile, source=source)
        self.sockets.append(t)
        return t

    def assert_exit(self, proxy, code, timeout):
        """Asserts PROXY exits with CODE within TIMEOUT seconds; returns the time it took."""
        t0 = time.monotonic()
        rc = proxy.wait_exit(timeout)
        proxy.exit_checked = True
        self.assertEqual(rc, code, "exit status; log:\n" + proxy.log_text())
        return time.monotonic() - t0
