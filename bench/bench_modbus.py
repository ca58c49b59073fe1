"""Modbus server benchmark: round trips over TCP and RTU, throughput under ingest load.

Run: .venv/bin/python bench/bench_modbus.py [--seconds S] [--clients N]

The gateway side runs in its own process (one event loop, as in production); the masters are
plain blocking sockets and file descriptors in other processes, so the numbers are the server's,
not a shared interpreter's. Printed:
- the round trip of a 60-register read over TCP and over a socat pty pair (median, p99); the
  RTU figure includes the 3.5-character response delay the specification asks for, so it is
  shown at 9600 baud and with the delay off;
- requests/s sustained over TCP by N clients while the state ingests 200 updates/s, and how late
  the ingest ran meanwhile (versus idle): no update may be held up by Modbus load;
- the ratio of the gateway's TCP round trip to libmodbus's (bench/modbus_floor.c, built here
  with the system's C compiler and libmodbus-dev), measured with the same client in the same
  run, rounds interleaved.
Goals: TCP median <= 0.3 ms; within 2x of libmodbus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.modbus import ModbusServer
from gateway.modbus.rtu_framing import with_crc
from gateway.settings import ModbusSection
from gateway.state import GatewayState, Report
from objects.catalog import Model
from objects.pointmap import SensorSpec, resolve

GOAL_TCP_P50_MS = 0.3
GOAL_FLOOR_RATIO = 2.0
FLOOR_SOURCE = Path(__file__).with_name("modbus_floor.c")
SENSORS = 10
INGEST_RATE = 200  # state updates per second
READ_ADDRESS, READ_COUNT = 200, 60
HOST = "127.0.0.1"


# -- the gateway side (child process) ----------------------------------------------------------


class _NoCommands:
    async def reset_counts(self, sensor_id: str) -> str:
        return "not in a benchmark"


def _specs() -> list[SensorSpec]:
    return [
        SensorSpec(id=f"s{n}", name=f"Sensor {n}", number=n, model=Model.VS121)
        for n in range(1, SENSORS + 1)
    ]


async def _ingest(state: GatewayState, seconds: float) -> list[float]:
    """Apply INGEST_RATE reports/s on a fixed schedule; return each one's lateness (s)."""
    loop = asyncio.get_running_loop()
    period = 1 / INGEST_RATE
    start = loop.time()
    late: list[float] = []
    i = 0
    while loop.time() - start < seconds:
        due = start + i * period
        await asyncio.sleep(max(0.0, due - loop.time()))
        late.append(loop.time() - due)
        n = i % SENSORS + 1
        state.apply(Report(f"s{n}", {"people_count_all": i % 50, "people_in": 1}, time.time()))
        i += 1
    return late


async def _serve(args: argparse.Namespace) -> None:
    cfg = ModbusSection.model_validate(
        {
            "tcp": {"enabled": args.tcp_port is not None, "host": HOST, "port": args.tcp_port or 1},
            "rtu": {
                "enabled": args.rtu is not None,
                "port": args.rtu or "/dev/null",
                "baudrate": 9600,
                "missing_port": "fail",
                "response_delay_ms": args.response_delay_ms,
            },
        }
    )
    specs = _specs()
    state = GatewayState([(s, 600.0, 60.0) for s in specs])
    server = ModbusServer(cfg, resolve(specs), state, _NoCommands())
    await server.start()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line.startswith("INGEST"):
            late = await _ingest(state, float(line.split()[1]))
            print(json.dumps(late), flush=True)
    await server.stop()


class _Child:
    """A child process that prints READY once it serves and ends when its stdin closes."""

    def __init__(self, args: list[str], what: str) -> None:
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "READY":
            raise RuntimeError(f"{what} did not start")

    def stop(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class GatewayProcess(_Child):
    """The gateway side in a child process, driven over its stdin/stdout."""

    def __init__(self, *extra: str) -> None:
        super().__init__([sys.executable, __file__, "--serve", *extra], "the gateway process")

    def ingest(self, seconds: float) -> list[float]:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(f"INGEST {seconds}\n")
        self._proc.stdin.flush()
        late: list[float] = json.loads(self._proc.stdout.readline())
        return late


# -- the masters -------------------------------------------------------------------------------

TCP_REQUEST = struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, READ_ADDRESS, READ_COUNT)
TCP_RESPONSE_SIZE = 7 + 2 + 2 * READ_COUNT
RTU_REQUEST = with_crc(struct.pack(">BBHH", 1, 3, READ_ADDRESS, READ_COUNT))
RTU_RESPONSE_SIZE = 3 + 2 * READ_COUNT + 2


