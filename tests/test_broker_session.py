"""The tests' connect helper: a CONNECT left unanswered is made again, then named."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import pytest
from brokers import HOST, session


async def test_a_connect_left_unanswered_is_tried_three_times_then_named() -> None:
    attempts = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        await reader.read()  # takes the CONNECT, never answers it
        writer.close()

    server = await asyncio.start_server(silent, HOST, 0)
    port = server.sockets[0].getsockname()[1]

    class SilentBroker:
        def client(self, code: str, **kwargs: Any) -> aiomqtt.Client:
            return aiomqtt.Client(HOST, port, identifier=code, timeout=0.5, **kwargs)

    async with server:
        with pytest.raises(aiomqtt.MqttError, match="timed out"):
            async with session(SilentBroker(), "000.00.00.H49"):  # type: ignore[arg-type]
                pass
    assert attempts == 3
