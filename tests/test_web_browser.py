"""The commissioning page in a real browser (Debian's chromium through selenium) against the real
daemon in its own process, fed through a real mosquitto; the BMS side is read back with the BACnet
test peer and a Modbus TCP client. Screenshots of every page land in tests/screenshots/.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bacnet_peer.harness import Peer, free_udp_port
from helpers.broker import MosquittoBroker, free_port
from helpers.browser import chromium, needs_browser, screenshot, wait_for
from helpers.daemon import Daemon, new_http_port
from helpers.publisher import ChirpStackUplinks
from pymodbus.client import AsyncModbusTcpClient
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = [needs_browser, pytest.mark.slow]

HALL = "24e124538c000001"
LAB = "24e124538c000002"
QUIET = "24e124538c000003"
USER, PASSWORD = "installer", "s3cret-pass"
THRESHOLD_AV = "analog-value,500"
THRESHOLD_REG = 101


def config(
    state_dir: Path, *, mqtt_port: int, http_port: int, bacnet_port: int, modbus_port: int
) -> str:
    return f"""
[gateway]
name = "Test Site"
state_dir = "{state_dir}"

[bacnet]
address = "127.0.0.1/8"
broadcast = "127.255.255.255"
port = {bacnet_port}
device_instance = 121777

[modbus.tcp]
enabled = true
host = "127.0.0.1"
port = {modbus_port}

[http]
host = "127.0.0.1"
port = {http_port}
username = "{USER}"
password = "{PASSWORD}"

[mqtt]
enabled = true
host = "127.0.0.1"
port = {mqtt_port}
client_id = "gw-web-{state_dir.parent.name}"
keepalive = 5
reconnect_max = 2

[[mqtt.subscriptions]]
name = "chirpstack"
topic = "application/+/device/+/event/up"
envelope = "chirpstack"

[[sensors]]
id = "hall"
name = "Main Hall"
number = 1
model = "vs121"
dev_eui = "{HALL}"
region_count = 4
report_interval = 60

[[sensors]]
id = "lab"
name = "Lab"
number = 2
model = "vs121"
dev_eui = "{LAB}"
region_count = 2
report_interval = 60

[[sensors]]
id = "quiet"
name = "Quiet Room"
number = 3
model = "vs121"
dev_eui = "{QUIET}"
region_count = 2
report_interval = 5
stale_after = 10

[[alarms]]
id = "hall-crowd"
name = "Hall Crowd"
number = 1
sensors = ["hall"]
threshold = 20
hysteresis = 2
"""


class Site:
    def __init__(self, tmp: Path, broker: MosquittoBroker) -> None:
        self.http_port = new_http_port()
        self.bacnet_port = free_udp_port()
        self.modbus_port = free_port()
        text = config(
            tmp / "state",
            mqtt_port=broker.port,
            http_port=self.http_port,
            bacnet_port=self.bacnet_port,
            modbus_port=self.modbus_port,
        )
        self.daemon = Daemon(tmp, text, http_port=self.http_port)
        self.base = f"http://127.0.0.1:{self.http_port}"

    def status(self) -> dict[str, Any]:
        """GET /api/sensors with the site's credentials."""
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            self.base + "/api/sensors", headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            doc: dict[str, Any] = json.loads(response.read())
            return doc

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, mqtt_broker: MosquittoBroker) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("web"), mqtt_broker)
    s.daemon.start()
    s.daemon.wait_mqtt()
    yield s
    if s.daemon.running():
        assert s.daemon.stop() == 0


@pytest.fixture(scope="module")
def uplinks(mqtt_broker: MosquittoBroker) -> Iterator[ChirpStackUplinks]:
    pub = ChirpStackUplinks(mqtt_broker.port, "web-test-publisher")
    yield pub
    pub.close()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def cell_text(driver: WebDriver, row_id: str, column: int) -> str:
    row = driver.find_element(By.ID, row_id)
    return str(row.find_elements(By.CSS_SELECTOR, "th, td")[column].text)


def wait_live(driver: WebDriver) -> None:
    wait_for(
        driver,
        lambda d: d.find_element(By.ID, "live-state").text == "Live",
        "the live stream to connect",
    )


