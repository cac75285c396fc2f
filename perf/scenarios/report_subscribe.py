#!/usr/bin/env python3
"""Turns one `perf/run subscribe` (or `subscribe-smoke`) directory into a
report: the same subscriptions served three ways, one row each (tickfand
Subscribe, also read with gRPC C core's client, tickfand Watch, the go
peer's Watch).

Writes RUN_DIR/subscribe.md and RUN_DIR/subscribe.json and prints the
markdown; `subscribe` mode also copies them to perf/results/subscribe.md and
subscribe.json (the smoke variant leaves perf/results alone). By hand:
report_subscribe.py --mode subscribe --run-dir DIR --results perf/results
"""
import argparse
import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import case, fmt, load, load_avg, lost, machine  # noqa: E402

ROWS = {"tickfand-subscribe": "tickfand Subscribe",
        "tickfand-subscribe-grpc": "tickfand Subscribe, read by gRPC C core",
        "tickfand-subscribe-1shard": "tickfand Subscribe, --shards 1",
        "tickfand-watch": "tickfand Watch", "go-peer-watch": "go peer Watch"}
# a bench at or above this share of its core limits what it measures
CLIENT_BOUND_PCT = 90.0
# ... and at or above this one it is close to that
CLIENT_NEAR_PCT = 75.0


def env_of(mode):
    env = {}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), mode + ".env")
    with open(path) as f:
        for line in f:
            m = re.match(r"^(\w+)=\"?([^\"#]*)\"?", line.strip())
            if m:
                env[m.group(1)] = m.group(2).strip()
    return env


def one(run_dir, scen, step, row):
    """report.case() plus what this scenario adds: the bench's own CPU, the
    wire figures, the server's CPU share of the bench run."""
    c = case(run_dir, scen, step, row)
    base = os.path.join(run_dir, f"{scen}.{step}.{row}")
    bench = load(base + ".json") or {}
    meta = load(base + ".meta.json") or {}
    res = bench.get("results", {})
    c.setdefault("bench_cpu_pct", None)  # case() sets it for a case that ran
    c["client_bound"] = c["bench_cpu_pct"] is not None and c["bench_cpu_pct"] >= CLIENT_BOUND_PCT
    c["wire"] = res.get("wire")
    wall = meta.get("server_wall_s")
    if c.get("server_cpu_pct_window") is not None:
        c["server_cpu_pct"] = c["server_cpu_pct_window"]
    else:
        c["server_cpu_pct"] = (100.0 * meta["server_cpu_s"] / wall
                               if wall and meta.get("server_cpu_s") is not None else None)
    c["rss_kb_per_subscription"] = None
    c["failure_statuses"] = res.get("failure_statuses") or {}
    c["first_failure"] = res.get("first_failure") or ""
    return c


def served(c):
    """The case ran and some subscription of it was served."""
    return bool(c and c.get("ran") and (c.get("streams_connected") or 0) > 0)


def failed_text(c):
    """What a cell says when the case did not serve anything."""
    if not c or not c.get("ran"):
        return "-"
    st = ", ".join(sorted(c.get("failure_statuses") or {})) or "no subscription served"
    return f"failed ({st})"


def cell(c, value, unit=""):
    return fmt(value, unit) if served(c) else failed_text(c)


def pct(v):
    return "-" if v is None else f"{v:.0f} %"


