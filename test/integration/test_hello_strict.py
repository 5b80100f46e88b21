"""
The strict ClientHello, end to end: the real mc-proxy routes exactly the hellos that an
independent strict reading (hello_ref.py, written from the RFCs) accepts, over real TCP.

Each case is one connection to a listener whose routes point at an echo backend: the client
sends the hello (in one write, or dribbled a few bytes at a time), closes its write side and
reads. Routed means the backend echoed the bytes back and the log says outcome=ok; refused means
EOF with nothing read and outcome=unrouted. The four disagreement classes of issue 9 and the
hyphen labels have named tests; test_differential runs thousands of generated and mutated
hellos (seeded, bounded in count and time) and requires 0 disagreements.
"""

import os
import random
import socket
import struct
import subprocess
import time
import unittest

import hello_ref as ref
from mcp import IO_TIMEOUT, ProxyTestCase, binary, free_port, read_until_closed, vector

# Real clients' hellos (test/vectors/README.md); openssl_nosni has no server_name.
CAPTURED = ("openssl_tls12", "openssl_tls13", "openssl_nosni", "curl", "python_ssl",
            "wget_gnutls", "curl_fragmented")

SEEDS = (2, 3)
CASES_PER_SEED = 1000
DRIBBLE_EVERY = 6      # one case in this many is also sent dribbled
TIME_BUDGET = 100.0    # seconds for the whole differential run; a bound, not an expectation


