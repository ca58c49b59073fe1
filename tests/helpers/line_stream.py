"""A stream of periodic line-crossing uplinks for the durability tests: what was sent to each
sensor is known exactly, and which messages the broker has taken."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.sim_publish import uplink_body, uplink_topic

T0 = 1_700_000_000


def line_report(i: int, n_in: int, n_out: int) -> bytes:
    """A periodic line-crossing uplink with the sensor's own time, one per 60 s period."""
    ts = (T0 + 60 * i).to_bytes(4, "little")
    return b"\x0f\x85" + ts + b"\x05\xcc" + n_in.to_bytes(2, "little") + n_out.to_bytes(2, "little")


class LineStream:
    """ChirpStack uplinks at QoS 1 on a persistent session, each to one of `dev_euis` (chosen at
    random when there are several), each the sensor's next period; `sent[dev_eui]` holds the
    crossings in and out sent to it."""

    def __init__(self, port: int, dev_euis: Sequence[str], *, seed: int, client_id: str) -> None:
        self.rng = random.Random(seed)
        self._euis = list(dev_euis)
        self.sent = {eui: [0, 0] for eui in self._euis}
        self._period = dict.fromkeys(self._euis, 0)
        self._acked: set[int] = set()
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.max_queued_messages_set(0)  # keep everything while the broker is away
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_publish(self, _c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        with self._cond:
            self._acked.add(mid)
            self._cond.notify_all()

    def publish(self, count: int) -> list[int]:
        """Queue `count` reports; paho sends them (again after a reconnect) in the background."""
        mids = []
        for _ in range(count):
            eui = self._euis[0] if len(self._euis) == 1 else self.rng.choice(self._euis)
            i = self._period[eui]
            self._period[eui] += 1
            n_in, n_out = self.rng.randint(0, 5), self.rng.randint(0, 5)
            body = uplink_body("chirpstack", eui, i + 1, line_report(i, n_in, n_out), 0)
            mids.append(self.client.publish(uplink_topic("chirpstack", eui), body, qos=1).mid)
            self.sent[eui][0] += n_in
            self.sent[eui][1] += n_out
        return mids

    def wait_accepted(self, mids: list[int], timeout: float = 60) -> None:
        """Until the broker has acknowledged every one of `mids`."""
        with self._cond:
            assert self._cond.wait_for(lambda: self._acked.issuperset(mids), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
