"""
A real three-member etcd cluster on loopback for the cluster-mode tests (Debian's etcd-server and
etcd-client packages: /usr/bin/etcd and /usr/bin/etcdctl, etcd 3.4).

  with EtcdCluster(tmpdir) as cluster:      # started and healthy, or an exception
      cluster.endpoints                     # ["http://127.0.0.1:P", ...], one per member
      cluster.ctl("put", "/k", "v")         # etcdctl against every live member; returns stdout
      cluster.put(k, v) / get(k) / delete(k) / revision()
      cluster.leader()                      # index of the member that leads now
      cluster.kill(i) / cluster.restart(i)  # SIGKILL a member, start it again on its data dir
      cluster.compact(rev)                  # compact the history up to rev (physically)
  EtcdCluster(tmpdir, size=1, tls=True)     # https:// client URLs with client certificates:
      cluster.tls                           # {"ca", "cert", "key"} paths a client may use
  # on exit every member is killed and the data dirs removed, whatever happened

Every member gets its own client and peer port (free moments before), its own data dir under
the given directory, short raft timers (heartbeat 50 ms, election 500 ms) so a lost leader is
replaced within about a second, and a one-second watch progress interval. Every wait is
bounded. skip_unless_etcd() raises unittest.SkipTest when the binaries are not installed.
"""

import base64
import ctypes
import json
import os
import shutil
import signal
import subprocess
import time
import unittest
import uuid

from mcp import free_port, wait_for

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
START_TIMEOUT = 30.0
CTL_TIMEOUT = 10.0


