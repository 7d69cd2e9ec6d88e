"""Running the agent inside a test's event loop, and reading back what it sealed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from gxpgate.agent.recording.sealing import Committed
from gxpgate.agent.service.runtime import Agent
from gxpgate.buffer import Outbox
from gxpgate.config import load_config

GW = "gw-test"


async def until(condition: Callable[[], bool], within: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.02)


class Running:
    """The agent running as a task in this event loop."""

    def __init__(self, config: Path, **agent_options: Any) -> None:
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.agent = Agent(
            load_config(config), on_ready=lambda _a: self.ready.set(), **agent_options
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Agent:
        self.task = asyncio.create_task(self.agent.run(self.stop))
        await asyncio.wait_for(self.ready.wait(), 10)
        return self.agent

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


def exported(config: Path) -> list[dict]:
    loaded = load_config(config)
    outbox = Outbox(loaded.config.buffer.path, GW)
    try:
        return [orjson.loads(b) for b in outbox.export()]
    finally:
        outbox.close()


def watch_event(agent: Agent, event: str) -> asyncio.Event:
    """Set once a record with ``data.event == event`` is committed (cheaper than exporting)."""
    seen = asyncio.Event()
    assert agent.recorder is not None

    def on_commit(facts: Sequence[Committed]) -> None:
        if any(f.data.get("event") == event for f in facts):
            seen.set()

    agent.recorder.listeners.append(on_commit)
    return seen
