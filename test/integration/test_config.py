"""The config loader (SPEC §3) through `mc-proxy check`: every error kind names the file, the
line and the problem and exits 2; good files pass with the right effective settings."""

import os
import random
import re
import subprocess
import tempfile
import unittest

BINARY = os.environ.get("MCP_BINARY", "mc-proxy")
HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "mc-proxy.ini")
TIMEOUT = 30  # seconds per command; generous for ASan builds on a busy machine

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehavior")

DB = "[database]\npath = mc.db\n"
# The rest of a `check -v` listener line when every edge setting is at its default.
DEFAULTS = " proxy_protocol=off proxy_from=none fallback=none rate_limit=0 max_connections_per_client=0"
LONG_HOST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # exactly 253 bytes


def run(args, cwd=None):
    p = subprocess.run([BINARY] + args, cwd=cwd, capture_output=True, text=True,
                       timeout=TIMEOUT)
    for mark in SANITIZER_MARKS:
        assert mark not in p.stderr, "sanitizer report:\n" + p.stderr
    return p


# Each error case: (name, config text, needle, expected message part). The error must be
# reported on the LAST line of the text that contains needle (None: no line number at all).
ERRORS = [
    # Sections.
    ("unknown section", DB + "[proxyy]\n", "[proxyy]", "unknown section [proxyy]"),
    ("section without bracket", DB + "[proxy\n", "[proxy", "must end with ']'"),
    ("listener without quotes", DB + "[listener 127.0.0.1:443]\n", "[listener",
     'expected [listener "ADDR"]'),
    ("bad listener address", DB + '[listener "127.0.0.1"]\n', "[listener",
     "bad listen address"),
    ("listener hostname address", DB + '[listener "localhost:443"]\n', "[listener",
     "bad listen address"),
    ("listener port out of range", DB + '[listener "127.0.0.1:65536"]\n', "[listener",
     "bad listen address"),
    ("duplicate listener", DB + '[listener "[::1]:443"]\n\n[listener "[0:0::1]:443"]\n',
     "[0:0::1]", "duplicate listener [::1]:443, first on line 3"),
    ("duplicate section", DB + "[proxy]\nidle_timeout = 1m\n[proxy]\n", "[proxy]",
     "duplicate section [proxy], first on line 3"),
    # Keys.
    ("key outside a section", "path = x.db\n" + DB, "path = x.db", "outside any section"),
    ("unknown key", DB + "[proxy]\nidle = 5m\n", "idle =", 'unknown key "idle"'),
    ("unknown key in listener", DB + '[listener "127.0.0.1:8443"]\nroutes = a 127.0.0.1:1\n',
     "routes", 'unknown key "routes"'),
    ("key of another section", DB + "[proxy]\ngeoip_db = x.mmdb\n", "geoip_db",
     'unknown key "geoip_db"'),
    ("empty value", "[database]\npath =\n", "path =", "empty value"),
    ("duplicate path", DB + "; again\npath = other.db\n", "other.db",
     "duplicate key, first on line 2"),
    ("duplicate timeout", DB + "[proxy]\nidle_timeout = 1m\nidle_timeout = 2m\n", "2m",
     "duplicate key, first on line 4"),
    ("duplicate max_connections",
     DB + '[listener "127.0.0.1:8443"]\nmax_connections = 1\nmax_connections = 2\n',
     "= 2", "duplicate key, first on line 4"),
    ("syntax error", DB + "[proxy]\njust some words\n", "just some", "syntax error"),
    ("line too long", DB + "[firewall]\n; " + "x" * 2000 + "\n", "xxx", "line too long"),
    ("NUL byte", DB + "[proxy]\nidle_timeout = 5m\x00\n", "idle_timeout", "NUL byte"),
    # Malformed values.
    ("bad duration unit", DB + "[proxy]\nidle_timeout = 5d\n", "5d", "bad duration"),
    ("zero duration", DB + "[proxy]\nconnect_timeout = 0\n", "= 0", "more than zero"),
    ("zero ms duration", DB + "[proxy]\nconnect_timeout = 0ms\n", "0ms", "more than zero"),
    ("negative duration", DB + "[proxy]\nhandshake_timeout = -5s\n", "-5s", "bad duration"),
    ("overflowing duration", DB + "[proxy]\nshutdown_timeout = 99999999999999999999h\n",
     "9999", "bad duration"),
    ("huge duration", DB + "[proxy]\nshutdown_timeout = 9000h\n", "9000h", "too long"),
    ("zero workers", DB + "[proxy]\nworkers = 0\n", "workers", "whole number from 1"),
    ("bad workers", DB + "[proxy]\nworkers = many\n", "workers", "whole number from 1"),
    ("listener port 0", DB + '[listener "127.0.0.1:0"]\n', "127.0.0.1:0",
     "port 0 is not a listen port"),
    ("bad relay", DB + "[proxy]\nrelay = zerocopy\n", "relay", "expected splice or copy"),
    ("bad log level", DB + "[proxy]\nlog_level = verbose\n", "log_level",
     "expected debug, info, warn or error"),
    ("bad socket_mode", DB + "[grpc]\naddr = unix:a.sock\nsocket_mode = 0800\n", "0800",
     "octal"),
    ("bad grpc addr", DB + "[grpc]\naddr = not an address\n", "addr", "bad address"),
    ("empty unix path", DB + "[grpc]\naddr = unix:\n", "addr", "needs a socket path"),
    ("long unix path", DB + "[grpc]\naddr = unix:/" + "s" * 120 + "\n", "addr",
     "too long"),
    ("negative max_connections", DB + '[listener "127.0.0.1:8443"]\nmax_connections = -1\n',
     "max_connections", "whole number >= 0"),
    ("fractional max_connections",
     DB + '[listener "127.0.0.1:8443"]\nmax_connections = 1.5\n', "max_connections",
     "whole number >= 0"),
    ("bad block_ip", DB + "[firewall]\nblock_ip = 300.1.1.1\n", "block_ip", "not an IPv4"),
    ("bad block_cidr", DB + "[firewall]\nblock_cidr = 10.0.0.0/33\n", "block_cidr",
     "not a CIDR"),
    ("bad block_country", DB + "[firewall]\ngeoip_db = g.mmdb\nblock_country = KPX\n",
     "block_country", "country code"),
    ("duplicate rule", DB + "[firewall]\nblock_ip = 192.0.2.1\n\nblock_ip = 192.0.2.1\n",
     "192.0.2.1", "duplicate rule 192.0.2.1, first on line 4"),
    ("duplicate rule after normalising",
     DB + "[firewall]\nblock_cidr = 198.51.100.0/24\nblock_cidr = 198.51.100.7/24\n",
     "100.7", "duplicate rule 198.51.100.0/24, first on line 4"),
    ("duplicate mapped IPv6 rule",
     DB + "[firewall]\nblock_ip = 192.0.2.1\nblock_ip = ::ffff:192.0.2.1\n", "::ffff",
     "first on line 4"),
    # Routes.
    ("route with one field", DB + '[listener "127.0.0.1:8443"]\nroute = app.example.com\n',
     "route", 'expected "HOSTNAME BACKEND"'),
    ("route with three fields",
     DB + '[listener "127.0.0.1:8443"]\nroute = a.example.com 127.0.0.1:1 x\n', "route",
     'expected "HOSTNAME BACKEND"'),
    ("route with bad hostname",
     DB + '[listener "127.0.0.1:8443"]\nroute = bad_host.com 127.0.0.1:9443\n', "route",
     'bad hostname "bad_host.com"'),
    ("route with too long hostname",
     DB + '[listener "127.0.0.1:8443"]\nroute = x' + LONG_HOST + ' 127.0.0.1:9443\n', "route",
     "bad hostname"),
    ("route backend without port",
     DB + '[listener "127.0.0.1:8443"]\nroute = a.example.com 127.0.0.1\n', "route",
     "bad backend"),
    ("route backend port zero",
     DB + '[listener "127.0.0.1:8443"]\nroute = a.example.com 127.0.0.1:0\n', "route",
     "bad backend"),
    ("route backend bare IPv6",
     DB + '[listener "127.0.0.1:8443"]\nroute = a.example.com ::1:443\n', "route",
     "bad backend"),
    ("duplicate route hostname",
     DB + '[listener "127.0.0.1:8443"]\nroute = App.Example.com 127.0.0.1:1\n'
     "route = app.example.com. 127.0.0.1:2\n", "127.0.0.1:2",
     "duplicate hostname app.example.com, first on line 4"),
    ("route loops to its own listener",
     DB + '[listener "127.0.0.1:8443"]\nroute = a.example.com 127.0.0.1:8443\n', "route",
     "loops back"),
    ("route loops to another listener",
     DB + '[listener "127.0.0.1:8443"]\nroute = a.example.com 127.0.0.1:9000\n'
     '[listener "127.0.0.1:9000"]\n', "route", "listener 127.0.0.1:9000"),
    ("route loops to a wildcard listener",
     DB + '[listener "127.0.0.1:8443"]\nroute = a.example.com 127.0.0.1:7443\n'
     '[listener "0.0.0.0:7443"]\n', "route", "loops back"),
    # Whole-file rules.
    ("TCP admin addr without TLS", DB + "[grpc]\naddr = 127.0.0.1:9000\n", "addr =",
     "needs tls_cert and tls_key"),
    ("tls_cert without tls_key",
     DB + "[grpc]\naddr = 127.0.0.1:9000\ntls_cert = c.pem\n", "tls_cert",
     "tls_cert needs tls_key"),
    ("tls_key without tls_cert",
     DB + "[grpc]\naddr = 127.0.0.1:9000\ntls_key = k.pem\n", "tls_key",
     "tls_key needs tls_cert"),
    ("TLS files with a unix addr",
     DB + "[grpc]\naddr = unix:a.sock\n\nclient_ca = ca.pem\ntls_cert = c.pem\ntls_key = k.pem\n",
     "client_ca", "TCP addr only"),
    ("client_cert without client_key",
     DB + "[grpc]\naddr = unix:a.sock\nclient_cert = c.pem\n", "client_cert",
     "client_cert needs client_key"),
    ("grpc section without addr", DB + "[grpc]\nsocket_mode = 0600\n", "[grpc]",
     "addr is required"),
    ("country rule without geoip_db", DB + "[firewall]\nblock_country = KP\n",
     "block_country", "needs geoip_db"),
    ("missing database path", "[proxy]\nidle_timeout = 5m\n", None,
     "[database] path is required"),
    ("missing database section", "", None, "[database] path is required"),
]


