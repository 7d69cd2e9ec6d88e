"""What the benchmark scripts share: progress notes, machine facts, and the table of figures
with their targets, printed as it goes and once more as a JSON line at the end."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = [
    "BenchError",
    "Figure",
    "Report",
    "cpu_model",
    "filesystem_of",
    "note",
    "package_version",
]


class BenchError(Exception):
    """A measurement could not be taken; the message says why."""


def note(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


@dataclass
class Figure:
    key: str
    label: str
    value: float | str
    unit: str = ""
    target: str = ""
    ok: bool | None = None
    summary: str = ""
    """Label in the targets summary, where the section title is not shown."""


class Report:
    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.figures: list[Figure] = []
        self.errors: list[str] = []

    def section(self, title: str) -> None:
        print(f"\n== {title} ==", flush=True)
        print(f"  {'figure':<66} {'value':>12} {'unit':<11} {'target':<13} verdict", flush=True)

    def add(
        self,
        key: str,
        label: str,
        value: float | str,
        unit: str = "",
        *,
        at_least: float | None = None,
        below: float | None = None,
        summary: str = "",
    ) -> Figure:
        target, ok = "", None
        if isinstance(value, float | int) and at_least is not None:
            target, ok = f">= {at_least:,.0f}", value >= at_least
        elif isinstance(value, float | int) and below is not None:
            target, ok = f"< {below:,.0f}", value < below
        figure = Figure(key, label, value, unit, target, ok, summary or label)
        self.figures.append(figure)
        print(self._line(figure), flush=True)
        return figure

    def text(self, message: str) -> None:
        print(f"  {message}", flush=True)

    def error(self, where: str, exc: BaseException) -> None:
        message = f"{where}: {type(exc).__name__}: {exc}"
        self.errors.append(message)
        print(f"  ERROR {message}", flush=True)
        traceback.print_exc(file=sys.stderr)

    @staticmethod
    def _line(figure: Figure, label: str | None = None) -> str:
        if isinstance(figure.value, str):
            shown = figure.value
        elif math.isnan(figure.value):
            shown = "n/a"
        elif abs(figure.value) >= 100:
            shown = f"{figure.value:,.0f}"
        else:
            shown = f"{figure.value:,.2f}"
        verdict = {True: "MEETS", False: "MISSES", None: ""}[figure.ok]
        label = figure.label if label is None else label
        return f"  {label:<66} {shown:>12} {figure.unit:<11} {figure.target:<13} {verdict}"

    def summary(self) -> None:
        print("\n== Targets ==", flush=True)
        for figure in self.figures:
            if figure.ok is not None:
                print(self._line(figure, figure.summary), flush=True)
        if self.errors:
            print("\n== Errors ==", flush=True)
            for message in self.errors:
                print(f"  {message}", flush=True)

    def as_json(
        self, machine: dict[str, Any], wall_secs: float, params: dict[str, Any] | None = None
    ) -> str:
        def clean(value: float | str) -> float | str | None:
            if isinstance(value, float):
                return None if math.isnan(value) else round(value, 3)
            return value

        doc: dict[str, Any] = {"bench": self.bench, "machine": machine}
        if params is not None:
            doc["params"] = params
        doc.update(
            wall_secs=round(wall_secs, 1),
            figures={f.key: clean(f.value) for f in self.figures},
            targets={f.key: f.ok for f in self.figures if f.ok is not None},
            errors=self.errors,
        )
        return json.dumps(doc, sort_keys=False)


def filesystem_of(path: Path) -> str:
    """The mount point and type holding ``path`` (fsync cost depends on it)."""
    best, kind = "", "?"
    resolved = str(path.resolve())
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return f"{kind} ({best or '?'})"
