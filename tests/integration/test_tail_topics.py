"""tickfan tail with several topics: one Subscribe stream against the real
tickfand, a topic on every line, per-topic cursors that resume exactly."""
import json
import re
import signal
import subprocess
import threading
import time

import tickfan_harness as h

TOPIC_LINE = re.compile(r" topic=(\S+) cursor=(\S+)$")
SEQ = re.compile(r" seq=(\d+) ")
RESUME = re.compile(r"resume with (--cursor \S+(?: --cursor \S+)*)")


def two_topic_server(tickfand, *extra):
    return tickfand("--feed", "sim", "--feed", "sim:fx", "--sim-rate", "200", *extra)


def parse_text(stdout):
    """[(topic, seq or None, cursor)] of every line; each must name a topic."""
    out = []
    for line in stdout.splitlines():
        m = TOPIC_LINE.search(line)
        assert m, f"line without topic= before cursor=: {line!r}"
        s = SEQ.search(line)
        out.append((m.group(1), int(s.group(1)) if s else None, m.group(2)))
    return out


def tail_until_both(args, n=3, timeout=30):
    """Runs `tickfan tail` ARGS until it has printed n events of each of sim
    and fx, then interrupts it: (exit code, all of stdout, stderr). One
    topic's replay may come first in whole batches (a slow build leaves a
    long backlog behind), so no fixed --count is sure to reach the other."""
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lines, counts = [], {"sim": 0, "fx": 0}
    deadline = time.monotonic() + timeout
    while min(counts.values()) < n and time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        for t, s, _ in parse_text(line):
            if s is not None:
                counts[t] += 1
    p.send_signal(signal.SIGINT)
    # read on through the same buffered pipe: communicate() would read the
    # file descriptor and skip what readline() has buffered already
    watchdog = threading.Timer(15, p.kill)
    watchdog.start()
    try:
        rest = p.stdout.read()
        err = p.stderr.read()
        p.wait()
    finally:
        watchdog.cancel()
    return p.returncode, "".join(lines) + rest, err


def watch_cursors(srv, topic, n):
    """{seq: cursor} of the first n events of topic, read with Watch."""
    w = h.Watch(srv.stub(), topic=topic)
    got = {}
    try:
        while len(got) < n:
            ev = w.next_data()
            got[ev.data.seq] = ev.cursor
    finally:
        w.cancel()
    return got


def test_text_lines_of_two_topics_say_which_topic_they_are_from(tickfand):
    srv = two_topic_server(tickfand)
    mark = srv.mark()
    r = h.run_cli([h.TICKFAN, "tail", "sim", "fx", "--server", srv.addr, "--count", "60"])
    assert r.returncode == 0, f"exit {r.returncode}; stderr: {r.stderr}"
    # One Subscribe stream carried both topics.
    log = srv.lines[mark:]
    assert sum("msg=subscribe_opened" in ln for ln in log) == 1, "\n".join(log)
    assert sum("msg=subscription_opened" in ln for ln in log) == 2, "\n".join(log)
    assert not any("msg=stream_opened" in ln for ln in log), "\n".join(log)
    lines = parse_text(r.stdout)
    data = [(t, s, c) for t, s, c in lines if s is not None]
    assert len(data) == 60, r.stdout
    assert {t for t, _, _ in data} == {"sim", "fx"}, r.stdout
    for topic in ("sim", "fx"):
        seqs = [s for t, s, _ in data if t == topic]
        # Each topic replayed from its start, in order, nothing skipped or repeated.
        assert seqs == list(range(1, len(seqs) + 1)), f"{topic}: {seqs}"
        # The label is true: the cursor is the one Watch gives that topic's seq.
        truth = watch_cursors(srv, topic, len(seqs))
        for t, s, c in data:
            if t == topic:
                assert c == truth[s], f"{topic} seq {s}: tail {c}, Watch {truth[s]}"


def test_json_lines_carry_a_topic_key_after_type_and_filters_apply_to_each(tickfand):
    srv = two_topic_server(tickfand)
    r = h.run_cli([h.TICKFAN, "tail", "sim", "fx", "--server", srv.addr, "--count", "20",
                   "--json", "--keys", "AAPL", "--kinds", "quote"])
    assert r.returncode == 0, f"exit {r.returncode}; stderr: {r.stderr}"
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    for line, o in zip(r.stdout.splitlines(), objs):
        assert list(o)[:3] == ["type", "topic", "cursor"], line
        assert o["topic"] in ("sim", "fx"), line
    data = [o for o in objs if o["type"] == "data"]
    assert len(data) == 20
    assert all(o["key"] == "AAPL" and o["kind"] == "quote" for o in data), r.stdout
    assert {o["topic"] for o in data} == {"sim", "fx"}, r.stdout
    for topic in ("sim", "fx"):
        seqs = [o["seq"] for o in data if o["topic"] == topic]
        assert seqs == sorted(set(seqs)), f"{topic}: {seqs}"


