"""Foreign-device registration with a BBMD (BACnet/IP Annex J.5), kept alive whatever happens.

bacpypes3's own registration renews exactly when the TTL runs out (leaning on the BBMD's grace
period), shows "registered" until TTL + 30 s after the BBMD went silent, ignores every answer
after one refusal, and after an outage longer than TTL + 30 s sets its status to -2 and never
tries again. So this link layer drives registration itself and never calls the stock `register`:

- Register, wait up to RETRY_S for the BBMD's Result; on success renew at half the TTL.
- No answer or a refusal: try again every RETRY_S, forever.
- Registered means a successful Result within the last TTL seconds; every transition is logged
  once and reported through `on_change` (the application maps it to a metric).

The stock link layer still does the packet work (Distribute-Broadcast-To-Network for our
broadcasts, Forwarded-NPDU from the BBMD); it reads `bbmdAddress`, `bbmdRegistrationStatus` and
`_registration_event`, which this class keeps in step. Its datagram server is fastlink.py's:
plain reads sent straight to the gateway are answered at the socket, as on the normal link.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bacpypes3.ipv4.bvll import RegisterForeignDevice, Result
from bacpypes3.pdu import IPv4Address

from gateway.bacnet.fastlink import FastForeignLinkLayer

log = logging.getLogger("gateway.bacnet")

RETRY_S = 5.0
STATUS_REGISTERED = 0
STATUS_IN_PROGRESS = -1  # bacpypes3's code: broadcasts wait briefly for the registration


class SupervisedForeignLink(FastForeignLinkLayer):
    """A foreign-device link layer whose registration survives BBMD outages of any length."""

    def __init__(
        self,
        local_address: Any,
        bbmd: Any,
        ttl: int,
        *,
        on_change: Callable[[bool], None] | None = None,
        retry_s: float = RETRY_S,
    ) -> None:
        super().__init__(local_address)
        self.bbmdAddress = bbmd if isinstance(bbmd, IPv4Address) else IPv4Address(bbmd)
        self.bbmdTimeToLive = ttl
        self.bbmdRegistrationStatus = STATUS_IN_PROGRESS
        self._on_change = on_change
        self._retry_s = min(retry_s, float(ttl))
        self._answer: asyncio.Future[int] | None = None
        self._last_success: float | None = None
        self._refused: int | None = None
        self._silence_logged = False
        self.registered = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
            self._task.add_done_callback(self._task_done)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        super().close()

    @staticmethod
    def _task_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("BACnet: foreign-device registration stopped: %r", task.exception())

    # -- registration ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            code = await self._register_once()
            now = loop.time()
            if code == STATUS_REGISTERED:
                self._last_success = now
                self._refused = None
                self._set(True)
                # Renew well before the TTL runs out, not at its very end.
                await asyncio.sleep(self.bbmdTimeToLive / 2)
                continue
            if code is not None and code != self._refused:
                self._refused = code
                log.warning(
                    "BACnet: BBMD %s refused foreign-device registration (result 0x%04x); "
                    "retrying every %.0f s",
                    self.bbmdAddress,
                    code,
                    self._retry_s,
                )
            lapsed = self._last_success is None or now - self._last_success >= self.bbmdTimeToLive
            if self.registered and lapsed:
                self._set(False)
            elif code is None and self._last_success is None and not self._silence_logged:
                self._silence_logged = True
                log.warning(
                    "BACnet: no answer from BBMD %s to foreign-device registration; "
                    "retrying every %.0f s",
                    self.bbmdAddress,
                    self._retry_s,
                )
            if code is not None:
                await asyncio.sleep(self._retry_s)  # a timeout has already waited

    async def _register_once(self) -> int | None:
        """Send one Register-Foreign-Device; the BBMD's result code, or None if it is silent."""
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        try:
            await self.request(
                RegisterForeignDevice(self.bbmdTimeToLive, destination=self.bbmdAddress)
            )
            return await asyncio.wait_for(asyncio.shield(self._answer), self._retry_s)
        except TimeoutError:
            return None
        except OSError as exc:  # e.g. no route to the BBMD while the interface is down
            log.debug("BACnet: registration request not sent: %s", exc)
            await asyncio.sleep(self._retry_s)
            return None
        finally:
            self._answer = None

    async def confirmation(self, lpdu: Any) -> None:
        if isinstance(lpdu, Result):
            if lpdu.pduSource == self.bbmdAddress and self._answer and not self._answer.done():
                self._answer.set_result(int(lpdu.bvlciResultCode))
            return  # a Result we did not ask for (or a late one) means nothing
        await super().confirmation(lpdu)

    def _set(self, registered: bool) -> None:
        if registered == self.registered:
            return
        self.registered = registered
        if registered:
            self.bbmdRegistrationStatus = STATUS_REGISTERED
            self._registration_event.set()
            log.info(
                "BACnet: registered as a foreign device with BBMD %s (TTL %d s)",
                self.bbmdAddress,
                self.bbmdTimeToLive,
            )
        else:
            self.bbmdRegistrationStatus = STATUS_IN_PROGRESS
            self._registration_event.clear()
            log.warning(
                "BACnet: foreign-device registration with BBMD %s lapsed (no answer for %d s); "
                "retrying every %.0f s",
                self.bbmdAddress,
                self.bbmdTimeToLive,
                self._retry_s,
            )
        if self._on_change is not None:
            try:
                self._on_change(registered)
            except Exception:
                log.exception("BACnet: foreign-device status callback failed")
