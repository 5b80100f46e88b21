"""
The admin API over TCP with TLS and mutual TLS (SPEC §5 transport), with certificates made by
`mc-proxy certs`; the certificate checks done before gRPC sees the files; the certs command.
"""

import os
import stat
import subprocess
import time
import unittest

import grpc

import admin_pb as pb
import mcp
from test_admin import AdminCase

APP = "app.example.com"

OPENSSL_CA_CONF = """
[ca]
default_ca = d
[d]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = p
unique_subject = no
[p]
commonName = supplied
[ext]
basicConstraints = CA:FALSE
subjectAltName = IP:127.0.0.1
extendedKeyUsage = serverAuth
"""


class TLSCase(AdminCase):

    def setUp(self):
        super().setUp()
        self.certs = self.make_certs("certs")
        self.aport = mcp.free_port()
        self.target = "127.0.0.1:%d" % self.aport

    def make_certs(self, name, *sans):
        d = os.path.join(self.dir, name)
        args = ["certs", "--out", d]
        for s in sans:
            args += ["--san", s]
        self.ok(*args, config=False)
        return d

    def grpc_section(self, extra=""):
        c = self.certs
        return ("\n[grpc]\naddr = %s\ntls_cert = %s/server.pem\ntls_key = %s/server.key\n"
                "client_cert = %s/client.pem\nclient_key = %s/client.key\nserver_ca = %s/ca.pem\n"
                % (self.target, c, c, c, c, c)) + extra

    def start_mtls(self, routes=(), extra=None, wait=True):
        if extra is None:
            extra = "client_ca = %s/ca.pem\n" % self.certs
        p = self.start_proxy([(self.laddr, None, list(routes))],
                             extra=self.grpc_section(extra), wait=wait)
        if wait:
            p.wait_log(r"admin API listening on %s" % self.target)
        self.proxy, self.config = p, p.config_path
        return p

    def grpcio(self, certs=None, with_cert=True):
        certs = certs or self.certs
        creds = pb.mtls_credentials(os.path.join(self.certs, "ca.pem"),
                                    os.path.join(certs, "client.pem") if with_cert else None,
                                    os.path.join(certs, "client.key") if with_cert else None)
        c = pb.Client(self.target, creds)
        self.addCleanup(c.close)
        return c


