"""grpc.health.v1: Check and Watch answer for the server and its services,
unknown services are NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch), and on
SIGTERM a Watch sees NOT_SERVING, then UNAVAILABLE. Unknown methods are
UNIMPLEMENTED."""
import importlib.util
import os
import signal

import grpc
import pytest

from tickfan_harness import PY_DIR

_spec = importlib.util.spec_from_file_location(
    "tickfan_health_pb2", os.path.join(PY_DIR, "grpc", "health", "v1", "health_pb2.py"))
hp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hp)  # not importable as grpc.health: grpc is grpcio's package
S = hp.HealthCheckResponse


def stubs(srv):
    ch = grpc.insecure_channel(srv.addr)
    check = ch.unary_unary("/grpc.health.v1.Health/Check",
                           request_serializer=hp.HealthCheckRequest.SerializeToString,
                           response_deserializer=S.FromString)
    watch = ch.unary_stream("/grpc.health.v1.Health/Watch",
                            request_serializer=hp.HealthCheckRequest.SerializeToString,
                            response_deserializer=S.FromString)
    return ch, check, watch


@pytest.mark.parametrize("service", ["", "events.v1.Watcher", "grpc.health.v1.Health"])
def test_check_says_serving_for_the_server_and_its_services(tickfand, service):
    srv = tickfand("--feed", "none", "--topic", "t")
    ch, check, _ = stubs(srv)
    assert check(hp.HealthCheckRequest(service=service), timeout=5).status == S.SERVING
    ch.close()


def test_check_of_an_unknown_service_is_not_found(tickfand):
    srv = tickfand("--feed", "none", "--topic", "t")
    ch, check, _ = stubs(srv)
    with pytest.raises(grpc.RpcError) as e:
        check(hp.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no.such.Service" in e.value.details()
    ch.close()


def test_watch_of_an_unknown_service_says_service_unknown(tickfand):
    srv = tickfand("--feed", "none", "--topic", "t")
    ch, _, watch = stubs(srv)
    w = watch(hp.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert next(w).status == S.SERVICE_UNKNOWN
    w.cancel()
    ch.close()


def test_watch_sees_not_serving_then_unavailable_when_the_server_drains(tickfand):
    srv = tickfand("--feed", "none", "--topic", "t")
    ch, _, watch = stubs(srv)
    w = watch(hp.HealthCheckRequest(service=""), timeout=20)
    assert next(w).status == S.SERVING
    srv.signal(signal.SIGTERM)
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for r in w:
            got.append(r.status)
    assert got == [S.NOT_SERVING]
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert srv.wait_exit(15) == 0
    ch.close()


def test_unknown_method_is_unimplemented(tickfand):
    srv = tickfand("--feed", "none", "--topic", "t")
    ch = grpc.insecure_channel(srv.addr)
    call = ch.unary_unary("/no.such.Service/Method")
    with pytest.raises(grpc.RpcError) as e:
        call(b"", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    ch.close()
