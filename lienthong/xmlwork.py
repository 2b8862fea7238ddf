"""One worker thread for the daemon's XML work: parsing, validation, signing, verification.

The work is CPU-bound and would stall the event loop, so it runs off the loop; it runs in a
single dedicated thread rather than the shared pool so that the lxml and signxml objects the
cores keep between calls (parsers, compiled XPath, XSD schemas, signers) are never used by
two threads at once. On the two cores an agency server has, little is lost: most of this work
holds the GIL anyway.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lienthong-xml")


async def off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` in the XML thread and return its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_EXECUTOR, functools.partial(fn, *args, **kwargs))
