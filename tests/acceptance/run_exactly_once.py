#!/usr/bin/python3
"""Exactly-once acceptance test: every event 1..N processed once, in order,
across many broken streams.

Starts tickfand (its own data directory, the simulator at --rate events/s,
heartbeats every --heartbeat-ms), a TCP proxy written here, and
exactly_once_consumer (built on the subscriber library) pointed at the proxy
with a heartbeat watchdog of 3x the cadence. Then breaks the consumer's
stream at --breaks random points (seeded; the seed is printed), a shuffled
mix of:

  reconnect    SIGUSR1 to the consumer: tickfan_sub_reconnect(), the client
               cancelling its own stream
  reset        the proxy resets every connection (SO_LINGER 0: TCP RST)
  stall        the proxy stops forwarding both ways without closing anything,
               until the consumer's watchdog gives up and it connects again;
               then the stalled connections flow again
  server_kill  SIGKILL tickfand and start it again on the same port and data
               directory (the proxy keeps listening)
  server_drain SIGTERM tickfand (it ends every stream with UNAVAILABLE and the
               cursor to resume from) and start it again the same way

With --subscribe N the consumer is exactly_once_mux_consumer instead: N
subscriptions to the topic over one Subscribe stream (the multiplexed
subscriber, src/client/muxsub.c), each resumed from its own cursor, each of which
must process exactly those events; its progress is that of its slowest
subscription.

A break is made only once the consumer has a working stream again after the
previous one; breaks are spread over the first --events events. The end is
open: the feed runs at its own pace however long the breaks take (a killed
server restarting under a sanitizer takes seconds), so all the breaks are
always made. After the last one the consumer is told to stop (SIGUSR2) and
chooses N: at least --events, and past every position it has seen. Pass:
the (seq, kind) lines it wrote are exactly the events 1..N of the topic (or,
with --kinds, exactly those of those kinds), read back from the server
afterwards with an independent grpcio client. Nothing lost, nothing twice,
nothing out of order.

Every process started here is killed on exit, whatever happens (and, through
PR_SET_PDEATHSIG, if this script itself is killed); every wait is bounded.
Exit 0 pass, 1 fail, 77 skipped (no grpcio, or a binary not built).

  tests/acceptance/run_exactly_once.py --bin-dir build --events 100000 --rate 5000 --breaks 40
  tests/acceptance/run_exactly_once.py --bin-dir build --subscribe 100
"""
import argparse
import collections
import json
import os
import queue
import random
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
BREAK_KINDS = ("reconnect", "reset", "stall", "server_kill", "server_drain")


