"""`mc-proxy snapshot`: a consistent online copy of the database (VACUUM INTO), taken while
another connection holds an open write transaction; default output path; refusals (a missing
database is never created, a newer schema is refused)."""

import datetime
import os
import re
import sqlite3
import stat
import subprocess
import tempfile
import unittest

BINARY = os.environ.get("MCP_BINARY", "mc-proxy")
TIMEOUT = 30  # seconds per command; generous for ASan builds on a busy machine

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehavior")


def run(args, cwd=None):
    p = subprocess.run([BINARY] + args, cwd=cwd, capture_output=True, text=True,
                       timeout=TIMEOUT)
    for mark in SANITIZER_MARKS:
        assert mark not in p.stderr, "sanitizer report:\n" + p.stderr
    return p


def rows(path, sql):
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


class Snapshot(unittest.TestCase):

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="mcp-snapshot-")
        self.dir = self._tmp.name
        self.db = os.path.join(self.dir, "mc-proxy.db")
        self.cfg = os.path.join(self.dir, "mc-proxy.ini")
        with open(self.cfg, "w") as f:
            f.write("[database]\npath = mc-proxy.db\n")
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        self._tmp.cleanup()

    def connect(self):
        # isolation_level=None: transactions are exactly the BEGIN/COMMIT the test writes.
        c = sqlite3.connect(self.db, timeout=5, isolation_level=None)
        c.execute("PRAGMA foreign_keys = ON")
        self.conns.append(c)
        return c

    def snapshot(self, out=None):
        args = ["snapshot", "-c", self.cfg] + (["-o", out] if out else [])
        return run(args)

    def create_db(self):
        """The server creates and migrates the database (snapshot never does: it must exist)."""
        self.assertFalse(os.path.exists(self.db))
        proc = subprocess.Popen([BINARY, "server", "-c", self.cfg], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()
            while line and " started: " not in line:
                line = proc.stderr.readline()
            self.assertIn(" started: ", line)
        finally:
            proc.terminate()
            err = proc.communicate(timeout=TIMEOUT)[1]
        self.assertEqual(proc.returncode, 0, err)
        out = os.path.join(self.dir, "first.db")
        p = self.snapshot(out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, out + "\n")
        self.assertEqual(rows(self.db, "PRAGMA journal_mode"), [("wal",)])
        versions = [v for (v,) in rows(self.db, "SELECT version FROM schema_migrations")]
        self.assertEqual(versions, [1, 2, 3, 4, 5])
        return out

    def test_snapshot_copies_a_new_database(self):
        out = self.create_db()
        self.assertEqual(rows(out, "PRAGMA integrity_check"), [("ok",)])
        self.assertEqual(rows(out, "SELECT count(*) FROM listeners"), [(0,)])
        self.assertEqual([v for (v,) in rows(out, "SELECT version FROM schema_migrations")],
                         [1, 2, 3, 4, 5])

    def test_snapshot_never_creates_a_database(self):
        out = os.path.join(self.dir, "x.db")
        p = self.snapshot(out)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot open the database", p.stderr)
        self.assertFalse(os.path.exists(self.db))
        self.assertFalse(os.path.exists(out))
        self.assertEqual(sorted(os.listdir(self.dir)), ["mc-proxy.ini"])

    def test_snapshot_during_open_write_transaction_has_committed_rows_only(self):
        self.create_db()
        c = self.connect()
        c.execute("BEGIN")
        c.execute("INSERT INTO listeners(addr, max_connections) VALUES ('127.0.0.1:8443', 7)")
        lid = c.execute("SELECT id FROM listeners WHERE addr = '127.0.0.1:8443'").fetchone()[0]
        c.executemany("INSERT INTO routes(listener_id, hostname, backend) VALUES (?, ?, ?)",
                      [(lid, "h%d.example.com" % i, "127.0.0.1:%d" % (9000 + i))
                       for i in range(100)])
        c.execute("INSERT INTO firewall_rules(type, value) VALUES ('cidr', '198.51.100.0/24')")
        c.execute("COMMIT")

        # A second connection (as the running server would) holds a write transaction open.
        w = self.connect()
        w.execute("BEGIN IMMEDIATE")
        w.execute("INSERT INTO firewall_rules(type, value) VALUES ('ip', '192.0.2.99')")
        w.execute("DELETE FROM routes WHERE hostname = 'h0.example.com'")

        out = os.path.join(self.dir, "during.db")
        p = self.snapshot(out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, out + "\n")
        self.assertTrue(w.in_transaction)  # the writer was not disturbed
        w.execute("COMMIT")

        self.assertEqual(rows(out, "PRAGMA integrity_check"), [("ok",)])
        self.assertEqual(rows(out, "SELECT addr, max_connections FROM listeners"),
                         [("127.0.0.1:8443", 7)])
        self.assertEqual(rows(out, "SELECT count(*) FROM routes"), [(100,)])
        self.assertEqual(rows(out, "SELECT backend FROM routes WHERE hostname = 'h0.example.com'"),
                         [("127.0.0.1:9000",)])
        self.assertEqual(rows(out, "SELECT type, value FROM firewall_rules"),
                         [("cidr", "198.51.100.0/24")])
        # The live database did get the later commit.
        self.assertEqual(rows(self.db, "SELECT count(*) FROM firewall_rules"), [(2,)])
        self.assertEqual(rows(self.db, "SELECT count(*) FROM routes"), [(99,)])

    def test_default_output_path(self):
        self.create_db()
        before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        p = self.snapshot()
        after = datetime.datetime.now(datetime.timezone.utc)
        self.assertEqual(p.returncode, 0, p.stderr)
        path = p.stdout.strip()
        backups = os.path.join(self.dir, "backups")
        m = re.fullmatch(re.escape(backups) + r"/mc-proxy-(\d{8}T\d{6}Z)\.db", path)
        self.assertIsNotNone(m, path)
        stamp = datetime.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
        self.assertTrue(before <= stamp <= after, (before, stamp, after))
        self.assertTrue(os.path.isfile(path))
        self.assertEqual(stat.S_IMODE(os.stat(backups).st_mode), 0o700)
        self.assertEqual(rows(path, "PRAGMA integrity_check"), [("ok",)])

    def test_existing_output_is_refused_and_left_alone(self):
        self.create_db()
        out = os.path.join(self.dir, "exists.db")
        with open(out, "wb") as f:
            f.write(b"precious")
        p = self.snapshot(out)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, "")
        self.assertIn(out, p.stderr)
        self.assertIn("exists", p.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"precious")

    def test_options_in_any_order(self):
        self.create_db()
        for i, args in enumerate((["-o", "{out}", "-c", self.cfg],
                                  ["--output={out}", "--config", self.cfg],
                                  ["--config=" + self.cfg, "--output", "{out}"])):
            with self.subTest(args):
                out = os.path.join(self.dir, "order%d.db" % i)
                p = run(["snapshot"] + [a.format(out=out) for a in args])
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stdout, out + "\n")
                self.assertTrue(os.path.isfile(out))

    def test_newer_database_is_refused(self):
        self.create_db()
        c = self.connect()
        c.execute("INSERT INTO schema_migrations(version, applied_at) VALUES (99, 0)")
        out = os.path.join(self.dir, "newer.db")
        p = self.snapshot(out)
        self.assertEqual(p.returncode, 1)
        self.assertIn(self.db, p.stderr)
        self.assertFalse(os.path.exists(out))

    def test_missing_database_directory(self):
        with open(self.cfg, "w") as f:
            f.write("[database]\npath = nodir/mc-proxy.db\n")
        p = self.snapshot(os.path.join(self.dir, "x.db"))
        self.assertEqual(p.returncode, 1)
        self.assertIn("nodir", p.stderr)

    def test_config_error_is_a_usage_error(self):
        with open(self.cfg, "w") as f:
            f.write("[database]\npath = mc-proxy.db\nbogus = 1\n")
        p = self.snapshot(os.path.join(self.dir, "x.db"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("%s:3: " % self.cfg, p.stderr)
        self.assertFalse(os.path.exists(self.db))


if __name__ == "__main__":
    unittest.main()
