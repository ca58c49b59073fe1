"""The HTTP server: VS121-P report push (POST), Prometheus metrics and a health check.

A report is answered 200 only once its effect is durable, 400 with a one-line reason when it
cannot be used, 401 without valid basic auth, 413 when the body exceeds the limit.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway import control_token
from gateway.ingest import IngestResult, Result
from gateway.settings import HttpSection

log = logging.getLogger("gateway.http")

IngestFn = Callable[[bytes, str], Awaitable[IngestResult]]  # (body, peer) -> result when durable
ResetFn = Callable[[str], Awaitable[str]]  # sensor id -> what was done; KeyError if unknown

_STATUS = {
    Result.ACCEPTED: 200,
    Result.PARTIAL: 200,
    Result.DUPLICATE: 200,
    Result.DECODE_ERROR: 400,
    Result.ENVELOPE_ERROR: 400,
    Result.REJECTED: 400,
    Result.UNKNOWN_DEVICE: 404,
}


class HttpServer:
    def __init__(
        self,
        cfg: HttpSection,
        ingest: IngestFn,
        *,
        metrics_text: Callable[[], str],
        healthy: Callable[[], bool],
        reset: ResetFn | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        control_token: str | None = None,
    ) -> None:
        self._cfg = cfg
        self._ingest = ingest
        self._metrics_text = metrics_text
        self._healthy = healthy
        self._reset = reset
        self._status = status
        self._runner: web.AppRunner | None = None
        self._password = cfg.basic_auth_password()
        self._control_token = control_token  # see gateway.control_token
        self.port: int | None = None

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self._cfg.max_body_bytes)
        app.router.add_post(self._cfg.path, self._post)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        if self._status is not None:
            app.router.add_get("/api/sensors", self._sensors)
        if self._reset is not None:
            app.router.add_post("/api/sensors/{sensor}/reset", self._reset_counts)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        context = None
        if self._cfg.tls_cert_file is not None and self._cfg.tls_key_file is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self._cfg.tls_cert_file, self._cfg.tls_key_file)
        site = web.TCPSite(self._runner, self._cfg.host, self._cfg.port, ssl_context=context)
        await site.start()
        bound = self._runner.addresses
        self.port = int(bound[0][1]) if bound else self._cfg.port
        scheme = "https" if context else "http"
        log.info("HTTP listening on %s://%s:%s", scheme, self._cfg.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorised(self, request: web.Request) -> bool:
        if self._cfg.username is None or self._password is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, ValueError):  # ValueError covers non-ASCII tokens too
            return False
        # Constant-time comparison of both parts.
        ok_user = hmac.compare_digest(user.encode(), self._cfg.username.encode())
        ok_pass = hmac.compare_digest(password.encode(), self._password.encode())
        return ok_user and ok_pass

    async def _post(self, request: web.Request) -> web.Response:
        peer = request.remote or "?"
        if not self._authorised(request):
            log.warning("HTTP %s: rejected: missing or wrong basic auth", peer)
            return web.Response(
                status=401,
                text="basic auth required\n",
                headers={"WWW-Authenticate": 'Basic realm="vs121-gateway"'},
            )
        length = request.content_length
        if length is not None and length > self._cfg.max_body_bytes:
            log.warning("HTTP %s: rejected: body of %d bytes over the limit", peer, length)
            return web.Response(status=413, text="body too large\n")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            log.warning("HTTP %s: rejected: body over the limit", peer)
            return web.Response(status=413, text="body too large\n")
        result = await self._ingest(body, peer)
        status = _STATUS[result.result]
        text = result.result.value if status == 200 else f"{result.result.value}: {result.reason}"
        return web.Response(status=status, text=_one_line(text) + "\n")

    def _may_reset(self, request: web.Request) -> bool:
        """Totals are billing-grade data for some sites: a reset needs the local control token
        or the configured basic auth, never just a connection (not even from this machine)."""
        given = request.headers.get(control_token.HEADER)
        if given is not None and self._control_token is not None:
            return hmac.compare_digest(given.encode(), self._control_token.encode())
        return self._cfg.username is not None and self._authorised(request)

    async def _reset_counts(self, request: web.Request) -> web.Response:
        if not self._may_reset(request):
            log.warning(
                "HTTP %s: reset refused: no valid credentials (basic auth or control token)",
                request.remote or "?",
            )
            if self._cfg.username is None:
                text = "reset needs http.username/password or the local control token\n"
                return web.Response(status=403, text=text)
            return web.Response(
                status=401,
                text="basic auth required\n",
                headers={"WWW-Authenticate": 'Basic realm="vs121-gateway"'},
            )
        assert self._reset is not None
        sensor = request.match_info["sensor"]
        try:
            done = await self._reset(sensor)
        except KeyError:
            return web.Response(status=404, text=f"unknown sensor {sensor!r}\n")
        log.info("HTTP %s: reset counts of sensor %s", request.remote or "?", sensor)
        return web.Response(text=_one_line(done) + "\n")

    async def _sensors(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401, text="basic auth required\n")
        assert self._status is not None
        return web.json_response(self._status())

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=self._metrics_text(), content_type="text/plain", charset="utf-8")

    async def _health(self, _request: web.Request) -> web.Response:
        if self._healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="unhealthy\n")


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
