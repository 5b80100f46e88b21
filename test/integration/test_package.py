"""
mc-proxy as an operator installs it.

PackageTest builds the Debian packages from a copy of the source tree with
`dpkg-buildpackage -us -uc -b` (packaging/debian becomes debian/), unpacks every .deb with
`dpkg -x` into one temporary root, and checks that the files land where the systemd unit
expects them, that the unpacked binary runs, that the library package matches its SONAME,
and (when lintian is installed) that lintian reports no errors. The build compiles the project
once, without tests (DEB_BUILD_OPTIONS=nocheck): about two minutes on two cores.

InstallScriptTest runs packaging/install.sh into a temporary root twice: it must be
idempotent and must never overwrite an existing config.
"""

import configparser
import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from mcp import SOURCE_DIR, binary

BUILD_TIMEOUT = 900
# Top-level entries of the checkout that are not part of the source.
NOT_SOURCE = re.compile(r"^(\.git|build.*|obj-.*|debian|srv|fuzz-out|\..*cache)$")


def unit_file(path):
    """A systemd unit as {section: {key: [values]}} (keys may repeat)."""
    out = {}
    section = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^\[(\w+)\]$", line)
            if m:
                section = out.setdefault(m.group(1), {})
                continue
            k, _, v = line.partition("=")
            section.setdefault(k, []).append(v)
    return out


def run(cmd, timeout=120, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, **kw)
    if p.returncode != 0:
        raise AssertionError("%s exited %d:\n%s" % (" ".join(cmd), p.returncode, p.stdout[-8000:]))
    return p.stdout


