"""The exception families, named for who is at fault.

- ``PeerInputError``: the input we were given is bad (malformed or hostile XML, a wrong
  signature, an unknown recipient). Refuse it, keep it in quarantine, tell the sender why;
  never retry, because the same bytes will fail the same way.
- ``TransientError``: the world is temporarily in the way (a broker down, the database
  locked, the disk full). Retry on the schedule, stop intake while it lasts.
- ``ConfigError``: the operator's configuration is wrong; names the key and the problem.
- Anything else escaping the cores is our own bug.
"""

from __future__ import annotations


class LienthongError(Exception):
    """Base class of every error the project raises on purpose."""


class PeerInputError(LienthongError):
    """The input is bad: refuse and quarantine it, never retry it."""


class XmlRefused(PeerInputError):
    """XML refused before or while parsing: malformed, hostile or over a limit.

    ``reason`` is a short stable token (``malformed``, ``dtd``, ``too-large``, ``too-deep``;
    ``encoding`` from the streaming reader, which reads UTF-8 only) for metrics and tests;
    ``str(err)`` is the sentence for people.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TransientError(LienthongError):
    """A fault that may pass: retry later."""


class ConfigError(LienthongError):
    """The configuration is wrong. ``key`` is the dotted key at fault, when there is one."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
