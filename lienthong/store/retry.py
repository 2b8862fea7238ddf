"""The retry schedule of a transfer (pure): exponential with jitter, finite in count and age."""

from __future__ import annotations

import random
from dataclasses import dataclass

from lienthong.backoff import exponential_delay
from lienthong.config import RetrySettings


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Retry at ``next_attempt_at``, or give up (``dead``) for ``reason``."""

    dead: bool
    next_attempt_at: float | None
    reason: str


def retry_delay(policy: RetrySettings, attempts: int, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1 for the first)."""
    return exponential_delay(
        max(1, attempts),
        base=policy.base_delay_s,
        factor=policy.factor,
        cap=policy.max_delay_s,
        jitter=policy.jitter,
        rng=rng,
    )


def decide(
    policy: RetrySettings, attempts: int, since: float, now: float, error: str, rng: random.Random
) -> RetryDecision:
    """What to do after attempt number ``attempts`` failed with ``error``.

    ``since`` is when the transfer's schedule started (queued, or last requeued).
    """
    if attempts >= policy.max_attempts:
        return RetryDecision(True, None, f"gave up after {attempts} attempts: {error}")
    next_at = now + retry_delay(policy, attempts, rng)
    if next_at - since > policy.max_age_s:
        age = now - since
        return RetryDecision(
            True, None, f"gave up after {age:.0f} s ({attempts} attempts): {error}"
        )
    return RetryDecision(False, next_at, error)
