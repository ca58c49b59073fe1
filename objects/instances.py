"""The BACnet instance scheme: how large a sensor's instance block is, and where alarm rules sit.

A sensor's point has instance ``number x block + offset`` (see `objects.catalog`). The block is
``bacnet.instance_block``: 1000 by default (sensor numbers 1..4193), or a smaller round number
for larger sites (500: sensor numbers 1..8387). Every instance stays a fixed formula of the
sensor's number; changing the block renumbers every object, so it is chosen once, at
commissioning.

Alarm rules: with the default block they sit inside the gateway's block (number 0), at
``500 + (r - 1) x 10 + offset``, as they always have. With a smaller block, instances 500..699
belong to sensor 1, so the rules move to the top of the instance range instead:
``4,194,000 + (r - 1) x 10 + offset`` (4,194,000..4,194,191). Sensor numbers stop below that
range, so a rule can never share an instance with a sensor, whatever the block.
"""

from __future__ import annotations

from objects.catalog import (
    BACNET_BLOCK,
    MAX_REGIONS,
    RULE_BACNET_BASE,
    SENSOR_POINTS,
)

MAX_BACNET_INSTANCE = 4_194_302
# Where the alarm rules sit with any block other than the default.
RULE_BACNET_TOP = 4_194_000
# Blocks a configuration may choose: round numbers a BMS integrator reads at a glance, each
# holding every offset of the catalog.
BLOCK_STEP = 100


def max_sensor_offset() -> int:
    """The highest instance offset a sensor's point can have (all regions mapped)."""
    return max(p.bacnet_offset + (MAX_REGIONS - 1 if p.per_region else 0) for p in SENSOR_POINTS)


def block_choices() -> tuple[int, ...]:
    """The allowed values of ``bacnet.instance_block``: multiples of 100 that hold every
    offset, up to the default."""
    smallest = (max_sensor_offset() // BLOCK_STEP + 1) * BLOCK_STEP
    return tuple(range(smallest, BACNET_BLOCK + 1, BLOCK_STEP))


def rule_bacnet_base(block: int) -> int:
    """Instance of rule 1's first point for this block size (see the module docstring)."""
    return RULE_BACNET_BASE if block == BACNET_BLOCK else RULE_BACNET_TOP


def max_sensor_number(block: int) -> int:
    """The highest sensor number whose whole block fits below the rules (or the instance
    limit, with the default block)."""
    ceiling = MAX_BACNET_INSTANCE if block == BACNET_BLOCK else RULE_BACNET_TOP - 1
    return (ceiling - max_sensor_offset()) // block


# The largest sensor number any allowed block permits (the schema's upper bound; the
# configured block's own bound is checked with the rest of the configuration).
MAX_SENSOR_NUMBER = max(max_sensor_number(b) for b in block_choices())
