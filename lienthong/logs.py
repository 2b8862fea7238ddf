"""Logging: structlog, configured once, JSON lines on stdout for the journal.

Every line carries the context bound with ``structlog.contextvars.bound_contextvars``
(document id, peer, hop, transfer id), an ISO UTC timestamp, the level and a stable event
name. Event names are part of the operator contract: change them only with a reason.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(
    *, json: bool = True, level: str = "info", stream: TextIO | None = None, once: bool = False
) -> None:
    """Configure structlog for the process: JSON (daemon) or readable console lines (people).

    ``level`` is one of debug, info, warning, error; anything else raises ValueError.
    ``once``: this is the process's only configuration (the daemon's), so each module's
    logger is assembled at its first line and kept; otherwise structlog assembles a logger
    for every line, even one the level filters out, which a daemon passing on hundreds of
    transfers a second would pay for at each (a later configuration would not reach a kept
    logger, which is why tests and commands that configure again leave it off).
    """
    if level not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, not {level!r}")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=once,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger whose lines carry ``component=name``.

    The logger stays lazy: modules call this at import time, before :func:`configure`, and
    their lines must still follow the configuration made later.
    """
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger
