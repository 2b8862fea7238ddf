"""The pure cores import nothing that does I/O scheduling or networking."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lienthong"
PURE = [
    ROOT / "edxml",
    ROOT / "trust",
    ROOT / "routing.py",
    ROOT / "directory.py",
    ROOT / "dirversion.py",
    ROOT / "dirholder.py",
    ROOT / "transport" / "frames.py",
    ROOT / "xmlsafe.py",
    ROOT / "xmlstream.py",
]
FORBIDDEN = {"asyncio", "aiomqtt", "aiosqlite", "aiohttp", "paho", "sqlite3", "socket"}


def _modules_imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _pure_files() -> list[Path]:
    files: list[Path] = []
    for p in PURE:
        if p.is_dir():
            files.extend(sorted(p.rglob("*.py")))
        elif p.exists():
            files.append(p)
    return files


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_core_imports_no_io_library(path: Path) -> None:
    """Files of the format, trust and routing cores import no asyncio, MQTT, SQLite or HTTP."""
    bad = _modules_imported(path) & FORBIDDEN
    assert not bad, f"{path} imports {sorted(bad)}"
