"""
gRPC health and server reflection on the admin API, called the way stock tools call them: a
Python grpcio client that has never seen proto/mc_proxy/v1/admin.proto. Its only protos are the
standard health and reflection ones, compiled here by protoc from Debian's grpc-proto
(/usr/share/grpc-proto) into a temp dir. Through reflection it fetches our file descriptor,
builds the message classes from it and calls GetStatus with them.
"""

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import mcp
from mcp import ProxyTestCase

GRPC_PROTO = "/usr/share/grpc-proto/grpc"
APP = "app.example.com"


def compile_std_protos():
    """Imports health_pb2 and v1/v1alpha reflection_pb2 compiled at test time; or skips."""
    try:
        import grpc  # noqa: F401
        from google.protobuf import descriptor_pb2  # noqa: F401
    except ImportError:
        raise unittest.SkipTest("python3-grpcio / python3-protobuf not available")
    if not shutil.which("protoc") or not os.path.isdir(GRPC_PROTO):
        raise unittest.SkipTest("protoc or /usr/share/grpc-proto missing")
    out = tempfile.mkdtemp(prefix="mcp-std-protos-")
    # Distinct file names per version, so both reflection files fit one descriptor pool.
    jobs = [(os.path.join(GRPC_PROTO, "health", "v1"), "health.proto"),
            (os.path.join(GRPC_PROTO, "reflection"), "v1/reflection.proto"),
            (os.path.join(GRPC_PROTO, "reflection"), "v1alpha/reflection.proto")]
    for inc, name in jobs:
        subprocess.run(["protoc", "-I", inc, "--python_out", out, name], check=True, timeout=60)
    sys.path.insert(0, out)
    try:
        return (importlib.import_module("health_pb2"),
                importlib.import_module("v1.reflection_pb2"),
                importlib.import_module("v1alpha.reflection_pb2"), out)
    finally:
        sys.path.remove(out)


class HealthAndReflection(ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.health_pb2, cls.refl_v1, cls.refl_v1alpha, cls.protodir = compile_std_protos()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.protodir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        import grpc
        self.grpc = grpc
        self.sock = os.path.join(self.dir, "admin.sock")
        self.laddr = "127.0.0.1:%d" % mcp.free_port()
        self.proxy = self.start_proxy([(self.laddr, None, [(APP, "127.0.0.1:9")])],
                                      extra="\n[grpc]\naddr = unix:%s\n" % self.sock)
        self.proxy.wait_log(r"admin API listening on unix:")
        self.channel = grpc.insecure_channel("unix:" + self.sock)
        self.addCleanup(self.channel.close)

    def health(self, service):
        pb = self.health_pb2
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=pb.HealthCheckRequest.SerializeToString,
            response_deserializer=pb.HealthCheckResponse.FromString)
        return check(pb.HealthCheckRequest(service=service), timeout=10)

    def reflect(self, pb, version, requests):
        info = self.channel.stream_stream(
            "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % version,
            request_serializer=pb.ServerReflectionRequest.SerializeToString,
            response_deserializer=pb.ServerReflectionResponse.FromString)
        return list(info(iter(requests), timeout=10))

    def test_health_check_serving_and_unknown_service(self):
        pb = self.health_pb2
        self.assertEqual(self.health("").status, pb.HealthCheckResponse.SERVING)
        self.assertEqual(self.health("mc_proxy.v1.ProxyAdminService").status,
                         pb.HealthCheckResponse.SERVING)
        with self.assertRaises(self.grpc.RpcError) as cm:
            self.health("no.such.Service")
        self.assertEqual(cm.exception.code(), self.grpc.StatusCode.NOT_FOUND)

    def test_reflection_v1_lists_services_and_describes_ours_well_enough_to_call_it(self):
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        pb = self.refl_v1
        resps = self.reflect(pb, "v1", [
            pb.ServerReflectionRequest(list_services=""),
            pb.ServerReflectionRequest(file_containing_symbol="mc_proxy.v1.ProxyAdminService"),
            pb.ServerReflectionRequest(file_containing_symbol="no.such.Thing"),
        ])
        self.assertEqual(len(resps), 3)
        names = {s.name for s in resps[0].list_services_response.service}
        self.assertEqual(names, {"mc_proxy.v1.ProxyAdminService", "grpc.health.v1.Health",
                                 "grpc.reflection.v1.ServerReflection",
                                 "grpc.reflection.v1alpha.ServerReflection"})
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in resps[1].file_descriptor_response.file_descriptor_proto]
        admin = [f for f in files if f.name == "mc_proxy/v1/admin.proto"]
        self.assertEqual(len(admin), 1, [f.name for f in files])
        methods = {m.name for m in admin[0].service[0].method}
        self.assertIn("GetStatus", methods)
        status = [m for m in admin[0].message_type if m.name == "ListenerStatus"][0]
        self.assertEqual({f.name: f.number for f in status.field}["bytes_in_total"], 13)
        self.assertEqual(resps[2].error_response.error_code, 5)  # NOT_FOUND, in the stream

        # Call GetStatus with classes built only from what reflection returned.
        pool = descriptor_pool.DescriptorPool()
        for f in files:  # imports first, as the server sends them
            pool.Add(f)
        factory = message_factory.MessageFactory(pool)  # protobuf 3.x/4.21 API
        req_cls = factory.GetPrototype(pool.FindMessageTypeByName("mc_proxy.v1.GetStatusRequest"))
        resp_cls = factory.GetPrototype(
            pool.FindMessageTypeByName("mc_proxy.v1.GetStatusResponse"))
        get_status = self.channel.unary_unary(
            "/mc_proxy.v1.ProxyAdminService/GetStatus",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=resp_cls.FromString)
        st = get_status(req_cls(), timeout=10)
        self.assertEqual([l.addr for l in st.listeners], [self.laddr])
        self.assertEqual(st.listeners[0].route_count, 1)

    def test_reflection_v1alpha_answers_on_one_stream(self):
        from google.protobuf import descriptor_pb2
        pb = self.refl_v1alpha
        resps = self.reflect(pb, "v1alpha", [
            pb.ServerReflectionRequest(list_services=""),
            pb.ServerReflectionRequest(file_by_filename="grpc/health/v1/health.proto"),
            pb.ServerReflectionRequest(
                file_containing_symbol="mc_proxy.v1.ProxyAdminService.GetStatus"),
        ])
        self.assertEqual(len(resps), 3)
        self.assertIn("grpc.health.v1.Health",
                      {s.name for s in resps[0].list_services_response.service})
        health = descriptor_pb2.FileDescriptorProto.FromString(
            resps[1].file_descriptor_response.file_descriptor_proto[0])
        self.assertEqual(health.package, "grpc.health.v1")
        self.assertIn("mc_proxy/v1/admin.proto",
                      [descriptor_pb2.FileDescriptorProto.FromString(b).name
                       for b in resps[2].file_descriptor_response.file_descriptor_proto])
        # The original request is echoed back, as the protocol asks.
        self.assertEqual(resps[1].original_request.file_by_filename,
                         "grpc/health/v1/health.proto")

    def test_malformed_reflection_request_ends_the_stream_with_invalid_argument(self):
        info = self.channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with self.assertRaises(self.grpc.RpcError) as cm:
            list(info(iter([b"\xff\xff\xff"]), timeout=10))
        self.assertEqual(cm.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        # The server still answers.
        self.assertEqual(self.health("").status, self.health_pb2.HealthCheckResponse.SERVING)


if __name__ == "__main__":
    unittest.main()
