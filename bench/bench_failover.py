"""How long the national tier stops when its active daemon dies: SIGKILL of the active national
daemon of a pair on PostgreSQL (the standby takes over), against SIGKILL of a single national
daemon on SQLite restarted at once (systemd's ``Restart=always`` with no delay: the best a
single machine does, and only if the machine itself still runs), in the same run.

The network: the national node and two provinces (a document between the provinces crosses the
national node), one mosquitto broker at the national node, real ``lienthong run`` daemons
(:class:`lienthong.devnet.network.Network`). The office software of province H49 submits a
document for province H41 every ``--interval`` seconds (sendEdoc to its node's API) for the
whole round. A round: documents flow for 2 s, the active national daemon is SIGKILLed, and the
figures are taken from the moment of the kill:

- ``holds store``: the standby has taken the store over (its ``store_taken_over`` log line;
  for the restart, the restarted daemon's ``node_ready``);
- ``first forwarded``: the first transfer that the new national daemon forwarded got its hop
  receipt from province H41 (the national store's first ``acked`` after the kill);
- ``first delivered``: the first document submitted after the kill is in province H41's inbox.

After each round the killed daemon is started again (for the pair: as the new standby).

Run: ``.venv/bin/python bench/bench_failover.py [--rounds R] [--interval S] [--keep DIR]``
(the PostgreSQL server of ``LIENTHONG_TEST_PG``; a database is made and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from lienthong.config import load_config
from lienthong.devnet.network import Network, NodeProcess, poll_until, topology_text
from lienthong.devnet.pgdb import ScratchDatabase
from lienthong.edxml import build, new_edoc
from lienthong.store.postgres import numbered
from lienthong.store.sqlite import DB_NAME

NATIONAL, PROVINCE_A, PROVINCE_B = "000.00.00.G22", "000.00.00.H49", "000.00.00.H41"
DIRECTORY = topology_text("two-tier")
FAST = {
    "transfer": {"receipt_timeout_s": 3.0, "poll_s": 0.3},
    "store": {"lease_s": 8.0},
    "store.retry": {"base_delay_s": 0.5, "max_delay_s": 3.0},
    "daemon": {"drain_grace_s": 3.0},
}
WAIT_S = 60.0
FIRST_FORWARDED = (
    "SELECT min(a.at) FROM journal a WHERE a.entity = 'transfer' AND a.to_state = 'acked'"
    " AND a.at > ? AND EXISTS (SELECT 1 FROM journal f WHERE f.entity = 'transfer'"
    " AND f.entity_id = a.entity_id AND f.to_state = 'in_flight' AND f.at > ?)"
)
"""The first transfer taken after ``?`` (so by the new daemon) and acknowledged."""


@dataclass(frozen=True)
class Round:
    """Seconds from the kill to each event (see the module docstring)."""

    holds_store: float
    first_forwarded: float
    first_delivered: float


def event_after(node: NodeProcess, event: str, after: float) -> float | None:
    """The time of the first ``event`` in ``node``'s log after ``after``, or None."""
    for line in node.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") != event:
            continue
        at = dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
        if at > after:
            return at
    return None


def first_forwarded(net: Network, after: float) -> float | None:
    """When the national store recorded its first hop receipt for a transfer it took after
    ``after`` (None: none yet)."""
    config = load_config(net.nodes[NATIONAL].config_path)
    if config.store.backend == "postgresql":

        async def query() -> float | None:
            conn = await asyncpg.connect(config.store.dsn)
            try:
                value = await conn.fetchval(numbered(FIRST_FORWARDED), after, after)
            finally:
                await conn.close()
            return float(value) if value is not None else None

        return asyncio.run(query())
    db = sqlite3.connect(config.node.state_dir / DB_NAME)
    try:
        row = db.execute(FIRST_FORWARDED, (after, after)).fetchone()
    finally:
        db.close()
    return float(row[0]) if row and row[0] is not None else None


