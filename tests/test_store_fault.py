"""The engine killed with SIGKILL at random points still delivers every package exactly once."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
N = 2000
KILLS = 8


def harness(state: Path) -> subprocess.Popen[str]:
    """Start the two-node harness on ``state``."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store_fault_harness", str(state), str(N)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_loses_nothing_and_delivers_once(tmp_path: Path) -> None:
    """Killed and restarted while ingesting and forwarding, nothing is lost or delivered twice."""
    rng = random.Random(7)
    killed = 0
    for _ in range(KILLS):
        proc = harness(tmp_path)
        time.sleep(rng.uniform(0.3, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    proc = harness(tmp_path)
    out, _ = proc.communicate(timeout=170)
    assert proc.returncode == 0, out
    summary = json.loads(out.strip().splitlines()[-1])

    b = sqlite3.connect(tmp_path / "b" / "store.sqlite3")
    inbox = b.execute("SELECT count(*), count(DISTINCT package_id) FROM inbox").fetchone()
    deliveries = b.execute(
        "SELECT count(*), count(DISTINCT entity_id) FROM journal WHERE to_state = 'delivered'"
    ).fetchone()
    a = sqlite3.connect(tmp_path / "a" / "store.sqlite3")
    submitted = a.execute("SELECT count(*) FROM packages").fetchone()[0]
    lost = N - inbox[1]
    print(
        f"\nkilled {killed} times; submitted {submitted}, delivered {inbox[1]}, "
        f"duplicates suppressed {summary['duplicates']}, lost {lost}"
    )
    assert submitted == N
    assert summary["done_a"] == N
    assert summary["done_b"] == N
    assert inbox == (N, N)
    assert deliveries == (N, N)
    assert lost == 0
    assert killed >= KILLS // 2
    assert summary["duplicates"] > 0
    for db in ("a", "b"):
        verify = subprocess.run(
            [
                sys.executable,
                "-c",
                "import asyncio, sys\nfrom pathlib import Path\n"
                "from lienthong.store import SqliteStore\n"
                "async def m():\n async with SqliteStore(Path(sys.argv[1])) as s:\n"
                "  r = await s.journal_verify(); print(r); sys.exit(0 if r.ok else 1)\n"
                "asyncio.run(m())",
                str(tmp_path / db),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
