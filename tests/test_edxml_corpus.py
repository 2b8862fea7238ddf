"""The sample corpus (tests/data) gives exactly the outcomes tests/data/expected.toml lists."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from lienthong.edxml import validate
from lienthong.xmlsafe import DEFAULT_MAX_BYTES

DATA = Path(__file__).parent / "data"
EXPECTED: dict[str, dict[str, Any]] = tomllib.loads((DATA / "expected.toml").read_text("utf-8"))


def test_every_corpus_file_is_listed() -> None:
    """Each XML file in the corpus has an expected outcome, and each listed file exists."""
    on_disk = {p.name for p in DATA.glob("*.xml")}
    assert on_disk == set(EXPECTED)


def test_corpus_files_stay_small() -> None:
    """No committed corpus file passes 20 KB (large inputs are generated at test time)."""
    assert all(p.stat().st_size < 20_000 for p in DATA.glob("*.xml"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_outcome(name: str) -> None:
    """The file validates, is refused or lists the expected problems, as the manifest says."""
    expected = EXPECTED[name]
    limits = {"max_unzipped": expected["max_unzipped"]} if "max_unzipped" in expected else {}
    result = validate((DATA / name).read_bytes(), **limits)
    outcome = expected["outcome"]
    if outcome == "valid":
        assert result.problems == ()
        assert result.deviations == ()
        assert result.package is not None
        assert result.package.kind == expected["kind"]
    elif outcome == "deviates":
        assert result.problems == ()
        assert result.package is not None
        for path, fragment, kind in expected["deviations"]:
            assert any(
                p.path == path and fragment in p.message and p.kind == kind
                for p in result.deviations
            ), (path, fragment, kind, result.deviations)
        assert result.refusals(strict=True) == result.deviations
    elif outcome == "refused":
        assert result.refusal == expected["reason"]
        assert len(result.problems) == 1
        assert result.problems[0].path == "/"
    else:
        assert outcome == "invalid"
        assert not result.ok
        assert all(p.is_error for p in result.problems)
        for path, fragment in expected["problems"]:
            assert any(p.path == path and fragment in p.message for p in result.problems), (
                path,
                fragment,
                result.problems,
            )


def test_oversize_package_is_refused() -> None:
    """A package over the size limit is refused as too large before parsing."""
    data = (DATA / "edoc_valid.xml").read_bytes()
    big = data.replace(b"</edXML>", b"<!--" + b"x" * (DEFAULT_MAX_BYTES + 1) + b"--></edXML>")
    result = validate(big)
    assert result.refusal == "too-large"
    assert "over the limit" in result.problems[0].message


def test_external_entity_file_never_appears() -> None:
    """The entity naming /etc/passwd is refused and no line of that file reaches the result."""
    result = validate((DATA / "hostile_external_entity.xml").read_bytes())
    assert "root:" not in str(result.problems)
    assert result.package is None