def bench_cell(c):
    """The bench's CPU, flagged when it limits the figure."""
    if not served(c):
        return "-"
    p = pct(c.get("bench_cpu_pct"))
    if c.get("client_bound"):
        return f"**{p} (client-bound)**"
    return f"{p} (near)" if (c.get("bench_cpu_pct") or 0) >= CLIENT_NEAR_PCT else p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--elapsed", type=float, default=None)
    ap.add_argument("--total", type=float, default=None)
    ap.add_argument("--rows", default=" ".join(ROWS))
    a = ap.parse_args()
    rows = a.rows.split()
    e = env_of(a.mode)
    rates = [int(x) for x in e["SUB_RATES"].split()]
    p99_limit = float(e["SUB_P99_MS"])
    n = int(e["SUB_STREAMS"])
    n_idle = int(e["SUB_IDLE"])

    fig = {}
    for r in rows:
        steps, capacity = [], None
        for rate in rates:
            c = one(a.run_dir, "cap", rate, r)
            c["offered_ticks_per_s"] = rate
            c["offered_deliveries_per_s"] = rate * n
            p99 = c["latency_ms"]["p99"]
            c["ok"] = c["ran"] and bool(
                c["bench_pass"] and c["gaps"] == 0 and c["order_violations"] == 0
                and c["streams_failed"] == 0 and lost(c) == 0 and p99 is not None
                and p99 < p99_limit and (c["delivered_per_s"] or 0) >= 0.97 * rate * n)
            if c["ok"]:
                capacity = c["offered_deliveries_per_s"]
            steps.append(c)
        idle = one(a.run_dir, "idle", n_idle, r)
        if served(idle) and idle.get("rss_peak_mb") is not None and idle.get("rss_before_mb") is not None:
            idle["rss_kb_per_subscription"] = (idle["rss_peak_mb"] - idle["rss_before_mb"]) * 1024.0 / n_idle
        fig[r] = {
            "capacity": {"steps": steps, "capacity_deliveries_per_s": capacity,
                         "client_bound_at_capacity": next(
                             (s["client_bound"] for s in steps
                              if s["offered_deliveries_per_s"] == capacity), None)},
            "fixed": one(a.run_dir, "fixed", e["SUB_FIXED_RATE"], r),
            "single": one(a.run_dir, "single", e["SUB_SINGLE_RATE"], r),
            "idle": idle,
        }

    doc = {"mode": a.mode, "run_dir": os.path.abspath(a.run_dir), "elapsed_s": a.elapsed,
           "total_s": a.total, "config": e | {"rows": rows, "server_cpu": 0, "bench_cpu": 1,
                                               "client_bound_pct": CLIENT_BOUND_PCT,
                                               "client_near_pct": CLIENT_NEAR_PCT},
           "machine": machine() | {"load_before": load_avg(os.path.join(a.run_dir, "load_before.txt")),
                                   "load_after": load_avg(os.path.join(a.run_dir, "load_after.txt"))},
           "figures": fig}

    m = doc["machine"]
    lb, la = m["load_before"], m["load_after"]
    L = [f"# tickfan perf: `perf/run {a.mode}` — Subscribe against Watch\n"]
    if a.mode.endswith("smoke"):
        L.append("**Smoke run: windows of about a second. It shows that every row and case "
                 "runs; its figures are not measurements.**\n")
    L.append(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}. Load average "
             f"before/after: {lb[0] if lb else '-'} / {la[0] if la else '-'}. The scenarios took "
             f"{fmt(a.elapsed)} s. Server on CPU 0, tickfan-bench on CPU 1 (`--threads 1`; its "
             f"feed sender thread shares that CPU). {n:,} subscriptions over {e['SUB_CONNS']} "
             f"connections: tickfand Subscribe carries {e['SUB_PER_STREAM']} per bidi stream "
             f"({-(-n // int(e['SUB_PER_STREAM']))} streams); the Watch rows open one stream "
             f"per subscription. Same feed for every row ({e['PAYLOAD_BYTES']}-byte bodies, "
             f"sent by the bench on a fixed schedule once every subscription is live); latency "
             f"per delivery from each tick's scheduled emit time (corrected for coordinated "
             f"omission). **Bench CPU** is the client's own share of its core during the "
             f"window: at {CLIENT_BOUND_PCT:g} % or more the client, not the server, may be "
             f"what limits the figure, and such a cell is marked client-bound: no result "
             f"(\"near\": {CLIENT_NEAR_PCT:g} % or more, read with care).\n")

    L.append("## Summary\n")
    L.append(f"| row | capacity, deliveries/s (no loss, p99 < {p99_limit:g} ms) | bench CPU at capacity "
             f"| p99 ms at {n:,} x {e['SUB_FIXED_RATE']}/s | server CPU s per million deliveries "
             f"| server CPU | deliveries per message | bench CPU "
             f"| 1 subscription at {int(e['SUB_SINGLE_RATE']):,}/s: delivered/s | bench CPU "
             f"| server RSS per idle subscription, KB ({n_idle:,} over {e['SUB_IDLE_STREAMS']} streams) |")
    L.append("| --- " * 11 + "|")
    for r in rows:
        f = fig[r]
        cap = f["capacity"]
        cap_step = next((s for s in cap["steps"]
                         if s["offered_deliveries_per_s"] == cap["capacity_deliveries_per_s"]), None)
        fx, sg, idle = f["fixed"], f["single"], f["idle"]
        dpm = (fx.get("wire") or {}).get("deliveries_per_message")
        if cap["capacity_deliveries_per_s"]:
            cap_txt = fmt(cap["capacity_deliveries_per_s"])
        elif any(served(s) for s in cap["steps"]):
            cap_txt = f"< {rates[0] * n:,}"
        else:
            cap_txt = failed_text(next((s for s in cap["steps"] if s["ran"]), None))
        L.append(f"| {ROWS[r]} | {cap_txt} | {bench_cell(cap_step)} "
                 f"| {cell(fx, fx['latency_ms']['p99'])} "
                 f"| {cell(fx, fx['server_cpu_s_per_million'])} "
                 f"| {pct(fx.get('server_cpu_pct')) if served(fx) else '-'} "
                 f"| {cell(fx, dpm)} | {bench_cell(fx)} "
                 f"| {cell(sg, sg['delivered_per_s'])} | {bench_cell(sg)} "
                 f"| {cell(idle, idle.get('rss_kb_per_subscription'))} |")
    L.append("")
    L.append("Server CPU is its share of CPU 0 in the bench's run window, read by the bench "
             "from /proc at the window's start and end (steady state: no connect, no drain); "
             "per million deliveries divides that CPU time by the Data delivered in the window. "
             "Every row is read with the bench's `--client h2` (HTTP/2 frames parsed in "
             "place, the flow-control window handed back in large steps) but the one read by "
             "gRPC C core's client (`--client grpc`), which returns the window after every "
             "message, as the C and Python client libraries do: two WINDOW_UPDATE frames the "
             "server reads per message. Deliveries per message: Data and other events delivered, per gRPC "
             "message the bench received (Watch: 1).\n")

    L.append(f"## Capacity steps ({e['SUB_CAP_SECONDS']} s per step)\n")
    L.append("| offered ticks/s | offered deliveries/s | " + " | ".join(
        f"{ROWS[r]}: delivered/s, p99 ms, ok, bench CPU" for r in rows) + " |")
    L.append("| --- | --- | " + " | ".join("---" for _ in rows) + " |")
    for i, rate in enumerate(rates):
        cells = []
        for r in rows:
            c = fig[r]["capacity"]["steps"][i]
            if not served(c):
                err = c.get("error") or ""
                cells.append(failed_text(c) if c["ran"] else
                             err if err.startswith("skipped") else "not run")
                continue
            why = "yes" if c["ok"] else "no (" + ", ".join(filter(None, [
                "gaps" if c["gaps"] or c["order_violations"] else "",
                "lost" if lost(c) else "",
                "p99" if (c["latency_ms"]["p99"] or 1e9) >= p99_limit else "",
                "rate" if (c["delivered_per_s"] or 0) < 0.97 * rate * n else "",
                "check" if not c["bench_pass"] else ""])) + ")"
            cells.append(f"{fmt(c['delivered_per_s'])}, {fmt(c['latency_ms']['p99'])}, {why}, "
                         f"{bench_cell(c)}")
        L.append(f"| {rate} | {rate * n:,} | " + " | ".join(cells) + " |")
    L.append("")

    fails = []
    for r in rows:
        for k in ("fixed", "idle"):
            c = fig[r][k]
            if c.get("failures"):
                first = f" (first: {c['first_failure']})" if c.get("first_failure") else ""
                fails.append(f"- {ROWS[r]} {k}: " + "; ".join(c["failures"][:3]) + first)
            elif not c.get("ran"):
                fails.append(f"- {ROWS[r]} {k}: did not run ({c.get('error')})")
    if fails:
        L.append("## Checks that failed (tickfan-bench verdicts; the single-subscription case "
                 "is expected to end with slow-consumer Gaps and is left out)\n")
        L.extend(fails)
        L.append("")
    L.append(f"Raw data: `{os.path.abspath(a.run_dir)}/` (bench JSON and text, server logs, "
             f"VmRSS samples).\n")

    md = "\n".join(L)
    with open(os.path.join(a.run_dir, "subscribe.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.run_dir, "subscribe.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    if a.mode == "subscribe":
        for name in ("subscribe.md", "subscribe.json"):
            shutil.copyfile(os.path.join(a.run_dir, name), os.path.join(a.results, name))
    print(md)


if __name__ == "__main__":
    main()
