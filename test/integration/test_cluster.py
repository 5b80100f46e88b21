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

Every test uses its own key prefix, so one etcd cluster serves the whole module; a test that
stops members starts them again before it ends (and setUp restarts any a failed test left
down). Every wait is bounded. The tests:
  Follow     a put with etcdctl applied on both within a second and relayed as real TLS; the
             status (API, `status`, `status --json`, metrics); AddRoute/CLI through A answered
             once A applied it, B following, a refused one changing nothing.
  Failover   the leader killed during 200 AddRoute calls (nothing acknowledged lost, nothing
             twice); all members stopped (traffic on, UNAVAILABLE, a restart serving from
             SQLite, convergence with etcdctl changes made while B was away); a compaction past
             B's stored revision while it was stopped (a full re-read, converged).
  BadValues  not JSON, a key no pattern matches, a route of a missing listener, a listener
             value half good: each logged "cluster: skipped", counted, the rest applied.
  Listeners  routes written before their listener; listeners, settings and firewall rules
             through A's API and etcdctl; a listener removed and added again while B was away
             (one batch on B's resume); a SIGHUP reload whose new process follows on.
"""

import json
import os
import re
import signal
import threading
import time
import unittest

import grpc

import admin_pb as pb
import mcp
import netns
from cluster_case import (APP, CALL_TIMEOUT, FOLLOW_LIMIT, SYNC_TIMEOUT, ClusterCase, Instance,
                          stop_pid, stop_shared_cluster)


def tearDownModule():
    stop_shared_cluster()


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



class Listeners(ClusterCase):

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


    def test_listeners_and_firewall_through_a_and_etcdctl_reach_b(self):
        good = self.backend(APP)
        a, b = self.start_b_after_a_empty()
        settings = pb.msg("ListenerSettings")
        a.call("AddListener", pb.msg("AddListenerRequest")(
            listener_addr=self.laddr, settings=settings(max_connections=5)))
        self.assertEqual(a.listeners(), [self.laddr])
        key = self.cluster.get(self.listener_key())
        self.assertIsNotNone(key)
        self.assertEqual(json.loads(key[0]).get("max_connections"), 5)
        mcp.wait_for(lambda: b.listeners() == [self.laddr], SYNC_TIMEOUT, what="B to listen")
        a.add_route(self.laddr, APP, good.addr())
        self.wait_routes(b, {APP: good.addr()})
        for inst in (a, b):
            self.tls_through(inst, good)

        # Rules: one through A's API, one with etcdctl; both enforced on both.
        rule = pb.msg("FirewallRule")
        a.call("AddFirewallRule", pb.msg("AddFirewallRuleRequest")(
            rule=rule(type=pb.ENUM["FIREWALL_RULE_TYPE_IP"], value="127.0.0.7")))
        self.cluster.put(self.prefix + "firewall/cidr/127.0.8.0/24", "{}")
        want = {(1, "127.0.0.7"), (2, "127.0.8.0/24")}
        for inst in (a, b):
            mcp.wait_for(lambda: {(r.type, r.value) for r in
                                  inst.call("ListFirewallRules").rules} == want,
                         SYNC_TIMEOUT, what="the rules on " + inst.name)
            self.not_routed(inst, APP, source="127.0.0.7")
            self.not_routed(inst, APP, source="127.0.8.9")
            self.tls_through(inst, good)

        # Settings through A follow to B.
        a.call("UpdateListener", pb.msg("UpdateListenerRequest")(
            listener_addr=self.laddr, settings=settings(max_connections=7)))
        def maxc(inst):
            return {l.addr: l.settings.max_connections
                    for l in inst.call("ListListeners").listeners}.get(self.laddr)
        self.assertEqual(maxc(a), 7)
        mcp.wait_for(lambda: maxc(b) == 7, SYNC_TIMEOUT, what="B to take max_connections 7")

        # Removing the listener through A: gone on both, and nothing of it left in etcd (a
        # route key left behind would come back with a later listener of that address).
        a.call("RemoveListener", pb.msg("RemoveListenerRequest")(listener_addr=self.laddr))
        self.assertEqual(a.listeners(), [])
        mcp.wait_for(lambda: b.listeners() == [], SYNC_TIMEOUT, what="B to drop the listener")
        for inst in (a, b):
            with self.assertRaises(ConnectionRefusedError):
                inst.connect(self.port).close()
        self.assertIsNone(self.cluster.get(self.listener_key()))
        self.assertEqual(self.etcd_routes(), {})


    def test_reload_hands_over_and_the_new_process_follows(self):
        one, two = self.backend(APP), self.backend("two.example.com")
        self.put_listener()
        self.put_route(APP, one.addr())
        a = self.start_a()
        self.wait_routes(a, {APP: one.addr()})
        pidfile = a.db + ".pid"

        def serving():
            try:
                with open(pidfile) as f:
                    return int(f.read().strip() or 0)
            except (OSError, ValueError):
                return 0
        old = a.proxy.pid
        mcp.wait_for(lambda: serving() == old, 10, what="the pid file")
        os.kill(old, signal.SIGHUP)
        new = mcp.wait_for(lambda: serving() not in (0, old) and serving(), 40,
                           what="a new pid in " + pidfile)
        self.addCleanup(stop_pid, new)
        self.assertEqual(a.proxy.wait_exit(30), 0)
        a.proxy.exit_checked = True
        a.proxy.wait_log(r"cluster: resuming %s after revision \d+" % re.escape(self.prefix),
                         count=1)
        # The new process serves what it inherited, follows etcd, and answers mutations.
        a.reconnect()
        self.tls_through(a, one)
        self.put_route(two.name, two.addr())
        t = self.wait_routes(a, {APP: one.addr(), two.name: two.addr()})
        self.assertLess(t, FOLLOW_LIMIT)
        a.call("RemoveRoute", pb.msg("RemoveRouteRequest")(listener_addr=self.laddr,
                                                             hostname=APP))
        self.assertEqual(a.routes(self.laddr), {two.name: two.addr()})
        self.tls_through(a, two)
        self.assertTrue(a.cluster_status().connected)
        self.assertEqual(self.etcd_routes(), {two.name: (two.addr(), 1)})


    def test_listener_removed_and_added_again_while_b_was_away(self):
        # B resumes and gets the delete and the new put of the same address in one batch: the
        # listener is updated in place (binding a second socket there cannot work).
        one, two = self.backend(APP), self.backend("two.example.com")
        a, b = self.start_pair(routes=[(APP, one.addr())])
        b.stop()
        settings = pb.msg("ListenerSettings")
        a.call("RemoveListener", pb.msg("RemoveListenerRequest")(listener_addr=self.laddr))
        a.call("AddListener", pb.msg("AddListenerRequest")(
            listener_addr=self.laddr, settings=settings(max_connections=3)))
        a.add_route(self.laddr, two.name, two.addr())
        b.start()

        def maxc(inst):
            return {l.addr: l.settings.max_connections for l in
                    inst.call("ListListeners").listeners}
        mcp.wait_for(lambda: maxc(b) == {self.laddr: 3}, SYNC_TIMEOUT,
                     what="B to hold the listener with max_connections 3")
        for inst in (a, b):
            self.wait_routes(inst, {two.name: two.addr()})
            self.tls_through(inst, two)
            self.not_routed(inst, APP)
        self.assertEqual(b.cluster_status().skipped_total, 0, b.log())
        self.assertEqual(b.cluster_status().applied_revision,
                         a.cluster_status().applied_revision)


if __name__ == "__main__":
    unittest.main()
