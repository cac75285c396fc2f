"""Server reflection (grpc.reflection v1 and v1alpha): lists every service
and describes them well enough that a client with no .proto files can build
the messages and call Watch."""
import importlib.util
import os

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tickfan_harness import PY_DIR

SERVICES = {"events.v1.Watcher", "events.v1.Publisher", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
            "tickfan.admin.v1.Admin"}


def load(version):
    path = os.path.join(PY_DIR, "grpc", "reflection", version, "reflection_pb2.py")
    spec = importlib.util.spec_from_file_location(f"tickfan_reflection_{version}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # not importable as grpc.reflection: grpc is grpcio's package
    return mod


def ask(srv, version, requests):
    rp = load(version)
    ch = grpc.insecure_channel(srv.addr)
    info = ch.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                            request_serializer=rp.ServerReflectionRequest.SerializeToString,
                            response_deserializer=rp.ServerReflectionResponse.FromString)
    out = list(info(iter([rp.ServerReflectionRequest(**r) for r in requests]), timeout=10))
    ch.close()
    return out


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_lists_every_service(tickfand, version):
    srv = tickfand("--feed", "none", "--topic", "t")
    [resp] = ask(srv, version, [{"list_services": ""}])
    assert {s.name for s in resp.list_services_response.service} == SERVICES


def test_a_client_without_protos_can_describe_and_call_watch(tickfand):
    srv = tickfand("--sim-rate", "200")
    resps = ask(srv, "v1", [{"file_containing_symbol": "events.v1.Watcher"},
                            {"file_by_filename": "market/v1/tick.proto"},
                            {"file_containing_symbol": "no.such.Symbol"}])
    assert resps[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    pool = descriptor_pool.DescriptorPool()
    for r in resps[:2]:
        for raw in r.file_descriptor_response.file_descriptor_proto:
            fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
            try:
                pool.Add(fdp)
            except Exception:
                pass  # already added from the other answer
    svc = pool.FindServiceByName("events.v1.Watcher")
    method = svc.FindMethodByName("Watch")
    assert method.server_streaming and not method.client_streaming
    factory = message_factory.MessageFactory(pool)  # protobuf 3.21 as in Debian 12
    req_cls = factory.GetPrototype(method.input_type)
    ev_cls = factory.GetPrototype(method.output_type)
    assert pool.FindMessageTypeByName("tickfan.market.v1.Tick").fields_by_name["symbol"]
    ch = grpc.insecure_channel(srv.addr)
    call = ch.unary_stream("/events.v1.Watcher/Watch",
                           request_serializer=lambda m: m.SerializeToString(),
                           response_deserializer=ev_cls.FromString)
    stream = call(req_cls(topic="sim"), timeout=10)
    ev = next(ev for ev in stream if ev.WhichOneof("payload") == "data")
    assert ev.data.seq >= 1 and ev.cursor
    stream.cancel()
    ch.close()
