#!/usr/bin/env python3
"""Prints the ticks of one topic, resuming by itself across broken streams.

    PYTHONPATH=build/python python3 src/client/python/examples/tail.py \\
        --server localhost:50051 --topic sim --keys AAPL,MSFT --cursor-file /tmp/sim.cursor

One line per Data event: its sequence number, kind, key and (for the
market.v1.Tick bodies of the built-in simulator) price. Ctrl-C stops it;
with --cursor-file the next run carries on after the last line printed.
"""
import argparse
import signal
import sys

import tickfan
from market.v1 import tick_pb2


def describe(d):
    """One Data event as a line: seq, kind, key and, for the market.v1.Tick
    bodies of the built-in simulator, the price (tail_many.py uses it too)."""
    line = f"{d.seq} {d.kind} {d.key}"
    t = tick_pb2.Tick()
    try:
        t.ParseFromString(d.body)
        if t.HasField("quote"):
            line += f" bid {t.quote.bid_price} ask {t.quote.ask_price} e{t.price_exponent}"
        elif t.HasField("trade"):
            line += f" trade {t.trade.price} x {t.trade.size} e{t.price_exponent}"
    except Exception:
        line += f" ({len(d.body)} bytes)"
    return line


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="localhost:50051")
    ap.add_argument("--topic", default="sim")
    ap.add_argument("--keys", default="", help="comma-separated keys (symbols)")
    ap.add_argument("--cursor-file")
    ap.add_argument("--count", type=int, default=0, help="stop after N Data events")
    a = ap.parse_args()
    sub = tickfan.Subscriber(a.server, a.topic, keys=[k for k in a.keys.split(",") if k],
                             cursor_file=a.cursor_file, commit_every=1)
    signal.signal(signal.SIGINT, lambda *_: sub.stop())
    n = 0
    try:
        for ev in sub:
            kind = ev.WhichOneof("payload")
            if kind == "gap":
                print(f"# gap: {ev.gap.missed} missed ({tickfan.pb.GapReason.Name(ev.gap.reason)})")
            if kind != "data":
                continue
            print(describe(ev.data), flush=True)
            n += 1
            if a.count and n >= a.count:
                break
    except tickfan.OutOfRange as e:
        print(f"tail.py: {e}; earliest cursor {e.earliest_cursor}", file=sys.stderr)
        return 3
    except tickfan.StreamError as e:
        print(f"tail.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
