"""A small sd_notify(3) client: readiness, status text and watchdog pings to systemd.

Without ``NOTIFY_SOCKET`` (run from a shell, a container, a test) every call is a no-op, so the rest
of the gateway can notify unconditionally. A failed send never raises: losing a status line must not
take the gateway down. It is logged once at warning level and at debug level after that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

# A full systemd notification queue would otherwise block the event loop; rather wait this long
# than drop READY=1, after which systemd would kill the unit for not starting.
SEND_TIMEOUT_S = 1.0


class Notifier:
    """Sends notifications to the socket named by ``NOTIFY_SOCKET``; see `from_env`.

    Safe to call from any thread. `close` releases the socket; later calls open it again.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ) -> None:
        """`address` is the ``NOTIFY_SOCKET`` value: an absolute path or ``@name`` (abstract).

        The watchdog values are the raw ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` strings; they are
        parsed by `watchdog_interval` so a bad value disables the watchdog instead of raising.
        """
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for the environment systemd gave us (``os.environ`` unless given)."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("NOTIFY_SOCKET"),
            watchdog_usec=env.get("WATCHDOG_USEC"),
            watchdog_pid=env.get("WATCHDOG_PID"),
        )

    @property
    def enabled(self) -> bool:
        """True when there is a usable socket address to send to."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (``READY=1``), optionally with a status line."""
        return self.send("READY=1", *_status_field(status))

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.send(*_status_field(text))

    def watchdog(self) -> bool:
        """The keep-alive ping (``WATCHDOG=1``)."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (``STOPPING=1``), optionally with a status line."""
        return self.send("STOPPING=1", *_status_field(status))

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one datagram; True if it was handed to the socket."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8")
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.settimeout(SEND_TIMEOUT_S)
                self._sock.sendto(payload, self._address)
        except OSError as exc:
            self._report_failure(exc)
            return False
        return True

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half systemd's timeout), or None when not wanted.

        None when there is no socket, ``WATCHDOG_USEC`` is unset or invalid, or ``WATCHDOG_PID``
        names another process (the watchdog was meant for our parent or a sibling).
        """
        if self._address is None or self._watchdog_usec is None:
            return None
        try:
            usec = int(self._watchdog_usec)
            pid = None if self._watchdog_pid is None else int(self._watchdog_pid)
        except ValueError:
            log.warning(
                "ignoring the systemd watchdog: WATCHDOG_USEC=%r WATCHDOG_PID=%r are not numbers",
                self._watchdog_usec,
                self._watchdog_pid,
            )
            return None
        if usec <= 0 or (pid is not None and pid != os.getpid()):
            return None
        return usec / 2_000_000

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _report_failure(self, exc: OSError) -> None:
        if self._warned:
            log.debug("systemd notification not sent: %s", exc)
            return
        self._warned = True
        log.warning(
            "cannot notify systemd via %r: %s (further failures are logged at debug level)",
            _display(self._address),
            exc,
        )


async def watchdog_loop(notifier: Notifier, healthy: Callable[[], bool]) -> None:
    """Ping the systemd watchdog at its interval while `healthy()` is true; run it as a task.

    A wedged event loop stops this task and so the pings; `healthy()` lets the gateway also
    withhold them when the loop runs but its work has stalled. Either way systemd restarts us.
    Returns at once when systemd asked for no watchdog.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    was_healthy = True
    while True:
        try:
            ok = bool(healthy())
        except Exception:
            # A check that raises is a failed check, not a reason to end the watchdog task.
            if was_healthy:
                log.exception("health check raised")
            ok = False
        if ok:
            notifier.watchdog()
            if not was_healthy:
                log.info("health check passes again: watchdog pings resumed")
        elif was_healthy:
            log.error("health check failed: withholding watchdog pings so systemd restarts us")
        was_healthy = ok
        await asyncio.sleep(interval)


def _status_field(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    # A newline would end the field and let the rest be read as another assignment.
    return ("STATUS=" + " ".join(text.splitlines()),)


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        # Linux abstract namespace: a leading NUL byte instead of the '@'.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning(
        "ignoring NOTIFY_SOCKET=%r: only absolute paths and @abstract names are supported", value
    )
    return None


def _display(address: str | None) -> str | None:
    return "@" + address[1:] if address and address.startswith("\0") else address
