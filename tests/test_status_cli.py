"""``gxpgate status`` as a subprocess, against a running agent and a stopped one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from gxpgate.simulators.modbus_sim import ModbusSimulator
from tests.broker import free_port

from .running import Running, until
from .test_metrics import UNREACHABLE


async def gxpgate(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gxpgate", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_status_of_a_running_and_a_stopped_gateway(write_config: Any) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            extra = UNREACHABLE.format(port=free_port())
            closed = f"http://127.0.0.1:{free_port()}"  # a service that is down
            config = write_config(sim.port, closed, extra_devices=extra)
            async with Running(config) as agent:
                assert agent.recorder is not None
                recorder = agent.recorder
                await until(lambda: recorder.sealed >= 20, 20.0, "readings sealed")
                await until(
                    lambda: all(p.up is not None for p in agent.pollers), 20.0, "every device tried"
                )
                assert agent.metrics is not None
                agent.metrics.refresh()  # rather than wait up to a second for the next snapshot
                code, out, err = await gxpgate("status", "--config", str(config))
                assert code == 0, err
                lines = out.splitlines()
                assert lines[0].split()[:2] == ["gateway", "gw-test"]
                rows = {line.split()[0]: line.split() for line in lines if line.startswith("probe")}
                assert rows["probe-1"][1:4] == ["modbus_tcp", "cold-1", "up"]
                assert rows["probe-1"][5:7] == ["s", "ago"]
                assert float(rows["probe-1"][4]) < 5
                assert rows["probe-9"][1:5] == ["modbus_tcp", "ambient", "DOWN", "never"]
                assert " ".join(rows["probe-9"][5:]) == "connection failed"
                backlog = next(line for line in lines if line.startswith("backlog"))
                assert backlog.split()[1].isdigit()
                uplink = lines.index(next(line for line in lines if line.startswith("uplink")))
                assert lines[uplink].split()[1] == "FAILING:"
                assert "no delivery yet" in lines[uplink]
                assert lines[uplink + 1].split()[:4] == ["errors", "since", "start:", "connect"]
                assert any(line.startswith("alarms") and "0 active" in line for line in lines)

                code, out, err = await gxpgate("status", "--config", str(config), "--json")
                assert code == 0, err
                view = json.loads(out)
                states = {d["device"]: d["state"] for d in view["devices"]}
                assert states == {"probe-1": "up", "probe-3": "up", "probe-9": "down"}
                assert view["buffer"]["last_seq"] >= 20
                assert view["buffer"]["backlog"] == view["buffer"]["last_seq"]  # none delivered
                assert view["uplink"]["state"] == "failing"
                assert view["uplink"]["errors_by_kind"]["connect"] >= 1
                assert agent.outbox is not None
                assert view["gateway"]["chain"] == agent.outbox.chain

        code, out, err = await gxpgate("status", "--config", str(config))
        assert code == 1
        assert "gxpgate is not running on" in err  # the lock says so, not a guess
        # gxpgate buffer status's figures
        figures = {line[:16].strip(): line[16:].strip() for line in out.splitlines()}
        assert figures["gateway"] == "gw-test"
        assert int(figures["pending upload"]) == int(figures["last seq"]) > 20
        assert figures["acked through"] == "0"

        code, out, err = await gxpgate("status", "--config", str(config), "--json")
        assert code == 1
        view = json.loads(out)
        assert view["reachable"] is False
        assert view["buffer"]["pending"] == view["buffer"]["last_seq"]

    asyncio.run(main())


def test_status_says_when_metrics_are_disabled(write_config: Any) -> None:
    config = write_config(modbus=False, metrics="enabled = false")

    async def main() -> None:
        code, _out, err = await gxpgate("status", "--config", str(config))
        assert code == 1
        assert "[metrics] is disabled" in err
        assert "no buffer yet" in err  # never ran: nothing to show from the buffer either

    asyncio.run(main())
