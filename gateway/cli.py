"""The `vs121-gateway` command line. Its options and output formats are a stable contract."""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from gateway import early_signals

# Before the slow imports below: `run` must not die by a stop signal sent while it loads.
early_signals.install_if_run(__name__, sys.argv)

from gateway import __version__, control_token  # noqa: E402
from gateway.codec.result import DecodeResult, new_result  # noqa: E402
from gateway.codec.vs121_downlink import command_from_json, encode_commands  # noqa: E402
from gateway.codec.vs121_uplink import decode_uplink  # noqa: E402
from gateway.codec.vs121p import parse_report_bytes  # noqa: E402
from gateway.errors import ConfigError, EncodeError  # noqa: E402
from gateway.pointdocs import points_text  # noqa: E402
from gateway.settings import Settings, load_default, load_settings  # noqa: E402

EXIT_OK = 0
EXIT_DECODE_ERRORS = 1  # at least one payload had errors (its line is still printed)
EXIT_USAGE = 2  # bad arguments, bad command JSON, bad configuration


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vs121-gateway",
        description="Milesight VS121 / VS121-P occupancy sensors on BACnet/IP and Modbus.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the gateway",
        description="Run the gateway. Without --config it runs the embedded loopback demo.",
    )
    run.add_argument("--config", type=Path, help="TOML configuration file")

    dec = sub.add_parser(
        "decode",
        help="decode VS121 uplinks (hex/base64) or VS121-P JSON",
        description=(
            "Decode each payload given as an argument, or one per line from standard input, and "
            "print one JSON object per payload: {data, warnings, errors}. Exit status 1 if any "
            "payload had errors."
        ),
    )
    dec.add_argument("payloads", nargs="*", metavar="HEX", help="payloads (hex, or base64)")
    dec.add_argument("--fport", type=int, default=85, help="LoRaWAN fPort (default 85)")
    dec.add_argument("--base64", action="store_true", help="payloads are base64, not hex")
    dec.add_argument(
        "--vs121p",
        metavar="FILE",
        help="decode a VS121-P JSON report from FILE ('-' for standard input)",
    )

    enc = sub.add_parser(
        "encode",
        help="encode a downlink command to hex",
        description=(
            "Encode a command (a JSON object, or a list of them sent in one downlink) and print "
            'the hex, e.g. \'{"command": "reset_cumulative_count"}\'.'
        ),
    )
    enc.add_argument("command_json", metavar="JSON")

    pts = sub.add_parser(
        "points",
        help="print the point list, EDE file or Modbus map",
        description="Print the points generated from the catalog for the configured sensors.",
    )
    pts.add_argument("--config", type=Path, help="TOML configuration (default: the demo)")
    pts.add_argument(
        "--format",
        choices=["table", "csv", "ede", "modbus", "modbus-csv"],
        default="table",
        help="table (default), csv, ede (BACnet EDE 2.3), modbus (Markdown), modbus-csv",
    )

    sim = sub.add_parser(
        "simulate",
        help="publish simulated sensor traffic to an MQTT broker",
        description=(
            "Publish realistic traffic for every sensor in the configuration: LoRaWAN uplinks in "
            "the chosen envelope, VS121-P JSON for vs121-p sensors. Prints a JSON summary with "
            "what each sensor published."
        ),
    )
    sim.add_argument("--config", type=Path, help="TOML configuration (default: the demo)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=1883)
    sim.add_argument(
        "--envelope", choices=["chirpstack", "tts", "milesight", "raw"], default="chirpstack"
    )
    sim.add_argument("--rounds", type=int, default=10, help="reporting intervals to simulate")
    sim.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    sim.add_argument(
        "--gap-every",
        type=int,
        default=0,
        metavar="N",
        help="every N rounds a LoRaWAN sensor misses two intervals, then sends them as history",
    )
    sim.add_argument(
        "--answer-downlinks",
        action="store_true",
        help="also play the network server: acknowledge the gateway's downlinks with the "
        "server's events and echo each setting in the sensor's next uplink",
    )

    rst = sub.add_parser(
        "reset-counts",
        help="reset a sensor's totals in the running gateway",
        description=(
            "Ask the running gateway (through its HTTP server) to zero a sensor's totals; for a "
            "LoRaWAN sensor it also sends the reset downlink (ff51ff)."
        ),
    )
    rst.add_argument("sensor", help="sensor id from the configuration")
    rst.add_argument("--config", type=Path, help="TOML configuration (default: the demo)")

    snd = sub.add_parser(
        "send",
        help="send a downlink command to a sensor through the running gateway",
        description=(
            "Ask the running gateway (through its HTTP server) to send a guide command to a "
            "LoRaWAN sensor through its network server, e.g. "
            '\'{"command": "reporting_interval", "seconds": 1200}\' (a list sends several in one '
            "downlink). Prints the command's record as JSON; follow its state with "
            "GET /api/commands/<id>, or wait for it with --wait. Exit status 1 if the gateway "
            "refuses it (or, with --wait, if it does not end confirmed)."
        ),
    )
    snd.add_argument("sensor", help="sensor id from the configuration")
    snd.add_argument("command_json", metavar="JSON")
    snd.add_argument("--config", type=Path, help="TOML configuration (default: the demo)")
    snd.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="wait up to SECONDS for the command to finish; exit 1 unless it is confirmed",
    )

    chk = sub.add_parser(
        "check-config",
        help="validate a configuration file",
        description="Print every problem with its key, value and what is allowed.",
    )
    chk.add_argument("config", type=Path)
    return p


