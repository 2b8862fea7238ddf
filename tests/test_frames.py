"""Transfer frames, hop receipts and inbox topics: the codec of the wire between neighbours."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lienthong.errors import PeerInputError
from lienthong.transport.frames import (
    FrameError,
    HopReceipt,
    HopReceipts,
    TransferFrame,
    decode_frame,
    encode_frame,
    inbox_filter,
    inbox_topic,
    max_chunk_for,
    parse_topic,
    receipt_frame,
    split_into_frames,
)
from lienthong.transport.reassembly import Reassembler

R1 = "000.01.05.H49"
R2 = "000.00.00.H41"


def _frames(data: bytes, max_chunk: int = 4, transfer: str = "t-1") -> list[TransferFrame]:
    return split_into_frames(transfer, "edoc", [R1, R2], data, max_chunk)


def _header(wire: bytes) -> dict[str, object]:
    return dict(json.loads(wire.split(b"\n", 1)[0]))


def _with_header(wire: bytes, **changes: object) -> bytes:
    header = _header(wire)
    header.update(changes)
    return json.dumps(header).encode() + b"\n" + wire.split(b"\n", 1)[1]


def test_transfer_frame_round_trips_with_raw_payload() -> None:
    """A transfer frame decodes to an equal frame, and its chunk rides raw after the header."""
    frame = _frames(b"\x00\xffbinary", max_chunk=100)[0]
    wire = encode_frame(frame)
    assert decode_frame(wire) == frame
    assert wire.endswith(b"\n\x00\xffbinary")
    assert _header(wire)["v"] == 1


def test_hop_receipt_round_trips() -> None:
    """A hop receipt decodes to an equal receipt saying 'stored'."""
    receipt = HopReceipt("t-1", hashlib.sha256(b"x").hexdigest())
    assert decode_frame(encode_frame(receipt)) == receipt
    assert _header(encode_frame(receipt))["status"] == "stored"


@pytest.mark.parametrize(
    ("wire", "needle"),
    [
        (b"", "no frame header line"),
        (b"not json\n", "not ASCII JSON"),
        (b"[1]\n", "not a JSON object"),
        (b'{"v":2,"type":"receipt"}\n', "version 2"),
        (b'{"v":true,"type":"receipt"}\n', "version True"),
        (b'{"v":1,"type":"gossip"}\n', "not 'transfer', 'receipt' or 'receipts'"),
        (b'{"v":1,"type":"receipt","transfer":"t","sha256":"ab","status":"stored"}\n', "sha256"),
        (b"{" + b" " * 70000 + b"}\n", "within the first"),
    ],
)
def test_malformed_bytes_are_refused_with_the_reason(wire: bytes, needle: str) -> None:
    """Malformed frames raise FrameError (a PeerInputError) whose message names the fault."""
    with pytest.raises(FrameError, match=needle) as caught:
        decode_frame(wire)
    assert isinstance(caught.value, PeerInputError)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"len": 99}, "announces 99 payload bytes"),
        ({"count": True}, "'count' is missing or not int"),
        ({"index": 7}, "outside 0..1"),
        ({"kind": "spam"}, "neither 'edoc' nor 'status'"),
        ({"recipients": []}, "at least one recipient"),
        ({"recipients": ["h.49"]}, "recipient 'h.49'"),
        ({"recipients": [1]}, "other than text"),
        ({"transfer": "a/b"}, "transfer id"),
        ({"extra": 1}, "unknown frame header field"),
        ({"size": 1}, "chunk count 2 is impossible"),
    ],
)
def test_inconsistent_transfer_headers_are_refused(changes: dict[str, object], needle: str) -> None:
    """A transfer frame whose header lies about itself is refused, naming the field."""
    wire = encode_frame(_frames(b"abcdefgh")[0])
    with pytest.raises(FrameError, match=needle):
        decode_frame(_with_header(wire, **changes))


def test_receipt_with_payload_is_refused() -> None:
    """A hop receipt followed by payload bytes is malformed."""
    wire = encode_frame(HopReceipt("t-1", hashlib.sha256(b"").hexdigest())) + b"junk"
    with pytest.raises(FrameError, match="unexpected payload"):
        decode_frame(wire)


def test_empty_package_is_one_empty_frame(tmp_path: Path) -> None:
    """An empty package travels as a single frame and reassembles to b''."""
    frames = _frames(b"")
    assert [(f.index, f.count, f.chunk) for f in frames] == [(0, 1, b"")]
    package = Reassembler(tmp_path).add(frames[0])
    assert package is not None
    assert isinstance(package.source, Path)
    assert package.source.read_bytes() == b""


def test_reassembled_package_carries_its_metadata(tmp_path: Path) -> None:
    """The package yielded names its transfer, kind, recipients and digest."""
    data = b"0123456789"
    frames = _frames(data)
    reassembler = Reassembler(tmp_path)
    results = [reassembler.add(f) for f in frames]
    assert results[:-1] == [None, None]
    package = results[-1]
    assert package is not None
    assert (package.transfer_id, package.kind, package.recipients) == ("t-1", "edoc", (R1, R2))
    assert package.sha256 == hashlib.sha256(data).hexdigest()
    assert reassembler.done


def test_labels_ride_every_chunk_and_reach_the_package(tmp_path: Path) -> None:
    """DocumentId and sending agency labels round-trip, reach the package, and a chunk that
    labels the transfer otherwise is refused; frames without labels decode as before."""
    data = b"0123456789"
    frames = split_into_frames("t-1", "edoc", [R1], data, 4, document="12/UBND", origin=R2)
    assert all(decode_frame(encode_frame(f)) == f for f in frames)
    reassembler = Reassembler(tmp_path)
    package = [reassembler.add(f) for f in frames][-1]
    assert package is not None
    assert (package.document, package.origin) == ("12/UBND", R2)
    assert "document" not in _header(encode_frame(_frames(data)[0]))
    other = dataclasses.replace(frames[1], document="13/UBND")
    fresh = Reassembler(tmp_path)
    fresh.add(frames[0])
    with pytest.raises(FrameError, match="labels"):
        fresh.add(other)


def test_label_too_long_to_carry_is_left_out() -> None:
    """A DocumentId longer than a label may be is not put in the frames, which stay valid."""
    (frame,) = split_into_frames("t-1", "edoc", [R1], b"abc", 100, document="x" * 300)
    assert frame.document == ""
    assert decode_frame(encode_frame(frame)) == frame


@pytest.mark.parametrize("value", [7, "x" * 300])
def test_label_that_is_not_short_text_is_refused(value: object) -> None:
    """A document or origin label that is not text of at most 256 characters is refused."""
    wire = encode_frame(_frames(b"abc", max_chunk=100)[0])
    with pytest.raises(FrameError, match="document"):
        decode_frame(_with_header(wire, document=value))


def test_duplicates_after_completion_yield_nothing_more(tmp_path: Path) -> None:
    """A chunk arriving again after the package was yielded is ignored."""
    frames = _frames(b"abcdef")
    reassembler = Reassembler(tmp_path)
    for frame in frames:
        reassembler.add(frame)
    assert reassembler.add(frames[0]) is None


def test_frame_from_another_transfer_is_refused(tmp_path: Path) -> None:
    """Chunks whose metadata disagree with the transfer's first chunk are refused."""
    reassembler = Reassembler(tmp_path)
    reassembler.add(_frames(b"abcdefgh")[0])
    with pytest.raises(FrameError, match="disagrees"):
        reassembler.add(_frames(b"abcdefgX")[1])


