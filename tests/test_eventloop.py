"""The daemon's event loop skips its wake-up pipe on its own thread and keeps it elsewhere."""

from __future__ import annotations

import asyncio
import threading

from lienthong import eventloop


def test_own_thread_schedules_without_waking_and_other_threads_wake_it() -> None:
    """From the loop's thread a callback runs without a byte through the wake-up pipe; from
    another thread it is still woken (the callback runs while the loop waits for nothing)."""
    wakes: list[int] = []

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, eventloop.DaemonLoop)
        real_wake = loop._write_to_self  # type: ignore[attr-defined]

        def counting_wake() -> None:
            wakes.append(1)
            real_wake()

        loop._write_to_self = counting_wake  # type: ignore[attr-defined]
        ran: list[str] = []
        same = asyncio.Event()
        loop.call_soon_threadsafe(lambda: (ran.append("same thread"), same.set()))
        await asyncio.wait_for(same.wait(), 10)
        assert wakes == []
        other = asyncio.Event()
        threading.Thread(
            target=loop.call_soon_threadsafe,
            args=(lambda: (ran.append("other thread"), other.set()),),
        ).start()
        await asyncio.wait_for(other.wait(), 10)
        assert wakes == [1]
        return ran

    assert eventloop.run(main()) == ["same thread", "other thread"]