def test_sensor_table_updates_without_reload(
    site: Site, uplinks: ChirpStackUplinks, browser: WebDriver
) -> None:
    browser.get(site.url("/"))
    wait_live(browser)
    browser.execute_script("window.__sameDocument = 'yes';")  # gone if the page reloads
    assert cell_text(browser, "sensor-hall", 4) == "—"
    uplinks.send(HALL, obj={"people_count_all": 7, "region_1": 1, "region_3": 1})
    wait_for(browser, lambda d: cell_text(d, "sensor-hall", 4) == "7", "the hall's count")
    assert cell_text(browser, "sensor-hall", 5) == "1, 3"
    assert cell_text(browser, "sensor-hall", 2) == "Online"
    assert browser.execute_script("return window.__sameDocument") == "yes"
    uplinks.send(HALL, obj={"people_count_all": 9})
    wait_for(browser, lambda d: cell_text(d, "sensor-hall", 4) == "9", "the second report")
    assert browser.execute_script("return window.__sameDocument") == "yes"
    screenshot(browser, "sensors")


def test_sensor_turns_stale(site: Site, uplinks: ChirpStackUplinks, browser: WebDriver) -> None:
    uplinks.send(QUIET, obj={"people_count_all": 2})
    site.daemon.wait_until(lambda: site.status()["sensors"]["quiet"]["online"], what="quiet")
    browser.get(site.url("/"))
    wait_live(browser)
    row = browser.find_element(By.ID, "sensor-quiet")
    assert row.get_attribute("data-state") == "online"
    # Stale after 10 s of silence: the row changes state and look without a reload.
    wait_for(
        browser,
        lambda d: d.find_element(By.ID, "sensor-quiet").get_attribute("data-state") == "stale",
        "the quiet room to go stale",
        timeout=30,
    )
    row = browser.find_element(By.ID, "sensor-quiet")
    assert "state-stale" in (row.get_attribute("class") or "")
    assert cell_text(browser, "sensor-quiet", 2) == "⚠ Stale" or "Stale" in cell_text(
        browser, "sensor-quiet", 2
    )
    background = row.value_of_css_property("background-color")
    hall = browser.find_element(By.ID, "sensor-hall").value_of_css_property("background-color")
    assert background != hall  # visibly different
    screenshot(browser, "sensors-stale")
    browser.set_window_size(1280, 560)
    screenshot(browser, "readme-sensors", full_page=False)  # the picture in the README


def test_refused_message_shows_with_its_reason(
    site: Site, uplinks: ChirpStackUplinks, browser: WebDriver
) -> None:
    browser.get(site.url("/sensors/lab"))
    wait_live(browser)
    uplinks.send(LAB, data=bytes.fromhex("04c9030877"))  # the occupancy field cut short
    first = (By.CSS_SELECTOR, "#messages-body tr.msg")
    wait_for(browser, lambda d: d.find_elements(*first), "the message row")
    row = browser.find_element(*first)
    assert row.find_element(By.CSS_SELECTOR, ".badge").text in ("error", "partial")
    reason = row.find_element(By.CSS_SELECTOR, "td.reason").text
    expected = site.daemon.log_text()
    assert reason
    assert reason != "—"
    assert reason.split(";")[0][:30] in expected  # the same reason the log line gives
    row.find_element(By.CSS_SELECTOR, "summary").click()
    assert "04 c9 03 08 77" in row.text  # the raw payload, as the envelope carried it
    screenshot(browser, "sensor")


@pytest.fixture
def installer() -> Iterator[WebDriver]:
    """A browser whose user knows the gateway's HTTP credentials (answers the sign-in prompt)."""
    with chromium(credentials=(USER, PASSWORD)) as driver:
        yield driver


def test_threshold_from_the_page_reaches_bacnet_and_modbus(
    site: Site, installer: WebDriver
) -> None:
    browser = installer
    browser.get(site.url("/login?next=/alarms"))
    wait_for(browser, lambda d: d.current_url.endswith("/alarms"), "the alarms page")
    assert USER in browser.find_element(By.CSS_SELECTOR, ".user").text
    field = browser.find_element(By.ID, "threshold-hall-crowd")
    field.clear()
    field.send_keys("13")
    field.submit()
    wait_for(
        browser,
        lambda d: "threshold 13" in d.find_element(By.ID, "notice").text,
        "the gateway's answer",
    )
    wait_for(
        browser,
        lambda d: d.find_element(
            By.CSS_SELECTOR, "#alarm-hall-crowd-status [data-key=threshold]"
        ).text.startswith("13"),
        "the live status",
    )

    # The BMS (BACnet peer in its own process) and the PLC (Modbus TCP) see the same threshold.
    async def read_both() -> tuple[float, list[int]]:
        plc = AsyncModbusTcpClient("127.0.0.1", port=site.modbus_port, timeout=2, retries=0)
        peer = await Peer.start("client.py")
        try:
            answer = await peer.call(
                "read",
                address=f"127.0.0.1:{site.bacnet_port}",
                object=THRESHOLD_AV,
                property="presentValue",
            )
            assert await plc.connect()
            registers = (await plc.read_holding_registers(THRESHOLD_REG, count=1)).registers
            return float(answer["value"]), list(registers)
        finally:
            plc.close()
            await peer.stop()

    assert asyncio.run(read_both()) == (13.0, [13])
    # The override button: who is in control changes to the operator.
    browser.find_element(By.CSS_SELECTOR, "#alarm-hall-crowd button[value=active]").click()
    wait_for(
        browser,
        lambda d: (
            "priority 8"
            in d.find_element(By.CSS_SELECTOR, "#alarm-hall-crowd-status [data-key=control]").text
        ),
        "the override",
    )
    browser.find_element(By.CSS_SELECTOR, "#alarm-hall-crowd button[value=relinquish]").click()
    wait_for(
        browser,
        lambda d: (
            "Automatic"
            in d.find_element(By.CSS_SELECTOR, "#alarm-hall-crowd-status [data-key=control]").text
        ),
        "the relinquish",
    )
    log = site.daemon.log_text()
    assert f"alarm hall-crowd: threshold 13 by {USER}" in log  # who did it
    screenshot(browser, "alarms")