def test_same_index_with_other_bytes_is_refused(tmp_path: Path) -> None:
    """A chunk index seen twice with different bytes is refused."""
    first = _frames(b"abcdefgh")[0]
    reassembler = Reassembler(tmp_path)
    reassembler.add(first)
    liar = TransferFrame(*first.metadata()[:5], 0, first.count, b"ABCD")
    with pytest.raises(FrameError, match="different bytes"):
        reassembler.add(liar)


def test_digest_mismatch_is_refused_saying_so(tmp_path: Path) -> None:
    """Chunks that reassemble to other bytes than the announced digest raise FrameError."""
    frames = _frames(b"abcdefgh")
    wrong = hashlib.sha256(b"something else").hexdigest()
    lying = [
        TransferFrame(f.transfer_id, f.kind, f.recipients, wrong, f.size, f.index, f.count, f.chunk)
        for f in frames
    ]
    reassembler = Reassembler(tmp_path)
    assert [reassembler.add(f) for f in lying[:-1]] == [None] * (len(lying) - 1)
    with pytest.raises(FrameError, match="reassembled with sha256"):
        reassembler.add(lying[-1])


def test_oversize_transfer_is_refused_at_its_first_frame(tmp_path: Path) -> None:
    """A transfer announcing more than the cap is refused before any chunk is kept."""
    reassembler = Reassembler(tmp_path, max_size=7)
    with pytest.raises(FrameError, match="more than the 7 accepted"):
        reassembler.add(_frames(b"abcdefgh")[1])
    assert reassembler.received == 0


