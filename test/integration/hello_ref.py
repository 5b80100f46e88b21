"""
A strict reference reading of a TLS ClientHello, and a generator of hellos to test with.

Written from the TLS and SNI RFCs (record layer, handshake framing, ClientHello, extensions,
server_name) and the hostname rule of mc-proxy's configuration, independently of lib/sni.c: it
shares no code or structure with it, so that a differential test of the two means something.

judge(data) reads DATA as everything a client sends before closing its side, and answers
  ("accept", hostname)  a complete, well-formed hello whose one host_name is a valid hostname
                        (lowercase, without a trailing dot);
  ("accept", None)      a complete, well-formed hello without a server_name extension;
  ("reject", reason)    anything else (reason names the first rule broken, or "incomplete").

Rules (what a reader must refuse, so that a proxy and a backend never read one hello two ways):
  - records before the hello is complete are handshake records (22) of major version 3, with
    a fragment of 1..2^14 bytes; the minor version byte is not judged;
  - the handshake message is a ClientHello (1) of at most 16384 bytes with its 4-byte header,
    and the record that completes it ends exactly where it ends;
  - legacy_version is not judged; session id at most 32 bytes; cipher suites a non-empty even
    count of bytes; at least one compression method; every vector inside its container and
    the extensions block filling the rest of the hello exactly (or absent altogether);
  - no extension type twice; server_name holds exactly one entry, of type host_name, and that
    list and entry fill the extension exactly; the name is a hostname: 1..253 bytes after one
    trailing dot is dropped, labels of 1..63 letters, digits and hyphens, never beginning or
    ending with a hyphen;
  - mc-proxy's own cap: the raw records up to the end of the hello fit in 16384 + 2048 bytes.
Whatever follows the hello's last record is not looked at.
"""

import random
import re
import struct

