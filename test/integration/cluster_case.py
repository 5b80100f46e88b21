"""
The harness of test_cluster.py (cluster mode end to end; docs/SCALING.md): ClusterCase, a
ProxyTestCase with one real three-member etcd cluster for its class (etcd_cluster.py), a key
prefix of its own per test, and instances of `mc-proxy server` in cluster mode:

  Instance(case, name, ns=None, metrics=False, endpoints=None)   config, database, admin
      socket and one log file per run; .start() .stop() .reconnect(); the admin API (.call,
      .routes, .listeners, .cluster_status, .add_route), the CLI (.cli, .status_json,
      .status_text), /metrics (.metrics), traffic (.connect, .routed).
  ClusterCase.start_a() / start_b() / start_pair()   A on the host's loopback, B in the test's
      network namespace (netns.py; why: see test_cluster.py); backend(name) is a TLS echo
      backend both reach; put_listener/put_route/etcd_routes; wait_routes, wait_connected,
      tls_through (real TLS through one instance, logged by it), not_routed.
"""

import base64
import json
import os
import re
import signal
import subprocess
import tempfile
import time
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


def stop_pid(pid, timeout=15.0):
    """SIGTERM to a server this test did not start itself (a reload's new process); SIGKILL
    when it has not gone within TIMEOUT."""
    def gone():
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True
    if gone():
        return
    os.kill(pid, signal.SIGTERM)
    try:
        mcp.wait_for(gone, timeout, interval=0.05, what="pid %d to exit" % pid)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        raise


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
        self.reconnect()
        return self

    def reconnect(self):
        """A fresh admin channel: one that knew an earlier process's socket fails its next
        call (a new run, or a reload's new process)."""
        if self._client is not None:
            self._client.close()
        self._client = pb.Client("unix:" + self.sock, timeout=CALL_TIMEOUT)

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

    def connect(self, port, source=None):
        if self.ns:
            return self.ns.connect("127.0.0.1", port, timeout=mcp.IO_TIMEOUT, source=source)
        return mcp.connect("127.0.0.1", port, source=source)

    def routed(self, hostname):
        """Connections for HOSTNAME this run relayed and logged as ok."""
        return len([c for c in self.proxy.conns()
                    if c.get("sni") == hostname and c.get("outcome") == "ok"])


_shared = {}


def shared_cluster():
    """The etcd cluster every ClusterCase of the process uses, started at the first call."""
    if "cluster" not in _shared:
        tmp = tempfile.TemporaryDirectory(prefix="mcp-cluster-")
        try:
            cluster = EtcdCluster(tmp.name)
            cluster.__enter__()
        except BaseException:
            tmp.cleanup()
            raise
        _shared.update(cluster=cluster, tmp=tmp)
    return _shared["cluster"]


def stop_shared_cluster():
    """Stops the shared cluster (a test module's tearDownModule)."""
    if "cluster" in _shared:
        _shared.pop("cluster").__exit__(None, None, None)
        _shared.pop("tmp").cleanup()


class ClusterCase(mcp.ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        skip_unless_etcd()
        netns.skip_unless_possible()
        mcp.binary()
        cls.cluster = shared_cluster()

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

    def not_routed(self, inst, hostname, port=None, source=None):
        """A ClientHello for HOSTNAME through INST (from SOURCE) is closed without an answer."""
        try:
            s = inst.connect(port or self.port, source=source)
        except ConnectionResetError:
            return  # a firewall's reset can come before connect() returns
        with s:
            try:
                s.sendall(mcp.client_hello(hostname))
            except (ConnectionResetError, BrokenPipeError):
                return
            how, data = mcp.read_until_closed(s)
        self.assertIn(how, ("eof", "reset"))
        self.assertEqual(data, b"", "%s still routes %s" % (inst.name, hostname))

    def start_b_after_a_empty(self):
        """A and B on an empty prefix, both connected."""
        a, b = self.start_a(), self.start_b()
        for inst in (a, b):
            self.wait_connected(inst)
        return a, b

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
