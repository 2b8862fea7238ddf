"""The bookkeeping that keeps one transfer from being taken twice, and the rows read ahead."""

from __future__ import annotations

from lienthong.store.takes import AHEAD_TTL_S, Takes


def _rows(*ids: str) -> list[dict[str, str]]:
    return [{"transfer_id": tid} for tid in ids]


def test_a_take_committed_during_a_read_is_not_taken_from_it() -> None:
    """A read that began before a take was committed may have seen that transfer queued: its
    row is not usable; a read begun after the commit has no such doubt."""
    takes = Takes()
    takes.reserve("t1", 100.0)
    early = takes.begin_read()
    assert not takes.usable({"transfer_id": "t1"}, 0)  # reserved
    takes.committed("t1")
    rows, _, keep = takes.end_read(early, _rows("t1", "t2"))
    assert keep
    assert rows == _rows("t2")
    late = takes.begin_read()
    rows, _, _ = takes.end_read(late, _rows("t1", "t2"))
    assert rows == _rows("t1", "t2")


def test_rows_read_ahead_are_used_in_order_skipping_those_taken_since() -> None:
    """Rows kept ahead come out in order; one reserved, or whose take committed after their
    read, is skipped; none is left after the last."""
    takes = Takes()
    reading = takes.begin_read()
    rows, seen, keep = takes.end_read(reading, _rows("t1", "t2", "t3", "t4"))
    assert keep
    takes.keep_ahead("H41", seen, 10.0, rows)
    takes.reserve("t2", 100.0)
    takes.committed("t2")  # taken another way (a lease that ran out, taken in a transaction)
    takes.reserve("t3", 100.0)
    first = takes.next_ahead("H41", 10.1)
    assert first is not None
    assert first["transfer_id"] == "t1"
    assert takes.next_ahead("H30", 10.1) is None  # another hop has none
    second = takes.next_ahead("H41", 10.2)
    assert second is not None
    assert second["transfer_id"] == "t4"
    assert takes.next_ahead("H41", 10.3) is None


def test_rows_read_ahead_expire_and_are_dropped_by_other_writes() -> None:
    """Rows older than the time limit are not used; a write that may move queued transfers
    drops them, and a read under way at that moment keeps nothing."""
    takes = Takes()
    takes.keep_ahead("H41", 0, 10.0, _rows("t1", "t2"))
    assert takes.next_ahead("H41", 10.0 + AHEAD_TTL_S + 0.1) is None
    takes.keep_ahead("H41", 0, 20.0, _rows("t1", "t2"))
    reading = takes.begin_read()
    takes.drop_ahead()
    assert takes.next_ahead("H41", 20.1) is None
    _, _, keep = takes.end_read(reading, [])
    assert not keep
    assert takes.skip == 0


def test_nothing_read_ahead_is_used_or_kept_while_a_moving_batch_commits() -> None:
    """While a batch that may move queued transfers commits (its rows may already be visible
    to reads), rows read ahead before are dropped, a read that ends meanwhile keeps nothing,
    and once it is committed only reads begun after that are kept."""
    takes = Takes()
    takes.keep_ahead("hop", 0, 10.0, _rows("t1", "t2"))
    takes.hold()
    assert takes.next_ahead("hop", 10.1) is None
    during = takes.begin_read()
    rows, _, keep = takes.end_read(during, _rows("t3"))
    assert rows == _rows("t3")
    assert not keep
    spanning = takes.begin_read()
    takes.release()
    _, _, keep = takes.end_read(spanning, _rows("t3"))
    assert not keep
    after = takes.begin_read()
    rows, seen, keep = takes.end_read(after, _rows("t3", "t4"))
    assert keep
    takes.keep_ahead("hop", seen, 10.2, rows[1:])
    assert takes.next_ahead("hop", 10.3) == {"transfer_id": "t4"}