HANDSHAKE_CAP = 16384
RAW_CAP = 16384 + 2048
LABEL = re.compile(rb"\A[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


class Refused(Exception):
    pass


def valid_hostname(name):
    """NAME (bytes) as the normalised str if it is a hostname, else None."""
    if name.endswith(b"."):
        name = name[:-1]
    if not 1 <= len(name) <= 253:
        return None
    if not all(LABEL.match(label) for label in name.split(b".")):
        return None
    return name.decode("ascii").lower()


class Reader:
    """A cursor over one bounded structure; every read is checked against what remains."""

    def __init__(self, data):
        self.data = data
        self.at = 0

    def left(self):
        return len(self.data) - self.at

    def take(self, n, what):
        if n > self.left():
            raise Refused(what + " overruns its container")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def number(self, width, what):
        return int.from_bytes(self.take(width, what), "big")

    def vector(self, width, what, lo=0, hi=None):
        n = self.number(width, what + " length")
        if n < lo or (hi is not None and n > hi):
            raise Refused("%s length %d outside %d..%s" % (what, n, lo, hi))
        return self.take(n, what)

    def end(self, what):
        if self.left():
            raise Refused("%d bytes left over after %s" % (self.left(), what))


def gather_handshake(data):
    """The ClientHello message (header included) reassembled from the records in DATA."""
    at = 0
    message = b""
    while True:
        if len(data) - at < 5:
            raise Refused("incomplete")
        ctype, major, _minor, size = struct.unpack("!BBBH", data[at:at + 5])
        if ctype != 22:
            raise Refused("record of type %d before the hello is complete" % ctype)
        if major != 3:
            raise Refused("record major version %d" % major)
        if size == 0 or size > 16384:
            raise Refused("record length %d" % size)
        if at + 5 + size > RAW_CAP:
            raise Refused("records over the raw cap")
        if len(data) - at - 5 < size:
            raise Refused("incomplete")
        message += data[at + 5:at + 5 + size]
        at += 5 + size
        if len(message) >= 4:
            if message[0] != 1:
                raise Refused("handshake type %d is not a ClientHello" % message[0])
            want = 4 + int.from_bytes(message[1:4], "big")
            if want > HANDSHAKE_CAP:
                raise Refused("hello over the handshake cap")
            if len(message) > want:
                raise Refused("bytes after the hello in its last record")
            if len(message) == want:
                return message


def read_server_name(body):
    r = Reader(body)
    names = Reader(r.vector(2, "server_name list", lo=1))
    r.end("server_name list")
    kind = names.number(1, "name_type")
    if kind != 0:
        raise Refused("server_name entry of type %d" % kind)
    name = names.vector(2, "host_name")
    if names.left():
        raise Refused("server_name list with more than one entry")
    return name


def read_hello(message):
    r = Reader(message[4:])
    r.take(2, "legacy_version")  # not judged
    r.take(32, "random")
    r.vector(1, "session id", hi=32)
    suites = r.vector(2, "cipher suites", lo=2)
    if len(suites) % 2:
        raise Refused("odd cipher suites length")
    r.vector(1, "compression methods", lo=1)
    if not r.left():
        return None  # no extensions at all: valid, no SNI
    exts = Reader(r.vector(2, "extensions"))
    r.end("extensions")
    seen = set()
    name = None
    while exts.left():
        kind = exts.number(2, "extension type")
        body = exts.vector(2, "extension")
        if kind in seen:
            raise Refused("extension type %d twice" % kind)
        seen.add(kind)
        if kind == 0:
            name = read_server_name(body)
    if name is None:
        return None
    host = valid_hostname(name)
    if host is None:
        raise Refused("not a hostname: %r" % name)
    return host


def judge(data):
    try:
        return "accept", read_hello(gather_handshake(data))
    except Refused as e:
        return "reject", str(e)


# ---- building hellos ----

def ext(kind, body):
    return struct.pack("!HH", kind, len(body)) + body


def sni_body(entries):
    """A server_name extension body holding ENTRIES, a list of (name_type, name bytes)."""
    lst = b"".join(struct.pack("!BH", t, len(n)) + n for t, n in entries)
    return struct.pack("!H", len(lst)) + lst


def hello_message(exts, legacy=0x0303, sid=b"", suites=b"\x13\x01\x13\x02", comp=b"\x00",
                  random_bytes=bytes(range(32))):
    """A ClientHello handshake message; EXTS is a list of encoded extensions, None for none."""
    body = struct.pack("!H", legacy) + random_bytes
    body += struct.pack("!B", len(sid)) + sid + struct.pack("!H", len(suites)) + suites
    body += struct.pack("!B", len(comp)) + comp
    if exts is not None:
        block = b"".join(exts)
        body += struct.pack("!H", len(block)) + block
    return b"\x01" + struct.pack("!I", len(body))[1:] + body


def records(message, sizes=(16384,), version=0x0301, ctype=22):
    """MESSAGE framed in records whose fragment sizes come from SIZES (the last repeats)."""
    out = b""
    at = i = 0
    while at < len(message):
        n = min(sizes[min(i, len(sizes) - 1)], len(message) - at)
        out += struct.pack("!BHH", ctype, version, n) + message[at:at + n]
        at += n
        i += 1
    return out


def simple_hello(name, **kw):
    """One record carrying a hello whose only notable extension is server_name NAME (str)."""
    exts = [ext(0, sni_body([(0, name.encode())])), ext(10, b"\x00\x02\x00\x17")]
    version = kw.pop("version", 0x0301)
    return records(hello_message(exts, **kw), version=version)


ROUTE_NAMES = ["app.example.com", "py.example.org", "a.example.com", "xn--bcher-kva.example", "a-b.example.org",
               "www.test", "localhost", "x1.y2.z3.example.net"]
# Names a route cannot have: edge hyphens, bad bytes, empty labels, too long.
BAD_NAMES = ["-a.example.com", "a-.example.com", "a.-b.example", "a.b-.example", "a_b.example",
             "a..example", ".example", "", ".", "a" * 64 + ".example", ("a" * 63 + ".") * 4,
             "caf\u00e9.example", "a b.example", "1.2.3.4:443", "*.example.com"]
OTHER_NAMES = ["unrouted.example.com", "b.example.com", "app.example.co"]
EXT_TYPES = [5, 10, 11, 13, 16, 18, 21, 23, 27, 35, 43, 45, 51, 0xff01, 0xfe0d, 0x0a0a, 0x1a1a,
             0x3a3a, 0xfafa, 0x4469]


def random_name(rng):
    pick = rng.random()
    if pick < 0.6:
        name = rng.choice(ROUTE_NAMES)
        if rng.random() < 0.3:
            name = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
        if rng.random() < 0.2:
            name += "."
        return name.encode()
    if pick < 0.85:
        return rng.choice(BAD_NAMES).encode("utf-8")
    return rng.choice(OTHER_NAMES).encode()


def random_hello(rng):
    """Raw bytes of one generated hello: mostly valid, with each strictness rule broken often."""
    exts = []
    for kind in rng.sample(EXT_TYPES, rng.randrange(0, 8)):
        exts.append(ext(kind, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 24)))))
    sni = rng.random()
    if sni < 0.75:
        entries = [(0, random_name(rng))]
    elif sni < 0.85:
        entries = [(0, random_name(rng)), (rng.choice([0, 0, 1, 7]), random_name(rng))]
        rng.shuffle(entries)
    elif sni < 0.9:
        entries = [(rng.choice([1, 2, 255]), random_name(rng))]
    else:
        entries = None
    if entries is not None:
        exts.insert(rng.randrange(len(exts) + 1), ext(0, sni_body(entries)))
    if exts and rng.random() < 0.12:  # a twin of some extension, anywhere
        exts.insert(rng.randrange(len(exts) + 1), rng.choice(exts))
    legacy = rng.choice([0x0303, 0x0303, 0x0301, 0x0300, 0x0000, 0x7f1c, 0xfefd,
                         rng.randrange(65536)])
    sid = bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, 32, rng.randrange(34)])))
    suites = bytes(rng.randrange(256) for _ in range(2 * rng.randrange(1, 20)))
    comp = b"\x00" * rng.randrange(1, 3)
    no_exts = not exts and rng.random() < 0.5
    message = hello_message(None if no_exts else exts, legacy=legacy, sid=sid, suites=suites,
                            comp=comp)
    version = rng.choice([0x0301, 0x0301, 0x0303, 0x0300, 0x0304, 0x03ff])
    if rng.random() < 0.02:
        version = 0x0201
    if rng.random() < 0.7:
        raw = records(message, version=version)
    else:
        sizes = [rng.randrange(1, 80) for _ in range(rng.randrange(1, 6))]
        raw = records(message, sizes=sizes, version=version)
    tail = rng.random()
    if tail < 0.08:  # bytes after the hello inside its last record
        extra = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        raw = grow_last_record(raw, extra)
    elif tail < 0.14:  # a whole record of early data after the hello: not looked at
        raw += records(b"early", version=0x0303, ctype=23)
    elif tail < 0.18:  # another record type inside the hello
        raw = insert_record(rng, raw, struct.pack("!BHH", rng.choice([20, 21, 23]), 0x0303, 1)
                            + b"\x01")
    return raw


