"""Kinds and keys filters deliver exactly the matching events, in order."""
import pytest

from tickfan_harness import Watch, cursor_parts


@pytest.mark.parametrize(
    "kinds,keys",
    [(["trade"], []), ([], ["AAPL"]), (["quote"], ["AAPL", "MSFT"])],
    ids=["kinds_trade", "keys_AAPL", "kinds_quote_and_keys_AAPL_MSFT"],
)
def test_filter_delivers_exactly_the_matching_events(tickfand, kinds, keys):
    srv = tickfand("--sim-rate", "2000")
    stub = srv.stub()

    f = Watch(stub, topic="sim", kinds=kinds, keys=keys)
    got = [f.next_data() for _ in range(60)]
    f.cancel()

    for ev in got:
        assert not kinds or ev.data.kind in kinds, ev
        assert not keys or ev.data.key in keys, ev
        assert ev.cursor

    got_seqs = [e.data.seq for e in got]
    assert all(b > a for a, b in zip(got_seqs, got_seqs[1:])), f"seq not increasing: {got_seqs}"
    assert any(b > a + 1 for a, b in zip(got_seqs, got_seqs[1:])), \
        "filtered seq is contiguous: the filter hid nothing"
    positions = [cursor_parts(e.cursor)[1] for e in got]
    assert all(b > a for a, b in zip(positions, positions[1:])), "cursors did not advance"

    # The unfiltered stream over the same range: the filtered stream must be
    # exactly its matching events, none skipped, none added.
    a = Watch(stub, topic="sim")
    everything = []
    while not everything or everything[-1].data.seq < got_seqs[-1]:
        everything.append(a.next_data())
    a.cancel()
    expected = [e.data for e in everything
                if (not kinds or e.data.kind in kinds) and (not keys or e.data.key in keys)]
    assert [e.data for e in got] == expected