class Failure(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rst_close(sock):
    """Closes with an RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


# --- the proxy ----------------------------------------------------------------

class _Conn:
    """One proxied connection: client <-> upstream, a buffer each way."""

    def __init__(self, client, upstream):
        self.socks = (client, upstream)
        self.out = (bytearray(), bytearray())  # bytes waiting to go to socks[i]
        self.eof = [False, False]  # socks[i] sent FIN
        self.shut = [False, False]  # we half-closed socks[i]
        self.registered = [False, False]
        self.stalled = False


class Proxy:
    """A TCP proxy on 127.0.0.1 in one selector thread.

    Methods called from other threads post a command and wait (bounded) for
    the proxy thread to run it, so sockets are only ever touched by that
    thread: no close() races a blocked recv().
    """
    MAX_BUF = 1 << 20

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.conns = []
        self.established = 0  # connections that reached the server
        self.refused = 0
        self._cmds = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)

    def start(self):
        self._thread.start()
        return self

    # commands (any thread) ------------------------------------------------
    def _call(self, fn, timeout=5.0):
        done = threading.Event()
        box = []
        self._cmds.put((fn, box, done))
        self._wake_w.send(b"x")
        if not done.wait(timeout):
            raise Failure(f"proxy did not run {fn.__name__} within {timeout} s")
        return box[0] if box else None

    def reset_all(self):
        def reset_all():
            n = len(self.conns)
            for c in list(self.conns):
                self._drop(c, rst=True)
            return n
        return self._call(reset_all)

    def stall_all(self):
        def stall_all():
            for c in self.conns:
                c.stalled = True
                self._update(c)
            return len(self.conns)
        return self._call(stall_all)

    def release_all(self):
        def release_all():
            for c in self.conns:
                c.stalled = False
                self._update(c)
        return self._call(release_all)

    def counts(self):
        return self._call(lambda: (self.established, self.refused, len(self.conns)))

    def stop(self):
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=5)
        for c in list(self.conns):
            for s in c.socks:
                s.close()
        self.lsock.close()
        self._wake_r.close()
        self._wake_w.close()

    # the proxy thread -------------------------------------------------------
    def _run(self):
        self.sel.register(self.lsock, selectors.EVENT_READ, ("listen", None, None))
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None, None))
        while not self._stop:
            for key, mask in self.sel.select(timeout=0.1):
                what, conn, i = key.data
                if what == "listen":
                    self._accept()
                elif what == "wake":
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                elif conn in self.conns:
                    self._io(conn, i, mask)
            while True:
                try:
                    fn, box, done = self._cmds.get_nowait()
                except queue.Empty:
                    break
                try:
                    box.append(fn())
                finally:
                    done.set()

    def _accept(self):
        while True:
            try:
                client, _ = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=1.0)
            except OSError:
                # The server is down: refuse the way a dead host would.
                self.refused += 1
                rst_close(client)
                continue
            for s in (client, up):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _Conn(client, up)
            self.conns.append(c)
            self.established += 1
            self._update(c)

    def _update(self, c):
        for i, s in enumerate(c.socks):
            other = 1 - i
            ev = 0
            if not c.stalled:
                if not c.eof[i] and len(c.out[other]) < self.MAX_BUF:
                    ev |= selectors.EVENT_READ
                if c.out[i]:
                    ev |= selectors.EVENT_WRITE
            # No interest (stalled, or nothing to do): not in the selector at
            # all, so a readable socket cannot spin the loop.
            try:
                if ev and c.registered[i]:
                    self.sel.modify(s, ev, ("conn", c, i))
                elif ev:
                    self.sel.register(s, ev, ("conn", c, i))
                    c.registered[i] = True
                elif c.registered[i]:
                    self.sel.unregister(s)
                    c.registered[i] = False
            except (KeyError, ValueError, OSError):
                pass

    def _drop(self, c, rst):
        if c in self.conns:
            self.conns.remove(c)
        for i, s in enumerate(c.socks):
            if c.registered[i]:
                try:
                    self.sel.unregister(s)
                except (KeyError, ValueError, OSError):
                    pass
                c.registered[i] = False
            if rst:
                rst_close(s)
            else:
                s.close()

    def _io(self, c, i, mask):
        s = c.socks[i]
        other = 1 - i
        try:
            if mask & selectors.EVENT_READ and not c.eof[i]:
                data = s.recv(65536)
                if data:
                    c.out[other].extend(data)
                else:
                    c.eof[i] = True
            if mask & selectors.EVENT_WRITE and c.out[i]:
                n = s.send(c.out[i])
                del c.out[i][:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            # A reset on one side is passed on as a reset on the other.
            self._drop(c, rst=True)
            return
        for j in (0, 1):
            # Pass a FIN on once everything before it went through.
            if c.eof[1 - j] and not c.out[j] and not c.shut[j]:
                c.shut[j] = True
                try:
                    c.socks[j].shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        if all(c.eof) and not c.out[0] and not c.out[1]:
            self._drop(c, rst=False)
            return
        self._update(c)


# --- processes ----------------------------------------------------------------

def pdeathsig_prefix():
    """Runs a child under setpriv so it dies with this script, if we can."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return []
    r = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=10)
    return [setpriv, "--pdeathsig", "KILL"] if "--pdeathsig" in r.stdout else []


