"""The command-line tools: tickfan tail against a live server, tickfand flags."""
import json

import pytest

import tickfan_harness as h


def test_tail_json_prints_count_data_lines_and_exits_0(tickfand):
    srv = tickfand("--sim-rate", "500")
    r = h.run_cli([h.TICKFAN, "tail", "sim", "--server", srv.addr, "--count", "5", "--json"])
    assert r.returncode == 0, f"exit {r.returncode}; stderr: {r.stderr}"
    objs = []
    for line in r.stdout.splitlines():
        try:
            objs.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    data = [o for o in objs if o.get("type") == "data"]
    assert len(data) == 5, f"{len(data)} data lines in:\n{r.stdout}"
    assert all(o.get("cursor") for o in objs), r.stdout
    seqs = [o["seq"] for o in data]
    assert seqs == list(range(seqs[0], seqs[0] + 5)), r.stdout
    for o in data:
        assert o["kind"] in ("quote", "trade") and o["kind"] in o, o


def test_tail_unknown_topic_exits_1_with_not_found(tickfand):
    srv = tickfand("--sim-rate", "200")
    r = h.run_cli([h.TICKFAN, "tail", "nosuchtopic", "--server", srv.addr, "--count", "5",
                   "--json"])
    assert r.returncode == 1, f"exit {r.returncode}; stderr: {r.stderr}"
    assert "NOT_FOUND" in r.stderr, r.stderr
    assert not any('"type":"data"' in ln.replace(" ", "") for ln in r.stdout.splitlines())


@pytest.mark.parametrize("flags,named", [
    (["--heartbeat-ms", "abc"], ["--heartbeat-ms", "abc"]),
    (["--heartbeat-ms", "5"], ["--heartbeat-ms", "5"]),
    (["--log-size", "12Q"], ["--log-size", "12Q"]),
    (["--bogus"], ["--bogus"]),
    (["--overflow", "sometimes"], ["--overflow", "sometimes"]),
], ids=["heartbeat_ms_abc", "heartbeat_ms_out_of_range", "log_size_bad_suffix", "unknown_flag",
        "overflow_bad_choice"])
def test_tickfand_bad_option_exits_2_naming_it(tmp_path, flags, named):
    # If the server wrongly starts, it must not take the default port or
    # hang the test: loopback port 0, and run_cli kills it after the timeout.
    r = h.run_cli([h.TICKFAND, "--listen", "127.0.0.1:0", "--data-dir", tmp_path / "d"] + flags,
                  timeout=10)
    assert r.returncode == 2, f"exit {r.returncode}; stderr: {r.stderr}"
    for word in named:
        assert word in r.stderr, f"{word!r} not in stderr: {r.stderr!r}"
