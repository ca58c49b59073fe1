"""BACnet at site scale, against the C floor: ReadProperty and ReadPropertyMultiple round trips
side by side with bacnet-stack's bacserv, a full poll of every object, Object_List discovery,
and what back-to-back polling does to COV notifications and HTTP ingest acks.

Run: .venv/bin/python bench/bench_bacnet_floor.py [--sensors 1000] [--rounds 3] [-n 1000]
     [--foreign]

`--foreign` measures the round trips with the gateway registered as a foreign device of a BBMD
(a second bacserv, which bacnet-stack builds with BBMD support; bacpypes3's BBMD from
tests/bacnet_peer/bbmd.py without the floor), polled directly as a BMS on another subnet does.

Environment:
  BACSERV     bacnet-stack's demo server (default: bacnet-stack/bin/bacserv beside the repository
              or one level above it). Without it the floor is skipped, with a message.
  BACNET_RTT  bacnet_rtt.py, the round-trip client measured against both servers (default:
              shared/anchors/bacnet_rtt.py beside the repository or one level above it).

The gateway is the real daemon (`vs121-gateway run`) with a generated configuration: N VS121-P
sensors, BACnet only (Modbus off), HTTP ingest on. bacserv broadcasts an I-Am when it starts, so
with the floor everything (bacserv, the daemon, every client) runs inside a network namespace of
its own holding only loopback; that needs root and `ip`. Without the floor everything binds
127.0.0.1 on free ports. Clients are plain UDP sockets sending pre-encoded requests, so the
numbers are the servers' and the kernel's, not a client library's. Every round runs the floor
then the gateway, so a ratio is measured under the same machine load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEVICE = 121000
PEOPLE_OFFSET = 1  # catalog: people_count_all is analog-input number * 1000 + 1
GOALS = {
    "rp_ratio": 4.0,
    "rpm_ratio": 10.0,
    "poll_s": 2.0,
    "cov_p99_ms": 10.0,
    "ack_p99_ms": 20.0,
    "start_s": 15.0,
    "rss_mb": 1024.0,
}


def find(env: str, *relative: str) -> Path | None:
    given = os.environ.get(env)
    if given:
        return Path(given) if Path(given).is_file() else None
    for base in (ROOT.parent.parent, ROOT.parent):
        candidate = base.joinpath(*relative)
        if candidate.is_file():
            return candidate
    return None


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stats(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    if not ordered:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    p99 = ordered[min(len(ordered) - 1, -(-99 * len(ordered) // 100) - 1)]
    return {"n": len(ordered), "p50": statistics.median(ordered), "p99": p99, "max": ordered[-1]}


# -- wire (client side, independent of the server's library) ----------------------------------


def load_average() -> str:
    """The 1-minute load average: latencies on a shared machine follow it closely."""
    return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def objid(kind: int, instance: int) -> bytes:
    return struct.pack("!I", (kind << 22) | instance)


def confirmed(invoke: int, service: int, body: bytes) -> bytearray:
    """BVLC unicast + NPDU expecting a reply + unsegmented confirmed-request APCI (1476)."""
    apdu = bytes([0x00, 0x05, invoke & 0xFF, service]) + body
    npdu = b"\x01\x04" + apdu
    return bytearray(b"\x81\x0a" + struct.pack("!H", 4 + len(npdu)) + npdu)


def ctx_unsigned(tag: int, value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return bytes([(tag << 4) | 0x08 | len(raw)]) + raw


def read_property(kind: int, instance: int, prop: int, index: int | None = None) -> bytearray:
    body = b"\x0c" + objid(kind, instance) + ctx_unsigned(1, prop)
    if index is not None:
        body += ctx_unsigned(2, index)
    return confirmed(0, 12, body)


def read_property_multiple(objects: list[tuple[int, int]], props: list[int]) -> bytearray:
    body = b""
    for kind, instance in objects:
        body += b"\x0c" + objid(kind, instance) + b"\x1e"
        body += b"".join(ctx_unsigned(0, p) for p in props) + b"\x1f"
    return confirmed(0, 14, body)


def subscribe_cov(process: int, instance: int, lifetime: int = 3600) -> bytearray:
    body = ctx_unsigned(0, process) + b"\x1c" + objid(0, instance)
    body += b"\x29\x00" + ctx_unsigned(3, lifetime)  # unconfirmed notifications
    return confirmed(0, 5, body)


def apdu_of(data: bytes) -> bytes:
    """The APDU of a BVLC unicast/forwarded + NPDU without routing fields (what servers send)."""
    at = 10 if data[1] == 0x04 else 4
    control = data[at + 1]
    at += 2
    if control & 0x20:
        at += 3 + data[at + 2]
    if control & 0x08:
        at += 3 + data[at + 2]
    if control & 0x20:
        at += 1
    return data[at:]


class RawClient:
    """One UDP socket; requests strictly one at a time, matched by invoke id."""

    def __init__(self, server: tuple[str, int], timeout: float = 5.0) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(timeout)
        self.invoke = 0

    def ask(self, packet: bytearray) -> bytes:
        self.invoke = (self.invoke + 1) & 0xFF
        packet[8] = self.invoke
        self.sock.sendto(packet, self.server)
        while True:
            apdu = apdu_of(self.sock.recv(65535))
            if len(apdu) >= 2 and apdu[0] >> 4 != 1 and apdu[1] == self.invoke:
                return apdu

    def close(self) -> None:
        self.sock.close()


def timed(
    client: RawClient, make: Callable[[int], bytearray], count: int, warm: int
) -> list[float]:
    out = []
    for i in range(warm + count):
        packet = make(i)
        started = time.perf_counter()
        reply = client.ask(packet)
        elapsed = time.perf_counter() - started
        if reply[0] != 0x30:
            raise SystemExit(f"not a Complex-ACK: {reply[:12].hex()}")
        if i >= warm:
            out.append(elapsed * 1000)
    return out


# -- the gateway daemon -----------------------------------------------------------------------


def sensor_config(count: int, regions: int) -> str:
    return "".join(
        f'[[sensors]]\nid = "s{n}"\nname = "Sensor {n}"\nnumber = {n}\nmodel = "vs121-p"\n'
        f'serial = "{n:012d}"\nreport_interval = 3600\nregion_count = {regions}\n'
        for n in range(1, count + 1)
    )


def analog_inputs(count: int) -> list[int]:
    """The first `count` analog-input instances of sensor 1 (16 regions), in catalog order."""
    sys.path.insert(0, str(ROOT))
    from objects.catalog import Model, ObjectType  # noqa: PLC0415
    from objects.pointmap import SensorSpec, resolve  # noqa: PLC0415

    spec = SensorSpec(id="s1", name="Sensor 1", number=1, model=Model.VS121_P, region_count=16)
    points = resolve([spec])
    return [p.instance for p in points if p.object_type is ObjectType.ANALOG_INPUT][:count]


class GatewayProcess:
    """The gateway as a process, READY through a private sd_notify socket. A second one on the
    same directory is a restart (the state the first wrote is loaded)."""

    def __init__(self, workdir: Path, config_text: str, *, stop_wait_s: float = 30.0) -> None:
        workdir.mkdir(exist_ok=True)
        self.workdir = workdir
        self.config = workdir / "gateway.toml"
        self.config.write_text(config_text)
        self._stop_wait_s = stop_wait_s
        notify_path = workdir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        env = {k: v for k, v in os.environ.items() if not k.startswith("VS121GW_")}
        env.update(NOTIFY_SOCKET=str(notify_path), PYTHONUNBUFFERED="1")
        self.log = workdir / "gateway.log"
        started = time.perf_counter()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.notify.settimeout(300)
        while "READY=1" not in self.notify.recv(4096).decode().split("\n"):
            pass
        self.start_s = time.perf_counter() - started
        self.start_cpu_s = self.cpu_seconds()

    def cpu_seconds(self) -> float:
        """User + system CPU of the daemon so far: on a busy machine the wall time says more
        about the neighbours than about the gateway."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(self._stop_wait_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.notify.close()