def test_more_bytes_than_announced_are_refused(tmp_path: Path) -> None:
    """Chunks whose total exceeds the announced size are refused."""
    f = _frames(b"abcdefgh")[0]
    reassembler = Reassembler(tmp_path)
    reassembler.add(f)
    with pytest.raises(FrameError, match="more than its announced"):
        reassembler.add(TransferFrame(*f.metadata()[:5], 1, f.count, b"123456"))


def test_max_chunk_keeps_frames_below_the_broker_limit() -> None:
    """Frames cut with max_chunk_for(limit) encode to at most limit bytes."""
    limit = 100_000
    recipients = [f"000.00.{i:02d}.H49" for i in range(1, 100)]
    frames = split_into_frames("t", "status", recipients, b"x" * 250_000, max_chunk_for(limit))
    assert len(frames) > 1
    assert max(len(encode_frame(f)) for f in frames) <= limit
    with pytest.raises(ValueError, match="no room"):
        max_chunk_for(1000)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=2000),
    max_chunk=st.integers(min_value=1, max_value=300),
    order=st.randoms(use_true_random=False),
    duplicates=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_any_split_reassembles_in_any_order_with_duplicates(
    data: bytes, max_chunk: int, order: object, duplicates: list[int]
) -> None:
    """Split, encoded, shuffled, duplicated, decoded and reassembled: the original bytes."""
    wires = [encode_frame(f) for f in split_into_frames("t-9", "edoc", [R1], data, max_chunk)]
    wires += [wires[i % len(wires)] for i in duplicates]
    order.shuffle(wires)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as folder:
        reassembler = Reassembler(Path(folder))
        packages = []
        for wire in wires:
            frame = decode_frame(wire)
            assert isinstance(frame, TransferFrame)
            package = reassembler.add(frame)
            if package is not None:
                assert isinstance(package.source, Path)
                packages.append(package.source.read_bytes())
        assert packages == [data]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_frame_error(wire: bytes) -> None:
    """decode_frame never fails on bytes other than with FrameError."""
    with contextlib.suppress(FrameError):
        decode_frame(wire)


def test_inbox_topic_round_trips() -> None:
    """inbox_topic builds lienthong/v1/<to>/in/<from> and parse_topic reads it back."""
    topic = inbox_topic(R2, R1)
    assert topic == f"lienthong/v1/{R2}/in/{R1}"
    assert parse_topic(topic) == (R2, R1)
    assert inbox_filter(R1) == f"lienthong/v1/{R1}/in/+"