class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        missing = [t for t in ("dpkg-buildpackage", "dh", "dh_auto_configure", "fakeroot")
                   if not shutil.which(t)]
        if missing:
            raise unittest.SkipTest(
                "cannot build .debs: %s not installed (Debian packages dpkg-dev, debhelper, "
                "fakeroot; `make deps` installs them)" % ", ".join(missing))
        cls.tmp = tempfile.mkdtemp(prefix="mcp-deb-")
        src = os.path.join(cls.tmp, "mc-proxy")
        os.mkdir(src)
        for name in os.listdir(SOURCE_DIR):
            if NOT_SOURCE.match(name):
                continue
            s = os.path.join(SOURCE_DIR, name)
            if os.path.isdir(s):
                shutil.copytree(s, os.path.join(src, name), symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(s, src)
        shutil.copytree(os.path.join(src, "packaging", "debian"), os.path.join(src, "debian"))
        env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2")
        for v in ("MAKEFLAGS", "MFLAGS", "CFLAGS", "LDFLAGS"):
            env.pop(v, None)
        p = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=BUILD_TIMEOUT)
        cls.build_log = p.stdout
        if p.returncode != 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise AssertionError("dpkg-buildpackage failed (%d):\n%s"
                                 % (p.returncode, p.stdout[-12000:]))
        cls.debs = {os.path.basename(d).split("_")[0]: d
                    for d in glob.glob(os.path.join(cls.tmp, "*.deb"))}
        cls.root = os.path.join(cls.tmp, "root")
        for d in cls.debs.values():
            run(["dpkg", "-x", d, cls.root])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    def test_builds_the_three_packages(self):
        self.assertEqual(sorted(n for n in self.debs if not n.endswith("-dbgsym")),
                         ["libmcproxy-dev", "libmcproxy0.1", "mc-proxy"])

    def test_unit_runs_the_packaged_binary_with_the_documented_paths(self):
        unit = unit_file(self.path("/lib/systemd/system/mc-proxy.service"))
        svc = unit["Service"]
        start = svc["ExecStart"][0].split()
        self.assertEqual(start, ["/usr/bin/mc-proxy", "server", "-c",
                                 "/srv/mc-proxy/mc-proxy.ini"])
        exe = self.path(start[0])
        self.assertTrue(os.access(exe, os.X_OK), "ExecStart binary is in the package")
        self.assertIn("mc-proxy", run([exe, "version"]))
        self.assertEqual(svc["User"], ["mc-proxy"])
        self.assertEqual(svc["AmbientCapabilities"], ["CAP_NET_BIND_SERVICE"])
        self.assertEqual(svc["CapabilityBoundingSet"], ["CAP_NET_BIND_SERVICE"])
        self.assertEqual(svc["ProtectSystem"], ["strict"])
        self.assertEqual(svc["ReadWritePaths"], ["/srv/mc-proxy"])
        self.assertEqual(svc["PrivateTmp"], ["yes"])
        self.assertEqual(svc["NoNewPrivileges"], ["yes"])
        self.assertEqual(svc["Restart"], ["on-failure"])
        self.assertGreaterEqual(int(svc["LimitNOFILE"][0]), 65536)
        self.assertEqual(svc["ExecReload"], ["/bin/kill -HUP $MAINPID"])
        for exec_line in svc.get("ExecStartPre", []):
            self.assertTrue(os.access(self.path(exec_line.split()[0]), os.X_OK), exec_line)

    def test_snapshot_timer_runs_the_snapshot_command(self):
        timer = unit_file(self.path("/lib/systemd/system/mc-proxy-snapshot.timer"))
        self.assertIn("OnCalendar", timer["Timer"])
        svc = unit_file(self.path("/lib/systemd/system/mc-proxy-snapshot.service"))["Service"]
        start = svc["ExecStart"][0].split()
        self.assertEqual(start[:2], ["/usr/bin/mc-proxy", "snapshot"])
        self.assertEqual(start[2:], ["-c", "/srv/mc-proxy/mc-proxy.ini"])
        self.assertEqual(svc["User"], ["mc-proxy"])
        self.assertEqual(svc["ReadWritePaths"], ["/srv/mc-proxy"])

    def test_postinst_creates_the_user_state_dir_and_config_the_unit_uses(self):
        ctl = os.path.join(self.tmp, "ctl")
        run(["dpkg", "-e", self.debs["mc-proxy"], ctl])
        with open(os.path.join(ctl, "postinst")) as f:
            postinst = f.read()
        self.assertRegex(postinst, r"adduser --system .*mc-proxy|useradd .*mc-proxy")
        self.assertIn("/srv/mc-proxy", postinst)
        # The config it installs comes from the package, and names state inside /srv/mc-proxy.
        m = re.search(r"install .* (/usr/share/mc-proxy/\S+)\s+\\?\s*/srv/mc-proxy/mc-proxy.ini",
                      postinst)
        self.assertIsNotNone(m, postinst)
        example = self.path(m.group(1))
        self.assertTrue(os.path.isfile(example))
        with open(example) as f:
            self.assertIn("path = /srv/mc-proxy/mc-proxy.db", f.read())
        # dh_installsystemd enabled the proxy and the timer, not the one-shot service.
        self.assertIn("mc-proxy.service", postinst)
        self.assertIn("mc-proxy-snapshot.timer", postinst)
        # The example config is valid for the packaged binary (paths moved to a temp dir).
        cfg = os.path.join(self.tmp, "example.ini")
        with open(example) as f, open(cfg, "w") as g:
            g.write(f.read().replace("/srv/mc-proxy", os.path.join(self.tmp, "srv")))
        os.makedirs(os.path.join(self.tmp, "srv"), exist_ok=True)
        run([self.path("/usr/bin/mc-proxy"), "check", "-c", cfg])

    def test_nothing_is_shipped_under_srv(self):
        self.assertFalse(os.path.exists(self.path("/srv")), "/srv belongs to the site")

    def test_man_pages_and_docs_are_installed(self):
        for p in ("/usr/share/man/man1/mc-proxy.1.gz", "/usr/share/man/man5/mc-proxy.ini.5.gz",
                  "/usr/share/doc/mc-proxy/RUNBOOK.md", "/usr/share/doc/mc-proxy/SCALING.md"):
            self.assertTrue(os.path.isfile(self.path(p)) or os.path.isfile(self.path(p) + ".gz"),
                            p)

    def test_library_packages_match_the_soname(self):
        libs = glob.glob(self.path("/usr/lib/*/libmcproxy.so.*.*.*"))
        self.assertEqual(len(libs), 1, libs)
        out = run(["readelf", "-d", libs[0]])
        soname = re.search(r"Library soname: \[libmcproxy\.so\.([0-9.]+)\]", out).group(1)
        self.assertIn("libmcproxy" + soname, self.debs)
        contents = run(["dpkg", "-c", self.debs["libmcproxy-dev"]])
        for f in ("/usr/include/mcproxy/listener.h", "/libmcproxy.a", "/libmcproxy.so ->",
                  "/pkgconfig/mcproxy.pc", "/cmake/mcproxy/mcproxyConfig.cmake"):
            self.assertIn(f, contents)
        # The installed .pc names the real prefix, not the build machine's staging directory.
        pcs = glob.glob(self.path("/usr/lib/*/pkgconfig/mcproxy.pc"))
        self.assertEqual(len(pcs), 1, pcs)
        with open(pcs[0]) as f:
            self.assertIn("prefix=/usr\n", f.read())

    def test_lintian_reports_no_errors(self):
        if not shutil.which("lintian"):
            self.skipTest("lintian is not installed (Debian package lintian)")
        changes = glob.glob(os.path.join(self.tmp, "*.changes"))
        self.assertEqual(len(changes), 1)
        p = subprocess.run(["lintian", "--no-tag-display-limit", changes[0]],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=300)
        errors = [l for l in p.stdout.splitlines() if l.startswith("E:")]
        self.assertEqual(errors, [], p.stdout)


class InstallScriptTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="mcp-installsh-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.script = os.path.join(SOURCE_DIR, "packaging", "install.sh")

    def install(self):
        return run(["sh", self.script, "--binary", binary(), "--root", self.root, "--no-user"])

    def test_installs_binary_units_and_config_where_the_unit_expects_them(self):
        self.install()
        unit = unit_file(os.path.join(self.root, "etc/systemd/system/mc-proxy.service"))
        start = unit["Service"]["ExecStart"][0].split()
        self.assertTrue(os.access(os.path.join(self.root, start[0].lstrip("/")), os.X_OK))
        self.assertTrue(os.path.isfile(os.path.join(self.root, start[3].lstrip("/"))))
        for u in ("mc-proxy-snapshot.service", "mc-proxy-snapshot.timer"):
            self.assertTrue(os.path.isfile(os.path.join(self.root, "etc/systemd/system", u)))
        self.assertTrue(os.path.isdir(os.path.join(self.root, "srv/mc-proxy/backups")))
        self.assertEqual(os.stat(os.path.join(self.root, "srv/mc-proxy")).st_mode & 0o777, 0o750)

    def test_is_idempotent_and_never_overwrites_a_config(self):
        self.install()
        cfg = os.path.join(self.root, "srv/mc-proxy/mc-proxy.ini")
        with open(cfg, "a") as f:
            f.write("; edited by the operator\n")
        out = self.install()
        self.assertIn("kept the existing", out)
        with open(cfg) as f:
            self.assertTrue(f.read().endswith("; edited by the operator\n"))
        self.assertTrue(os.path.isfile(cfg + ".example"))
        self.install()

    def test_refuses_a_missing_binary(self):
        p = subprocess.run(["sh", self.script, "--binary", os.path.join(self.root, "nope"),
                            "--root", self.root, "--no-user"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertFalse(os.path.exists(os.path.join(self.root, "usr/bin/mc-proxy")))


if __name__ == "__main__":
    unittest.main()
