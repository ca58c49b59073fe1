"""`[bacnet.notification]`: where the gateway's BACnet alarms go (its Notification Class).

```toml
[bacnet.notification]
instance = 1                       # Notification Class object instance, and its class number
priority = [64, 64, 200]           # to-offnormal, to-fault, to-normal (0 most urgent .. 255)
ack_required = ["to-offnormal", "to-fault"]

[[bacnet.notification.recipients]]
address = "192.168.1.20:47808"     # or device = 1234 (found by Who-Is)
process = 0                        # the recipient's process identifier
confirmed = true                   # ConfirmedEventNotification (else Unconfirmed)
transitions = ["to-offnormal", "to-fault", "to-normal"]
```
"""

from __future__ import annotations

import ipaddress
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Transition = Literal["to-offnormal", "to-fault", "to-normal"]
TRANSITIONS: tuple[Transition, ...] = ("to-offnormal", "to-fault", "to-normal")
MAX_RECIPIENTS = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecipientSection(_Strict):
    address: str | None = None
    device: int | None = Field(None, ge=0, le=4194302)
    process: int = Field(0, ge=0, le=4294967295)
    confirmed: bool = True
    transitions: list[Transition] = Field(default_factory=lambda: list(TRANSITIONS))

    @field_validator("address")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("give host:port, e.g. 192.168.1.20:47808")
        ipaddress.IPv4Address(host)
        return v

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.address is None) == (self.device is None):
            raise ValueError("a recipient has either address or device, not both or neither")
        return self


class NotificationSection(_Strict):
    instance: int = Field(1, ge=0, le=4194302)
    priority: list[int] = Field(default_factory=lambda: [64, 64, 200], min_length=3, max_length=3)
    ack_required: list[Transition] = Field(default_factory=lambda: list(TRANSITIONS[:2]))
    recipients: list[RecipientSection] = Field(default_factory=list, max_length=MAX_RECIPIENTS)

    @field_validator("priority")
    @classmethod
    def _priorities(cls, v: list[int]) -> list[int]:
        if any(not 0 <= p <= 255 for p in v):
            raise ValueError("priorities are 0 (most urgent) to 255")
        return v
