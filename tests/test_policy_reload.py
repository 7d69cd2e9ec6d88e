"""The agent's product master and hold list end to end: the start load sealed with the files'
SHA-256, SIGHUP (a real signal to this process) putting a new version in force and sealing it, a
malformed edit refused with the previous version still answering, and a start refused."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gxpgate.agent.recording.sealing import Committed
from gxpgate.agent.service.runtime import Agent, AgentStartError
from gxpgate.config import load_config
from gxpgate.config.products import Policy
from tests.conftest import ConfigWriter
from tests.running import Running, exported, observe, until

PRODUCTS_V1 = b"""\xef\xbb\xbfgtin,profile,tos_allowance_hours,flags,name
00614141000012,refrigerated,72,do_not_freeze,Vaccine X
00614141*,controlled-room,,,Company 0614141
"""
PRODUCTS_V2 = PRODUCTS_V1 + b"00614141000029,cool,24,,Eye drops\n"
PRODUCTS_BAD = PRODUCTS_V2 + b"00614141000036,cool,,,Fine\n00614141000011,frozen,,,Typo\n"
HOLDS_V1 = b"gtin,lot,sscc,reason\n00614141000012,L1,,QA hold DEV-1\n"
HOLDS_V2 = HOLDS_V1 + b",,106141411234567897,Damaged pallet\n"

POLICY = """
[products]
file = "products.csv"
[[products.items]]
gtin = "04012345000016"
profile = "frozen"

