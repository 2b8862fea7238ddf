"""Parse and validate throughput of the edXML core, against lxml's bare parse of the same bytes.

Run: .venv/bin/python bench/bench_edxml.py

Packages of about 5 KB, 1 MB and 20 MB are made in the run with build() (one attachment of
random bytes sized to reach the target). For each size it times ``parse`` (safe parse,
normalisation, model, base64 decode), ``validate`` (all of that plus the XSD and the rules) and,
as the baseline, ``lxml.etree.fromstring`` with ``huge_tree`` (needed past libxml2's 10 MB text
node limit), and prints packages/s, MB/s and the ratio to the baseline.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable

from lxml import etree

from lienthong.edxml import build, new_edoc, parse, validate

SIZES = (("5 KB", 5 * 1024), ("1 MB", 1024 * 1024), ("20 MB", 20 * 1024 * 1024))
BUDGET_S = 3.0  # per measurement; at least 3 runs each


def package_of(size: int) -> bytes:
    """A built package of about ``size`` bytes."""
    overhead = len(make(b""))
    raw = max(0, (size - overhead) * 3 // 4)
    return make(os.urandom(raw))


def make(content: bytes) -> bytes:
    return build(
        new_edoc(
            from_code="000.00.00.G22",
            to_codes=["000.00.00.H49", "000.00.12.H49", "000.05.12.H49"],
            subject="Về việc đo hiệu năng liên thông văn bản điện tử",
            attachments=[("congvan.pdf", content, "application/pdf")],
            today=dt.date(2025, 9, 30),
            number="7816",
            notation="VPCP-TTĐT",
        )
    )


def rate(func: Callable[[bytes], object], data: bytes) -> float:
    """Calls per second of ``func(data)``."""
    func(data)  # warm-up: schema loading, caches
    runs, start = 0, time.perf_counter()
    while True:
        func(data)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= BUDGET_S and runs >= 3:
            return runs / elapsed


def main() -> None:
    huge = etree.XMLParser(huge_tree=True)

    def baseline(data: bytes) -> object:
        return etree.fromstring(data, huge)

    def checked(data: bytes) -> object:
        result = validate(data)
        assert result.ok, result.problems
        return result

    print(f"{'size':>6} {'operation':<22} {'pkg/s':>10} {'MB/s':>8} {'vs lxml':>8}")
    for label, size in SIZES:
        data = package_of(size)
        mb = len(data) / 1e6
        base = rate(baseline, data)
        for name, func in (("lxml fromstring", baseline), ("parse", parse), ("validate", checked)):
            r = base if func is baseline else rate(func, data)
            print(f"{label:>6} {name:<22} {r:>10.1f} {r * mb:>8.1f} {r / base:>8.2f}")


if __name__ == "__main__":
    main()
