"""The HTTP uplink against a service that answers nonsense (issue 14 items 1, 2, 7, 9, 12).

A real agent, a real Modbus simulator and a hostile HTTP server on loopback: whatever the
answer, the agent keeps running, the cursor stays a sequence number no higher than what was
sent, each bad episode is sealed once, and no secret the service echoes is kept anywhere.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from gxpgate.agent._retry import Backoff
from gxpgate.agent.cli.main import app
from gxpgate.agent.uplink.http import CONNECT_RETRY_MAX_SECS, retry_delay
from gxpgate.buffer import Outbox
from gxpgate.simulators.modbus_sim import ModbusSimulator

from .hostile import Answer, HostileService
from .running import GW, Running, exported, until
from .sealed import as_schema

BAD_BODIES = {
    "true": b'{"acked_through": true}',
    "string": b'{"acked_through": "12"}',
    "negative": b'{"acked_through": -1}',
    "float": b'{"acked_through": 1.5}',
    "null": b'{"acked_through": null}',
    "missing": b"{}",
    "list": b"[1, 2]",
    "malformed": b'{"acked_through": ',
    "too_big": b'{"acked_through": 99999999999999999999999}',
}


def audits(config: Path, event: str) -> list[dict]:
    return [
        r["data"] for r in exported(config) if r["kind"] == "audit" and r["data"]["event"] == event
    ]


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_a_malformed_answer_is_a_rejected_batch_and_never_the_cursor(
    name: str, tmp_path: Path, write_config
) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim, HostileService([Answer(BAD_BODIES[name])]) as service:
            config = write_config(sim.port, service.url)
            async with Running(config) as agent:
                assert agent.forwarder is not None
                stats = agent.forwarder.stats
                await until(lambda: stats.errors_by_kind.get("malformed", 0) >= 3, what="retries")
                assert agent.outbox.acked_through == 0
                assert "malformed answer" in (stats.last_error or "")
        rejected = audits(config, "uplink_rejected")
        assert len(rejected) == 1, "one audit per episode, not one per attempt"
        assert rejected[0]["reason"] == "malformed"
        outbox = Outbox(tmp_path / "buffer.db", GW)
        try:
            assert outbox.acked_through == 0
        finally:
            outbox.close()

    asyncio.run(main())


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_answer_is_refused_without_reading_it_whole(
    chunked: bool, tmp_path: Path, write_config
) -> None:
    async def main() -> None:
        huge = Answer(size=100 * 1024 * 1024 if not chunked else 4 * 1024 * 1024, chunked=chunked)
        async with ModbusSimulator() as sim, HostileService([huge]) as service:
            config = write_config(sim.port, service.url)
            async with Running(config) as agent:
                assert agent.forwarder is not None
                stats = agent.forwarder.stats
                await until(lambda: stats.errors_by_kind.get("malformed", 0) >= 2, what="retries")
                assert "bytes" in (stats.last_error or "")
                assert agent.outbox.acked_through == 0

    asyncio.run(main())


def test_an_ack_beyond_what_was_sent_moves_the_cursor_only_to_what_was_sent(
    tmp_path: Path, write_config
) -> None:
    async def main() -> None:
        beyond = Answer(b'{"acked_through": 1000000}')
        async with ModbusSimulator() as sim, HostileService([Answer(), beyond]) as service:
            config = write_config(sim.port, service.url, batch=5)
            async with Running(config) as agent:
                for batches in (2, 3, 4):
                    await until(lambda n=batches: len(service.keys) >= n, what="batches")
                    assert agent.outbox.acked_through <= service.sent_through
        claims = audits(config, "uplink_ack_beyond_sent")
        assert len(claims) == 1, "the claim is on record, once for the episode"
        assert claims[0]["claimed_through"] == 1000000
        assert claims[0]["sent_through"] <= service.sent_through

    asyncio.run(main())


def test_a_cursor_claim_beyond_the_chain_is_not_believed(tmp_path: Path, write_config) -> None:
    """The GET at start-up says the service holds seq 10^9 of a chain that has a dozen."""

    async def main() -> None:
        bogus = HostileService([Answer(b'{"acked_through": 1000000000}')])
        async with ModbusSimulator() as sim, bogus as service:
            config = write_config(sim.port, service.url)
            async with Running(config) as agent:
                await until(lambda: len(service.requests) >= 3, what="requests")
                assert agent.outbox.acked_through <= service.sent_through
        claims = audits(config, "uplink_ack_beyond_sent")
        assert claims
        assert claims[0]["endpoint"] == "cursor"

    asyncio.run(main())


def test_a_dripped_answer_is_a_timeout_not_a_stall(tmp_path: Path, write_config) -> None:
    async def main() -> None:
        drip = Answer(b'{"acked_through": 0}', drip_secs=0.5)
        async with ModbusSimulator() as sim, HostileService([drip]) as service:
            config = write_config(sim.port, service.url)
            text = config.read_text().replace("timeout_secs = 5", "timeout_secs = 1")
            config.write_text(text)
            async with Running(config) as agent:
                assert agent.forwarder is not None
                stats = agent.forwarder.stats
                await until(lambda: stats.errors_by_kind.get("timeout", 0) >= 2, what="timeouts")
                assert "no complete answer within 1 s" in (stats.last_error or "")

    asyncio.run(main())


def test_secrets_the_service_echoes_are_redacted_everywhere(tmp_path: Path, write_config) -> None:
    token = "s3cr3t-T0KEN-value"
    echo = Answer(f'{{"error": "bad token Bearer {token} for pw hunter22"}}'.encode(), status=401)

    async def main() -> None:
        async with ModbusSimulator() as sim, HostileService([echo]) as service:
            config = write_config(sim.port, service.url.replace("//", "//ops:hunter22@"))
            text = config.read_text().replace("[uplink]\n", f'[uplink]\ntoken = "{token}"\n')
            config.write_text(text)
            async with Running(config) as agent:
                assert agent.forwarder is not None
                stats = agent.forwarder.stats
                await until(lambda: stats.errors_by_kind.get("rejected", 0) >= 2, what="retries")
                assert token not in (stats.last_error or "")
                assert "[redacted]" in (stats.last_error or "")
        sealed = b"".join(orjson.dumps(r) for r in exported(config))
        assert token.encode() not in sealed
        assert b"hunter22" not in sealed
        rejected = audits(config, "uplink_rejected")
        assert rejected
        assert "[redacted]" in rejected[0]["error"]

    asyncio.run(main())


def test_a_corrupt_cursor_cannot_be_stored_and_an_old_one_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    Outbox(path, GW).close()
    with (
        sqlite3.connect(path) as conn,
        pytest.raises(sqlite3.IntegrityError, match="acked_through"),
    ):
        conn.execute("UPDATE meta SET value = 'True' WHERE key = 'acked_through'")
    outbox = Outbox(path, GW)
    with pytest.raises(ValueError, match="non-negative int"):
        outbox.set_acked_through(True)
    outbox.close()
    # What a version before the guard could leave behind: schema 2 with the cursor 'True'.
    as_schema(path, 2)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 'True' WHERE key = 'acked_through'")
    conn.commit()
    conn.close()
    outbox = Outbox(path, GW)
    try:
        assert outbox.acked_through == 0
        assert outbox.repairs
        assert "'True'" in outbox.repairs[0]
    finally:
        outbox.close()


def test_buffer_status_on_a_repaired_cursor_prints_no_traceback(
    tmp_path: Path, write_config
) -> None:
    config = write_config()
    Outbox(tmp_path / "buffer.db", GW).close()
    as_schema(tmp_path / "buffer.db", 2)
    conn = sqlite3.connect(tmp_path / "buffer.db")
    conn.execute("UPDATE meta SET value = 'True' WHERE key = 'acked_through'")
    conn.commit()
    conn.close()
    result = CliRunner().invoke(app, ["buffer", "status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "acked through" in result.output.lower()


def test_connection_failures_retry_within_ten_seconds_whatever_the_backoff_cap() -> None:
    backoff = Backoff(1.0, 300.0, rng=random.Random(1))
    waits = [retry_delay(backoff, "connect") for _ in range(12)]
    assert max(waits) <= CONNECT_RETRY_MAX_SECS <= 10.0
    rejected = Backoff(1.0, 300.0, rng=random.Random(1))
    assert max(retry_delay(rejected, "rejected") for _ in range(12)) > 100, "rejections back off"
    assert retry_delay(Backoff(1.0, 300.0), "connect", retry_after=30.0) == 30.0