def _load(path: Path | None) -> Settings:
    return load_settings(path) if path is not None else load_default()


def _decode_one(text: str, fport: int, as_base64: bool) -> DecodeResult:
    text = text.strip()
    try:
        raw = (
            base64.b64decode(text, validate=True)
            if as_base64
            else bytes.fromhex(text.replace(" ", ""))
        )
    except (ValueError, binascii.Error) as exc:
        result = new_result()
        kind = "base64" if as_base64 else "hex"
        result["errors"].append(f"payload is not valid {kind}: {exc}")
        return result
    return decode_uplink(raw, fport)


def _emit(results: Iterable[DecodeResult], out: TextIO) -> int:
    status = EXIT_OK
    for r in results:
        out.write(json.dumps(r, separators=(",", ":")) + "\n")
        out.flush()
        if r["errors"]:
            status = EXIT_DECODE_ERRORS
    return status


def cmd_decode(args: argparse.Namespace, out: TextIO) -> int:
    if args.vs121p is not None:
        if args.vs121p == "-":
            body = sys.stdin.buffer.read()
        else:
            try:
                body = Path(args.vs121p).read_bytes()
            except OSError as exc:
                print(f"vs121-gateway decode: {args.vs121p}: {exc.strerror}", file=sys.stderr)
                return EXIT_USAGE
        return _emit([parse_report_bytes(body)], out)
    lines: Iterable[str] = args.payloads or (ln for ln in sys.stdin if ln.strip())
    return _emit((_decode_one(t, args.fport, args.base64) for t in lines), out)


