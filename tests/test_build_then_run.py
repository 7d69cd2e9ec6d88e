"""Build, then run (issue 16 item 2): the agent's components get what they need when they are
built; the recorder is built last, with its listeners and its intake's filters, and nothing is
wired into it afterwards."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from gxpgate.agent.recording.intake import Intake
from gxpgate.agent.recording.recorder import Recorder
from gxpgate.agent.recording.sealing import Committed
from gxpgate.agent.service.runtime import Agent
from gxpgate.config import load_config
from tests.conftest import ConfigWriter

AGENT = Path(__file__).resolve().parent.parent / "agent"
WIRING = {"listeners", "filters", "sink", "observers"}


def test_a_listener_given_at_construction_sees_every_commit_from_the_first(
    write_config: ConfigWriter,
) -> None:
    """An observer given to the agent (the demo's live view) sees the chain from seq 1, the
    ``agent_started`` record included: nothing is committed before it is in place."""
    config = write_config(modbus=False)
    seen: list[Committed] = []

    def collect(committed: Sequence[Committed]) -> None:
        seen.extend(committed)

    async def main() -> None:
        ready, stop = asyncio.Event(), asyncio.Event()
        agent = Agent(load_config(config), on_ready=lambda _a: ready.set(), listeners=[collect])
        task = asyncio.create_task(agent.run(stop))
        await asyncio.wait_for(ready.wait(), 20)
        assert agent.recorder is not None
        assert agent.recorder.listeners[-1] is collect
        assert agent.alarms is not None
        assert agent.lots is not None
        assert agent.recorder.sample_listeners == (agent.alarms.on_samples,)
        assert agent.lots.on_commit in agent.recorder.listeners
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(main())
    assert [c.seq for c in seen] == list(range(1, len(seen) + 1))
    assert seen[0].data["event"] == "agent_started"
    assert seen[-1].data["event"] == "agent_stopped"


def test_the_recorder_and_its_intake_are_wired_once() -> None:
    """Listeners and filters are tuples given to the constructor: there is nothing to append to."""
    intake = Intake(filters=[lambda fact: fact])
    assert isinstance(intake.filters, tuple)
    with pytest.raises(AttributeError):
        intake.filters.append(lambda fact: fact)  # type: ignore[attr-defined]
    recorder = Recorder(None, None, intake, listeners=[print])  # type: ignore[arg-type]
    assert recorder.listeners == (print,)
    assert not hasattr(recorder, "filters")


def _wiring_mutations(path: Path) -> list[str]:
    """``x.listeners.append(...)``, ``x.filters += ...``, ``x.sink = ...`` outside ``__init__``."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        target: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in {"append", "extend", "insert"}:
                target = node.func.value
        elif isinstance(node, ast.AugAssign):
            target = node.target
        elif isinstance(node, ast.Assign):
            target = node.targets[0]
        if (
            isinstance(target, ast.Attribute)
            and target.attr in WIRING
            and not (isinstance(target.value, ast.Name) and target.value.id == "self")
        ):
            found.append(f"{path.relative_to(AGENT.parent)}:{node.lineno}")
    return found


def test_no_component_is_wired_after_it_is_built() -> None:
    offenders = [hit for path in sorted(AGENT.rglob("*.py")) for hit in _wiring_mutations(path)]
    assert not offenders, offenders
