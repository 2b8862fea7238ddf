"""The directory: parents, serving nodes, signers, and the errors a wrong one raises."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from lienthong.directory import Directory, DirectoryError, normalize_fingerprint
from lienthong.errors import ConfigError

TOPOLOGIES = Path(__file__).resolve().parents[1] / "config" / "topologies"
NATIONAL = "000.00.00.G22"
FP = "ab" * 32


def _doc(*agencies: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"national": NATIONAL, "agency": [{"code": NATIONAL, "node": True}, *agencies], **top}


def _problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(DirectoryError) as caught:
        Directory.from_mapping(data)
    assert isinstance(caught.value, ConfigError)
    return list(caught.value.problems)


@pytest.mark.parametrize(
    ("name", "tiers"), [("two-tier", 2), ("three-tier", 3), ("four-tier", 4), ("five-tier", 5)]
)
def test_example_topologies_load_with_their_depth(name: str, tiers: int) -> None:
    """Each example directory loads, and its deepest agency sits `tiers` levels down."""
    text = (TOPOLOGIES / f"{name}.toml").read_text(encoding="utf-8")
    directory = Directory.from_mapping(tomllib.loads(text))
    assert max(len(directory.path_to_root(c)) for c in directory.codes) == tiers
    assert directory.national == NATIONAL


def test_parent_comes_from_the_code_and_level_one_hangs_under_national() -> None:
    """Commune -> district -> province -> national when only codes are given."""
    directory = Directory.from_mapping(
        _doc({"code": "000.01.05.H49"}, {"code": "000.00.05.H49"}, {"code": "000.00.00.H49"})
    )
    assert directory.path_to_root("000.01.05.H49") == (
        "000.01.05.H49",
        "000.00.05.H49",
        "000.00.00.H49",
        NATIONAL,
    )
    assert directory.children("000.00.00.H49") == ("000.00.05.H49",)
    assert directory.is_ancestor("000.00.00.H49", "000.01.05.H49")
    assert not directory.is_ancestor("000.01.05.H49", "000.00.00.H49")
    assert directory.parent_of(NATIONAL) is None


def test_missing_tier_hangs_a_code_under_its_nearest_listed_ancestor() -> None:
    """A commune whose district is not listed hangs under its province."""
    directory = Directory.from_mapping(_doc({"code": "000.01.05.H49"}, {"code": "000.00.00.H49"}))
    assert directory.parent_of("000.01.05.H49") == "000.00.00.H49"


def test_explicit_parent_wins_over_the_code() -> None:
    """An explicit parent replaces the parent by code."""
    directory = Directory.from_mapping(
        _doc({"code": "000.00.05.H49", "parent": "000.00.00.H41"}, {"code": "000.00.00.H41"})
    )
    assert directory.parent_of("000.00.05.H49") == "000.00.00.H41"


def test_serving_node_is_self_or_nearest_ancestor_node_or_explicit() -> None:
    """A node serves itself; others are served by the nearest node above, unless told."""
    directory = Directory.from_mapping(
        _doc(
            {"code": "000.00.00.H49", "node": True},
            {"code": "000.00.05.H49"},
            {"code": "000.01.05.H49"},
            {"code": "000.02.05.H49", "served_by": NATIONAL},
        )
    )
    assert directory.serving_node("000.00.00.H49") == "000.00.00.H49"
    assert directory.serving_node("000.01.05.H49") == "000.00.00.H49"
    assert directory.serving_node("000.02.05.H49") == NATIONAL
    assert directory.nodes == {NATIONAL, "000.00.00.H49"}
    assert directory.node_parent("000.00.00.H49") == NATIONAL


def test_may_sign_matches_listed_fingerprints_only() -> None:
    """Listed fingerprints (any case, with colons) may sign; others and unknown codes may not."""
    colons = ":".join(FP[i : i + 2] for i in range(0, 64, 2)).upper()
    directory = Directory.from_mapping(_doc({"code": "000.00.00.H49", "signers": [colons]}))
    assert directory.may_sign("000.00.00.H49", FP)
    assert directory.may_sign("000.00.00.H49", colons)
    assert not directory.may_sign("000.00.00.H49", "cd" * 32)
    assert not directory.may_sign("000.00.00.H49", "not hex")
    assert not directory.may_sign("000.00.00.H41", FP)
    assert not directory.may_sign(NATIONAL, FP)


def test_get_returns_none_for_unlisted_and_agency_names_it() -> None:
    """get() answers None for an unlisted code; agency() raises KeyError naming it."""
    directory = Directory.from_mapping(_doc())
    assert directory.get("000.00.00.H49") is None
    with pytest.raises(KeyError, match=r"000\.00\.00\.H49"):
        directory.agency("000.00.00.H49")


@pytest.mark.parametrize(
    ("agency", "key", "needle"),
    [
        ({"code": "000.1.05.H49"}, "agency[1].code", "not of the form"),
        ({"code": 49}, "agency[1].code", "must be text"),
        ({"name": "no code"}, "agency[1].code", "missing"),
        ({"code": "000.00.00.H49", "colour": "red"}, "agency[1].colour", "unknown key"),
        ({"code": "000.00.00.H49", "node": "yes"}, "agency[1].node", "true or false"),
        ({"code": "000.00.00.H49", "signers": ["abc"]}, "agency[1].signers[0]", "sha256"),
        ({"code": "000.00.00.H49", "signers": "abc"}, "agency[1].signers", "a list"),
        ({"code": "000.00.00.H49", "parent": "000.00.00.H41"}, "agency[1].parent", "not in"),
        ({"code": "000.00.00.H49", "parent": "000.00.00.H49"}, "agency[1].parent", "own parent"),
        ({"code": "QNAM.12"}, "agency[1].parent", "Decision 20 code"),
        ({"code": "000.00.00.H49", "served_by": "000.00.00.H41"}, "agency[1].served_by", "node"),
        (
            {"code": "000.00.00.H49", "node": True, "served_by": NATIONAL},
            "agency[1].served_by",
            "served by itself",
        ),
        ("not a table", "agency[1]", "must be a table"),
    ],
)
def test_bad_entry_is_reported_with_its_key(agency: Any, key: str, needle: str) -> None:
    """Each fault names the entry and key at fault and says what is wrong."""
    problems = _problems(_doc(agency))
    assert (key, needle) in [(k, needle) for k, m in problems if needle in m], problems


def test_duplicate_code_is_reported_with_both_entries() -> None:
    """A code listed twice names both entries."""
    problems = _problems(_doc({"code": "000.00.00.H49"}, {"code": "000.00.00.H49"}))
    assert problems == [("agency[2].code", "000.00.00.H49 is listed twice (also agency[1])")]


def test_cycle_in_explicit_parents_is_detected() -> None:
    """Explicit parents that loop are reported with the loop spelt out."""
    problems = _problems(
        _doc(
            {"code": "000.00.00.H49", "parent": "000.00.00.H41"},
            {"code": "000.00.00.H41", "parent": "000.00.00.H49"},
        )
    )
    assert len(problems) == 1
    key, message = problems[0]
    assert key.endswith(".parent")
    assert "cycle" in message
    assert "000.00.00.H49" in message
    assert "000.00.00.H41" in message


@pytest.mark.parametrize(
    ("data", "key", "needle"),
    [
        ({"agency": []}, "national", "missing"),
        ({"national": "000.00.00.G22", "agency": []}, "national", "not listed"),
        ({"national": "G", "agency": {}}, "agency", "list of tables"),
        ({"national": "000.00.00.h49", "agency": []}, "national", "not of the form"),
        (_doc(colour=1), "colour", "unknown key"),
        (_doc(peer=[{"nodes": [NATIONAL]}]), "peer[0].nodes", "two node codes"),
        (_doc(peer=[{"nodes": [NATIONAL, NATIONAL]}]), "peer[0].nodes", "two different"),
        (_doc(peer=[{"nodes": [NATIONAL, "000.00.00.H41"]}]), "peer[0].nodes", "runs a node"),
        (_doc(peer="x"), "peer", "list of tables"),
    ],
)
def test_bad_document_is_reported_with_its_key(data: Any, key: str, needle: str) -> None:
    """Top-level faults name their key."""
    problems = _problems(data)
    assert any(k == key and needle in m for k, m in problems), problems


def test_national_agency_must_run_a_node() -> None:
    """The agency at the top serves everything above the nodes, so it must run one."""
    problems = _problems({"national": NATIONAL, "agency": [{"code": NATIONAL}]})
    assert problems == [("agency[0].node", "the national agency must run a node")]


def test_all_problems_are_reported_together() -> None:
    """Several faulty entries produce one error listing each of them."""
    with pytest.raises(DirectoryError) as caught:
        Directory.from_mapping(_doc({"code": "bad code"}, {"code": "000.00.00.H49", "node": 1}))
    assert [k for k, _ in caught.value.problems] == ["agency[1].code", "agency[2].node"]
    assert "2 problems" in str(caught.value)
    assert caught.value.key is None


def test_single_problem_error_carries_its_key() -> None:
    """With one fault the ConfigError's key is that fault's key."""
    with pytest.raises(DirectoryError) as caught:
        Directory.from_mapping(_doc({"code": "bad code"}))
    assert caught.value.key == "agency[1].code"
    assert str(caught.value).startswith("agency[1].code: ")


def test_malformed_input_never_crashes() -> None:
    """Garbage documents raise DirectoryError, nothing else."""
    for data in ({"national": NATIONAL, "agency": [None, 1, [], {"code": None}]}, {"agency": "x"}):
        with pytest.raises(DirectoryError):
            Directory.from_mapping(data)
    with pytest.raises(DirectoryError):
        Directory.from_mapping([])  # type: ignore[arg-type]


def test_normalize_fingerprint_refuses_non_hex() -> None:
    """Fingerprints are 64 hex digits; anything else is a ValueError naming it."""
    assert normalize_fingerprint(FP.upper()) == FP
    with pytest.raises(ValueError, match="not a sha256"):
        normalize_fingerprint("zz" * 32)
