#!/usr/bin/python3
"""Checks a running tickfand over gRPC with hand-encoded messages (no stubs).

    grpc_check.py health ADDR            Health/Check must answer SERVING
    grpc_check.py watch ADDR READY_FILE  open Watch(topic "sim"), touch
                                         READY_FILE after the first event, then
                                         wait for the server to end the stream:
                                         it must be UNAVAILABLE with a
                                         tickfan-cursor trailer (a drain)

Needs Debian's python3-grpcio; run with /usr/bin/python3. Exit 0 on success,
1 with a message otherwise.
"""
import sys

import grpc

SERVING = b"\x08\x01"  # HealthCheckResponse{status (field 1, varint) = SERVING (1)}


def health(addr):
    with grpc.insecure_channel(addr) as ch:
        # HealthCheckRequest{} (service "" = the whole server) encodes to b"".
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        try:
            resp = check(b"", timeout=5)
        except grpc.RpcError as e:
            print(f"health: Check failed: {e.code().name}: {e.details()}")
            return 1
    print(f"health: response bytes {resp.hex() or '(empty)'}")
    if resp != SERVING:
        print("health: expected 0801 (SERVING)")
        return 1
    print("health: SERVING")
    return 0


def watch(addr, ready_file):
    # WatchRequest{topic (field 1, length-delimited) = "sim"}
    req = b"\x0a\x03sim"
    events = 0
    with grpc.insecure_channel(addr) as ch:
        stream = ch.unary_stream("/events.v1.Watcher/Watch")(req, timeout=120)
        try:
            for _ in stream:
                events += 1
                if events == 1:
                    open(ready_file, "w").close()
        except grpc.RpcError as e:
            cursor = dict(e.trailing_metadata() or ()).get("tickfan-cursor", "")
            print(f"watch: stream ended after {events} events: {e.code().name}: "
                  f"{e.details()!r} tickfan-cursor={cursor!r}")
            if e.code() != grpc.StatusCode.UNAVAILABLE or not cursor:
                print("watch: expected UNAVAILABLE with a tickfan-cursor trailer")
                return 1
            return 0
    print(f"watch: stream ended with OK after {events} events; expected UNAVAILABLE")
    return 1


def main(argv):
    if len(argv) == 3 and argv[1] == "health":
        return health(argv[2])
    if len(argv) == 4 and argv[1] == "watch":
        return watch(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
