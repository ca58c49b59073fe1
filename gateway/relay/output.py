"""Keeps one output at the level the rule wants: drives it, retries it, re-asserts it.

A failure never reaches the rest of the gateway: it is counted at every attempt, logged once
when an episode of failures starts and once when it ends, and retried every `retry_after`
seconds (sooner if the wanted level changes). Outputs that may forget their state (a relay
module that lost power) get the same level written again every `reassert_after` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gateway.relay.drivers import NullDriver, OutputDriver

log = logging.getLogger("gateway.relay")

FINAL_WRITE_TIMEOUT_S = 10.0


class OutputWorker:
    def __init__(
        self,
        name: str,
        driver: OutputDriver,
        *,
        retry_after: float = 5.0,
        on_attempt: Callable[[bool], None] | None = None,
        on_fault: Callable[[bool], None] | None = None,
    ) -> None:
        self.name = name
        self.driver = driver
        self.wanted: bool | None = None
        self.applied: bool | None = None
        self.fault = False
        self.writes = 0  # successful writes, re-assertions included
        self._retry_after = retry_after
        self._on_attempt = on_attempt
        self._on_fault = on_fault
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def want(self, energised: bool) -> None:
        if energised != self.wanted:
            self.wanted = energised
            self._settled.clear()
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
            self._task.set_name(f"relay output {self.name}")

    async def settled(self, within: float) -> bool:
        """Wait until the wanted level has been written (False if not `within` seconds)."""
        try:
            async with asyncio.timeout(within):
                await self._settled.wait()
        except TimeoutError:
            return False
        return True

    async def _attempt(self, energised: bool) -> bool:
        try:
            await self.driver.set(energised)
        except Exception as exc:  # whatever a driver raises, the worker lives on and retries
            if self._on_attempt is not None:
                self._on_attempt(False)
            self.applied = None  # unknown: the write may have half happened
            if not self.fault:
                log.error(
                    "alarm %s: cannot drive %s: %s; retrying every %g s",
                    self.name,
                    self.driver.description,
                    exc,
                    self._retry_after,
                )
                self._set_fault(True)
            else:
                log.debug("alarm %s: still failing: %s", self.name, exc)
            return False
        if self._on_attempt is not None:
            self._on_attempt(True)
        self.writes += 1
        self.applied = energised
        if self.fault:
            log.warning("alarm %s: %s works again", self.name, self.driver.description)
            self._set_fault(False)
        return True

    def _set_fault(self, fault: bool) -> None:
        self.fault = fault
        if self._on_fault is not None:
            self._on_fault(fault)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_write = -float("inf")
        while True:
            self._wake.clear()
            wanted = self.wanted
            wait: float | None = None
            if wanted is not None:
                reassert = self.driver.reassert_after
                due = self.applied != wanted or (
                    reassert is not None and loop.time() - last_write >= reassert
                )
                if due:
                    if await self._attempt(wanted):
                        last_write = loop.time()
                        if self.wanted == wanted:
                            self._settled.set()
                        continue  # the wanted level may have moved meanwhile
                    wait = self._retry_after
                elif reassert is not None:
                    wait = max(0.0, last_write + reassert - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def stop(self, final: bool | None) -> None:
        """Stop driving; leave the output at `final` (None: as it is) and close the driver."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            if final is not None:
                try:
                    async with asyncio.timeout(FINAL_WRITE_TIMEOUT_S):
                        written = await self._attempt(final)
                        if written and not isinstance(self.driver, NullDriver):
                            log.info(
                                "alarm %s: %s left %s",
                                self.name,
                                self.driver.description,
                                "energised" if final else "de-energised",
                            )
                except TimeoutError:
                    log.error("alarm %s: shutdown state not written in time", self.name)
        finally:
            try:
                await self.driver.close()
            except Exception as exc:  # closing is best effort at shutdown
                log.warning("alarm %s: closing %s: %s", self.name, self.driver.description, exc)