class ConfigErrors(unittest.TestCase):

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="mcp-config-")
        self.dir = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def write(self, text, name="mc-proxy.ini"):
        path = os.path.join(self.dir, name)
        with open(path, "w", newline="") as f:
            f.write(text)
        return path

    def test_garbage_and_mutated_configs_fail_cleanly(self):
        """Random bytes, and the example config truncated or with bytes flipped or inserted:
        each run either passes check or exits 2 with a message naming the file; never a crash
        or a sanitizer report."""
        rng = random.Random(20261126)
        with open(EXAMPLE, "rb") as f:
            example = f.read()
        path = os.path.join(self.dir, "fuzzed.ini")
        for i in range(120):
            if i % 3 == 0:
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
            else:
                data = bytearray(example)
                for _ in range(rng.randrange(1, 8)):
                    at = rng.randrange(len(data))
                    kind = rng.randrange(3)
                    if kind == 0:
                        data[at] = rng.randrange(256)
                    elif kind == 1:
                        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
                    else:
                        del data[at:]
                        if not data:
                            data = bytearray(b"[")
                data = bytes(data)
            with open(path, "wb") as f:
                f.write(data)
            p = subprocess.run([BINARY, "check", "-c", path], capture_output=True,
                               timeout=TIMEOUT)
            with self.subTest(case=i):
                for mark in SANITIZER_MARKS:
                    self.assertNotIn(mark.encode(), p.stderr)
                self.assertIn(p.returncode, (0, 2), p.stderr[-500:])
                if p.returncode == 2:
                    self.assertTrue(p.stderr.startswith(path.encode()), p.stderr[:300])

    def test_each_error_names_file_line_and_problem(self):
        for name, text, needle, problem in ERRORS:
            with self.subTest(name):
                path = self.write(text)
                p = run(["check", "-c", path])
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertEqual(p.stdout, "")
                err = p.stderr.strip()
                self.assertEqual(len(err.splitlines()), 1, "one message: " + err)
                if needle is None:
                    self.assertTrue(err.startswith(path + ": "), err)
                else:
                    lines = [i + 1 for i, l in enumerate(text.split("\n")) if needle in l]
                    self.assertTrue(lines, "bad test: needle not in text")
                    self.assertTrue(err.startswith("%s:%d: " % (path, lines[-1])), err)
                self.assertIn(problem, err)

    def test_missing_file(self):
        path = os.path.join(self.dir, "nope.ini")
        p = run(["check", "-c", path])
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stderr.strip(), path + ": cannot open: No such file or directory")

    def test_directory_instead_of_file(self):
        p = run(["check", "-c", self.dir])
        self.assertEqual(p.returncode, 2)
        self.assertIn(self.dir + ": cannot open: Is a directory", p.stderr)

    def test_unreadable_file(self):
        if os.geteuid() == 0:
            self.skipTest("root reads any file")
        path = self.write(DB)
        os.chmod(path, 0)
        p = run(["check", "-c", path])
        self.assertEqual(p.returncode, 2)
        self.assertIn(path + ": cannot open: Permission denied", p.stderr)

    def test_server_refuses_the_same_errors(self):
        # The server loads through the same code: a bad file never starts half-configured.
        path = self.write(DB + "[proxy]\nidle_timeout = 5x\n")
        p = run(["server", "-c", path])
        self.assertEqual(p.returncode, 2)
        self.assertIn("%s:4: " % path, p.stderr)

    def test_missing_tls_files_fail_check(self):
        path = self.write(DB + "[grpc]\naddr = 127.0.0.1:9000\ntls_cert = c.pem\ntls_key = k.pem\n"
                          "client_auth = none\n")
        p = run(["check", "-c", path])
        self.assertEqual(p.returncode, 2)
        self.assertIn("tls_cert %s: cannot read" % os.path.join(self.dir, "c.pem"), p.stderr)


