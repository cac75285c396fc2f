"""Hostile clients that open streams and reset them at once (HTTP/2 rapid
reset, CVE-2023-44487) or open connections and drop them: what the server
keeps afterwards, what it logs and counts, and that a healthy subscriber
sees every event throughout.

The attackers are raw HTTP/2 clients (h2raw) in their own processes, so
their CPU does not starve the healthy grpcio client in this one. Assertions
are on counts, states and memory after the fact, never on speed; the
measured server CPU per reset stream is printed (pytest -s) for
docs/operations.md "Security".
"""
import multiprocessing
import time

import pytest

import h2raw
from h2raw import WATCH, pb_bytes
from tickfan_harness import (Watch, logfmt, metric, proc_cpu_seconds, proc_rss_kib,
                             sanitizer, scrape_metrics)

KEYS = ["AAPL", "MSFT"]
# The memory freed after an attack must be back with the system (VmRSS
# within this of the baseline) this long after the attack ended.
RSS_SLACK_KIB = 8 * 1024
RSS_RETURN_S = 15.0
# After 3,000 connections some stays for good, bounded (see that test).
CONN_SLACK_KIB = 28 * 1024


def require_jemalloc():
    """The memory tests measure jemalloc's settings; a sanitizer build runs
    tickfand on the sanitizer's allocator (CMakeLists.txt)."""
    if sanitizer():
        pytest.skip(f"{sanitizer()} sanitizer build: tickfand runs without jemalloc; "
                    "the memory test was NOT run")


def spawn_pool(n):
    # spawn, not fork: this process runs grpcio's threads
    return multiprocessing.get_context("spawn").Pool(n)


def rss_back(pid, limit_kib, timeout):
    """Waits until VmRSS <= limit_kib; returns (the last VmRSS, seconds waited)."""
    start = time.monotonic()
    while True:
        rss = proc_rss_kib(pid)
        waited = time.monotonic() - start
        if rss <= limit_kib or waited >= timeout:
            return rss, waited
        time.sleep(0.25)


def wait_for(pred, timeout, step=0.2):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(step)
    return pred()


def drain(w, until_seq, timeout=20.0):
    """Reads w's events up to Data seq >= until_seq; returns (data seqs, other
    payload kinds seen)."""
    seqs, kinds = [], set()
    end = time.monotonic() + timeout
    while not seqs or seqs[-1] < until_seq:
        ev = w.next(max(0.1, end - time.monotonic()))
        kind = ev.WhichOneof("payload")
        if kind == "data":
            seqs.append(ev.data.seq)
        else:
            kinds.add(kind)
    return seqs, kinds


def attack_and_watch(srv, pool_args, func, healthy=None):
    """Runs func(*args) for each args in pool_args in their own processes
    while sampling tickfand's VmRSS; returns (results, peak VmRSS KiB)."""
    pid = srv.proc.pid
    peak = proc_rss_kib(pid)
    with spawn_pool(len(pool_args)) as pool:
        job = pool.starmap_async(func, pool_args)
        while not job.ready():
            peak = max(peak, proc_rss_kib(pid))
            job.wait(0.1)
        results = job.get(timeout=5)
    return results, max(peak, proc_rss_kib(pid))