@pytest.mark.parametrize(
    "topic",
    [
        "lienthong/v2/000.00.00.H41/in/000.00.00.H49",
        "lienthong/v1/000.00.00.H41/out/000.00.00.H49",
        "lienthong/v1/000.00.00.H41/in",
        "lienthong/v1/000.00.00.H41/in/000.00.00.H49/x",
        "lienthong/v1/000.00.00.H41/in/+",
        "lienthong/v1/h41/in/000.00.00.H49",
    ],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    """parse_topic refuses anything but an inbox topic between two valid codes."""
    with pytest.raises(FrameError):
        parse_topic(topic)


def test_topic_refuses_wildcards_in_codes() -> None:
    """A code with MQTT wildcards or slashes cannot be made into a topic."""
    with pytest.raises(ValueError, match="sender"):
        inbox_topic(R1, "+")
    with pytest.raises(ValueError, match="recipient node"):
        inbox_topic("a/b", R1)


def test_hop_receipt_carries_the_receivers_time() -> None:
    """A receipt may say when it was made (for the sender's clock skew); one without stays
    valid; a time that is not a number is refused."""
    receipt = HopReceipt("t-1", "a" * 64, at=1_800_000_000.25)
    assert decode_frame(encode_frame(receipt)) == receipt
    plain = HopReceipt("t-1", "a" * 64)
    assert b'"at"' not in encode_frame(plain)
    assert decode_frame(encode_frame(plain)) == plain
    bad = encode_frame(receipt).replace(b'"at":1800000000.25', b'"at":"noon"')
    with pytest.raises(FrameError, match="'at' is not a number"):
        decode_frame(bad)


def test_receipts_of_one_commit_travel_in_one_frame() -> None:
    """Two or more hop receipts make one ``receipts`` frame that decodes to each of them,
    sharing the receiver's time; one alone is still the plain ``receipt`` frame that nodes
    have always sent."""
    group = [(f"t-{i}", hashlib.sha256(b"%d" % i).hexdigest()) for i in range(3)]
    frame = receipt_frame(group, at=1_800_000_000.5)
    assert isinstance(frame, HopReceipts)
    decoded = decode_frame(encode_frame(frame))
    assert isinstance(decoded, HopReceipts)
    assert [(r.transfer_id, r.sha256, r.at) for r in decoded.receipts] == [
        (tid, sha, 1_800_000_000.5) for tid, sha in group
    ]
    assert _header(encode_frame(frame))["type"] == "receipts"
    single = receipt_frame(group[:1], at=None)
    assert single == HopReceipt(*group[0])
    assert _header(encode_frame(single))["type"] == "receipt"


@pytest.mark.parametrize(
    ("transfers", "needle"),
    [
        ([], "1 to 256"),
        ([["t-1", "a" * 64]] * 257, "1 to 256"),
        ([["t-1"]], "list of \\[transfer, sha256\\]"),
        ([["t-1", 7]], "list of \\[transfer, sha256\\]"),
        ("t-1", "'transfers' is missing or not list"),
        ([["t 1", "a" * 64]], "transfer id"),
        ([["t-1", "A" * 64]], "sha256"),
    ],
)
def test_malformed_receipts_frames_are_refused(transfers: object, needle: str) -> None:
    header = {"v": 1, "type": "receipts", "transfers": transfers, "status": "stored"}
    with pytest.raises(FrameError, match=needle):
        decode_frame(json.dumps(header).encode() + b"\n")


def test_receipts_frame_with_unknown_field_or_payload_is_refused() -> None:
    wire = encode_frame(receipt_frame([("t-1", "a" * 64), ("t-2", "b" * 64)], at=None))
    with pytest.raises(FrameError, match="unexpected payload"):
        decode_frame(wire + b"x")
    with pytest.raises(FrameError, match="unknown frame header field"):
        decode_frame(wire.replace(b'"v":1', b'"v":1,"extra":0'))


def test_the_largest_receipts_frame_fits_its_header_limit() -> None:
    """256 receipts with the longest transfer ids allowed still make a frame that decodes."""
    group = [(f"{i:03d}" + "t" * 125, hashlib.sha256(b"%d" % i).hexdigest()) for i in range(256)]
    decoded = decode_frame(encode_frame(receipt_frame(group, at=1_800_000_000.0)))
    assert isinstance(decoded, HopReceipts)
    assert len(decoded.receipts) == 256


def test_receipts_of_one_frame_share_one_time() -> None:
    with pytest.raises(FrameError, match="share one time"):
        HopReceipts((HopReceipt("t-1", "a" * 64, at=1.0), HopReceipt("t-2", "b" * 64, at=2.0)))
