"""CSV logger files dropped into a folder → sealed readings, each file once, through the agent."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from .running import Running, exported, observe, until, watch_event

START = datetime(2026, 11, 20)
HEADER = "Logger GXL-100 serial L0042\nExported 2026-11-20 08:00\nDate/Time;Temp [°C];RH [%]\n"


def _rows(count: int, start_minute: int = 0) -> str:
    """Rows a minute apart from 2026-11-20 00:00 local time, ``dd.mm.yyyy`` and decimal commas."""
    lines = []
    for i in range(start_minute, start_minute + count):
        stamp = (START + timedelta(minutes=i)).strftime("%d.%m.%Y %H:%M:%S")
        temp = f"{4 + (i % 10) / 10:.1f}".replace(".", ",")
        lines.append(f"{stamp};{temp};{45 + i % 3}")
    return "\n".join(lines) + "\n"


def _device(folder: Path, after: str = "move") -> str:
    return f"""
[devices.drop]
type = "csv_drop"
folder = "{folder}"
zone = "cold-1"
poll_interval_secs = 0.1
settle_secs = 0
after_import = "{after}"
delimiter = ";"
decimal = ","
skip_lines = 2
time_column = "Date/Time"
time_format = "%d.%m.%Y %H:%M:%S"
timezone = "Europe/Zurich"
points.temperature = {{ column = "Temp [°C]", unit = "Cel", calibration_offset = 0.1 }}
points.humidity = {{ column = "RH [%]", unit = "%" }}
"""


def _readings(config: Path) -> list[dict]:
    return [r for r in exported(config) if r["kind"] == "reading"]


def _audits(config: Path, event: str) -> list[dict]:
    return [r["data"] for r in exported(config) if r["data"].get("event") == event]


def test_a_file_is_imported_once_with_its_rows_times_and_hash(tmp_path: Path, write_config):
    folder = tmp_path / "incoming"
    folder.mkdir()
    body = HEADER + _rows(3) + "21.11.2026 00:03:00;n/a;44\nnot a row\n" + _rows(1, 10)
    (folder / "trip-1.csv").write_text(body, encoding="utf-8")
    sha = hashlib.sha256(body.encode()).hexdigest()
    config = write_config(modbus=False, extra_devices=_device(folder))

    async def main() -> None:
        # A synchronised clock, so that data holds the file's provenance only.
        async with Running(config, sync_probe=lambda: (True, "test")) as agent:
            await until(lambda: bool(_audits(config, "file_imported")), what="file imported")
            # The same content again, under another name: reported, not imported twice.
            (folder / "trip-1 (copy).csv").write_text(body, encoding="utf-8")
            await until(lambda: bool(_audits(config, "file_duplicate")), what="duplicate seen")
            assert agent.recorder is not None

    asyncio.run(main())
    readings = _readings(config)
    assert len(readings) == 2 * 5  # 5 rows with a time, 2 columns each
    assert Counter((r["data"]["line"], r["point"]) for r in readings).most_common(1)[0][1] == 1
    first = [r for r in readings if r["data"]["line"] == 4]
    assert {r["src_at"] for r in first} == {"2026-11-19T23:00:00.000000Z"}  # 00:00 Zurich
    temp = next(r for r in first if r["point"] == "temperature")
    assert temp["value"] == 4.1
    assert temp["unit"] == "Cel"
    assert temp["quality"] == "good"
    assert temp["data"] == {"file": "trip-1.csv", "file_sha256": sha, "line": 4}
    assert temp["zone"] == "cold-1"
    assert temp["device"] == "drop"
    bad = next(r for r in readings if r["data"]["line"] == 7 and r["point"] == "temperature")
    assert bad["quality"] == "bad"
    assert bad["value"] is None
    assert "'n/a'" in bad["data"]["error"]
    [malformed] = _audits(config, "file_row_malformed")
    assert malformed["file"] == "trip-1.csv"
    assert malformed["line"] == 8
    assert "1 cells, the header has 3" in malformed["error"]
    [done] = _audits(config, "file_imported")
    assert done["readings"] == 10
    assert done["malformed_rows"] == 1
    assert done["sha256"] == sha
    [dup] = _audits(config, "file_duplicate")
    assert dup["file"] == "trip-1 (copy).csv"
    assert dup["first_imported_as"] == "trip-1.csv"
    assert sorted(p.name for p in folder.iterdir()) == ["imported"]
    assert len(list((folder / "imported").iterdir())) == 2


def test_a_restart_in_the_middle_of_a_file_neither_repeats_nor_skips(
    tmp_path: Path, write_config
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    # More readings than the recorder's queue holds (50,000): the import is then paced by the
    # commits, so the stop below lands inside the file however fast the machine parses.
    rows = 40_000
    (folder / "long.csv").write_text(HEADER + _rows(rows), encoding="utf-8")
    config = write_config(modbus=False, extra_devices=_device(folder))

    async def first_run() -> None:
        running = Running(config)
        async with running as agent:
            assert agent.recorder is not None
            recorder = agent.recorder

            def stop_early(_committed: object) -> None:
                if recorder.sealed >= 1000:
                    running.stop.set()

            observe(agent, stop_early)
            await running.stop.wait()

    async def second_run() -> None:
        async with Running(config) as agent:
            await asyncio.wait_for(watch_event(agent, "file_imported").wait(), 60)

    asyncio.run(first_run())
    partial = len(_readings(config))
    assert 1000 <= partial < 2 * rows, "the first run stopped inside the file"
    asyncio.run(second_run())
    readings = _readings(config)
    keys = Counter((r["data"]["line"], r["point"]) for r in readings)
    assert len(readings) == 2 * rows
    assert max(keys.values()) == 1
    assert {line for line, _ in keys} == set(range(4, 4 + rows))


def test_mark_mode_and_an_unplugged_folder(tmp_path: Path, write_config) -> None:
    folder = tmp_path / "usb"
    config = write_config(modbus=False, extra_devices=_device(folder, after="mark"))
    wrong = HEADER.replace("RH [%]", "Humidity") + _rows(2)

    async def main() -> None:
        async with Running(config):
            await until(lambda: bool(_audits(config, "device_offline")), what="offline")
            folder.mkdir()
            (folder / "a.csv").write_text(HEADER + _rows(2), encoding="utf-8")
            (folder / "b.csv").write_text(wrong, encoding="utf-8")
            await until(lambda: bool(_audits(config, "file_imported")), what="imported")
            await until(lambda: bool(_audits(config, "file_rejected")), what="rejected")

    asyncio.run(main())
    assert _audits(config, "device_online")
    [rejected] = _audits(config, "file_rejected")
    assert rejected["file"] == "b.csv"
    assert "'RH [%]'" in rejected["error"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "a.csv",
        "a.csv.imported",
        "b.csv",
        "b.csv.rejected",
    ]
    assert len(_readings(config)) == 4
