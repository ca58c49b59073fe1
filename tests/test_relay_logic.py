"""The overcrowding alarm's rules without I/O: measuring, hysteresis, minimum times, stale data,
the relay's priority levels and contact polarity, the rules' points and their configuration."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.relay.logic import (
    AlarmLogic,
    CommandSlots,
    OnStale,
    SensorReading,
    Trigger,
    contact_closed,
    measure,
    shutdown_energised,
)
from gateway.settings import Settings, load_settings
from objects.catalog import MAX_RULES, ModbusKind, Model, ObjectType
from objects.pointmap import (
    RuleSpec,
    SensorSpec,
    decode_priority_array,
    encode_priority_array,
    find_conflicts,
    modbus_tables,
    priority_array_key,
    priority_array_owner,
    resolve,
    rule_points,
)

FRESH = True


def reading(online: bool = FRESH, **values: float) -> SensorReading:
    return SensorReading(online, values)


# -- measuring ---------------------------------------------------------------------------------


def test_total_adds_the_sensors_of_one_space() -> None:
    a = reading(people_count_all=7, region_1_count=5)
    b = reading(people_count_all=4)
    assert measure(Trigger.TOTAL, [a]) == 7
    assert measure(Trigger.TOTAL, [a, b]) == 11


def test_any_region_takes_the_fullest_region_of_any_sensor() -> None:
    a = reading(people_count_all=9, region_1_count=3, region_2_count=6)
    b = reading(people_count_all=8, region_1_count=7, region_3_count=1)
    assert measure(Trigger.ANY_REGION, [a]) == 6
    assert measure(Trigger.ANY_REGION, [a, b]) == 7


def test_any_region_without_region_counts_uses_the_whole_view() -> None:
    # As the VS121-P: "If there is not area, the trigger type is total people number".
    assert measure(Trigger.ANY_REGION, [reading(people_count_all=5)]) == 5


def test_no_usable_data_when_a_sensor_is_stale_or_silent() -> None:
    fresh = reading(people_count_all=3)
    assert measure(Trigger.TOTAL, [fresh, reading(False, people_count_all=1)]) is None
    assert measure(Trigger.TOTAL, [fresh, reading()]) is None  # online, no count yet
    assert measure(Trigger.ANY_REGION, [reading()]) is None
    assert measure(Trigger.TOTAL, [reading(False)]) is None


# -- the alarm state machine ---------------------------------------------------------------------


def run(logic: AlarmLogic, steps: list[tuple[float, float | None]]) -> list[bool]:
    """Feed (time, count) steps; the alarm state after each."""
    out = []
    for now, count in steps:
        logic.update(count, now)
        out.append(logic.active)
    return out


def test_alarm_is_over_the_threshold_not_at_it() -> None:
    logic = AlarmLogic(threshold=20)
    assert run(logic, [(0, 19), (1, 20), (2, 21), (3, 20), (4, 21)]) == [
        False,
        False,
        True,
        False,  # hysteresis 0: back within the threshold clears at once
        True,
    ]


def test_hysteresis_holds_the_alarm_until_the_count_falls_far_enough() -> None:
    logic = AlarmLogic(threshold=20, hysteresis=3)
    counts = [21, 20, 19, 18, 17, 18, 20, 21]
    states = run(logic, [(float(i), c) for i, c in enumerate(counts)])
    assert states == [True, True, True, True, False, False, False, True]


def test_minimum_on_and_off_times_stop_chattering() -> None:
    logic = AlarmLogic(threshold=10, min_on=30, min_off=60)
    assert logic.update(11, 0) is True  # the first switch is never held back
    assert logic.update(9, 5) is False  # wants off, but on only 5 s
    assert logic.active
    assert logic.pending == 30
    assert logic.update(11, 10) is False  # wants on again: nothing pending
    assert logic.pending is None
    assert logic.update(9, 20) is False
    assert logic.pending == 30
    assert logic.update(9, 30) is True
    assert not logic.active
    assert logic.update(12, 40) is False
    assert logic.pending == 90
    assert logic.update(12, 89.9) is False
    assert logic.update(12, 90) is True
    assert logic.active


def test_a_held_back_switch_happens_only_if_still_wanted() -> None:
    logic = AlarmLogic(threshold=10, min_on=30)
    logic.update(11, 0)
    logic.update(9, 1)  # pending at 30
    assert logic.update(11, 30) is False  # at the deadline the count is up again
    assert logic.active
    assert logic.pending is None


@pytest.mark.parametrize(
    ("policy", "before", "after"),
    [
        (OnStale.ALARM, False, True),
        (OnStale.ALARM, True, True),
        (OnStale.CLEAR, True, False),
        (OnStale.CLEAR, False, False),
        (OnStale.HOLD, True, True),
        (OnStale.HOLD, False, False),
    ],
)
def test_stale_data_takes_the_configured_state(policy: OnStale, before: bool, after: bool) -> None:
    logic = AlarmLogic(threshold=10, on_stale=policy)
    logic.update(11 if before else 1, 0)
    assert logic.active is before
    assert logic.stale is False
    logic.update(None, 100)
    assert logic.active is after
    assert logic.stale is True


def test_stale_switches_respect_the_minimum_times_too() -> None:
    logic = AlarmLogic(threshold=10, min_on=60, on_stale=OnStale.CLEAR)
    logic.update(11, 0)
    logic.update(None, 10)
    assert logic.active
    assert logic.pending == 60
    logic.update(None, 60)
    assert not logic.active


def test_a_threshold_below_the_hysteresis_clears_at_zero() -> None:
    logic = AlarmLogic(threshold=20, hysteresis=5)
    logic.update(30, 0)
    logic.threshold = 2  # written by an operator
    assert run(logic, [(1, 1), (2, 0)]) == [True, False]


# -- the relay -----------------------------------------------------------------------------------


def test_priority_levels_override_and_relinquish() -> None:
    slots = CommandSlots()
    assert slots.present() is False
    assert slots.level() is None
    slots.write(16, True)  # automatic: alarm
    assert slots.present() is True
    assert slots.level() == 16
    assert not slots.overridden()
    slots.write(8, False)  # operator forces the relay off
    assert slots.present() is False
    assert slots.level() == 8
    assert slots.overridden()
    assert slots.override_code() == 1
    slots.write(16, False)
    slots.write(16, True)
    assert slots.present() is False  # the override still wins
    slots.write(8, None)
    assert slots.present() is True
    assert slots.level() == 16
    assert slots.override_code() == 0
    slots.write(8, True)
    assert slots.override_code() == 2
    with pytest.raises(ValueError, match="outside"):
        slots.write(17, True)


def test_priority_array_travels_as_one_number() -> None:
    slots: list[bool | None] = [None] * 16
    assert decode_priority_array(encode_priority_array(slots)) == slots
    slots[7], slots[15], slots[0] = True, False, False
    code = encode_priority_array(slots)
    assert decode_priority_array(float(code)) == slots
    assert code < 2**32  # exact in a float, fits a status document
    assert priority_array_owner(priority_array_key("rule_1_relay")) == "rule_1_relay"
    assert priority_array_owner("rule_1_relay") is None
    with pytest.raises(ValueError, match="16 slots"):
        encode_priority_array([None])


def test_contact_polarity_and_coil_level() -> None:
    # Default, as the VS121-P: open in alarm, so the coil is energised while all is normal.
    assert contact_closed(active=False, contact_in_alarm="open") is True
    assert contact_closed(active=True, contact_in_alarm="open") is False
    assert contact_closed(active=True, contact_in_alarm="closed") is True
    assert contact_closed(active=False, contact_in_alarm="closed") is False
    assert shutdown_energised("open") is False
    assert shutdown_energised("closed") is True
    assert shutdown_energised("hold") is None


# -- the rules' points -----------------------------------------------------------------------------


def test_rule_points_have_stable_addresses_in_the_gateway_block() -> None:
    points = {p.key: p for p in rule_points(RuleSpec("lobby", "Lobby", 3))}
    assert set(points) == {
        "rule_3_alarm",
        "rule_3_relay",
        "rule_3_status",
        "rule_3_threshold",
        "rule_3_override",
    }
    alarm, relay = points["rule_3_alarm"], points["rule_3_relay"]
    assert (alarm.object_type, alarm.instance, alarm.modbus_address) == (
        ObjectType.BINARY_INPUT,
        520,
        110,
    )
    assert modbus_tables(alarm) == ("discrete",)
    assert (relay.object_type, relay.instance, modbus_tables(relay)) == (
        ObjectType.BINARY_OUTPUT,
        520,
        ("coil",),
    )
    assert relay.modbus_address == 111
    threshold = points["rule_3_threshold"]
    assert threshold.object_type is ObjectType.ANALOG_VALUE
    assert threshold.writable
    assert (threshold.point.minimum, threshold.point.maximum) == (0, 65535)
    assert threshold.modbus_address == 111
    assert modbus_tables(threshold) == ("input", "holding")
    assert points["rule_3_override"].modbus_address == 112
    assert points["rule_3_status"].modbus_address == 110
    assert {p.name for p in points.values()} == {
        "Lobby Overcrowded",
        "Lobby Relay",
        "Lobby Alarm Status",
        "Lobby Threshold",
        "Lobby Relay Override",
    }
    assert all(p.sensor_id == "" and p.rule == "lobby" for p in points.values())


def test_every_rule_fits_its_reserved_range_beside_full_sensors() -> None:
    rules = [RuleSpec(f"r{n}", f"Rule {n}", n) for n in range(1, MAX_RULES + 1)]
    sensors = [SensorSpec(id=f"s{n}", name=f"S{n}", number=n, model=Model.VS121) for n in (1, 2)]
    points = resolve(sensors, rules=rules)
    assert find_conflicts(points) == []
    rule_pts = [p for p in points if p.rule is not None]
    assert all(500 <= p.instance < 700 for p in rule_pts)
    assert all(p.modbus_address is not None and 100 <= p.modbus_address < 200 for p in rule_pts)
    gateway_regs = [
        p.modbus_address
        for p in points
        if p.sensor_id == "" and p.rule is None and p.modbus_address is not None
    ]
    assert max(gateway_regs) < 100
    assert all(p.point.modbus and p.point.modbus.kind in ModbusKind for p in rule_pts)
    with pytest.raises(ValueError, match="outside"):
        rule_points(RuleSpec("x", "X", MAX_RULES + 1))


def test_conflicting_rule_names_are_found() -> None:
    sensors = [SensorSpec(id="s", name="Lobby", number=1, model=Model.VS121)]
    # "Lobby Relay" etc. do not clash with sensor names, but two rules named alike do.
    problems = find_conflicts(
        resolve(sensors, rules=[RuleSpec("a", "Hall", 1), RuleSpec("b", "Hall", 2)])
    )
    assert any("Hall Overcrowded" in p for p in problems)


# -- configuration ---------------------------------------------------------------------------------

SENSORS: list[dict[str, Any]] = [
    {"id": "a", "name": "A", "number": 1, "model": "vs121", "dev_eui": "24e124538c000001"},
    {"id": "b", "name": "B", "number": 2, "model": "vs121-p", "serial": "1"},
]


def settings(*alarms: dict[str, Any], **extra: Any) -> Settings:
    return Settings.model_validate({"sensors": SENSORS, "alarms": list(alarms), **extra})


def alarm(**kw: Any) -> dict[str, Any]:
    return {"id": "crowd", "name": "Crowd", "number": 1, "sensors": ["a"], "threshold": 10} | kw


def test_defaults_follow_the_vs121p() -> None:
    a = settings(alarm()).alarms[0]
    assert a.trigger == "total"
    assert a.contact_in_alarm == "open"
    assert a.on_stale == "hold"
    assert a.on_shutdown == "open"
    assert a.output.type == "none"
    assert [p.key for p in settings(alarm()).points() if p.rule] == [
        "rule_1_alarm",
        "rule_1_relay",
        "rule_1_status",
        "rule_1_threshold",
        "rule_1_override",
    ]


@pytest.mark.parametrize(
    ("alarms", "extra", "message"),
    [
        ([alarm(sensors=["zz"])], {}, "'zz' is not a configured sensor"),
        ([alarm(), alarm(id="other")], {}, "alarms[1].number: 1 is already used"),
        ([alarm(), alarm(number=2)], {}, "alarms[1].id: 'crowd' is already used"),
        ([alarm(), alarm(id="x", number=2)], {}, "alarms[1].name: 'Crowd' is already used"),
        ([alarm(hysteresis=11)], {}, "could never clear"),
        ([alarm(sensors=["a", "a"])], {}, "listed twice"),
        ([alarm(number=21)], {}, "less than or equal to 20"),
        (
            [
                alarm(output={"type": "gpio", "line": 4}),
                alarm(id="x", name="X", number=2, output={"type": "gpio", "line": 4}),
            ],
            {},
            "the same output as alarms[0]",
        ),
        (
            [alarm(output={"type": "modbus", "port": "/dev/ttyS1"})],
            {"modbus": {"rtu": {"enabled": True, "port": "/dev/ttyS1"}}},
            "the gateway's own Modbus RTU slave port",
        ),
        (
            [
                alarm(output={"type": "modbus", "port": "/dev/ttyS2", "coil": 0}),
                alarm(
                    id="x",
                    name="X",
                    number=2,
                    output={"type": "modbus", "port": "/dev/ttyS2", "coil": 1, "baudrate": 19200},
                ),
            ],
            {},
            "with other serial settings",
        ),
        ([alarm(output={"type": "relay"})], {}, "does not match any of the expected tags"),
    ],
)
def test_bad_alarm_configurations_are_refused(
    alarms: list[dict[str, Any]], extra: dict[str, Any], message: str, tmp_path: Path
) -> None:
    """Written as a TOML file and loaded as the daemon would: the error names the key."""
    path = tmp_path / "gw.toml"
    lines = [_toml(extra), *(_alarm_toml(a) for a in alarms), _sensors_toml()]
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert message in str(err.value)


def test_two_rules_may_share_a_module_and_a_sensor() -> None:
    s = settings(
        alarm(output={"type": "modbus", "transport": "tcp", "host": "127.0.0.1", "coil": 0}),
        alarm(
            id="x",
            name="X",
            number=2,
            sensors=["a", "b"],
            trigger="any_region",
            output={"type": "modbus", "transport": "tcp", "host": "127.0.0.1", "coil": 1},
        ),
    )
    assert len(s.alarms) == 2
    assert math.isclose(s.alarms[1].threshold, 10)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def _toml(doc: dict[str, Any], prefix: str = "") -> str:
    out = []
    for key, value in doc.items():
        if isinstance(value, dict):
            out.append(f"[{prefix}{key}]")
            flat = {k: v for k, v in value.items() if not isinstance(v, dict)}
            out.extend(f"{k} = {_value(v)}" for k, v in flat.items())
            nested = {k: v for k, v in value.items() if isinstance(v, dict)}
            out.append(_toml(nested, f"{prefix}{key}."))
    return "\n".join(out)


def _alarm_toml(a: dict[str, Any]) -> str:
    lines = ["[[alarms]]"]
    lines += [f"{k} = {_value(v)}" for k, v in a.items() if k != "output"]
    if "output" in a:
        lines.append("[alarms.output]")
        lines += [f"{k} = {_value(v)}" for k, v in a["output"].items()]
    return "\n".join(lines)


def _sensors_toml() -> str:
    return "\n".join(
        "[[sensors]]\n" + "\n".join(f"{k} = {_value(v)}" for k, v in s.items()) for s in SENSORS
    )