class MutualTLS(TLSCase):

    def test_every_rpc_round_trips_over_mtls(self):
        self.start_mtls(routes=[(APP, "127.0.0.1:9")])
        L = self.laddr
        self.assertEqual(self.status()["listeners"][0]["addr"], L)
        self.ok("routes", "add", L, "b.example.com", "127.0.0.1:10")
        self.assertEqual(set(self.routes()), {(L, APP, "127.0.0.1:9"),
                                              (L, "b.example.com", "127.0.0.1:10")})
        self.ok("routes", "remove", L, "b.example.com")
        self.ok("firewall", "add", "cidr", "192.0.2.0/24")
        self.assertEqual(self.rules(), [("cidr", "192.0.2.0/24")])
        self.ok("firewall", "remove", "cidr", "192.0.2.0/24")
        self.assertEqual(self.rules(), [])
        self.ok("listener", "set-max-connections", L, "3")
        self.assertEqual(self.status()["listeners"][0]["max_connections"], 3)
        self.refused("NOT_FOUND", "routes", "remove", L, "b.example.com")
        # Flags instead of the config's client_cert/client_key/server_ca.
        c = self.certs
        out = self.ok("status", "--addr", self.target, "--ca", c + "/ca.pem", "--cert",
                      c + "/client.pem", "--key", c + "/client.key", config=False)
        self.assertIn(L, out)
        self.assertIn("TLS, client certificates required", self.proxy.log_text())

    def test_grpcio_over_mtls(self):
        self.start_mtls()
        c = self.grpcio()
        self.assertEqual([l.addr for l in c.call("GetStatus").listeners], [self.laddr])
        c.call("AddRoute", pb.msg("AddRouteRequest")(
            listener_addr=self.laddr, route=pb.msg("Route")(hostname=APP, backend="127.0.0.1:9")))
        self.assertEqual(self.routes(), [(self.laddr, APP, "127.0.0.1:9")])

    def test_client_without_certificate_is_refused(self):
        self.start_mtls()
        self.refused("UNAVAILABLE", "status", "--addr", self.target, "--ca",
                     self.certs + "/ca.pem", config=False)
        self.refused("UNAVAILABLE", "routes", "add", "--addr", self.target, "--ca",
                     self.certs + "/ca.pem", self.laddr, APP, "127.0.0.1:9", config=False)
        with self.assertRaises(grpc.RpcError) as cm:
            self.grpcio(with_cert=False).call("AddRoute", pb.msg("AddRouteRequest")(
                listener_addr=self.laddr,
                route=pb.msg("Route")(hostname=APP, backend="127.0.0.1:9")))
        self.assertEqual(pb.status_of(cm.exception), "UNAVAILABLE")
        self.assertEqual(self.routes(), [])

    def test_certificate_from_another_ca_is_refused(self):
        other = self.make_certs("other")
        self.start_mtls()
        self.refused("UNAVAILABLE", "status", "--cert", other + "/client.pem", "--key",
                     other + "/client.key")
        with self.assertRaises(grpc.RpcError) as cm:
            self.grpcio(certs=other).call("GetStatus")
        self.assertEqual(pb.status_of(cm.exception), "UNAVAILABLE")
        # The client, too, refuses a server its CA did not sign.
        self.refused("UNAVAILABLE", "status", "--ca", other + "/ca.pem")

    def test_tls_without_client_ca_needs_no_client_certificate(self):
        self.start_mtls(extra="client_auth = none\n")
        out = self.ok("status", "--addr", self.target, "--ca", self.certs + "/ca.pem",
                      config=False)
        self.assertIn(self.laddr, out)

    def test_tcp_port_is_not_shared_with_a_second_instance(self):
        self.start_mtls()
        cfg = os.path.join(self.dir, "second.ini")
        with open(cfg, "w") as f:
            f.write(mcp.config_text(os.path.join(self.dir, "second.db"),
                                    listeners=[("127.0.0.1:%d" % mcp.free_port(), None, [])])
                    + self.grpc_section("client_auth = none\n"))
        second = mcp.Proxy(cfg, os.path.join(self.dir, "second.log"))
        self.proxies.append(second)
        rc = second.wait_exit(mcp.READY_TIMEOUT)
        second.exit_checked = True
        self.assertNotEqual(rc, 0)
        self.assertIn("cannot listen on %s" % self.target, second.log_text())
        self.assertEqual(self.status()["listeners"][0]["addr"], self.laddr)


