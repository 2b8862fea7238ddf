"""Reassembly in a file: chunks go to disk as they come, the package is never held."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lienthong.transport.frames import (
    FrameError,
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
    assert package.path.read_bytes() == data
    assert (package.size, package.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert list(tmp_path.iterdir()) == [package.path]


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
