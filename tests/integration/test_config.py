"""Configuration: the option table of docs/configuration.md is the code's; --check-config;
a config file with topic sections; SIGHUP applies live settings and reports
what needs a restart; a bad file on SIGHUP keeps the running configuration."""
import os
import signal
import subprocess
import time

from tickfan_harness import TICKFAND, Watch

CONFIG_DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "configuration.md")


def test_the_documented_option_table_is_generated_from_the_option_table():
    table = subprocess.run([TICKFAND, "--options-markdown"], capture_output=True, text=True,
                           timeout=10, check=True).stdout.strip()
    assert table.startswith("| option |")
    with open(CONFIG_DOC) as f:
        assert table in f.read(), "docs/configuration.md option table differs: regenerate " \
                                  "it with tickfand --options-markdown"


def test_check_config_accepts_a_valid_file_and_names_what_is_wrong(tmp_path):
    good = tmp_path / "good.ini"
    good.write_text("heartbeat-ms = 700\n[topic fx]\nlog-size = 128K\n")
    r = subprocess.run([TICKFAND, "--config", str(good), "--check-config"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r
    bad = tmp_path / "bad.ini"
    bad.write_text("heartbeat-ms = 700\nmax-streams = lots\n")
    r = subprocess.run([TICKFAND, "--config", str(bad), "--check-config"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2
    assert f"{bad}:2" in r.stderr and "max-streams" in r.stderr and "lots" in r.stderr, r.stderr


def heartbeat_gaps(w, n):
    """Seconds between n+1 consecutive heartbeats."""
    times = []
    while len(times) < n + 1:
        t, ev = w.next_timed(timeout=10)
        if ev.WhichOneof("payload") == "heartbeat":
            times.append(t)
    return [b - a for a, b in zip(times, times[1:])]


def test_sighup_applies_a_new_heartbeat_cadence_and_reports_restart_needs(tickfand, tmp_path):
    conf = tmp_path / "t.ini"
    conf.write_text("[topic quiet]\nheartbeat-ms = 1000\n")
    srv = tickfand("--config", str(conf), "--feed", "none")
    w = Watch(srv.stub(), topic="quiet", deadline=60)
    assert min(heartbeat_gaps(w, 2)) > 0.7
    conf.write_text("shards = 1\n[topic quiet]\nheartbeat-ms = 150\n")
    mark = srv.mark()
    srv.signal(signal.SIGHUP)
    fields, _ = srv.wait_event("reloaded", since=mark)
    assert "topic.quiet.heartbeat-ms" in fields["changed"]
    assert fields["restart_needed"] == "shards"
    time.sleep(1.2)  # let a heartbeat of the old cadence go by
    assert max(heartbeat_gaps(w, 4)) < 0.5
    # a broken file: reported, and the running configuration stays
    conf.write_text("heartbeat-ms = never\n")
    mark = srv.mark()
    srv.signal(signal.SIGHUP)
    srv.wait_event("reload_failed", since=mark)
    assert max(heartbeat_gaps(w, 3)) < 0.5
    w.cancel()