def test_memory_of_a_rapid_reset_attack_goes_back_to_the_system_and_a_subscriber_misses_nothing(
        tickfand):
    """30,000 streams opened (HEADERS + a Watch request) and reset at once,
    from 2 processes over 4 connections: half reset before the request
    reaches the server, half after. Afterwards jemalloc's allocated
    bytes are back near where they were (nothing of ours is kept per reset
    stream), and VmRSS comes back within 8 MiB of the baseline within 15 s:
    freed pages go back to the system (background_thread, decay times).
    A grpcio subscriber filtering two keys stays open throughout and gets
    exactly the matching events a replay of the log gives, with no Gap."""
    h2raw.require_h2()
    require_jemalloc()
    srv = tickfand("--sim-rate", "500", "--log-size", "4M", "--metrics-listen", "127.0.0.1:0")
    pid = srv.proc.pid
    healthy = Watch(srv.stub(), deadline=120, topic="sim", keys=KEYS)
    first = healthy.next_data()
    time.sleep(2)  # warm-up: gRPC's and jemalloc's first allocations
    cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
    time.sleep(2)
    idle_cpu_per_s = (proc_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    base_rss = proc_rss_kib(pid)
    base_alloc = metric(scrape_metrics(srv), "tickfan_jemalloc_allocated_bytes")

    cpu1, t1 = proc_cpu_seconds(pid), time.monotonic()
    per_proc = 15000
    # one attacker's resets mostly beat their request, the other's mostly
    # follow it (the stream is opened, then cancelled)
    results, peak = attack_and_watch(
        srv, [(srv.addr, per_proc, WATCH, pb_bytes(1, "sim"), 2, (), 1.0, split)
              for split in (False, True)], h2raw.rapid_reset)
    cpu2, t2 = proc_cpu_seconds(pid), time.monotonic()
    resets = sum(r["streams"] for r in results)
    assert resets == 2 * per_proc, results
    attack_cpu = (cpu2 - cpu1) - idle_cpu_per_s * (t2 - t1)

    rss, waited = rss_back(pid, base_rss + RSS_SLACK_KIB, RSS_RETURN_S)
    alloc = metric(scrape_metrics(srv), "tickfan_jemalloc_allocated_bytes")
    print(f"\nrapid reset: {resets} streams in {max(r['seconds'] for r in results):.1f} s; "
          f"server CPU {attack_cpu:.2f} s = {attack_cpu / resets * 1e6:.0f} us per reset stream; "
          f"VmRSS baseline {base_rss / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
          f"{rss / 1024:.1f} MiB {waited:.1f} s after; jemalloc allocated "
          f"{base_alloc / 2**20:.1f} -> {alloc / 2**20:.1f} MiB")
    assert rss <= base_rss + RSS_SLACK_KIB, (
        f"VmRSS {rss} KiB {waited:.0f} s after the attack, baseline {base_rss} KiB, peak {peak} KiB:"
        " freed memory was not given back to the system")
    assert alloc <= base_alloc + 4 * 2**20, f"jemalloc allocated {alloc}, before {base_alloc}"

    # The subscriber is still open and missed nothing: a replay of the log
    # from its first event with the same filter gives the same events.
    assert healthy.ended is None, healthy.ended
    live, kinds = drain(healthy, metric(scrape_metrics(srv), "tickfan_topic_head_seq",
                                        topic="sim") - 100)
    assert kinds <= {"heartbeat", "end_of_backlog"}, kinds
    replay = Watch(srv.stub(), deadline=60, topic="sim", keys=KEYS, cursor=first.cursor)
    again, _ = drain(replay, live[-1])
    replay.cancel()
    healthy.cancel()
    assert live == again[:len(live)], "the live subscriber's events differ from the log's"


def test_memory_of_3000_closed_connections_goes_back_to_the_system(tickfand):
    """3,000 HTTP/2 connections opened (SETTINGS exchanged), held idle, then
    closed, from 2 processes, twice. Within 15 s of each close VmRSS has
    given back at least half of what the connections took and is within
    28 MiB of the baseline, and the second round leaves no more than the
    first: what stays is bounded, not a leak.

    What stays (~17-19 MiB here, measured): Debian's abseil is a debug
    build whose mutex deadlock detector keeps a graph of every live mutex in
    its own mmap'd arena (LowLevelAlloc), sized for the peak and never
    unmapped (~7 MiB after 3,000 connections); freed blocks still held in
    the jemalloc thread caches of gRPC's threads, which only the thread
    itself trims, as it allocates again (~6 MiB); and the slab pages those
    blocks keep from being freed. docs/operations.md "Security" says so."""
    h2raw.require_h2()
    require_jemalloc()
    srv = tickfand("--sim-rate", "100", "--log-size", "4M")
    pid = srv.proc.pid
    time.sleep(2)
    base_rss = proc_rss_kib(pid)
    after = []
    for round_ in (1, 2):
        results, peak = attack_and_watch(srv, [(srv.addr, 1500, 3.0)] * 2,
                                         h2raw.idle_connections)
        assert sum(results) == 3000, results
        closed = time.monotonic()
        limit = min(base_rss + CONN_SLACK_KIB, base_rss + (peak - base_rss) // 2)
        rss, waited = rss_back(pid, limit, RSS_RETURN_S)
        assert rss <= limit, (
            f"VmRSS {rss} KiB {waited:.0f} s after the connections closed, baseline {base_rss} KiB,"
            f" peak {peak} KiB: freed memory was not given back to the system")
        time.sleep(max(0.0, closed + 5 - time.monotonic()))
        after.append(proc_rss_kib(pid))
        print(f"\n3000 connections, round {round_}: VmRSS baseline {base_rss / 1024:.1f} MiB, "
              f"peak {peak / 1024:.1f} MiB, {rss / 1024:.1f} MiB {waited:.1f} s after they closed, "
              f"{after[-1] / 1024:.1f} MiB 5 s after")
    assert after[1] <= after[0] + 4 * 1024, f"VmRSS after each round (KiB): {after}"


def cancel_lines(srv, since):
    return [logfmt(ln) for ln in srv.lines[since:] if "msg=calls_cancelled_before_request" in ln]


def test_streams_reset_before_their_request_are_cancels_counted_and_logged_once_a_second(
        tickfand):
    """2,000 rapid resets. A stream reset before its request reached the
    server is a cancel: counted on tickfan_calls_cancelled_before_request_total
    and reported in one aggregated line per second at most, never as an
    INVALID_ARGUMENT status or a stream_closed line each. A stream whose
    request did arrive first is an ordinary stream, opened and cancelled:
    the two counts add up to every stream reset."""
    h2raw.require_h2()
    srv = tickfand("--sim-rate", "200", "--log-size", "4M", "--metrics-listen", "127.0.0.1:0")
    n = 2000
    before = scrape_metrics(srv)
    mark = srv.mark()
    with spawn_pool(1) as pool:
        res = pool.apply(h2raw.rapid_reset, (srv.addr, n, WATCH, pb_bytes(1, "sim"), 2))
    assert res["streams"] == n, res

    def delta(name, **labels):
        return metric(scrape_metrics(srv), name, **labels) - metric(before, name, **labels)

    def accounted():
        return (delta("tickfan_calls_cancelled_before_request_total") +
                delta("tickfan_streams_opened_total"))

    wait_for(lambda: accounted() >= n, 15)
    cancelled = delta("tickfan_calls_cancelled_before_request_total")
    opened = delta("tickfan_streams_opened_total")
    invalid = delta("tickfan_stream_status_total", code="INVALID_ARGUMENT")
    closed_invalid = sum(1 for ln in srv.lines[mark:]
                         if "msg=stream_closed" in ln and "reason=INVALID_ARGUMENT" in ln)
    # the last of the aggregated lines comes at most a second and a tick later
    wait_for(lambda: sum(int(kv["count"]) for kv in cancel_lines(srv, mark)) >= cancelled, 5)
    lines = cancel_lines(srv, mark)
    print(f"\n{n} resets: cancelled before the request {cancelled:.0f}, opened {opened:.0f}, "
          f"INVALID_ARGUMENT {invalid:.0f}, stream_closed reason=INVALID_ARGUMENT lines "
          f"{closed_invalid}, aggregated lines {len(lines)}: "
          + "; ".join(f"count={kv.get('count')} total={kv.get('total')}" for kv in lines))
    assert invalid == 0, f"{invalid:.0f} resets counted as INVALID_ARGUMENT"
    assert closed_invalid == 0, f"{closed_invalid} stream_closed reason=INVALID_ARGUMENT lines"
    assert cancelled > 0, "no stream was counted as cancelled before its request"
    assert cancelled + opened == n, (cancelled, opened)
    assert sum(int(kv["count"]) for kv in lines) == cancelled, lines
    assert int(lines[-1]["total"]) == cancelled, lines
    # one line at once, then one a second at most while the burst lasts
    # (its resets and the attacker's 1 s of reading after them), then the rest
    assert len(lines) <= 3 + int(res["seconds"] + 1), lines
