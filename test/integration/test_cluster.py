"""
Cluster mode end to end (issue 13; docs/SCALING.md): a real three-member etcd cluster on
loopback (etcd_cluster.py) and two real `mc-proxy server` instances, A and B, each with its own
SQLite database, admin socket and log, both following one key prefix.

Both instances read the same keys, and a listener key names the address to bind, so A and B
must each bind the very same 127.0.0.1:PORT. Sharing the port with SO_REUSEPORT (both at
`workers = 2`) was tried first and is refused on purpose: a listener's first socket checks that
nobody holds the address (lib/listener.c, so that a second mc-proxy started by mistake cannot
take half the traffic). So B runs in a network namespace of its own (netns.py: root and
iproute2), with its own loopback: it binds the same addresses there, and only the ports it must
reach on the host (the etcd members' client ports and the test backends) are forwarded out.
The test reaches each instance directly: A on the host's loopback, B through a socket made
inside its namespace; its admin socket is a unix path, which both sides see.

Every test uses its own key prefix, so one etcd cluster serves the whole class; a test that
stops members starts them again before it ends (and setUp restarts any a failed test left
down). Every wait is bounded.
"""

import base64
import json
import os
import re
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request
import uuid

import grpc

import admin_pb as pb
import mcp
import netns
from etcd_cluster import EtcdCluster, skip_unless_etcd

APP = "app.example.com"
SYNC_TIMEOUT = 15.0     # bound on waits for an instance to catch up (asserted tighter where due)
FOLLOW_LIMIT = 1.0      # docs/SCALING.md: a put reaches every instance within a second
CALL_TIMEOUT = 15.0     # an admin mutation waits at most 10 s for its revision to apply here


class Instance:
    """One mc-proxy server in cluster mode: its config, database, admin socket and logs."""

    def __init__(self, case, name, ns=None, metrics=False, endpoints=None):
        self.case = case
        self.name = name
        self.ns = ns
        self.db = os.path.join(case.dir, name + ".db")
        self.sock = os.path.join(case.dir, name + ".sock")
        self.config = os.path.join(case.dir, name + ".ini")
        self.mport = mcp.free_port() if metrics else None
        self.runs = 0
        self.proxy = None
        self._client = None
        case.addCleanup(self.close)
        extra = "\n[grpc]\naddr = unix:%s\n" % self.sock
        extra += "\n[cluster]\netcd = %s\nprefix = %s\n" % (
            ", ".join(endpoints or case.cluster.endpoints), case.prefix)
        if metrics:
            extra += "\n[metrics]\naddr = 127.0.0.1:%d\n" % self.mport
        with open(self.config, "w") as f:
            f.write(mcp.config_text(self.db, extra=extra))

    def start(self):
        """Starts the server (again) and waits for its admin API; each run logs to a new file."""
        assert self.proxy is None or self.proxy.proc.poll() is not None
        self.runs += 1
        log = os.path.join(self.case.dir, "%s-%d.log" % (self.name, self.runs))
        self.proxy = mcp.Proxy(self.config, log, wrap=self.ns.argv if self.ns else None)
        self.case.proxies.append(self.proxy)
        self.proxy.wait_log(r"admin API listening on unix:", timeout=mcp.READY_TIMEOUT)
        # A fresh channel per run: one that knew the last run's socket fails its next call.
        if self._client is not None:
            self._client.close()
        self._client = pb.Client("unix:" + self.sock, timeout=CALL_TIMEOUT)
        return self

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def stop(self):
        """SIGTERM; asserts a clean exit."""
        rc = self.proxy.stop()
        self.proxy.exit_checked = True
        self.case.assertEqual(rc, 0, "%s exit status; log:\n%s" % (self.name,
                                                                   self.proxy.log_text()))

    def log(self):
        return self.proxy.log_text()

    # ---- the admin API ----

    def call(self, method, request=None):
        return self._client.call(method, request)

    def routes(self, listener):
        """{hostname: backend} of LISTENER as this instance serves it (ListRoutes)."""
        r = self.call("ListRoutes", pb.msg("ListRoutesRequest")(listener_addr=listener))
        names = [x.hostname for x in r.routes]
        self.case.assertEqual(len(names), len(set(names)), "a route listed twice: %s" % names)
        return {x.hostname: x.backend for x in r.routes}

    def try_routes(self, listener):
        """routes(), or None while the listener does not exist here."""
        try:
            return self.routes(listener)
        except grpc.RpcError as e:
            if pb.status_of(e) == "NOT_FOUND":
                return None
            raise

    def listeners(self):
        return sorted(l.addr for l in self.call("ListListeners").listeners)

    def cluster_status(self):
        return self.call("GetStatus").cluster

    def add_route(self, listener, hostname, backend):
        return self.call("AddRoute", pb.msg("AddRouteRequest")(
            listener_addr=listener, route=pb.msg("Route")(hostname=hostname, backend=backend)))

    def cli(self, *args):
        argv = [mcp.binary(), args[0], "-c", self.config] + list(args[1:])
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        for marker in mcp.SANITIZER_MARKERS:
            self.case.assertNotIn(marker, r.stderr)
        return r

    def status_json(self):
        r = self.cli("status", "--json")
        self.case.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)["cluster"]

    def status_text(self):
        r = self.cli("status")
        self.case.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def metrics(self):
        """{name: value} of the mcproxy_cluster_* samples on /metrics."""
        url = "http://127.0.0.1:%d/metrics" % self.mport
        with urllib.request.urlopen(url, timeout=mcp.IO_TIMEOUT) as r:
            text = r.read().decode()
        return {m.group(1): float(m.group(2))
                for m in re.finditer(r"^(mcproxy_cluster_\w+) (\S+)$", text, re.M)}

    # ---- traffic ----

    def connect(self, port):
        if self.ns:
            return self.ns.connect("127.0.0.1", port, timeout=mcp.IO_TIMEOUT)
        return mcp.connect("127.0.0.1", port)

    def routed(self, hostname):
        """Connections for HOSTNAME this run relayed and logged as ok."""
        return len([c for c in self.proxy.conns()
                    if c.get("sni") == hostname and c.get("outcome") == "ok"])


