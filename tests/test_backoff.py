"""Capped, jittered exponential delays and the Backoff helper of reconnect loops."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lienthong.backoff import Backoff, exponential_delay

attempts = st.integers(min_value=1, max_value=10_000)
bases = st.floats(min_value=0.001, max_value=100.0)
factors = st.floats(min_value=1.0, max_value=10.0)
caps = st.floats(min_value=0.001, max_value=1e6)
jitters = st.floats(min_value=0.0, max_value=1.0)
seeds = st.integers(min_value=0, max_value=2**32)


def _delay(attempt: int, **changes: Any) -> float:
    values: dict[str, Any] = {
        "base": 1.0,
        "factor": 2.0,
        "cap": 60.0,
        "jitter": 0.0,
        "rng": random.Random(0),
    }
    values.update(changes)
    return exponential_delay(attempt, **values)


def test_without_jitter_the_delays_double_from_base_up_to_the_cap() -> None:
    """base 1, factor 2, cap 10: 1, 2, 4, 8, 10, 10."""
    assert [_delay(n, cap=10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_huge_attempt_number_gives_the_cap_without_overflow() -> None:
    """Attempt 100000 with factor 10 would overflow a float; the delay is simply the cap."""
    assert _delay(100_000, factor=10.0) == 60.0


def test_jitter_varies_the_delay_within_its_share() -> None:
    """With jitter 0.5 the first delay of base 4 lies in [2, 6] and is not always the same."""
    rng = random.Random(7)
    delays = {_delay(1, base=4.0, jitter=0.5, rng=rng) for _ in range(50)}
    assert all(2.0 <= d <= 6.0 for d in delays)
    assert len(delays) > 1


def test_a_cap_below_the_base_makes_every_delay_the_cap() -> None:
    """cap 0.5 under base 2: every delay is 0.5, as a retry schedule's max delay demands."""
    assert [_delay(n, base=2.0, cap=0.5) for n in (1, 2, 3)] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("attempt", "changes", "needle"),
    [
        (0, {}, "attempt counts from 1"),
        (1, {"base": 0.0}, "base"),
        (1, {"factor": 0.5}, "factor"),
        (1, {"cap": 0.0}, "cap"),
        (1, {"cap": float("inf")}, "cap"),
        (1, {"jitter": 1.5}, "jitter"),
        (1, {"jitter": -0.1}, "jitter"),
    ],
)
def test_bad_parameters_are_refused(attempt: int, changes: dict[str, Any], needle: str) -> None:
    """Each impossible parameter raises ValueError naming it."""
    with pytest.raises(ValueError, match=needle):
        _delay(attempt, **changes)


@given(attempts, bases, factors, caps, jitters, seeds)
def test_delay_is_never_negative_nor_above_the_cap(
    attempt: int, base: float, factor: float, cap: float, jitter: float, seed: int
) -> None:
    """Whatever the parameters, 0 <= delay <= cap."""
    rng = random.Random(seed)
    delay = _delay(attempt, base=base, factor=factor, cap=cap, jitter=jitter, rng=rng)
    assert 0.0 <= delay <= cap


@given(attempts, bases, factors, caps)
def test_delays_grow_until_the_cap(attempt: int, base: float, factor: float, cap: float) -> None:
    """Without jitter each delay is at least the previous one, and larger while below the cap."""
    before = _delay(attempt, base=base, factor=factor, cap=cap)
    after = _delay(attempt + 1, base=base, factor=factor, cap=cap)
    assert after >= before
    if factor > 1.0 and after < cap:
        assert after > before


@given(attempts, bases, factors, caps, jitters, seeds)
def test_jittered_delay_stays_within_its_share_of_the_unjittered_one(
    attempt: int, base: float, factor: float, cap: float, jitter: float, seed: int
) -> None:
    """A jittered delay is within +-jitter of the plain delay (then clamped to the cap)."""
    plain = _delay(attempt, base=base, factor=factor, cap=cap)
    jittered = _delay(
        attempt, base=base, factor=factor, cap=cap, jitter=jitter, rng=random.Random(seed)
    )
    assert plain * (1 - jitter) - 1e-9 <= jittered <= min(cap, plain * (1 + jitter)) + 1e-9


def test_backoff_counts_failures_and_reset_starts_again_from_base() -> None:
    """next_delay grows 1, 2, 4 and counts attempts; after reset the next delay is base again."""
    backoff = Backoff(base=1.0, cap=30.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(3)] == [1.0, 2.0, 4.0]
    assert backoff.attempt == 3
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() == 1.0


def test_backoff_refuses_bad_parameters_at_construction() -> None:
    """A Backoff with a negative jitter fails when made, not at the first failure."""
    with pytest.raises(ValueError, match="jitter"):
        Backoff(base=1.0, cap=30.0, jitter=-1.0)


def test_backoff_with_a_seeded_rng_is_reproducible() -> None:
    """Two Backoffs with equally seeded generators produce the same jittered delays."""
    first = Backoff(base=0.5, cap=30.0, jitter=0.3, rng=random.Random(42))
    second = Backoff(base=0.5, cap=30.0, jitter=0.3, rng=random.Random(42))
    assert [first.next_delay() for _ in range(8)] == [second.next_delay() for _ in range(8)]
