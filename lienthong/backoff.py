"""Capped, jittered exponential delays (pure): for reconnect loops and retry schedules.

The delay before retry number ``attempt`` (1 for the first retry) is
``min(cap, base * factor ** (attempt - 1))``, then varied at random by up to ``jitter`` of itself
either way, so that many nodes cut off by the same outage do not all come back in the same
instant, and finally clamped to ``[0, cap]``: no delay is ever negative or longer than ``cap``.
"""

from __future__ import annotations

import math
import random

__all__ = ["Backoff", "exponential_delay"]


def _check(base: float, factor: float, cap: float, jitter: float) -> None:
    if not base > 0:
        raise ValueError(f"backoff base must be greater than 0, not {base}")
    if not factor >= 1:
        raise ValueError(f"backoff factor must be 1 or more, not {factor}")
    if not 0 < cap < math.inf:
        raise ValueError(f"backoff cap must be a finite number greater than 0, not {cap}")
    if not 0 <= jitter <= 1:
        raise ValueError(f"backoff jitter must be between 0 and 1, not {jitter}")


def exponential_delay(
    attempt: int, *, base: float, factor: float, cap: float, jitter: float, rng: random.Random
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    ``base`` > 0 is the first delay, ``factor`` >= 1 the growth per attempt, ``cap`` > 0 (finite)
    the longest delay (below ``base``, every delay is ``cap``), ``jitter`` in [0, 1] the random
    share either way; ``ValueError`` on any other value. The result is always within
    ``[0, cap]``.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    _check(base, factor, cap, jitter)
    # Past the cap the power is irrelevant, and computing it for a large attempt would overflow.
    if factor == 1 or (attempt - 1) * math.log(factor) < math.log(cap / base):
        raw = min(cap, base * factor ** (attempt - 1))
    else:
        raw = cap
    jittered = raw * (1.0 + rng.uniform(-jitter, jitter))
    return max(0.0, min(cap, jittered))


class Backoff:
    """The delays of one retry loop: ``next_delay()`` after each failure, ``reset()`` on success.

    ``attempt`` counts the failures since the last reset (0 when none).
    """

    def __init__(
        self,
        *,
        base: float,
        cap: float,
        jitter: float,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        """Check the parameters now (``ValueError``), so a bad one fails at start, not later."""
        _check(base, factor, cap, jitter)
        self.base = base
        self.factor = factor
        self.cap = cap
        self.jitter = jitter
        self.rng = rng if rng is not None else random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        """Count one more failure and return the delay before the next try."""
        self.attempt += 1
        return exponential_delay(
            self.attempt,
            base=self.base,
            factor=self.factor,
            cap=self.cap,
            jitter=self.jitter,
            rng=self.rng,
        )

    def reset(self) -> None:
        """The last try succeeded: the next failure waits ``base`` again."""
        self.attempt = 0
