"""Chaos run: SIGKILL random daemons and brokers of the seven-node network while documents flow.

Not part of the test suite (a full run takes tens of minutes); anyone can repeat it::

    .venv/bin/python bench/chaos.py --kills 1000

The four-tier demo network (config/topologies/four-tier.toml) runs with one mosquitto per tier.
Two communes of different provinces send each other documents in batches (``lienthong send``,
a process of its own that writes the node's store beside the daemon, as an operator would),
while a killer picks a daemon or a broker at random, SIGKILLs it at a random moment, and starts
it again after a random pause. After the last kill everything is started, the network is left
to settle, and the run prints, from the nodes' own stores: documents sent, delivered exactly
once, duplicates, lost, status 01 received back, dead letters, and ``journal verify`` per node.

The exit status is 0 only when nothing was lost or delivered twice, every status 01 came back,
no node has a dead letter and every journal verifies; a run that is not keeps its folder
(logs, stores) for a look.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from lienthong.devnet.network import Network, poll_until, topology_text
from lienthong.edxml import build, new_edoc

COMMUNE_A, COMMUNE_B = "000.01.05.H49", "000.03.07.H41"
FAST = {
    "transfer": {"receipt_timeout_s": 3.0, "poll_s": 0.3},
    "store": {"lease_s": 8.0},
    "store.retry": {"base_delay_s": 0.5, "max_delay_s": 3.0, "max_attempts": 1000},
    "daemon": {"drain_grace_s": 1.0},
}


def _document(folder: Path, sender: str, recipient: str, number: str) -> Path:
    pkg = new_edoc(
        from_code=sender,
        to_codes=[recipient],
        subject=f"Thử nghiệm chịu lỗi số {number}",
        attachments=[("van-ban.txt", f"Nội dung {number}".encode(), "text/plain")],
        today=dt.date.today(),
        number=number,
        notation="CHAOS",
    )
    path = folder / f"{sender}-{number}.xml"
    path.write_bytes(build(pkg))
    return path


class Producer(threading.Thread):
    """Sends a batch each way every ``every_s`` until stopped; remembers what was accepted."""

    def __init__(self, net: Network, folder: Path, batch: int, every_s: float) -> None:
        super().__init__(name="producer", daemon=True)
        self.net, self.folder, self.batch, self.every_s = net, folder, batch, every_s
        self.sent: dict[str, tuple[str, str]] = {}  # DocumentId -> (sender, recipient)
        self.refused = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        today = time.strftime("%Y/%m/%d")
        serial = 0
        while not self.stopping.is_set():
            for sender, recipient in ((COMMUNE_A, COMMUNE_B), (COMMUNE_B, COMMUNE_A)):
                files, ids = [], []
                for _ in range(self.batch):
                    serial += 1
                    number = f"{serial}"
                    files.append(_document(self.folder, sender, recipient, number))
                    ids.append(f"{sender},{today},{number}/CHAOS")
                result = self.net.lienthong(sender, "send", *map(str, files))
                accepted = {
                    line.split(": ")[1] for line in result.stdout.splitlines() if ": " in line
                }
                for document_id in ids:
                    if document_id in accepted:
                        self.sent[document_id] = (sender, recipient)
                    else:
                        self.refused += 1
            self.stopping.wait(self.every_s)


def _kill_and_restart(net: Network, rng: random.Random, max_down_s: float) -> str:
    """SIGKILL one daemon or broker chosen at random, start it again after a pause; its name."""
    targets = [f"node {c}" for c in net.nodes] + [f"broker {c}" for c in net.brokers]
    target = rng.choice(targets)
    kind, code = target.split()
    time.sleep(rng.uniform(0.0, max_down_s))  # the kill lands at a random moment
    if kind == "node":
        node = net.nodes[code]
        node.kill()
        time.sleep(rng.uniform(0.0, max_down_s))
        node.start()
    else:
        broker = net.brokers[code]
        broker.kill()
        time.sleep(rng.uniform(0.0, max_down_s))
        broker.start()
    return target


def _settled(net: Network, sent: dict[str, tuple[str, str]]) -> bool:
    delivered = _delivered(net)
    statuses = _statuses(net)
    return all(delivered[d] >= 1 and d in statuses for d in sent)


def _delivered(net: Network) -> collections.Counter[str]:
    return collections.Counter(
        e.document_id
        for code in (COMMUNE_A, COMMUNE_B)
        for e in net.inbox(code)
        if e.kind == "edoc"
    )


def _statuses(net: Network) -> set[str]:
    return {
        e.document_id
        for code in (COMMUNE_A, COMMUNE_B)
        for e in net.inbox(code)
        if e.kind == "status"
    }


def _dead_letters(net: Network) -> dict[str, int]:
    return {code: len(net._read(code, lambda s: s.dead_letters())) for code in net.nodes}


def _journals(net: Network) -> dict[str, bool]:
    return {code: net.lienthong(code, "journal", "verify").returncode == 0 for code in net.nodes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=1000, help="SIGKILLs in the run")
    parser.add_argument("--batch", type=int, default=5, help="documents per batch, each way")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between batches")
    parser.add_argument("--max-down", type=float, default=0.5, help="longest pause (s)")
    parser.add_argument("--settle", type=float, default=900.0, help="wait this long at the end")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="keep the network here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    root = args.dir or Path(tempfile.mkdtemp(prefix="lienthong-chaos-"))
    net = Network(root / "net", topology_text("four-tier"), overrides=FAST)
    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    kills: collections.Counter[str] = collections.Counter()
    producer = Producer(net, docs, args.batch, args.every)
    try:
        net.start()
        producer.start()
        for i in range(args.kills):
            kills[_kill_and_restart(net, rng, args.max_down)] += 1
            if (i + 1) % 50 == 0:
                print(f"{i + 1} kills, {len(producer.sent)} documents sent", flush=True)
        producer.stopping.set()
        producer.join()
        for broker in net.brokers.values():
            if not broker.running:
                broker.start()
        for node in net.nodes.values():
            if not node.running:
                node.start()
        for node in net.nodes.values():
            node.wait_ready()
        poll_until(lambda: _settled(net, producer.sent), args.settle)
        delivered, statuses = _delivered(net), _statuses(net)
        dead, journals = _dead_letters(net), _journals(net)
    finally:
        net.stop()
        net.kill()
    sent = producer.sent
    once = sum(1 for d in sent if delivered[d] == 1)
    duplicates = sum(1 for d in sent if delivered[d] > 1)
    lost = sum(1 for d in sent if delivered[d] == 0)
    status_01 = sum(1 for d in sent if d in statuses)
    figures = {
        "seed": seed,
        "kills": sum(kills.values()),
        "kills_by_target": dict(sorted(kills.items())),
        "documents_sent": len(sent),
        "refused_at_submission": producer.refused,
        "delivered_exactly_once": once,
        "duplicates": duplicates,
        "lost": lost,
        "status_01_received": status_01,
        "dead_letters": dead,
        "journal_verify": {code: "ok" if ok else "BROKEN" for code, ok in journals.items()},
        "minutes": round((time.monotonic() - started) / 60, 1),
        "folder": str(root),
    }
    print(json.dumps(figures, indent=2))
    healthy = (
        lost == 0
        and duplicates == 0
        and status_01 == len(sent)
        and not any(dead.values())
        and all(journals.values())
    )
    if healthy and args.dir is None:
        shutil.rmtree(root, ignore_errors=True)  # a failed run keeps its folder to look into
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
