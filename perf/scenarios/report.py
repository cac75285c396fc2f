#!/usr/bin/env python3
"""Turns one perf/run directory into perf/results/latest.json and latest.md,
plus the data files the gnuplot scripts in perf/plot/ read.

Called by perf/run; by hand: report.py --mode quick --run-dir DIR --results perf/results
"""
import argparse
import glob
import json
import os
import platform
import re

NAMES = {"tickfand": "tickfand", "go-peer": "go peer"}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu_model": model}


def load_avg(path):
    try:
        with open(path) as f:
            m = re.search(r"load average: ([\d.]+), ([\d.]+), ([\d.]+)", f.read())
            return [float(x) for x in m.groups()] if m else None
    except OSError:
        return None


def client_text(figures, servers):
    """What read the Watch streams in this run (tickfan-bench --client)."""
    seen = set()
    for srv in servers:
        for v in figures[srv].values():
            for c in (v["steps"] if "steps" in v else [v]):
                if c.get("ran") and c.get("bench_client"):
                    seen.add(c["bench_client"])
    names = {"h2": "`--client h2` (HTTP/2 frames parsed in place, libnghttp2)",
             "grpc": "`--client grpc` (gRPC C core)"}
    return " and ".join(names.get(x, x) for x in sorted(seen)) or "(no case ran)"


def case(run_dir, scen, step, server):
    base = os.path.join(run_dir, f"{scen}.{step}.{server}")
    meta = load(base + ".meta.json") or {}
    bench = load(base + ".json") or {}
    res = bench.get("results", {})
    msgs = res.get("messages", {})
    lat = res.get("latency_us", {})
    lat_in = res.get("latency_from_ingest_us", {})
    feed = res.get("feed") or {}
    ov = res.get("order_violations", {})
    ev = res.get("events", {})
    st = res.get("streams", {})
    total = msgs.get("total", 0)
    idle = load(base + ".idle.json") if scen == "s5" else None
    cpu = meta.get("server_cpu_s")
    # the server's CPU over the bench's run window (tickfan-bench
    # --server-pid): steady state, without connect and drain; the whole-case
    # figure stays as server_cpu_s_per_million_case
    wcpu = res.get("server_cpu")
    wcpu_s = wcpu["user_s"] + wcpu["sys_s"] if wcpu else None
    in_window = msgs.get("window", 0)
    if not bench or "error" in meta:
        return {"feed_rate": meta.get("feed_rate"), "ran": False, "error": meta.get("error", "no bench output"),
                "bench_pass": None, "failures": [], "delivered_per_s": None, "gaps": None,
                "order_violations": None, "streams_failed": None, "server_cpu_s_per_million": None,
                "latency_ms": {k: None for k in ("p50", "p90", "p99", "p999", "max")},
                "latency_from_ingest_ms": {k: None for k in ("p50", "p90", "p99", "p999", "max")},
                "feed": {}, "rss_before_mb": None, "rss_peak_mb": None}
    out = {
        "ran": True,
        "feed_rate": meta.get("feed_rate"),
        "bench_pass": bench.get("pass"),
        "bench_exit": meta.get("bench_exit"),
        "failures": bench.get("failures", []),
        "streams_connected": st.get("connected"),
        "streams_failed": st.get("failed"),
        "delivered_per_s": msgs.get("msgs_per_s"),
        "delivered_total": total,
        "per_stream_min": msgs.get("per_stream_min"),
        "per_stream_max": msgs.get("per_stream_max"),
        "gaps": ev.get("gaps", 0),
        "gap_missed": ev.get("gap_missed", 0),
        "order_violations": sum(ov.get(k, 0) for k in ("gaps", "repeats", "reorders", "gap_mismatches", "malformed")),
        "latency_ms": {k: (lat[k] / 1000.0 if k in lat else None) for k in ("p50", "p90", "p99", "p999", "max")},
        "latency_samples": lat.get("count"),
        "latency_measured_from": lat.get("measured_from"),
        "latency_corrected_for_coordinated_omission": lat.get("coordinated_omission_corrected"),
        "latency_from_ingest_ms": {k: (lat_in[k] / 1000.0 if k in lat_in else None)
                                   for k in ("p50", "p90", "p99", "p999", "max")},
        "feed": {
            "ticks_sent": feed.get("ticks_sent"),
            "ticks_per_s": feed.get("ticks_per_s"),
            "datagrams": feed.get("datagrams"),
            "sender_max_lag_ms": feed["max_lag_us"] / 1000.0 if "max_lag_us" in feed else None,
            "sender_late_ticks": feed.get("late_ticks"),
            "sender_nice": feed.get("sender_nice"),
            "undelivered_after_drain": feed.get("undelivered"),
            "drain_s": feed.get("drain_s"),
            "server_socket_rcvbuf_bytes": meta.get("feed_rcvbuf_bytes"),
            "server_socket_drops": meta.get("feed_udp_drops"),
        },
        "server_cpu_s": cpu,
        "server_cpu_s_window": wcpu_s,
        "server_cpu_s_per_million": (wcpu_s / in_window * 1e6 if wcpu_s is not None and in_window
                                     else (cpu / total * 1e6) if cpu is not None and total
                                     else None),
        "server_cpu_s_per_million_case": (cpu / total * 1e6) if cpu is not None and total else None,
        "server_cpu_measured_over": "window" if wcpu_s is not None and in_window else "case",
        "rss_before_mb": meta.get("rss_before_kb", 0) / 1024.0 if meta else None,
        "rss_peak_mb": meta.get("rss_peak_kb", 0) / 1024.0 if meta else None,
        "bench_json": os.path.relpath(base + ".json", run_dir),
    }
    # the bench's own share of its core in the window: near 100 % the client,
    # not the server, may be what a figure measures
    ccpu = res.get("client_cpu") or {}
    win = res.get("window_s")
    out["bench_cpu_pct"] = (100.0 * (ccpu.get("user_s", 0) + ccpu.get("sys_s", 0)) / win
                            if win else None)
    out["server_cpu_pct_window"] = 100.0 * wcpu_s / win if wcpu_s is not None and win else None
    out["bench_client"] = (bench.get("config") or {}).get("client", "grpc")
    if res.get("stalled"):
        out["stalled"] = res["stalled"]
    if idle is not None:
        ir = idle.get("results", {})
        out["idle_streams_connected"] = ir.get("streams", {}).get("connected")
        out["idle_heartbeats"] = ir.get("events", {}).get("heartbeats")
        out["idle_bench_exit"] = meta.get("idle_bench_exit")
    return out