def cmd_encode(args: argparse.Namespace, out: TextIO) -> int:
    try:
        obj = json.loads(args.command_json)
    except json.JSONDecodeError as exc:
        print(f"vs121-gateway encode: not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    items = obj if isinstance(obj, list) else [obj]
    try:
        commands = [command_from_json(item) for item in items]
        out.write(encode_commands(commands).hex() + "\n")
    except EncodeError as exc:
        print(f"vs121-gateway encode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def cmd_points(args: argparse.Namespace, out: TextIO) -> int:
    out.write(points_text(_load(args.config), args.format))
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.config_audit import open_endpoints, plaintext_secrets  # noqa: PLC0415

    settings = load_settings(args.config)
    n = len(settings.sensors)
    out.write(f"{args.config}: OK ({n} sensor{'s' if n != 1 else ''})\n")
    for warning in plaintext_secrets(args.config) + open_endpoints(settings):
        out.write(f"{args.config}: warning: {warning}\n")
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here so the codec commands stay quick to start.
    from gateway.runner import run  # noqa: PLC0415

    # Start-up builds hundreds of thousands of objects that live as long as the process; the
    # cycle collector walking them again and again cost a third of the start-up at 5,000
    # sensors (bench/bench_scale.py). The gateway collects once and enables it when ready.
    gc.disable()
    return run(_load(args.config))


def cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.sim_publish import TrafficPlan, publish  # noqa: PLC0415

    settings = _load(args.config)
    from gateway.sim_network_server import SimulatedNetworkServer  # noqa: PLC0415

    plan = TrafficPlan(list(settings.sensors), args.envelope, gap_every=args.gap_every)
    server = (
        SimulatedNetworkServer(args.envelope)
        if args.answer_downlinks and args.envelope != "raw"
        else None
    )
    try:
        sent = publish(
            plan,
            args.host,
            args.port,
            rounds=args.rounds,
            interval=args.interval,
            network_server=server,
        )
    except (OSError, ConnectionError) as exc:
        print(f"vs121-gateway simulate: {exc}", file=sys.stderr)
        return 1
    summary = {
        "messages": sent,
        "sensors": {
            sim.sensor.id: {"in": sim.published_in, "out": sim.published_out} for sim in plan.sims
        },
    }
    out.write(json.dumps(summary) + "\n")
    return EXIT_OK


class _ApiError(Exception):
    """The running gateway refused a request or could not be reached; the text says which."""


def _api_call(config: Path | None, path: str, body: bytes | None) -> str:
    """POST `body` (GET when None) to the running gateway's HTTP API; its answer's text."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    settings = _load(config)
    http = settings.http
    scheme = "https" if http.tls_cert_file else "http"
    url = f"{scheme}://{http.host}:{http.port}{path}"
    method = "GET" if body is None else "POST"
    request = urllib.request.Request(url, method=method, data=body)  # noqa: S310 (http/https only)
    request.add_header("User-Agent", f"vs121-gateway-cli/{__version__}")
    password = http.basic_auth_password()
    local = control_token.read(settings.gateway.state_dir)
    if local is not None:
        request.add_header(control_token.HEADER, local)
    elif http.username and password is not None:
        token = base64.b64encode(f"{http.username}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our own URL)
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        raise _ApiError(f"{exc.code}: {exc.read().decode().strip()}") from None
    except OSError as exc:
        raise _ApiError(f"gateway not reachable at {url}: {exc}") from None


def _api_request(config: Path | None, path: str, body: bytes, what: str, out: TextIO) -> int:
    """POST `body` to the running gateway's HTTP API and print its answer."""
    try:
        text = _api_call(config, path, body)
    except _ApiError as exc:
        print(f"vs121-gateway {what}: {exc}", file=sys.stderr)
        return 1
    out.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def cmd_reset_counts(args: argparse.Namespace, out: TextIO) -> int:
    return _api_request(args.config, f"/api/sensors/{args.sensor}/reset", b"", "reset-counts", out)


_UNFINISHED = ("publishing", "queued", "sent")


def cmd_send(args: argparse.Namespace, out: TextIO) -> int:
    import time  # noqa: PLC0415

    try:
        obj = json.loads(args.command_json)
    except json.JSONDecodeError as exc:
        print(f"vs121-gateway send: not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    items = obj if isinstance(obj, list) else [obj]
    try:  # checked here too, so a typo is explained without a round trip
        encode_commands(command_from_json(item) for item in items)
    except EncodeError as exc:
        print(f"vs121-gateway send: {exc}", file=sys.stderr)
        return EXIT_USAGE
    body = json.dumps(items).encode()
    try:
        record = json.loads(_api_call(args.config, f"/api/sensors/{args.sensor}/commands", body))
        deadline = time.monotonic() + (args.wait or 0.0)
        while args.wait and record["state"] in _UNFINISHED and time.monotonic() < deadline:
            time.sleep(1.0)  # the gateway is polled, at a human pace
            record = json.loads(_api_call(args.config, f"/api/commands/{record['id']}", None))
    except _ApiError as exc:
        print(f"vs121-gateway send: {exc}", file=sys.stderr)
        return 1
    out.write(json.dumps(record) + "\n")
    if args.wait and record["state"] != "confirmed":
        print(
            f"vs121-gateway send: command {record['id']} is {record['state']}"
            + (f": {record['reason']}" if record.get("reason") else ""),
            file=sys.stderr,
        )
        return 1
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "decode": cmd_decode,
    "encode": cmd_encode,
    "points": cmd_points,
    "check-config": cmd_check_config,
    "simulate": cmd_simulate,
    "reset-counts": cmd_reset_counts,
    "send": cmd_send,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, sys.stdout)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
