"""The trace of a document merges what each node knows, in time order."""

from __future__ import annotations

import json

from lienthong.store.lifecycle import PackageState
from lienthong.store.model import InboxEntry, PackageMeta, PackageRecord, Receipt
from lienthong.trace import NodeView, render, trace

DOC = "000.01.05.H49,2026/11/22,15/UBND-VP"
META = PackageMeta(DOC, "edoc", "000.01.05.H49", ("000.03.07.H41",), "a" * 64, 10)


def _views() -> list[NodeView]:
    origin = NodeView(
        "000.01.05.H49",
        (PackageRecord("a" * 64, META, PackageState.DONE, None, 100.0, 101.0, None),),
        (
            Receipt(DOC, "hop", "stored", "000.00.05.H49", 101.0, "t1"),
            Receipt(DOC, "status", "01", "000.03.07.H41", 105.0),
            Receipt(DOC, "status", "06", "000.03.07.H41", 200.0, "Đã xử lý xong"),
        ),
        (),
    )
    destination = NodeView(
        "000.03.07.H41",
        (PackageRecord("a" * 64, META, PackageState.DELIVERED, "000.00.07.H41", 103, 103, None),),
        (),
        (InboxEntry(1, "a" * 64, DOC, "edoc", "000.01.05.H49", "000.03.07.H41", "new", 103.5),),
    )
    return [destination, origin]


def test_events_are_merged_in_time_order() -> None:
    """Submission, hop, delivery and statuses from two nodes come out oldest first."""
    kinds = [e.kind for e in trace(_views())]
    assert kinds == ["submitted", "hop", "delivered", "status", "status"]


def test_render_names_who_and_what() -> None:
    """The readable trace names the hop's neighbour, the recipient and each status with its
    meaning and note."""
    text = render(DOC, trace(_views()))
    assert "000.01.05.H49 -> 000.00.05.H49" in text
    assert "delivered to the inbox of 000.03.07.H41" in text
    assert "status 06 (completed) from 000.03.07.H41: Đã xử lý xong" in text
    assert "+07:00" in text


def test_repeated_views_do_not_repeat_events() -> None:
    """The same node's view given twice adds nothing."""
    views = _views()
    assert trace(views + views) == trace(views)


def test_unknown_document_says_so() -> None:
    """A document no node knows gives a sentence, not an empty screen."""
    assert "no node here knows" in render(DOC, [])


def test_json_form_has_local_time() -> None:
    """Events turn into JSON objects with a Vietnam-time ISO timestamp."""
    event = trace(_views())[0]
    data = json.loads(json.dumps(event.as_dict()))
    assert data["kind"] == "submitted"
    assert data["time"].endswith("+07:00")
