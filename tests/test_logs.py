"""Log lines are JSON objects carrying the bound context, level and timestamp."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from lienthong.logs import configure, get_logger


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_json_line_carries_bound_context() -> None:
    """A line logged inside bound_contextvars has the document id and peer on it."""
    out = io.StringIO()
    configure(stream=out)
    with structlog.contextvars.bound_contextvars(document_id="D1", peer="000.00.00.H49"):
        get_logger("test").info("transfer_stored", size=5)
    line = json.loads(out.getvalue())
    assert line["event"] == "transfer_stored"
    assert line["document_id"] == "D1"
    assert line["peer"] == "000.00.00.H49"
    assert line["level"] == "info"
    assert line["component"] == "test"
    assert line["timestamp"].endswith("Z")


def test_vietnamese_text_stays_readable() -> None:
    """Non-ASCII text is written as itself, not as escapes."""
    out = io.StringIO()
    configure(stream=out)
    get_logger("test").info("x", subject="Công văn")
    assert "Công văn" in out.getvalue()


def test_level_filters_lower_lines() -> None:
    """At level warning, info lines are not written."""
    out = io.StringIO()
    configure(stream=out, level="warning")
    log = get_logger("test")
    log.info("quiet")
    log.warning("loud")
    assert "quiet" not in out.getvalue()
    assert "loud" in out.getvalue()


def test_unknown_level_is_refused() -> None:
    """A misspelt level names the choices."""
    with pytest.raises(ValueError, match="debug, info, warning, error"):
        configure(level="verbose")


def test_loggers_made_before_configure_follow_it() -> None:
    """A module-level logger made at import time writes with the configuration made later."""
    early = get_logger("early")
    out = io.StringIO()
    configure(stream=out)
    early.info("after")
    assert json.loads(out.getvalue())["event"] == "after"


def test_a_daemon_configured_once_keeps_its_loggers_and_their_context() -> None:
    """Configured once (the daemon), a module's logger is assembled at its first line and
    kept: later lines still carry the context bound then, and the level still filters."""
    out = io.StringIO()
    configure(stream=out, once=True)
    log = get_logger("test")
    log.info("first")
    kept = log.bind  # structlog's lazy logger now hands out the logger it assembled
    log.debug("filtered")
    with structlog.contextvars.bound_contextvars(transfer_id="T1"):
        log.info("second")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["first", "second"]
    assert lines[1]["transfer_id"] == "T1"
    assert log.bind is kept
    assert log.bind() is log.bind()