def _die_with_parent():
    """In the child before exec: SIGKILL when the test process dies (a ctest timeout, a test
    run without its tearDown), so no member outlives the test that started it."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


def skip_unless_etcd():
    """Skips the calling test when etcd is not installed (make deps installs it)."""
    for path in (ETCD, ETCDCTL):
        if not os.access(path, os.X_OK):
            raise unittest.SkipTest("%s is not installed (Debian etcd-server/etcd-client)" % path)


def make_tls(path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate (P-256, one day)."""
    os.makedirs(path)
    p = lambda name: os.path.join(path, name)

    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=30)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "1", "-subj", "/CN=mcp test etcd CA")
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        with open(p(name + ".ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=%s\n" % usage)
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", p(name + ".key"), "-out", p(name + ".csr"), "-subj", "/CN=" + name)
        run("x509", "-req", "-in", p(name + ".csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
            "-CAcreateserial", "-out", p(name + ".pem"), "-days", "1", "-extfile", p(name + ".ext"))
    return {"ca": p("ca.pem"), "cert": p("client.pem"), "key": p("client.key"),
            "server_cert": p("server.pem"), "server_key": p("server.key")}


class Member:
    def __init__(self, index, base, scheme="http"):
        self.index = index
        self.scheme = scheme
        self.name = "m%d" % index
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = os.path.join(base, self.name + ".etcd")
        self.log_path = os.path.join(base, self.name + ".log")
        self.proc = None
        self.log = None

    @property
    def client_url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.client_port)

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    def __init__(self, base_dir, size=3, tls=False):
        skip_unless_etcd()
        self.base = os.path.join(base_dir, "etcd-" + uuid.uuid4().hex[:8])
        os.makedirs(self.base)
        self.token = "mcp-" + uuid.uuid4().hex
        try:
            self.tls = make_tls(os.path.join(self.base, "tls")) if tls else None
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise
        self.members = [Member(i, self.base, "https" if tls else "http") for i in range(size)]

    # ---- lifetime ----

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        for m in self.members:
            self._spawn(m, "new")
        self.wait_healthy()

    def stop(self):
        for m in self.members:
            self._kill(m)
        shutil.rmtree(self.base, ignore_errors=True)

    def _spawn(self, m, state):
        initial = ",".join("%s=%s" % (x.name, x.peer_url) for x in self.members)
        args = [ETCD, "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial, "--initial-cluster-state", state,
                "--initial-cluster-token", self.token,
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--experimental-watch-progress-notify-interval", "1s",
                "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"]
        if self.tls:
            args += ["--cert-file", self.tls["server_cert"], "--key-file", self.tls["server_key"],
                     "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"]
        m.log = open(m.log_path, "ab")
        m.proc = subprocess.Popen(args, stdout=m.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True,
                                  preexec_fn=_die_with_parent)

    def _kill(self, m):
        if m.proc is not None:
            if m.proc.poll() is None:
                m.proc.send_signal(signal.SIGKILL)
            try:
                m.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            m.proc = None
        if m.log is not None:
            m.log.close()
            m.log = None

    # ---- members ----

    @property
    def endpoints(self):
        return [m.client_url for m in self.members]

    def live_endpoints(self):
        return [m.client_url for m in self.members if m.alive()]

    def kill(self, i):
        """SIGKILL member i (no goodbye to its peers or clients beyond the kernel's RSTs)."""
        self._kill(self.members[i])

    def restart(self, i, wait=True):
        """Starts member i again on its data dir; with wait, until the cluster is healthy."""
        m = self.members[i]
        assert not m.alive(), "member %d is running" % i
        self._spawn(m, "existing")
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout=START_TIMEOUT):
        """Every live member answers a linearizable read (so a leader exists)."""
        def healthy():
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None:
                    raise AssertionError("etcd %s exited with %s:\n%s" % (
                        m.name, m.proc.returncode, self.log_tail(m.index)))
            r = self._run(["endpoint", "health"], self.live_endpoints(), check=False)
            return r.returncode == 0
        wait_for(healthy, timeout, interval=0.2, what="etcd cluster healthy")

    def leader(self, timeout=CTL_TIMEOUT):
        """The index of the current leader (waiting for an election if there is none)."""
        def find():
            r = self._run(["endpoint", "status", "-w", "json"], self.live_endpoints(),
                          check=False)
            if r.returncode != 0:
                return None
            for st in json.loads(r.stdout):
                status = st["Status"]
                if status["header"]["member_id"] == status["leader"]:
                    for m in self.members:
                        if m.client_url == st["Endpoint"]:
                            return (m.index,)
            return None
        return wait_for(find, timeout, interval=0.1, what="an etcd leader")[0]

    def log_tail(self, i, lines=20):
        try:
            with open(self.members[i].log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    # ---- data ----

    def _run(self, args, endpoints, check=True, timeout=CTL_TIMEOUT):
        env = dict(os.environ, ETCDCTL_API="3")
        cmd = [ETCDCTL, "--endpoints", ",".join(endpoints), "--dial-timeout", "2s",
               "--command-timeout", "5s"] + args
        if self.tls:
            cmd[1:1] = ["--cacert", self.tls["ca"], "--cert", self.tls["cert"],
                        "--key", self.tls["key"]]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("etcdctl %s failed: %s" % (" ".join(args), r.stderr.strip()))
        return r

    def ctl(self, *args):
        """etcdctl ARGS... against the live members; its stdout."""
        return self._run(list(args), self.live_endpoints()).stdout

    def put(self, key, value):
        """Puts key and returns the revision of the put."""
        out = json.loads(self.ctl("put", key, value, "-w", "json"))
        return int(out["header"]["revision"])

    def delete(self, key):
        out = json.loads(self.ctl("del", key, "-w", "json"))
        return int(out["header"]["revision"])

    def get(self, key):
        """(value, mod_revision) of key, or None."""
        out = json.loads(self.ctl("get", key, "-w", "json"))
        kvs = out.get("kvs") or []
        if not kvs:
            return None
        return (base64.b64decode(kvs[0]["value"]).decode(), int(kvs[0]["mod_revision"]))

    def revision(self):
        out = json.loads(self.ctl("get", "/", "--prefix", "--keys-only", "--limit", "1",
                                  "-w", "json"))
        return int(out["header"]["revision"])

    def compact(self, rev):
        self.ctl("compact", str(rev), "--physical")
