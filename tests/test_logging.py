"""Log lines: one parseable line per event, journald priorities, no secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import uuid
from pathlib import Path

import pytest

from gxpgate.agent.service.logging_setup import EventFormatter, journal_stream, redact
from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.quality_service import QualityServiceSimulator

from .running import GW, exported, until

REPO = Path(__file__).resolve().parents[1]

_TOKEN = re.compile(
    r'\s*(?:(?P<key>[A-Za-z_][\w.-]*)=(?P<value>"(?:[^"\\]|\\.)*"|[^\s"]*)|(?P<word>\S+))'
)


def parse(message: str) -> tuple[list[str], dict[str, str]]:
    """Split a rendered message into bare words and ``key=value`` fields (JSON-quoted values
    decoded); fails unless the whole message is consumed."""
    words: list[str] = []
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(message):
        match = _TOKEN.match(message, pos)
        assert match is not None, f"unparseable at {pos}: {message!r}"
        if match["word"] is not None:
            assert '"' not in match["word"], f"stray quote in {message!r}"
            words.append(match["word"])
        else:
            value = match["value"]
            fields[match["key"]] = json.loads(value) if value.startswith('"') else value
        pos = match.end()
    return words, fields


def record(
    msg: str,
    *args: object,
    level: int = logging.WARNING,
    name: str = "gxpgate.agent.devices.supervisor",
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_an_error_with_spaces_quotes_and_a_newline_stays_one_parseable_line() -> None:
    error = 'no response within 300 ms\nlast frame: "01 04 00" (crc=bad)'
    line = EventFormatter().format(record("device.offline device=%s error=%s", "probe-1", error))
    assert "\n" not in line
    stamp, level, logger, event, rest = line.split(" ", 4)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert (level, logger, event) == (
        "WARNING",
        "gxpgate.agent.devices.supervisor",
        "device.offline",
    )
    assert parse(rest) == ([], {"device": "probe-1", "error": error})


def test_only_values_in_key_positions_are_quoted() -> None:
    msg = "alarm.%s id=%s value=%s lots=%d%s empty=%s pct=%.1f%%"
    args = ("active", "a-1", "8.4", 2, " by=qa lead", "", 12.345)
    line = EventFormatter(journal=True).format(record(msg, *args))
    # The event name and a trailing clause are message text, not values.
    assert (
        line == "<4>gxpgate.agent.devices.supervisor "
        'alarm.active id=a-1 value=8.4 lots=2 by=qa lead empty="" pct=12.3%'
    )


def test_newlines_outside_values_are_escaped_too() -> None:
    line = EventFormatter(journal=True).format(record("lib said: %s\nand more", "a\r\nb\x1b[2J"))
    assert line == "<4>gxpgate.agent.devices.supervisor lib said: a\\r\\nb\\x1b[2J\\nand more"


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.DEBUG, "<7>"),
        (logging.INFO, "<6>"),
        (logging.WARNING, "<4>"),
        (logging.ERROR, "<3>"),
        (logging.CRITICAL, "<2>"),
    ],
)
def test_journald_lines_carry_the_priority_and_no_timestamp(level: int, prefix: str) -> None:
    line = EventFormatter(journal=True).format(record("buffer.pruned records=%d", 7, level=level))
    assert line == f"{prefix}gxpgate.agent.devices.supervisor buffer.pruned records=7"


def test_a_crash_keeps_its_traceback_each_line_with_the_priority() -> None:
    try:
        raise RuntimeError("boom\nsecond line token=abc123")
    except RuntimeError:
        crashed = logging.LogRecord(
            "gxpgate.agent.cli.main",
            logging.CRITICAL,
            __file__,
            1,
            "agent.crashed",
            (),
            sys.exc_info(),
        )
    lines = EventFormatter(journal=True).format(crashed).split("\n")
    assert lines[0] == "<2>gxpgate.agent.cli.main agent.crashed"
    assert lines[1] == "<2>Traceback (most recent call last):"
    assert "<2>RuntimeError: boom" in lines
    assert all(line.startswith("<2>") for line in lines)
    assert "abc123" not in "\n".join(lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uplink.auth token=%s", "uplink.auth token=[redacted]"),
        ('mqtt password="p w d" host=h', "mqtt password=[redacted] host=h"),
        ("client_secret=abc;next", "client_secret=[redacted];next"),
        ("Authorization: Bearer eyJhbGciOi.J9x-_", "Authorization: [redacted]"),
        ("sent Bearer eyJhbGciOi.J9x-_ to it", "sent Bearer [redacted] to it"),
        ('{"api_key": "k-1", "n": 1}', '{"api_key": [redacted], "n": 1}'),
        ("url=https://gw:hunter2@qs.example/v1?a=1", "url=https://gw:[redacted]@qs.example/v1?a=1"),
        ("GET /x?token=abc&gw=1", "GET /x?token=[redacted]&gw=1"),
        # Where a secret is kept, and ordinary words, stay readable.
        ("uplink.token_file=/etc/gxpgate/token", "uplink.token_file=/etc/gxpgate/token"),
        ("agent.started gw=gw-1 key=4f2a9c", "agent.started gw=gw-1 key=4f2a9c"),
    ],
)
def test_secret_values_are_redacted(text: str, expected: str) -> None:
    assert redact(text.replace("%s", "s3cr3t")) == expected


def test_a_secret_passed_as_an_argument_never_reaches_the_line() -> None:
    line = EventFormatter().format(
        record("uplink.config url=%s token=%s", "https://qs.example", "abc def==")
    )
    assert line.endswith("uplink.config url=https://qs.example token=[redacted]")


def test_journal_mode_only_when_journal_stream_names_stdout(tmp_path: Path) -> None:
    with (tmp_path / "out").open("w") as out, (tmp_path / "other").open("w") as other:
        st, elsewhere = os.fstat(out.fileno()), os.fstat(other.fileno())
        assert journal_stream({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, out)
        # Inherited by a process whose stdout now goes to a file: plain lines.
        assert not journal_stream({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, other)
        assert not journal_stream({"JOURNAL_STREAM": f"{elsewhere.st_dev}"}, other)
        assert not journal_stream({}, out)


def test_running_gateway_logs_state_changes_only_and_never_the_token(
    tmp_path: Path, write_config, signing_key
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    token_file = tmp_path / "uplink.token"
    token_file.write_text(token + "\n")
    out_path, err_path = tmp_path / "stdout.log", tmp_path / "stderr.log"

    def lines() -> list[str]:
        return out_path.read_text().splitlines()

    def logged(event: str) -> bool:
        return any(f" {event} " in line + " " for line in lines())

    async def main() -> int:
        async with ModbusSimulator() as sim:
            with QualityServiceSimulator(
                tmp_path / "qs.db", [signing_key[1].public_key()], token=token
            ) as qs:
                config = write_config(sim.port, qs.url, poll=0.05)
                text = config.read_text().replace(
                    "[uplink]\n", f'[uplink]\ntoken_file = "{token_file}"\n'
                )
                config.write_text(text)

                def acked() -> int:
                    return qs.acked_through(*qs.chains()[0]) if qs.chains() else 0

                with out_path.open("wb") as out, err_path.open("wb") as err:
                    st = os.fstat(out.fileno())
                    env = {
                        **os.environ,
                        "PYTHONPATH": str(REPO),
                        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                    }
                    env.pop("NOTIFY_SOCKET", None)
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "gxpgate", "run", "--config", str(config),
                        env=env, stdout=out, stderr=err,
                    )  # fmt: skip
                try:
                    await until(lambda: acked() >= 60, what="delivery with the token")
                    qs.outage_start()
                    await until(lambda: logged("uplink.failing"), what="uplink.failing")
                    sim.set_fault(1, "no_answer")
                    await until(lambda: logged("device.offline"), what="device.offline")
                    sim.set_fault(1, None)
                    await until(lambda: logged("device.online"), what="device.online")
                    qs.outage_end()
                    await until(lambda: logged("uplink.recovered"), what="uplink.recovered")
                    mark = acked()
                    await until(lambda: acked() >= mark + 200, what="more polls")
                    proc.send_signal(signal.SIGTERM)
                    return await asyncio.wait_for(proc.wait(), 30)
                finally:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()

    assert asyncio.run(main()) == 0
    output = out_path.read_text()
    assert token not in output
    assert token not in err_path.read_text()
    readings = [r for r in exported(tmp_path / "gxpgate.toml") if r["kind"] == "reading"]
    assert readings[0]["gw"] == GW
    events: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for line in lines():
        match = re.fullmatch(r"<([0-7])>(\S+) (\S+)(.*)", line)
        assert match is not None, f"not a journald event line: {line!r}"
        priority, _logger, event, rest = match.groups()
        _words, fields = parse(rest)
        events.setdefault(event, []).append((priority, fields))
    assert len(readings) >= 250
    assert len(lines()) <= 40, "a line per reading?"
    for event in ("device.offline", "device.online", "uplink.failing", "uplink.recovered"):
        assert len(events[event]) == 1, f"{event}: one line per state change"
    priority, offline = events["device.offline"][0]
    assert priority == "4"
    assert offline == {"device": "probe-1", "error": "no response within 300 ms"}
    priority, failing = events["uplink.failing"][0]
    assert priority == "4"
    assert failing["kind"] == "connect"
    assert " " in failing["error"], "a multi-word error, quoted and read back whole"
    assert events["agent.started"][0][0] == "6"
