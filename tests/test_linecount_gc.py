"""A full line-crossing ledger adds nothing for the cycle collector to walk.

A site keeps thousands of stretches, triggers and readings per sensor; each one the collector
tracks, or visits as an item of a tracked container, makes every full collection, and the loop
with it, longer. After collections what the collector walks for a ledger must not grow with its
entries.
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


def walked(ledger: LineLedger) -> tuple[int, int]:
    """What a collection walks for the ledger: the objects reachable from it that the collector
    tracks, and the references it follows out of them (it visits every item of a tracked
    container, tracked or not)."""
    seen: set[int] = set()
    stack: list[object] = [ledger]
    tracked = followed = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        referents = gc.get_referents(obj)
        if gc.is_tracked(obj):
            tracked += 1
            followed += len(referents)
        if not isinstance(obj, type):  # the classes and what they refer to are not the ledger's
            stack.extend(referents)
    return tracked, followed


def walked_when_settled(ledger: LineLedger) -> tuple[int, int]:
    """`walked` once further full collections untrack nothing more.

    A collection untracks a tuple only when the tuples inside it already are, and it can meet a
    tuple before those inside it (young generations join the old one after it), so a fresh
    nest of tuples can take a few collections; the daemon runs them all the time."""
    counts = [(-1, -1)]
    while len(counts) < 6:
        gc.collect()
        counts.append(walked(ledger))
        if counts[-1] == counts[-2]:
            break
    return counts[-1]


def test_a_collection_walks_no_entries() -> None:
    small, large = filled(100), filled(1000)
    doc = large.to_json()
    sizes = {key: len(doc[key]) for key in ("spans", "triggers", "readings", "pending")}
    assert sizes == {"spans": 1000, "triggers": 2003, "readings": 1000, "pending": 3}
    assert any(row[9] for row in doc["spans"])  # some stretches borrowed triggers
    assert (large.total_in, large.total_out) == (1003, 1003)
    assert walked_when_settled(large) == walked_when_settled(small)


def test_a_collection_walks_no_restored_entries() -> None:
    text = json.dumps(filled(1000).to_json())
    small, large = LineLedger(interval=600.0, window=60.0), LineLedger(600.0, 60.0)
    small.load_json(json.loads(json.dumps(filled(100).to_json())))
    large.load_json(json.loads(text))
    assert walked_when_settled(large) == walked_when_settled(small)
    assert json.dumps(large.to_json()) == text