def lost(c):
    """Ticks some stream still lacked after the drain (late or lost), plus feed
    datagrams the server's socket dropped: 0 when everything arrived."""
    f = c.get("feed") or {}
    return (f.get("undelivered_after_drain") or 0) + (f.get("server_socket_drops") or 0)


def rcvbuf_text(figures, servers):
    """The feed sockets' receive buffers as the kernel set them, e.g. "64 MiB"."""
    seen = set()
    for s in servers:
        for k, v in figures[s].items():
            for c in (v["steps"] if k.startswith("s1") else [v]):
                b = (c.get("feed") or {}).get("server_socket_rcvbuf_bytes")
                if b:
                    seen.add(b)
    if not seen:
        return "an unknown amount"
    return " to ".join(f"{b / 1048576:g} MiB" for b in sorted(seen)[:: max(1, len(seen) - 1)])


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        return f"{v:,.0f}" + unit
    if abs(v) >= 1000:
        s = f"{v:,.0f}"
    elif abs(v) >= 100:
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s + unit


def row(label, vals, higher_better, unit, servers):
    """vals: {server: value}. Ratio is tickfand / go peer; the last column names the better one."""
    cells = [fmt(vals.get(s), unit) for s in servers]
    r = ratio(vals.get("tickfand"), vals.get("go-peer")) if len(servers) > 1 else None
    better = "-"
    if r is not None and vals.get("tickfand") == vals.get("go-peer"):
        better = "even"
    elif r is not None:
        better = "tickfand" if (r > 1) == higher_better else "go peer"
    line = f"| {label} | " + " | ".join(cells)
    if len(servers) > 1:
        line += f" | {fmt(r) + 'x' if r is not None else '-'} | {'higher' if higher_better else 'lower'} | {better} |"
    else:
        line += " |"
    return line


