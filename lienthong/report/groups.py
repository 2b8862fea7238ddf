"""The report at the size of the state: agencies grouped by province and tier, and the
agencies that need attention (pure).

A national or provincial report covers thousands of agencies (about 4,500 after the 2025
reform), too many for one bar or one line each. Each agency is placed (:func:`places`) in

- a **region**: the province it belongs to in the directory (its ancestor at depth 1 whose
  level-1 code is a province's, ``Hnn``), or the central bodies (the national agency, the
  ministries and other level-1 bodies and what hangs under them);
- a **tier**: the level of its QCVN 102 code (1 province or ministry, 2 department or
  district, 3 commune, 4 below), or its depth in the directory for an opaque code.

The figures of a group are its agencies' rows added up (:func:`~lienthong.report.figures.
total_of`). An agency **needs attention** (:func:`needing_attention`) when documents it sent
were refused (status 02), when documents sent to it were quarantined at its node, or when
fewer than :data:`SAME_DAY_TARGET` of the documents it sent were confirmed the same day
because some (not refused) were confirmed late or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from lienthong.directory import Directory
from lienthong.edxml.codes import CodeError, parse_code
from lienthong.report.figures import AgencyFigures, Report, total_of

__all__ = [
    "CENTRAL",
    "SAME_DAY_TARGET",
    "TIERS",
    "Attention",
    "Place",
    "by_region",
    "by_region_and_tier",
    "needing_attention",
    "places",
]

CENTRAL = "central"
"""The region of the central bodies."""
CENTRAL_NAME = "Trung ương (central bodies)"
OTHER = "other"
"""The region of agencies the directory no longer lists (their records are still counted)."""
OTHER_NAME = "Không còn trong danh bạ (no longer in the directory)"

TIERS: Mapping[int, str] = {
    1: "Cấp tỉnh, bộ (level 1)",
    2: "Cấp sở, huyện (level 2)",
    3: "Cấp xã (level 3)",
    4: "Cấp 4 (level 4)",
}
"""The names of the tiers, by level."""

SAME_DAY_TARGET = 0.9
"""An agency that sent documents and had fewer than this share confirmed the same day needs
attention (the target is 100 %; below 90 % something is wrong, not just one late clerk)."""


@dataclass(frozen=True, slots=True)
class Place:
    """Where the report puts one agency: its region (a province's code, or :data:`CENTRAL`),
    the region's name, and its tier (1 to 4)."""

    region: str
    region_name: str
    tier: int


def _tier(directory: Directory, code: str) -> int:
    try:
        level = parse_code(code).level
    except CodeError:
        level = None
    if level is None:
        level = directory.depth(code) if code in directory else 1
    return min(4, max(1, level))


def _is_province(code: str) -> bool:
    try:
        parsed = parse_code(code)
    except CodeError:
        return False
    return parsed.level == 1 and parsed.groups is not None and parsed.groups[3][0] == "H"


def places(directory: Directory, codes: Iterable[str]) -> dict[str, Place]:
    """The place of each of ``codes`` in ``directory`` (see the module docstring)."""
    out: dict[str, Place] = {}
    for code in codes:
        if code not in directory:
            out[code] = Place(OTHER, OTHER_NAME, _tier(directory, code))
            continue
        path = directory.path_to_root(code)  # the code, its parent, ..., the national agency
        top = path[-2] if len(path) >= 2 else path[-1]
        if _is_province(top):
            agency = directory.agency(top)
            out[code] = Place(top, agency.name or top, _tier(directory, code))
        else:
            out[code] = Place(CENTRAL, CENTRAL_NAME, _tier(directory, code))
    return out


def _place(places: Mapping[str, Place], code: str) -> Place:
    return places.get(code) or Place(OTHER, OTHER_NAME, 1)


def by_region(report: Report, places: Mapping[str, Place]) -> list[AgencyFigures]:
    """One row per region (``agency`` its code, ``name`` its name), in the order their
    first agency comes in the report."""
    groups: dict[str, list[AgencyFigures]] = {}
    names: dict[str, str] = {}
    for row in report.agencies:
        place = _place(places, row.agency)
        groups.setdefault(place.region, []).append(row)
        names[place.region] = place.region_name
    return [
        replace(total_of(members, names[region]), agency=region)
        for region, members in groups.items()
    ]


def by_region_and_tier(
    report: Report, places: Mapping[str, Place]
) -> dict[tuple[str, int], AgencyFigures]:
    """The figures of each (region, tier) that has agencies."""
    groups: dict[tuple[str, int], list[AgencyFigures]] = {}
    for row in report.agencies:
        place = _place(places, row.agency)
        groups.setdefault((place.region, place.tier), []).append(row)
    return {key: total_of(rows, TIERS[key[1]]) for key, rows in groups.items()}


@dataclass(frozen=True, slots=True)
class Attention:
    """An agency that needs attention, and why (sentences for people)."""

    row: AgencyFigures
    reasons: tuple[str, ...]


def needing_attention(rows: Sequence[AgencyFigures]) -> list[Attention]:
    """The agencies of ``rows`` that need attention, most refusals first, then the lowest
    same-day share."""
    out = []
    for row in rows:
        reasons = []
        if row.refused:
            reasons.append(f"{row.refused} văn bản gửi bị từ chối (refused)")
        if row.received_quarantined:
            reasons.append(f"{row.received_quarantined} văn bản nhận bị cách ly (quarantined)")
        share = row.same_day_share
        # A refused document is never confirmed: it is named once, as a refusal.
        late = row.sent - row.confirmed_same_day - row.refused
        if share is not None and share < SAME_DAY_TARGET and late > 0:
            reasons.append(
                f"xác nhận trong ngày {round(share * 100)} % (same-day confirmation below"
                f" {round(SAME_DAY_TARGET * 100)} %)"
            )
        if reasons:
            out.append(Attention(row, tuple(reasons)))
    out.sort(key=lambda a: (-a.row.refused, -a.row.received_quarantined, _share_key(a.row)))
    return out


def _share_key(row: AgencyFigures) -> float:
    share = row.same_day_share
    return share if share is not None else 1.0