class Server:
    def __init__(self, binary, port, data_dir, rate, heartbeat_ms, log_path, log_mib):
        self.port = port
        self.cmd = pdeathsig_prefix() + [
            binary, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
            "--sim-rate", str(rate), "--heartbeat-ms", str(heartbeat_ms),
            "--log-size", f"{log_mib}M"]
        self.log_path = log_path
        self.proc = None
        self.starts = 0

    def start(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            mark = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            with open(self.log_path, "ab") as lf:
                self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=lf,
                                             stderr=subprocess.STDOUT)
            self.starts += 1
            while time.monotonic() < deadline:
                with open(self.log_path, "rb") as lf:
                    lf.seek(mark)
                    text = lf.read().decode("utf-8", "replace")
                if "msg=listening" in text:
                    return
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            if self.proc.poll() is None:
                raise Failure(f"tickfand did not start listening within {timeout} s")
            # The port may still be held for a moment after a kill: retry.
            if time.monotonic() >= deadline:
                raise Failure(f"tickfand exited {self.proc.returncode} at start; see "
                              f"{self.log_path}")
            time.sleep(0.1)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                raise Failure("tickfand did not die within 10 s of SIGKILL") from None

    def stop(self):
        """SIGTERM, then SIGKILL after a grace period. Returns the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise Failure("tickfand did not exit within 15 s of SIGTERM") from None
        return self.proc.returncode if self.proc else 0


class Progress:
    """The consumer's output file, read incrementally: its (seq, kind) lines.

    With subs > 0 (the Subscribe consumer) each line starts with the
    subscription's index: by_sub[index] holds its (seq, kind) lines and
    `last` is the last seq of the subscription that is furthest behind."""

    def __init__(self, path, subs=0):
        self.path = path
        self.subs = subs
        self.by_sub = [[] for _ in range(subs)]
        self.pos = 0
        self.partial = b""
        self.lines = []

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return self.last
        self.pos += len(data)
        data = self.partial + data
        *full, self.partial = data.split(b"\n")
        for ln in full:
            if self.subs:
                idx, seq, kind = ln.decode().split(" ", 2)
                self.by_sub[int(idx)].append((int(seq), kind))
                continue
            seq, kind = ln.decode().split(" ", 1)
            self.lines.append((int(seq), kind))
        return self.last

    @property
    def last(self):
        if self.subs:
            return min(sub[-1][0] if sub else 0 for sub in self.by_sub)
        return self.lines[-1][0] if self.lines else 0


# --- ground truth ---------------------------------------------------------------

def read_truth(py_dir, addr, topic, n, timeout):
    """(seq, kind) of events 1..n, read unfiltered straight from the server."""
    sys.path.insert(0, py_dir)
    import grpc
    from events.v1 import watcher_pb2 as pb
    from events.v1 import watcher_pb2_grpc as pb_grpc

    out = []
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.WatcherStub(ch)
        call = stub.Watch(pb.WatchRequest(topic=topic, start=pb.START_EARLIEST),
                          timeout=timeout)
        try:
            for ev in call:
                if ev.WhichOneof("payload") != "data":
                    continue
                if ev.data.seq != len(out) + 1:
                    raise Failure(f"server replay: expected seq {len(out) + 1}, got "
                                  f"{ev.data.seq}: the server lost or reordered events")
                out.append((ev.data.seq, ev.data.kind))
                if len(out) == n:
                    break
        finally:
            call.cancel()
    if len(out) != n:
        raise Failure(f"server replay ended after {len(out)} of {n} events")
    return out


def compare(got, want):
    """Why got != want, in a few lines; None if equal."""
    if got == want:
        return None
    problems = []
    seqs = [s for s, _ in got]
    dup = [s for s, c in collections.Counter(seqs).items() if c > 1]
    if dup:
        problems.append(f"{len(dup)} seqs processed more than once, e.g. {sorted(dup)[:10]}")
    missing = sorted(set(s for s, _ in want) - set(seqs))
    if missing:
        problems.append(f"{len(missing)} seqs never processed, e.g. {missing[:10]}")
    extra = sorted(set(seqs) - set(s for s, _ in want))
    if extra:
        problems.append(f"{len(extra)} seqs processed that should not be, e.g. {extra[:10]}")
    if seqs != sorted(seqs):
        i = next(k for k in range(1, len(seqs)) if seqs[k] < seqs[k - 1])
        problems.append(f"out of order at line {i + 1}: {seqs[max(0, i - 2):i + 3]}")
    for k, (a, b) in enumerate(zip(got, want)):
        if a != b:
            problems.append(f"first difference at line {k + 1}: processed {a}, expected {b}")
            break
    if not problems:
        problems.append(f"{len(got)} lines processed, {len(want)} expected")
    return "; ".join(problems)


# --- the test -------------------------------------------------------------------

class Run:
    def __init__(self, args, work):
        self.a = args
        self.work = work
        self.hb = args.heartbeat_ms
        self.server = Server(os.path.join(args.bin_dir, "tickfand"), free_port(),
                             os.path.join(work, "data"), args.rate, self.hb,
                             os.path.join(work, "tickfand.log"),
                             # retention must keep 1..N for the check, and N
                             # grows with the run's length (the end is open)
                             max(64, (args.events + int(args.rate * args.timeout)) * 600
                                 // (1 << 20) + 1))
        self.proxy = None
        self.consumer = None
        self.out_path = os.path.join(work, "processed.txt")
        self.err_path = os.path.join(work, "consumer.stderr")
        self.progress = Progress(self.out_path, args.subscribe)
        self.done = collections.Counter()
        self.deadline = time.monotonic() + args.timeout

    def left(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Failure(f"the run took longer than --timeout {self.a.timeout} s")
        return left

    def consumer_alive(self):
        return self.consumer.poll() is None

    def wait(self, what, pred, timeout):
        """Polls pred until true; bounded by timeout and the run's deadline."""
        end = time.monotonic() + min(timeout, self.left())
        while time.monotonic() < end:
            if pred():
                return
            if not self.consumer_alive():
                # It finished meanwhile (with a filter it stops when its cursor
                # passes N, which its last matching seq need not show): run()
                # then checks the break count and the data.
                if pred() or self.consumer.returncode == 0:
                    return
                said = self.consumer.stdout.read().decode("utf-8", "replace").strip()
                raise Failure(f"the consumer exited ({self.consumer.returncode}) while "
                              f"waiting for {what}; it said: {said[-600:]}")
            time.sleep(0.005)
        raise Failure(f"timed out after {timeout:.1f} s waiting for {what}")

    def start(self):
        self.server.start()
        self.proxy = Proxy(self.server.port).start()
        cmd = [os.path.join(self.a.consumer),
               "--server", f"127.0.0.1:{self.proxy.port}", "--topic", "sim",
               "--through", str(self.a.events), "--open-end", "--out", self.out_path,
               "--heartbeat-timeout-ms", str(3 * self.hb),
               "--backoff-initial-ms", str(self.a.backoff_initial_ms),
               "--backoff-max-ms", str(self.a.backoff_max_ms), "--healthy-ms", "200"]
        if self.a.kinds:
            cmd += ["--kinds", self.a.kinds]
        if self.a.subscribe:
            cmd += ["--subs", str(self.a.subscribe)]
        self.err_file = open(self.err_path, "wb")
        self.consumer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=self.err_file)
        ready = self.consumer.stdout.readline()
        if b"ready" not in ready:
            raise Failure(f"consumer did not start: {ready!r}")

    def recovered(self, established_before):
        """Waits until a new connection reached the server and the consumer
        processed an event after it: the stream works again."""
        self.wait("a new connection to the server",
                  lambda: self.proxy.counts()[0] > established_before, 30)
        at = self.progress.poll()
        self.wait("an event processed on the new stream",
                  lambda: self.progress.poll() > at, 30)

    def do_break(self, kind):
        est = self.proxy.counts()[0]
        if kind == "reconnect":
            self.consumer.send_signal(signal.SIGUSR1)
        elif kind == "reset":
            if self.proxy.reset_all() == 0:
                raise Failure("reset: the proxy had no connection to reset")
        elif kind == "stall":
            if self.proxy.stall_all() == 0:
                raise Failure("stall: the proxy had no connection to stall")
            # Nothing flows now; only the consumer's watchdog gets it out.
            self.wait("the watchdog to give up on the stalled stream",
                      lambda: self.proxy.counts()[0] > est, 10 * 3 * self.hb / 1000 + 10)
            self.proxy.release_all()
        elif kind in ("server_kill", "server_drain"):
            if kind == "server_kill":
                self.server.kill()
            elif self.server.stop() != 0:
                raise Failure(f"tickfand exited {self.server.proc.returncode} on SIGTERM, "
                              "expected 0")
            time.sleep(self.rng.uniform(0, 0.2))
            self.server.start()
        self.recovered(est)
        self.done[kind] += 1

    def run(self, rng):
        self.rng = rng
        n, b = self.a.events, self.a.breaks
        plan = [BREAK_KINDS[i % len(BREAK_KINDS)] for i in range(b)]
        rng.shuffle(plan)
        self.start()
        self.wait("the first event", lambda: self.progress.poll() > 0, 30)
        for i, kind in enumerate(plan):
            # Spread the breaks over 1..n; once the feed has run past n
            # (slow breaks), keep a quarter of the planned spacing between
            # them. The consumer runs until told to stop, so every break is
            # made whatever the pace.
            at = self.progress.poll()
            gap = max((n - at) / (b - i + 1), n / (b + 1) / 4)
            target = at + max(1, int(gap * rng.uniform(0.3, 1.0)))
            self.wait(f"seq {target} before break {i + 1}",
                      lambda: self.progress.poll() >= target, 60)
            self.do_break(kind)
        if sum(self.done.values()) < MIN_BREAKS:
            raise Failure(f"only {sum(self.done.values())} breaks were made, "
                          f"at least {MIN_BREAKS} are required")
        self.consumer.send_signal(signal.SIGUSR2)
        try:
            self.consumer.wait(timeout=self.left())
        except subprocess.TimeoutExpired:
            raise Failure(f"the consumer did not stop within --timeout {self.a.timeout} s "
                          "of being told to") from None
        tail = self.consumer.stdout.read().decode("utf-8", "replace").strip().splitlines()
        self.progress.poll()
        try:
            self.stats = json.loads(tail[-1])
        except (IndexError, ValueError):
            raise Failure(f"no stats line from the consumer: {tail!r}") from None
        if self.consumer.returncode != 0 or not self.stats.get("reached"):
            raise Failure(f"consumer exited {self.consumer.returncode}: {self.stats}")
        self.n = self.stats["through"]
        if self.n < n:
            raise Failure(f"the consumer stopped at {self.n}, before --events {n}")
        return plan

    def cleanup(self):
        try:
            self._cleanup()
        except Failure as e:
            log(f"cleanup: {e}")

    def _cleanup(self):
        if self.consumer and self.consumer.poll() is None:
            self.consumer.kill()
            self.consumer.wait(timeout=10)
        if self.consumer:
            self.consumer.stdout.close()
            self.err_file.close()
        if self.proxy:
            self.proxy.stop()
        self.server.stop()


