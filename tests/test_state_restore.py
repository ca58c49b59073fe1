"""Restoring one sensor's snapshot touches that sensor only: a restart of thousands of sensors
loads each in turn, and re-evaluating every sensor per restored one made it quadratic."""

from __future__ import annotations

from gateway.state import Change, GatewayState, Report
from objects.catalog import Model
from objects.pointmap import SensorSpec

T0 = 1_700_000_000.0


def specs(count: int) -> list[tuple[SensorSpec, float, float]]:
    return [
        (SensorSpec(id=f"s{n}", name=f"S{n}", number=n, model=Model.VS121_P), 600.0, 300.0)
        for n in range(1, count + 1)
    ]


def test_restoring_a_sensor_emits_for_that_sensor_only() -> None:
    now = [T0]
    before = GatewayState(specs(3), clock=lambda: now[0])
    before.apply(Report("s2", {"people_count_all": 5}, received_at=T0))
    doc = before.sensors["s2"].to_json()

    after = GatewayState(specs(3), clock=lambda: now[0])
    changes: list[Change] = []
    after.subscribe(changes.append)
    after.restore("s2", doc)
    assert {c.sensor_id for c in changes} <= {"s2"}
    assert after.current("s2")["people_count_all"] == 5
    assert after.current("s2")["online"] == 1  # decided at the restore, against the clock
    # The others are decided by the next tick, as before any restore.
    after.tick()
    assert after.current("s1")["online"] == 0
    assert {c.sensor_id for c in changes} >= {"s1", "s3"}
