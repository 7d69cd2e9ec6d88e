"""The product master and hold list in force, as the agent queries them.

Loaded before ``agent_started`` is sealed (a file with errors stops the start, naming file and
line, as ``gxpgate config validate`` does) and sealed right after it as a ``policy_loaded``
audit record. SIGHUP re-reads the files — only the files: inline entries and profiles are the
config's and change with a restart. The files are read and checked off the event loop; a good
load replaces the policy in force in one assignment, is sealed (``policy_loaded``, ``reason:
"sighup"``), then handed to the listeners. A load with any error leaves the policy in force as it
was, is logged (``policy.reload_failed file=… errors=N``) and sealed (``policy_reload_failed``
with the errors). Signals arriving while a reload runs are folded into one more reload.

Readers call :meth:`PolicyHolder.product` and :meth:`PolicyHolder.on_hold` per scan: dict
lookups on the frozen :class:`~gxpgate.config.products.Policy` in force, never blocked by a reload.

Exceptions: :func:`~gxpgate.config.policy_files.load_policy`'s ``PolicyError`` from
:meth:`PolicyHolder.load` (the caller decides what a failed start means); a failed reload never
raises.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from gxpgate.agent.recording.audit import POLICY_LOADED, POLICY_RELOAD_FAILED
from gxpgate.agent.recording.sealing import Fact
from gxpgate.config import LoadedConfig
from gxpgate.config.policy_files import load_policy
from gxpgate.config.products import HoldEntry, Policy, PolicyError, PolicyVersion, ProductRule
from gxpgate.drivers.base import utc_now

__all__ = ["MAX_RECORDED_ERRORS", "PolicyHolder", "PolicyListener"]

log = logging.getLogger(__name__)

MAX_RECORDED_ERRORS = 100
"""Errors kept in a ``policy_reload_failed`` record (all are counted): a wrong file given as the
product master must not make a record of megabytes."""
MAX_LOGGED_ERRORS = 20

PolicyListener = Callable[[Policy], None]
"""Called with the new policy after a successful reload, in the event loop; must not block."""


class PolicyHolder:
    """The policy in force; :meth:`run` serves reload requests (:meth:`request_reload`, SIGHUP).

    Everything but the file reading runs in the event loop, so readers never see a policy
    half replaced.
    """

    def __init__(
        self, loaded: LoadedConfig, policy: Policy, put: Callable[[Fact], Awaitable[None]]
    ) -> None:
        self.loaded = loaded
        self.current = policy
        self.listeners: list[PolicyListener] = []
        self.reloads_failed = 0
        self._put = put
        self._requested = asyncio.Event()

    @classmethod
    async def load(
        cls, loaded: LoadedConfig, put: Callable[[Fact], Awaitable[None]]
    ) -> PolicyHolder:
        """Read the files now; ``PolicyError`` lists every problem. Nothing is sealed yet:
        :meth:`seal_loaded` does that once the start is on record."""
        policy = await asyncio.to_thread(load_policy, loaded.config, loaded.path)
        return cls(loaded, policy, put)

    def product(self, gtin: str) -> ProductRule | None:
        """The rule for a GTIN (14 digits, as AI 01 carries it): exact, else longest prefix."""
        return self.current.product(gtin)

    def on_hold(self, gtin: str | None, lot: str | None, sscc: str | None) -> HoldEntry | None:
        """The hold on a scan's SSCC, else its GTIN and lot, else its lot; None if not held."""
        return self.current.on_hold(gtin, lot, sscc)

    @property
    def version(self) -> PolicyVersion:
        return self.current.version

    async def seal_loaded(self, reason: str) -> None:
        """Put the policy in force on record (``reason``: ``start`` or ``sighup``)."""
        policy = self.current
        data: dict[str, Any] = {"event": POLICY_LOADED, "reason": reason, **policy.record()}
        await self._put(Fact("audit", utc_now(), data))
        products, holds = policy.products_source, policy.holds_source
        log.info(
            "policy.loaded reason=%s products=%d products_sha256=%s holds=%d holds_sha256=%s",
            reason,
            len(policy.products),
            products.sha256 or "-",
            len(policy.holds),
            holds.sha256 or "-",
        )

    def request_reload(self) -> None:
        """Ask :meth:`run` for a reload; safe to call from a signal handler of the loop."""
        self._requested.set()

    def handle_sighup(self, stack: AsyncExitStack) -> bool:
        """Reload on SIGHUP until ``stack`` closes; whether the handler was installed (only in
        the main thread, where Python delivers signals — an agent run inside a test's or the
        demo's worker thread leaves SIGHUP alone)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        return True

    async def run(self) -> None:
        while True:
            await self._requested.wait()
            self._requested.clear()
            await self.reload("sighup")

    async def reload(self, reason: str) -> bool:
        """Re-read the files; put the result in force if it has no error. Whether it did."""
        log.info("policy.reloading reason=%s", reason)
        try:
            policy = await asyncio.to_thread(load_policy, self.loaded.config, self.loaded.path)
        except PolicyError as exc:
            self.reloads_failed += 1
            await self._refused(exc, reason)
            return False
        self.current = policy
        await self.seal_loaded(reason)
        for listener in self.listeners:
            listener(policy)
        return True

    async def _refused(self, exc: PolicyError, reason: str) -> None:
        lines = exc.lines()
        counts = {path: 0 for path in exc.files}
        for problem in exc.problems:
            counts[problem.path] = counts.get(problem.path, 0) + 1
        for path, count in counts.items():
            if count:
                log.error("policy.reload_failed file=%s errors=%d", path, count)
        for line in lines[:MAX_LOGGED_ERRORS]:
            log.error("policy.invalid %s", line)
        if len(lines) > MAX_LOGGED_ERRORS:
            log.error("policy.invalid (%d more)", len(lines) - MAX_LOGGED_ERRORS)
        data = {
            "event": POLICY_RELOAD_FAILED,
            "reason": reason,
            "error_count": len(lines),
            "errors": lines[:MAX_RECORDED_ERRORS],
            "files": [
                {"path": path, "sha256": sha256, "errors": counts[path]}
                for path, sha256 in exc.files.items()
            ],
            "in_force": self.current.record(),
        }
        await self._put(Fact("audit", utc_now(), data))
