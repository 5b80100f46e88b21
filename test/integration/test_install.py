"""
libmcproxy as a C developer gets it: `cmake --install` into a temporary prefix, then the
embedding example (examples/embed) built against that prefix the two supported ways, through
pkg-config and through find_package(mcproxy CONFIG), and run end to end with real sockets.

Needs MCP_BUILD_DIR (set by ctest): a configured and built tree whose libmcproxy.so exists.
"""

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from mcp import (IO_TIMEOUT, RawBackend, SOURCE_DIR, client_hello, connect, parse_conn,
                 wait_for, SANITIZER_MARKERS)

EMBED_SRC = os.path.join(SOURCE_DIR, "examples", "embed")
BUILD_TIMEOUT = 240
# The embed program switches a.example to the second backend this long after it starts; the
# first connections must be relaying before then (they take milliseconds on loopback).
SWITCH_AFTER_MS = 3000


def build_dir():
    path = os.environ.get("MCP_BUILD_DIR")
    if not path:
        raise unittest.SkipTest("MCP_BUILD_DIR is not set (run through ctest)")
    return path


def cmake_cache(build):
    """The CMakeCache.txt entries of BUILD as a dict NAME -> value."""
    out = {}
    with open(os.path.join(build, "CMakeCache.txt")) as f:
        for line in f:
            m = re.match(r"^([A-Za-z0-9_.-]+):[A-Z]+=(.*)$", line.rstrip("\n"))
            if m:
                out[m.group(1)] = m.group(2)
    return out