def _tcp_connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


def tcp_round_trips(port: int, count: int) -> list[float]:
    with _tcp_connect(port) as sock:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(TCP_REQUEST)
            reply = _recv_exactly(sock, TCP_RESPONSE_SIZE)
            times.append(time.perf_counter() - start)
            if reply[7] != 3:
                raise RuntimeError(f"unexpected reply {reply.hex()}")
        return times


def _tcp_load_worker(port: int, seconds: float, out: multiprocessing.Queue[int]) -> None:
    done = 0
    with _tcp_connect(port) as sock:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            sock.sendall(TCP_REQUEST)
            _recv_exactly(sock, TCP_RESPONSE_SIZE)
            done += 1
    out.put(done)


def rtu_round_trips(master: Path, count: int) -> list[float]:
    fd = os.open(master, os.O_RDWR | os.O_NOCTTY)
    try:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, RTU_REQUEST)
            reply = b""
            while len(reply) < RTU_RESPONSE_SIZE:
                ready, _, _ = select.select([fd], [], [], 2.0)
                if not ready:
                    raise TimeoutError("no RTU response")
                reply += os.read(fd, 512)
            times.append(time.perf_counter() - start)
        return times
    finally:
        os.close(fd)


class SocatPair:
    def __init__(self, workdir: Path) -> None:
        self.slave = workdir / "gateway-tty"
        self.master = workdir / "master-tty"
        exe = shutil.which("socat")
        if exe is None:
            raise RuntimeError("socat is not installed")
        self._proc = subprocess.Popen(
            [exe, f"pty,raw,echo=0,link={self.slave}", f"pty,raw,echo=0,link={self.master}"],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.slave.exists() and self.master.exists()):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError("socat did not create the ptys")
            time.sleep(0.01)

    def stop(self) -> None:
        self._proc.send_signal(signal.SIGTERM)
        self._proc.wait(timeout=10)


