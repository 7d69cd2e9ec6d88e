"""The systemd notify protocol against a real Unix datagram socket set as ``NOTIFY_SOCKET``."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gxpgate.agent.health.snapshot import status_line
from gxpgate.agent.service.sdnotify import Notifier
from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.quality_service import QualityServiceSimulator

from .running import Running, until

REPO = Path(__file__).resolve().parents[1]


class Inbox:
    """Receives notify datagrams on a thread (so arrival times are real while the event loop
    under test is blocked) and keeps ``(monotonic arrival time, assignment)`` in order."""

    def __init__(self, address: str, on_ready: Callable[[], object] | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.on_ready = on_ready
        self.seen_at_ready: object = None
        self.items: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-inbox")

    def __enter__(self) -> Inbox:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._thread.join()
        self.sock.close()

    def _receive(self) -> None:
        while not self._closing.is_set():
            try:
                datagram = self.sock.recv(4096)
            except TimeoutError:
                continue
            arrived = time.monotonic()
            assignments = datagram.decode().split("\n")
            if "READY=1" in assignments and self.on_ready is not None:
                self.seen_at_ready = self.on_ready()
            with self._lock:
                self.items += [(arrived, a) for a in assignments]

    def assignments(self) -> list[str]:
        with self._lock:
            return [a for _, a in self.items]

    def times(self, assignment: str) -> list[float]:
        with self._lock:
            return [t for t, a in self.items if a == assignment]

    def count(self, assignment: str) -> int:
        return len(self.times(assignment))

    def statuses(self) -> list[str]:
        return [a.removeprefix("STATUS=") for a in self.assignments() if a.startswith("STATUS=")]


def _chain_of(buffer: Path) -> str | None:
    if not buffer.exists():
        return None
    with sqlite3.connect(f"file:{buffer}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'chain'").fetchone()
    return None if row is None else str(row[0])


def test_gateway_notifies_ready_status_watchdog_then_stopping(tmp_path: Path, write_config) -> None:
    address = str(tmp_path / "notify.sock")
    buffer = tmp_path / "buffer.db"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NOTIFY_SOCKET": address,
        "WATCHDOG_USEC": "1000000",
    }
    env.pop("WATCHDOG_PID", None)

    async def main(inbox: Inbox) -> tuple[int, int]:
        proc: asyncio.subprocess.Process | None = None
        try:
            async with ModbusSimulator() as sim:
                config = write_config(sim.port)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gxpgate", "run", "--config", str(config),
                    env=env, stdout=subprocess.DEVNULL,
                )  # fmt: skip
                await until(lambda: inbox.count("READY=1") == 1, what="READY=1")
                await until(lambda: inbox.count("WATCHDOG=1") >= 3, what="keep-alives")
                assert inbox.statuses()[0] == "2/2 devices up, no uplink"
            # The simulator is gone: the summary changes.
            await until(lambda: "0/2 devices up, no uplink" in inbox.statuses(), what="STATUS")
            proc.send_signal(signal.SIGTERM)
            return await asyncio.wait_for(proc.wait(), 30), proc.pid
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()

    with Inbox(address, on_ready=lambda: _chain_of(buffer)) as inbox:
        returncode, child = asyncio.run(main(inbox))
        pid = next(int(a[8:]) for a in inbox.assignments() if a.startswith("MAINPID="))
    assert returncode == 0
    assert inbox.seen_at_ready is not None, "READY=1 before the buffer (and key) were in place"
    names = [a.split("=", 1)[0] for a in inbox.assignments()]
    assert names[:3] == ["READY", "STATUS", "MAINPID"]
    assert names[3] == "WATCHDOG", "keep-alives start after READY"
    assert names[-1] == "STOPPING", names
    assert names.count("STOPPING") == 1
    assert names.count("WATCHDOG") >= 3
    statuses = inbox.statuses()
    assert all(a != b for a, b in itertools.pairwise(statuses)), "no repeats"
    beats = inbox.times("WATCHDOG=1")
    assert max(b - a for a, b in itertools.pairwise(beats)) < 1.0, (
        "a gap as long as WATCHDOG_USEC: systemd would have killed the service"
    )
    assert pid == child


def test_no_watchdog_while_the_event_loop_is_blocked(
    tmp_path: Path, write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = str(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    block_secs = 1.5
    marks: list[float] = []

    def stuck() -> None:  # what a blocking call on the loop does
        marks.append(time.monotonic())
        time.sleep(block_secs)
        marks.append(time.monotonic())

    async def main(inbox: Inbox) -> None:
        async with ModbusSimulator() as sim, Running(write_config(sim.port)) as agent:
            assert agent.notifier.watchdog_interval_secs == pytest.approx(0.1)
            await until(lambda: inbox.count("WATCHDOG=1") >= 3, what="keep-alives")
            asyncio.get_running_loop().call_soon(stuck)
            await until(lambda: len(marks) == 2)
            await until(
                lambda: any(t > marks[1] for t in inbox.times("WATCHDOG=1")), what="resumption"
            )

    with Inbox(address) as inbox:
        asyncio.run(main(inbox))
    started, ended = marks
    # A datagram sent just before the block may be read a moment after it began.
    during = [t for t in inbox.times("WATCHDOG=1") if started + 0.3 < t < ended]
    assert during == [], f"{len(during)} keep-alives while the loop was blocked"
    assert inbox.assignments()[-1] == "STOPPING=1"


def test_abstract_namespace_socket_and_no_repeated_status() -> None:
    name = f"gxpgate-test-{uuid.uuid4().hex}"
    with Inbox("\0" + name) as inbox:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.enabled
        assert notifier.watchdog_interval_secs is None
        notifier.ready("starting")
        notifier.status("1/1 devices up")
        notifier.status("1/1 devices up")
        notifier.watchdog()
        notifier.stopping()
        notifier.stopping()
        notifier.watchdog()  # a keep-alive task not yet cancelled: nothing after STOPPING
        notifier.close()
        asyncio.run(until(lambda: "STOPPING=1" in inbox.assignments()))
    assert inbox.assignments() == [
        "READY=1",
        "STATUS=starting",
        f"MAINPID={os.getpid()}",
        "STATUS=1/1 devices up",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_status_stays_one_assignment_when_a_message_has_newlines(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with Inbox(address) as inbox:
        notifier = Notifier(address)
        notifier.status("uplink failing: 502\nREADY=1")
        notifier.stopping()
        notifier.close()
        asyncio.run(until(lambda: "STOPPING=1" in inbox.assignments()))
    assert inbox.assignments() == ["STATUS=uplink failing: 502 READY=1", "STOPPING=1"]


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.watchdog_interval_secs is None
    notifier.ready("x")
    notifier.status("y")
    notifier.watchdog()
    notifier.stopping()
    asyncio.run(asyncio.wait_for(notifier.run(lambda: "z", lambda: True), 5))
    notifier.close()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "400000"}, 0.2),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "4242"}, 0.2),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_and_ours_only(
    env: dict[str, str], interval: float | None
) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": "/run/x", **env}, pid=4242)
    expected = None if interval is None else pytest.approx(interval)
    assert notifier.watchdog_interval_secs == expected


def test_unsupported_socket_kind_disables_notifications() -> None:
    assert not Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_a_failing_socket_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    address = str(tmp_path / "notify.sock")
    notifier = Notifier(address, watchdog_usec=400000)
    caplog.set_level(logging.INFO, logger="gxpgate.agent.service.sdnotify")
    for _ in range(5):
        notifier.watchdog()  # nobody listens yet
    failures = [r for r in caplog.records if r.getMessage().startswith("sdnotify.send_failed")]
    assert len(failures) == 1
    with Inbox(address) as inbox:
        notifier.watchdog()
        notifier.stopping()
        asyncio.run(until(lambda: "STOPPING=1" in inbox.assignments()))
    notifier.close()
    assert inbox.assignments() == ["WATCHDOG=1", "STOPPING=1"]
    assert [r.getMessage().split()[0] for r in caplog.records] == [
        "sdnotify.send_failed",
        "sdnotify.recovered",
    ]


def test_status_summarises_devices_backlog_and_uplink(
    tmp_path: Path, write_config, signing_key
) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs:
                async with Running(write_config(sim.port, qs.url)) as agent:
                    assert agent.forwarder is not None
                    assert agent.outbox is not None
                    await until(lambda: agent.outbox.acked_through > 0, what="a delivery")
                    await until(lambda: agent.forwarder.stats.last_error is None)
                    assert status_line(agent.snapshot()).endswith(" records, uplink ok")
                    qs.outage_start()
                    await until(lambda: agent.forwarder.stats.last_error is not None)
                    sim.set_fault(1, "no_answer")
                    await until(lambda: not agent.pollers[0].online, what="probe-1 offline")
                    await until(lambda: agent.outbox.last_seq - agent.outbox.acked_through > 5)
                    status = status_line(agent.snapshot())
                    qs.outage_end()
        head, backlog, uplink = status.split(", ", 2)
        assert head == "1/2 devices up"
        assert backlog.startswith("backlog ")
        assert int(backlog.split()[1]) > 5
        assert uplink.startswith("uplink failing: ")

    asyncio.run(main())
