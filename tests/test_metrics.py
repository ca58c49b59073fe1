"""The metrics registry: what a scrape reads (prometheus_client's exporter and parser), escaping,
validation, thread safety."""

from __future__ import annotations

import logging
import math
import sys
import threading

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import (
    CONTENT_TYPE,
    MESSAGE_OUTCOMES,
    Registry,
    default_metrics,
)


def scrape(r: Registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a render, as a Prometheus server reads it."""
    return _scraped(r.render())


def test_counter_gauge_summary_as_scraped() -> None:
    r = Registry()
    c = r.counter("demo_messages_total", "Messages seen.", ("source", "outcome"))
    g = r.gauge("demo_temperature", "Temperature.")
    s = r.summary("demo_write_seconds", "Write time.")
    c.inc(source="mqtt", outcome="accepted")
    c.inc(2, source="mqtt", outcome="accepted")
    c.inc(source="http", outcome="rejected")
    g.set(21.5)
    s.observe(0.25)
    s.observe(0.5)
    text = r.render()
    for line in (
        "# TYPE demo_messages_total counter",
        "# TYPE demo_temperature gauge",
        "# TYPE demo_write_seconds summary",
        "# HELP demo_write_seconds Write time.",
    ):
        assert line in text.splitlines()
    assert "_created" not in text
    assert _scraped(text) == {
        ("demo_messages_total", (("outcome", "rejected"), ("source", "http"))): 1,
        ("demo_messages_total", (("outcome", "accepted"), ("source", "mqtt"))): 3,
        ("demo_temperature", ()): 21.5,
        ("demo_write_seconds_sum", ()): 0.75,
        ("demo_write_seconds_count", ()): 2,
    }


def test_histogram_as_scraped() -> None:
    r = Registry()
    h = r.histogram("demo_ack_seconds", "Ack delay.", ("source",), buckets=(0.01, 0.1, 1.0))
    for seconds in (0.005, 0.05, 0.05, 3.0):
        h.observe(seconds, source="mqtt")
    text = r.render()
    assert "# TYPE demo_ack_seconds histogram" in text.splitlines()
    got = _scraped(text)
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in got.items()
        if name == "demo_ack_seconds_bucket"
    }
    assert buckets == {"0.01": 1, "0.1": 3, "1.0": 3, "+Inf": 4}  # cumulative
    assert got[("demo_ack_seconds_count", (("source", "mqtt"),))] == 4
    total, count = h.sum_and_count(source="mqtt")
    assert (round(total, 6), count) == (3.105, 4)
    assert h.sum_and_count(source="http") == (0.0, 0)
    with pytest.raises(ValueError, match="'le' is reserved"):
        r.histogram("other_seconds", "Other.", ("le",), buckets=(1.0,))


def test_label_values_are_escaped() -> None:
    r = Registry()
    c = r.counter("demo_total", "Demo.", ("sensor",))
    c.inc(sensor='back\\slash "quoted"\nnext line')
    assert scrape(r) == {("demo_total", (("sensor", 'back\\slash "quoted"\nnext line'),)): 1}


def test_help_backslash_and_newline_are_escaped_but_quotes_are_not() -> None:
    r = Registry()
    r.gauge("demo", 'A "help" with C:\\path\nand a second line.')
    assert r.render().splitlines()[0] == (
        '# HELP demo A "help" with C:\\\\path\\nand a second line.'
    )


def test_every_series_of_every_family_is_scraped() -> None:
    r = Registry()
    b = r.counter("b_total", "B.", ("k",))
    a = r.counter("a_total", "A.", ("k",))
    for value in ("z", "a", "m"):
        b.inc(k=value)
        a.inc(k=value)
    assert scrape(r) == {
        (name, (("k", k),)): 1 for name in ("a_total", "b_total") for k in ("a", "m", "z")
    }


def test_unlabelled_metrics_show_zero_and_labelled_ones_nothing_until_used() -> None:
    r = Registry()
    r.counter("plain_total", "Plain.")
    r.counter("labelled_total", "Labelled.", ("x",))
    assert "# TYPE labelled_total counter" in r.render().splitlines()
    assert scrape(r) == {("plain_total", ()): 0}


def test_empty_registry_renders_nothing() -> None:
    assert Registry().render() == ""


@pytest.mark.parametrize("value", [0, -3, 0.1, 1e20, 2**53 + 2, math.inf, -math.inf])
def test_numbers_scrape_back_exactly(value: float) -> None:
    r = Registry()
    r.gauge("g", "G.").set(value)
    assert scrape(r) == {("g", ()): value}


def test_nan_scrapes_as_nan() -> None:
    r = Registry()
    r.gauge("g", "G.").set(math.nan)
    assert math.isnan(scrape(r)[("g", ())])


def test_gauge_callback_is_evaluated_at_scrape_time() -> None:
    r = Registry()
    g = r.gauge("depth", "Depth.", ("source",))
    queue: list[int] = []
    g.set_function(lambda: len(queue), source="mqtt")
    g.set(7, source="http")
    http, mqtt = ("depth", (("source", "http"),)), ("depth", (("source", "mqtt"),))
    assert scrape(r) == {http: 7, mqtt: 0}
    queue.extend([1, 2, 3])
    assert scrape(r) == {http: 7, mqtt: 3}
    assert g.value(source="mqtt") == 3


def test_a_failing_callback_reads_nan_and_breaks_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = Registry()
    g = r.gauge("depth", "Depth.", ("source",))

    def broken() -> float:
        raise RuntimeError("queue gone")

    g.set_function(broken, source="mqtt")
    g.set(2, source="http")
    with caplog.at_level(logging.ERROR, logger="gateway.metrics"):
        text = r.render()
    samples = _scraped(text)
    assert samples[("depth", (("source", "http"),))] == 2
    assert math.isnan(samples[("depth", (("source", "mqtt"),))])
    assert "queue gone" in caplog.text


def test_gauge_remove_drops_the_series() -> None:
    r = Registry()
    g = r.gauge("depth", "Depth.", ("source",))
    g.set(1, source="a")
    g.set(2, source="b")
    g.remove(source="a")
    assert scrape(r) == {("depth", (("source", "b"),)): 2}


def test_counter_and_gauge_values_can_be_read_back() -> None:
    r = Registry()
    c = r.counter("c_total", "C.", ("k",))
    c.inc(0.5, k="x")
    assert c.value(k="x") == 0.5
    assert c.value(k="never") == 0
    s = r.summary("s_seconds", "S.")
    assert s.sum_and_count() == (0.0, 0)


def test_summary_time_observes_the_block_even_when_it_raises() -> None:
    r = Registry()
    s = r.summary("work_seconds", "Work.")
    with s.time():
        pass
    with pytest.raises(KeyError), s.time():
        raise KeyError("boom")
    total, count = s.sum_and_count()
    assert count == 2
    assert total >= 0


def test_summary_time_checks_labels_before_the_block() -> None:
    s = Registry().summary("work_seconds", "Work.", ("kind",))
    ran = []
    with pytest.raises(ValueError, match="takes labels"), s.time(wrong="x"):
        ran.append(True)
    assert ran == []


@pytest.mark.parametrize(
    "labels",
    [{}, {"source": "mqtt"}, {"source": "mqtt", "outcome": "accepted", "extra": "x"}],
)
def test_wrong_label_names_are_refused(labels: dict[str, str]) -> None:
    c = Registry().counter("m_total", "M.", ("source", "outcome"))
    with pytest.raises(ValueError, match=r"takes labels \['source', 'outcome'\]"):
        c.inc(**labels)


def test_allowed_label_values_are_enforced() -> None:
    c = Registry().counter("m_total", "M.", ("outcome",), allowed={"outcome": ("ok", "bad")})
    c.inc(outcome="ok")
    with pytest.raises(ValueError, match="'accpeted' is not one of"):
        c.inc(outcome="accpeted")


@pytest.mark.parametrize("amount", [-1.0, math.nan])
def test_counters_only_go_up(amount: float) -> None:
    c = Registry().counter("m_total", "M.")
    with pytest.raises(ValueError, match="cannot change"):
        c.inc(amount)
    assert c.value() == 0


def test_registration_errors() -> None:
    r = Registry()
    r.counter("m_total", "M.")
    with pytest.raises(ValueError, match="already registered"):
        r.gauge("m_total", "Again.")
    with pytest.raises(ValueError, match="not a valid Prometheus metric name"):
        r.counter("bad-name", "X.")
    with pytest.raises(ValueError, match="not a valid label name"):
        r.counter("x_total", "X.", ("__reserved",))
    with pytest.raises(ValueError, match="repeated label"):
        r.counter("y_total", "Y.", ("a", "a"))
    with pytest.raises(TypeError, match="not a string"):
        r.counter("z_total", "Z.", "sensor")
    with pytest.raises(ValueError, match="restricts unknown labels"):
        r.counter("w_total", "W.", ("a",), allowed={"b": ("x",)})
    with pytest.raises(ValueError, match="reserved"):
        r.summary("q_seconds", "Q.", ("quantile",))


def test_increments_from_many_threads_are_not_lost() -> None:
    c = Registry().counter("m_total", "M.", ("source",))
    threads_n, per_thread = 8, 5000
    start = threading.Barrier(threads_n)

    def work() -> None:
        start.wait()
        for _ in range(per_thread):
            c.inc(source="mqtt")

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    # Switch threads very often so an unlocked read-modify-write would lose updates.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(previous)
    assert c.value(source="mqtt") == threads_n * per_thread


def test_content_type_names_format_0_0_4() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


DEFAULT_AT_START = """\
# HELP vs121gw_bacnet_fd_registered 1 while registered as a foreign device with the BBMD, else 0.
# TYPE vs121gw_bacnet_fd_registered gauge
vs121gw_bacnet_fd_registered 0
# HELP vs121gw_decode_errors_total Payloads from a known sensor that could not be fully decoded.
# TYPE vs121gw_decode_errors_total counter
# HELP vs121gw_downlinks_total Downlink commands sent to sensors, by outcome.
# TYPE vs121gw_downlinks_total counter
# HELP vs121gw_duplicates_total Reports dropped as repeats of one already applied.
# TYPE vs121gw_duplicates_total counter
# HELP vs121gw_lines_refused_total Reports without a usable time: line counts left out.
# TYPE vs121gw_lines_refused_total counter
# HELP vs121gw_mac_only_total Uplinks with MAC commands only (fPort 0).
# TYPE vs121gw_mac_only_total counter
# HELP vs121gw_messages_total Messages received, by source and what became of them.
# TYPE vs121gw_messages_total counter
# HELP vs121gw_modbus_requests_total Modbus requests answered, by transport and outcome.
# TYPE vs121gw_modbus_requests_total counter
# HELP vs121gw_mqtt_connected 1 while connected to the MQTT broker, else 0.
# TYPE vs121gw_mqtt_connected gauge
vs121gw_mqtt_connected 0
# HELP vs121gw_queue_depth Messages waiting in a source's queue.
# TYPE vs121gw_queue_depth gauge
# HELP vs121gw_queue_overflow_total Messages dropped because a source's queue was full.
# TYPE vs121gw_queue_overflow_total counter
# HELP vs121gw_sensors_stale Sensors that have not reported within their stale time.
# TYPE vs121gw_sensors_stale gauge
vs121gw_sensors_stale 0
# HELP vs121gw_state_write_seconds Time spent writing the sensor state to disk.
# TYPE vs121gw_state_write_seconds summary
vs121gw_state_write_seconds_sum 0
vs121gw_state_write_seconds_count 0
# HELP vs121gw_state_writes_total Times the sensor state was written to disk.
# TYPE vs121gw_state_writes_total counter
vs121gw_state_writes_total 0
# HELP vs121gw_unknown_devices_total Messages from devices that are not in the configuration.
# TYPE vs121gw_unknown_devices_total counter
vs121gw_unknown_devices_total 0
"""


def test_default_metrics_at_start() -> None:
    text = default_metrics().registry.render()
    comments = sorted(line for line in text.splitlines() if line.startswith("#"))
    assert comments == sorted(
        line for line in DEFAULT_AT_START.splitlines() if line.startswith("#")
    )
    assert _scraped(text) == _scraped(DEFAULT_AT_START)


def test_default_metrics_in_use() -> None:
    m = default_metrics()
    m.messages.inc(source="mqtt", outcome="accepted")
    m.messages.inc(source="mqtt", outcome="decode_error")
    m.decode_errors.inc(sensor="lobby")
    m.duplicates.inc(sensor="lobby")
    m.unknown_devices.inc()
    m.sensors_stale.set(1)
    m.queue_depth.set_function(lambda: 4, source="mqtt")
    m.queue_overflow.inc(source="mqtt")
    m.state_writes.inc()
    m.state_write_seconds.observe(0.125)
    m.mqtt_connected.set(1)
    m.downlinks.inc(sensor="lobby", outcome="sent")
    m.bacnet_fd_registered.set(1)
    m.modbus_requests.inc(transport="rtu", outcome="ok")
    expected = [
        "vs121gw_bacnet_fd_registered 1",
        'vs121gw_decode_errors_total{sensor="lobby"} 1',
        'vs121gw_downlinks_total{sensor="lobby",outcome="sent"} 1',
        'vs121gw_duplicates_total{sensor="lobby"} 1',
        'vs121gw_messages_total{source="mqtt",outcome="accepted"} 1',
        'vs121gw_messages_total{source="mqtt",outcome="decode_error"} 1',
        'vs121gw_modbus_requests_total{transport="rtu",outcome="ok"} 1',
        "vs121gw_mqtt_connected 1",
        'vs121gw_queue_depth{source="mqtt"} 4',
        'vs121gw_queue_overflow_total{source="mqtt"} 1',
        "vs121gw_sensors_stale 1",
        "vs121gw_state_write_seconds_sum 0.125",
        "vs121gw_state_write_seconds_count 1",
        "vs121gw_state_writes_total 1",
        "vs121gw_unknown_devices_total 1",
    ]
    assert _scraped(m.registry.render()) == _scraped("\n".join(expected) + "\n")


@pytest.mark.parametrize("outcome", MESSAGE_OUTCOMES)
def test_every_planned_message_outcome_is_accepted(outcome: str) -> None:
    m = default_metrics()
    m.messages.inc(source="http", outcome=outcome)
    assert m.messages.value(source="http", outcome=outcome) == 1


def test_message_outcome_typos_are_refused() -> None:
    with pytest.raises(ValueError, match="is not one of"):
        default_metrics().messages.inc(source="mqtt", outcome="ok")


def test_default_metrics_are_independent_unless_sharing_a_registry() -> None:
    a, b = default_metrics(), default_metrics()
    a.unknown_devices.inc()
    assert b.unknown_devices.value() == 0
    with pytest.raises(ValueError, match="already registered"):
        default_metrics(a.registry)


def _scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as a Prometheus server reads it (prometheus_client's own parser)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_scrape_reads_the_same_names_labels_and_values_from_both_exporters() -> None:
    """The values live in prometheus_client: its own exporter and ours must agree."""
    m = default_metrics()
    m.messages.inc(3, source="mqtt", outcome="accepted")
    m.modbus_requests.inc(transport="tcp", outcome="ok")
    m.queue_depth.set_function(lambda: 5, source="http")
    m.state_write_seconds.observe(0.5)
    ours = _scraped(m.registry.render())
    theirs = {
        k: v
        for k, v in _scraped(generate_latest(m.registry.collector_registry).decode()).items()
        if not k[0].endswith("_created")
    }
    assert ours == theirs
    assert ours[("vs121gw_messages_total", (("outcome", "accepted"), ("source", "mqtt")))] == 3
    assert ours[("vs121gw_modbus_requests_total", (("outcome", "ok"), ("transport", "tcp")))] == 1
    assert ours[("vs121gw_queue_depth", (("source", "http"),))] == 5
    assert ours[("vs121gw_state_write_seconds_count", ())] == 1


def test_a_gauge_set_after_a_callback_shows_the_set_value() -> None:
    r = Registry()
    plain = r.gauge("plain", "Plain.")
    labelled = r.gauge("labelled", "Labelled.", ("k",))
    plain.set_function(lambda: 9)
    labelled.set_function(lambda: 9, k="a")
    plain.set(2)
    labelled.set(3, k="a")
    assert plain.value() == 2
    assert labelled.value(k="a") == 3
    assert scrape(r) == {("labelled", (("k", "a"),)): 3, ("plain", ()): 2}
