"""Reassembly in a file: chunks go to disk as they come, the package is never held."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lienthong.transport.frames import (
    FrameError,
    Package,
    TransferFrame,
    max_chunks,
    split_into_frames,
)
from lienthong.transport.reassembly import Reassembler

R1 = "000.01.05.H49"


def _frames(data: bytes, max_chunk: int) -> list[TransferFrame]:
    return split_into_frames("t-1", "edoc", [R1], data, max_chunk)


def test_chunks_go_to_the_file_as_they_arrive(tmp_path: Path) -> None:
    """Each chunk is in the transfer's file once taken, the last one first included; the file
    is handed over complete and no other file is left."""
    data = bytes(range(256)) * 40
    frames = _frames(data, 1024)
    reassembler = Reassembler(tmp_path)
    assert reassembler.add(frames[-1]) is None  # its place is not known yet
    assert reassembler.add(frames[2]) is None
    held = reassembler.path.read_bytes()
    assert held[2048:3072] == data[2048:3072]
    assert held[-len(frames[-1].chunk) :] == frames[-1].chunk
    package = None
    for frame in frames:
        package = reassembler.add(frame) or package
    assert package is not None
    assert isinstance(package.source, Path)
    assert package.source.read_bytes() == data
    assert (package.size, package.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert list(tmp_path.iterdir()) == [package.source]


def test_chunks_of_uneven_length_are_refused(tmp_path: Path) -> None:
    """Every chunk but the last has the same length: one that differs is refused."""
    frames = _frames(b"x" * 3000, 1024)
    reassembler = Reassembler(tmp_path)
    reassembler.add(frames[0])
    short = TransferFrame(*frames[1].metadata()[:5], 1, frames[1].count, b"x" * 1000)
    with pytest.raises(FrameError, match="1000 bytes, its other chunks 1024"):
        reassembler.add(short)


def test_more_chunks_than_the_size_allows_are_refused(tmp_path: Path) -> None:
    """A transfer announcing more chunks than a package of the largest size takes is refused
    at its first frame, before anything is written."""
    frames = _frames(b"y" * 5000, 100)
    reassembler = Reassembler(tmp_path, max_size=5000)
    assert max_chunks(5000) < frames[0].count
    with pytest.raises(FrameError, match="chunks"):
        reassembler.add(frames[0])
    assert not list(tmp_path.iterdir())


def test_discard_removes_the_file(tmp_path: Path) -> None:
    """A transfer given up leaves no file."""
    reassembler = Reassembler(tmp_path)
    reassembler.add(_frames(b"z" * 3000, 1024)[0])
    assert reassembler.path.exists()
    reassembler.discard()
    assert not list(tmp_path.iterdir())


def test_small_package_in_one_frame_is_kept_in_memory(tmp_path: Path) -> None:
    """A package that comes whole in one frame of at most ``in_memory_max`` bytes is handed
    over as its bytes, checked, and no file is made; a larger one, or one in several frames,
    goes to a file as before."""
    data = b"<edXML>small</edXML>" * 50
    (frame,) = _frames(data, 4096)
    package = Reassembler(tmp_path, in_memory_max=len(data)).add(frame)
    assert package is not None
    assert package.source == data
    assert not list(tmp_path.iterdir())
    (frame,) = _frames(data, 4096)
    bigger = Reassembler(tmp_path, in_memory_max=len(data) - 1).add(frame)
    assert bigger is not None
    assert isinstance(bigger.source, Path)
    assert bigger.source.read_bytes() == data
    bigger.source.unlink()
    frames = _frames(data, 512)
    several = Reassembler(tmp_path, in_memory_max=len(data))
    packages = [several.add(f) for f in frames]
    assert isinstance(packages[-1], Package)
    assert isinstance(packages[-1].source, Path)


def test_small_package_with_wrong_digest_is_refused_in_memory(tmp_path: Path) -> None:
    """The digest of a package kept in memory is checked like one in a file."""
    (frame,) = _frames(b"abc", 100)
    lying = TransferFrame(
        frame.transfer_id, frame.kind, frame.recipients, "0" * 64, 3, 0, 1, b"abc"
    )
    with pytest.raises(FrameError, match="reassembled with sha256"):
        Reassembler(tmp_path, in_memory_max=100).add(lying)
    assert not list(tmp_path.iterdir())
