"""The Device object, the Network Port object and the Database_Revision bookkeeping."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bacpypes3.basetypes import (
    COVSubscription,
    DeviceStatus,
    HostNPort,
    IPMode,
    ObjectTypesSupported,
    PropertyIdentifier,
    RestartReason,
    Segmentation,
    ServicesSupported,
)
from bacpypes3.constructeddata import ArrayOf, ListOf
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.primitivedata import Boolean, Integer, ObjectIdentifier

from gateway.store import atomic_write

log = logging.getLogger("gateway.bacnet")

MODEL_NAME = "VS121 Gateway"
PROTOCOL_REVISION = 22
MAX_APDU = 1476  # the largest APDU BACnet/IP carries
MAX_SEGMENTS = 64
DATABASE_FILE = "bacnet_database.json"

# What the device executes (Protocol_Services_Supported); the handlers live in application.py.
SERVICES_EXECUTED = (
    "readProperty",
    "readPropertyMultiple",
    "writeProperty",
    "subscribeCOV",
    "subscribeCOVProperty",
    "acknowledgeAlarm",
    "getEventInformation",
    "getAlarmSummary",
    "deviceCommunicationControl",
    "reinitializeDevice",
    "timeSynchronization",
    "utcTimeSynchronization",
    "whoHas",
    "whoIs",
)

_ArrayOfObjectIdentifier = ArrayOf(ObjectIdentifier)
_ArrayOfPropertyIdentifier = ArrayOf(PropertyIdentifier)
# Every object has these; Property_List leaves them out (ASHRAE 135 clause 12.1.1.4.1).
IDENTITY_PROPERTIES = frozenset({"objectIdentifier", "objectName", "objectType", "propertyList"})


def property_list(obj: Any) -> Any:
    """Property_List of a stock bacpypes3 object: what it holds, less the identity four (the
    stock getter lists every element with a value, those four included)."""
    names = [
        name
        for name in obj._elements
        if name not in IDENTITY_PROPERTIES and inspect.getattr_static(obj, name, None) is not None
    ]
    return _ArrayOfPropertyIdentifier([PropertyIdentifier(n) for n in names])


_ListOfCOVSubscription = ListOf(COVSubscription)


def services_supported() -> Any:
    bits = ServicesSupported([])
    for name in SERVICES_EXECUTED:
        bits[getattr(ServicesSupported, name)] = 1
    return bits


def object_types_supported(types: Sequence[str]) -> Any:
    bits = ObjectTypesSupported([])
    for name in ("device", "networkPort", *types):
        bits[getattr(ObjectTypesSupported, name)] = 1
    return bits


class GatewayDevice(DeviceObject):  # type: ignore[misc]  # bacpypes3 has no type hints
    """The stock local device object, with the lists that depend on the whole gateway computed
    by the server: the object list is built once (it can hold 100,000 identifiers and is read
    element by element), the active COV subscriptions on demand."""

    _object_list: Any = None
    _active_cov: Callable[[], list[Any]] | None = None
    _types: Sequence[str] = ()

    @property
    def propertyList(self) -> Any:  # noqa: N802  (BACnet's name)
        return property_list(self)

    @propertyList.setter
    def propertyList(self, value: Any) -> None:  # noqa: N802
        """Ignored: computed."""

    @property
    def objectList(self) -> Any:  # noqa: N802  (BACnet's name)
        return self._object_list

    @objectList.setter
    def objectList(self, value: Any) -> None:  # noqa: N802
        """Ignored: the list follows the configuration."""

    @property
    def activeCovSubscriptions(self) -> Any:  # noqa: N802
        return _ListOfCOVSubscription(self._active_cov() if self._active_cov else [])

    @activeCovSubscriptions.setter
    def activeCovSubscriptions(self, value: Any) -> None:  # noqa: N802
        """Ignored: the list is the live subscriptions."""

    @property
    def protocolServicesSupported(self) -> Any:  # noqa: N802
        return services_supported()

    @protocolServicesSupported.setter
    def protocolServicesSupported(self, value: Any) -> None:  # noqa: N802
        """Ignored: computed."""

    @property
    def protocolObjectTypesSupported(self) -> Any:  # noqa: N802
        return object_types_supported(self._types)

    @protocolObjectTypesSupported.setter
    def protocolObjectTypesSupported(self, value: Any) -> None:  # noqa: N802
        """Ignored: computed."""

    @property
    def utcOffset(self) -> Any:  # noqa: N802
        """Minutes local time is behind UTC (BACnet's sign), following daylight saving."""
        now = time.localtime()
        return Integer((time.altzone if now.tm_isdst > 0 else time.timezone) // 60)

    @utcOffset.setter
    def utcOffset(self, value: Any) -> None:  # noqa: N802
        """Ignored: the system time zone decides."""

    @property
    def daylightSavingsStatus(self) -> Any:  # noqa: N802
        return Boolean(time.localtime().tm_isdst > 0)

    @daylightSavingsStatus.setter
    def daylightSavingsStatus(self, value: Any) -> None:  # noqa: N802
        """Ignored: the system time zone decides."""

    def set_object_list(self, identifiers: Sequence[Any]) -> None:
        self._object_list = _ArrayOfObjectIdentifier(list(identifiers))


def build_device(
    *,
    instance: int,
    name: str,
    description: str,
    location: str,
    vendor_id: int,
    vendor_name: str,
    version: str,
    database_revision: int,
    object_types: Sequence[str],
    active_cov: Callable[[], list[Any]],
    last_restart_reason: str = "unknown",
) -> GatewayDevice:
    device = GatewayDevice(
        objectIdentifier=("device", instance),
        objectName=name,
        description=description,
        location=location,
        systemStatus=DeviceStatus.operational,
        vendorName=vendor_name,
        vendorIdentifier=vendor_id,
        modelName=MODEL_NAME,
        firmwareRevision=version,
        applicationSoftwareVersion=version,
        protocolVersion=1,
        protocolRevision=PROTOCOL_REVISION,
        maxApduLengthAccepted=MAX_APDU,
        segmentationSupported=Segmentation.segmentedBoth,
        maxSegmentsAccepted=MAX_SEGMENTS,
        apduSegmentTimeout=2000,
        apduTimeout=3000,
        numberOfApduRetries=3,
        databaseRevision=database_revision,
        deviceAddressBinding=[],
        lastRestartReason=RestartReason(last_restart_reason),
    )
    device._active_cov = active_cov
    device._types = tuple(object_types)
    return device


class GatewayNetworkPort(NetworkPortObject):  # type: ignore[misc]  # untyped
    """The stock BACnet/IP Network Port with a conforming Property_List."""

    @property
    def propertyList(self) -> Any:  # noqa: N802  (BACnet's name)
        return property_list(self)

    @propertyList.setter
    def propertyList(self, value: Any) -> None:  # noqa: N802
        """Ignored: computed."""


def build_network_port(
    address: Any,
    *,
    name: str,
    bbmd: tuple[str, int, int] | None,
) -> NetworkPortObject:
    """The BACnet/IP port; in foreign-device mode it names the BBMD and the TTL."""
    extra: dict[str, Any] = {}
    if bbmd is not None:
        host, port, ttl = bbmd
        extra = {
            "bacnetIPMode": IPMode.foreign,
            "fdBBMDAddress": HostNPort(f"{host}:{port}"),
            "fdSubscriptionLifetime": ttl,
        }
    return GatewayNetworkPort(
        address,
        objectIdentifier=("network-port", 1),
        objectName=name,
        apduLength=MAX_APDU,  # required for BACnet/IP ports (clause 12.56.9)
        **extra,
    )


def object_set_digest(identities: Sequence[tuple[str, int, str]]) -> str:
    """A digest of (type, instance, name) for every object: what Database_Revision tracks."""
    text = "\n".join(f"{t},{i},{n}" for t, i, n in sorted(identities))
    return hashlib.sha256(text.encode()).hexdigest()


def database_revision(state_dir: Path, digest: str) -> int:
    """The persisted revision, bumped when the object set differs from the last run's."""
    path = state_dir / DATABASE_FILE
    revision, known = 0, None
    try:
        doc = json.loads(path.read_bytes())
        revision, known = int(doc["revision"]), str(doc["digest"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("BACnet: %s unreadable (%s); database revision restarts", path, exc)
    if known == digest:
        return revision
    revision = (revision + 1) % (1 << 32)
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"revision": revision, "digest": digest}).encode())
    if known is not None:
        log.info("BACnet: object set changed; Database_Revision is now %d", revision)
    return revision
