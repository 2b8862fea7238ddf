"""Sub-commands of the store area (being built: registers nothing yet)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:  # noqa: ARG001
    """Add this area's sub-commands to ``sub``."""
