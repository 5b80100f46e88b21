"""
`mc-proxy cluster import` and `mc-proxy cluster status` against a real one-member etcd on
loopback (etcd_cluster.py): an import into an empty prefix in several transactions, then an
instance with [cluster] on a fresh database serving what was imported; the refusal of a prefix
that holds a key (nothing written); status while connected, with an instance down, and
after etcd has stopped; usage errors.
"""

import json
import os
import time
import uuid

import mcp
from etcd_cluster import EtcdCluster
from test_admin import AdminCase, APP

# More routes than one etcd transaction may carry (128 operations), so the import batches.
NROUTES = 300


class ClusterCmdCase(AdminCase):

    def setUp(self):
        super().setUp()
        self.etcd = EtcdCluster(self.dir, size=1)
        self.etcd.start()
        self.addCleanup(self.etcd.stop)
        self.prefix = "/mcp-%s/" % uuid.uuid4().hex[:8]

    def cluster_section(self):
        return "\n[cluster]\netcd = %s\nprefix = %s\n" % (",".join(self.etcd.endpoints),
                                                           self.prefix)

    def etcd_keys(self):
        """{key: value} of everything under the prefix, read with etcdctl."""
        out = self.etcd.ctl("get", self.prefix, "--prefix")
        lines = out.splitlines()
        return dict(zip(lines[0::2], lines[1::2]))

    def start_cluster_instance(self, sock):
        """
        An instance with [cluster] on a fresh database and its own admin socket, once it has
        applied the prefix (listeners from etcd are bound by then, with no "listening on" line).
        """
        db = os.path.join(self.dir, "fleet-%d.db" % len(self.proxies))
        extra = "\n[grpc]\naddr = unix:%s\n%s" % (sock, self.cluster_section())
        p = self.start_proxy([], extra=extra, db=db, wait=False)
        try:
            p.wait_log(r"cluster: applied ", timeout=mcp.READY_TIMEOUT)
        except AssertionError as e:
            raise AssertionError("%s; log:\n%s" % (e, p.log_text()[-4000:]))
        return p

    def listeners(self):
        return {l["addr"]: l["settings"] for l in json.loads(self.ok("listener", "list", "--json"))}

    def status_json(self, config):
        r = self.cli("cluster", "status", "--json", config=config)
        return r.returncode, json.loads(r.stdout), r.stderr