def settings(stdout):
    """`check -v` output: a dict of single-valued settings plus lists of rules and routes."""
    out = {"rules": [], "routes": [], "listeners": []}
    for line in stdout.splitlines()[1:]:
        key, _, value = line.partition(" = ")
        if key == "firewall.rule":
            out["rules"].append(value)
        elif key == "route":
            out["routes"].append(value)
        elif key == "listener":
            out["listeners"].append(value)
        else:
            out[key] = value
    return out


class ConfigAccepted(unittest.TestCase):

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="mcp-config-")
        self.dir = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def write(self, text, name="mc-proxy.ini"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check(self, text, *extra):
        path = self.write(text)
        p = run(["check", "-c", path, "-v"] + list(extra))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        return path, p.stdout

    def test_example_config_passes(self):
        p = run(["check", "-c", EXAMPLE])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "%s: ok (1 listeners, 2 routes, 0 firewall rules)\n" % EXAMPLE)

    def test_example_config_as_devserver_writes_it(self):
        # `make devserver` rewrites /srv/mc-proxy to the repo's srv/ dir; the result must pass
        # and point everything into that directory.
        with open(EXAMPLE) as f:
            text = f.read().replace("/srv/mc-proxy", self.dir)
        _, out = self.check(text)
        s = settings(out)
        self.assertEqual(s["database.path"], os.path.join(self.dir, "mc-proxy.db"))
        self.assertEqual(s["grpc.addr"], "unix:" + os.path.join(self.dir, "admin.sock"))
        self.assertEqual(s["listeners"], ["127.0.0.1:8443 max_connections=0" + DEFAULTS])

    def test_defaults(self):
        path, out = self.check(DB)
        self.assertTrue(out.startswith("%s: ok (0 listeners, 0 routes, 0 firewall rules)\n" % path))
        s = settings(out)
        self.assertEqual(s["proxy.connect_timeout_ms"], "5000")
        self.assertEqual(s["proxy.idle_timeout_ms"], "300000")
        self.assertEqual(s["proxy.handshake_timeout_ms"], "10000")
        self.assertEqual(s["proxy.shutdown_timeout_ms"], "30000")
        self.assertEqual(s["proxy.workers"], "0")
        self.assertEqual(s["proxy.relay"], "splice")
        self.assertEqual(s["proxy.log_level"], "1")  # info
        self.assertNotIn("grpc.addr", s)  # no [grpc] section: no admin API
        self.assertEqual(s["firewall.geoip_db"], "")

    def test_grpc_defaults(self):
        _, out = self.check(DB + "[grpc]\naddr = unix:admin.sock\n")
        self.assertEqual(settings(out)["grpc.socket_mode"], "0600")

    def test_durations(self):
        cases = {"250ms": 250, "5s": 5000, "2m": 120000, "1h": 3600000, "7": 7000,
                 "8760h": 8760 * 3600000}
        for text, ms in cases.items():
            with self.subTest(text):
                _, out = self.check(DB + "[proxy]\nidle_timeout = %s\n" % text)
                self.assertEqual(settings(out)["proxy.idle_timeout_ms"], str(ms))

    def test_bad_duration_units_rejected(self):
        for text in ["5d", "5S", "5 s", "5sec", "1.5s", "ms", "s5", "5ms5", "+5s", "0x10"]:
            with self.subTest(text):
                path = self.write(DB + "[proxy]\nconnect_timeout = %s\n" % text)
                p = run(["check", "-c", path])
                self.assertEqual(p.returncode, 2, text)
                self.assertIn("%s:4: [proxy] connect_timeout: bad duration" % path, p.stderr)

    def test_everything_set(self):
        # check also validates the admin certificates: use real ones.
        certs = os.path.join(self.dir, "certs")
        p = run(["certs", "--out", certs])
        self.assertEqual(p.returncode, 0, p.stderr)
        text = DB + (
            "[proxy]\nconnect_timeout = 250ms\nidle_timeout = 1m\nhandshake_timeout = 3\n"
            "shutdown_timeout = 1h\nworkers = 4\nrelay = copy\nlog_level = warn\n"
            "[grpc]\naddr = 127.0.0.1:9000\ntls_cert = certs/server.pem\n"
            "tls_key = certs/server.key\nclient_ca = %s/ca.pem\nsocket_mode = 660\n"
            "client_cert = certs/client.pem\nclient_key = certs/client.key\n"
            "server_ca = certs/ca.pem\n" % certs +
            "[firewall]\nblock_ip = 2001:DB8::1\nblock_cidr = 10.1.2.3/8\n"
            "block_cidr = 2001:db8:bad::/48\n"
            '[listener "0.0.0.0:8443"]\nmax_connections = 100\n'
            "route = App.Example.COM. 127.0.0.1:9443\nroute = api.example.com [::1]:9444\n"
            "route = svc.example.com backend.internal:443\n"
            '[listener "[::1]:8444"]\n')
        path, out = self.check(text)
        self.assertTrue(out.startswith("%s: ok (2 listeners, 3 routes, 3 firewall rules)\n"
                                       % path))
        s = settings(out)
        self.assertEqual(s["proxy.connect_timeout_ms"], "250")
        self.assertEqual(s["proxy.idle_timeout_ms"], "60000")
        self.assertEqual(s["proxy.handshake_timeout_ms"], "3000")
        self.assertEqual(s["proxy.shutdown_timeout_ms"], "3600000")
        self.assertEqual(s["proxy.workers"], "4")
        self.assertEqual(s["proxy.relay"], "copy")
        self.assertEqual(s["proxy.log_level"], "2")  # warn
        self.assertEqual(s["grpc.addr"], "127.0.0.1:9000")
        self.assertEqual(s["grpc.socket_mode"], "0660")
        self.assertEqual(s["grpc.tls_cert"], os.path.join(certs, "server.pem"))
        self.assertEqual(s["grpc.tls_key"], os.path.join(certs, "server.key"))
        self.assertEqual(s["grpc.client_ca"], os.path.join(certs, "ca.pem"))
        self.assertEqual(s["grpc.client_cert"], os.path.join(certs, "client.pem"))
        self.assertEqual(s["grpc.client_key"], os.path.join(certs, "client.key"))
        self.assertEqual(s["grpc.server_ca"], os.path.join(certs, "ca.pem"))
        self.assertEqual(s["rules"], ["ip 2001:db8::1", "cidr 10.0.0.0/8",
                                      "cidr 2001:db8:bad::/48"])
        self.assertEqual(s["listeners"], ["0.0.0.0:8443 max_connections=100" + DEFAULTS,
                                          "[::1]:8444 max_connections=0" + DEFAULTS])
        self.assertEqual(s["routes"], ["0.0.0.0:8443 app.example.com 127.0.0.1:9443 send_proxy=none",
                                       "0.0.0.0:8443 api.example.com [::1]:9444 send_proxy=none",
                                       "0.0.0.0:8443 svc.example.com backend.internal:443 "
                                       "send_proxy=none"])

    def test_relative_paths_resolve_against_config_dir(self):
        os.mkdir(os.path.join(self.dir, "data"))
        path = self.write("[database]\npath = data/mc.db\n[grpc]\naddr = unix:run/admin.sock\n")
        p = run(["check", "-v", "-c", path], cwd="/")
        self.assertEqual(p.returncode, 0, p.stderr)
        s = settings(p.stdout)
        real = os.path.realpath(self.dir)
        self.assertEqual(s["database.path"], os.path.join(real, "data", "mc.db"))
        self.assertEqual(s["grpc.addr"], "unix:" + os.path.join(real, "run", "admin.sock"))

    def test_relative_config_path(self):
        self.write(DB, "rel.ini")
        p = run(["check", "-v", "-c", "rel.ini"], cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("rel.ini: ok"))
        self.assertEqual(settings(p.stdout)["database.path"],
                         os.path.join(os.path.realpath(self.dir), "mc.db"))

    def test_syntax_variants(self):
        # Indentation, inline comments, CRLF line ends, a BOM, "key: value" and spaces in
        # section headers all read as expected; an indented line is never a continuation.
        text = ("\ufeff; comment\r\n# another\r\n[ database ]  ; the db\r\n  path = mc.db ; c\r\n"
                '[listener "127.0.0.1:8443"]\r\n\troute = a.example.com 127.0.0.1:1\r\n'
                "  route: b.example.com 127.0.0.1:2\r\n\r\n")
        path = os.path.join(self.dir, "v.ini")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        p = run(["check", "-v", "-c", path])
        self.assertEqual(p.returncode, 0, p.stderr)
        s = settings(p.stdout)
        self.assertEqual(s["routes"], ["127.0.0.1:8443 a.example.com 127.0.0.1:1 send_proxy=none",
                                       "127.0.0.1:8443 b.example.com 127.0.0.1:2 send_proxy=none"])

    def test_long_ipv6_listener_section(self):
        # Longer than inih's own 50-byte section buffer; must not be cut short.
        addr = "[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535"
        _, out = self.check(DB + '[listener "%s"]\nroute = a.example.com [::1]:1\n' % addr)
        self.assertEqual(settings(out)["listeners"], [addr + " max_connections=0" + DEFAULTS])

    def test_route_with_longest_hostname(self):
        _, out = self.check(DB + '[listener "127.0.0.1:8443"]\nroute = %s. [2001:db8::1]:65535\n'
                            % LONG_HOST.upper())
        self.assertEqual(settings(out)["routes"],
                         ["127.0.0.1:8443 %s [2001:db8::1]:65535 send_proxy=none" % LONG_HOST])

    def test_edge_settings_printed(self):
        # Every listener setting and each route's send_proxy, in whatever unit the file used.
        _, out = self.check(DB + '[listener "127.0.0.1:8443"]\nproxy_protocol = on\n'
                            "proxy_from = 10.1.2.3/8\nproxy_from = 2001:db8::/32\n"
                            "fallback = Fallback.Example.NET:8443\nrate_limit = 20/2m\n"
                            "max_connections_per_client = 7\nmax_connections = 9\n"
                            "route = a.example.com 127.0.0.1:1 send-proxy-v1\n"
                            "route = *.example.com [::1]:2 send-proxy-v2\n"
                            "route = b.example.com 127.0.0.1:3\n"
                            '[listener "127.0.0.1:8444"]\nrate_limit = 0\n')
        s = settings(out)
        self.assertEqual(s["listeners"], [
            "127.0.0.1:8443 max_connections=9 proxy_protocol=on "
            "proxy_from=10.0.0.0/8,2001:db8::/32 fallback=fallback.example.net:8443 "
            "rate_limit=20/120000ms max_connections_per_client=7",
            "127.0.0.1:8444 max_connections=0" + DEFAULTS])
        self.assertEqual(s["routes"], [
            "127.0.0.1:8443 a.example.com 127.0.0.1:1 send_proxy=v1",
            "127.0.0.1:8443 *.example.com [::1]:2 send_proxy=v2",
            "127.0.0.1:8443 b.example.com 127.0.0.1:3 send_proxy=none"])

    def test_many_rules_and_routes(self):
        # Duplicate detection must not be quadratic: 20,000 rules and routes load quickly.
        rules = "".join("block_ip = 10.%d.%d.1\n" % (i // 256, i % 256) for i in range(20000))
        routes = "".join("route = h%d.example.com 127.0.0.1:1\n" % i for i in range(20000))
        path = self.write(DB + "[firewall]\n" + rules + '[listener "127.0.0.1:8443"]\n' + routes)
        p = run(["check", "-c", path])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("(1 listeners, 20000 routes, 20000 firewall rules)", p.stdout)

    def test_listener_limit(self):
        text = DB + "".join('[listener "127.0.0.1:%d"]\n' % (10000 + i) for i in range(1025))
        path = self.write(text)
        p = run(["check", "-c", path])
        self.assertEqual(p.returncode, 2)
        self.assertIn("%s:1027: too many listeners" % path, p.stderr)


class CheckCommandLine(unittest.TestCase):

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="mcp-config-")
        self.path = os.path.join(self._tmp.name, "mc-proxy.ini")
        with open(self.path, "w") as f:
            f.write(DB)

    def tearDown(self):
        self._tmp.cleanup()

    def test_config_option_forms(self):
        for args in (["-c", self.path], ["--config", self.path], ["--config=" + self.path],
                     ["-c" + self.path]):
            with self.subTest(args):
                p = run(["check"] + args)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertRegex(p.stdout, r"^%s: ok \(0 listeners" % re.escape(self.path))

    def test_help(self):
        for cmd in ("check", "snapshot"):
            with self.subTest(cmd):
                p = run([cmd, "--help"])
                self.assertEqual(p.returncode, 0)
                self.assertTrue(p.stdout.startswith("usage: mc-proxy %s" % cmd))

    def test_usage_errors(self):
        for args in (["check"], ["check", "--bogus", "-c", self.path],
                     ["check", "-c", self.path, "extra"], ["check", "-c"],
                     ["check", "-o", "x", "-c", self.path], ["snapshot"],
                     ["snapshot", "-c", self.path, "--bogus"]):
            with self.subTest(args):
                p = run(args)
                self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
                self.assertIn("mc-proxy %s --help" % args[0], p.stderr)


if __name__ == "__main__":
    unittest.main()
