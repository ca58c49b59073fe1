"""The HTTP server on its own: auth, limits, status codes (the daemon tests cover the pipeline)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from gateway.http_source import HttpServer
from gateway.ingest import IngestResult, Result
from gateway.settings import HttpSection


class Recorder:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.resets: list[str] = []

    async def ingest(self, body: bytes, _peer: str) -> IngestResult:
        self.bodies.append(body)
        if body.startswith(b"{"):
            return IngestResult(Result.ACCEPTED, "s1")
        return IngestResult(Result.DECODE_ERROR, None, "body: not valid JSON\nsecond line")

    async def reset(self, sensor: str) -> str:
        if sensor != "s1":
            raise KeyError(sensor)
        self.resets.append(sensor)
        return "totals reset"


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[HttpServer, Recorder]]:
    rec = Recorder()
    cfg = HttpSection(port=1, username="bms", password="s3cret", max_body_bytes=4096)
    srv = HttpServer(
        cfg.model_copy(update={"port": 0}),
        rec.ingest,
        metrics_text=lambda: "m 1\n",
        healthy=lambda: True,
        reset=rec.reset,
    )
    await srv.start()
    yield srv, rec
    await srv.stop()


def auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.asyncio
async def test_auth_limits_and_reasons(server: tuple[HttpServer, Recorder]) -> None:
    srv, rec = server
    base = f"http://127.0.0.1:{srv.port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/vs121p", data=b"{}") as r:
            assert r.status == 401
        async with http.post(
            f"{base}/vs121p", data=b"{}", headers={"Authorization": "Basic w6nDqQ=="}
        ) as r:
            assert r.status == 401
        async with http.post(
            f"{base}/vs121p", data=b"{}", headers={"Authorization": "Basic \u00e9\u00e9"}
        ) as r:
            assert r.status == 401  # a non-ASCII token is refused, not a server error
        async with http.post(f"{base}/vs121p", data=b"{}", headers=auth("bms", "s3cret")) as r:
            assert r.status == 200
        async with http.post(f"{base}/vs121p", data=b"oops", headers=auth("bms", "s3cret")) as r:
            assert r.status == 400
            assert await r.text() == "decode_error: body: not valid JSON second line\n"
        async with http.post(
            f"{base}/vs121p", data=b"{" + b" " * 5000, headers=auth("bms", "s3cret")
        ) as r:
            assert r.status == 413
        async with http.post(f"{base}/api/sensors/s1/reset", headers=auth("bms", "s3cret")) as r:
            assert r.status == 200
        async with http.post(f"{base}/api/sensors/nope/reset", headers=auth("bms", "s3cret")) as r:
            assert r.status == 404
        async with http.get(f"{base}/metrics") as r:
            assert await r.text() == "m 1\n"
    assert rec.bodies == [b"{}", b"oops"]
    assert rec.resets == ["s1"]


class Commands:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[dict[str, object]], str]] = []

    async def send(
        self, sensor: str, commands: list[dict[str, object]], *, requester: str
    ) -> dict[str, object]:
        self.sent.append((sensor, commands, requester))
        return {"id": "c1", "state": "queued"}

    def records(self, sensor: str | None) -> list[dict[str, object]]:
        return [{"id": "c1", "sensor_id": "s1", "state": "queued"}]


@pytest.mark.asyncio
async def test_commands_need_auth_and_name_who_asked() -> None:
    commands = Commands()
    cfg = HttpSection(port=1, username="bms", password="s3cret")
    srv = HttpServer(
        cfg.model_copy(update={"port": 0}),
        Recorder().ingest,
        metrics_text=lambda: "",
        healthy=lambda: True,
        send=commands.send,
        commands=commands.records,
    )
    await srv.start()
    base = f"http://127.0.0.1:{srv.port}"
    try:
        async with aiohttp.ClientSession() as http:
            body = b'{"command": "reboot"}'
            async with http.post(f"{base}/api/sensors/s1/commands", data=body) as r:
                assert r.status == 401
            async with http.get(f"{base}/api/commands") as r:
                assert r.status == 401
            async with http.post(
                f"{base}/api/sensors/s1/commands", data=body, headers=auth("bms", "s3cret")
            ) as r:
                assert r.status == 202
                assert await r.json() == {"id": "c1", "state": "queued"}
            async with http.post(
                f"{base}/api/sensors/s1/commands", data=b"[1]", headers=auth("bms", "s3cret")
            ) as r:
                assert r.status == 400
            async with http.get(f"{base}/api/commands/c1", headers=auth("bms", "s3cret")) as r:
                assert (await r.json())["state"] == "queued"
            async with http.get(f"{base}/api/commands/zz", headers=auth("bms", "s3cret")) as r:
                assert r.status == 404
    finally:
        await srv.stop()
    assert commands.sent == [("s1", [{"command": "reboot"}], "api:bms@127.0.0.1")]