class Import(ClusterCmdCase):

    def test_import_into_an_empty_prefix_then_an_instance_serves_it(self):
        echo = self.raw_backend("echo")
        routes = [(APP, echo.addr())] + [("h%03d.example.com" % i, "127.0.0.1:%d" % (20000 + i))
                                          for i in range(NROUTES - 1)]
        self.start_admin(routes=routes, maxc=50, firewall=[("block_ip", "192.0.2.1")])
        # A second listener with every setting, and a route that sends a PROXY header.
        port2 = mcp.free_port()
        second = "127.0.0.1:%d" % port2
        self.ok("listener", "add", second, "--max-connections", "7", "--proxy-protocol", "on",
                "--proxy-from", "10.0.0.0/8", "--fallback", echo.addr(), "--rate-limit", "5/2s",
                "--max-per-client", "3")
        self.ok("routes", "add", second, "b.example.com", echo.addr(), "--send-proxy", "v2")
        self.ok("firewall", "add", "cidr", "198.51.100.0/24")
        before_routes = sorted(self.routes())
        before_rules = sorted(self.rules())
        before_listeners = self.listeners()

        # The operator adds [cluster] to the instance's file; the server runs on meanwhile.
        with open(self.config, "a") as f:
            f.write(self.cluster_section())

        # --dry-run prints every key and value and writes nothing.
        r = self.cli("cluster", "import", "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        dry = dict(line.split(" ", 1) for line in r.stdout.splitlines())
        nkeys = 2 + 2 + NROUTES + 1
        self.assertEqual(len(dry), nkeys, r.stdout)
        self.assertEqual(self.etcd_keys(), {})

        r = self.cli("cluster", "import")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^imported %d keys \(2 listeners, 2 firewall rules, %d routes\)"
                         r" under %s in 3 transactions; etcd revision \d+\n$"
                         % (nkeys, NROUTES + 1, self.prefix))
        keys = self.etcd_keys()
        self.assertEqual(keys, dry)
        self.assertEqual(json.loads(keys[self.prefix + "listeners/" + second]),
                         {"max_connections": 7, "proxy_protocol": True,
                          "proxy_from": ["10.0.0.0/8"], "fallback": echo.addr(),
                          "rate_limit": "5/2s", "max_connections_per_client": 3})
        self.assertEqual(json.loads(keys[self.prefix + "routes/%s/b.example.com" % second]),
                         {"backend": echo.addr(), "send_proxy": "v2"})
        self.assertEqual(json.loads(keys[self.prefix + "routes/%s/%s" % (self.laddr, APP)]),
                         {"backend": echo.addr(), "send_proxy": ""})
        self.assertEqual(keys[self.prefix + "firewall/ip/192.0.2.1"], "{}")
        self.assertEqual(keys[self.prefix + "firewall/cidr/198.51.100.0/24"], "{}")

        # The instance moves over: restarted with [cluster] on its own database (no revision
        # stored yet, so it reads the whole prefix), it serves the same state, now from etcd.
        self.assertEqual(self.proxy.stop(), 0)
        moved = mcp.Proxy(self.config, os.path.join(self.dir, "moved.log"))
        self.proxies.append(moved)
        moved.wait_log(r"cluster: applied %s at revision \d+ \(2 listeners, 2 firewall rules\)"
                       % self.prefix, timeout=mcp.READY_TIMEOUT)
        self.assert_state(before_listeners, before_routes, before_rules)
        self.assertEqual(moved.stop(), 0)

        # Another instance of the fleet, on a fresh database: everything comes from etcd.
        self.start_cluster_instance(os.path.join(self.dir, "fleet.sock"))
        self.config = self.proxies[-1].config_path
        self.assert_state(before_listeners, before_routes, before_rules)

    def assert_state(self, listeners, routes, rules):
        """The instance of self.config serves these, and relays a hello for APP to the echo."""
        self.assertEqual(self.listeners(), listeners)
        self.assertEqual(sorted(self.routes()), routes)
        self.assertEqual(sorted(self.rules()), rules)
        s = self.connect("127.0.0.1", self.port)
        hello = mcp.client_hello(APP)
        s.sendall(hello)
        got = b""
        while len(got) < len(hello):
            chunk = s.recv(len(hello) - len(got))
            if not chunk:
                break
            got += chunk
        self.assertEqual(got, hello)
        s.close()

    def test_a_prefix_that_holds_a_key_is_refused_and_nothing_written(self):
        self.start_admin(routes=[(APP, "127.0.0.1:9")])
        with open(self.config, "a") as f:
            f.write(self.cluster_section())
        rev = self.etcd.put(self.prefix + "listeners/127.0.0.1:1", "{}")
        r = self.cli("cluster", "import")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("refused: the prefix %s already holds 1 key" % self.prefix, r.stderr)
        self.assertIn("Nothing was written", r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertEqual(self.etcd_keys(), {self.prefix + "listeners/127.0.0.1:1": "{}"})
        self.assertEqual(self.etcd.revision(), rev)

    def test_usage_and_config_errors_exit_2(self):
        self.start_admin(routes=[(APP, "127.0.0.1:9")])
        # No [cluster] in the file: nothing to say where etcd is.
        r = self.cli("cluster", "import")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no [cluster] section", r.stderr)
        for args in (("cluster",), ("cluster", "export"), ("cluster", "status", "extra"),
                     ("cluster", "status", "--dry-run"), ("cluster", "import", "--json")):
            r = self.cli(*args)
            self.assertEqual(r.returncode, 2, "%s: %s" % (args, r.stderr))
            self.assertIn("Try 'mc-proxy cluster --help'", r.stderr)
        r = self.cli("cluster", "--help", config=False)
        self.assertEqual(r.returncode, 0)
        self.assertIn("mc-proxy cluster import -c FILE", r.stdout)


class Status(ClusterCmdCase):

    def test_status_connected_behind_and_after_etcd_stops(self):
        echo = self.raw_backend("echo")
        self.etcd.put(self.prefix + "listeners/" + self.laddr, "{}")
        rev = self.etcd.put(self.prefix + "routes/%s/%s" % (self.laddr, APP),
                            json.dumps({"backend": echo.addr()}))
        p = self.start_cluster_instance(self.sock)
        config = p.config_path

        rc, st, err = self.status_json(config)
        self.assertEqual(rc, 0, err)
        self.assertEqual(st["instance"]["applied_revision"], rev)
        self.assertTrue(st["instance"]["connected"])
        self.assertEqual(st["instance"]["prefix"], self.prefix)
        self.assertEqual(st["etcd"]["keys"], 2)
        self.assertGreaterEqual(st["etcd"]["revision"], rev)
        self.assertIs(st["in_step"], True)
        self.assertEqual(st["instance_error"], "")
        self.assertEqual(st["etcd_error"], "")
        r = self.cli("cluster", "status", config=config)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("instance: cluster: connected to %s" % self.etcd.endpoints[0], r.stdout)
        self.assertIn("etcd: %s at revision" % self.etcd.endpoints[0], r.stdout)
        self.assertIn("; 2 keys under %s" % self.prefix, r.stdout)
        self.assertIn("in step: yes", r.stdout)

        # A key the instance skips (no pattern matches it) still counts under the prefix, and
        # the instance follows it: applied revision and in step again.
        rev = self.etcd.put(self.prefix + "nonsense", "x")
        mcp.wait_for(lambda: self.status_json(config)[1]["instance"]["applied_revision"] >= rev,
                     10, interval=0.2, what="the instance to follow the put")
        rc, st, err = self.status_json(config)
        self.assertEqual((rc, st["etcd"]["keys"], st["in_step"]), (0, 3, True), st)
        self.assertEqual(st["instance"]["skipped_total"], 1)

        # Behind: a key written after the instance's applied revision. An instance follows
        # within milliseconds, so the comparison is made against another prefix, as if the
        # instance had stopped following: status names the difference.
        other = os.path.join(self.dir, "other.ini")
        with open(other, "w") as f:
            f.write("[database]\npath = %s\n[grpc]\naddr = unix:%s\n[cluster]\netcd = %s\n"
                    "prefix = %s-other/\n" % (os.path.join(self.dir, "unused.db"), self.sock,
                                               self.etcd.endpoints[0], self.prefix[:-1]))
        self.etcd.put(self.prefix[:-1] + "-other/listeners/127.0.0.1:1", "{}")
        rc, st, err = self.status_json(other)
        self.assertEqual((rc, st["etcd"]["keys"], st["in_step"]), (0, 1, False), st)
        r = self.cli("cluster", "status", config=other)
        self.assertIn("in step: NO: keys under %s-other/ were written after the instance's "
                      "applied revision %d" % (self.prefix[:-1], rev), r.stdout)

        # etcd gone: the instance says so, and status exits 1 naming what it could not reach.
        self.etcd.kill(0)
        mcp.wait_for(lambda: not self.status_json(config)[1]["instance"]["connected"], 15,
                     interval=0.3, what="the instance to notice etcd is gone")
        rc, st, err = self.status_json(config)
        self.assertEqual(rc, 1)
        self.assertIsNone(st["etcd"])
        self.assertNotEqual(st["etcd_error"], "")
        self.assertIsNone(st["in_step"])
        self.assertEqual(st["instance"]["applied_revision"], rev)
        r = self.cli("cluster", "status", config=config)
        self.assertEqual(r.returncode, 1)
        self.assertIn("instance: cluster: DISCONNECTED since", r.stdout)
        self.assertIn("etcd: cannot be reached", r.stdout)
        self.assertNotIn("in step", r.stdout)

    def test_an_instance_that_is_down_is_reported(self):
        self.etcd.put(self.prefix + "listeners/" + self.laddr, "{}")
        p = self.start_cluster_instance(self.sock)
        self.assertEqual(p.stop(), 0)
        r = self.cli("cluster", "status", "--json", config=p.config_path)
        self.assertEqual(r.returncode, 1)
        st = json.loads(r.stdout)
        self.assertIsNone(st["instance"])
        self.assertIn("UNAVAILABLE", st["instance_error"])
        self.assertEqual(st["etcd"]["keys"], 1)
        self.assertIsNone(st["in_step"])