class CertificateChecks(TLSCase):

    def openssl_cert(self, name, start, end):
        """A server cert signed by our CA with the given validity (YYYYMMDDHHMMSSZ)."""
        d = os.path.join(self.dir, "ossl-" + name)
        os.mkdir(d)
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write(OPENSSL_CA_CONF)
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("01\n")

        def run(*argv):
            subprocess.run(argv, cwd=d, check=True, capture_output=True, timeout=30)
        run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-subj", "/CN=" + name, "-keyout", "key.pem", "-out", "req.csr")
        run("openssl", "ca", "-batch", "-config", "ca.cnf", "-cert", self.certs + "/ca.pem",
            "-keyfile", self.certs + "/ca.key", "-in", "req.csr", "-out", "cert.pem",
            "-startdate", start, "-enddate", end, "-extensions", "ext", "-notext")
        return os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")

    def test_bad_server_certificates_stop_startup_with_a_clear_error(self):
        c = self.certs
        other = self.make_certs("other")
        expired = self.openssl_cert("expired", "20200101000000Z", "20210101000000Z")
        future = self.openssl_cert("future", "20990101000000Z", "20991231000000Z")
        garbage = os.path.join(self.dir, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        missing = os.path.join(self.dir, "missing.pem")
        # (what, tls_cert, tls_key, client_ca, expected message, file it must name)
        table = [
            ("unreadable", missing, c + "/server.key", c + "/ca.pem", "cannot read", missing),
            ("not PEM", garbage, c + "/server.key", c + "/ca.pem", "not a PEM certificate",
             garbage),
            ("key mismatch", c + "/server.pem", other + "/server.key", c + "/ca.pem",
             "does not match", other + "/server.key"),
            ("expired", expired[0], expired[1], c + "/ca.pem", "expired", expired[0]),
            ("not yet valid", future[0], future[1], c + "/ca.pem", "not valid until", future[0]),
            ("wrong CA", c + "/server.pem", c + "/server.key", other + "/ca.pem",
             "was not signed by", other + "/ca.pem"),
            ("CA is not a CA", c + "/server.pem", c + "/server.key", c + "/client.pem",
             "not a CA", c + "/client.pem"),
        ]
        for what, cert, key, ca, message, named in table:
            with self.subTest(what=what):
                cfg = os.path.join(self.dir, "bad.ini")
                with open(cfg, "w") as f:
                    f.write(mcp.config_text(self.db, listeners=[(self.laddr, None, [])])
                            + "\n[grpc]\naddr = %s\ntls_cert = %s\ntls_key = %s\nclient_ca = %s\n"
                            % (self.target, cert, key, ca))
                # `mc-proxy check` finds the same problem without starting anything.
                r = self.cli("check", config=cfg)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn(message, r.stderr)
                self.assertIn(named, r.stderr)
                p = mcp.Proxy(cfg, os.path.join(self.dir, "bad-%d.log" % len(self.proxies)))
                self.proxies.append(p)
                rc = p.wait_exit(mcp.READY_TIMEOUT)
                p.exit_checked = True
                self.assertNotEqual(rc, 0, p.log_text())
                log = p.log_text()
                self.assertIn(message, log)
                self.assertIn(named, log)
                self.assertEqual(p.sanitizer_reports(), [])

    def test_check_accepts_good_admin_certificates(self):
        cfg = os.path.join(self.dir, "good.ini")
        with open(cfg, "w") as f:
            f.write(mcp.config_text(self.db, listeners=[(self.laddr, None, [])])
                    + self.grpc_section("client_ca = %s/ca.pem\n" % self.certs))
        r = self.cli("check", config=cfg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")

    def test_client_side_files_are_checked_before_connecting(self):
        self.start_mtls()
        c, other = self.certs, self.make_certs("other")
        table = [
            (("--cert", c + "/client.pem", "--key", other + "/client.key"), "does not match"),
            (("--cert", c + "/missing.pem", "--key", c + "/client.key"), "cannot read"),
            (("--cert", c + "/client.pem"), "--cert and --key go together"),
            (("--ca", c + "/server.pem"), "not a CA"),
        ]
        for extra, message in table:
            with self.subTest(extra=extra):
                r = self.cli("status", "--addr", self.target, *extra, config=False)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(message, r.stderr)


class CertsCommand(TLSCase):

    @staticmethod
    def contents(d):
        out = {}
        for n in os.listdir(d):
            with open(os.path.join(d, n), "rb") as f:
                out[n] = f.read()
        return out

    def test_writes_a_ca_and_signed_certificates(self):
        d = self.make_certs("more", "admin.example.net", "192.0.2.10", "2001:db8::1")
        modes = {n: stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode) for n in os.listdir(d)}
        self.assertEqual(modes, {"ca.pem": 0o644, "server.pem": 0o644, "client.pem": 0o644,
                                 "ca.key": 0o600, "server.key": 0o600, "client.key": 0o600})
        r = subprocess.run(["openssl", "verify", "-CAfile", d + "/ca.pem", d + "/server.pem",
                            d + "/client.pem"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        text = subprocess.run(["openssl", "x509", "-in", d + "/server.pem", "-noout", "-text"],
                              capture_output=True, text=True, timeout=30).stdout
        for san in ("DNS:localhost", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1",
                    "DNS:admin.example.net", "IP Address:192.0.2.10",
                    "IP Address:2001:DB8:0:0:0:0:0:1"):
            self.assertIn(san, text)
        self.assertIn("TLS Web Server Authentication", text)
        self.assertIn("prime256v1", text)
        text = subprocess.run(["openssl", "x509", "-in", d + "/client.pem", "-noout", "-text"],
                              capture_output=True, text=True, timeout=30).stdout
        self.assertIn("TLS Web Client Authentication", text)

    def test_refuses_to_overwrite_and_validates_arguments(self):
        d = self.certs
        before = self.contents(d)
        r = self.cli("certs", "--out", d, config=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("refusing to overwrite", r.stderr)
        self.assertEqual(self.contents(d), before)
        # One existing file is enough to refuse, and nothing else is written.
        d2 = os.path.join(self.dir, "partial")
        os.mkdir(d2)
        open(os.path.join(d2, "client.key"), "w").close()
        self.assertEqual(self.cli("certs", "--out", d2, config=False).returncode, 1)
        self.assertEqual(os.listdir(d2), ["client.key"])
        for argv in (("certs",), ("certs", "--out", d2 + "x", "--san", "bad_name!"),
                     ("certs", "--out", d2 + "y", "extra"), ("certs", "--bogus")):
            with self.subTest(argv=argv):
                self.assertEqual(self.cli(*argv, config=False).returncode, 2)


if __name__ == "__main__":
    unittest.main()