def test_action_without_credentials_is_refused(site: Site, browser: WebDriver) -> None:
    before = site.status()["gateway"]["rule_1_threshold"]
    browser.get(site.url("/alarms"))
    field = browser.find_element(By.ID, "threshold-hall-crowd")
    field.clear()
    field.send_keys("3")
    field.submit()
    wait_for(
        browser,
        lambda d: "Sign in" in d.find_element(By.ID, "notice").text,
        "the refusal",
    )
    assert "error" in (browser.find_element(By.ID, "notice").get_attribute("class") or "")
    assert site.status()["gateway"]["rule_1_threshold"] == before
    # Nor does a plain POST from elsewhere get through: no credentials, then no page token.
    url = site.url("/alarms/hall-crowd/threshold")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url, data=b"threshold=1", method="POST"))
    assert refused.value.code == 401
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    forged = urllib.request.Request(
        url,
        data=b"threshold=1",
        method="POST",
        headers={"Authorization": f"Basic {token}", "Origin": "http://evil.example"},
    )
    with pytest.raises(urllib.error.HTTPError) as cross:
        urllib.request.urlopen(forged)
    assert cross.value.code == 403
    assert site.status()["gateway"]["rule_1_threshold"] == before


def test_pages_work_without_javascript(site: Site) -> None:
    with chromium(javascript=False) as driver:
        driver.get(site.url("/"))
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#sensors-body th a")]
        assert names == ["Main Hall", "Lab", "Quiet Room"]
        driver.get(site.url("/points?sensor=lab&writable=yes"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#points-table tbody tr")
        assert rows
        assert all(r.get_attribute("data-owner") == "lab" for r in rows)
        assert all(r.get_attribute("data-writable") == "yes" for r in rows)
        for name, path in (
            ("points", "/points"),
            ("gateway", "/gateway"),
            ("sensor-hall", "/sensors/hall"),
        ):
            driver.get(site.url(path))
            assert driver.find_element(By.TAG_NAME, "h1").text
            screenshot(driver, name)


def test_zoom_200_percent_stays_readable(site: Site) -> None:
    # A 700 px wide window at 200% is a 350 CSS-pixel viewport: nothing may need sideways scrolling
    # outside the tables' own scroll boxes.
    with chromium(width=700, height=900) as driver:
        driver.get(site.url("/"))
        driver.execute_cdp_cmd("Emulation.setPageScaleFactor", {"pageScaleFactor": 1})
        driver.execute_script("document.body.style.zoom = '200%'")
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1
        screenshot(driver, "sensors-zoom200", full_page=False)


def test_controls_are_labelled_and_keyboard_reachable(site: Site, browser: WebDriver) -> None:
    from selenium.webdriver.common.keys import Keys

    for path in ("/alarms", "/points", "/sensors/hall"):
        browser.get(site.url(path))
        unlabelled = browser.execute_script(
            """
            return Array.from(document.querySelectorAll('input:not([type=hidden]), select'))
              .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
              .map(e => e.outerHTML);
            """
        )
        assert unlabelled == [], path
        nameless = browser.execute_script(
            "return Array.from(document.querySelectorAll('button'))"
            ".filter(b => !b.textContent.trim()).length"
        )
        assert nameless == 0, path
    # The first Tab reaches the skip link, the next ones the navigation.
    browser.get(site.url("/alarms"))
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    focused = []
    for _ in range(6):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        focused.append(browser.switch_to.active_element.text)
    assert {"Sensors", "Points", "Alarms", "Gateway"} <= set(focused)