class ClusterCase(mcp.ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        skip_unless_etcd()
        netns.skip_unless_possible()
        mcp.binary()
        cls.tmp = tempfile.TemporaryDirectory(prefix="mcp-cluster-")
        cls.cluster = EtcdCluster(cls.tmp.name)
        cls.cluster.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.__exit__(None, None, None)
        cls.tmp.cleanup()

    def setUp(self):
        # Registered before the base class's cleanup, so it runs after the proxies stopped.
        self.namespaces = []
        self.addCleanup(lambda: [ns.close() for ns in self.namespaces])
        super().setUp()
        # Members a failed test left stopped come back first.
        dead = [m.index for m in self.cluster.members if not m.alive()]
        for i in dead:
            self.cluster.restart(i, wait=False)
        if dead:
            self.cluster.wait_healthy()
        self.prefix = "/mcp-it/%s/" % uuid.uuid4().hex[:10]
        self.port = mcp.free_port()
        self.laddr = "127.0.0.1:%d" % self.port
        self.ns = netns.NetNS()
        self.namespaces.append(self.ns)
        for m in self.cluster.members:
            self.ns.forward(m.client_port)

    # ---- keys ----

    def listener_key(self, addr=None):
        return self.prefix + "listeners/" + (addr or self.laddr)

    def route_key(self, hostname, addr=None):
        return self.prefix + "routes/%s/%s" % (addr or self.laddr, hostname)

    def put_listener(self, addr=None, **settings):
        return self.cluster.put(self.listener_key(addr), json.dumps(settings))

    def put_route(self, hostname, backend, addr=None):
        return self.cluster.put(self.route_key(hostname, addr), json.dumps({"backend": backend}))

    def etcd_routes(self, addr=None):
        """{hostname: (backend, version)} of one listener's route keys in etcd."""
        out = json.loads(self.cluster.ctl("get", self.prefix + "routes/%s/" % (addr or self.laddr),
                                          "--prefix", "-w", "json"))
        res = {}
        for kv in out.get("kvs") or []:
            key = base64.b64decode(kv["key"]).decode()
            value = json.loads(base64.b64decode(kv["value"]).decode())
            res[key.rsplit("/", 1)[1]] = (value["backend"], int(kv["version"]))
        return res

    # ---- instances and traffic ----

    def start_a(self, metrics=False, endpoints=None):
        return Instance(self, "a", metrics=metrics, endpoints=endpoints).start()

    def start_b(self):
        return Instance(self, "b", ns=self.ns).start()

    def backend(self, name):
        """A TLS echo backend for NAME that both instances reach (B through a forward)."""
        b = self.tls_backend(name)
        self.ns.forward(b.port)
        return b

    def wait_routes(self, inst, want, addr=None, timeout=SYNC_TIMEOUT):
        """Waits until INST serves exactly WANT ({hostname: backend}, or None: no such
        listener) on a listener; returns the seconds it took."""
        t0 = time.monotonic()
        last = [None]

        def match():
            last[0] = inst.try_routes(addr or self.laddr)
            return last[0] == want
        try:
            mcp.wait_for(match, timeout, interval=0.01, what="routes on " + inst.name)
        except AssertionError:
            raise AssertionError("%s serves %r, not %r, after %.0fs; log:\n%s" % (
                inst.name, last[0], want, timeout, inst.log()[-4000:]))
        return time.monotonic() - t0

    def wait_connected(self, inst, connected=True, timeout=SYNC_TIMEOUT):
        mcp.wait_for(lambda: inst.cluster_status().connected == connected, timeout,
                     interval=0.05, what="%s connected=%s" % (inst.name, connected))

    def tls_through(self, inst, backend, port=None):
        """One verified TLS connection for BACKEND's name through INST, echoed by BACKEND, and
        logged by INST as relayed."""
        before = inst.routed(backend.name)
        raw = inst.connect(port or self.port)
        try:
            t = mcp.tls_context(backend.cert).wrap_socket(raw, server_hostname=backend.name)
        except BaseException:
            raw.close()
            raise
        with t:
            payload = uuid.uuid4().hex.encode()
            self.assertEqual(mcp.tls_roundtrip(t, payload), backend.name.encode() + b":" + payload)
        mcp.wait_for(lambda: inst.routed(backend.name) > before, mcp.IO_TIMEOUT,
                     what="%s to log the connection" % inst.name)

    def not_routed(self, inst, hostname, port=None):
        """A ClientHello for HOSTNAME through INST is closed without an answer."""
        s = inst.connect(port or self.port)
        with s:
            s.sendall(mcp.client_hello(hostname))
            how, data = mcp.read_until_closed(s)
        self.assertIn(how, ("eof", "reset"))
        self.assertEqual(data, b"", "%s still routes %s" % (inst.name, hostname))

    def start_pair(self, routes=(), metrics=False, a_endpoints=None):
        """The listener (and ROUTES, (hostname, backend) pairs) in etcd, then A and B, synced."""
        self.put_listener()
        for h, b in routes:
            self.put_route(h, b)
        a = self.start_a(metrics=metrics, endpoints=a_endpoints)
        b = self.start_b()
        for inst in (a, b):
            self.wait_routes(inst, dict(routes))
        return a, b


class Follow(ClusterCase):

    def test_etcdctl_put_routes_tls_on_both_within_a_second(self):
        backend = self.backend(APP)
        a, b = self.start_pair(metrics=True)
        self.assertEqual(a.listeners(), [self.laddr])
        self.assertEqual(b.listeners(), [self.laddr])
        self.not_routed(a, APP)

        t0 = time.monotonic()
        rev = self.put_route(APP, backend.addr())
        committed = time.monotonic()
        seen = {}

        def both():  # polled in turn, so neither is measured late because of the other
            for inst in (a, b):
                if inst.name not in seen and inst.try_routes(self.laddr) == {APP: backend.addr()}:
                    seen[inst.name] = time.monotonic()
            return len(seen) == 2
        mcp.wait_for(both, SYNC_TIMEOUT, interval=0.005, what="the route on both instances")
        for name, t in sorted(seen.items()):
            print("\n  %s: applied %.0f ms after `etcdctl put` returned (%.0f ms after it began)"
                  % (name, (t - committed) * 1000, (t - t0) * 1000), end="")
            self.assertLess(t - committed, FOLLOW_LIMIT, "%s followed too late" % name)
        for inst in (a, b):
            self.tls_through(inst, backend)

        # Both say what they applied: the API, `status --json`, `status` and (A) the metrics.
        for inst in (a, b):
            cs = inst.cluster_status()
            self.assertTrue(cs.enabled and cs.connected)
            self.assertEqual(cs.prefix, self.prefix)
            self.assertIn(cs.endpoint, self.cluster.endpoints)
            self.assertGreaterEqual(cs.applied_revision, rev)
            self.assertLessEqual(abs(cs.since_unix - time.time()), 120)
            js = inst.status_json()
            self.assertTrue(js["connected"])
            self.assertGreaterEqual(js["applied_revision"], rev)
            self.assertEqual(js["skipped_total"], 0)
            self.assertRegex(inst.status_text(),
                             r"cluster: connected to %s since .*; prefix %s; applied revision "
                             r"\d+; 0 values skipped" % (re.escape(cs.endpoint),
                                                         re.escape(self.prefix)))
        m = a.metrics()
        self.assertEqual(m.get("mcproxy_cluster_connected"), 1, m)
        self.assertGreaterEqual(m.get("mcproxy_cluster_applied_revision", 0), rev, m)
        self.assertEqual(m.get("mcproxy_cluster_skipped_values_total"), 0, m)

    def test_add_route_through_a_is_answered_once_applied_and_b_follows(self):
        one, two = self.backend(APP), self.backend("two.example.com")
        a, b = self.start_pair()
        # grpc: the answer comes after A applied the change, so A lists it at once.
        a.add_route(self.laddr, APP, one.addr())
        self.assertEqual(a.routes(self.laddr), {APP: one.addr()})
        t = self.wait_routes(b, {APP: one.addr()})
        self.assertLess(t, FOLLOW_LIMIT, "B followed too late")
        self.assertEqual(self.etcd_routes(), {APP: (one.addr(), 1)})
        # The CLI too (routes add / remove go through the same RPCs).
        r = a.cli("routes", "add", self.laddr, two.name, two.addr())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(a.routes(self.laddr), {APP: one.addr(), two.name: two.addr()})
        r = a.cli("routes", "remove", self.laddr, APP)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(a.routes(self.laddr), {two.name: two.addr()})
        self.wait_routes(b, {two.name: two.addr()})
        self.assertEqual(self.etcd_routes(), {two.name: (two.addr(), 1)})
        for inst in (a, b):
            self.tls_through(inst, two)
            self.not_routed(inst, APP)
        # A mutation that etcd's condition refuses changes nothing: a route for a listener
        # that is not in etcd.
        with self.assertRaises(grpc.RpcError) as cm:
            a.add_route("127.0.0.1:%d" % mcp.free_port(), APP, one.addr())
        self.assertEqual(pb.status_of(cm.exception), "NOT_FOUND", cm.exception.details())



class Failover(ClusterCase):

    def test_leader_killed_during_200_mutations_loses_nothing_acknowledged(self):
        backend = "127.0.0.1:%d" % mcp.free_port()  # never dialled: only the tables matter
        # A lists the leader first, so that it most likely talks to the member that goes.
        eps = list(self.cluster.endpoints)
        eps.insert(0, eps.pop(self.cluster.leader()))
        a, b = self.start_pair(a_endpoints=eps)
        names = ["h%03d.example.com" % i for i in range(200)]
        acked, failed = [], {}
        progress = threading.Condition()
        killed_at = []

        def stream():
            for h in names:
                try:
                    a.add_route(self.laddr, h, backend)
                    acked.append(h)
                except grpc.RpcError as e:
                    failed[h] = (pb.status_of(e), e.details())
                    time.sleep(0.05)  # keep the stream going through the election
                with progress:
                    progress.notify_all()
        t = threading.Thread(target=stream, daemon=True)
        t.start()
        with progress:
            progress.wait_for(lambda: len(acked) + len(failed) >= 40 or not t.is_alive(), 60)
        leader = self.cluster.leader()
        a_endpoint = a.cluster_status().endpoint
        self.cluster.kill(leader)
        killed_at.append(len(acked) + len(failed))
        t.join(CALL_TIMEOUT * 2 + 200 * 0.5)
        self.assertFalse(t.is_alive(), "the stream of mutations did not finish")
        print("\n  leader m%d (%s A's endpoint) killed after %d calls; %d acknowledged, "
              "%d refused: %s" % (
            leader, "was" if a_endpoint == self.cluster.endpoints[leader] else "was not",
            killed_at[0], len(acked), len(failed),
            sorted({v for v in failed.values()})[:3]), end="")
        self.assertLess(killed_at[0], 200, "the leader went after the stream ended")
        self.assertGreater(len([h for h in acked if names.index(h) >= killed_at[0]]), 0,
                           "nothing was acknowledged after the leader went")
        for code, _ in failed.values():
            self.assertEqual(code, "UNAVAILABLE")
        self.cluster.restart(leader)

        # Acknowledged means applied on A: there without waiting, once each.
        on_a = a.routes(self.laddr)
        self.assertEqual(set(acked) - set(on_a), set(), "acknowledged but missing on A")
        in_etcd = self.etcd_routes()
        self.assertEqual(set(acked) - set(in_etcd), set(), "acknowledged but not in etcd")
        # Each key written once (version 1): nothing was applied twice.
        self.assertEqual({h: v for h, (_, v) in in_etcd.items() if v != 1}, {})
        # Both instances converge on exactly what etcd holds; a refused call is there only
        # when etcd did commit it (its answer said it may have been made).
        want = {h: bk for h, (bk, _) in in_etcd.items()}
        for h in set(want) - set(acked):
            self.assertIn(h, failed)
        for h, (_, details) in failed.items():
            if "nothing was changed" in details:
                self.assertNotIn(h, want, "refused as unchanged, yet in etcd: " + details)
        self.wait_routes(a, want)
        self.wait_routes(b, want)
        self.assertEqual(a.cluster_status().applied_revision, b.cluster_status().applied_revision)


    def test_all_members_stopped_instances_serve_on_and_converge_when_back(self):
        one, two = self.backend(APP), self.backend("two.example.com")
        three = self.backend("three.example.com")
        a, b = self.start_pair(routes=[(APP, one.addr())], metrics=True)
        for i in range(len(self.cluster.members)):
            self.cluster.kill(i)
        t_lost = time.time()
        for inst in (a, b):
            self.wait_connected(inst, False)
        # Traffic goes on.
        for inst in (a, b):
            self.tls_through(inst, one)
        # Disconnected, and since when, everywhere it is shown.
        for inst in (a, b):
            cs = inst.cluster_status()
            self.assertFalse(cs.connected)
            self.assertLessEqual(abs(cs.since_unix - t_lost), 15)
            self.assertTrue(cs.last_error)
            self.assertFalse(inst.status_json()["connected"])
            self.assertRegex(inst.status_text(), r"cluster: DISCONNECTED since .*serving applied "
                             r"revision \d+ of prefix %s" % re.escape(self.prefix))
        self.assertEqual(a.metrics().get("mcproxy_cluster_connected"), 0)
        # Mutations are refused at once, by the API and the CLI.
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            a.add_route(self.laddr, two.name, two.addr())
        self.assertEqual(pb.status_of(cm.exception), "UNAVAILABLE")
        self.assertLess(time.monotonic() - t0, 3.0)
        r = b.cli("routes", "add", self.laddr, two.name, two.addr())
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, r"^mc-proxy: UNAVAILABLE: ")
        self.assertEqual(a.routes(self.laddr), {APP: one.addr()})

        # B restarted while etcd is away serves its last state from its database.
        b.stop()
        b.start()
        b.proxy.wait_log(r"cluster: resuming %s after revision \d+" % re.escape(self.prefix))
        self.assertEqual(b.routes(self.laddr), {APP: one.addr()})
        self.tls_through(b, one)
        self.assertFalse(b.cluster_status().connected)

        # B goes away; the members come back and etcdctl changes things meanwhile: a route
        # replaced, and a second listener with a route.
        b.stop()
        for i in range(len(self.cluster.members)):
            self.cluster.restart(i, wait=False)
        self.cluster.wait_healthy()
        laddr2 = "127.0.0.1:%d" % mcp.free_port()
        self.put_route(two.name, two.addr())
        self.cluster.delete(self.route_key(APP))
        self.put_listener(laddr2)
        self.put_route(three.name, three.addr(), addr=laddr2)
        b.start()
        for inst in (a, b):
            self.wait_routes(inst, {two.name: two.addr()})
            self.wait_routes(inst, {three.name: three.addr()}, addr=laddr2)
            self.wait_connected(inst, True)
            self.tls_through(inst, two)
            self.tls_through(inst, three, port=int(laddr2.rsplit(":", 1)[1]))
            self.not_routed(inst, APP)
        self.assertEqual(a.metrics().get("mcproxy_cluster_connected"), 1)
        self.assertEqual(a.cluster_status().applied_revision, b.cluster_status().applied_revision)
        # And mutations work again.
        a.add_route(self.laddr, APP, one.addr())
        self.wait_routes(b, {two.name: two.addr(), APP: one.addr()})


    def test_compaction_while_away_means_a_full_read(self):
        one, two = self.backend(APP), self.backend("two.example.com")
        laddr2 = "127.0.0.1:%d" % mcp.free_port()
        self.put_listener(laddr2)
        self.put_route(one.name, one.addr(), addr=laddr2)
        a, b = self.start_pair(routes=[(APP, one.addr())])
        self.wait_routes(b, {one.name: one.addr()}, addr=laddr2)
        stored = b.cluster_status().applied_revision
        b.stop()
        # While B is away: a route replaced, the second listener and its route deleted, and
        # the history compacted past the revision B stored.
        self.put_route(two.name, two.addr())
        self.cluster.delete(self.route_key(APP))
        self.cluster.delete(self.route_key(one.name, addr=laddr2))
        rev = self.cluster.delete(self.listener_key(laddr2))
        self.cluster.compact(rev)
        self.assertGreater(rev, stored)
        b.start()
        b.proxy.wait_log(r"cluster: resuming %s after revision %d" % (re.escape(self.prefix),
                                                                     stored))
        b.proxy.wait_log(r"cluster: the revision to resume from was compacted", timeout=SYNC_TIMEOUT)
        b.proxy.wait_log(r"cluster: applied %s at revision %d \(1 listeners, 0 firewall rules\)"
                         % (re.escape(self.prefix), rev), timeout=SYNC_TIMEOUT)
        for inst in (a, b):
            self.wait_routes(inst, {two.name: two.addr()})
            self.assertEqual(inst.listeners(), [self.laddr])
            self.tls_through(inst, two)
            self.not_routed(inst, APP)
            with self.assertRaises(ConnectionRefusedError):
                inst.connect(int(laddr2.rsplit(":", 1)[1])).close()
        self.assertEqual(b.cluster_status().applied_revision, rev)
        self.assertTrue(b.cluster_status().connected)


