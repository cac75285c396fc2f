#!/usr/bin/env python3
"""Prints the ticks of several topics over one Subscribe stream, each
subscription resuming by itself from its own cursor.

    PYTHONPATH=build/python python3 src/client/python/examples/tail_many.py \\
        --server localhost:50051 --keys AAPL,MSFT --cursor-dir /tmp/cursors sim fx

One line per Data event: the topic, its sequence number, kind, key and (for
the market.v1.Tick bodies of the built-in simulator) price; a Gap is a
line starting with "#". Ctrl-C stops it; with --cursor-dir (a cursor file
per topic, TOPIC.cursor) the next run carries on after the last line
printed for each topic.
"""
import argparse
import os
import signal
import sys

import tickfan
from tail import describe  # the line for one Data event, as tail.py prints it


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("topics", nargs="+", help="topics to tail")
    ap.add_argument("--server", default="localhost:50051")
    ap.add_argument("--keys", default="", help="comma-separated keys (symbols), every topic")
    ap.add_argument("--kinds", default="", help="comma-separated kinds, every topic")
    ap.add_argument("--cursor-dir", help="a cursor file per topic in this directory")
    ap.add_argument("--live", action="store_true",
                    help="without a cursor, start at the head (default: the oldest event retained)")
    ap.add_argument("--count", type=int, default=0, help="stop after N Data events in all")
    a = ap.parse_args()
    if a.cursor_dir:
        os.makedirs(a.cursor_dir, exist_ok=True)
    mux = tickfan.MultiSubscriber(a.server)
    for topic in dict.fromkeys(a.topics):
        mux.add(topic, keys=[k for k in a.keys.split(",") if k],
                kinds=[k for k in a.kinds.split(",") if k],
                start=tickfan.pb.START_LIVE if a.live else None,
                cursor_file=os.path.join(a.cursor_dir, f"{topic}.cursor") if a.cursor_dir
                else None, commit_every=1)
    signal.signal(signal.SIGINT, lambda *_: mux.stop())
    n, rc = 0, 0
    try:
        for sub, msg in mux:
            if tickfan.is_end(msg):
                extra = f"; earliest cursor {msg.earliest_cursor}" if msg.earliest_cursor else ""
                print(f"tail_many.py: {sub.topic}: {msg.message}{extra}", file=sys.stderr)
                rc = 1
                if not mux.subscriptions():
                    break
                continue
            kind = msg.WhichOneof("payload")
            if kind == "gap":
                print(f"{sub.topic} # gap: {msg.gap.missed} missed "
                      f"({tickfan.pb.GapReason.Name(msg.gap.reason)})")
            if kind != "data":
                continue
            print(f"{sub.topic} {describe(msg.data)}", flush=True)
            n += 1
            if a.count and n >= a.count:
                break
    except tickfan.StreamError as e:
        print(f"tail_many.py: {e}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
