"""
cli/etcd_client.c against a real three-member etcd cluster (etcd_cluster.py), through the
test-only driver test/etcd_probe.c: Range of a prefix in pages, Txn put-if-absent and
compare-and-swap on mod_revision, and a Watch that sees puts quickly, survives the loss of the
member it streams from without missing or repeating an event, and reports a compaction.
"""

import os
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

from etcd_cluster import EtcdCluster, skip_unless_etcd
from mcp import free_port, wait_for

PROBE_TIMEOUT = 30.0


def probe_path():
    path = os.environ.get("MCP_ETCD_PROBE")
    if not path:
        raise unittest.SkipTest("MCP_ETCD_PROBE is not set (run through ctest)")
    return path


def probe(*args, timeout=PROBE_TIMEOUT, env=None):
    return subprocess.run([probe_path()] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def read_lines(path):
    with open(path) as f:
        return f.read().splitlines()


class WatchProbe:
    """`etcd_probe watch` running in the background; its output lines collected as they come."""

    def __init__(self, endpoints, prefix, start, progress_ms=500):
        self.proc = subprocess.Popen(
            [probe_path(), "watch", ",".join(endpoints), prefix, str(start), str(progress_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.stopped = False

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append((time.monotonic(), line.split()))

    def snapshot(self):
        with self.lock:
            return list(self.lines)

    def wait_line(self, pred, timeout=10.0, what="a watch line"):
        def found():
            for t, words in self.snapshot():
                if words and pred(words):
                    return (t, words)
            return None
        return wait_for(found, timeout, what=what)

    def events(self):
        return [w for _, w in self.snapshot() if w and w[0] == "event"]

    def stop(self):
        """Closes stdin (the probe's stop signal) and returns its exit code."""
        self.stopped = True
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("etcd_probe watch did not stop within 15 s")
        finally:
            self.reader.join(timeout=5)
            self.proc.stdout.close()
            self.proc.stderr.close()


class EtcdClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        skip_unless_etcd()
        probe_path()
        cls.tmp = tempfile.TemporaryDirectory(prefix="mcp-etcd-")
        cls.cluster = EtcdCluster(cls.tmp.name)
        cls.cluster.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.__exit__(None, None, None)
        cls.tmp.cleanup()

    def setUp(self):
        self.prefix = "/mcp-test/%s/" % uuid.uuid4().hex[:8]
        self.watches = []

    def tearDown(self):
        for w in self.watches:
            if not w.stopped:
                w.stop()

    def eps(self):
        return ",".join(self.cluster.endpoints)

    def watch(self, start, endpoints=None, progress_ms=500):
        w = WatchProbe(endpoints or self.cluster.endpoints, self.prefix, start, progress_ms)
        self.watches.append(w)
        return w

    # ---- Range ----

    def test_range_reads_exactly_the_prefix_across_pages(self):
        keys = ["%sk%02d" % (self.prefix, i) for i in range(7)]
        for i, k in enumerate(keys):
            last = self.cluster.put(k, "v%d" % i)
        self.cluster.put(self.prefix.rstrip("/") + "-sibling", "outside")
        r = probe("range", self.eps(), self.prefix)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [l.split() for l in r.stdout.splitlines()]
        self.assertEqual(lines[0][0], "revision")
        self.assertGreaterEqual(int(lines[0][1]), last)
        got = [(w[1], w[2]) for w in lines[1:]]
        self.assertEqual(got, [(k, "v%d" % i) for i, k in enumerate(keys)])

    def test_unreachable_endpoints_fail_within_the_deadline(self):
        dead = ",".join("http://127.0.0.1:%d" % free_port() for _ in range(3))
        t = time.monotonic()
        r = probe("range", dead, self.prefix)
        took = time.monotonic() - t
        self.assertEqual(r.returncode, 1)
        self.assertIn("(-%d)" % 107, r.stderr)  # ETCD_EUNAVAILABLE (-ENOTCONN)
        self.assertLess(took, 3 * 2.0 + 2.0)

    # ---- Txn ----

    def test_txn_put_if_absent_succeeds_once(self):
        key = self.prefix + "lock"
        r = probe("create", self.eps(), key, "first")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split()[0], "succeeded")
        r = probe("create", self.eps(), key, "second")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split()[0], "failed")
        self.assertEqual(self.cluster.get(key)[0], "first")

    def test_txn_on_mod_revision_fails_when_the_key_changed(self):
        key = self.prefix + "route"
        rev = self.cluster.put(key, "a")
        r = probe("swap", self.eps(), key, "b", rev)
        self.assertEqual(r.stdout.split()[0], "succeeded", r.stderr)
        new_rev = int(r.stdout.split()[1])
        self.assertEqual(self.cluster.get(key), ("b", new_rev))
        self.cluster.put(key, "changed by someone else")
        r = probe("swap", self.eps(), key, "c", new_rev)
        self.assertEqual(r.returncode, 0, r.stderr)
        words = r.stdout.split()
        self.assertEqual(words[0], "failed")
        self.assertEqual(self.cluster.get(key)[0], "changed by someone else")
        self.assertEqual(int(words[2]), self.cluster.get(key)[1])  # read back in the same Txn

    # ---- Watch ----

    def test_put_with_etcdctl_is_seen_by_the_watch_within_a_second(self):
        w = self.watch(self.cluster.revision() + 1)
        w.wait_line(lambda x: x[0] == "connected", what="the watch to connect")
        key = self.prefix + "routes/0.0.0.0:443/app.example.com"
        t0 = time.monotonic()
        rev = self.cluster.put(key, '{"backend":"127.0.0.1:8443"}')
        t, words = w.wait_line(lambda x: x[0] == "event" and x[2] == key, timeout=5.0,
                               what="the put event")
        self.assertLess(t - t0, 1.0, "the watch saw the put after %.3f s" % (t - t0))
        self.assertEqual(words[1], "put")
        self.assertEqual(int(words[4]), rev)
        self.cluster.delete(key)
        w.wait_line(lambda x: x[:3] == ["event", "delete", key], what="the delete event")
        # A change outside the prefix is no event, but etcd's progress notifications (every
        # second here) move the watch past it.
        outside = self.cluster.put(self.prefix.rstrip("/") + "-outside", "x")
        w.wait_line(lambda x: x[0] == "progress" and int(x[1]) >= outside, timeout=5.0,
                    what="a progress notification")
        self.assertNotIn(self.prefix.rstrip("/") + "-outside", [e[2] for e in w.events()])
        self.assertEqual(w.stop(), 0)

    def test_leader_killed_mid_watch_fails_over_without_losing_or_repeating(self):
        leader = self.cluster.leader()
        # The watch streams from the leader first, so killing the leader breaks its stream.
        order = [leader] + [i for i in range(3) if i != leader]
        w = self.watch(self.cluster.revision() + 1,
                       endpoints=[self.cluster.endpoints[i] for i in order])
        w.wait_line(lambda x: x[0] == "connected", what="the watch to connect")

        done = threading.Event()

        def writer():
            for i in range(40):
                try:
                    self.cluster.put("%sk%03d" % (self.prefix, i), "v%d" % i)
                except (AssertionError, subprocess.TimeoutExpired):
                    pass  # during the election a put may fail (or succeed unseen); Range decides
                if i == 10:
                    self.cluster.kill(leader)
            done.set()

        t = threading.Thread(target=writer)
        t.start()
        t.join(timeout=120)
        self.assertTrue(done.is_set(), "the writer did not finish")
        try:
            r = probe("range", ",".join(self.cluster.live_endpoints()), self.prefix)
            self.assertEqual(r.returncode, 0, r.stderr)
            truth = {l.split()[1]: int(l.split()[3]) for l in r.stdout.splitlines()[1:]}
            self.assertGreater(len(truth), 20)
            last = max(truth.values())
            w.wait_line(lambda x: x[0] == "event" and int(x[4]) >= last, timeout=15.0,
                        what="the watch to catch up with revision %d" % last)
            events = w.events()
            revs = [int(e[4]) for e in events]
            self.assertEqual(revs, sorted(set(revs)), "events repeated or out of order")
            self.assertEqual({e[2]: int(e[4]) for e in events}, truth)
            self.assertEqual(len(events), len(truth))
            lines = [x for _, x in w.snapshot()]
            kinds = [x[0] for x in lines]
            self.assertIn("disconnected", kinds, "the watch never noticed the lost member")
            self.assertGreaterEqual(kinds.count("connected"), 2, "the watch did not reconnect")
            again = [x for x in lines if x[0] == "connected"][1]
            self.assertNotEqual(again[2], self.cluster.endpoints[leader])
            self.assertEqual(w.stop(), 0)
        finally:
            self.cluster.restart(leader)

    def test_all_members_stopped_and_back_the_watch_resumes_in_place(self):
        w = self.watch(self.cluster.revision() + 1)
        w.wait_line(lambda x: x[0] == "connected", what="the watch to connect")
        before = self.cluster.put(self.prefix + "before", "1")
        w.wait_line(lambda x: x[0] == "event" and int(x[4]) == before, what="the first event")
        try:
            for i in range(3):
                self.cluster.kill(i)
            _, down = w.wait_line(lambda x: x[0] == "disconnected", what="the outage report")
            self.assertEqual(int(down[1]), before + 1)  # where it will resume
        finally:
            for i in range(3):
                self.cluster.restart(i, wait=False)
            self.cluster.wait_healthy()
        after = self.cluster.put(self.prefix + "after", "2")
        w.wait_line(lambda x: x[0] == "event" and int(x[4]) == after, timeout=15.0,
                    what="the event after the outage")
        self.assertEqual([e[2] for e in w.events()], [self.prefix + "before", self.prefix + "after"])
        lines = [x[0] for _, x in w.snapshot()]
        self.assertEqual(lines.count("disconnected"), 1, "one report per outage")
        self.assertEqual(w.stop(), 0)

    def test_compaction_while_disconnected_is_reported_on_reconnect(self):
        member = (self.cluster.leader() + 1) % 3
        w = self.watch(self.cluster.revision() + 1, endpoints=[self.cluster.endpoints[member]])
        w.wait_line(lambda x: x[0] == "connected", what="the watch to connect")
        seen = self.cluster.put(self.prefix + "seen", "1")
        w.wait_line(lambda x: x[0] == "event" and int(x[4]) == seen, what="the first event")
        try:
            self.cluster.kill(member)
            w.wait_line(lambda x: x[0] == "disconnected", what="the outage report")
            self.cluster.put(self.prefix + "missed", "2")
            now = self.cluster.put(self.prefix + "missed-too", "3")
            self.cluster.compact(now)
        finally:
            self.cluster.restart(member)
        _, words = w.wait_line(lambda x: x[0] == "compacted", timeout=15.0,
                               what="the compaction report after reconnecting")
        self.assertEqual(int(words[1]), now)
        self.assertEqual(w.proc.wait(timeout=15), 3)
        self.assertEqual([e[2] for e in w.events()], [self.prefix + "seen"])

    def test_leader_killed_during_txns_nothing_acknowledged_is_lost(self):
        leader = self.cluster.leader()
        order = [leader] + [i for i in range(3) if i != leader]
        eps = ",".join(self.cluster.endpoints[i] for i in order)
        out = os.path.join(self.tmp.name, "create-many.out")
        with open(out, "w") as f:
            p = subprocess.Popen([probe_path(), "create-many", eps, self.prefix, "150"],
                                 stdout=f, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: len(read_lines(out)) >= 30, 30.0,
                     what="30 transactions before the kill")
            self.cluster.kill(leader)
            _, err = p.communicate(timeout=90)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
            self.cluster.restart(leader)
        self.assertEqual(p.returncode, 0, err)
        lines = [l.split() for l in read_lines(out)]
        self.assertEqual(len(lines), 150, err)
        r = probe("range", self.eps(), self.prefix)
        self.assertEqual(r.returncode, 0, r.stderr)
        stored = {l.split()[1]: int(l.split()[3]) for l in r.stdout.splitlines()[1:]}
        outcomes = {}
        for words in lines:
            outcomes[words[0]] = outcomes.get(words[0], 0) + 1
            if words[0] == "ok":  # acknowledged: stored, at the revision we were told
                self.assertEqual(stored.get(words[1]), int(words[2]), words)
            elif words[0] == "unavailable":  # refused before sending: never applied
                self.assertNotIn(words[1], stored, words)
            elif words[0] == "exists":  # only possible for a key written by an unsure attempt
                self.fail("a fresh key already existed: %s" % words)
            else:
                self.assertEqual(words[0], "unknown", "%s\n%s" % (words, err))
        self.assertGreaterEqual(outcomes.get("ok", 0), 140, "%s\n%s" % (outcomes, err))

    def test_compaction_past_the_watch_revision_is_reported(self):
        start = self.cluster.revision() + 1
        for i in range(3):
            self.cluster.put("%sc%d" % (self.prefix, i), "x")
        now = self.cluster.put(self.prefix + "last", "x")
        self.cluster.compact(now)
        w = self.watch(start)
        _, words = w.wait_line(lambda x: x[0] == "compacted", what="the compaction report")
        self.assertEqual(int(words[1]), now)
        self.assertEqual(w.proc.wait(timeout=15), 3)
        self.assertEqual(w.events(), [])
        # From the compact revision on, the same prefix can be watched again.
        w2 = self.watch(now)
        _, words = w2.wait_line(lambda x: x[0] == "event", what="the event at the compaction")
        self.assertEqual(words[2:], [self.prefix + "last", "x", str(now)])
        self.assertEqual(w2.stop(), 0)


class EtcdClientTLSTest(unittest.TestCase):
    """https:// endpoints: etcd's certificate checked against the CA, a client certificate."""

    @classmethod
    def setUpClass(cls):
        skip_unless_etcd()
        probe_path()
        cls.tmp = tempfile.TemporaryDirectory(prefix="mcp-etcd-tls-")
        cls.cluster = EtcdCluster(cls.tmp.name, size=1, tls=True)
        cls.cluster.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.__exit__(None, None, None)
        cls.tmp.cleanup()

    def env(self, **paths):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_ETCD_")}
        env["MCP_ETCD_PROBE"] = probe_path()
        env.update({"MCP_ETCD_" + k.upper(): v for k, v in paths.items()})
        return env

    def test_range_and_txn_over_tls_with_a_client_certificate(self):
        rev = self.cluster.put("/tls/a", "1")
        tls = self.cluster.tls
        env = self.env(ca=tls["ca"], cert=tls["cert"], key=tls["key"])
        ep = self.cluster.endpoints[0]
        self.assertTrue(ep.startswith("https://"))
        r = probe("range", ep, "/tls/", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("kv /tls/a 1 %d" % rev, r.stdout)
        r = probe("create", ep, "/tls/b", "2", env=env)
        self.assertEqual(r.stdout.split()[0], "succeeded", r.stderr)

    def test_tls_refused_without_the_ca_or_the_client_certificate(self):
        tls = self.cluster.tls
        ep = self.cluster.endpoints[0]
        # No CA: etcd's certificate is not trusted (the system roots do not know it).
        r = probe("range", ep, "/tls/", env=self.env(cert=tls["cert"], key=tls["key"]))
        self.assertEqual(r.returncode, 1)
        self.assertIn("certificate verify failed", r.stderr)
        self.assertIn("(-107)", r.stderr)  # ETCD_EUNAVAILABLE
        # No client certificate: etcd (--client-cert-auth) refuses the handshake.
        r = probe("range", ep, "/tls/", env=self.env(ca=tls["ca"]))
        self.assertEqual(r.returncode, 1)
        self.assertIn("(-107)", r.stderr)


if __name__ == "__main__":
    unittest.main()
