"""`BacnetServer`: the gateway's BACnet/IP device, fed by `GatewayState` changes.

Start it inside the running loop (bacpypes3 needs one to build its sockets); it creates one
object per catalog point, follows the state's changes (values, and freshness as Reliability), and
answers BMS workstations. See application.py for the services, cov.py for subscriptions and
foreign.py for BBMD registration.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bacpypes3.basetypes import Reliability
from bacpypes3.errors import ExecutionError, ObjectError, PropertyError
from bacpypes3.pdu import IPv4Address

from gateway.access import AllowList
from gateway.bacnet.application import GatewayApplication, ReinitHandler
from gateway.bacnet.cov import CovManager
from gateway.bacnet.device import (
    build_device,
    build_network_port,
    database_revision,
    object_set_digest,
)
from gateway.bacnet.events import EventManager, reports_events
from gateway.bacnet.fastlink import FastNormalLinkLayer, SocketReads
from gateway.bacnet.foreign import SupervisedForeignLink
from gateway.bacnet.notification import NotificationClass, build_notification_class
from gateway.bacnet.objects import PROFILES, PointObject, build_objects
from gateway.bacnet.restart import take_restart_reason
from gateway.bacnet.writes import (
    ValidWrite,
    WriteAction,
    command_actions,
    commit_write,
    effective_value,
    unwritable_points,
)
from gateway.commands import Commands
from gateway.errors import GatewayError
from gateway.settings import BacnetSection
from gateway.state import Change, GatewayState
from objects.pointmap import ResolvedPoint, decode_priority_array, priority_array_owner

log = logging.getLogger("gateway.bacnet")
# Longest text a text object serves: facts are short (a 12-digit serial, "31.7.0.75"), and a
# network server's decoder could send anything; this keeps a read reply in one unsegmented APDU.
MAX_TEXT = 64

COV_FILE = "bacnet_cov.json"
EVENTS_FILE = "bacnet_events.json"
WHO_IS_TIMEOUT_S = 3.0  # finding a notification recipient given by device instance
BIND_TIMEOUT_S = 10.0


class BacnetError(GatewayError):
    """The BACnet server cannot start (port taken, duplicate objects, bad address)."""


class BacnetServer:
    """The gateway's BACnet/IP device. `await start()` in the daemon's loop, `await stop()`."""

    def __init__(
        self,
        cfg: BacnetSection,
        points: Sequence[ResolvedPoint],
        state: GatewayState,
        commands: Commands,
        *,
        state_dir: Path,
        version: str,
        actions: Mapping[str, WriteAction] | None = None,
        on_fd_change: Callable[[bool], None] | None = None,
        on_reinitialize: ReinitHandler | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_refused = on_refused
        self._points = list(points)
        self._state = state
        self._actions = dict(command_actions(commands) if actions is None else actions)
        self._state_dir = state_dir
        self._version = version
        self._on_fd_change = on_fd_change
        self._on_reinitialize = on_reinitialize
        self._objects: dict[Any, PointObject] = {}
        self._by_sensor: dict[str, dict[str, PointObject]] = {}
        # Objects that show another point's value (catalog value_of): sensor -> state key.
        self._mirrors: dict[str, dict[str, list[PointObject]]] = {}
        self._app: GatewayApplication | None = None
        self._cov: CovManager | None = None
        self._events: EventManager | None = None
        self._link: Any = None
        self._network_port: Any = None
        self._object_list: list[Any] = []
        self._running = False
        self._subscribed = False
        self.database_revision = 0
        self.started_in = 0.0  # seconds start() took

    # -- public state ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """host:port the device listens on."""
        return f"{self.cfg.address.split('/')[0]}:{self.cfg.port}"

    @property
    def device_instance(self) -> int:
        return self.cfg.device_instance

    @property
    def fd_registered(self) -> bool | None:
        """Foreign-device registration state; None when no BBMD is configured."""
        if not isinstance(self._link, SupervisedForeignLink):
            return None
        return bool(self._link.registered)

    @property
    def cov_subscriptions(self) -> int:
        return len(self._cov) if self._cov is not None else 0

    @property
    def notifications_sent(self) -> int:
        return self._cov.sent if self._cov is not None else 0

    @property
    def notifications_failed(self) -> int:
        return self._cov.failed if self._cov is not None else 0

    @property
    def communication(self) -> str:
        """Device communication control state: enable, disable or disableInitiation."""
        return self._app.communication if self._app is not None else "enable"

    @property
    def fast_reads(self) -> bool:
        """Whether common reads are answered from pre-encoded bytes (see fastread.py)."""
        return self._app is not None and self._app.fast_reads

    def set_fast_reads(self, enabled: bool) -> None:
        """Off: every read through bacpypes3's generic path, to compare the two."""
        if self._app is None:
            return
        if enabled:
            self._app.serve_fast(self._object_list)
        else:
            self._app.disable_fast_reads()

    @property
    def socket_reads(self) -> int:
        """Reads answered at the socket, below bacpypes3's stack (see fastlink.py)."""
        link = self._link
        return link.reads_served if isinstance(link, SocketReads) else 0

    def object_for(self, sensor_id: str, key: str) -> PointObject | None:
        return self._by_sensor.get(sensor_id, {}).get(key)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        started = time.perf_counter()
        cfg = self.cfg
        ip = cfg.address.split("/")[0]
        _check_port_free(ip, cfg.port)
        objects = build_objects(self._points)
        port_name = f"{cfg.device_name} BACnet/IP port"
        alarms_name = f"{cfg.device_name} Alarms"
        reporting = any(reports_events(o) for o in objects)
        _check_unique(objects, reserved={cfg.device_name, port_name, alarms_name})
        self._objects = {o.identifier: o for o in objects}
        for o in objects:
            self._by_sensor.setdefault(o.point.sensor_id, {})[o.point.key] = o
            if o.point.point.value_of is not None:
                mirrors = self._mirrors.setdefault(o.point.sensor_id, {})
                mirrors.setdefault(o.point.point.value_of, []).append(o)

        identities = [("device", cfg.device_instance, cfg.device_name)]
        identities += [("network-port", 1, port_name)]
        if reporting:
            identities += [("notification-class", cfg.notification.instance, alarms_name)]
        identities += [(o.profile.bacnet_type, o.point.instance, o.name) for o in objects]
        self.database_revision = await asyncio.to_thread(
            database_revision, self._state_dir, object_set_digest(identities)
        )

        restart_reason = await asyncio.to_thread(take_restart_reason, self._state_dir)
        address = IPv4Address(f"{cfg.address}:{cfg.port}")
        # Broadcasts go to (and are heard on) the configured address, not just the subnet's.
        address.addrBroadcastTuple = (cfg.broadcast, cfg.port)
        types = sorted({PROFILES[p.object_type].bacnet_type for p in self._points})
        if reporting:
            types.append("notification-class")
        device = build_device(
            instance=cfg.device_instance,
            name=cfg.device_name,
            description=cfg.description,
            location=cfg.location,
            vendor_id=cfg.vendor_id,
            vendor_name=cfg.vendor_name,
            version=self._version,
            database_revision=self.database_revision,
            object_types=[_camel(t) for t in types],
            active_cov=self._active_cov,
            last_restart_reason=restart_reason,
        )
        bbmd = None if cfg.bbmd is None else (cfg.bbmd.address, cfg.bbmd.port, cfg.bbmd.ttl)
        self._network_port = build_network_port(address, name=port_name, bbmd=bbmd)

        app = GatewayApplication.build(device)
        self._cov = CovManager(
            app.request,
            device.objectIdentifier,
            self._objects.get,
            self._state_dir / COV_FILE,
        )
        extra_objects: list[Any] = []
        if reporting:
            routing = NotificationClass(cfg.notification)
            self._events = EventManager(
                app.request,
                device.objectIdentifier,
                routing,
                self._state_dir / EVENTS_FILE,
                resolve=self._find_device,
            )
            self._events.attach(objects)
            await self._restore_events()
            nc = build_notification_class(
                routing, name=alarms_name, on_write=self._events.recipients_written
            )
            app.add_object(nc)
            extra_objects.append(nc.objectIdentifier)
        app.serve(
            self._objects,
            self._cov,
            self._write,
            password=None if cfg.password is None else cfg.password.get_secret_value(),
            on_reinitialize=self._on_reinitialize,
            events=self._events,
        )
        if cfg.allow_writes_from:
            app.access = AllowList(
                cfg.allow_writes_from, what="BACnet writes", on_refused=self._on_refused
            )
        if bbmd is None:
            self._link = FastNormalLinkLayer(address)
        else:
            self._link = SupervisedForeignLink(
                address,
                IPv4Address(f"{bbmd[0]}:{bbmd[1]}"),
                bbmd[2],
                on_change=self._fd_changed,
            )
        app.add_network_port(self._network_port, self._link, address)
        self._link.answer_reads(app.asap)  # plain reads answered at the socket
        self._app = app
        self._object_list = [
            device.objectIdentifier,
            self._network_port.objectIdentifier,
            *extra_objects,
            *(o.identifier for o in objects),
        ]
        device.set_object_list(self._object_list)
        app.serve_fast(self._object_list)

        self._seed()
        self._running = True
        if not self._subscribed:  # GatewayState has no unsubscribe: subscribe once per server
            self._state.subscribe(self._on_change)
            self._subscribed = True
        await _bound(self._link)
        await self._restore_subscriptions()
        if self._events is not None:
            self._events.evaluate_all()  # what changed while the gateway was down
        unwritable = unwritable_points(self._objects_by_key(), self._actions)
        if unwritable:
            log.warning("BACnet: writable points without a command refuse writes: %s", unwritable)
        if isinstance(self._link, SupervisedForeignLink):
            self._link.start()
        app.i_am()
        self.started_in = time.perf_counter() - started
        log.info(
            "BACnet: device %d %r on %s:%d, %d objects, database revision %d, started in %.2f s",
            cfg.device_instance,
            cfg.device_name,
            ip,
            cfg.port,
            len(objects) + 2 + len(extra_objects),
            self.database_revision,
            self.started_in,
        )

    async def stop(self) -> None:
        self._running = False
        if self._cov is not None:
            await self._cov.flush()
            self._cov.close()
        if self._events is not None:
            await self._events.close()
        if self._app is not None:
            self._app.close()  # closes the link layers, and so the sockets
            self._app = None
            await _released(self.cfg.address.split("/")[0], self.cfg.port)
        log.info("BACnet: stopped")

    # -- state -> objects -----------------------------------------------------------------------

    def set_texts(self, sensor_id: str, texts: Mapping[str, str]) -> None:
        """Text present values (device facts, kept by the command service, not the state):
        point key -> text. Keys without a text object are ignored."""
        objs = self._by_sensor.get(sensor_id, {})
        for key, given in texts.items():
            obj = objs.get(key)
            if obj is None or not obj.profile.text:
                continue
            text = given[:MAX_TEXT]
            if obj.has_value and obj.text == text:
                continue
            if len(given) > MAX_TEXT:  # logged once per change, not per uplink
                log.warning(
                    "BACnet: %s of sensor %s is longer than %d characters; cut",
                    key,
                    sensor_id,
                    MAX_TEXT,
                )
            obj.text = text
            obj.has_value = True
            if self._cov is not None:
                self._cov.changed(obj)  # Status_Flags may have changed (out of service ends)

    def _seed(self) -> None:
        """Initial values: whatever the state holds (restored or live) at start-up."""
        for sensor_id, objs in self._by_sensor.items():
            if sensor_id == "":
                values: Mapping[str, float] = self._state.gateway_values
                online = True
            elif sensor_id in self._state.sensors:
                values = self._state.current(sensor_id)
                online = self._state.sensors[sensor_id].online
            else:
                values, online = {}, False
            known = self._state.sensors.get(sensor_id)
            hidden = known.not_reported if known is not None else set()
            for obj in objs.values():
                obj.link_down = not online
                obj.not_reported = obj.point.key in hidden
            _load(objs, values)
            _load_mirrors(self._mirrors.get(sensor_id, {}), values)

    def _on_change(self, change: Change) -> None:
        if not self._running:
            return
        # Called inside the state's apply(): a failure here must not stop ingestion (or the
        # other sinks), so it is logged and the change dropped for BACnet only.
        try:
            self._apply_change(change)
        except Exception:
            log.exception("BACnet: change for sensor %r not applied", change.sensor_id)

    def _apply_change(self, change: Change) -> None:
        objs = self._by_sensor.get(change.sensor_id)
        if objs is None:
            return
        cov = self._cov
        assert cov is not None
        touched = _load(objs, change.values)
        touched += _load_mirrors(self._mirrors.get(change.sensor_id, {}), change.values)
        if change.not_reported is not None:
            for obj in objs.values():
                hidden = obj.point.key in change.not_reported
                if obj.not_reported != hidden:
                    obj.not_reported = hidden
                    touched.append(obj)  # Status_Flags changed: COV subscribers are told
        if change.online is not None:
            link_down = not change.online
            for obj in objs.values():
                if obj.link_down != link_down:
                    obj.link_down = link_down
                    # Reliability changes Status_Flags; bacpypes3 would not notify that.
                    if obj.needs_fresh_link:
                        touched.append(obj)
        for obj in touched:
            cov.changed(obj)
            if self._events is not None and obj.events is not None:
                self._events.changed(obj)

    # -- writes ---------------------------------------------------------------------------------

    async def _write(self, obj: PointObject, write: ValidWrite) -> None:
        action = self._actions.get(obj.point.point.key)
        if action is None:
            raise PropertyError("writeAccessDenied")
        try:
            if action.command is not None and write.priority is not None:
                await action.command(obj.point, write.priority, write.value)
            else:
                await action.run(obj.point, effective_value(obj, write))
        except ExecutionError:
            raise
        except KeyError:
            raise ObjectError("unknownObject") from None
        except Exception:
            log.exception("BACnet: write to %s failed", obj.name)
            raise ExecutionError("device", "operationalProblem") from None
        commit_write(obj, write, momentary=action.momentary)
        assert self._cov is not None
        self._cov.notify_all(obj)

    # -- helpers --------------------------------------------------------------------------------

    def _objects_by_key(self) -> dict[tuple[str, str], PointObject]:
        return {o.key: o for o in self._objects.values()}

    def _active_cov(self) -> list[Any]:
        return self._cov.active_subscriptions() if self._cov is not None else []

    def _fd_changed(self, registered: bool) -> None:
        port = self._network_port
        if port is not None:
            port.reliability = (
                Reliability.noFaultDetected
                if registered
                else Reliability.renewFDRegistrationFailure
            )
        if registered and self._app is not None:
            self._app.i_am()  # make ourselves known on the BBMD's network
        if self._on_fd_change is not None:
            self._on_fd_change(registered)

    @property
    def events(self) -> EventManager | None:
        """Intrinsic reporting (None when no point reports events)."""
        return self._events

    async def _find_device(self, instance: int) -> Any:
        """The address of a notification recipient given by device instance (Who-Is)."""
        if self._app is None:
            return None
        i_ams = await self._app.who_is(instance, instance, timeout=WHO_IS_TIMEOUT_S)
        return i_ams[0].pduSource if i_ams else None

    async def _restore_events(self) -> None:
        assert self._events is not None
        path = self._state_dir / EVENTS_FILE
        raw = await _read_saved(path, "events")
        if raw is None:
            return
        try:
            restored = self._events.restore(raw)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("BACnet events: %s is damaged (%s); event states start normal", path, exc)
            return
        log.info("BACnet events: restored the event state of %d objects", restored)

    async def _restore_subscriptions(self) -> None:
        assert self._cov is not None
        path = self._state_dir / COV_FILE
        raw = await _read_saved(path, "COV")
        if raw is None:
            return
        try:
            resumed = self._cov.restore(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("BACnet COV: %s is damaged (%s); subscriptions not resumed", path, exc)
            return
        if resumed:
            log.info("BACnet COV: resumed %d subscriptions from %s", resumed, path)


async def _read_saved(path: Path, what: str) -> bytes | None:
    """A saved state file's bytes; None when there is none yet or it cannot be read (logged)."""
    try:
        return await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("BACnet %s: cannot read %s: %s", what, path, exc)
        return None


def _load(objs: Mapping[str, PointObject], values: Mapping[str, float]) -> list[PointObject]:
    """Store state values in the objects; returns the objects touched.

    A commandable object's present value follows its priority array, which the state carries
    under `priority_array_key(key)` (the gateway's command logic owns it); its plain value is
    what Modbus shows and is not taken as its Relinquish_Default (that stays inactive).
    """
    touched: list[PointObject] = []
    for key, value in values.items():
        obj = objs.get(key)
        if obj is None:
            owner = priority_array_owner(key)
            obj = None if owner is None else objs.get(owner)
            if obj is not None and obj.priorities is not None:
                obj.priorities[:] = [
                    None if slot is None else float(slot) for slot in decode_priority_array(value)
                ]
                obj.has_value = True
                touched.append(obj)
            continue
        if obj.priorities is not None:
            continue
        obj.value = float(value)
        obj.has_value = True
        touched.append(obj)
    return touched


def _load_mirrors(
    mirrors: Mapping[str, list[PointObject]], values: Mapping[str, float]
) -> list[PointObject]:
    """Store values in the objects that show another point's value."""
    touched: list[PointObject] = []
    for key, value in values.items():
        for obj in mirrors.get(key, ()):
            obj.value = float(value)
            obj.has_value = True
            touched.append(obj)
    return touched


def _camel(hyphenated: str) -> str:
    head, *rest = hyphenated.split("-")
    return head + "".join(w.capitalize() for w in rest)


def _check_port_free(ip: str, port: int) -> None:
    """bacpypes3 binds with SO_REUSEPORT, so a second server on a taken port would start
    silently and share (steal) its traffic. A plain bind fails instead when anything holds it."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((ip, port))
    except OSError as exc:
        raise BacnetError(f"BACnet: cannot use UDP {ip}:{port}: {exc.strerror}") from None
    finally:
        probe.close()


def _check_unique(objects: Sequence[PointObject], *, reserved: set[str]) -> None:
    seen_ids: set[Any] = set()
    seen_names = set(reserved)
    problems = []
    for o in objects:
        if o.identifier in seen_ids:
            problems.append(f"object {o.identifier} appears twice")
        if o.name in seen_names:
            problems.append(f"object name {o.name!r} is used twice")
        seen_ids.add(o.identifier)
        seen_names.add(o.name)
    if problems:
        raise BacnetError("BACnet: " + "; ".join(problems))


async def _released(ip: str, port: int) -> None:
    """Wait until the closed sockets are gone (asyncio closes them on a later loop turn), so a
    restart in the same process can bind the port again."""
    deadline = asyncio.get_running_loop().time() + BIND_TIMEOUT_S
    while True:
        try:
            _check_port_free(ip, port)
            return
        except BacnetError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.001)  # poll interval: closing takes a loop turn or two


async def _bound(link: Any) -> None:
    """Wait until the link layer's sockets are bound (bacpypes3 binds in background tasks and
    retries forever on errors; a deadline turns that into a start-up failure)."""
    server = link.server
    tasks = list(getattr(server, "_transport_tasks", ()))  # bacpypes3 0.0.110 internals
    if not tasks:
        return
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), BIND_TIMEOUT_S)
    except TimeoutError:
        raise BacnetError(
            f"BACnet: could not bind {server.local_address} (or the broadcast address "
            f"{server.broadcast_address}) within {BIND_TIMEOUT_S:.0f} s"
        ) from None