class BadValues(ClusterCase):

    def skips(self, inst):
        return [l for l in inst.log().splitlines() if "cluster: skipped " in l]

    def test_bad_values_are_reported_counted_and_skipped_the_rest_applied(self):
        good = self.backend(APP)
        other = self.backend("other.example.com")
        missing = "127.0.0.1:%d" % mcp.free_port()  # no listener key names it
        self.put_listener()
        self.put_route(APP, good.addr())
        # Waiting for the full read at start: not JSON, a key no pattern matches, a route of a
        # listener that does not exist.
        first = [(self.route_key("bad.example.com"), "{not json"),
                 (self.prefix + "nothing/matches/this", "{}"),
                 (self.route_key("lost.example.com", addr=missing),
                  json.dumps({"backend": good.addr()}))]
        for k, v in first:
            self.cluster.put(k, v)
        a = self.start_a(metrics=True)
        b = self.start_b()
        for inst in (a, b):
            self.wait_routes(inst, {APP: good.addr()})
            mcp.wait_for(lambda: inst.cluster_status().skipped_total == 3, SYNC_TIMEOUT,
                         what="%s to count 3 skipped values" % inst.name)
        # Through the watch: the same three kinds, and a listener value that is JSON with one
        # good and one bad field (never applied half-way: no listener at all), among good puts.
        laddr3 = "127.0.0.1:%d" % mcp.free_port()
        second = [(self.route_key("bad2.example.com"), "[1, 2"),
                  (self.prefix + "routes/nonsense", "{}"),
                  (self.route_key("lost2.example.com", addr=missing),
                   json.dumps({"backend": good.addr()})),
                  (self.listener_key(laddr3), json.dumps({"max_connections": 5,
                                                          "proxy_protocol": "yes"}))]
        for k, v in second:
            self.cluster.put(k, v)
        self.put_route(other.name, other.addr())
        for inst in (a, b):
            self.wait_routes(inst, {APP: good.addr(), other.name: other.addr()})
            mcp.wait_for(lambda: inst.cluster_status().skipped_total == 7, SYNC_TIMEOUT,
                         what="%s to count 7 skipped values" % inst.name)
            self.assertEqual(inst.listeners(), [self.laddr])
            skips = self.skips(inst)
            for k, _ in first + second:
                # Named by its key, or (a route that parsed) as "route ADDR HOSTNAME".
                kind, _, rest = k[len(self.prefix):].partition("/")
                shown = (k, "route " + rest.replace("/", " ")) if kind == "routes" else (k,)
                self.assertTrue([l for l in skips if any(x + ":" in l for x in shown)],
                                "no skip line for %s in:\n%s" % (k, "\n".join(skips)))
            self.assertEqual(len(skips), 7, "\n".join(skips))
            self.assertEqual(inst.status_json()["skipped_total"], 7)
            self.assertRegex(inst.status_text(), r"; 7 values skipped")
            self.assertTrue(inst.cluster_status().connected)
            self.tls_through(inst, good)
            self.tls_through(inst, other)
            self.not_routed(inst, "bad.example.com")
        self.assertEqual(a.metrics().get("mcproxy_cluster_skipped_values_total"), 7)
        # The database holds only what applied: a restart serves the same.
        b.stop()
        b.start()
        self.wait_routes(b, {APP: good.addr(), other.name: other.addr()})
        self.assertEqual(b.listeners(), [self.laddr])


    def test_routes_written_before_their_listener_apply_when_it_comes(self):
        # etcdctl users write keys in any order. A route whose listener is missing is skipped,
        # but once the listener key is put the route applies, on an instance that follows the
        # watch (A) as on one that reads the whole prefix (C, started afterwards): the fleet
        # converges whatever the order. The same after the listener is deleted and put again
        # while its route keys stayed.
        good = self.backend(APP)
        a = self.start_a()
        b = self.start_b()
        self.put_route(APP, good.addr())
        mcp.wait_for(lambda: a.cluster_status().skipped_total == 1, SYNC_TIMEOUT,
                     what="A to skip the route of a missing listener")
        self.put_listener()
        for inst in (a, b):
            self.wait_routes(inst, {APP: good.addr()})
            self.tls_through(inst, good)
        ns = netns.NetNS()  # C binds the same address: a namespace of its own too
        self.namespaces.append(ns)
        for port in [m.client_port for m in self.cluster.members] + [good.port]:
            ns.forward(port)
        c = Instance(self, "c", ns=ns).start()
        self.wait_routes(c, {APP: good.addr()})
        self.cluster.delete(self.listener_key())
        for inst in (a, b, c):
            self.wait_routes(inst, None)
        self.put_listener(max_connections=9)
        for inst in (a, b, c):
            self.wait_routes(inst, {APP: good.addr()})
        self.tls_through(a, good)


if __name__ == "__main__":
    unittest.main()
