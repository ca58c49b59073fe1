"""Configuration: a TOML file plus ``VS121GW_`` environment overrides, validated strictly.

Every problem is reported with its key, the bad value and what is allowed (see `describe_errors`).
The embedded default (no file) is a loopback demo that needs no hardware and no broker.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.access import parse_networks
from gateway.errors import ConfigError
from gateway.mqtt_settings import MqttSection
from gateway.notification_settings import NotificationSection
from objects.catalog import MAX_REGIONS, MAX_RULES, SENSOR_POINTS, Model
from objects.instances import (
    MAX_SENSOR_NUMBER,
    block_choices,
    max_sensor_number,
    max_sensor_offset,
)
from objects.pointmap import ResolvedPoint, RuleSpec, SensorSpec, find_conflicts, resolve

ENV_PREFIX = "VS121GW_"
_EUI = re.compile(r"^[0-9a-f]{16}$")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Strict):
    name: str = Field("VS121 Gateway", min_length=1, max_length=64)
    state_dir: Path = Path("state")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Seconds between snapshots of the changed sensors: shorter means a shorter journal to
    # replay at start, longer means fewer writes to a flash card.
    snapshot_interval: float = Field(60.0, ge=1.0, le=3600.0)


class DailySection(_Strict):
    """When "today" starts for the daily line totals: a local time of day in a time zone."""

    timezone: str = "UTC"  # an IANA zone name, e.g. "Europe/Berlin"
    reset_time: str = "00:00"  # HH:MM, local

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{v!r} is not a known time zone; expected an IANA name such as "
                "'Europe/Berlin' or 'UTC'"
            ) from None
        return v

    @field_validator("reset_time")
    @classmethod
    def _time(cls, v: str) -> str:
        m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", v)
        if m is None:
            raise ValueError(f"{v!r} is not a time of day; expected HH:MM from 00:00 to 23:59")
        return v


class BbmdSection(_Strict):
    address: str
    port: int = Field(47808, ge=1, le=65535)
    ttl: int = Field(300, ge=30, le=65535)

    @field_validator("address")
    @classmethod
    def _ip(cls, v: str) -> str:
        ipaddress.IPv4Address(v)
        return v


class BacnetSection(_Strict):
    enabled: bool = True
    # Address with its prefix length, so the stack derives the subnet and hears broadcasts.
    address: str = "127.0.0.1/8"
    port: int = Field(47808, ge=1, le=65535)
    broadcast: str = "127.255.255.255"
    device_instance: int = Field(121000, ge=0, le=4194302)
    device_name: str = Field("VS121 Gateway", min_length=1, max_length=64)
    description: str = "Milesight VS121 occupancy sensors"
    location: str = ""
    vendor_id: int = Field(999, ge=0, le=65535)
    # Vendor_Name goes with vendor_id (ASHRAE assigns both); 999 is the id reserved for tests.
    vendor_name: str = Field("vs121-gateway", min_length=1, max_length=64)
    # DeviceCommunicationControl / ReinitializeDevice password (BACnet allows 1-20 characters).
    password: SecretStr | None = Field(None, min_length=1, max_length=20)
    bbmd: BbmdSection | None = None
    # Addresses or networks of the BMS stations that may write and manage the device
    # (DeviceCommunicationControl, ReinitializeDevice); empty: any station. Reads are open.
    allow_writes_from: list[str] = []

    @field_validator("allow_writes_from")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        parse_networks("bacnet.allow_writes_from", v)
        return v

    # The Notification Class that routes the alarm rules' BACnet event notifications.
    notification: NotificationSection = NotificationSection()
    # Instances per sensor number: a point's instance is number x instance_block + offset.
    # 1000 (the default) serves sensor numbers up to 4193; 500 up to 8387 (see
    # objects.instances, also for where the alarm rules then sit).
    instance_block: int = 1000

    @field_validator("instance_block")
    @classmethod
    def _block(cls, v: int) -> int:
        choices = block_choices()
        if v not in choices:
            raise ValueError(
                f"allowed: {', '.join(map(str, choices))} (round blocks that hold a sensor's "
                f"instance offsets 0..{max_sensor_offset()})"
            )
        return v

    @field_validator("address")
    @classmethod
    def _interface(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError("give the prefix length too, e.g. 192.168.1.10/24")
        ipaddress.IPv4Interface(v)
        return v

    @field_validator("broadcast")
    @classmethod
    def _bcast(cls, v: str) -> str:
        ipaddress.IPv4Address(v)
        return v


class ModbusTcpSection(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(5020, ge=1, le=65535)
    # When this many are open, a newcomer takes the slot of the connection idle longest, so
    # idle, slow or vanished clients can never lock a SCADA out.
    max_connections: int = Field(16, ge=1, le=1024)
    # A connection that completes no request for this long is closed; 0 = never.
    idle_timeout_s: float = Field(120.0, ge=0, le=86400)
    # TCP keepalive per socket: first probe after keepalive_idle_s of silence, then every
    # keepalive_interval_s; after keepalive_count unanswered probes the peer is gone.
    keepalive_idle_s: int = Field(30, ge=1, le=7200)
    keepalive_interval_s: int = Field(10, ge=1, le=600)
    keepalive_count: int = Field(3, ge=1, le=20)
    # Client addresses or networks allowed to connect; empty: any client.
    allow_from: list[str] = []

    @field_validator("allow_from")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        parse_networks("modbus.tcp.allow_from", v)
        return v


class ModbusRtuSection(_Strict):
    enabled: bool = False
    port: str = "/dev/ttyUSB0"
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    unit_id: int = Field(1, ge=1, le=247)  # blocks addressing; unit_per_sensor uses the numbers
    # At start-up, a missing port is either a fatal error or something to wait for.
    missing_port: Literal["fail", "wait"] = "wait"
    # Let the kernel drive RTS for the RS485 transceiver (TIOCSRS485); for UARTs wired to a
    # transceiver without automatic direction control. USB RS485 adapters do this themselves.
    rs485: bool = False
    # The adapter hands back what we transmit: drop our own echo instead of parsing it.
    local_echo: bool = False
    # Quiet time between the end of a request and our response; unset = 3.5 character times
    # (1.75 ms above 19200 baud), as the RTU specification asks.
    response_delay_ms: float | None = Field(None, ge=0, le=1000)


class ModbusSection(_Strict):
    word_order: Literal["high_first", "low_first"] = "high_first"
    # "blocks": one device, sensor n at n x 200 + offset. "unit_per_sensor": unit id = sensor
    # number (1..247), the same layout in every unit, the gateway's block on gateway_unit_id.
    # "unit_blocks": 100 sensors per unit id, sensor n on unit 1 + n // 100 at
    # (n % 100) x 200 + offset; unit 1 is the blocks layout (gateway's block included).
    addressing: Literal["blocks", "unit_per_sensor", "unit_blocks"] = "blocks"
    gateway_unit_id: int = Field(247, ge=1, le=247)
    # Sensors the addressing mode cannot reach (blocks: number above 327; unit_per_sensor:
    # above 247): a config error naming them, or served on BACnet only with one warning.
    unaddressable_sensors: Literal["error", "bacnet_only"] = "error"

    @property
    def served(self) -> bool:
        return self.tcp.enabled or self.rtu.enabled

    tcp: ModbusTcpSection = ModbusTcpSection()
    rtu: ModbusRtuSection = ModbusRtuSection()


class HttpSection(_Strict):
    """The HTTP server: VS121-P push ingest (POST), /metrics and /healthz."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8121, ge=1, le=65535)
    path: str = Field("/vs121p", pattern=r"^/[A-Za-z0-9_./-]*$")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    username: str | None = Field(None, min_length=1)
    password: SecretStr | None = None
    password_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Each connection costs a file descriptor: capped so that nobody who can reach the port
    # starves the journal and the other sinks. Idle connections, and requests whose headers or
    # body do not arrive in time, are closed; when all slots are taken, the one quiet longest
    # makes room for a newcomer.
    max_connections: int = Field(256, ge=1, le=100_000)
    idle_timeout: float = Field(15.0, gt=0, le=3600)
    body_timeout: float = Field(15.0, gt=0, le=3600)
    # A report not durable within this (the state volume is full) is answered 503: retry later.
    ack_timeout: float = Field(10.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("http: give password or password_file, not both")
        has_secret = self.password is not None or self.password_file is not None
        if (self.username is None) != (not has_secret):
            raise ValueError("http: basic auth needs both username and password (or password_file)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("http: TLS needs both tls_cert_file and tls_key_file")
        for name in ("password_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"http.{name}: file {str(path)!r} does not exist")
        return self

    def basic_auth_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        return None


class SimulateSection(_Strict):
    """Feed every configured sensor from a built-in simulation instead of real devices (demo)."""

    enabled: bool = False
    period: float = Field(5.0, ge=0.1, le=3600)


class DownlinkSection(_Strict):
    """Commands sent to LoRaWAN sensors (see `gateway.downlinks`)."""

    # Ask the device to acknowledge the frame: the network server then reports the delivery.
    confirmed: bool = True
    # How long a command may wait for confirmation; by default two report intervals plus a
    # minute, since a class A device only listens after it has sent an uplink.
    timeout: float | None = Field(None, ge=1, le=7 * 86400)
    # Refuse commands to a sensor that is offline (stale): the downlink would wait unseen.
    refuse_offline: bool = True


class PointOverride(_Strict):
    name: str | None = Field(None, min_length=1, max_length=64)
    instance: int | None = Field(None, ge=0, le=4194302)
    cov_increment: float | None = Field(None, gt=0)
    # BACnet event reporting: in alarm above high_limit, normal again below high_limit - deadband
    # (people count points only).
    high_limit: float | None = Field(None, ge=0, le=65535)
    deadband: float = Field(1, ge=0, le=65535)


def _limit_keys() -> set[str]:
    """Point keys that accept a high limit (catalog points with limit_events)."""
    keys: set[str] = set()
    for p in SENSOR_POINTS:
        if p.limit_events:
            if p.per_region:
                keys.update(p.key.format(n=n) for n in range(1, MAX_REGIONS + 1))
            else:
                keys.add(p.key)
    return keys


class SensorSection(_Strict):
    id: str
    name: str = Field(min_length=1, max_length=40)
    number: int = Field(ge=1, le=MAX_SENSOR_NUMBER)  # and the instance block's own bound
    model: Literal["vs121", "vs121-p"]
    dev_eui: str | None = None
    serial: str | None = None
    region_count: int = Field(MAX_REGIONS, ge=0, le=MAX_REGIONS)
    report_interval: int = Field(600, ge=5, le=86400)
    stale_after: int | None = Field(None, ge=10, le=7 * 86400)
    exclude_points: list[str] = []
    points: dict[str, PointOverride] = {}

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("use 1-64 letters, digits, '_', '.', '-'")
        return v

    @field_validator("dev_eui")
    @classmethod
    def _eui(cls, v: str | None) -> str | None:
        if v is None:
            return None
        norm = re.sub(r"[^0-9A-Fa-f]", "", v).lower()
        if not _EUI.match(norm):
            raise ValueError("a DevEUI is 16 hex digits, e.g. 24e124538c123456")
        return norm

    @model_validator(mode="after")
    def _identity(self) -> Self:
        if self.model == "vs121" and self.dev_eui is None:
            raise ValueError(f"sensor {self.id!r}: a vs121 (LoRaWAN) sensor needs dev_eui")
        if self.model == "vs121-p" and self.serial is None:
            raise ValueError(f"sensor {self.id!r}: a vs121-p sensor needs serial (its device_sn)")
        for key, o in self.points.items():
            if o.high_limit is not None and key not in _limit_keys():
                raise ValueError(
                    f"sensor {self.id!r}: points.{key}.high_limit: a high limit is allowed on "
                    "people_count_all and region_<n>_count only"
                )
        if self.stale_after is not None and self.stale_after <= self.report_interval:
            raise ValueError(
                f"sensor {self.id!r}: stale_after {self.stale_after} must be longer than "
                f"report_interval {self.report_interval}, or the sensor flips stale every period"
            )
        return self

    @property
    def stale_seconds(self) -> int:
        """Stale after this long without a report: configured, or 2.5 report intervals."""
        return self.stale_after if self.stale_after is not None else int(self.report_interval * 2.5)

    def spec(self) -> SensorSpec:
        overrides = self.points
        return SensorSpec(
            id=self.id,
            name=self.name,
            number=self.number,
            model=Model(self.model),
            region_count=self.region_count,
            exclude=frozenset(self.exclude_points),
            names={k: o.name for k, o in overrides.items() if o.name is not None},
            cov_increments={
                k: o.cov_increment for k, o in overrides.items() if o.cov_increment is not None
            },
            instances={k: o.instance for k, o in overrides.items() if o.instance is not None},
            high_limits={
                k: (o.high_limit, o.deadband)
                for k, o in overrides.items()
                if o.high_limit is not None
            },
        )


class NoOutput(_Strict):
    """Alarm state only: the rule's points change, nothing is switched."""

    type: Literal["none"] = "none"


class GpioOutput(_Strict):
    """A Linux GPIO line through libgpiod (the optional `gpiod` package: install the `gpio`
    extra). The line is requested once as an output and held while the gateway runs."""

    type: Literal["gpio"]
    chip: str = Field("/dev/gpiochip0", min_length=1)
    line: int = Field(ge=0, le=65535)  # offset on the chip
    # The line is "active" while the relay coil is energised; active_low inverts the level.
    active_low: bool = False


class ModbusCoilOutput(_Strict):
    """A coil of an external Modbus relay module; the gateway is the Modbus master, on its own
    serial port (transport "rtu") or over TCP."""

    type: Literal["modbus"]
    transport: Literal["rtu", "tcp"] = "rtu"
    # rtu
    port: str = Field("/dev/ttyUSB1", min_length=1)
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    # tcp
    host: str = Field("127.0.0.1", min_length=1)
    tcp_port: int = Field(502, ge=1, le=65535)
    # both
    unit_id: int = Field(1, ge=0, le=255)
    coil: int = Field(0, ge=0, le=65535)
    timeout: float = Field(0.5, gt=0, le=10)  # seconds to wait for each response
    retries: int = Field(2, ge=0, le=10)  # further attempts right after a failed one
    retry_seconds: float = Field(5.0, ge=0.1, le=3600)  # then wait this long and try again
    # Write the state again this often, so a module that lost power gets it back; 0 = never.
    reassert_seconds: float = Field(60.0, ge=0, le=86400)

    def bus(self) -> tuple[str, ...]:
        """What identifies the line the module is on (rules sharing it share one master)."""
        if self.transport == "tcp":
            return ("tcp", self.host, str(self.tcp_port))
        return ("rtu", self.port)


OutputSection = Annotated[NoOutput | GpioOutput | ModbusCoilOutput, Field(discriminator="type")]


class AlarmSection(_Strict):
    """An overcrowding alarm rule, as the VS121-P's DO output does it, for any sensor.

    The alarm comes on when the count goes above `threshold` and goes off when it has fallen to
    `threshold - hysteresis` or below; once changed it stays at least `min_on_seconds` on or
    `min_off_seconds` off. The output (see `contact_in_alarm`) follows the relay point, which an
    operator may override from BACnet or Modbus.
    """

    id: str
    name: str = Field(min_length=1, max_length=40)
    number: int = Field(ge=1, le=MAX_RULES)  # places its points: see objects.catalog
    # One sensor, or several covering one space: "total" adds their counts, "any_region"
    # takes the fullest region of any of them.
    sensors: list[str] = Field(min_length=1, max_length=64)
    trigger: Literal["total", "any_region"] = "total"
    threshold: float = Field(ge=0, le=65535)
    hysteresis: float = Field(0, ge=0, le=65535)
    min_on_seconds: float = Field(0, ge=0, le=86400)
    min_off_seconds: float = Field(0, ge=0, le=86400)
    # The contact while overcrowded. "open" is the VS121-P's behaviour (DO and COM break on
    # alarm). The output is energised (GPIO active, coil ON) exactly while the contact should be
    # closed, i.e. the relay's normally-open contact is assumed to be the one wired.
    contact_in_alarm: Literal["open", "closed"] = "open"
    # While any of its sensors is stale (or has never reported): alarm on, off, or as it was.
    on_stale: Literal["alarm", "clear", "hold"] = "hold"
    # The contact the gateway leaves when it stops; "hold" leaves the output as it is.
    on_shutdown: Literal["open", "closed", "hold"] = "open"
    output: OutputSection = NoOutput()

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("use 1-64 letters, digits, '_', '.', '-'")
        return v

    def problems(self, where: str) -> list[str]:
        """What is wrong with the rule on its own; checked with the rest of the configuration
        (Settings._alarm_problems) so that every problem is reported at once."""
        problems = []
        if len(set(self.sensors)) != len(self.sensors):
            problems.append(f"{where}.sensors: a sensor is listed twice")
        if self.hysteresis > self.threshold:
            problems.append(
                f"{where}.hysteresis = {self.hysteresis:g}: larger than the threshold "
                f"{self.threshold:g}, so the alarm could never clear (allowed: 0..threshold)"
            )
        return problems

    def spec(self) -> RuleSpec:
        return RuleSpec(id=self.id, name=self.name, number=self.number)


class Settings(BaseSettings):
    """The whole configuration. Environment variables override the file, e.g.
    ``VS121GW_BACNET__PORT=47809``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    gateway: GatewaySection = GatewaySection()
    bacnet: BacnetSection = BacnetSection()
    modbus: ModbusSection = ModbusSection()
    http: HttpSection = HttpSection()
    mqtt: MqttSection = MqttSection()
    simulate: SimulateSection = SimulateSection()
    downlinks: DownlinkSection = DownlinkSection()
    daily: DailySection = DailySection()
    sensors: Annotated[list[SensorSection], Field(max_length=MAX_SENSOR_NUMBER)] = []
    alarms: Annotated[list[AlarmSection], Field(max_length=MAX_RULES)] = []

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file (passed as init kwargs).
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        problems: list[str] = []
        for attr in ("id", "number", "dev_eui", "serial"):
            seen: dict[object, int] = {}
            for i, s in enumerate(self.sensors):
                value = getattr(s, attr)
                if value is None:
                    continue
                if value in seen:
                    problems.append(
                        f"sensors[{i}].{attr}: {value!r} is already used by sensors[{seen[value]}]"
                    )
                seen.setdefault(value, i)
        problems.extend(self._alarm_problems())
        problems.extend(self._instance_problems())
        if not problems:
            m = self.modbus
            unit_problems = self._modbus_unit_problems()
            check_addresses = (
                m.served
                and m.addressing == "blocks"
                and m.unaddressable_sensors == "error"
                and not unit_problems  # already named, one line per sensor
            )
            problems.extend(unit_problems)
            problems.extend(find_conflicts(self.points(), modbus=check_addresses))
        if problems:
            # one line each in describe_errors, and only the first few of thousands
            raise ValueError("\n".join(summarise_problems(problems)))
        return self

    def _alarm_problems(self) -> list[str]:
        problems: list[str] = []
        for attr in ("id", "number", "name"):
            seen: dict[object, int] = {}
            for i, a in enumerate(self.alarms):
                value = getattr(a, attr)
                if value in seen:
                    problems.append(
                        f"alarms[{i}].{attr}: {value!r} is already used by alarms[{seen[value]}]"
                    )
                seen.setdefault(value, i)
        known = {s.id for s in self.sensors}
        outputs: dict[tuple[object, ...], int] = {}
        serial: dict[str, tuple[int, ModbusCoilOutput]] = {}
        for i, a in enumerate(self.alarms):
            problems.extend(a.problems(f"alarms[{i}]"))
            for sid in a.sensors:
                if sid not in known:
                    problems.append(f"alarms[{i}].sensors: {sid!r} is not a configured sensor")
            out = a.output
            key: tuple[object, ...] | None = None
            if isinstance(out, GpioOutput):
                key = ("gpio", out.chip, out.line)
            elif isinstance(out, ModbusCoilOutput):
                key = (*out.bus(), out.unit_id, out.coil)
                if out.transport == "rtu":
                    if self.modbus.rtu.enabled and out.port == self.modbus.rtu.port:
                        problems.append(
                            f"alarms[{i}].output.port: {out.port!r} is the gateway's own Modbus "
                            "RTU slave port; a relay module needs a port of its own"
                        )
                    first = serial.setdefault(out.port, (i, out))
                    line = ("baudrate", "parity", "bytesize", "stopbits")
                    if any(getattr(out, f) != getattr(first[1], f) for f in line):
                        problems.append(
                            f"alarms[{i}].output: port {out.port!r} is used by alarms[{first[0]}] "
                            "with other serial settings"
                        )
            if key is not None:
                if key in outputs:
                    problems.append(
                        f"alarms[{i}].output: the same output as alarms[{outputs[key]}]"
                    )
                outputs.setdefault(key, i)
        return problems

    def _instance_problems(self) -> list[str]:
        """Sensor numbers whose instance block would pass the top of the instance range (or
        reach the alarm rules' instances) with the configured bacnet.instance_block."""
        block = self.bacnet.instance_block
        top = max_sensor_number(block)
        widest = min(block_choices())
        hint = ""
        if max_sensor_number(widest) > top:
            hint = f", or set bacnet.instance_block = {widest} (up to {max_sensor_number(widest)})"
        return [
            f"sensors[{i}].number: {s.number} is above {top}, the highest sensor number "
            f"bacnet.instance_block = {block} allows; allowed: 1..{top}{hint}"
            for i, s in enumerate(self.sensors)
            if s.number > top
        ]

    def _modbus_unit_problems(self) -> list[str]:
        """unit_per_sensor addressing: unit ids are sensor numbers, so they must fit and not
        collide with the gateway's own unit id."""
        m = self.modbus
        if m.served and m.addressing == "blocks" and m.unaddressable_sensors == "error":
            return self._beyond_blocks()
        if m.addressing == "unit_blocks":
            # Unit ids follow from the sensor numbers: a unit id set here would be silently
            # ignored, and a PLC programmed after it would read the wrong device.
            return [
                f"modbus.{key} = {value}: not used with modbus.addressing = "
                f'"unit_blocks", where the gateway\'s block is on unit 1 and sensor n on unit '
                "1 + n // 100; remove it"
                for key, value, given in (
                    ("gateway_unit_id", m.gateway_unit_id, "gateway_unit_id" in m.model_fields_set),
                    ("rtu.unit_id", m.rtu.unit_id, "unit_id" in m.rtu.model_fields_set),
                )
                if given
            ]
        if not m.served or m.addressing != "unit_per_sensor":
            return []
        problems: list[str] = []
        for i, s in enumerate(self.sensors):
            if s.number == m.gateway_unit_id:
                problems.append(
                    f"sensors[{i}].number: {s.number} is modbus.gateway_unit_id, the gateway's "
                    "own unit id; choose another gateway_unit_id (1..247)"
                )
            elif s.number > 247 and m.unaddressable_sensors == "error":
                problems.append(
                    f"sensors[{i}].number: {s.number} has no Modbus unit id (1..247) with "
                    'modbus.addressing = "unit_per_sensor"; renumber it, or set '
                    'modbus.unaddressable_sensors = "bacnet_only"'
                )
        return problems

    def _beyond_blocks(self) -> list[str]:
        """blocks addressing: sensors whose block does not fit in the 65536 addresses."""
        from gateway.modbus.units import (  # noqa: PLC0415  (the Modbus package imports this one)
            MAX_BLOCK_SENSOR,
            MAX_UNIT_BLOCKS_SENSOR,
        )

        return [
            f"sensors[{i}].number: {s.number} has no Modbus address with modbus.addressing = "
            f'"blocks": its block would reach beyond 65535 (sensor numbers 1..{MAX_BLOCK_SENSOR} '
            "fit); set "
            f'modbus.addressing = "unit_blocks" (1..{MAX_UNIT_BLOCKS_SENSOR}, 100 sensors per '
            'unit id), renumber it, or set modbus.unaddressable_sensors = "bacnet_only"'
            for i, s in enumerate(self.sensors)
            if s.number > MAX_BLOCK_SENSOR
        ]

    def sensor_specs(self) -> list[SensorSpec]:
        return [s.spec() for s in self.sensors]

    def rule_specs(self) -> list[RuleSpec]:
        return [a.spec() for a in self.alarms]

    def points(self) -> list[ResolvedPoint]:
        """Every point served: the gateway's, the alarm rules' and the sensors'."""
        # Resolved once per configuration (validation and start-up both need them; at site
        # scale that is 200,000 points and seconds of work). Settings are frozen.
        cached = _RESOLVED.get(id(self))
        if cached is None or cached[0] is not self:
            cached = (
                self,
                resolve(
                    self.sensor_specs(),
                    rules=self.rule_specs(),
                    bacnet_block=self.bacnet.instance_block,
                ),
            )
            _RESOLVED.clear()
            _RESOLVED[id(self)] = cached
        return list(cached[1])


_RESOLVED: dict[int, tuple[Settings, list[ResolvedPoint]]] = {}


MAX_PROBLEMS_SHOWN = 10


def summarise_problems(problems: list[str]) -> list[str]:
    """The first few problems and a count: a site-sized config can have thousands."""
    rest = len(problems) - MAX_PROBLEMS_SHOWN
    return problems if rest <= 0 else [*problems[:MAX_PROBLEMS_SHOWN], f"... and {rest} more"]


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per problem: the key, the bad value and what is allowed."""
    lines = []
    for err in exc.errors():
        key = _key(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (not a setting; check the spelling)")
            continue
        value = err.get("input")
        shown = "(hidden)" if _secret_key(key) else _short(_redact(value))
        if key == "(top level)":
            lines.extend(msg.splitlines())
        else:
            lines.append(f"{key} = {shown}: {msg}")
    return lines


_SECRET_WORDS = ("password", "secret", "token")


def _secret_key(key: str) -> bool:
    last = key.rsplit(".", 1)[-1].lower()
    return any(word in last for word in _SECRET_WORDS) and not last.endswith("_file")


def _redact(value: Any) -> Any:
    """Error messages quote the offending input: never with a secret in it."""
    if isinstance(value, dict):
        return {
            k: "(hidden)" if isinstance(k, str) and _secret_key(k) else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _key(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_settings(path: Path | None = None) -> Settings:
    """Load and validate; raises ConfigError whose message lists every problem, one per line."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Settings(**data)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        lines = describe_errors(exc) + _cross_problems_despite(exc, data)
        raise ConfigError("\n".join(where + line for line in lines)) from None


def _cross_problems_despite(exc: ValidationError, data: dict[str, Any]) -> list[str]:
    """The checks across sections (alarms against sensors, duplicate numbers, ...) run only
    once every section is valid. So that one run reports every problem, run them again with
    the broken sections (other than the sensor and alarm lists, which they are about) left at
    their defaults, and add what they find."""
    broken = {err["loc"][0] for err in exc.errors() if err["loc"]}
    if not broken or broken & {"sensors", "alarms"} or not broken <= set(data):
        return []
    try:
        Settings(**{k: v for k, v in data.items() if k not in broken})
    except ValidationError as again:
        return [line for line in describe_errors(again) if line not in describe_errors(exc)]
    return []


DEFAULT_CONFIG_NAME = "default.toml"


def default_config_text() -> str:
    """The embedded default configuration (the loopback demo)."""
    from importlib.resources import files  # noqa: PLC0415

    return files("gateway").joinpath(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")


def load_default() -> Settings:
    try:
        return Settings(**tomllib.loads(default_config_text()))
    except ValidationError as exc:
        raise ConfigError("\n".join(describe_errors(exc))) from None
