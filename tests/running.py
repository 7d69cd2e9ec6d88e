"""Running the agent inside a test's event loop, and reading back what it sealed."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from gxpgate.agent.recording.recorder import CommitListener
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


class Tap:
    """The test's commit listener, given to the agent when it is built (the agent's listeners
    are fixed then): what a test wants to see while the agent runs is added here."""

    def __init__(self) -> None:
        self.observers: list[CommitListener] = []

    def __call__(self, committed: Sequence[Committed]) -> None:
        for observer in list(self.observers):
            observer(committed)


_TAPS: weakref.WeakKeyDictionary[Agent, Tap] = weakref.WeakKeyDictionary()


def tapped_agent(config: Path, **agent_options: Any) -> Agent:
    """An agent whose commits a test can watch with :func:`observe`."""
    tap = Tap()
    listeners = [*agent_options.pop("listeners", ()), tap]
    agent = Agent(load_config(config), listeners=listeners, **agent_options)
    _TAPS[agent] = tap
    return agent


def observe(agent: Agent, listener: CommitListener) -> None:
    """Call ``listener`` after each commit of this (tapped) agent from now on."""
    _TAPS[agent].observers.append(listener)


class Running:
    """The agent running as a task in this event loop."""

    def __init__(self, config: Path, **agent_options: Any) -> None:
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.agent = tapped_agent(config, on_ready=lambda _a: self.ready.set(), **agent_options)
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

    def on_commit(facts: Sequence[Committed]) -> None:
        if any(f.data.get("event") == event for f in facts):
            seen.set()

    observe(agent, on_commit)
    return seen
