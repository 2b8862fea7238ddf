"""Agency codes: the QCVN 102 form, the Decision 20 form, and malformed codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lienthong.edxml.codes import CodeError, code_problem, parse_code


@pytest.mark.parametrize(
    ("text", "level"),
    [("000.00.00.H49", 1), ("000.00.12.H49", 2), ("000.05.12.H49", 3), ("003.05.02.H41", 4)],
)
def test_level_counts_used_groups(text: str, level: int) -> None:
    """The level is the number of non-zero groups, read from the right."""
    assert parse_code(text).level == level


def test_parent_chain_zeroes_leftmost_nonzero_group() -> None:
    """003.05.02.H41 climbs 000.05.02.H41, 000.00.02.H41, 000.00.00.H41 (spec section 6)."""
    code = parse_code("003.05.02.H41")
    assert [str(a) for a in code.ancestors()] == [
        "000.05.02.H41",
        "000.00.02.H41",
        "000.00.00.H41",
    ]
    assert parse_code("000.00.00.H41").parent is None


def test_is_ancestor_of() -> None:
    """A province is an ancestor of its communes, not of another province's, nor of itself."""
    province = parse_code("000.00.00.H41")
    assert province.is_ancestor_of(parse_code("000.05.02.H41"))
    assert not province.is_ancestor_of(parse_code("000.05.02.H49"))
    assert not province.is_ancestor_of(province)


def test_d20_code_is_opaque() -> None:
    """A Decision 20 code is accepted but has no level or parent of its own."""
    code = parse_code("G22.01.05.0007")
    assert code.kind == "d20"
    assert code.level is None
    assert code.parent is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        (" 000.00.00.H49", "spaces"),
        ("000.0.00.H49", "form 000.00.00.X00"),
        ("000.00.00.h49", "form 000.00.00.X00"),
        ("003.00.02.H41", "level 4 while level 3 is unused"),
        ("x" * 40, "longer than 35"),
        ("H49..01", "upper-case letters, digits and single dots"),
        ("000.00.00.H49;DROP", "upper-case letters, digits and single dots"),
    ],
)
def test_malformed_codes_are_reported(text: str, fragment: str) -> None:
    """Each malformed code raises CodeError naming what is wrong."""
    with pytest.raises(CodeError, match=fragment):
        parse_code(text)
    assert code_problem(text) is not None


@given(st.text(max_size=50))
def test_any_string_is_parsed_or_reported(text: str) -> None:
    """Any string is either a code that prints back as itself, or a CodeError with a reason."""
    problem = code_problem(text)
    if problem is None:
        assert str(parse_code(text)) == text
    else:
        with pytest.raises(CodeError) as info:
            parse_code(text)
        assert str(info.value) == problem
