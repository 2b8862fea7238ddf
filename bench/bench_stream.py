"""Streaming sign and verify throughput, against the bare SHA-256 of the same file's bytes.

Run: .venv/bin/python bench/bench_stream.py [--sizes 1,20,200] [--rounds 3]

For each attachment size (MB) a package is written to a temporary folder, then signed with
``sign_file`` and the result verified with ``verify_file``; the baseline reads the same file
in 1 MiB pieces into ``hashlib.sha256``. Rates are MB of package per second, the best of the
rounds (the machine is shared: load elsewhere only ever slows a round down), the operations
taking turns round by round. Peak RSS is that of a child process doing one sign and one
verify of the largest package, above the same child once idle.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lienthong.devnet.bigpackage import write_large_package
from lienthong.trust import pki
from lienthong.trust.keys import SigningIdentity
from lienthong.trust.stream import sign_file, verify_file
from lienthong.trust.truststore import TrustStore
from lienthong.trust.verify import VerifyPolicy
from lienthong.xmlstream import CHUNK

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "trust" / "edoc.xml"
LIMIT = 1 << 32


def bare_sha256(path: Path) -> None:
    """Read the file in pieces into SHA-256: the ceiling for a one-pass reader."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while piece := source.read(CHUNK):
            digest.update(piece)


def best_seconds(ops: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """The shortest time of each operation over ``rounds`` rounds, taking turns."""
    best = dict.fromkeys(ops, float("inf"))
    for _ in range(rounds):
        for name, fn in ops.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


CHILD = """
import sys
from pathlib import Path
from lienthong.keyfiles import load_identity
from lienthong.trust import TrustStore
from lienthong.trust.keys import load_certificates
from lienthong.trust.stream import sign_file, verify_file
from lienthong.trust.verify import VerifyPolicy

def peak():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

folder, package = Path(sys.argv[1]), Path(sys.argv[2])
identity = load_identity(folder / "agency.key", folder / "agency.crt")
trust = TrustStore(tuple(load_certificates((folder / "ca.crt").read_bytes())))
idle = peak()
sign_file(package, folder / "child-signed.xml", identity, max_bytes=1 << 32)
signed = peak()
assert verify_file(folder / "child-signed.xml", trust, policy=VerifyPolicy(max_bytes=1 << 32)).valid
print(idle, signed, peak())
"""


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,20,200", help="attachment sizes in MB")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ca = pki.make_ca("Bench CA")
    agency = pki.issue_agency(ca, "000.00.12.H49")
    identity = SigningIdentity(agency.key, agency.certificate)
    trust = TrustStore((ca.certificate,))
    policy = VerifyPolicy(max_bytes=LIMIT)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "ca.crt").write_bytes(ca.cert_pem())
        (folder / "agency.key").write_bytes(agency.key_pem())
        (folder / "agency.crt").write_bytes(agency.cert_pem())
        print(
            f"{'package':>10}  {'bare SHA-256':>13}  {'sign_file':>10}  {'verify_file':>12}"
            f"  {'sign/bare':>9}  {'verify/bare':>11}"
        )
        largest = folder
        for mb in (int(s) for s in args.sizes.split(",")):
            src, dst = folder / f"in-{mb}.xml", folder / f"signed-{mb}.xml"
            write_large_package(SAMPLE.read_bytes(), src, mb << 20)
            sign_file(src, dst, identity, max_bytes=LIMIT)
            assert verify_file(dst, trust, policy=policy).valid
            size = src.stat().st_size
            best = best_seconds(
                {
                    "bare": lambda s=src: bare_sha256(s),
                    "sign": lambda s=src, d=dst: sign_file(s, d, identity, max_bytes=LIMIT),
                    "verify": lambda d=dst: verify_file(d, trust, policy=policy),
                },
                args.rounds,
            )
            rate = {name: size / 1e6 / seconds for name, seconds in best.items()}
            print(
                f"{size / 1e6:>7.1f} MB  {rate['bare']:>8.0f} MB/s  {rate['sign']:>5.0f} MB/s"
                f"  {rate['verify']:>7.0f} MB/s  {rate['sign'] / rate['bare']:>9.2f}"
                f"  {rate['verify'] / rate['bare']:>11.2f}"
            )
            largest = src
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(folder), str(largest)],
            capture_output=True,
            text=True,
            check=True,
        )
        idle, signed, verified = (int(x) for x in done.stdout.split())
        print(
            f"\npeak RSS for {largest.stat().st_size / 1e6:.0f} MB: idle {idle / 1e6:.0f} MB,"
            f" +{(signed - idle) / 1e6:.1f} MB after sign_file,"
            f" +{(verified - idle) / 1e6:.1f} MB after verify_file"
        )


if __name__ == "__main__":
    main()
