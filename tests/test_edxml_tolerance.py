"""Property: dropping or emptying any elements of a valid package never breaks the reader.

Whatever is taken away, :func:`parse` either builds a model or raises a :class:`PackageError`
naming a field, :func:`validate` returns a verdict, and the change shows: as a finding, or
as a model that differs from the original's.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from lienthong.edxml import PackageError, parse, validate

DATA = Path(__file__).parent / "data"
SOURCES = ("edoc_valid.xml", "status.xml", "revoke.xml", "update.xml", "replace.xml")


def _elements(name: str) -> int:
    return sum(1 for _ in etree.fromstring((DATA / name).read_bytes()).iter("{*}*")) - 1


def _changed(name: str, changes: dict[int, str]) -> bytes:
    """The file with the elements numbered in document order (root excluded) dropped or
    emptied, as ``changes`` says."""
    root = etree.fromstring((DATA / name).read_bytes())
    targets = list(root.iter("{*}*"))[1:]
    for index, how in sorted(changes.items(), reverse=True):
        element = targets[index]
        parent = element.getparent()
        if parent is None:
            continue
        if how == "drop":
            parent.remove(element)
        else:
            element.text = None
            for child in list(element):
                element.remove(child)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@st.composite
def mutilations(draw: st.DrawFn) -> tuple[str, dict[int, str]]:
    name = draw(st.sampled_from(SOURCES))
    count = _elements(name)
    changes = draw(
        st.dictionaries(
            st.integers(0, count - 1), st.sampled_from(["drop", "empty"]), min_size=1, max_size=4
        )
    )
    return name, changes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutilations())
def test_missing_or_empty_elements_give_a_model_or_a_clear_error(
    case: tuple[str, dict[int, str]],
) -> None:
    """parse raises nothing but PackageError; validate lists the change or the model shows it."""
    name, changes = case
    original = parse((DATA / name).read_bytes())
    data = _changed(name, changes)
    package, error = None, None
    try:
        package = parse(data)
    except PackageError as exc:
        error = exc
    if error is not None:
        assert error.path
        assert error.problem
    result = validate(data)
    findings = result.problems + result.deviations
    if package is None:
        assert result.problems, "a package parse refuses is an error for validate too"
        return
    assert result.package == package
    assert findings or package != original, "the change is neither listed nor visible"