class Daemon(GatewayProcess):
    """The gateway with `sensors` VS121-P sensors, BACnet on `bacnet_port`, HTTP ingest; a
    foreign device of the BBMD on 127.0.0.1:`bbmd_port` when that is given."""

    def __init__(  # noqa: PLR0917  (one call per section, all numbers)
        self,
        workdir: Path,
        sensors: int,
        regions: int,
        bacnet_port: int,
        http_port: int,
        bbmd_port: int | None = None,
    ) -> None:
        self.http_port = http_port
        bbmd = (
            ""
            if bbmd_port is None
            else f'[bacnet.bbmd]\naddress = "127.0.0.1"\nport = {bbmd_port}\n'
        )
        super().__init__(
            workdir,
            f'[gateway]\nstate_dir = "{workdir / "state"}"\nlog_level = "warning"\n'
            f'[bacnet]\naddress = "127.0.0.1/8"\nport = {bacnet_port}\n'
            f"device_instance = {DEVICE}\n" + bbmd + "[modbus.tcp]\nenabled = false\n"
            f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n' + sensor_config(sensors, regions),
        )


# -- sections ---------------------------------------------------------------------------------


def rtt_rounds(
    rtt: Path | None,
    floor_port: int | None,
    gw_port: int,
    args: argparse.Namespace,
    out: Path,
) -> dict[str, dict[str, list[float]]]:
    """RP and RPM-50 medians/p99 per round: {'bacserv'|'gateway': {'RP median': [...], ...}}."""
    ai50 = ";".join(f"analog-input,{i}" for i in analog_inputs(50))
    results: dict[str, dict[str, list[float]]] = {"bacserv": {}, "gateway": {}}
    for r in range(1, args.rounds + 1):
        runs: list[tuple[str, list[str]]] = []
        if floor_port is not None:
            runs.append(
                (
                    "bacserv",
                    [f"127.0.0.1:{floor_port}", "--device", str(floor_port), "--create-missing"],
                )
            )
        runs.append(
            (
                "gateway",
                [
                    f"127.0.0.1:{gw_port}",
                    "--device",
                    str(DEVICE),
                    "--rp-object",
                    f"analog-input,{1000 + PEOPLE_OFFSET}",
                    "--rpm-list",
                    ai50,
                ],
            )
        )
        for label, target in runs:
            if rtt is not None:
                subprocess.run(
                    [
                        sys.executable,
                        str(rtt),
                        *target,
                        *("--client", "raw", "-n", str(args.n), "--warmup", str(args.warmup)),
                        *("--label", f"{label} r{r}", "--json", str(out)),
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            else:
                own_rtt(gw_port, args, label, r, out)
        for line in out.read_text().splitlines():
            row = json.loads(line)
            if row["label"] != f"{row['label'].split()[0]} r{r}":
                continue
            who = row["label"].split()[0]
            for metric in ("median_ms", "p99_ms"):
                results[who].setdefault(f"{row['request']} {metric}", []).append(row[metric])
    return results


def own_rtt(port: int, args: argparse.Namespace, label: str, r: int, out: Path) -> None:
    """The same measurement with this bench's raw client, when bacnet_rtt.py is not at hand."""
    client = RawClient(("127.0.0.1", port))
    first = 1000 + PEOPLE_OFFSET
    ai50 = [(0, a) for a in analog_inputs(50)]
    rows = {
        "RP": timed(client, lambda i: read_property(0, first, 85), args.n, args.warmup),
        "RPM": timed(
            client,
            lambda i: read_property_multiple(ai50, [85]),
            args.n,
            args.warmup,
        ),
    }
    client.close()
    with out.open("a") as f:
        for request, samples in rows.items():
            s = stats(samples)
            f.write(
                json.dumps(
                    {
                        "label": f"{label} r{r}",
                        "request": request,
                        "median_ms": s["p50"],
                        "p99_ms": s["p99"],
                    }
                )
                + "\n"
            )


def discover(port: int, limit: int | None) -> tuple[list[tuple[int, int]], float, int]:
    """Object_List by index, as many BMS front ends discover a device: (ids, seconds, count)."""
    client = RawClient(("127.0.0.1", port))
    started = time.perf_counter()
    reply = client.ask(read_property(8, DEVICE, 76, 0))
    length = int.from_bytes(reply[reply.index(b"\x3e") + 2 : -1], "big")
    wanted = length if limit is None else min(length, limit)
    ids = []
    for index in range(1, wanted + 1):
        reply = client.ask(read_property(8, DEVICE, 76, index))
        at = reply.index(b"\x3e\xc4") + 2
        (raw,) = struct.unpack("!I", reply[at : at + 4])
        ids.append((raw >> 22, raw & 0x3FFFFF))
    elapsed = time.perf_counter() - started
    client.close()
    return ids, elapsed, length


def full_poll(port: int, ids: list[tuple[int, int]], per_request: int) -> tuple[float, int]:
    """Present_Value + Status_Flags of every object by RPM, one request at a time."""
    client = RawClient(("127.0.0.1", port))
    objects = [o for o in ids if o[0] in (0, 1, 2, 3, 4, 5, 60)]  # AI..BV, datetime-value
    packets = [
        read_property_multiple(objects[i : i + per_request], [85, 111])
        for i in range(0, len(objects), per_request)
    ]
    started = time.perf_counter()
    for packet in packets:
        reply = client.ask(packet)
        if reply[0] != 0x30:
            raise SystemExit(f"poll: not a Complex-ACK: {reply[:12].hex()}")
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed, len(objects)


def poller_main(args: argparse.Namespace) -> None:
    """A BMS polling RPM-50 back to back until stdin closes; prints how many it did."""
    client = RawClient(("127.0.0.1", args.server_port))
    packet = read_property_multiple(
        [(0, n * 1000 + PEOPLE_OFFSET) for n in range(1, 51)], [85, 111]
    )
    done = 0
    stop = False
    os.set_blocking(sys.stdin.fileno(), False)
    while not stop:
        client.ask(packet)
        done += 1
        if done % 20 == 0:
            with contextlib.suppress(BlockingIOError):
                stop = sys.stdin.buffer.read(1) == b""
    print(json.dumps({"requests": done}), flush=True)


def subscriber_main(args: argparse.Namespace) -> None:
    """Subscribes to people_count_all of sensors 1..K, then timestamps every notification
    (CLOCK_MONOTONIC, shared between processes) until stdin closes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    server = ("127.0.0.1", args.server_port)
    for n in range(1, args.sensors + 1):
        packet = subscribe_cov(n, n * 1000 + PEOPLE_OFFSET)
        packet[8] = n & 0xFF
        sock.sendto(packet, server)
    acks = 0
    while acks < args.sensors:
        acks += apdu_of(sock.recv(65535))[0] == 0x20
    print(json.dumps({"subscribed": acks}), flush=True)
    received = []
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(sys.stdin, selectors.EVENT_READ)
    while True:
        events = sel.select()
        now = time.monotonic()
        stdin_ready = any(key.fileobj is sys.stdin for key, _ in events)
        if stdin_ready and not os.read(sys.stdin.fileno(), 1):
            break
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            apdu = apdu_of(data)
            if apdu[:2] != b"\x10\x02":
                continue
            at = apdu.find(b"\x2c")
            marker = apdu.find(b"\x09\x55\x2e\x44", at)
            if at < 0 or marker < 0:
                continue
            (raw,) = struct.unpack("!I", apdu[at + 1 : at + 5])
            (value,) = struct.unpack("!f", apdu[marker + 4 : marker + 8])
            received.append((raw & 0x3FFFFF, value, now))
    print(json.dumps({"received": received}), flush=True)


def vs121p_report(serial: str, total: int, seq: int) -> bytes:
    end = time.gmtime(1_700_000_000 + seq)
    return json.dumps(
        {
            "event": "Region People Counting",
            "report_type": "interval",
            "device_info": {"device_sn": serial},
            "time_info": {
                "timezone": "UTC+0:00",
                "start_time": time.strftime("%Y/%m/%d %H:%M:%S", end),
                "end_time": time.strftime("%Y/%m/%d %H:%M:%S", end),
            },
            "current_total": total,
        }
    ).encode()


def ingest_under_load(  # noqa: PLR0917  (one call site, all numbers)
    gw_port: int, http_port: int, sensors: int, pollers: int, seconds: float, rate: float
) -> dict[str, Any]:
    """HTTP pushes at `rate`/s for `seconds` while `pollers` clients poll RPM-50 back to back;
    COV latency = notification arrival - POST sent, ack = POST round trip."""
    me = [sys.executable, __file__, "--server-port", str(gw_port)]
    sub = subprocess.Popen(
        [*me, "--subscriber", "--sensors", str(sensors)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert sub.stdout is not None
    json.loads(sub.stdout.readline())
    polls = [
        subprocess.Popen([*me, "--poller"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(pollers)
    ]
    time.sleep(0.5)  # let the pollers reach full speed before timing starts
    sent: dict[tuple[int, float], float] = {}
    acks: list[float] = []
    seq = int(time.time() * 1000) % 10_000_000
    values = dict.fromkeys(range(1, sensors + 1), 0)
    period = 1.0 / rate
    next_at = time.monotonic()
    url = f"http://127.0.0.1:{http_port}/vs121p"
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        n = i % sensors + 1
        values[n] += 1
        seq += 1
        body = vs121p_report(f"{n:012d}", values[n], seq)
        request = urllib.request.Request(url, data=body, method="POST")
        t0 = time.monotonic()
        sent[(n * 1000 + PEOPLE_OFFSET, float(values[n]))] = t0
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        acks.append((time.monotonic() - t0) * 1000)
        i += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    time.sleep(0.3)  # the last notifications
    polled = 0
    for p in polls:
        out, _ = p.communicate(b"", timeout=30)
        polled += json.loads(out)["requests"]
    out, _ = sub.communicate(b"", timeout=30)
    received = json.loads(out)["received"]
    cov = [(t - sent[(o, v)]) * 1000 for o, v, t in received if (o, v) in sent]
    return {
        "cov": stats(cov),
        "ack": stats(acks),
        "posts": i,
        "notified": len(cov),
        "rpm_per_s": polled / seconds,
    }


# -- bacserv ----------------------------------------------------------------------------------


def start_bacserv(path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BACNET_IFACE": "lo", "BACNET_IP_PORT": str(port)}
    process = subprocess.Popen(
        [str(path), str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = RawClient(("127.0.0.1", port), timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ask(read_property(8, port, 77))
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise SystemExit("bacserv did not answer within 10 s") from None
    client.close()
    return process


# -- a BBMD for --foreign ---------------------------------------------------------------------

REGISTERED_WITHIN_S = 20.0


def start_bbmd(bacserv: Path | None, port: int) -> subprocess.Popen[bytes]:
    """bacserv accepts foreign-device registrations (bacnet-stack builds it with BBMD support);
    without it, bacpypes3's BBMD from the tests."""
    if bacserv is not None:
        return start_bacserv(bacserv, port)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "bacnet_peer" / "bbmd.py"), "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    if not process.stdout.readline():
        raise SystemExit("bacpypes3's BBMD did not start")
    return process


def foreign_devices(bbmd_port: int) -> list[tuple[str, int]]:
    """The BBMD's foreign device table (Read-Foreign-Device-Table, Annex J.2.4)."""
    client = RawClient(("127.0.0.1", bbmd_port), timeout=0.5)
    try:
        client.sock.sendto(b"\x81\x06\x00\x04", client.server)
        data = client.sock.recv(65535)
    except TimeoutError:
        return []
    finally:
        client.close()
    if data[:2] != b"\x81\x07":
        return []
    entries = data[4:]
    return [
        (socket.inet_ntoa(entries[i : i + 4]), int.from_bytes(entries[i + 4 : i + 6], "big"))
        for i in range(0, len(entries) - 9, 10)
    ]


def wait_registered(bbmd_port: int, gw_port: int) -> None:
    deadline = time.monotonic() + REGISTERED_WITHIN_S
    while ("127.0.0.1", gw_port) not in foreign_devices(bbmd_port):
        if time.monotonic() > deadline:
            raise SystemExit(
                f"the gateway did not register with the BBMD within {REGISTERED_WITHIN_S:.0f} s"
            )
        time.sleep(0.1)


# -- main -------------------------------------------------------------------------------------


def inside(args: argparse.Namespace, bacserv: Path | None, rtt: Path | None) -> int:
    misses: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-bacnet-") as tmp:
        work = Path(tmp)
        if not args.skip_ratio:
            misses += ratio_section(args, work, bacserv, rtt)
        misses += scale_section(args, work)
        if args.big_sensors:
            misses += big_section(args, work)
    goals = (
        "RP <= 4x, RPM-50 <= 10x bacserv; full poll of 1,000 sensors < 2 s; "
        "under 2 pollers COV p99 < 10 ms, ack p99 < 20 ms; start < 15 s, < 1 GB at 4,193 sensors"
    )
    print(f"\ngoals ({goals}): " + ("all met" if not misses else "MISSED " + "; ".join(misses)))
    return 1 if misses else 0


def ratio_section(
    args: argparse.Namespace, work: Path, bacserv: Path | None, rtt: Path | None
) -> list[str]:
    """RP and RPM-50 against bacserv, on a small gateway (2 sensors, about 200 objects): the
    shared client reads the whole Object_List first, which must fit its segment limit."""
    misses = []
    gw_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    bbmd = None
    bbmd_port = free_port() if args.foreign else None
    if bbmd_port is not None:
        bbmd = start_bbmd(bacserv, bbmd_port)
    daemon = Daemon(work / "small", 2, 16, gw_port, http_port, bbmd_port)
    floor = None
    try:
        if bbmd_port is not None:
            wait_registered(bbmd_port, gw_port)
            kind = "bacserv" if bacserv is not None else "bacpypes3"
            print(f"gateway registered as a foreign device with a BBMD ({kind}) on {bbmd_port}")
        floor_port = None
        if bacserv is not None:
            floor_port = free_port()
            floor = start_bacserv(bacserv, floor_port)
        if rtt is None:
            print("(bacnet_rtt.py not found: RP/RPM measured with this bench's own client)")
        res = rtt_rounds(rtt, floor_port, gw_port, args, work / "rtt.jsonl")
    finally:
        daemon.stop()
        for process in (floor, bbmd):
            if process is not None:
                process.terminate()
                process.wait(10)
    mode = "gateway as a foreign device" if args.foreign else "gateway on the normal link"
    print(
        f"Round trips ({mode}), one at a time, raw client, n={args.n} per round, "
        f"{args.rounds} rounds interleaved (median of the rounds' values; "
        "RPM = 50 analog-input present values), "
        f"machine load {load_average()}:"
    )
    print("request  metric      bacserv ms  gateway ms   gateway/bacserv")
    for request in ("RP", "RPM"):
        for metric in ("median_ms", "p99_ms"):
            g = statistics.median(res["gateway"][f"{request} {metric}"])
            b_list = res["bacserv"].get(f"{request} {metric}")
            if b_list:
                b = statistics.median(b_list)
                ratio = g / b
                print(f"{request:7s}  {metric:10s} {b:10.3f}  {g:10.3f}  {ratio:10.1f}x")
                goal = GOALS["rp_ratio" if request == "RP" else "rpm_ratio"]
                if metric == "median_ms" and ratio > goal:
                    misses.append(f"{request} median ratio {ratio:.1f}x > {goal:.0f}x")
            else:
                print(f"{request:7s}  {metric:10s} {'-':>10s}  {g:10.3f}  (no floor)")
    return misses


def scale_section(args: argparse.Namespace, work: Path) -> list[str]:
    misses = []
    gw_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    print(f"\nGateway with {args.sensors} VS121-P sensors ({args.regions} regions), BACnet only:")
    daemon = Daemon(work / "big", args.sensors, args.regions, gw_port, http_port)
    try:
        rss = daemon.peak_rss_mb()
        print(
            f"  start {daemon.start_s:.2f} s (process start to READY; "
            f"{daemon.start_cpu_s:.2f} s of CPU), peak RSS {rss:.0f} MB"
        )
        if rss > GOALS["rss_mb"]:
            misses.append(f"RSS {rss:.0f} MB")
        for pollers in (0, 2):
            load = ingest_under_load(
                gw_port, http_port, args.cov_sensors, pollers, args.seconds, args.rate
            )
            c, a = load["cov"], load["ack"]
            print(
                f"  HTTP push -> COV, {args.rate:.0f} posts/s for {args.seconds:.0f} s, "
                f"{pollers} pollers ({load['rpm_per_s']:.0f} RPM-50x2/s served): "
                f"{load['notified']}/{load['posts']} notified; machine load {load_average()}"
            )
            print(f"    COV  p50 {c['p50']:.2f} ms  p99 {c['p99']:.2f} ms  max {c['max']:.2f} ms")
            print(f"    ack  p50 {a['p50']:.2f} ms  p99 {a['p99']:.2f} ms  max {a['max']:.2f} ms")
            if pollers:
                if c["p99"] > GOALS["cov_p99_ms"]:
                    misses.append(f"COV p99 under polling {c['p99']:.1f} ms")
                if a["p99"] > GOALS["ack_p99_ms"]:
                    misses.append(f"ack p99 under polling {a['p99']:.1f} ms")
            if load["notified"] < load["posts"]:
                misses.append(f"{load['posts'] - load['notified']} notifications missing")
        ids, seconds, length = discover(gw_port, args.discover_limit)
        per = seconds / max(1, len(ids)) * 1000
        print(
            f"  Object_List discovery by index: {len(ids)} of {length} identifiers in "
            f"{seconds:.2f} s ({per:.3f} ms each)"
        )
        if len(ids) == length:
            for which in ("first", "repeated"):
                poll_s, polled = full_poll(gw_port, ids, args.per_request)
                print(
                    f"  Full poll ({which}), Present_Value + Status_Flags of {polled} objects, "
                    f"{args.per_request} objects per RPM: {poll_s:.2f} s"
                )
            if args.sensors >= 1000 and poll_s > GOALS["poll_s"]:
                misses.append(f"repeated full poll {poll_s:.2f} s")
    finally:
        daemon.stop()
    return misses


def big_section(args: argparse.Namespace, work: Path) -> list[str]:
    """The largest configuration the instance scheme allows (sensor number * 1000 + point
    offset <= 4,194,302, so 4,193 sensors), BACnet only: start time, memory, last objects."""
    misses = []
    gw_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    count = args.big_sensors
    print(f"\nGateway with {count} VS121-P sensors ({args.regions} regions), BACnet only:")
    daemon = Daemon(work / "biggest", count, args.regions, gw_port, http_port)
    try:
        rss = daemon.peak_rss_mb()
        print(
            f"  start {daemon.start_s:.2f} s (process start to READY; "
            f"{daemon.start_cpu_s:.2f} s of CPU), peak RSS {rss:.0f} MB"
        )
        if daemon.start_s > GOALS["start_s"]:
            misses.append(f"start of {count} sensors {daemon.start_s:.1f} s")
        if rss > GOALS["rss_mb"]:
            misses.append(f"RSS of {count} sensors {rss:.0f} MB")
        client = RawClient(("127.0.0.1", gw_port))
        reply = client.ask(read_property(8, DEVICE, 76, 0))
        length = int.from_bytes(reply[reply.index(b"\x3e") + 2 : -1], "big")
        reply = client.ask(read_property(8, DEVICE, 76, length))
        at = reply.index(b"\x3e\xc4") + 2
        (raw,) = struct.unpack("!I", reply[at : at + 4])
        last = client.ask(read_property(raw >> 22, raw & 0x3FFFFF, 85))
        people = client.ask(read_property(0, count * 1000 + PEOPLE_OFFSET, 85))
        client.close()
        readable = last[0] == 0x30 and people[0] == 0x30
        print(
            f"  {length} objects; the last listed ({raw >> 22},{raw & 0x3FFFFF}) and sensor "
            f"{count}'s people count read back: {'yes' if readable else 'NO'}"
        )
        if not readable:
            misses.append("highest objects not readable")
    finally:
        daemon.stop()
    return misses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=1000, help="sensors configured")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved floor/gateway rounds")
    parser.add_argument("-n", type=int, default=1000, help="timed requests per kind and round")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--regions", type=int, default=4, help="regions per sensor")
    parser.add_argument(
        "--big-sensors", type=int, default=4193, help="start-up check size (0: skip)"
    )
    parser.add_argument("--skip-ratio", action="store_true", help="only the scale section")
    parser.add_argument("--discover-limit", type=int, default=None, help="Object_List entries")
    parser.add_argument("--per-request", type=int, default=50, help="objects per poll RPM")
    parser.add_argument("--cov-sensors", type=int, default=20, help="COV subscriptions")
    parser.add_argument("--rate", type=float, default=50.0, help="HTTP posts per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load phase")
    parser.add_argument("--no-floor", action="store_true", help="skip bacserv")
    parser.add_argument("--netns", default=None, help="name of the network namespace made")
    parser.add_argument(
        "--foreign",
        action="store_true",
        help="round trips with the gateway a foreign device of a BBMD (started here)",
    )
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--poller", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poller:
        poller_main(args)
        return 0
    if args.subscriber:
        subscriber_main(args)
        return 0

    rtt = find("BACNET_RTT", "shared", "anchors", "bacnet_rtt.py")
    bacserv = None if args.no_floor else find("BACSERV", "bacnet-stack", "bin", "bacserv")
    if args.inside:
        return inside(args, bacserv, rtt)
    if bacserv is None:
        print("floor skipped: bacserv not found (set BACSERV=/path/to/bacnet-stack/bin/bacserv)")
        return inside(args, None, rtt)
    if rtt is None:
        print("floor skipped: bacnet_rtt.py not found (set BACNET_RTT=/path/to/bacnet_rtt.py)")
        return inside(args, None, None)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("floor skipped: bacserv must run in a network namespace (needs root and `ip`)")
        return inside(args, None, rtt)
    namespace = args.netns or f"bench-bacnet-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True
        )
        print(f"bacserv {bacserv}, in network namespace {namespace} (loopback only)", flush=True)
        return subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, __file__, "--inside", *sys.argv[1:]],
            check=False,
        ).returncode
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)


if __name__ == "__main__":
    raise SystemExit(main())
