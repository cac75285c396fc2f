"""tickfan tail on the subscriber library: resumes across server drains,
kills and silent stalls, cursor files, --no-resume, and the errors it does
not resume. Runs the real tickfand on a fixed port so that it can come back
on the same address. Every wait is bounded; every process is killed at the
end."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_exactly_once as rx  # noqa: E402

BIN_DIR = os.path.abspath(os.environ.get("TICKFAN_BIN_DIR", "build"))
TICKFAN = os.path.join(BIN_DIR, "tickfan")
TICKFAND = os.path.join(BIN_DIR, "tickfand")
HB_MS = 100


@pytest.fixture
def server(tmp_path):
    srv = rx.Server(TICKFAND, rx.free_port(), str(tmp_path / "data"), 500, HB_MS,
                    str(tmp_path / "tickfand.log"), 64)
    srv.start()
    yield srv
    srv.stop()


class Tail:
    """tickfan tail in the background, stdout and stderr to files."""

    def __init__(self, tmp_path, *args):
        self.out_path = tmp_path / "tail.out"
        self.err_path = tmp_path / "tail.err"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([TICKFAN, "tail"] + [str(a) for a in args],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err)

    def data_seqs(self):
        seqs = []
        text = self.out_path.read_text()
        # Only whole lines: tail may be writing the last one right now.
        for line in text[:text.rfind("\n") + 1].splitlines():
            obj = json.loads(line)
            if obj["type"] == "data":
                seqs.append(obj["seq"])
        return seqs

    def stderr(self):
        return self.err_path.read_text()

    def wait_more(self, n, timeout=20.0):
        """Waits until n more data lines were printed than now."""
        want = len(self.data_seqs()) + n
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.data_seqs()) >= want:
                return
            assert self.proc.poll() is None, f"tail exited {self.proc.returncode}: {self.stderr()}"
            time.sleep(0.02)
        raise AssertionError(f"fewer than {n} new lines in {timeout} s; stderr:\n{self.stderr()}")

    def wait_exit(self, timeout=15.0):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tail still running after {timeout} s") from None

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._out.close()
        self._err.close()


@pytest.fixture
def tail(tmp_path):
    tails = []

    def start(*args):
        t = Tail(tmp_path, *args)
        tails.append(t)
        return t

    yield start
    for t in tails:
        t.close()


def run_tail(*args, timeout=20.0):
    return subprocess.run([TICKFAN, "tail"] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def addr(srv):
    return f"127.0.0.1:{srv.port}"


def test_tail_survives_drain_kill_and_stall_with_every_event_once(server, tail):
    t = tail("sim", "--server", addr(server), "--json", "--heartbeat-timeout-ms", 3 * HB_MS)
    t.wait_more(50)
    assert server.stop() == 0
    server.start()
    t.wait_more(50)
    server.kill()
    server.start()
    t.wait_more(50)
    # A silent server: nothing arrives, nothing is closed.
    server.proc.send_signal(signal.SIGSTOP)
    time.sleep(1.0)
    server.proc.send_signal(signal.SIGCONT)
    t.wait_more(50)
    t.proc.send_signal(signal.SIGINT)
    assert t.wait_exit() == 130
    seqs = t.data_seqs()
    assert seqs == list(range(1, len(seqs) + 1)), "lost or repeated lines across resumes"
    err = t.stderr()
    assert "stream ended by the server (UNAVAILABLE" in err, err
    assert "stream broken (UNAVAILABLE" in err, err
    assert f"stream silent for {3 * HB_MS} ms" in err, err
    assert "; resuming from cursor 1-" in err, err
    assert f"interrupted; resume with --cursor 1-" in err, err


def test_tail_cursor_file_continues_after_the_last_line_of_the_previous_run(server, tmp_path):
    cf = tmp_path / "sim.cursor"
    first = run_tail("sim", "--server", addr(server), "--json", "--count", 5, "--cursor-file", cf)
    assert first.returncode == 0, first.stderr
    last_cursor = [json.loads(ln) for ln in first.stdout.splitlines()][-1]["cursor"]
    assert cf.read_text() == last_cursor + "\n"
    second = run_tail("sim", "--server", addr(server), "--json", "--count", 5, "--cursor-file", cf)
    assert second.returncode == 0, second.stderr
    assert f"resuming from cursor {last_cursor}" in second.stderr
    seqs = [json.loads(ln)["seq"] for ln in (first.stdout + second.stdout).splitlines()
            if json.loads(ln)["type"] == "data"]
    assert seqs == list(range(1, 11))


def test_tail_no_resume_exits_1_with_the_cursor_when_the_server_drains(server, tail):
    t = tail("sim", "--server", addr(server), "--json", "--no-resume")
    t.wait_more(20)
    assert server.stop() == 0
    assert t.wait_exit() == 1
    err = t.stderr()
    assert "tickfan: UNAVAILABLE" in err and "resume with --cursor 1-" in err, err
    assert "resuming" not in err, err


def test_tail_out_of_range_is_not_resumed_and_names_the_earliest_cursor(server):
    r = run_tail("sim", "--server", addr(server), "--cursor", "1-0000000000000000-5")
    assert r.returncode == 1, r.stderr
    assert "OUT_OF_RANGE" in r.stderr and "earliest available cursor: 1-" in r.stderr, r.stderr
    assert "resuming" not in r.stderr, r.stderr


def test_tail_unreachable_server_gives_up_after_max_retries():
    port = rx.free_port()
    r = run_tail("sim", "--server", f"127.0.0.1:{port}", "--max-retries", 2)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("; resuming with the original request") == 2, r.stderr
    assert "giving up after 2 resumes" in r.stderr and "tickfan: UNAVAILABLE" in r.stderr


@pytest.mark.parametrize("args", [["--heartbeat-timeout-ms", "abc"],
                                  ["--heartbeat-timeout-ms", "-1"],
                                  ["--max-retries", "x"], ["--cursor-file", ""],
                                  ["--no-resume=1"]])
def test_tail_bad_resume_options_are_usage_errors(args):
    r = run_tail("sim", "--server", "127.0.0.1:1", *args)
    assert r.returncode == 2, r.stderr
    assert args[0].split("=")[0] in r.stderr, r.stderr


def test_tail_unreadable_cursor_file_fails_before_connecting(tmp_path):
    cf = tmp_path / "bad.cursor"
    cf.write_text("not a cursor\n")
    r = run_tail("sim", "--server", "127.0.0.1:1", "--cursor-file", cf)
    assert r.returncode == 1, r.stderr
    assert "does not hold a cursor" in r.stderr, r.stderr