def header(servers):
    h = "| metric | " + " | ".join(NAMES[s] for s in servers)
    sep = "| --- | " + " | ".join("---" for _ in servers)
    if len(servers) > 1:
        h += " | tickfand / go peer | better is | better |"
        sep += " | --- | --- | --- |"
    else:
        h += " |"
        sep += " |"
    return h + "\n" + sep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--elapsed", type=float, default=None, help="seconds the scenarios took")
    ap.add_argument("--total", type=float, default=None, help="seconds with the installs and builds")
    ap.add_argument("--servers", default="tickfand go-peer")
    a = ap.parse_args()
    servers = a.servers.split()
    env = {}
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), a.mode + ".env")) as f:
        for line in f:
            m = re.match(r"^(\w+)=\"?([^\"#]*)\"?", line.strip())
            if m:
                env[m.group(1)] = m.group(2).strip()
    rates = [int(x) for x in env["S1_RATES"].split()]
    p99_limit = float(env["S1_P99_MS"])
    s1_streams = int(env["S1_STREAMS"])

    figures = {}
    for s in servers:
        f = {}
        steps = []
        capacity = None
        for r in rates:
            c = case(a.run_dir, "s1", r, s)
            c["offered_ticks_per_s"] = r
            c["offered_deliveries_per_s"] = r * s1_streams
            p99 = c["latency_ms"]["p99"]
            c["ok"] = c["ran"] and bool(
                c["bench_pass"] and c["gaps"] == 0 and c["order_violations"] == 0
                and c["streams_failed"] == 0 and lost(c) == 0 and p99 is not None and p99 < p99_limit
                and (c["delivered_per_s"] or 0) >= 0.97 * r * s1_streams)
            if c["ok"]:
                capacity = c["offered_deliveries_per_s"]
            steps.append(c)
        f["s1_fanout_capacity"] = {"steps": steps, "capacity_deliveries_per_s": capacity,
                                   "rule": f"highest step: all streams connected, no Gap or order violation, "
                                           f"every tick sent delivered to every stream, delivered >= 97% "
                                           f"of offered during the window, p99 < {p99_limit:g} ms "
                                           f"(from the scheduled emit time)"}
        f["s2_latency_fixed_load"] = case(a.run_dir, "s2", env["S2_RATE"], s)
        f["s3_single_stream"] = case(a.run_dir, "s3", env["S3_RATE"], s)
        s4 = case(a.run_dir, "s4", env["S2_RATE"], s)
        s2 = f["s2_latency_fixed_load"]
        s4["healthy_rate_vs_s2"] = ratio(s4["delivered_per_s"], s2["delivered_per_s"])
        s4["healthy_p99_vs_s2"] = ratio(s4["latency_ms"]["p99"], s2["latency_ms"]["p99"])
        f["s4_slow_consumer"] = s4
        s5 = case(a.run_dir, "s5", env["S5_RATE"], s)
        n5 = int(env["S5_IDLE"]) + int(env["S5_ACTIVE"])
        if s5.get("rss_peak_mb") is not None and s5.get("rss_before_mb") is not None:
            s5["streams"] = n5
            s5["rss_kb_per_stream"] = (s5["rss_peak_mb"] - s5["rss_before_mb"]) * 1024.0 / n5
        f["s5_connection_scale"] = s5
        figures[s] = f

    doc = {
        "mode": a.mode,
        "run_dir": "perf/results/" + os.path.relpath(os.path.abspath(a.run_dir), os.path.abspath(a.results)),
        "elapsed_s": a.elapsed,
        "total_s": a.total,
        "config": {k: env[k] for k in sorted(env)} | {
            "servers": servers, "server_cpu": 0, "bench_cpu": 1,
            "tickfand_args": "--topic bench --feed udp://127.0.0.1:PORT --udp-rcvbuf UDP_RCVBUF "
                             "(fresh data dir in /dev/shm; no simulator)",
            "go_peer_args": "--topic bench --feed udp://127.0.0.1:PORT --udp-rcvbuf UDP_RCVBUF "
                            "(defaults: --ring 1000000 --buffer 1024; no simulator)",
            "bench_args": "--threads 1, start live, --feed udp://127.0.0.1:PORT --rate R "
                          "--payload-bytes PAYLOAD_BYTES (sent once every stream is live); "
                          "latency = now - emitted_at_unix_micros (the scheduled emit time), "
                          "corrected for coordinated omission"},
        "machine": machine() | {"load_before": load_avg(os.path.join(a.run_dir, "load_before.txt")),
                                "load_after": load_avg(os.path.join(a.run_dir, "load_after.txt"))},
        "figures": figures,
    }
    with open(os.path.join(a.results, "latest.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")

    # ---- plot data (only the servers that ran)
    ran = [s for s in servers if figures[s]["s2_latency_fixed_load"]["ran"]
           or any(c["ran"] for c in figures[s]["s1_fanout_capacity"]["steps"])]
    with open(os.path.join(a.run_dir, "s1_rate.dat"), "w") as f:
        f.write("# offered_deliveries_per_s " + " ".join(ran) + "\n")
        for i, r in enumerate(rates):
            vals = [figures[s]["s1_fanout_capacity"]["steps"][i]["delivered_per_s"] for s in ran]
            f.write(f"{r * s1_streams} " + " ".join(str(v if v is not None else "NaN") for v in vals) + "\n")
    with open(os.path.join(a.run_dir, "s2_latency.dat"), "w") as f:
        f.write("# percentile " + " ".join(ran) + " (ms)\n")
        for k, label in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")):
            vals = [figures[s]["s2_latency_fixed_load"]["latency_ms"][k] for s in ran]
            f.write(f"{label} " + " ".join(str(v if v is not None else "NaN") for v in vals) + "\n")

    # ---- markdown
    m = machine()
    la_b, la_a = doc["machine"]["load_before"], doc["machine"]["load_after"]
    L = []
    L.append(f"# tickfan perf: `perf/run {a.mode}`\n")
    L.append(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}. "
             f"Load average before/after: {la_b[0] if la_b else '-'} / {la_a[0] if la_a else '-'}. "
             f"The scenarios took {fmt(a.elapsed)} s ({fmt(a.total)} s with the builds). Server on CPU 0 (tickfand with its default shards: 8 for the one CPU it may use), "
             f"tickfan-bench on CPU 1 (`--threads 1`). Both servers get the same feed: no "
             f"simulator; once its subscribers are live, the bench sends ticks "
             f"({env.get('PAYLOAD_BYTES', '?')}-byte bodies, topic `bench`) to the server's UDP feed "
             f"at the scenario's rate on a fixed schedule, each stamped with its scheduled "
             f"time. Latency is the bench's clock at receipt minus that scheduled time "
             f"(`emitted_at_unix_micros`, same host clock): corrected for coordinated "
             f"omission, and it includes the sender's own lateness; a tick a stream still "
             f"lacked 2 s after the feed stopped counts at its age then (a lower bound). "
             f"The servers' feed sockets had {rcvbuf_text(figures, servers)} of receive buffer. "
             f"The bench reads the Watch streams with {client_text(figures, servers)}. Server CPU "
             f"is read by the bench from /proc at the start and end of its run window (steady "
             f"state: no connect, no drain) and divided by the Data delivered in that window; "
             f"bench CPU is the client's own share of its core in the same window. Ratio = "
             f"tickfand / go peer; \"better is\" says which direction wins.\n")
    e = env
    L.append(f"## 1. Fanout capacity ({e['S1_STREAMS']} subscribers, {e['S1_CONNS']} connections, "
             f"{e['S1_SECONDS']} s per step)\n")
    L.append("| offered ticks/s | offered deliveries/s | " + " | ".join(
        f"{NAMES[s]} delivered/s | {NAMES[s]} p99 ms | {NAMES[s]} ok | bench CPU" for s in servers) + " |")
    L.append("| --- | --- | " + " | ".join("--- | --- | --- | ---" for _ in servers) + " |")
    for i, r in enumerate(rates):
        cells = []
        for s in servers:
            c = figures[s]["s1_fanout_capacity"]["steps"][i]
            why = "yes" if c["ok"] else "not run" if not c["ran"] else ("no (" + ", ".join(filter(None, [
                "gaps" if c["gaps"] or c["order_violations"] else "",
                "lost" if lost(c) else "",
                "p99" if (c["latency_ms"]["p99"] or 1e9) >= p99_limit else "",
                "rate" if (c["delivered_per_s"] or 0) < 0.97 * r * s1_streams else "",
                "check" if not c["bench_pass"] else ""])) + ")")
            bc = c.get("bench_cpu_pct")
            cells.append(f"{fmt(c['delivered_per_s'])} | {fmt(c['latency_ms']['p99'])} | {why} | "
                         f"{'-' if bc is None else '%.0f %%' % bc}")
        L.append(f"| {r} | {r * s1_streams:,} | " + " | ".join(cells) + " |")
    L.append("")
    L.append(header(servers))
    L.append(row("capacity, deliveries/s (no loss, p99 < %g ms)" % p99_limit,
                 {s: figures[s]["s1_fanout_capacity"]["capacity_deliveries_per_s"] for s in servers},
                 True, "", servers))
    L.append("")

    def block(title, key, rows):
        L.append(title + "\n")
        L.append(header(servers))
        for label, getter, hb, unit in rows:
            L.append(row(label, {s: getter(figures[s][key]) for s in servers}, hb, unit, servers))
        L.append("")

    lat_rows = [
        ("delivered msgs/s", lambda c: c["delivered_per_s"], True, ""),
        ("p50 latency, ms", lambda c: c["latency_ms"]["p50"], False, ""),
        ("p99 latency, ms", lambda c: c["latency_ms"]["p99"], False, ""),
        ("p99.9 latency, ms", lambda c: c["latency_ms"]["p999"], False, ""),
        ("max latency, ms", lambda c: c["latency_ms"]["max"], False, ""),
        ("p99 latency from ingest, ms", lambda c: c["latency_from_ingest_ms"]["p99"], False, ""),
        ("sender max lag behind schedule, ms", lambda c: c["feed"].get("sender_max_lag_ms"), False, ""),
        ("Gaps + order violations", lambda c: None if c["gaps"] is None else c["gaps"] + c["order_violations"], False, ""),
        ("ticks x streams not delivered after the drain", lambda c: c["feed"].get("undelivered_after_drain"), False, ""),
        ("feed datagrams dropped by the server's socket", lambda c: c["feed"].get("server_socket_drops"), False, ""),
        ("server CPU s per million delivered", lambda c: c["server_cpu_s_per_million"], False, ""),
        ("server CPU in the window, % of its core", lambda c: c.get("server_cpu_pct_window"), False, ""),
        ("bench CPU in the window, % of its core", lambda c: c.get("bench_cpu_pct"), False, ""),
        ("server VmRSS peak, MB", lambda c: c["rss_peak_mb"], False, ""),
    ]
    block(f"## 2. Latency at fixed load ({e['S2_STREAMS']} subscribers x {e['S2_RATE']} ticks/s, "
          f"{e['S2_SECONDS']} s)", "s2_latency_fixed_load", lat_rows)
    block(f"## 3. Single stream (feed at {int(e['S3_RATE']):,} ticks/s, {e['S3_SECONDS']} s)",
          "s3_single_stream", lat_rows[:13])
    block(f"## 4. Slow-consumer isolation (scenario 2 + {e['S4_STALL']} stalled subscribers, "
          f"{e['S4_SECONDS']} s)", "s4_slow_consumer", [
              ("healthy delivered msgs/s", lambda c: c["delivered_per_s"], True, ""),
              ("healthy rate / scenario 2", lambda c: c["healthy_rate_vs_s2"], True, ""),
              ("healthy p99 latency, ms", lambda c: c["latency_ms"]["p99"], False, ""),
              ("healthy p99 / scenario 2", lambda c: c["healthy_p99_vs_s2"], False, ""),
              ("Gaps + order violations (healthy)", lambda c: None if c["gaps"] is None else c["gaps"] + c["order_violations"], False, ""),
              ("ticks x healthy streams not delivered after the drain", lambda c: c["feed"].get("undelivered_after_drain"), False, ""),
              ("server CPU s per million delivered", lambda c: c["server_cpu_s_per_million"], False, ""),
              ("bench CPU in the window, % of its core", lambda c: c.get("bench_cpu_pct"), False, ""),
              ("server VmRSS peak, MB", lambda c: c["rss_peak_mb"], False, ""),
          ])
    block(f"## 5. Connection scale ({e['S5_IDLE']} idle streams over {e['S5_IDLE_CONNS']} connections "
          f"+ {e['S5_ACTIVE']} active at {e['S5_RATE']} ticks/s, {e['S5_SECONDS']} s)",
          "s5_connection_scale", [
              ("idle streams connected", lambda c: c.get("idle_streams_connected"), True, ""),
              ("active delivered msgs/s", lambda c: c["delivered_per_s"], True, ""),
              ("active p99 latency, ms", lambda c: c["latency_ms"]["p99"], False, ""),
              ("server VmRSS before, MB", lambda c: c["rss_before_mb"], False, ""),
              ("server VmRSS peak, MB", lambda c: c["rss_peak_mb"], False, ""),
              ("server memory per stream, KB", lambda c: c.get("rss_kb_per_stream"), False, ""),
          ])
    fails = []
    for s in servers:
        for k, v in figures[s].items():
            cs = v["steps"] if k.startswith("s1") else [v]
            for c in cs:
                if c.get("failures"):
                    fails.append(f"- {NAMES[s]} {k} (feed rate {c.get('feed_rate')}): " + "; ".join(c["failures"][:3]))
    if fails:
        L.append("## Checks that failed (tickfan-bench verdicts)\n")
        L.extend(fails)
        L.append("")
    L.append(f"Raw data: `perf/results/runs/{os.path.basename(a.run_dir.rstrip('/'))}/` "
             f"(bench JSON and text, server logs, VmRSS samples; kept locally, ignored by git).\n")
    with open(os.path.join(a.results, "latest.md"), "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
