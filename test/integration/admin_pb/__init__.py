"""
Python messages and a grpcio client for proto/mc_proxy/v1/admin.proto, made at import time.

Nothing generated is committed and no protoc is needed: the .proto file itself is read by a small
parser for the proto3 subset it uses (package, messages with scalar/enum/message fields,
`repeated` and one-field `oneof`s, enums, one service of unary rpcs), turned into a FileDescriptorProto, and loaded into
a private descriptor pool. So these tests speak exactly the proto in the repository, with
Debian's python3-protobuf and python3-grpcio, a gRPC implementation the project did not write.

  msg("AddRouteRequest")(listener_addr=..., route=msg("Route")(hostname=..., backend=...))
  ENUM["FIREWALL_RULE_TYPE_IP"]            -> 1
  Client(target, creds=None).call("GetStatus", msg("GetStatusRequest")())
  Client(...).call_raw("AddRoute", b"bytes") -> raw reply bytes (for malformed-request tests)
  status_of(exc)                          -> "NOT_FOUND", ... for a grpc.RpcError
"""

import os
import re

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "..", "proto", "mc_proxy", "v1", "admin.proto")

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "bool": _F.TYPE_BOOL,
    "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64, "double": _F.TYPE_DOUBLE, "float": _F.TYPE_FLOAT,
}
_TOKEN = re.compile(r'"[^"]*"|[A-Za-z_][\w.]*|\d+|[{}();=]')


class _Tokens:
    def __init__(self, text):
        text = re.sub(r"//[^\n]*", "", text)
        self.toks = _TOKEN.findall(text)
        self.i = 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want=None):
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ValueError("admin.proto: expected %r, got %r" % (want, tok))
        self.i += 1
        return tok


def _parse(path):
    with open(path) as f:
        t = _Tokens(f.read())
    fdp = descriptor_pb2.FileDescriptorProto(name="mc_proxy/v1/admin.proto", syntax="proto3")
    messages, enums, services = [], [], []
    while t.peek() is not None:
        kw = t.take()
        if kw == "syntax":
            t.take("=")
            if t.take() != '"proto3"':
                raise ValueError("admin.proto: not proto3")
            t.take(";")
        elif kw == "package":
            fdp.package = t.take()
            t.take(";")
        elif kw == "message":
            name, fields, oneofs = t.take(), [], []
            t.take("{")
            while t.peek() != "}":
                oneof = None
                if t.peek() == "oneof":
                    # One field in a oneof: how admin.proto spells a proto3 `optional` field.
                    t.take()
                    oneofs.append(t.take())
                    t.take("{")
                    oneof = len(oneofs) - 1
                label = "optional"
                if t.peek() == "repeated":
                    label = t.take()
                ftype, fname = t.take(), t.take()
                t.take("=")
                fields.append((label, ftype, fname, int(t.take()), oneof))
                t.take(";")
                if oneof is not None:
                    t.take("}")
            t.take("}")
            messages.append((name, fields, oneofs))
        elif kw == "enum":
            name, values = t.take(), []
            t.take("{")
            while t.peek() != "}":
                vname = t.take()
                t.take("=")
                values.append((vname, int(t.take())))
                t.take(";")
            t.take("}")
            enums.append((name, values))
        elif kw == "service":
            name, rpcs = t.take(), []
            t.take("{")
            while t.peek() != "}":
                t.take("rpc")
                rname = t.take()
                t.take("(")
                rin = t.take()
                t.take(")")
                t.take("returns")
                t.take("(")
                rout = t.take()
                t.take(")")
                t.take(";")
                rpcs.append((rname, rin, rout))
            t.take("}")
            services.append((name, rpcs))
        else:
            raise ValueError("admin.proto: unexpected %r" % kw)

    pkg = "." + fdp.package
    msg_names = {m[0] for m in messages}
    enum_names = {e[0] for e in enums}
    for name, values in enums:
        e = fdp.enum_type.add(name=name)
        for vname, num in values:
            e.value.add(name=vname, number=num)
    for name, fields, oneofs in messages:
        m = fdp.message_type.add(name=name)
        for oname in oneofs:
            m.oneof_decl.add(name=oname)
        for label, ftype, fname, num, oneof in fields:
            f = m.field.add(name=fname, number=num, json_name=_json_name(fname))
            if oneof is not None:
                f.oneof_index = oneof
            f.label = _F.LABEL_REPEATED if label == "repeated" else _F.LABEL_OPTIONAL
            if ftype in _SCALARS:
                f.type = _SCALARS[ftype]
            elif ftype in msg_names:
                f.type, f.type_name = _F.TYPE_MESSAGE, "%s.%s" % (pkg, ftype)
            elif ftype in enum_names:
                f.type, f.type_name = _F.TYPE_ENUM, "%s.%s" % (pkg, ftype)
            else:
                raise ValueError("admin.proto: unknown type %r" % ftype)
    for name, rpcs in services:
        s = fdp.service.add(name=name)
        for rname, rin, rout in rpcs:
            s.method.add(name=rname, input_type="%s.%s" % (pkg, rin),
                         output_type="%s.%s" % (pkg, rout))
    return fdp


def _json_name(name):
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


FILE = _parse(PROTO)
_pool = descriptor_pool.DescriptorPool()
_pool.Add(FILE)
_factory = message_factory.MessageFactory(_pool)
SERVICE = "%s.%s" % (FILE.package, FILE.service[0].name)

_classes = {}
for _m in FILE.message_type:
    _classes[_m.name] = _factory.GetPrototype(
        _pool.FindMessageTypeByName("%s.%s" % (FILE.package, _m.name)))
ENUM = {v.name: v.number for e in FILE.enum_type for v in e.value}
METHODS = {m.name: (m.input_type.rsplit(".", 1)[1], m.output_type.rsplit(".", 1)[1])
           for m in FILE.service[0].method}


def msg(name):
    return _classes[name]


def status_of(exc):
    """The status name ("NOT_FOUND", ...) of a grpc.RpcError."""
    return exc.code().name


class Client:
    """Unary calls to ProxyAdminService over TARGET ("unix:/path" or "host:port")."""

    def __init__(self, target, creds=None, timeout=5.0):
        self.timeout = timeout
        if creds is None:
            self.channel = grpc.insecure_channel(target)
        else:
            self.channel = grpc.secure_channel(target, creds)

    def call(self, method, request=None):
        req_name, resp_name = METHODS[method]
        if request is None:
            request = msg(req_name)()
        fn = self.channel.unary_unary("/%s/%s" % (SERVICE, method),
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=msg(resp_name).FromString)
        return fn(request, timeout=self.timeout)

    def call_raw(self, method, data, path=None):
        """Sends DATA unchanged to METHOD (or to the full PATH); returns the raw reply bytes."""
        fn = self.channel.unary_unary(path or "/%s/%s" % (SERVICE, method))
        return fn(data, timeout=self.timeout)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def mtls_credentials(ca, cert=None, key=None):
    """grpcio channel credentials trusting CA, presenting CERT/KEY when given."""
    def read(p):
        with open(p, "rb") as f:
            return f.read()
    return grpc.ssl_channel_credentials(
        root_certificates=read(ca),
        private_key=read(key) if key else None,
        certificate_chain=read(cert) if cert else None)
