"""The trace of a document merges what each node knows, in time order."""

from __future__ import annotations

import json

from lienthong.store.lifecycle import PackageState
from lienthong.store.model import InboxEntry, PackageMeta, PackageRecord, Receipt
from lienthong.trace import DOCUMENT, NodeView, story, trace

DOC = "000.01.05.H49,2026/11/22,15/UBND-VP"
META = PackageMeta(DOC, "edoc", "000.01.05.H49", ("000.03.07.H41",), "a" * 64, 10)
ORIGIN, DEST, DISTRICT = "000.01.05.H49", "000.03.07.H41", "000.00.07.H41"


def _status(sha: str, at: float) -> PackageRecord:
    meta = PackageMeta(DOC, "status", DEST, (ORIGIN,), sha, 5)
    return PackageRecord(sha, meta, PackageState.DONE, None, at, at, None)


def _destination_with_statuses() -> NodeView:
    """The recipient's node: the document came from its district; it sent statuses 01 and
    06 back up that way, each acknowledged by the district."""
    return NodeView(
        DEST,
        (
            PackageRecord("a" * 64, META, PackageState.DELIVERED, DISTRICT, 103, 103, None),
            _status("1" * 64, 104.0),
            _status("6" * 64, 199.0),
        ),
        (
            Receipt(DOC, "hop", "stored", DISTRICT, 104.5, "t-s1"),
            Receipt(DOC, "hop", "stored", DISTRICT, 199.5, "t-s6"),
        ),
        (InboxEntry(1, "a" * 64, DOC, "edoc", ORIGIN, DEST, "done", 103.5),),
        {"1" * 64: "01", "6" * 64: "06"},
    )


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
    assert kinds == ["submitted", "hop", "hop", "delivered", "status", "status"]


def test_story_names_who_and_what() -> None:
    """The readable trace names the hop's neighbour, the recipient and each status with its
    meaning and note."""
    text = story(DOC, _views())
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
    assert "no node here knows" in story(DOC, [])


def test_json_form_has_local_time() -> None:
    """Events turn into JSON objects with a Vietnam-time ISO timestamp."""
    event = trace(_views())[0]
    data = json.loads(json.dumps(event.as_dict()))
    assert data["kind"] == "submitted"
    assert data["time"].endswith("+07:00")


def test_status_hops_are_told_under_their_status_not_the_document() -> None:
    """A hop receipt from the neighbour the document came from is a status package's: the
    story tells it under that status, with its code, in the order the statuses were made."""
    events = trace([_destination_with_statuses()])
    hops = [(e.package, e.at) for e in events if e.kind == "hop"]
    assert hops == [
        (DOCUMENT, 103),
        (f"status 01 from {DEST}", 104.5),
        (f"status 06 from {DEST}", 199.5),
    ]
    text = story(DOC, [_destination_with_statuses()])
    document, status01, status06 = text.split("\n\n")[1:4]
    assert document.startswith("The document")
    assert f"{DISTRICT} -> {DEST}: stored by {DEST}" in document
    assert f"{DEST} -> {DISTRICT}" not in document
    assert status01.startswith(f"Status 01 (arrived) from {DEST}")
    assert f"{DEST} -> {DISTRICT}: stored by {DISTRICT}" in status01
    assert status06.startswith(f"Status 06 (completed) from {DEST}")


def test_a_hop_known_at_both_ends_is_told_once() -> None:
    """With the receiving node's view merged, the sender's hop receipt for the same hop is left
    out: the receiver's record tells it."""
    district = NodeView(
        DISTRICT,
        (
            PackageRecord(
                "1" * 64, _status("1" * 64, 0).meta, PackageState.DONE, DEST, 104.2, 104.2, None
            ),
        ),
        (),
        (),
        {"1" * 64: "01"},
    )
    hops = [e for e in trace([_destination_with_statuses(), district]) if e.kind == "hop"]
    told = [e.what for e in hops if e.package == f"status 01 from {DEST}"]
    assert told == [f"{DEST} -> {DISTRICT}: stored by {DISTRICT}"]
    assert [e.node for e in hops if e.package == f"status 01 from {DEST}"] == [DISTRICT]


def test_story_says_where_the_document_is_and_what_is_awaited() -> None:
    """The story ends with each recipient's state and what is still awaited from it."""
    second = "000.00.00.H41"
    meta = PackageMeta(DOC, "edoc", ORIGIN, (DEST, second), "a" * 64, 10)
    origin = NodeView(
        ORIGIN,
        (PackageRecord("a" * 64, meta, PackageState.DONE, None, 100.0, 101.0, None),),
        (
            Receipt(DOC, "hop", "stored", "000.00.05.H49", 101.0, "t1"),
            Receipt(DOC, "status", "01", DEST, 105.0),
            Receipt(DOC, "status", "06", DEST, 200.0),
        ),
        (),
    )
    text = story(DOC, [origin])
    assert f"{DEST}: delivered; last status 06 (completed)" in text
    assert (
        f"{second}: not delivered as far as these nodes know; last stored at 000.00.05.H49" in text
    )
    awaited = text.split("Still awaited")[1]
    assert f"delivery to {second}" in awaited
    assert DEST not in awaited

    done = NodeView(
        ORIGIN,
        origin.packages[:1],
        (*origin.receipts, Receipt(DOC, "status", "02", second, 300.0)),
        (),
    )
    assert "Nothing is awaited" in story(DOC, [done])
