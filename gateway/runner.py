"""Process-level concerns of `vs121-gateway run`: logging, signals, the event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from gateway import early_signals
from gateway.app import Gateway
from gateway.errors import GatewayError
from gateway.settings import Settings


def configure_logging(level: str) -> None:
    """One line per event. Under systemd the journal adds the time; elsewhere we do."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    # Library chatter at INFO is not operator news.
    for noisy in ("aiohttp.access", "bacpypes3", "pymodbus", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _main(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    early = early_signals.pending()
    if early is not None:
        logging.getLogger("gateway").info(
            "%s received while starting: shutting down", signal.Signals(early).name
        )
        stop.set()
    gw = Gateway(settings)
    await gw.run(stop)
    return gw.exit_status  # 0, or EXIT_REINITIALIZE after a BACnet warm/cold start


# The loop thread can be busy for long stretches (a BMS polling back to back); a worker thread
# (durable state writes, acknowledged ingest waits for them) then waits up to this long for the
# interpreter lock at each step. Python's default of 5 ms tripled the ack and COV latency under
# polling (bench/bench_bacnet_floor.py); 0.5 ms keeps them where they are without polling.
SWITCH_INTERVAL_S = 0.0005


def run(settings: Settings) -> int:
    configure_logging(settings.gateway.log_level)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        return asyncio.run(_main(settings))
    except (OSError, GatewayError) as exc:
        # Expected start-up faults (port taken, serial port missing): one line, no traceback.
        logging.getLogger("gateway").error("cannot start: %s", exc)
        return 1
