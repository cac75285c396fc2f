"""pytest fixtures: start the real tickfand, always stop it, show its log on failure."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tickfan_harness as h  # noqa: E402


@pytest.fixture
def tickfand(request, tmp_path):
    """Factory: tickfand(*flags, data_dir=None) starts a server on a free
    loopback port with a fresh data directory and returns its h.Server.

    Every server started is stopped at teardown (SIGTERM, SIGKILL after a
    grace period); one that does not exit 0 or whose log holds a sanitizer
    report fails the test.
    """
    servers = []
    request.node.tickfan_servers = servers

    def start(*flags, data_dir=None):
        d = data_dir or tmp_path / f"data{len(servers)}"
        srv = h.Server(flags, d)
        servers.append(srv)
        return srv.start()

    yield start

    problems = []
    for srv in servers:
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
