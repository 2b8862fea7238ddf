"""The journal's pure core: the bytes an entry's hash covers, and the chain check."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from lienthong.store.journal import (
    GENESIS,
    JournalEntry,
    canonical,
    entry_body,
    entry_row,
    make_entry,
    verify_chain,
)
from lienthong.store.lifecycle import PackageState, TransferState

# Text with what JSON must escape: quotes, backslashes, control characters, non-ASCII.
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ['"', "\\", "\n\t\x00\x1f\x7f", "Sở Nội vụ", "\u2028", "🙂"]
)
states = st.sampled_from([*PackageState, *TransferState]) | texts
times = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70)


def fields(
    seq: int, at: float, entity: str, entity_id: str, before: str | None, after: str, detail: str
) -> dict[str, object]:
    return {
        "seq": seq,
        "at": at,
        "entity": entity,
        "entity_id": entity_id,
        "from": before,
        "to": after,
        "detail": detail,
    }


@given(st.integers(0, 2**63), times, texts, texts, st.none() | states, states, texts)
def test_entry_body_is_the_canonical_json_of_the_entry(
    seq: int, at: float, entity: str, entity_id: str, before: str | None, after: str, detail: str
) -> None:
    expected = canonical(fields(seq, at, entity, entity_id, before, after, detail))
    assert entry_body(seq, at, entity, entity_id, before, after, detail) == expected


def test_entry_body_writes_states_as_their_values() -> None:
    body = entry_body(7, 1.5, "package", "p", PackageState.STORED, PackageState.ROUTED, "")
    assert body == (
        b'{"at":1.5,"detail":"","entity":"package","entity_id":"p",'
        b'"from":"stored","seq":7,"to":"routed"}'
    )


def test_a_changed_entry_breaks_the_chain_where_it_was_changed() -> None:
    entries = []
    head = (0, GENESIS)
    for n in range(5):
        entry = make_entry(head, 100.0 + n, "transfer", f"t{n}", None, TransferState.QUEUED)
        entries.append(entry)
        head = (entry.seq, entry.hash)
    assert verify_chain(entries, head).ok
    entries[2] = dataclasses.replace(entries[2], detail="edited")
    report = verify_chain(entries, head)
    assert not report.ok
    assert report.bad_seq == 3


def test_rows_as_a_store_writes_them_chain_like_entries() -> None:
    """The rows a store writes (entry_row) are the fields of make_entry's entries, in order,
    and a chain of them verifies."""
    head = (0, GENESIS)
    rows = []
    for n in range(3):
        row = entry_row(head, 100.0 + n, "transfer", f"t{n}", "queued", "in_flight", "to X")
        assert row == dataclasses.astuple(
            make_entry(head, 100.0 + n, "transfer", f"t{n}", "queued", "in_flight", "to X")
        )
        rows.append(row)
        head = (row[0], row[-1])
    assert verify_chain([JournalEntry(*row) for row in rows], head).ok
