"""
libmcproxy as a C++ developer gets it: `cmake --install` into a temporary prefix, then
test/cxx/consumer.cpp (which includes every public header and calls one function declared in
each) built with g++ against that prefix through pkg-config and through find_package(mcproxy),
and run.

The guards are what make it link: the test also strips the extern "C" lines from one installed
header at a time and checks that the same program then fails to link with an undefined,
C++-mangled reference, so a header that loses its guards (or a new header without them) fails
here. Every header must also state the SIGPIPE rule.

Needs MCP_BUILD_DIR (set by ctest): a configured and built tree whose libmcproxy.so exists.
"""

import glob
import os
import re
import shutil
import tempfile
import unittest

from test_install import build_dir, cmake_cache, run
from mcp import SOURCE_DIR

CXX_SRC = os.path.join(SOURCE_DIR, "test", "cxx")
OPEN_GUARD = re.compile(r'#ifdef __cplusplus\nextern "C" \{\n#endif\n')
CLOSE_GUARD = re.compile(r'#ifdef __cplusplus\n\}\n#endif\n')


class CxxConsumerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.build = build_dir()
        cache = cmake_cache(cls.build)
        sanitize = cache.get("MCP_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE", "YES")
        cls.sanflags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] \
            if sanitize else []
        cls.cxx = shutil.which("g++")
        if not cls.cxx:
            raise unittest.SkipTest("g++ is not installed (Debian package g++ via build-essential)")
        cls.tmp = tempfile.mkdtemp(prefix="mcp-cxx-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        run(["cmake", "--build", cls.build, "--target", "mcproxy_shared", "mcproxy", "-j", "2"])
        run(["cmake", "--install", cls.build, "--prefix", cls.prefix])
        pcs = glob.glob(os.path.join(cls.prefix, "**", "mcproxy.pc"), recursive=True)
        if len(pcs) != 1:
            raise AssertionError("expected one mcproxy.pc under %s, found %s" % (cls.prefix, pcs))
        cls.pcdir = os.path.dirname(pcs[0])
        cls.libdir = os.path.dirname(cls.pcdir)
        cls.incdir = os.path.join(cls.prefix, "include", "mcproxy")
        cls.env = dict(os.environ, PKG_CONFIG_PATH=cls.pcdir)
        for v in ("MAKEFLAGS", "MFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS"):
            cls.env.pop(v, None)
        cls.cflags = run(["pkg-config", "--cflags", "mcproxy"], env=cls.env).split()
        cls.libs = run(["pkg-config", "--libs", "mcproxy"], env=cls.env).split()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def headers(self):
        hs = sorted(glob.glob(os.path.join(self.incdir, "*.h")))
        self.assertEqual(sorted(os.path.basename(h) for h in hs),
                         sorted(os.path.basename(h) for h in
                                glob.glob(os.path.join(SOURCE_DIR, "include", "mcproxy", "*.h"))))
        return hs

    def gxx(self, out, include_first=None):
        """g++ command line for consumer.cpp via pkg-config; INCLUDE_FIRST shadows the prefix."""
        cmd = [self.cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1", "-g"]
        cmd += self.sanflags
        if include_first:
            cmd.append("-I" + include_first)
        cmd += self.cflags + ["-o", out, os.path.join(CXX_SRC, "consumer.cpp")]
        cmd += self.sanflags + self.libs + ["-Wl,-rpath," + self.libdir]
        return cmd

    def run_consumer(self, exe):
        db = os.path.join(tempfile.mkdtemp(dir=self.tmp), "consumer.db")
        out = run([exe, db], timeout=30, env=self.env)
        self.assertTrue(out.rstrip("\n").endswith("ok"), out)
        self.assertTrue(os.path.isfile(db), "the store created its database")
        ldd = run(["ldd", exe])
        m = re.search(r"libmcproxy\.so\.\S+ => (\S+)", ldd)
        self.assertIsNotNone(m, ldd)
        self.assertTrue(os.path.realpath(m.group(1)).startswith(os.path.realpath(self.prefix)),
                        "uses the installed libmcproxy: " + m.group(1))

    def test_every_public_header_has_guards_and_states_the_sigpipe_rule(self):
        for h in self.headers():
            with open(h) as f:
                text = f.read()
            name = os.path.basename(h)
            self.assertEqual(len(OPEN_GUARD.findall(text)), 1, name + ": opening extern \"C\"")
            self.assertEqual(len(CLOSE_GUARD.findall(text)), 1, name + ": closing extern \"C\"")
            self.assertIn("SIGPIPE", text, name + " states the SIGPIPE rule")
            self.assertIn("never installs a signal handler", text, name)

    def test_builds_with_gxx_and_pkg_config_and_runs(self):
        exe = os.path.join(self.tmp, "consumer-pc")
        run(self.gxx(exe), env=self.env)
        self.run_consumer(exe)

    def test_builds_with_find_package_and_runs(self):
        work = os.path.join(self.tmp, "cmake-build")
        cmd = ["cmake", "-S", CXX_SRC, "-B", work, "-DCMAKE_PREFIX_PATH=" + self.prefix,
               "-DCMAKE_CXX_COMPILER=" + self.cxx]
        if self.sanflags:
            cmd += ["-DCMAKE_CXX_FLAGS=" + " ".join(self.sanflags),
                    "-DCMAKE_EXE_LINKER_FLAGS=" + " ".join(self.sanflags)]
        run(cmd, env=self.env)
        run(["cmake", "--build", work, "-j", "2"], env=self.env)
        self.run_consumer(os.path.join(work, "consumer"))

    def test_a_header_without_guards_breaks_the_link(self):
        # The program calls a function from every header: removing any one header's guards
        # must turn that call into an undefined C++ symbol.
        for h in self.headers():
            name = os.path.basename(h)
            with self.subTest(header=name):
                shadow = tempfile.mkdtemp(dir=self.tmp)
                shutil.copytree(self.incdir, os.path.join(shadow, "mcproxy"))
                path = os.path.join(shadow, "mcproxy", name)
                with open(path) as f:
                    text = f.read()
                stripped = CLOSE_GUARD.sub("", OPEN_GUARD.sub("", text))
                self.assertNotEqual(stripped, text, name + " has guards to strip")
                with open(path, "w") as f:
                    f.write(stripped)
                exe = os.path.join(shadow, "consumer")
                with self.assertRaises(AssertionError) as ctx:
                    run(self.gxx(exe, include_first=shadow), env=self.env)
                self.assertRegex(str(ctx.exception), r"undefined reference to `mcp_\w+\(",
                                 "a mangled (C++) reference to a libmcproxy function")


if __name__ == "__main__":
    unittest.main()
