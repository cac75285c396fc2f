"""pytest fixtures: start the real tickfand, always stop it, show its log on failure."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tickfan_harness as h  # noqa: E402


class ServerFactory:
    """The `tickfand` fixture: starts servers, remembers them for teardown."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.servers = []

    def __call__(self, *flags, data_dir=None):
        """Starts a tickfand with `flags` on a free loopback port and a fresh
        data directory (or `data_dir`); returns its h.Server."""
        d = data_dir or self.tmp_path / f"data{len(self.servers)}"
        return self._start(h.Server(flags, d))

    def restart(self, srv, flags=None):
        """Starts a new tickfand on the data directory of `srv`, which must
        have exited already (the test stops it its own way: srv.kill() for a
        crash, SIGTERM for a clean stop), with the same flags unless `flags`
        is given. Returns the new h.Server (new process, new port)."""
        assert srv.proc is not None and srv.proc.poll() is not None, \
            f"tickfand {srv.addr} is still running: stop it before restarting on its data dir"
        return self._start(srv.fresh(flags))

    def _start(self, srv):
        self.servers.append(srv)
        return srv.start()


@pytest.fixture
def tickfand(request, tmp_path):
    """Factory: tickfand(*flags, data_dir=None) starts a server on a free
    loopback port with a fresh data directory and returns its h.Server;
    tickfand.restart(srv) starts a new one on the data directory of a
    stopped one.

    Every server started is stopped at teardown (SIGTERM, SIGKILL after a
    grace period); one that does not exit 0 (unless it was killed on purpose
    with srv.kill()) or whose log holds a sanitizer report fails the test.
    """
    factory = ServerFactory(tmp_path)
    request.node.tickfan_servers = factory.servers

    yield factory

    problems = []
    for srv in factory.servers:
        problems += [f"tickfand {srv.addr}: {p}" for p in srv.shutdown()]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, srv in enumerate(getattr(item, "tickfan_servers", [])):
            rep.sections.append((f"tickfand #{i} ({srv.addr}) log tail", srv.tail(80)))