async def submit(net: Network, tag: str, interval: float, out: list[tuple[float, str]]) -> None:
    """The office software of province A sends a document for province B every ``interval``
    seconds until cancelled; each (time, DocumentId) into ``out``."""
    office = net.office(PROVINCE_A)
    params = {"from": PROVINCE_A, "servicetype": "eDoc", "messagetype": "edoc", "to": [PROVINCE_B]}
    number = 0
    while True:
        number += 1
        package = new_edoc(
            from_code=PROVINCE_A,
            to_codes=[PROVINCE_B],
            subject=f"Công văn {tag} {number}",
            attachments=[("cv.txt", b"noi dung", "text/plain")],
            today=dt.date.today(),
            number=f"{tag}{number:04d}",
            notation="UBND-VP",
        )
        at = time.time()
        reply = await office.send_edoc(params, build(package))
        if reply is None or not reply.ok:
            raise RuntimeError(f"sendEdoc refused: {reply and reply.desc}")
        out.append((at, package.document_id))
        await asyncio.sleep(interval)


async def one_round(net: Network, tag: str, interval: float, pair: bool) -> Round:
    """Kill the active national daemon while documents flow (see the module docstring)."""
    killed = net.nodes[NATIONAL]
    taking_over = net.standbys[NATIONAL] if pair else killed
    submitted: list[tuple[float, str]] = []
    task = asyncio.create_task(submit(net, tag, interval, submitted))
    try:
        await asyncio.sleep(2.0)
        kill_at = time.time()
        killed.kill()
        if not pair:
            killed.start()

        def delivered_after_kill() -> float | None:
            later = {doc for at, doc in submitted if at > kill_at}
            arrived = [e.added_at for e in net.inbox(PROVINCE_B) if e.document_id in later]
            return min(arrived) if arrived else None

        delivered = await asyncio.to_thread(
            lambda: (
                poll_until(lambda: delivered_after_kill() is not None, WAIT_S)
                and delivered_after_kill()
            )
        )
        forwarded = await asyncio.to_thread(first_forwarded, net, kill_at)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    event = "store_taken_over" if pair else "node_ready"
    holds = event_after(taking_over, event, kill_at)
    if not delivered or forwarded is None or holds is None:
        raise RuntimeError(f"round {tag}: no takeover seen:\n{taking_over.log()[-3000:]}")
    if pair:
        # The killed daemon comes back as the new standby; the two swap roles.
        killed.start()
        killed.wait_ready()
        net.nodes[NATIONAL], net.standbys[NATIONAL] = taking_over, killed
    else:
        killed.wait_ready()
    return Round(holds - kill_at, forwarded - kill_at, delivered - kill_at)


def run(root: Path, rounds: int, interval: float) -> dict[str, list[Round]]:
    """Both set-ups, rounds interleaved."""
    database = ScratchDatabase("lienthong_failover")
    database.create_sync()
    pair = Network(root / "pair", DIRECTORY, overrides=FAST, postgres={NATIONAL: database.dsn})
    single = Network(root / "single", DIRECTORY, overrides=FAST)
    results: dict[str, list[Round]] = {"pair on PostgreSQL": [], "single on SQLite": []}
    try:
        for number in range(rounds):
            for name, net, is_pair in (
                ("pair on PostgreSQL", pair, True),
                ("single on SQLite", single, False),
            ):
                net.start()
                tag = f"{'P' if is_pair else 'S'}{number}"
                results[name].append(asyncio.run(one_round(net, tag, interval, is_pair)))
                net.stop()
    finally:
        for net in (pair, single):
            net.stop()
            net.kill()
        database.drop_sync()
    return results


def main() -> None:
    """Run the rounds and print the medians (and the worst round)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between documents")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder, keep it")
    args = parser.parse_args()
    if args.keep is not None:
        results = run(args.keep, args.rounds, args.interval)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = run(Path(tmp), args.rounds, args.interval)
    print(f"seconds from SIGKILL of the active national daemon; median (max) of {args.rounds}")
    print(f"{'set-up':<22} {'holds store':>14} {'first forwarded':>16} {'first delivered':>16}")
    for name, rows in results.items():
        cells = []
        for field in ("holds_store", "first_forwarded", "first_delivered"):
            values = [getattr(r, field) for r in rows]
            cells.append(f"{statistics.median(values):.2f} ({max(values):.2f})")
        print(f"{name:<22} {cells[0]:>14} {cells[1]:>16} {cells[2]:>16}")


if __name__ == "__main__":
    main()
