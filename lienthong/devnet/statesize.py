"""A directory the size of the state after the 2025 reform, for benchmarks and network tests.

:func:`state_directory` adds to a base directory (by default the four-tier demonstration one)
about 100 central bodies under the national agency, provinces up to 34, 30 departments in each
province and communes up to 3,300, hung straight under their province (the reform removed the
districts), each with two signer fingerprints. Codes are valid QCVN 102 codes that never
collide with the base's; the same ``seed`` gives the same directory.

``filler_nodes`` says whether the added provinces and central bodies run nodes of their own
(true for benchmarks of routing tables; false for a network on one machine, where every node
would be a daemon to start): when false they are served by the national node.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from typing import Any

__all__ = ["state_directory", "to_toml"]

DEPARTMENTS = (
    "Nội vụ", "Tài chính", "Tư pháp", "Xây dựng", "Công Thương", "Y tế", "Giáo dục và Đào tạo",
    "Nông nghiệp và Môi trường", "Khoa học và Công nghệ", "Văn hóa, Thể thao và Du lịch",
)  # fmt: skip


def _signers(rng: random.Random, count: int) -> list[str]:
    return [f"{rng.getrandbits(256):064x}" for _ in range(count)]


def state_directory(
    base: Mapping[str, Any],
    *,
    provinces: int = 34,
    communes: int = 3300,
    departments: int = 30,
    central: int = 100,
    signers: int = 2,
    filler_nodes: bool = True,
    seed: int = 2025,
) -> dict[str, Any]:
    """``base`` (a directory document) grown to the given sizes; see the module docstring."""
    rng = random.Random(seed)
    document = copy.deepcopy(dict(base))
    agencies: list[dict[str, Any]] = document.setdefault("agency", [])
    taken = {a["code"] for a in agencies}

    def add(code: str, name: str, *, node: bool = False, parent: str | None = None) -> bool:
        if code in taken:
            return False
        taken.add(code)
        entry: dict[str, Any] = {"code": code, "name": name, "signers": _signers(rng, signers)}
        if node:
            entry["node"] = True
        if parent is not None:
            entry["parent"] = parent
        agencies.append(entry)
        return True

    added_central = 0
    for letter in "GBA":
        for number in range(1, 100):
            if added_central >= central:
                break
            code = f"000.00.00.{letter}{number:02d}"
            if add(code, f"Cơ quan trung ương {letter}{number:02d}", node=filler_nodes):
                added_central += 1
    province_codes = [a["code"] for a in agencies if a["code"].startswith("000.00.00.H")]
    number = 1
    while len(province_codes) < provinces:
        code = f"000.00.00.H{number:02d}"
        if add(code, f"UBND tỉnh H{number:02d}", node=filler_nodes):
            province_codes.append(code)
        number += 1
    for province in province_codes:
        suffix = province[-3:]
        for d in range(1, departments + 1):
            add(f"000.00.{d:02d}.{suffix}", f"Sở {DEPARTMENTS[d % len(DEPARTMENTS)]} {suffix}")
    # Communes keep their pre-reform code (its district group, 31 to 99, is not listed), so
    # their parent by code is the province: the 2025 shape without districts.
    per_province = -(-communes // len(province_codes))
    count = 0
    for province in province_codes:
        suffix = province[-3:]
        for i in range(per_province):
            if count >= communes:
                break
            district, commune = 31 + i // 99, 1 + i % 99
            if add(f"000.{commune:02d}.{district:02d}.{suffix}", f"UBND xã {suffix}-{i + 1}"):
                count += 1
    return document


def to_toml(document: Mapping[str, Any]) -> str:
    """A directory document as the TOML file a node reads (``[[agency]]`` tables)."""
    from lienthong.devnet.network import render_toml  # network imports this module's users

    lines = [f'national = "{document["national"]}"', ""]
    for agency in document["agency"]:
        lines.append(render_toml({"agency": agency}).replace("[agency]", "[[agency]]"))
    for peer in document.get("peer", []):
        lines.append(render_toml({"peer": peer}).replace("[peer]", "[[peer]]"))
    return "\n".join(lines)
