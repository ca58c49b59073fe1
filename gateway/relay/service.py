"""`RelayService`: the overcrowding alarm rules, fed by the state, driving their outputs.

It follows the state like a sink (each Change of a rule's sensors re-evaluates the rule, a
freshness transition included), publishes every rule's points as gateway values (so BACnet and
Modbus show them through the one Change path, priority array included), and carries out the
rules' commands (threshold, relay override) for the sinks. Each output has its own worker (see
`gateway.relay.output`), so a failing output delays nothing else. A timer re-evaluates a rule
when a minimum on/off time that held back a switch runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.commands import CommandRefusedError
from gateway.metrics import RelayMetrics
from gateway.relay.drivers import DriverFactory, Masters, driver_factory
from gateway.relay.logic import (
    AUTOMATIC_LEVEL,
    MINIMUM_ON_OFF_LEVEL,
    STATUS_ACTIVE,
    STATUS_ALARM,
    STATUS_CONTACT_CLOSED,
    STATUS_FAULT,
    STATUS_OVERRIDDEN,
    STATUS_STALE,
    TOTAL_KEY,
    AlarmLogic,
    CommandSlots,
    OnStale,
    SensorReading,
    Trigger,
    contact_closed,
    measure,
    shutdown_energised,
)
from gateway.relay.output import OutputWorker
from gateway.relay.persist import OPERATOR_LEVELS, AlarmStore, RuleRecord
from gateway.settings import AlarmSection, ModbusCoilOutput
from gateway.state import Change, GatewayState
from objects.pointmap import encode_priority_array, priority_array_key, rule_points

log = logging.getLogger("gateway.relay")

START_SETTLE_S = 3.0  # start-up waits this long at most for the outputs' first writes
MAX_THRESHOLD = 65535.0


def _relevant(key: str) -> bool:
    return key == TOTAL_KEY or (key.startswith("region_") and key.endswith("_count"))


@dataclass
class Rule:
    cfg: AlarmSection
    logic: AlarmLogic
    slots: CommandSlots
    worker: OutputWorker
    keys: dict[str, str]  # catalog key -> this rule's key
    written_threshold: float | None = None
    changed_at: float | None = None  # unix time of the last switch
    evaluated: bool = False

    @property
    def id(self) -> str:
        return self.cfg.id

    def key(self, template: str) -> str:
        return self.keys[template]


class RelayService:
    """The alarm rules of one gateway. `await start()` in the loop, `await stop()` at the end."""

    def __init__(
        self,
        alarms: Sequence[AlarmSection],
        state: GatewayState,
        *,
        state_dir: Path,
        metrics: RelayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        drivers: DriverFactory | None = None,
        settle_timeout: float = START_SETTLE_S,
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self._wall = wall
        self._masters = Masters()
        build = drivers if drivers is not None else driver_factory(self._masters)
        self._settle_timeout = settle_timeout
        self._store = AlarmStore(state_dir)
        self.rules: dict[str, Rule] = {}
        self._by_sensor: dict[str, list[Rule]] = {}
        for cfg in alarms:
            out = cfg.output
            worker = OutputWorker(
                cfg.id,
                build(out),
                retry_after=out.retry_seconds if isinstance(out, ModbusCoilOutput) else 5.0,
                on_attempt=self._attempt_counter(cfg.id),
                on_fault=self._fault_handler(cfg.id),
            )
            rule = Rule(
                cfg=cfg,
                logic=AlarmLogic(
                    threshold=float(cfg.threshold),
                    hysteresis=float(cfg.hysteresis),
                    min_on=float(cfg.min_on_seconds),
                    min_off=float(cfg.min_off_seconds),
                    on_stale=OnStale(cfg.on_stale),
                ),
                slots=CommandSlots(),
                worker=worker,
                keys={rp.point.key: rp.key for rp in rule_points(cfg.spec())},
            )
            self.rules[cfg.id] = rule
            for sid in cfg.sensors:
                self._by_sensor.setdefault(sid, []).append(rule)
        self._running = False
        self._subscribed = False
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._persist_lock = asyncio.Lock()
        self._saving: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the saved state, evaluate every rule and drive every output to it."""
        records = await asyncio.to_thread(self._store.load)
        now, wall = self._clock(), self._wall()
        for rule in self.rules.values():
            record = records.get(rule.id)
            if record is not None:
                self._restore(rule, record, now, wall)
        if not self._subscribed:  # GatewayState has no unsubscribe: once per service
            self._state.subscribe(self._on_change)
            self._subscribed = True
        self._running = True
        for rule in self.rules.values():
            self._evaluate(rule, now)
            rule.worker.start()
        if self.rules:
            settled = await asyncio.gather(
                *(r.worker.settled(self._settle_timeout) for r in self.rules.values())
            )
            late = [r.id for r, ok in zip(self.rules.values(), settled, strict=True) if not ok]
            if late:
                log.warning("alarm outputs not driven yet (still trying): %s", ", ".join(late))
            self._timer = asyncio.ensure_future(self._timer_loop())
            self._timer.set_name("relay timer")
            log.info("alarm rules: %s", "; ".join(self._describe(r) for r in self.rules.values()))

    async def stop(self) -> None:
        """Leave every output in its rule's shutdown state and save the rules' state."""
        if not self._running:
            return
        self._running = False
        if not self.rules:
            return
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        for rule in self.rules.values():
            try:
                await rule.worker.stop(shutdown_energised(rule.cfg.on_shutdown))
            except Exception:  # one output must not keep the others (or the state) unsaved
                log.exception("alarm %s: output not stopped cleanly", rule.id)
        try:
            await self._masters.close()
        except Exception:
            log.exception("alarm outputs: Modbus masters not closed cleanly")
        if self._saving:
            await asyncio.gather(*self._saving, return_exceptions=True)
        try:
            await self._persist()
        except OSError as exc:
            log.error("alarm state not saved at shutdown: %s", exc)

    def _restore(self, rule: Rule, record: RuleRecord, now: float, wall: float) -> None:
        rule.logic.active = record.active
        rule.changed_at = record.changed_at
        if record.changed_at is not None:
            rule.logic.since = now - max(0.0, wall - record.changed_at)
        if record.threshold is not None:
            if record.configured_threshold == float(rule.cfg.threshold):
                rule.written_threshold = record.threshold
                rule.logic.threshold = record.threshold
            else:
                log.info(
                    "alarm %s: the configured threshold changed; written threshold %g dropped",
                    rule.id,
                    record.threshold,
                )
        for level, value in enumerate(record.commands, start=1):
            if level != MINIMUM_ON_OFF_LEVEL:
                rule.slots.write(level, value)

    @staticmethod
    def _describe(rule: Rule) -> str:
        c = rule.cfg
        return (
            f"{c.id} ({c.trigger} of {'+'.join(c.sensors)} > {rule.logic.threshold:g}, "
            f"{rule.worker.driver.description}, contact {c.contact_in_alarm} in alarm, "
            f"now {'ALARM' if rule.logic.active else 'normal'})"
        )

    # -- evaluation -----------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        if not self._running:
            return
        rules = self._by_sensor.get(change.sensor_id)
        if not rules:
            return
        if (
            change.online is None
            and change.not_reported is None
            and not any(_relevant(k) for k in change.values)
        ):
            return
        # Called inside the state's apply(): never let a failure here stop ingestion.
        try:
            now = self._clock()
            for rule in rules:
                self._evaluate(rule, now)
        except Exception:
            log.exception("alarm rules of sensor %s not evaluated", change.sensor_id)

    def evaluate(self) -> None:
        """Re-evaluate every rule now (the timer does this when a minimum time runs out)."""
        now = self._clock()
        for rule in self.rules.values():
            self._evaluate(rule, now)

    def _evaluate(self, rule: Rule, now: float) -> None:
        cfg = rule.cfg
        readings = []
        for sid in cfg.sensors:
            s = self._state.sensors.get(sid)
            readings.append(
                SensorReading(False, {})
                if s is None
                else SensorReading(s.online, self._state.usable(sid))
            )
        measured = measure(Trigger(cfg.trigger), readings)
        was_stale = rule.logic.stale
        switched = rule.logic.update(measured, now)
        if not rule.evaluated:
            rule.evaluated = True
            if rule.logic.stale:
                log.info(
                    "alarm %s: no usable data from %s yet; on_stale = %s",
                    rule.id,
                    ", ".join(cfg.sensors),
                    cfg.on_stale,
                )
        elif rule.logic.stale != was_stale:
            if rule.logic.stale:
                log.warning(
                    "alarm %s: no usable data from %s; on_stale = %s",
                    rule.id,
                    ", ".join(cfg.sensors),
                    cfg.on_stale,
                )
            else:
                log.info("alarm %s: data usable again (count %g)", rule.id, measured)
        if switched:
            rule.changed_at = self._wall()
            self._log_switch(rule)
            self._persist_soon()
        if rule.logic.pending is not None:
            self._wake.set()
        if self._metrics is not None:
            self._metrics.alarm_active.set(1 if rule.logic.active else 0, rule=rule.id)
        rule.slots.write(AUTOMATIC_LEVEL, rule.logic.active)
        self._publish(rule)

    def _log_switch(self, rule: Rule) -> None:
        logic = rule.logic
        why = "no usable data" if logic.measured is None else f"count {logic.measured:g}"
        if logic.active:
            log.warning("alarm %s: OVERCROWDED (%s, threshold %g)", rule.id, why, logic.threshold)
        else:
            log.info("alarm %s: cleared (%s, threshold %g)", rule.id, why, logic.threshold)

    def _publish(self, rule: Rule) -> None:
        """Show the rule's points and set its output to what its relay command says."""
        active = rule.slots.present()
        closed = contact_closed(active, rule.cfg.contact_in_alarm)
        status = (
            (STATUS_ALARM if rule.logic.active else 0)
            | (STATUS_ACTIVE if active else 0)
            | (STATUS_CONTACT_CLOSED if closed else 0)
            | (STATUS_OVERRIDDEN if rule.slots.overridden() else 0)
            | (STATUS_STALE if rule.logic.stale else 0)
            | (STATUS_FAULT if rule.worker.fault else 0)
        )
        relay = rule.key("rule_{r}_relay")
        self._state.publish_gateway(
            {
                rule.key("rule_{r}_alarm"): int(rule.logic.active),
                relay: int(active),
                priority_array_key(relay): encode_priority_array(rule.slots.slots),
                rule.key("rule_{r}_status"): status,
                rule.key("rule_{r}_threshold"): rule.logic.threshold,
                rule.key("rule_{r}_override"): rule.slots.override_code(),
            }
        )
        rule.worker.want(closed)

    async def _timer_loop(self) -> None:
        while True:
            self._wake.clear()
            due = [r.logic.pending for r in self.rules.values() if r.logic.pending is not None]
            wait = None if not due else max(0.0, min(due) - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            now = self._clock()
            for rule in self.rules.values():
                pending = rule.logic.pending
                if pending is not None and pending <= now:
                    try:
                        self._evaluate(rule, now)
                    except Exception:
                        log.exception("alarm %s: not re-evaluated", rule.id)

    # -- metrics --------------------------------------------------------------------------------

    def _attempt_counter(self, rule_id: str) -> Callable[[bool], None]:
        def count(ok: bool) -> None:
            if not ok and self._metrics is not None:
                self._metrics.output_errors.inc(rule=rule_id)

        return count

    def _fault_handler(self, rule_id: str) -> Callable[[bool], None]:
        def changed(fault: bool) -> None:
            if self._metrics is not None:
                self._metrics.output_fault.set(1 if fault else 0, rule=rule_id)
            rule = self.rules.get(rule_id)
            if rule is not None and self._running:
                self._publish(rule)  # the status word's fault bit

        return changed

    # -- persistence ----------------------------------------------------------------------------

    def _records(self) -> dict[str, RuleRecord]:
        return {
            rule.id: RuleRecord(
                active=rule.logic.active,
                changed_at=rule.changed_at,
                threshold=rule.written_threshold,
                configured_threshold=None
                if rule.written_threshold is None
                else float(rule.cfg.threshold),
                commands=list(rule.slots.slots[:OPERATOR_LEVELS]),
            )
            for rule in self.rules.values()
        }

    async def _persist(self) -> None:
        async with self._persist_lock:
            data = AlarmStore.encode(self._records())  # what holds now, not when queued
            await asyncio.to_thread(self._store.save, data)

    def _persist_soon(self) -> None:
        task = asyncio.ensure_future(self._persist_logged())
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _persist_logged(self) -> None:
        try:
            await self._persist()
        except OSError as exc:
            log.error("alarm state not saved: %s; the next change tries again", exc)

    # -- commands -------------------------------------------------------------------------------

    def _rule(self, rule_id: str) -> Rule:
        return self.rules[rule_id]  # KeyError: the sinks answer "unknown object"

    async def set_alarm_threshold(self, rule_id: str, threshold: float) -> str:
        rule = self._rule(rule_id)
        if not math.isfinite(threshold) or not 0 <= threshold <= MAX_THRESHOLD:
            raise ValueError(f"threshold {threshold!r} outside 0..{MAX_THRESHOLD:g}")
        before = (rule.logic.threshold, rule.written_threshold)
        rule.logic.threshold = rule.written_threshold = float(threshold)
        try:
            await self._persist()
        except OSError:
            rule.logic.threshold, rule.written_threshold = before
            raise
        log.info("alarm %s: threshold set to %g (was %g)", rule_id, threshold, before[0])
        self._evaluate(rule, self._clock())
        return f"threshold {threshold:g}"

    async def command_relay(self, rule_id: str, priority: int, value: bool | None) -> str:
        rule = self._rule(rule_id)
        if priority == AUTOMATIC_LEVEL:
            raise CommandRefusedError(f"priority {AUTOMATIC_LEVEL} carries the alarm's own command")
        if priority == MINIMUM_ON_OFF_LEVEL or not 1 <= priority < AUTOMATIC_LEVEL:
            raise ValueError(f"priority {priority} cannot be commanded")
        before = rule.slots.slots[priority - 1]
        rule.slots.write(priority, value)
        try:
            await self._persist()
        except OSError:
            rule.slots.write(priority, before)
            raise
        self._publish(rule)
        what = "relinquished" if value is None else ("active" if value else "inactive")
        level = rule.slots.level()
        log.info(
            "alarm %s: relay %s at priority %d; priority %s in control (relay %s)",
            rule_id,
            what,
            priority,
            level,
            "active" if rule.slots.present() else "inactive",
        )
        return f"priority {priority} {what}"

    # -- reading --------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each rule's state, for logs and tests."""
        return {
            rule.id: {
                "alarm": rule.logic.active,
                "relay": rule.slots.present(),
                "level": rule.slots.level(),
                "stale": rule.logic.stale,
                "measured": rule.logic.measured,
                "threshold": rule.logic.threshold,
                "energised": rule.worker.wanted,
                "fault": rule.worker.fault,
            }
            for rule in self.rules.values()
        }
