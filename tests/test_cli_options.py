"""Command-line options that take several values accumulate when given several times."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from lienthong.cli import build_parser, main


def _parsers(
    parser: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_no_option_keeps_only_its_last_list() -> None:
    """Every option taking a list of values extends it when repeated, never replaces it."""
    offenders = [
        f"{name} {action.option_strings[0]}"
        for name, parser in _parsers(build_parser(), "lienthong")
        for action in parser._actions
        if action.option_strings
        and action.nargs in ("*", "+")
        and not isinstance(action, argparse._ExtendAction)
    ]
    assert offenders == []


def test_pki_init_agencies_given_twice_are_all_issued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pki init DIR --agency A --agency B` issues both A and B (it used to keep only B)."""
    folder = tmp_path / "pki"
    a, b = "000.00.12.H49", "000.00.13.H49"
    assert main(["pki", "init", str(folder), "--key-type", "ec", "--agency", a, "--agency", b]) == 0
    capsys.readouterr()
    assert (folder / f"{a}.crt").exists()
    assert (folder / f"{b}.crt").exists()