# -- reporting -----------------------------------------------------------------------------------


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _row(label: str, times: list[float]) -> str:
    return (
        f"{label:<44} median {1000 * statistics.median(times):7.3f} ms   "
        f"p99 {_ms(times, 0.99):7.3f} ms   ({len(times)} requests)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def rtu_phase(workdir: Path, delay_ms: float | None) -> list[float]:
    """RTU round trips through a fresh pty pair and gateway process."""
    pair = SocatPair(workdir)
    try:
        extra = ["--rtu", str(pair.slave)]
        if delay_ms is not None:
            extra += ["--response-delay-ms", str(delay_ms)]
        gw = GatewayProcess(*extra)
        try:
            rtu_round_trips(pair.master, 50)  # warm-up
            return rtu_round_trips(pair.master, 1000)
        finally:
            gw.stop()
    finally:
        pair.stop()


# -- the libmodbus floor -----------------------------------------------------------------------


def build_floor(workdir: Path) -> Path | str:
    """The floor server's executable, or why it could not be built."""
    cc, pkg = shutil.which("cc"), shutil.which("pkg-config")
    if cc is None or pkg is None:
        return "needs a C compiler and pkg-config"
    flags = subprocess.run(
        [pkg, "--cflags", "--libs", "libmodbus"], check=False, capture_output=True, text=True
    )
    if flags.returncode != 0:
        return "libmodbus not found (apt-get install libmodbus-dev)"
    exe = workdir / "modbus_floor"
    built = subprocess.run(
        [cc, "-O2", "-o", str(exe), str(FLOOR_SOURCE), *flags.stdout.split()],
        check=False,
        capture_output=True,
        text=True,
    )
    return exe if built.returncode == 0 else f"build failed: {built.stderr.strip()}"


class FloorProcess(_Child):
    def __init__(self, exe: Path, port: int) -> None:
        super().__init__([str(exe), str(port)], "the libmodbus floor")


def floor_rounds(gw_port: int, floor_port: int, rounds: int, count: int) -> list[float]:
    """Per round, the gateway's median round trip over libmodbus's, each timed in turn (the
    order alternating), so drifting machine load hits both alike."""
    ratios = []
    tcp_round_trips(floor_port, 500)  # warm-up
    for r in range(rounds):
        if r % 2:
            floor = tcp_round_trips(floor_port, count)
            gw = tcp_round_trips(gw_port, count)
        else:
            gw = tcp_round_trips(gw_port, count)
            floor = tcp_round_trips(floor_port, count)
        ratios.append(statistics.median(gw) / statistics.median(floor))
        print(
            f"  round {r + 1}: gateway {1000 * statistics.median(gw):.4f} ms, libmodbus "
            f"{1000 * statistics.median(floor):.4f} ms, ratio {ratios[-1]:.2f}x"
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the load phase")
    parser.add_argument("--clients", type=int, default=4, help="concurrent TCP masters")
    parser.add_argument("--count", type=int, default=5000, help="TCP round trips to time")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds vs libmodbus")
    args = parser.parse_args()

    port = _free_port()
    gw = GatewayProcess("--tcp-port", str(port))
    ratios: list[float] = []
    with tempfile.TemporaryDirectory() as floor_dir:
        floor_exe = build_floor(Path(floor_dir))
        if isinstance(floor_exe, str):
            print(f"libmodbus floor not measured: {floor_exe}")
        else:
            floor_port = _free_port()
            floor = FloorProcess(floor_exe, floor_port)
            try:
                tcp_round_trips(port, 500)  # warm-up
                print(f"TCP read of {READ_COUNT} registers, gateway vs libmodbus, interleaved:")
                ratios = floor_rounds(port, floor_port, args.rounds, args.count // 5)
            finally:
                floor.stop()
    try:
        tcp_round_trips(port, 500)  # warm-up
        tcp = tcp_round_trips(port, args.count)
        print(_row(f"TCP read of {READ_COUNT} registers", tcp))
        idle_late = gw.ingest(2.0)
        queue: multiprocessing.Queue[int] = multiprocessing.Queue()
        workers = [
            multiprocessing.Process(target=_tcp_load_worker, args=(port, args.seconds, queue))
            for _ in range(args.clients)
        ]
        for w in workers:
            w.start()
        busy_late = gw.ingest(args.seconds)
        total = sum(queue.get(timeout=args.seconds + 30) for _ in workers)
        for w in workers:
            w.join()
    finally:
        gw.stop()
    print(
        f"TCP sustained, {args.clients} clients, ingest {INGEST_RATE}/s: "
        f"{total / args.seconds:,.0f} requests/s"
    )
    print(
        f"ingest lateness idle:   median {_ms(idle_late, 0.5):6.3f} ms  p99 "
        f"{_ms(idle_late, 0.99):6.3f} ms  max {1000 * max(idle_late):6.3f} ms"
    )
    print(
        f"ingest lateness loaded: median {_ms(busy_late, 0.5):6.3f} ms  p99 "
        f"{_ms(busy_late, 0.99):6.3f} ms  max {1000 * max(busy_late):6.3f} ms  "
        f"({len(busy_late)} updates applied, {INGEST_RATE * args.seconds:.0f} due)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        for label, delay in (
            ("RTU pty, 3.5-char delay at 9600 baud", None),
            ("RTU pty, response delay 0", 0),
        ):
            print(_row(label, rtu_phase(Path(tmp), delay)))

    median_ms = 1000 * statistics.median(tcp)
    verdict = "meets" if median_ms <= GOAL_TCP_P50_MS else "MISSES"
    print(f"TCP median {median_ms:.3f} ms {verdict} the goal of {GOAL_TCP_P50_MS} ms")
    if ratios:
        ratio = statistics.median(ratios)
        verdict = "meets" if ratio <= GOAL_FLOOR_RATIO else "MISSES"
        print(
            f"TCP ratio to libmodbus {ratio:.2f}x (median of {len(ratios)} interleaved rounds, "
            f"{min(ratios):.2f}-{max(ratios):.2f}x) {verdict} the goal of "
            f"{GOAL_FLOOR_RATIO:g}x"
        )


if __name__ == "__main__":
    if "--serve" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("--serve", action="store_true")
        p.add_argument("--tcp-port", type=int)
        p.add_argument("--rtu")
        p.add_argument("--response-delay-ms", type=float)
        asyncio.run(_serve(p.parse_args()))
    else:
        main()