def run(cmd, timeout=BUILD_TIMEOUT, env=None, cwd=None):
    """Runs CMD, failing with its output when it exits non-zero; returns stdout."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, env=env, cwd=cwd)
    if p.returncode != 0:
        raise AssertionError("%s exited %d:\n%s" % (" ".join(cmd), p.returncode, p.stdout))
    return p.stdout


class Embed:
    """The running embed example: its stdout lines are collected by a reader thread."""

    def __init__(self, path, backend1, backend2, env):
        self.lines = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [path, "127.0.0.1:0", "127.0.0.1:0", backend1, backend2,
             "--switch-after", str(SWITCH_AFTER_MS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr = ""

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def text(self):
        with self._lock:
            return "\n".join(self.lines)

    def wait_line(self, pattern, timeout=IO_TIMEOUT):
        rx = re.compile(pattern)

        def found():
            with self._lock:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
            return None
        return wait_for(found, timeout, what="embed output matching %r; got:\n%s"
                        % (pattern, self.text()))

    def conns(self):
        with self._lock:
            return [c for c in (parse_conn(x) for x in self.lines) if c]

    def stop(self, timeout=IO_TIMEOUT):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self.stderr = self.proc.stderr.read()
        self.proc.stderr.close()
        self._reader.join(5)
        self.proc.stdout.close()
        return rc


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.build = build_dir()
        cache = cmake_cache(cls.build)
        cls.version = cache.get("CMAKE_PROJECT_VERSION", "")
        cls.cc = cache.get("CMAKE_C_COMPILER", "cc")
        cls.sanitize = cache.get("MCP_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE", "YES")
        # A sanitized libmcproxy needs its consumers built and linked the same way.
        cls.cflags = "-fsanitize=address,undefined -fno-omit-frame-pointer" if cls.sanitize else ""
        cls.tmp = tempfile.mkdtemp(prefix="mcp-install-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        # Installs what `make build` built; the shared library must be part of that build.
        run(["cmake", "--build", cls.build, "--target", "mcproxy_shared", "mcproxy", "-j", "2"])
        run(["cmake", "--install", cls.build, "--prefix", cls.prefix])
        pcs = glob.glob(os.path.join(cls.prefix, "**", "mcproxy.pc"), recursive=True)
        if len(pcs) != 1:
            raise AssertionError("expected one mcproxy.pc under %s, found %s" % (cls.prefix, pcs))
        cls.pcdir = os.path.dirname(pcs[0])
        cls.libdir = os.path.dirname(cls.pcdir)
        cls.env = dict(os.environ, PKG_CONFIG_PATH=cls.pcdir)
        cls.env.pop("MAKEFLAGS", None)
        cls.env.pop("MFLAGS", None)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- what lands in the prefix ----

    def test_installs_shared_static_headers_pkgconfig_and_cmake_package(self):
        so = os.path.join(self.libdir, "libmcproxy.so")
        self.assertTrue(os.path.islink(so), "libmcproxy.so is the development symlink")
        self.assertTrue(os.path.isfile(os.path.join(self.libdir, "libmcproxy.so." + self.version)))
        self.assertTrue(os.path.isfile(os.path.join(self.libdir, "libmcproxy.a")))
        src_headers = sorted(os.path.basename(h) for h in
                             glob.glob(os.path.join(SOURCE_DIR, "include", "mcproxy", "*.h")))
        inst_headers = sorted(os.listdir(os.path.join(self.prefix, "include", "mcproxy")))
        self.assertEqual(src_headers, inst_headers)
        cmake_dir = os.path.join(self.libdir, "cmake", "mcproxy")
        for f in ("mcproxyConfig.cmake", "mcproxyConfigVersion.cmake", "mcproxyTargets.cmake"):
            self.assertTrue(os.path.isfile(os.path.join(cmake_dir, f)), f)

    def test_soname_is_versioned(self):
        out = run(["readelf", "-d", os.path.join(self.libdir, "libmcproxy.so")])
        m = re.search(r"Library soname: \[(libmcproxy\.so\.[0-9.]+)\]", out)
        self.assertIsNotNone(m, out)
        soname = m.group(1)
        self.assertTrue(self.version.startswith(soname[len("libmcproxy.so."):]),
                        "SONAME %s comes from version %s" % (soname, self.version))
        self.assertTrue(os.path.exists(os.path.join(self.libdir, soname)))

    def test_shared_library_exports_only_public_symbols(self):
        out = run(["nm", "-D", "--defined-only", os.path.join(self.libdir, "libmcproxy.so")])
        names = [line.split()[-1] for line in out.splitlines() if line.strip()]
        self.assertIn("mcp_listener_new", names)
        self.assertIn("mcp_version", names)
        stray = [n for n in names if not n.startswith("mcp_") or n.startswith("mcp__")]
        self.assertEqual(stray, [], "symbols exported besides the public mcp_ API")
        # The internals exist (the static archive has them) but stay hidden in the .so.
        archive = run(["nm", "--defined-only", os.path.join(self.libdir, "libmcproxy.a")])
        self.assertRegex(archive, r" T mcp__")

    def test_pkg_config_points_into_the_prefix(self):
        cflags = run(["pkg-config", "--cflags", "mcproxy"], env=self.env).split()
        libs = run(["pkg-config", "--libs", "mcproxy"], env=self.env).split()
        inc = [f[2:] for f in cflags if f.startswith("-I")]
        self.assertTrue(any(os.path.realpath(i) == os.path.realpath(
            os.path.join(self.prefix, "include")) for i in inc), cflags)
        ldirs = [f[2:] for f in libs if f.startswith("-L")]
        self.assertTrue(any(os.path.realpath(d) == os.path.realpath(self.libdir) for d in ldirs),
                        libs)
        self.assertIn("-lmcproxy", libs)
        modversion = run(["pkg-config", "--modversion", "mcproxy"], env=self.env).strip()
        self.assertEqual(modversion, self.version)

    # ---- the embedding example, built against the prefix ----

    def build_with_pkg_config(self, static):
        work = tempfile.mkdtemp(dir=self.tmp)
        for f in ("embed.c", "Makefile"):
            shutil.copy(os.path.join(EMBED_SRC, f), work)
        cmd = ["make", "-C", work, "CC=" + self.cc, "PKG_CONFIG_PATH=" + self.pcdir]
        if self.cflags:
            cmd += ["CFLAGS=-O1 -g " + self.cflags, "LDFLAGS=" + self.cflags]
        if static:
            cmd.append("STATIC=1")
        run(cmd, env=self.env)
        return os.path.join(work, "embed")

    def build_with_find_package(self, static):
        work = tempfile.mkdtemp(dir=self.tmp)
        cmd = ["cmake", "-S", EMBED_SRC, "-B", work, "-DCMAKE_PREFIX_PATH=" + self.prefix,
               "-DCMAKE_C_COMPILER=" + self.cc,
               "-DMCP_EMBED_STATIC=" + ("ON" if static else "OFF")]
        if self.cflags:
            cmd += ["-DCMAKE_C_FLAGS=" + self.cflags, "-DCMAKE_EXE_LINKER_FLAGS=" + self.cflags]
        run(cmd, env=self.env)
        run(["cmake", "--build", work, "-j", "2"], env=self.env)
        return os.path.join(work, "embed")

    def assert_links(self, exe, shared):
        out = run(["ldd", exe])
        if shared:
            m = re.search(r"libmcproxy\.so\.\S+ => (\S+)", out)
            self.assertIsNotNone(m, out)
            self.assertTrue(os.path.realpath(m.group(1)).startswith(os.path.realpath(self.prefix)),
                            "uses the installed libmcproxy, not another one: " + m.group(1))
        else:
            self.assertNotIn("libmcproxy", out)

    def exchange(self, s, payload):
        """Sends PAYLOAD and reads until as many bytes came back (the backends echo)."""
        s.sendall(payload)
        got = bytearray()
        deadline = time.monotonic() + IO_TIMEOUT
        while len(got) < len(payload):
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        self.assertEqual(bytes(got), payload)

    def run_scenario(self, exe):
        """Two listeners on one loop, a route changed from code while a connection relays."""
        b1 = RawBackend("echo")
        b2 = RawBackend("echo")
        emb = Embed(exe, b1.addr(), b2.addr(), self.env)
        socks = []
        try:
            m = emb.wait_line(r"^listening a=127\.0\.0\.1:(\d+) b=127\.0\.0\.1:(\d+)$")
            port_a, port_b = int(m.group(1)), int(m.group(2))
            self.assertNotEqual(port_a, port_b)

            # A connection through A relays to backend 1 and stays open across the switch.
            long_lived = connect("127.0.0.1", port_a)
            socks.append(long_lived)
            self.exchange(long_lived, client_hello("a.example") + b"before")
            self.assertNotIn("switched", emb.text(),
                             "the route changed before the first connection relayed")
            via_b = connect("127.0.0.1", port_b)
            socks.append(via_b)
            self.exchange(via_b, client_hello("b.example") + b"via b")
            self.assertEqual((b1.accepts, b2.accepts), (2, 0))

            emb.wait_line(r"^switched a\.example to " + re.escape(b2.addr()) + "$",
                          timeout=SWITCH_AFTER_MS / 1000 + IO_TIMEOUT)

            # The established connection keeps its backend; new ones on A go to backend 2,
            # and listener B, with its own table, is untouched.
            self.exchange(long_lived, b"after the switch")
            new_a = connect("127.0.0.1", port_a)
            socks.append(new_a)
            self.exchange(new_a, client_hello("a.example") + b"new a")
            new_b = connect("127.0.0.1", port_b)
            socks.append(new_b)
            self.exchange(new_b, client_hello("b.example") + b"new b")
            self.assertEqual((b1.accepts, b2.accepts), (3, 1))
            self.assertTrue(b1.received[0].endswith(b"beforeafter the switch"))

            for s in socks:
                s.close()
            socks = []
            wait_for(lambda: len(emb.conns()) == 4, IO_TIMEOUT, what="4 conn lines")
            conns = emb.conns()
            self.assertEqual({c["outcome"] for c in conns}, {"ok"}, conns)
            by = sorted((c["sni"], c["backend"]) for c in conns)
            self.assertEqual(by, sorted([("a.example", b1.addr()), ("a.example", b2.addr()),
                                         ("b.example", b1.addr()), ("b.example", b1.addr())]))
        finally:
            for s in socks:
                s.close()
            rc = emb.stop()
            b1.close()
            b2.close()
        self.assertEqual(rc, 0, "embed exit status; stdout:\n%s\nstderr:\n%s"
                         % (emb.text(), emb.stderr))
        self.assertIn("stopped", emb.text())
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, emb.stderr)

    def test_embed_built_with_pkg_config_runs(self):
        exe = self.build_with_pkg_config(static=False)
        self.assert_links(exe, shared=True)
        self.run_scenario(exe)

    def test_embed_built_with_find_package_runs(self):
        exe = self.build_with_find_package(static=False)
        self.assert_links(exe, shared=True)
        self.run_scenario(exe)

    def test_embed_linked_statically_with_find_package_runs(self):
        exe = self.build_with_find_package(static=True)
        self.assert_links(exe, shared=False)
        self.run_scenario(exe)


if __name__ == "__main__":
    unittest.main()