def sanitizer_reports(path):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return [ln for ln in text.splitlines()
            if "Sanitizer" in ln or "runtime error:" in ln]


MIN_BREAKS = 20  # the acceptance criterion: at least this many breaks survived


def check_watch(run, want, st):
    """The single-stream consumer: its lines, and a resume counted for every
    break of each kind."""
    why = compare(run.progress.lines, want)
    if why:
        raise Failure(f"processed sequence is wrong: {why}")
    if st["reconnect"] != run.done["reconnect"]:
        raise Failure(f"{run.done['reconnect']} SIGUSR1 sent, consumer counted "
                      f"{st['reconnect']} reconnects")
    if st["watchdog"] < run.done["stall"]:
        raise Failure(f"{run.done['stall']} stalls, only {st['watchdog']} watchdog resumes")
    if st["server"] < run.done["server_drain"]:
        raise Failure(f"{run.done['server_drain']} drains, only {st['server']} resumes "
                      "from a server status with a tickfan-cursor")
    if st["transport"] < run.done["reset"] + run.done["server_kill"]:
        raise Failure(f"fewer transport resumes ({st['transport']}) than resets and kills")


def check_subscribe(run, want, st):
    """The Subscribe consumer: every subscription's lines exactly, none
    ended, and the stream resumed at every break (a drain ends every
    subscription UNAVAILABLE, which the mux takes as a reconnect)."""
    if st["ended"]:
        raise Failure(f"{st['ended']} subscriptions ended (see the consumer's stderr)")
    bad = []
    for k, lines in enumerate(run.progress.by_sub):
        why = compare(lines, want)
        if why:
            bad.append(f"subscription {k}: {why}")
    if bad:
        raise Failure(f"{len(bad)} of {len(run.progress.by_sub)} subscriptions processed a "
                      "wrong sequence: " + "; ".join(bad[:5]))
    breaks = sum(run.done.values())
    if st["resumes"] < breaks:
        raise Failure(f"{breaks} breaks, only {st['resumes']} stream resumes")
    if st["reconnect"] < run.done["reconnect"]:
        raise Failure(f"{run.done['reconnect']} SIGUSR1 sent, consumer counted "
                      f"{st['reconnect']} reconnects")
    if st["watchdog"] < run.done["stall"]:
        raise Failure(f"{run.done['stall']} stalls, only {st['watchdog']} watchdog resumes")
    if st["reconnect"] + st["broken"] < run.done["reset"] + run.done["server_kill"] + \
            run.done["server_drain"] + run.done["reconnect"]:
        raise Failure(f"fewer resumes ({st['broken']} broken, {st['reconnect']} reconnect) "
                      "than resets, kills, drains and reconnects")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=os.environ.get("TICKFAN_BIN_DIR", "build"),
                    help="build directory with tickfand (default $TICKFAN_BIN_DIR or build)")
    ap.add_argument("--consumer", help="the consumer binary (default BIN_DIR/tests/"
                    "exactly_once_consumer)")
    ap.add_argument("--py-dir", help="generated Python stubs (default BIN_DIR/py)")
    ap.add_argument("--events", type=int, default=30000,
                    help="at least N: the breaks are spread over seq 1..N, and the run "
                    "processes seq 1..N or more")
    ap.add_argument("--rate", type=int, default=4000, help="simulator events per second")
    ap.add_argument("--breaks", type=int, default=24, help="stream breaks (at least 20)")
    ap.add_argument("--kinds", default="", help="consumer filter, e.g. trade")
    ap.add_argument("--subscribe", type=int, default=0, metavar="N",
                    help="N subscriptions over one Subscribe stream "
                    "(exactly_once_mux_consumer) instead of one Watch stream")
    ap.add_argument("--heartbeat-ms", type=int, default=100,
                    help="server heartbeat cadence; the consumer's watchdog is 3x this")
    ap.add_argument("--backoff-initial-ms", type=int, default=10,
                    help="consumer's resume backoff: first cap (default 10)")
    ap.add_argument("--backoff-max-ms", type=int, default=250,
                    help="consumer's resume backoff: largest cap (default 250). Every ms the "
                    "consumer is down while the server produces uses up seq space")
    ap.add_argument("--seed", type=int, help="break schedule seed (default: random)")
    ap.add_argument("--timeout", type=float,
                    help="whole run, seconds (default 60 + 3 x events/rate + 2 x breaks)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    a.bin_dir = os.path.abspath(a.bin_dir)
    if a.timeout is None:
        a.timeout = 60 + 3 * a.events / a.rate + 2 * a.breaks
    a.consumer = a.consumer or os.path.join(
        a.bin_dir, "tests", "exactly_once_mux_consumer" if a.subscribe else "exactly_once_consumer")
    a.py_dir = a.py_dir or os.path.join(a.bin_dir, "py")
    if a.breaks < 20:
        ap.error("--breaks: at least 20")
    for need in (os.path.join(a.bin_dir, "tickfand"), a.consumer):
        if not os.access(need, os.X_OK):
            print(f"SKIP: {need} is not built", file=sys.stderr)
            return SKIP
    try:
        import grpc  # noqa: F401
    except ImportError:
        print(f"SKIP: {sys.executable} has no grpcio (python3-grpcio)", file=sys.stderr)
        return SKIP

    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32)
    what = f"kinds={a.kinds}" if a.kinds else "unfiltered"
    if a.subscribe:
        what += f", {a.subscribe} subscriptions over Subscribe"
    log(f"exactly-once: N>={a.events} rate={a.rate}/s breaks={a.breaks} {what} "
        f"heartbeat={a.heartbeat_ms} ms watchdog={3 * a.heartbeat_ms} ms seed={seed}")
    # SIGTERM (ctest's timeout, a CI cancel) cleans up like any failure.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"killed by SIGTERM (seed={seed})"))

    work = tempfile.mkdtemp(prefix="tickfan-exactly-once-")
    run = Run(a, work)
    ok = False
    t0 = time.monotonic()
    try:
        run.run(random.Random(seed))
        elapsed = time.monotonic() - t0
        truth = read_truth(a.py_dir, f"127.0.0.1:{run.proxy.upstream_port}", "sim", run.n,
                           timeout=max(10.0, run.left()))
        kinds = set(a.kinds.split(",")) if a.kinds else None
        want = [e for e in truth if kinds is None or e[1] in kinds]
        st = run.stats
        if a.subscribe:
            check_subscribe(run, want, st)
        else:
            check_watch(run, want, st)
        code = run.server.stop()
        if code != 0:
            raise Failure(f"tickfand exited {code} on SIGTERM at the end, expected 0")
        bad = sanitizer_reports(run.err_path) + sanitizer_reports(run.server.log_path)
        if bad:
            raise Failure("sanitizer reports:\n  " + "\n  ".join(bad[:20]))
        ok = True
        survived = " ".join(f"{k}={run.done[k]}" for k in BREAK_KINDS)
        log(f"PASS: processed exactly the {len(want)} {'events' if kinds is None else a.kinds + ' events'}"
            f" among seq 1..{run.n}, once each, in order, in {elapsed:.1f} s")
        log(f"breaks survived: {survived} (total {sum(run.done.values())}); "
            f"server started {run.server.starts} times")
        if a.subscribe:
            log(f"consumer: {st['subs']} subscriptions, streams={st['streams']} resumes="
                f"{st['resumes']} (broken={st['broken']} reconnect={st['reconnect']} watchdog="
                f"{st['watchdog']}) adds_sent={st['adds_sent']} readds={st['readds']} "
                f"events={st['events']} deliveries={st['deliveries']} "
                f"responses={st['responses']}")
        else:
            log(f"consumer: streams={st['streams']} resumes={st['resumes']} (reconnect="
                f"{st['reconnect']} transport={st['transport']} server={st['server']} watchdog="
                f"{st['watchdog']}; UNAVAILABLE={st['unavailable']} INTERNAL={st['internal']}) "
                f"events={st['events']}")
        return 0
    except Failure as e:
        log(f"FAIL (seed={seed}): {e}")
        log(f"breaks done: {dict(run.done)}; work directory kept: {work}")
        for name, path in (("consumer stderr", run.err_path),
                           ("tickfand log", run.server.log_path)):
            try:
                with open(path, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()[-15:]
                print(f"--- {name} (last lines) ---\n" + "\n".join(lines), flush=True)
            except FileNotFoundError:
                pass
        return 1
    finally:
        run.cleanup()
        if ok and not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
