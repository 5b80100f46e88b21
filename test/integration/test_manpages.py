"""
The man pages stay true to the program:
  - mc-proxy.ini(5) lists exactly the keys the config parser accepts, each under its section.
    The parser's keys are read from cli/config.c (its key table and the name comparisons of
    the repeatable keys), and each is then confirmed against `mc-proxy check`: a key from
    either side that the binary calls unknown fails the test.
  - mc-proxy(1) names every command, subcommand and option that `mc-proxy --help` and
    `mc-proxy COMMAND --help` print.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from mcp import SOURCE_DIR, binary

MAN1 = os.path.join(SOURCE_DIR, "docs", "man", "mc-proxy.1")
MAN5 = os.path.join(SOURCE_DIR, "docs", "man", "mc-proxy.ini.5")
CONFIG_C = os.path.join(SOURCE_DIR, "cli", "config.c")


def roff_text(path):
    """The page's text with roff hyphens and font escapes reduced to plain characters."""
    with open(path) as f:
        text = f.read()
    text = text.replace("\\-", "-").replace("\\(dq", '"')
    return re.sub(r"\\f[BIRP]", "", text)


def function_body(src, name):
    """The text of C function NAME in SRC, from its signature to the closing brace."""
    m = re.search(r"^static int %s\(.*?^\}" % re.escape(name), src, re.S | re.M)
    if not m:
        raise AssertionError("cli/config.c has no function %s() any more: update this test"
                             % name)
    return m.group(0)


def parser_keys():
    """(section, key) pairs the parser accepts, read from cli/config.c."""
    with open(CONFIG_C) as f:
        src = f.read()
    keys = set()
    # Single-valued keys: the key table, "[K_X] = {SEC_SECTION, "name", ...}".
    for sec, key in re.findall(r"\[K_\w+\]\s*=\s*\{\s*SEC_(\w+)\s*,\s*\"(\w+)\"", src):
        keys.add((sec.lower(), key))
    # Listener keys: every name compared in listener_key().
    for key in re.findall(r"strcmp\(name, \"(\w+)\"\)", function_body(src, "listener_key")):
        keys.add(("listener", key))
    # Repeatable keys of global sections: on_key() compares the name inside
    # "if (ld->sec == SEC_X) { ... }" blocks.
    body = function_body(src, "on_key")
    for sec, block in re.findall(r"if \(ld->sec == SEC_(\w+)\) \{(.*?)\n  \}", body, re.S):
        for key in re.findall(r"strcmp\(name, \"(\w+)\"\)", block):
            keys.add((sec.lower(), key))
    return keys


def page_keys():
    """(section, key) pairs documented in mc-proxy.ini.5: ".TP" then ".B key = ..."."""
    keys = set()
    section = None
    lines = roff_text(MAN5).splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'^\.SS \[(\w+)', line)
        if m:
            section = m.group(1)
            continue
        if line.startswith(".SH"):
            section = None
        if section and line == ".TP" and i + 1 < len(lines):
            m = re.match(r"^\.B (\w+) =", lines[i + 1])
            if m:
                keys.add((section, m.group(1)))
    return keys


class IniPageTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mcp-man-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def check_key(self, section, key):
        """Runs `mc-proxy check` on a config holding KEY in SECTION; returns its stderr."""
        path = os.path.join(self.dir, "c.ini")
        body = ["[database]", "path = %s" % os.path.join(self.dir, "db")]
        header = '[listener "127.0.0.1:1"]' if section == "listener" else "[%s]" % section
        if section != "database":
            body.append(header)
        # "1" is a value of the wrong shape for most keys: the parser then names the problem
        # with the key, which is all this check needs; only "unknown key" means it is not a key.
        body.append("%s = 1" % key)
        with open(path, "w") as f:
            f.write("\n".join(body) + "\n")
        p = subprocess.run([binary(), "check", "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        return p.stdout + p.stderr

    def test_the_check_tells_an_unknown_key(self):
        # Without this the checks below could not fail.
        self.assertIn("unknown key", self.check_key("proxy", "no_such_key"))
        self.assertIn("unknown key", self.check_key("listener", "no_such_key"))

    def test_parser_keys_are_found_in_the_source(self):
        keys = parser_keys()
        sections = {s for s, _ in keys}
        self.assertEqual(sections, {"database", "proxy", "grpc", "firewall", "listener", "cluster"}, keys)
        for section, key in sorted(keys):
            with self.subTest(section=section, key=key):
                out = self.check_key(section, key)
                self.assertNotIn("unknown key", out)
                self.assertNotIn("unknown section", out)

    def test_every_parser_key_is_documented(self):
        missing = sorted(parser_keys() - page_keys())
        self.assertEqual(missing, [], "keys the parser accepts but mc-proxy.ini.5 lacks")

    def test_every_documented_key_is_accepted(self):
        extra = sorted(page_keys() - parser_keys())
        self.assertEqual(extra, [], "keys in mc-proxy.ini.5 that the parser does not accept")
        for section, key in sorted(page_keys()):
            with self.subTest(section=section, key=key):
                self.assertNotIn("unknown key", self.check_key(section, key))


def help_text(*args):
    p = subprocess.run([binary()] + list(args) + ["--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError("mc-proxy %s --help exited %d:\n%s"
                             % (" ".join(args), p.returncode, p.stdout))
    return p.stdout


def commands_from_usage(text):
    """Command names listed under "Commands:" in `mc-proxy --help`."""
    out = []
    in_list = False
    for line in text.splitlines():
        if line.startswith("Commands:"):
            in_list = True
            continue
        if in_list:
            m = re.match(r"^  (\w[\w-]*)", line)
            if m:
                out.append(m.group(1))
            elif not line.strip():
                break
    return out


def options_from_help(text):
    """Every -x and --long option named in the option list of a --help text."""
    opts = set()
    for line in text.splitlines():
        m = re.match(r"^\s+(-\w)?(?:, )?\s*(--[\w-]+)?", line)
        if m and (m.group(1) or m.group(2)):
            opts.update(o for o in m.groups() if o)
    return opts


def subcommands_from_help(cmd, text):
    """The "mc-proxy CMD SUB" forms of the usage lines (SUB may be "add|remove")."""
    subs = set()
    for m in re.finditer(r"mc-proxy %s ([a-z][\w|-]*)" % re.escape(cmd), text):
        for sub in m.group(1).split("|"):
            if not sub.startswith("-"):
                subs.add(sub)
    return subs


class CommandPageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.page = roff_text(MAN1)
        cls.usage = help_text()
        cls.commands = commands_from_usage(cls.usage)

    def test_usage_lists_the_commands(self):
        # Guards the parsing below: an empty list would make every other test pass.
        for c in ("server", "check", "snapshot", "status", "routes", "firewall", "listener",
                  "version"):
            self.assertIn(c, self.commands)

    def test_every_command_has_a_section(self):
        headings = re.findall(r"^\.SS \"?([\w-]+)", self.page, re.M)
        for c in self.commands:
            with self.subTest(command=c):
                self.assertIn(c, headings, "mc-proxy.1 has no .SS section for '%s'" % c)

    def test_every_subcommand_is_in_the_synopsis_and_described(self):
        synopsis = self.page.split(".SH DESCRIPTION")[0]
        commands_part = self.page.split(".SH COMMANDS")[1]
        for c in self.commands:
            if c == "version":
                continue
            subs = subcommands_from_help(c, help_text(c))
            for sub in subs:
                with self.subTest(command=c, sub=sub):
                    self.assertRegex(synopsis, r"\.B mc-proxy %s %s\b" % (c, re.escape(sub)))
                    self.assertRegex(commands_part, r"\.SS \"%s [^\n]*\b%s\b" % (c, re.escape(sub)))

    def test_every_option_is_documented(self):
        for c in self.commands:
            if c == "version":
                continue
            opts = options_from_help(help_text(c))
            self.assertIn("--help", opts, "could not read the options of '%s --help'" % c)
            for o in sorted(opts):
                with self.subTest(command=c, option=o):
                    self.assertRegex(self.page, r"(?<![\w-])%s(?![\w-])" % re.escape(o))


if __name__ == "__main__":
    unittest.main()