def test_one_topic_still_uses_watch_without_a_topic_field(tickfand):
    srv = two_topic_server(tickfand)
    r = h.run_cli([h.TICKFAN, "tail", "fx", "--server", srv.addr, "--count", "5"])
    assert r.returncode == 0, r.stderr
    assert r.stdout and "topic=" not in r.stdout, r.stdout
    r = h.run_cli([h.TICKFAN, "tail", "fx", "--server", srv.addr, "--count", "5", "--json"])
    assert all("topic" not in json.loads(line) for line in r.stdout.splitlines()), r.stdout
    srv.wait_event("stream_opened", topic="fx", timeout=10)
    assert not any("msg=subscribe_opened" in ln for ln in srv.lines), srv.tail()


def test_interrupted_tail_resumes_every_topic_after_its_last_line(tickfand):
    srv = two_topic_server(tickfand)
    p = subprocess.Popen([h.TICKFAN, "tail", "sim", "fx", "--server", srv.addr],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    seen = {"sim": 0, "fx": 0}  # events read of each topic
    deadline = time.monotonic() + 30
    while (sum(seen.values()) < 50 or min(seen.values()) < 3) and time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        for t, s, _ in parse_text(line):
            if s is not None:
                seen[t] += 1
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate(timeout=15)
    assert p.returncode == 130, f"exit {p.returncode}; stderr: {err}"
    # Lines already read are gone from the pipe: the rest tells the last ones.
    m = RESUME.search(err)
    assert m, err
    given = dict(a.split("=", 1) for a in re.findall(r"--cursor (\S+)", m.group(1)))
    assert set(given) == {"sim", "fx"}, err
    last_seq = {t: h.cursor_parts(c)[1] for t, c in given.items()}
    for t, s, c in parse_text(rest):
        if s is not None:
            assert s <= last_seq[t], f"{t}: line seq {s} after the resume cursor {given[t]}"

    args = [h.TICKFAN, "tail", "sim", "fx", "--server", srv.addr]
    for t, c in given.items():
        args += ["--cursor", f"{t}={c}"]
    rc, out, err = tail_until_both(args)
    assert rc == 130, f"exit {rc}; stderr: {err}"
    for topic in ("sim", "fx"):
        seqs = [s for t, s, _ in parse_text(out) if t == topic and s is not None]
        assert seqs, f"no {topic} line after the resume:\n{out}"
        assert seqs[0] == last_seq[topic] + 1, f"{topic}: resumed at {seqs[0]}, " \
                                               f"last printed {last_seq[topic]}"
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{topic}: {seqs}"


def test_cursor_file_is_kept_per_topic(tickfand, tmp_path):
    srv = two_topic_server(tickfand)
    base = tmp_path / "md.cursor"
    rc, out, err = tail_until_both([h.TICKFAN, "tail", "sim", "fx", "--server", srv.addr,
                                    "--cursor-file", base])
    assert rc == 130, f"exit {rc}; stderr: {err}"
    last = {}
    for t, _, c in parse_text(out):
        last[t] = c
    for topic in ("sim", "fx"):
        path = tmp_path / f"md.cursor.{topic}"
        assert path.read_text() == last[topic] + "\n", topic
    # A second run continues after the first, per topic.
    r2 = h.run_cli([h.TICKFAN, "tail", "sim", "fx", "--server", srv.addr, "--count", "10",
                    "--cursor-file", base])
    assert r2.returncode == 0, r2.stderr
    for t, s, _ in parse_text(r2.stdout):
        if s is not None:
            assert s > h.cursor_parts(last[t])[1], f"{t} seq {s} printed twice"


def test_an_unknown_topic_among_several_ends_tail_with_exit_1_naming_it(tickfand):
    srv = two_topic_server(tickfand)
    r = h.run_cli([h.TICKFAN, "tail", "sim", "nosuchtopic", "--server", srv.addr,
                   "--start", "live", "--count", "100000"])
    assert r.returncode == 1, f"exit {r.returncode}; stderr: {r.stderr}"
    assert "topic nosuchtopic: NOT_FOUND" in r.stderr, r.stderr


def test_several_topics_want_topic_named_cursors(tickfand):
    r = h.run_cli([h.TICKFAN, "tail", "sim", "fx", "--server", "127.0.0.1:1", "--cursor",
                   "1-00000000000000ab-5"])
    assert r.returncode == 2, r.stderr
    assert "TOPIC=CURSOR" in r.stderr, r.stderr
    r = h.run_cli([h.TICKFAN, "tail", "sim", "sim", "--server", "127.0.0.1:1"])
    assert r.returncode == 2 and "twice" in r.stderr, r.stderr