def record_offsets(raw):
    """Offsets of the record headers in RAW (well framed by construction)."""
    out, at = [], 0
    while at + 5 <= len(raw):
        out.append(at)
        at += 5 + struct.unpack("!H", raw[at + 3:at + 5])[0]
    return out


def grow_last_record(raw, extra):
    at = record_offsets(raw)[-1]
    size = struct.unpack("!H", raw[at + 3:at + 5])[0] + len(extra)
    return raw[:at + 3] + struct.pack("!H", size) + raw[at + 5:] + extra


def insert_record(rng, raw, record):
    offsets = record_offsets(raw)
    at = rng.choice(offsets)
    return raw[:at] + record + raw[at:]


def mutate(rng, raw):
    """RAW with one to three small damages: a nudged or random byte, a cut, an inserted byte."""
    data = bytearray(raw)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.random()
        at = rng.randrange(len(data))
        if kind < 0.5:
            data[at] = (data[at] + rng.choice([-2, -1, 1, 2])) % 256
        elif kind < 0.75:
            data[at] = rng.randrange(256)
        elif kind < 0.85:
            del data[at]
        else:
            data.insert(at, rng.randrange(256))
        if not data:
            data = bytearray(b"\x16")
    return bytes(data)


def split_hello(message):
    """A well-formed ClientHello message taken apart: (fields, [(type, body), ...] or None)."""
    r = Reader(message[4:])
    legacy = r.number(2, "legacy_version")
    rnd = r.take(32, "random")
    sid = r.vector(1, "session id")
    suites = r.vector(2, "cipher suites")
    comp = r.vector(1, "compression methods")
    fields = dict(legacy=legacy, random_bytes=rnd, sid=sid, suites=suites, comp=comp)
    if not r.left():
        return fields, None
    exts = Reader(r.vector(2, "extensions"))
    out = []
    while exts.left():
        kind = exts.number(2, "extension type")
        out.append((kind, exts.vector(2, "extension")))
    return fields, out


def rework_captured(rng, raw):
    """A real client's hello (one or more records) rebuilt with one strictness rule in play."""
    message = b""
    for at in record_offsets(raw):
        size = struct.unpack("!H", raw[at + 3:at + 5])[0]
        message += raw[at + 5:at + 5 + size]
    fields, exts = split_hello(message)
    exts = list(exts or [])
    change = rng.randrange(7)
    if change == 0 and exts:  # an extension twice
        exts.insert(rng.randrange(len(exts) + 1), rng.choice(exts))
    elif change == 1:  # a second server_name entry, or the SNI replaced by a two-entry list
        exts = [e for e in exts if e[0] != 0]
        entries = [(0, random_name(rng)), (rng.choice([0, 1]), random_name(rng))]
        exts.insert(rng.randrange(len(exts) + 1), (0, sni_body(entries)))
    elif change == 2:  # odd legacy_version values
        fields["legacy"] = rng.choice([0x0000, 0x7f1c, 0xfefd, 0x0300, rng.randrange(65536)])
    elif change == 3:  # another name, routed or not, valid or not
        exts = [(0, sni_body([(0, random_name(rng))])) if k == 0 else (k, b) for k, b in exts]
    message = hello_message([ext(k, b) for k, b in exts], **fields)
    sizes = (16384,) if rng.random() < 0.5 else [rng.randrange(1, 200) for _ in range(3)]
    out = records(message, sizes=sizes, version=rng.choice([0x0300, 0x0301, 0x0303, 0x03ff]))
    if change == 4:  # bytes after the hello in its last record
        out = grow_last_record(out, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4))))
    elif change == 5:  # a record of early data after it
        out += records(b"early data", version=0x0303, ctype=23)
    return out


def cases(seed, count, captured=()):
    """
    COUNT seeded cases: generated hellos, and real clients' hellos from CAPTURED (raw bytes)
    reworked; about half of them then mutated byte-wise.
    """
    rng = random.Random(seed)
    for _ in range(count):
        if captured and rng.random() < 0.3:
            raw = rework_captured(rng, rng.choice(captured))
        else:
            raw = random_hello(rng)
        if rng.random() < 0.5:
            raw = mutate(rng, raw)
        yield raw
