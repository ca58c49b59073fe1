"""The HTTP server: VS121-P report push (POST), Prometheus metrics and a health check.

A report is answered 200 only once its effect is durable, 400 with a one-line reason when it
cannot be used, 401 without valid basic auth, 413 when the body exceeds the limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway import control_token
from gateway.commands import REQUESTER, DeliveryRefusedError
from gateway.errors import EncodeError
from gateway.http_limits import LimitedSite
from gateway.ingest import IngestResult, Result
from gateway.settings import HttpSection

log = logging.getLogger("gateway.http")

IngestFn = Callable[[bytes, str], Awaitable[IngestResult]]  # (body, peer) -> result when durable
ResetFn = Callable[[str], Awaitable[str]]  # sensor id -> what was done; KeyError if unknown
# (sensor id, commands, requester=...) -> the command's record; see DownlinkCommands.
SendFn = Callable[..., Awaitable[dict[str, Any]]]
CLI_AGENT = "vs121-gateway-cli"  # the User-Agent of the command line's requests

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
        send: SendFn | None = None,
        commands: Callable[[str | None], list[dict[str, Any]]] | None = None,
        on_refused: Callable[[], None] | None = None,
        problem: Callable[[], str | None] | None = None,
        routes: Callable[[web.Application], None] | None = None,
        on_ack: Callable[[float], None] | None = None,
    ) -> None:
        self._cfg = cfg
        self._on_ack = on_ack  # seconds from a report's arrival to its 200
        self._ingest = ingest
        self._metrics_text = metrics_text
        self._healthy = healthy
        self._reset = reset
        self._status = status
        self._send = send
        self._commands = commands
        self._routes = routes  # more pages on this server (the commissioning page)
        self._runner: web.AppRunner | None = None
        self._password = cfg.basic_auth_password()
        self._control_token = control_token  # see gateway.control_token
        self.port: int | None = None
        self.max_connections = cfg.max_connections
        self._site: LimitedSite | None = None
        self._on_refused = on_refused or (lambda: None)
        self._problem = problem or (lambda: None)
        self.url: str | None = None

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self._cfg.max_body_bytes)
        app.router.add_post(self._cfg.path, self._post)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        if self._status is not None:
            app.router.add_get("/api/sensors", self._sensors)
        if self._reset is not None:
            app.router.add_post("/api/sensors/{sensor}/reset", self._reset_counts)
        if self._send is not None:
            app.router.add_post("/api/sensors/{sensor}/commands", self._send_command)
        if self._commands is not None:
            app.router.add_get("/api/commands", self._list_commands)
            app.router.add_get("/api/commands/{id}", self._get_command)
        if self._routes is not None:
            self._routes(app)
        return app

    async def start(self) -> None:
        # The keep-alive timer runs from the moment a connection opens, so it also closes
        # connections that never complete their request headers (slowloris).
        self._runner = web.AppRunner(
            self._app(),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self._cfg.idle_timeout,
        )
        await self._runner.setup()
        context = None
        if self._cfg.tls_cert_file is not None and self._cfg.tls_key_file is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self._cfg.tls_cert_file, self._cfg.tls_key_file)
        site = LimitedSite(
            self._runner,
            self._cfg.host,
            self._cfg.port,
            max_connections=self.max_connections,
            ssl_context=context,
            on_refused=self._on_refused,
        )
        self._site = site
        await site.start()
        bound = self._runner.addresses
        self.port = int(bound[0][1]) if bound else self._cfg.port
        scheme = "https" if context else "http"
        self.url = f"{scheme}://{self._cfg.host}:{self.port}/"
        log.info("HTTP listening on %s://%s:%s", scheme, self._cfg.host, self.port)

    @property
    def open_connections(self) -> int:
        return 0 if self._site is None else self._site.open_connections

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
            return _basic_auth_challenge()
        length = request.content_length
        if length is not None and length > self._cfg.max_body_bytes:
            log.warning("HTTP %s: rejected: body of %d bytes over the limit", peer, length)
            return web.Response(status=413, text="body too large\n")
        try:
            async with asyncio.timeout(self._cfg.body_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            log.warning("HTTP %s: rejected: body over the limit", peer)
            return web.Response(status=413, text="body too large\n")
        except TimeoutError:
            log.warning(
                "HTTP %s: rejected: body not received within %g s", peer, self._cfg.body_timeout
            )
            return web.Response(status=408, text="body too slow\n", headers={"Connection": "close"})
        arrived = time.monotonic()
        try:
            async with asyncio.timeout(self._cfg.ack_timeout):
                result = await self._ingest(body, peer)
        except TimeoutError:
            # Applied in memory but not on disk: not acknowledged; a retry is recognised.
            why = self._problem() or "state not written yet"
            return web.Response(status=503, text=_one_line(f"not stored: {why}; retry") + "\n")
        status = _STATUS[result.result]
        if status == 200 and self._on_ack is not None:
            self._on_ack(time.monotonic() - arrived)
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
            return self._refusal(request, "reset", "reset needs")
        assert self._reset is not None
        sensor = request.match_info["sensor"]
        REQUESTER.set(self._requester(request))
        try:
            done = await self._reset(sensor)
        except KeyError:
            return web.Response(status=404, text=f"unknown sensor {sensor!r}\n")
        log.info("HTTP %s: reset counts of sensor %s", request.remote or "?", sensor)
        return web.Response(text=_one_line(done) + "\n")

    def _refusal(self, request: web.Request, what: str, needs: str) -> web.Response:
        """403 where no basic auth is configured (no credentials could help), else 401."""
        log.warning(
            "HTTP %s: %s refused: no valid credentials (basic auth or control token)",
            request.remote or "?",
            what,
        )
        if self._cfg.username is None:
            text = f"{needs} http.username/password or the local control token\n"
            return web.Response(status=403, text=text)
        return _basic_auth_challenge()

    def _requester(self, request: web.Request) -> str:
        kind = "cli" if request.headers.get("User-Agent", "").startswith(CLI_AGENT) else "api"
        user = self._cfg.username or "anonymous"
        return f"{kind}:{user}@{request.remote or '?'}"

    def _command_allowed(self, request: web.Request) -> web.Response | None:
        """Commands change the sensors themselves: the same credentials as a reset."""
        if self._may_reset(request):
            return None
        return self._refusal(request, "command", "commands need")

    async def _send_command(self, request: web.Request) -> web.Response:
        refused = self._command_allowed(request)
        if refused is not None:
            return refused
        assert self._send is not None
        sensor = request.match_info["sensor"]
        try:
            doc = json.loads(await request.read())
        except (ValueError, RecursionError) as exc:
            return web.Response(status=400, text=_one_line(f"not valid JSON: {exc}") + "\n")
        commands = doc if isinstance(doc, list) else [doc]
        if not all(isinstance(c, dict) for c in commands):
            return web.Response(status=400, text="a command is a JSON object, or a list of them\n")
        try:
            record = await self._send(sensor, commands, requester=self._requester(request))
        except KeyError:
            return web.Response(status=404, text=f"unknown sensor {sensor!r}\n")
        except EncodeError as exc:
            return web.Response(status=400, text=_one_line(str(exc)) + "\n")
        except DeliveryRefusedError as exc:
            return web.Response(status=409, text=_one_line(f"refused: {exc}") + "\n")
        return web.json_response(record, status=202)

    async def _list_commands(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401, text="basic auth required\n")
        assert self._commands is not None
        return web.json_response(self._commands(request.query.get("sensor")))

    async def _get_command(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401, text="basic auth required\n")
        assert self._commands is not None
        wanted = request.match_info["id"]
        for record in self._commands(None):
            if record["id"] == wanted:
                return web.json_response(record)
        return web.Response(status=404, text=f"unknown command {wanted!r}\n")

    async def _sensors(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401, text="basic auth required\n")
        assert self._status is not None
        return web.json_response(self._status())

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=self._metrics_text(), content_type="text/plain", charset="utf-8")

    async def _health(self, _request: web.Request) -> web.Response:
        if not self._healthy():
            return web.Response(status=503, text="unhealthy\n")
        problem = self._problem()
        if problem is not None:
            return web.Response(status=503, text=_one_line(f"degraded: {problem}") + "\n")
        return web.Response(text="ok\n")


def _basic_auth_challenge() -> web.Response:
    return web.Response(
        status=401,
        text="basic auth required\n",
        headers={"WWW-Authenticate": 'Basic realm="vs121-gateway"'},
    )


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
