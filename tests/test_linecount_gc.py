"""A full line-crossing ledger adds nothing for the cycle collector to walk.

A site keeps thousands of stretches, triggers and readings per sensor; each one the collector
tracks makes every full collection, and the loop with it, longer. After a collection the objects
reachable from a ledger that the collector still tracks must not grow with its entries.
"""

from __future__ import annotations

import gc
import json

from gateway.linecount import LineLedger

T0 = 1_700_000_400.0
OFFSET = 37.0  # the sensor's clock runs behind the gateway's


def filled(periods: int) -> LineLedger:
    """A sensor's reports through the ledger's entry points, as gateway.state calls them."""
    ledger = LineLedger(interval=600.0, window=60.0)
    acc_in = acc_out = 0
    for k in range(1, periods + 1):
        start, end = T0 + 600.0 * (k - 1), T0 + 600.0 * k
        # A trigger without sensor time just after the period starts: its window straddles
        # the start, so the period borrows it across the edge.
        ledger.trigger(start + 4.0 + OFFSET, None, 1, 0, history=False)
        ledger.trigger(start + 300.0 + OFFSET, start + 300.0, 0, 1, history=False)
        acc_in, acc_out = acc_in + 1, acc_out + 1
        received = end + OFFSET + 1.0
        ledger.observe_clock(received, end)
        ledger.period(received, end, 1, 1, history=False)
        ledger.accumulated(received, end, acc_in, acc_out, history=False, period=(1, 1))
    for n in range(3):  # still pending: the period they belong to is not over
        ledger.trigger(T0 + 600.0 * periods + 100.0 * (n + 1) + OFFSET, None, 1, 1, history=False)
    return ledger


def tracked_within(ledger: LineLedger) -> int:
    """Objects reachable from the ledger through its containers that the collector tracks."""
    seen: set[int] = set()
    stack: list[object] = [ledger]
    tracked = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        tracked += gc.is_tracked(obj)
        if isinstance(obj, type):
            continue  # the classes and what they refer to are not the ledger's
        stack.extend(gc.get_referents(obj))
    return tracked


def tracked_when_settled(ledger: LineLedger) -> int:
    """`tracked_within` once further full collections untrack nothing more.

    A collection untracks a tuple only when the tuples inside it already are, and it can meet a
    tuple before those inside it (young generations join the old one after it), so a fresh
    nest of tuples can take a few collections; the daemon runs them all the time."""
    counts = [-1]
    while len(counts) < 6:
        gc.collect()
        counts.append(tracked_within(ledger))
        if counts[-1] == counts[-2]:
            break
    return counts[-1]


def test_entries_are_not_tracked_after_a_collection() -> None:
    small, large = filled(100), filled(1000)
    doc = large.to_json()
    sizes = {key: len(doc[key]) for key in ("spans", "triggers", "readings", "pending")}
    assert sizes == {"spans": 1000, "triggers": 2003, "readings": 1000, "pending": 3}
    assert any(row[9] for row in doc["spans"])  # some stretches borrowed triggers
    assert (large.total_in, large.total_out) == (1003, 1003)
    assert tracked_when_settled(large) == tracked_when_settled(small)


def test_a_restored_ledger_is_not_tracked_after_a_collection() -> None:
    text = json.dumps(filled(1000).to_json())
    small, large = LineLedger(interval=600.0, window=60.0), LineLedger(600.0, 60.0)
    small.load_json(json.loads(json.dumps(filled(100).to_json())))
    large.load_json(json.loads(text))
    assert tracked_when_settled(large) == tracked_when_settled(small)
    assert json.dumps(large.to_json()) == text