class HelloStrict(ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.backend = self.raw_backend("echo")
        self.port = free_port()
        routes = [(name, self.backend.addr()) for name in ref.ROUTE_NAMES]
        self.proxy = self.start_proxy([("127.0.0.1:%d" % self.port, None, routes)],
                                      proxy={"handshake_timeout": "5s"})
        self.sent = {}  # client port -> expected outcome, for the log check

    # ---- one case ----

    def send(self, raw, dribble=None):
        """Sends RAW (whole, or in chunks from the random.Random DRIBBLE); returns routed?"""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            port = s.getsockname()[1]
            try:
                if dribble is None:
                    s.sendall(raw)
                else:
                    at = 0
                    while at < len(raw):
                        n = dribble.randrange(1, 9)
                        s.sendall(raw[at:at + n])
                        at += n
                        time.sleep(0.0002)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # refused before the end (EPIPE, ECONNRESET, ENOTCONN): the read says how
            how, data = read_until_closed(s, timeout=IO_TIMEOUT)
        finally:
            s.close()
        self.assertNotEqual(how, "timeout", "proxy neither routed nor closed: %r" % raw[:80])
        return port, len(data) > 0

    def expected(self, raw):
        verdict, detail = ref.judge(raw)
        return verdict == "accept" and detail in ref.ROUTE_NAMES, detail

    def check(self, raw, want=None, dribble_seed=None):
        """One case, sent whole and dribbled; returns a disagreement text or None."""
        routed_ref, detail = self.expected(raw)
        if want is not None:
            self.assertEqual(routed_ref, want, "reference: %s for %s" % (detail, raw.hex()))
        problems = []
        modes = [None] if dribble_seed is None else [None, random.Random(dribble_seed)]
        for mode in modes:
            port, routed = self.send(raw, mode)
            self.sent[port] = "ok" if routed_ref else "unrouted"
            if routed != routed_ref:
                problems.append("%s: proxy %s, reference %s (%s): %s"
                                % ("dribbled" if mode else "one write",
                                   "routed" if routed else "refused",
                                   "accepts" if routed_ref else "refuses", detail, raw.hex()))
        return problems

    def check_log(self):
        """Every case's connection line has the outcome the reference predicts."""
        conns = self.proxy.wait_conn(count=len(self.sent), timeout=30)
        conns = self.proxy.conns()
        by_port = {}
        for c in conns:
            by_port[int(c["client"].rsplit(":", 1)[1])] = c["outcome"]
        wrong = [(p, o, by_port.get(p)) for p, o in self.sent.items() if by_port.get(p) != o]
        self.assertEqual(wrong[:10], [], "%d log outcomes differ" % len(wrong))

    def assert_cases(self, cases, want):
        problems = []
        for i, raw in enumerate(cases):
            problems += self.check(raw, want=want, dribble_seed=i)
        self.assertEqual(problems, [])
        self.check_log()

    # ---- the named classes ----

    def test_valid_hellos_are_routed(self):
        self.assert_cases([ref.simple_hello(n) for n in ref.ROUTE_NAMES]
                          + [ref.simple_hello("APP.Example.COM.")], True)

    def test_duplicate_extension_refused(self):
        sni = ref.ext(0, ref.sni_body([(0, b"app.example.com")]))
        alpn = ref.ext(16, b"\x00\x03\x02h2")
        cases = [ref.records(ref.hello_message(e)) for e in (
            [sni, alpn, alpn],
            [alpn, sni, alpn],
            [sni, ref.ext(0x0a0a, b""), ref.ext(0x0a0a, b"\x00")],
            [sni, sni],
        )]
        self.assert_cases(cases, False)
        self.assert_cases([ref.records(ref.hello_message([sni, alpn]))], True)

    def test_two_server_name_entries_refused(self):
        cases = [ref.records(ref.hello_message([ref.ext(0, ref.sni_body(entries))]))
                 for entries in ([(0, b"app.example.com"), (0, b"a.example.com")],
                                 [(0, b"app.example.com"), (0, b"app.example.com")],
                                 [(1, b"x"), (0, b"app.example.com")],
                                 [(0, b"app.example.com"), (7, b"a.example.com")],
                                 [(2, b"app.example.com")])]
        self.assert_cases(cases, False)

    def test_trailing_bytes_in_last_record_refused(self):
        one = ref.simple_hello("app.example.com")
        multi = ref.records(ref.hello_message([ref.ext(0, ref.sni_body([(0, b"a.example.com")]))]),
                            sizes=(20, 30))
        cases = [ref.grow_last_record(one, b"\x00"),
                 ref.grow_last_record(one, b"\x16\x03\x01\x00\x00"),
                 ref.grow_last_record(one, one[5:]),  # the hello twice in one record
                 ref.grow_last_record(multi, b"\xff\xff")]
        self.assert_cases(cases, False)
        # A whole record after the hello (early data) is not part of it: routed.
        self.assert_cases([one + ref.records(b"early", version=0x0303, ctype=23),
                           multi + b"\x17\x03\x03\x00\x01x"], True)

    def test_record_version_0300_and_odd_legacy_versions_routed(self):
        cases = [ref.simple_hello("app.example.com", version=v, legacy=lv)
                 for v in (0x0300, 0x0301, 0x0303, 0x03ff)
                 for lv in (0x0000, 0x7f1c, 0xfefd, 0x0303)]
        self.assert_cases(cases, True)

    def test_hyphen_label_sni_refused(self):
        cases = [ref.simple_hello(n) for n in ("-a.example.com", "a-.example.com",
                                               "app.-example.com", "app.example-.com")]
        self.assert_cases(cases, False)
        # Refused as a name, not merely unrouted: the log records no SNI for them.
        for c in self.proxy.conns():
            self.assertEqual(c["sni"], "-", c)

    def test_non_handshake_record_inside_hello_refused(self):
        message = ref.hello_message([ref.ext(0, ref.sni_body([(0, b"app.example.com")]))])
        head, rest = ref.records(message[:30]), ref.records(message[30:])
        cases = [head + struct.pack("!BHH", t, 0x0303, 1) + b"\x01" + rest for t in (20, 21, 23)]
        self.assert_cases(cases, False)
        self.assert_cases([head + rest], True)

    # ---- everything else: generated and mutated ----

    def test_differential(self):
        start = time.monotonic()
        problems, total, accepted = [], 0, 0
        reasons = {}
        captured = [vector(name) for name in CAPTURED]
        for raw in captured:
            self.assertEqual(ref.judge(raw)[0], "accept", "reference refuses a real client")
        for seed in SEEDS:
            for i, raw in enumerate(ref.cases(seed, CASES_PER_SEED, captured)):
                routed_ref, detail = self.expected(raw)
                accepted += routed_ref
                key = "routed" if routed_ref else str(detail).split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
                dribble = seed * 100000 + i if i % DRIBBLE_EVERY == 0 else None
                problems += self.check(raw, dribble_seed=dribble)
                total += 1
                self.assertLess(time.monotonic() - start, TIME_BUDGET,
                                "differential run over its time budget after %d cases" % total)
        self.assertEqual(problems[:20], [], "%d disagreements in %d cases" % (len(problems), total))
        self.check_log()
        # The run is only worth something if it exercised both sides and every strict rule.
        self.assertGreater(accepted, total // 10)
        self.assertGreater(total - accepted, total // 10)
        for rule in ("bytes after the hello in its last record", "server_name list with more",
                     "not a hostname"):
            self.assertGreater(sum(v for k, v in reasons.items() if k.startswith(rule)), 10, rule)
        self.assertGreater(sum(v for k, v in reasons.items()
                               if k.startswith("extension type") and "twice" in k), 10)
        print("\ndifferential: %d cases, %d routed, %.1fs, 0 disagreements"
              % (total, accepted, time.monotonic() - start))


class HyphenRoute(ProxyTestCase):
    """A route hostname with a label starting or ending with a hyphen is refused everywhere."""

    BAD = ("-a.example.com", "a-.example.com", "app.example-.com", "app.-example.com")

    def test_hyphen_label_route_refused_by_config(self):
        for name in self.BAD:
            path = os.path.join(self.dir, "check.ini")
            with open(path, "w") as f:
                f.write("[database]\npath = %s/check.db\n[listener \"127.0.0.1:%d\"]\n"
                        "route = %s 127.0.0.1:9\n" % (self.dir, free_port(), name))
            p = subprocess.run([binary(), "check", "-c", path], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(p.returncode, 2, name + ": " + p.stderr)
            self.assertIn("bad hostname", p.stderr)

    def test_hyphen_label_route_refused_by_admin(self):
        sock = os.path.join(self.dir, "admin.sock")
        laddr = "127.0.0.1:%d" % free_port()
        proxy = self.start_proxy([(laddr, None, [])], extra="\n[grpc]\naddr = unix:%s\n" % sock)
        proxy.wait_log(r"admin API listening on unix:")

        def cli(*args):
            return subprocess.run([binary(), "routes", "-c", proxy.config_path, "--"] + list(args),
                                  capture_output=True, text=True, timeout=30)
        for name in self.BAD:
            r = cli("add", laddr, name, "127.0.0.1:9")
            self.assertEqual(r.returncode, 1, name + ": " + r.stdout + r.stderr)
        r = cli("add", laddr, "a-b.example.com", "127.0.0.1:9")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        listed = cli("list", laddr)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn("a-b.example.com", listed.stdout)
        for name in self.BAD:
            self.assertNotIn(name, listed.stdout)


if __name__ == "__main__":
    unittest.main()