[hold_list]
file = "holds.csv"
"""


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def policy_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "audit" and r["data"]["event"].startswith("policy")]


def test_start_load_is_sealed_sighup_reloads_and_a_bad_edit_keeps_the_previous_version(
    write_config: ConfigWriter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    products, holds = tmp_path / "products.csv", tmp_path / "holds.csv"
    products.write_bytes(PRODUCTS_V1)
    holds.write_bytes(HOLDS_V1)
    config = write_config(modbus=False, extra_devices=POLICY)
    handler_before = signal.getsignal(signal.SIGHUP)
    caplog.set_level(logging.INFO, logger="gxpgate.agent.custody.policy")

    async def main() -> None:
        async with Running(config) as agent:
            policy = agent.policy
            assert policy is not None
            committed: list[str] = []  # policy records after the start's

            def on_commit(facts: Sequence[Committed]) -> None:
                committed.extend(
                    f.data["event"]
                    for f in facts
                    if f.data.get("event", "").startswith("policy") and f.data["reason"] != "start"
                )

            observe(agent, on_commit)
            told: list[Policy] = []
            policy.listeners.append(told.append)

            vaccine = policy.product("00614141000012")
            assert vaccine is not None
            assert (vaccine.profile, vaccine.tos_allowance_hours) == ("refrigerated", 72.0)
            prefix_rule = policy.product("00614141000029")
            assert prefix_rule is not None
            assert (prefix_rule.prefix, prefix_rule.profile) == ("00614141", "controlled-room")
            inline = policy.product("04012345000016")
            assert inline is not None
            assert inline.profile == "frozen"
            assert policy.on_hold("00614141000012", "L1", None) is not None
            assert policy.on_hold(None, None, "106141411234567897") is None
            assert policy.version.products_sha256 == sha256(PRODUCTS_V1)

            products.write_bytes(PRODUCTS_V2)
            holds.write_bytes(HOLDS_V2)
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: committed == ["policy_loaded"], what="policy_loaded (sighup)")
            eye_drops = policy.product("00614141000029")
            assert eye_drops is not None
            assert (eye_drops.gtin, eye_drops.profile, eye_drops.source) == (
                "00614141000029",
                "cool",
                "products.csv:4",
            )
            pallet = policy.on_hold("00614141000012", "L2", "106141411234567897")
            assert pallet is not None
            assert (pallet.reason, pallet.source) == ("Damaged pallet", "holds.csv:3")
            assert policy.version.products_sha256 == sha256(PRODUCTS_V2)
            assert policy.version.hold_list_sha256 == sha256(HOLDS_V2)
            assert told == [policy.current]

            products.write_bytes(PRODUCTS_BAD)
            os.kill(os.getpid(), signal.SIGHUP)
            await until(
                lambda: committed == ["policy_loaded", "policy_reload_failed"],
                what="policy_reload_failed",
            )
            # The previous version still answers, unchanged, and no listener was told.
            assert policy.version.products_sha256 == sha256(PRODUCTS_V2)
            still = policy.product("00614141000029")
            assert still is not None
            assert still.profile == "cool"
            assert policy.product("00614141000036") == prefix_rule  # line 5 is not in force
            assert len(told) == 1
            assert policy.reloads_failed == 1

    asyncio.run(main())
    assert signal.getsignal(signal.SIGHUP) == handler_before

    records = exported(config)
    started = next(i for i, r in enumerate(records) if r["data"].get("event") == "agent_started")
    start, reload, failed = policy_records(records)
    assert records[started + 1] == start  # right after agent_started
    assert start["data"] == {
        "event": "policy_loaded",
        "reason": "start",
        "products": {
            "path": str(products),
            "sha256": sha256(PRODUCTS_V1),
            "entries": 2,
            "inline_sha256": start["data"]["products"]["inline_sha256"],
            "inline_entries": 1,
        },
        "hold_list": {
            "path": str(holds),
            "sha256": sha256(HOLDS_V1),
            "entries": 1,
            "inline_sha256": None,
            "inline_entries": 0,
        },
    }
    assert len(start["data"]["products"]["inline_sha256"]) == 64
    assert reload["data"]["reason"] == "sighup"
    assert reload["data"]["products"]["sha256"] == sha256(PRODUCTS_V2)
    assert reload["data"]["products"]["entries"] == 3
    assert reload["data"]["products"]["inline_sha256"] == start["data"]["products"]["inline_sha256"]
    assert reload["data"]["hold_list"]["sha256"] == sha256(HOLDS_V2)
    assert failed["data"] == {
        "event": "policy_reload_failed",
        "reason": "sighup",
        "error_count": 1,
        "errors": [f"{products}:6: gtin '00614141000011' fails its check digit"],
        "files": [
            {"path": str(products), "sha256": sha256(PRODUCTS_BAD), "errors": 1},
            {"path": str(holds), "sha256": sha256(HOLDS_V2), "errors": 0},
        ],
        "in_force": {
            "products": reload["data"]["products"],
            "hold_list": reload["data"]["hold_list"],
        },
    }
    logged = [r.getMessage() for r in caplog.records if r.name == "gxpgate.agent.custody.policy"]
    assert f"policy.reload_failed file={products} errors=1" in logged


def test_a_malformed_file_at_start_refuses_the_start_naming_file_and_line(
    write_config: ConfigWriter, tmp_path: Path
) -> None:
    (tmp_path / "products.csv").write_bytes(PRODUCTS_BAD)
    (tmp_path / "holds.csv").write_bytes(b"lot,reason\nL 1,space in the lot\n")
    config = write_config(modbus=False, extra_devices=POLICY)
    agent = Agent(load_config(config))
    with pytest.raises(AgentStartError) as caught:
        asyncio.run(agent.run(asyncio.Event()))
    message = str(caught.value)
    assert f"{tmp_path / 'products.csv'}:6: gtin '00614141000011' fails its check digit" in message
    assert f"{tmp_path / 'holds.csv'}:2: lot 'L 1' is not a GS1 lot" in message
    assert exported(config) == []  # nothing sealed: not even agent_started


def test_an_agent_outside_the_main_thread_leaves_sighup_alone(write_config: ConfigWriter) -> None:
    config = write_config(modbus=False)
    before = signal.getsignal(signal.SIGHUP)
    seen: dict[str, object] = {}

    async def main() -> None:
        async with Running(config) as agent:
            seen["handler"] = signal.getsignal(signal.SIGHUP)
            assert agent.policy is not None
            seen["products"] = len(agent.policy.current.products)

    worker = threading.Thread(target=asyncio.run, args=(main(),), name="agent")
    worker.start()
    worker.join(30)
    assert seen == {"handler": before, "products": 0}
