"""A state-sized directory: sign, load, verify and apply it; next-hop lookups; size on the wire.

The directory is the four-tier demonstration one grown by ``lienthong.devnet.statesize`` to
34 provinces, about 3,300 communes, 30 departments per province and 100 central bodies, two
signer fingerprints each. The baseline, measured in the same run, is the four-tier directory
itself (8 agencies) through the same steps, and for loading also the plain TOML parse of the
same state-sized document (what every node did with its own file before versions).

Run: .venv/bin/python bench/bench_directory.py [--lookups N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import time
import tomllib
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lienthong.devnet.network import topology_text
from lienthong.devnet.statesize import state_directory, to_toml
from lienthong.dirfiles import VersionFiles
from lienthong.dirholder import DirectoryHolder
from lienthong.dirversion import bootstrap_version, make_version, read_version
from lienthong.routing import next_hop
from lienthong.trust.pki import CertifiedKey, issue_agency, make_ca

T = TypeVar("T")
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def timed(fn: Callable[[], T], rounds: int = 5) -> tuple[float, T]:
    """The best wall time of ``rounds`` calls of ``fn`` (seconds) and its last result."""
    best, result = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result  # type: ignore[return-value]


def peak_mib(fn: Callable[[], object]) -> float:
    """Peak memory Python allocates while ``fn`` runs, in MiB (tracemalloc)."""
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def measure(name: str, document: dict[str, Any], authority: CertifiedKey, lookups: int) -> None:
    """Print one row of figures for ``document``."""
    text = to_toml(document)
    parse_s, _ = timed(lambda: tomllib.loads(text))
    sign_s, data = timed(
        lambda: make_version(
            document,
            number=2,
            issued=NOW,
            expires=NOW + dt.timedelta(days=30),
            key=authority.key,
            cert=authority.certificate,
        ),
        rounds=3,
    )
    load_s, version = timed(lambda: read_version(data, authority.certificate))
    boot_s, _ = timed(lambda: bootstrap_version(tomllib.loads(text), NOW))
    memory = peak_mib(lambda: read_version(data, authority.certificate))
    holder = DirectoryHolder(bootstrap_version(tomllib.loads(text), NOW), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        files = VersionFiles(Path(tmp))
        counter = iter(range(10, 10_000))

        def apply() -> None:
            fresh = read_version(data, authority.certificate)
            object.__setattr__(fresh, "number", next(counter))
            files.write(fresh)
            holder.swap(fresh, time.time())

        apply_s, _ = timed(apply)
    directory = version.directory
    me = "000.00.00.H49"
    codes = list(directory.codes)
    rng = random.Random(1)
    targets = [rng.choice(codes) for _ in range(lookups)]
    start = time.perf_counter()
    for code in targets:
        next_hop(me, directory, code)
    lookup_us = (time.perf_counter() - start) / lookups * 1e6
    compressed = len(zlib.compress(data, 6))
    print(
        f"| {name} | {len(directory):,}"
        f" | {len(text.encode()):,} B TOML, parse {parse_s * 1e3:.1f} ms"
        f" | {len(data):,} B ({compressed:,} B zlib) | sign {sign_s * 1e3:.1f} ms"
        f" | verify+load {load_s * 1e3:.1f} ms ({memory:.1f} MiB peak)"
        f" | bootstrap from TOML {boot_s * 1e3:.1f} ms | apply {apply_s * 1e3:.0f} ms"
        f" | next hop {lookup_us:.1f} µs |"
    )


def main() -> None:
    """Measure the four-tier baseline and the state-sized directory in one run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lookups", type=int, default=20_000)
    args = parser.parse_args()
    authority = issue_agency(make_ca("bench CA", key_type="ec"), "authority", key_type="rsa")
    base = tomllib.loads(topology_text("four-tier"))
    print("| directory | agencies | file | signed version | publish | load | baseline load"
          " | apply (verify, durable write, swap) | lookup |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    measure("four-tier (baseline)", base, authority, args.lookups)
    measure("state size", state_directory(base), authority, args.lookups)


if __name__ == "__main__":
    main()
