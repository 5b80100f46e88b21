"""
mc-proxy as an operator installs it.

PackageTest builds the Debian packages the way `make deb` does (packaging/build-deb.sh: a
temporary copy of the source, packaging/debian as its debian/, `dpkg-buildpackage -us -uc -b`,
then lintian), unpacks every .deb with `dpkg -x` into one temporary root, and checks that the
files land where the systemd unit expects them, that the unpacked binary runs, that the library
package matches its SONAME, that lintian reports nothing that is not overridden with a reason,
that admin.proto and the licence are shipped, and what the postrm does on purge: it runs the
packaged postrm with DPKG_ROOT pointing at a temporary directory and the account and systemd
commands replaced by logging stubs, so nothing on this machine changes. The build compiles the
project once, without tests (DEB_BUILD_OPTIONS=nocheck): about two minutes on two cores.

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
# Commands the maintainer scripts may run that must not touch this machine in the purge test:
# each is replaced by a stub that logs its arguments (getent answers that mc-proxy exists).
STUBBED = ("getent", "deluser", "delgroup", "userdel", "groupdel", "adduser", "useradd",
           "deb-systemd-helper", "deb-systemd-invoke", "systemctl", "invoke-rc.d")


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
        cls.out = os.path.join(cls.tmp, "out")
        # What `make deb` runs, without the unit tests (the suite runs them itself).
        env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2")
        p = subprocess.run([os.path.join(SOURCE_DIR, "packaging", "build-deb.sh"), cls.out],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=BUILD_TIMEOUT)
        cls.build_log = p.stdout
        cls.build_rc = p.returncode
        cls.debs = {os.path.basename(d).split("_")[0]: d
                    for d in glob.glob(os.path.join(cls.out, "*.deb"))}
        if not cls.debs:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise AssertionError("packaging/build-deb.sh built nothing (%d):\n%s"
                                 % (p.returncode, p.stdout[-12000:]))
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
        # A hitless reload (test_reload.py), announced over the notify protocol (test_notify.py).
        self.assertEqual(svc["Type"], ["notify"])
        self.assertEqual(svc["ExecReload"], ["/usr/bin/mc-proxy reload -c /srv/mc-proxy/mc-proxy.ini"])
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
        # An upgrade reloads the proxy instead of restarting it.
        self.assertIn("deb-systemd-invoke try-reload-or-restart mc-proxy.service", postinst)
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

    def test_make_deb_runs_the_build_script_and_leaves_the_checkout_alone(self):
        out = run(["make", "-n", "-C", SOURCE_DIR, "deb"])
        self.assertIn("packaging/build-deb.sh", out)
        self.assertFalse(os.path.lexists(os.path.join(SOURCE_DIR, "debian")),
                         "the build works on a copy: no debian/ in the checkout")

    def test_lintian_is_clean(self):
        if not shutil.which("lintian"):
            self.skipTest("lintian is not installed (Debian package lintian)")
        self.assertEqual(self.build_rc, 0, self.build_log[-12000:])
        with open(os.path.join(self.out, "lintian.txt")) as f:
            report = f.read()
        # Errors, warnings and informational tags alike; an accepted tag has an override
        # with its reason in packaging/debian/*.lintian-overrides.
        tags = [l for l in report.splitlines() if re.match(r"^[EWIX]: ", l)]
        self.assertEqual(tags, [], report)
        self.assertIn("lintian: no errors or warnings", self.build_log)

    def test_admin_proto_is_shipped(self):
        shipped = self.path("/usr/share/mc-proxy/admin.proto")
        self.assertTrue(os.path.isfile(shipped))
        with open(shipped, "rb") as f, \
                open(os.path.join(SOURCE_DIR, "proto", "mc_proxy", "v1", "admin.proto"),
                     "rb") as g:
            self.assertEqual(f.read(), g.read())

    def test_copyright_states_the_proprietary_licence(self):
        with open(os.path.join(SOURCE_DIR, "LICENSE")) as f:
            licence = f.read()
        self.assertIn("Copyright (c) 2026 Metacircular Dynamics. All rights reserved.", licence)
        self.assertIn("proprietary", licence)
        for pkg in ("mc-proxy", "libmcproxy0.1", "libmcproxy-dev"):
            with open(self.path("/usr/share/doc/%s/copyright" % pkg)) as f:
                text = f.read()
            self.assertNotIn("UNDECIDED", text, pkg)
            self.assertRegex(text, r"(?m)^Copyright: 2026 Metacircular Dynamics$", pkg)
            self.assertRegex(text, r"(?m)^License: proprietary$", pkg)
            self.assertIn("Metacircular Dynamics. All rights reserved.", text, pkg)


    # ---- the postrm, run against a temporary root ----

    def run_postrm(self, action, files):
        """Runs the packaged postrm ACTION with DPKG_ROOT=a temporary root holding FILES
        (paths under /srv/mc-proxy; a name ending in / is a directory). Returns (root, the
        stubbed commands it ran, its stderr)."""
        work = tempfile.mkdtemp(dir=self.tmp)
        ctl = os.path.join(work, "ctl")
        run(["dpkg", "-e", self.debs["mc-proxy"], ctl])
        stubs = os.path.join(work, "stubs")
        os.mkdir(stubs)
        log = os.path.join(work, "calls.log")
        for name in STUBBED:
            with open(os.path.join(stubs, name), "w") as f:
                f.write('#!/bin/sh\necho "%s $*" >> %s\n' % (name, log))
                if name == "getent":
                    f.write('[ "$2" = mc-proxy ] && echo "mc-proxy:x:999:999::/srv/mc-proxy:'
                            '/usr/sbin/nologin"\n')
                f.write("exit 0\n")
            os.chmod(os.path.join(stubs, name), 0o755)
        root = os.path.join(work, "root")
        state = os.path.join(root, "srv", "mc-proxy")
        os.makedirs(state)
        for name in files:
            path = os.path.join(state, name)
            if name.endswith("/"):
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write("data\n")
        env = dict(os.environ, DPKG_ROOT=root, PATH=stubs + ":" + os.environ["PATH"],
                   DPKG_MAINTSCRIPT_PACKAGE="mc-proxy", DPKG_MAINTSCRIPT_NAME="postrm")
        p = subprocess.run(["sh", os.path.join(ctl, "postrm"), action], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        calls = []
        if os.path.exists(log):
            with open(log) as f:
                calls = f.read().splitlines()
        return state, calls, p.stderr

    def test_purge_removes_what_postinst_created_and_the_account(self):
        state, calls, _ = self.run_postrm(
            "purge", ["mc-proxy.ini", "admin.sock", "backups/"])
        self.assertFalse(os.path.exists(state), "config, socket and empty dirs are gone")
        self.assertTrue(os.path.isdir(os.path.dirname(state)), "/srv itself stays")
        self.assertIn("deluser --quiet --system mc-proxy", calls)
        self.assertIn("delgroup --quiet --system mc-proxy", calls)

    def test_purge_keeps_the_sites_data_and_the_account_that_owns_it(self):
        state, calls, err = self.run_postrm(
            "purge", ["mc-proxy.ini", "mc-proxy.db", "mc-proxy.db-wal", "backups/snap.db"])
        self.assertFalse(os.path.exists(os.path.join(state, "mc-proxy.ini")))
        for kept in ("mc-proxy.db", "mc-proxy.db-wal", "backups/snap.db"):
            self.assertTrue(os.path.isfile(os.path.join(state, kept)), kept)
        self.assertEqual([c for c in calls if c.split()[0] in ("deluser", "delgroup", "userdel",
                                                              "groupdel")], [])
        self.assertIn("purge kept", err)

    def test_remove_without_purge_changes_nothing(self):
        state, calls, _ = self.run_postrm("remove", ["mc-proxy.ini", "backups/"])
        self.assertTrue(os.path.isfile(os.path.join(state, "mc-proxy.ini")))
        self.assertTrue(os.path.isdir(os.path.join(state, "backups")))
        self.assertEqual([c for c in calls if c.split()[0] in ("deluser", "delgroup")], [])


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
        self.assertTrue(os.path.isfile(os.path.join(self.root,
                                                    "usr/local/share/mc-proxy/admin.proto")))
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
