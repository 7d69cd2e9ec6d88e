"""One audit vocabulary: every ``data["event"]`` name is a constant of agent/recording/audit.py,
drivers/events.py or (``key_rotated``) the evidence contract, the README's "Audit records"
table documents exactly those, and no module names an event with a string literal."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest

from gxpgate.agent.evidence import record as record_module
from gxpgate.agent.recording import audit as audit_module
from gxpgate.agent.recording.audit import AGENT_EVENTS, EVENTS, EventInfo
from gxpgate.drivers import events as events_module
from gxpgate.drivers.events import DRIVER_EVENTS

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("agent", "drivers", "buffer", "config")
# The modules that define the names (with a module-level constant each).
HOMES = {
    Path("agent/recording/audit.py"): audit_module,
    Path("drivers/events.py"): events_module,
    Path("agent/evidence/record.py"): record_module,
}
# Helpers that take an event name as their first argument.
NAMING_CALLS = {"_event", "_audit"}


def _constants(module: ModuleType) -> dict[str, str]:
    """The module's event-name constants: upper-case names bound to a lower-case identifier."""
    return {
        name: value
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z][a-z0-9_]*", value)
    }


def test_each_constant_is_listed_with_its_meaning() -> None:
    for module, listed in ((audit_module, AGENT_EVENTS), (events_module, DRIVER_EVENTS)):
        constants = _constants(module)
        assert sorted(constants.values()) == sorted(listed), module.__name__
        for name, value in constants.items():
            assert name == value.upper(), f"{module.__name__}.{name} = {value!r}"
            # exactly str: the canonical-bytes fast path takes nothing else (a StrEnum member
            # would seal the same bytes, by the slow reference serialiser)
            assert type(value) is str, name
    assert record_module.KEY_ROTATED in AGENT_EVENTS
    assert not set(AGENT_EVENTS) & set(DRIVER_EVENTS)
    assert dict(EVENTS) == {**AGENT_EVENTS, **DRIVER_EVENTS}
    for name, info in EVENTS.items():
        assert isinstance(info, EventInfo)
        assert info.meaning, name
        assert "\n" not in info.meaning, name
        assert "|" not in info.meaning, name
        assert len(set(info.fields)) == len(info.fields), name
        assert "event" not in info.fields, name
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", f) for f in info.fields), name


# -- the README ---------------------------------------------------------------------------------


def _row(name: str, info: EventInfo) -> str:
    fields = ", ".join(f"`{f}`" for f in info.fields) or "—"
    return f"| `{name}` | {info.meaning} | {fields} |"


def _readme_rows() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Audit records\n" in readme, "README has no section 'Audit records'"
    section = readme.split("\n## Audit records\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        found = re.match(r"\| `([a-z0-9_]+)` \|", line)
        if found:
            assert found[1] not in rows, f"README lists {found[1]} twice"
            rows[found[1]] = line
    return rows


def test_the_readme_table_is_the_vocabulary() -> None:
    rows = _readme_rows()
    missing = [_row(name, info) for name, info in EVENTS.items() if name not in rows]
    assert not missing, "README 'Audit records' lacks:\n" + "\n".join(missing)
    unknown = sorted(set(rows) - set(EVENTS))
    assert not unknown, f"README 'Audit records' lists events the gateway does not know: {unknown}"
    for name, info in EVENTS.items():
        row = _row(name, info)
        assert rows[name] == row, f"README row of {name} should read:\n{row}"


# -- the sources ---------------------------------------------------------------------------------


def _named_literally(tree: ast.AST, names: Mapping[str, object], home: bool) -> Iterator[int]:
    """Lines of ``tree`` that name an audit event with a string literal: a known name anywhere
    (but as the value of a module-level constant in a home of the vocabulary), or any literal
    (or f-string) as the value of an ``"event"`` key or as the name given to ``_event`` /
    ``_audit``."""
    allowed: set[int] = set()
    if home:
        for node in getattr(tree, "body", []):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                allowed.add(id(node.value))

    def literal(node: ast.AST | None) -> bool:
        return isinstance(node, ast.JoinedStr) or (
            isinstance(node, ast.Constant) and isinstance(node.value, str)
        )

    def is_event_key(node: ast.AST | None) -> bool:
        return isinstance(node, ast.Constant) and node.value == "event"

    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in allowed:
            yield node.lineno
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if is_event_key(key) and literal(value):
                    yield value.lineno
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Subscript)
                    and is_event_key(target.slice)
                    and literal(node.value)
                ):
                    yield node.lineno
        elif isinstance(node, ast.Call) and node.args and literal(node.args[0]):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in NAMING_CALLS:
                yield node.lineno


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT), ast.parse(path.read_text(encoding="utf-8"))


def test_no_module_names_an_event_with_a_literal() -> None:
    found = [
        f"{path}:{line}"
        for path, tree in _sources()
        for line in _named_literally(tree, EVENTS, home=path in HOMES)
    ]
    assert not found, (
        "use the constants of agent/recording/audit.py or drivers/events.py: " + ", ".join(found)
    )


@pytest.mark.parametrize(
    "source",
    [
        'data = {"event": "device_gone", "error": e}',
        'data = {"event": f"buffer_{kind}"}',
        'data["event"] = "device_gone"',
        'self._event("logger_gone", serial=s)',
        'await self._audit(f"buffer_{event}", used)',
        'if event in ("device_offline", "device_online"): pass',
        'DeviceEvent({"event": "modbus_plan_split"})',
    ],
)
def test_the_scan_finds_a_literal_name(source: str) -> None:
    assert list(_named_literally(ast.parse(source), EVENTS, home=False))


def test_the_scan_lets_the_constants_be() -> None:
    source = (
        'DEVICE_OFFLINE = "device_offline"\n'
        'data = {"event": DEVICE_OFFLINE, "error": "refused"}\n'
        'self._event(LOGGER_CLOCK, serial="A1")\n'
    )
    assert not list(_named_literally(ast.parse(source), EVENTS, home=True))
    assert list(_named_literally(ast.parse(source), EVENTS, home=False)) == [1]


def test_every_event_is_sealed_or_read_somewhere() -> None:
    """A name no module uses is not an event the gateway has: remove it, or use it."""
    used: set[str] = set()
    for path, tree in _sources():
        if path in (Path("agent/recording/audit.py"), Path("drivers/events.py")):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                used.add(node.id)
    unused = sorted(name for name in EVENTS if name.upper() not in used)
    assert not unused
