"""A full disk, made real with a small tmpfs: tickfand refuses to start with
a line naming the log file and the error, never dies of SIGBUS.

Needs root (mount); skipped loudly otherwise.
"""
import errno
import os
import signal
import subprocess
import time

import pytest

import tickfan_harness as h

LOG_SIZE = "1M"  # the log file is 1 MiB + a 4 KiB header, on a 2 MiB tmpfs


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs mounted for the test, always unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: mounting a small tmpfs needs root; the disk-full tests "
                    "were NOT run")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs ({r.stderr.strip()}); the disk-full "
                    "tests were NOT run")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=10).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def fill(path):
    """Writes `path` until the filesystem has no block left (ENOSPC)."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (64 * 1024, 4096, 1):
            buf = b"\xa5" * chunk
            while True:
                try:
                    f.write(buf)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break


def test_sparse_log_on_a_full_disk_refuses_the_start_naming_the_file(small_fs, tickfand):
    # small_fs first: it is unmounted after the servers are stopped
    data = small_fs / "data"
    flags = ("--log-size", LOG_SIZE, "--sim-rate", "500")
    srv = tickfand(*flags, data_dir=data)
    w = h.Watch(srv.stub(), topic="sim")
    w.next_data()  # records are in the log
    w.cancel()
    time.sleep(0.3)
    srv.stop()

    # The same file with holes where it holds zeros (a copy made with
    # --sparse=always, or a disk that filled while it was written), then
    # nothing left on the filesystem.
    log = data / "sim.log"
    size = log.stat().st_size
    sparse = data / "sim.log.sparse"
    subprocess.run(["cp", "--sparse=always", str(log), str(sparse)], check=True, timeout=10)
    os.replace(sparse, log)
    st = log.stat()
    assert st.st_size == size and st.st_blocks * 512 < size // 2, \
        f"precondition: {log} is not sparse ({st.st_blocks} blocks for {size} bytes)"
    fill(small_fs / "filler")

    start = time.monotonic()
    r = h.run_cli([h.TICKFAND, "--listen", "127.0.0.1:0", "--data-dir", data] + list(flags),
                  timeout=10)
    took = time.monotonic() - start
    out = r.stdout + r.stderr
    assert r.returncode != -signal.SIGBUS, f"tickfand died of SIGBUS; output: {out!r}"
    assert r.returncode > 0, f"exit {r.returncode} on a full disk; output: {out!r}"
    assert took < 5, f"took {took:.1f} s to refuse the start"
    lines = [ln for ln in out.splitlines() if str(log) in ln]
    assert any("No space left on device" in ln for ln in lines), \
        f"no line names {log} and 'No space left on device': {out!r}"
    # the file is left as it was: freeing space and starting again recovers it
    assert log.stat().st_size == size
    os.unlink(small_fs / "filler")
    srv = tickfand(*flags, data_dir=data)
    kv = srv.log_opened()
    assert kv["created"] == "false" and int(kv["records"]) > 0, kv
    assert kv["epoch_kept"] == "true", kv
