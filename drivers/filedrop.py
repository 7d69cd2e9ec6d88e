"""Logger files dropped into a folder (USB read-outs, a network share): each imported once.

Life of a file
    1. *Settled*: it matches the pattern and has not changed for ``settle_secs`` (a copy may
       still be running).
    2. *Claimed*, before a single row is read: moved to ``imported/<sha256[:16]>-NAME`` (or, in
       ``mark`` mode, given a ``NAME.imported`` sidecar holding its SHA-256). A claimed file is
       never looked at as new again, and the hash in its claimed name says which import it is.
    3. *Imported* in chunks through the agent's catch-up, one reading per configured column and
       row, ``src_at`` = the row's time, ``data`` naming the file, its SHA-256 and the line.
       Every reading carries the resume point ``file:<sha256>`` = ``{line, col}``, committed
       with it; a restart resumes after the last committed value, so no row is repeated or
       skipped. The ``file_imported`` audit record marks the file done.
    Content already imported (same SHA-256, under any name) is claimed and reported as
    ``file_duplicate``, not imported again. A file that cannot be imported at all (a configured
    column missing, undecodable text) goes to ``rejected/`` (or gets a ``NAME.rejected``
    sidecar) with a ``file_rejected`` audit record; once the config is fixed, dropping it again
    imports it.

Malformed rows (wrong number of cells, an unreadable time) are ``file_row_malformed`` audit
records naming the file and line (the first 20 per file, then a count in ``file_imported``). A
cell that is not a number becomes a ``bad`` reading with the error: nothing is left out silently.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import hashlib
import io
import os
import time
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from gxpgate.drivers.base import DeviceEvent, DeviceUnreachable, Sample, utc_now
from gxpgate.drivers.events import FILE_DUPLICATE, FILE_IMPORTED, FILE_REJECTED, FILE_ROW_MALFORMED
from gxpgate.drivers.filedrop_model import CsvDropDevice

__all__ = ["CsvDropSource"]

CHUNK_ROWS = 500
MAX_ROW_AUDITS = 20
IMPORTED_DIR = "imported"
REJECTED_DIR = "rejected"


class FileRejected(Exception):
    """The whole file cannot be imported (the reason is the message)."""


@dataclass
class _Import:
    """One claimed file being imported."""

    path: Path
    name: str
    sha256: str
    after_line: int = 0
    after_col: int = -1
    rows: Iterator[tuple[int, list[str]]] | None = None
    header: list[str] = field(default_factory=list)
    readings: int = 0
    malformed: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None


class CsvDropSource:
    """A polled source: :meth:`read` looks at the folder and claims new files (it returns no
    samples); :meth:`catch_up` imports them chunk by chunk. Not safe for concurrent calls."""

    def __init__(
        self, device_id: str, config: CsvDropDevice, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.device_id = device_id
        self.config = config
        self.poll_interval_secs = config.poll_interval_secs
        self._clock = clock
        self._zone = zoneinfo.ZoneInfo(config.timezone)
        self._progress: dict[str, dict[str, Any]] = {}
        self._queue: list[_Import] = []
        self._events: list[DeviceEvent] = []
        self._resumed = False

    # -- the ResumableSource side -------------------------------------------------------------

    def restore(self, state: dict[str, Any]) -> None:
        self._progress = {
            key.removeprefix("file:"): value
            for key, value in state.items()
            if key.startswith("file:") and isinstance(value, dict)
        }

    def drain_events(self) -> list[DeviceEvent]:
        events, self._events = self._events, []
        return events

    async def __aenter__(self) -> CsvDropSource:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._queue.clear()

    def describe(self) -> list[str]:
        cfg = self.config
        columns = ", ".join(f"{name} <- {c.column!r}" for name, c in cfg.points.items())
        return [
            f"csv_drop {cfg.folder} ({cfg.pattern}, after import: {cfg.after_import})",
            f"  time column {cfg.time_column!r} ({cfg.time_format}, {cfg.timezone}); {columns}",
        ]

    # -- polling ------------------------------------------------------------------------------

    async def read(self) -> list[Sample]:
        """Claim the settled new files; raise :class:`DeviceUnreachable` if the folder is not
        there (an unmounted USB stick, a share that went away)."""
        try:
            if not self._resumed:
                self._resume_claimed()
                self._resumed = True
            self._claim_new()
        except OSError as exc:
            error = f"folder {self.config.folder}: {exc.strerror or exc}"
            raise DeviceUnreachable(self.device_id, error) from exc
        return []

    def _done(self, sha: str) -> bool:
        return bool(self._progress.get(sha, {}).get("done"))

    def _queued(self, sha: str) -> bool:
        return any(job.sha256 == sha for job in self._queue)

    def _resume_claimed(self) -> None:
        """Files claimed by an earlier run whose import did not finish."""
        folder = self.config.folder
        if self.config.after_import == "move":
            claimed = folder / IMPORTED_DIR
            if not claimed.is_dir():
                return
            for path in sorted(claimed.iterdir()):
                prefix, _, name = path.name.partition("-")
                matches = [sha for sha in self._progress if sha.startswith(prefix)]
                sha = matches[0] if matches else _sha256(path)
                if len(prefix) == 16 and not self._done(sha) and not self._queued(sha):
                    self._enqueue(path, name, sha)
        else:
            for sidecar in sorted(folder.glob("*.imported")):
                path = sidecar.with_suffix("")
                sha = sidecar.read_text().strip()
                if path.is_file() and not self._done(sha) and not self._queued(sha):
                    self._enqueue(path, path.name, sha)

    def _claim_new(self) -> None:
        folder = self.config.folder
        if not folder.is_dir():
            raise FileNotFoundError(2, "not a folder or not mounted")
        now = self._clock()
        for path in sorted(folder.iterdir()):
            if not path.is_file() or not fnmatch.fnmatchcase(path.name, self.config.pattern):
                continue
            if self.config.after_import == "mark" and (
                path.with_name(path.name + ".imported").exists()
                or path.with_name(path.name + ".rejected").exists()
            ):
                continue
            if now - path.stat().st_mtime < self.config.settle_secs:
                continue
            sha = _sha256(path)
            claimed = self._claim(path, sha, "imported")
            if self._done(sha) or self._queued(sha):
                first = self._progress.get(sha, {}).get("name", path.name)
                self._event(
                    FILE_DUPLICATE,
                    file=path.name,
                    sha256=sha,
                    first_imported_as=first,
                    kept_at=str(claimed),
                )
                continue
            self._enqueue(claimed, path.name, sha)

    def _claim(self, path: Path, sha: str, how: str) -> Path:
        if self.config.after_import == "mark":
            path.with_name(f"{path.name}.{how}").write_text(sha + "\n")
            return path
        target_dir = path.parent / (IMPORTED_DIR if how == "imported" else REJECTED_DIR)
        target_dir.mkdir(exist_ok=True)
        target = target_dir / (f"{sha[:16]}-{path.name}" if how == "imported" else path.name)
        if how == "rejected" and target.exists():
            target = target_dir / f"{sha[:16]}-{path.name}"
        os.replace(path, target)
        return target

    def _enqueue(self, path: Path, name: str, sha: str) -> None:
        done = self._progress.get(sha, {})
        self._queue.append(
            _Import(
                path, name, sha, after_line=int(done.get("line", 0)), after_col=done.get("col", -1)
            )
        )

    # -- importing ----------------------------------------------------------------------------

    async def catch_up(self) -> list[Sample] | None:
        """The next chunk of the file being imported; ``None`` when no file is waiting."""
        while self._queue:
            job = self._queue[0]
            try:
                samples = self._next_chunk(job)
            except FileRejected as exc:
                self._queue.pop(0)
                self._reject(job, str(exc))
                continue
            except OSError as exc:
                error = f"{job.path}: {exc.strerror or exc}"
                raise DeviceUnreachable(self.device_id, error) from exc
            if samples is None:
                self._queue.pop(0)
                self._finish(job)
                continue
            return samples
        return None

    def _open(self, job: _Import) -> None:
        try:
            text = job.path.read_bytes().decode(self.config.encoding)
        except UnicodeDecodeError as exc:
            raise FileRejected(f"not {self.config.encoding} text: {exc}") from None
        lines = io.StringIO(text)
        for _ in range(self.config.skip_lines):
            lines.readline()
        reader = csv.reader(lines, delimiter=self.config.delimiter)
        header = next(reader, None)
        if header is None:
            raise FileRejected("no header row")
        job.header = [cell.strip() for cell in header]
        wanted = [self.config.time_column] + [c.column for c in self.config.points.values()]
        missing = [name for name in wanted if name not in job.header]
        if missing:
            raise FileRejected(f"columns {missing} not in the header {job.header}")
        skip = self.config.skip_lines
        job.rows = ((reader.line_num + skip, row) for row in reader)

    def _next_chunk(self, job: _Import) -> list[Sample] | None:
        if job.rows is None:
            self._open(job)
        assert job.rows is not None
        samples: list[Sample] = []
        for line, row in job.rows:
            if line < job.after_line or not any(cell.strip() for cell in row):
                continue
            samples.extend(self._row(job, line, row))
            if len(samples) >= CHUNK_ROWS or self._events:
                # A row's audit record must follow the readings before it in the chain: resume
                # points only move forward.
                return samples
        return samples or None

    def _row(self, job: _Import, line: int, row: list[str]) -> list[Sample]:
        cfg = self.config
        key = f"file:{job.sha256}"
        if len(row) != len(job.header):
            why = f"{len(row)} cells, the header has {len(job.header)}"
            return self._malformed(job, line, why)
        cells = dict(zip(job.header, row, strict=True))
        try:
            src_at = self._parse_time(cells[cfg.time_column].strip())
        except ValueError as exc:
            return self._malformed(job, line, f"time {cells[cfg.time_column]!r}: {exc}")
        job.first_at = job.first_at or src_at
        job.last_at = src_at
        at = utc_now()
        data = {"file": job.name, "file_sha256": job.sha256, "line": line}
        samples = []
        for col, (point, column) in enumerate(cfg.points.items()):
            if line == job.after_line and col <= job.after_col:
                continue  # committed before a restart
            cursor: dict[str, Any] = {key: {"name": job.name, "line": line, "col": col}}
            raw = cells[column.column].strip()
            try:
                value = float(raw.replace(cfg.decimal, ".") if cfg.decimal == "," else raw)
            except ValueError:
                error = f"{column.column!r} is not a number: {raw!r}"
                bad = {**data, "error": error}
                samples.append(Sample(point, None, column.unit, "bad", at, src_at, bad, cursor))
                continue
            value += column.calibration_offset
            samples.append(Sample(point, value, column.unit, "good", at, src_at, data, cursor))
        job.readings += len(samples)
        return samples

    def _malformed(self, job: _Import, line: int, why: str) -> list[Sample]:
        job.malformed += 1
        if job.malformed <= MAX_ROW_AUDITS and line > job.after_line:
            cursor = {f"file:{job.sha256}": {"name": job.name, "line": line, "col": 1 << 30}}
            self._event(
                FILE_ROW_MALFORMED,
                cursor=cursor,
                file=job.name,
                sha256=job.sha256,
                line=line,
                error=why,
            )
        return []

    def _parse_time(self, text: str) -> datetime:
        fmt = self.config.time_format
        moment = datetime.fromisoformat(text) if fmt == "iso8601" else datetime.strptime(text, fmt)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self._zone)
        return moment.astimezone(UTC)

    def _finish(self, job: _Import) -> None:
        done = {"name": job.name, "line": 1 << 30, "col": 1 << 30, "done": True}
        self._progress[job.sha256] = done
        self._event(
            FILE_IMPORTED,
            cursor={f"file:{job.sha256}": done},
            file=job.name,
            sha256=job.sha256,
            readings=job.readings,
            malformed_rows=job.malformed,
            first_src_at=_iso(job.first_at),
            last_src_at=_iso(job.last_at),
            kept_at=str(job.path),
        )

    def _reject(self, job: _Import, reason: str) -> None:
        where = job.path
        with contextlib.suppress(OSError):
            if self.config.after_import == "move":
                where = self._claim(job.path, job.sha256, "rejected")
            else:
                job.path.with_name(job.name + ".imported").unlink(missing_ok=True)
                self._claim(job.path, job.sha256, "rejected")
        self._event(
            FILE_REJECTED, file=job.name, sha256=job.sha256, error=reason, kept_at=str(where)
        )

    def _event(self, name: str, cursor: dict[str, Any] | None = None, **data: Any) -> None:
        self._events.append(DeviceEvent({"event": name, **data}, cursor=cursor))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")
