"""The commissioning page: server-rendered pages on the gateway's own HTTP server, live updates
over server-sent events, and the few actions an installer needs (threshold, override, reset).

Who may do what:
- Reading: open to clients on loopback; from elsewhere it needs the configured HTTP credentials
  (and with none configured the gateway warns at start-up that the page is open to the network).
- Acting: always needs the configured credentials (HTTP basic auth), a POST, a same-origin
  request and the page's anti-forgery token. Each action is logged with the user's name.
Actions call the same functions the BACnet and Modbus writes call.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from importlib import resources
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web

from gateway.commands import CommandRefusedError
from gateway.pointdocs import points_text
from gateway.relay.logic import OVERRIDE_LEVEL
from gateway.settings import HttpSection
from gateway.state import Change
from gateway.web import chart, views
from gateway.web.live import Dirty, LiveHub, Topic
from gateway.web.records import FaultLog, MessageLog, Trend

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.web")

REALM = 'Basic realm="vs121-gateway", charset="UTF-8"'
NAV = (
    ("/", "Sensors", "sensors"),
    ("/points", "Points", "points"),
    ("/alarms", "Alarms", "alarms"),
    ("/gateway", "Gateway", "gateway"),
)
DOWNLOADS = {
    "ede": ("ede", "text/csv", "points-ede.csv", "BACnet EDE file"),
    "csv": ("csv", "text/csv", "points.csv", "Point list (CSV)"),
    "modbus": ("modbus", "text/markdown", "modbus-map.md", "Modbus map (Markdown)"),
    "modbus-csv": ("modbus-csv", "text/csv", "modbus-map.csv", "Modbus map (CSV)"),
}
NOTES_KEPT = 64
CHART_EVERY_S = 10.0
POINTS_PER_PAGE = 500


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def basic_user(header: str, username: str, password: str) -> str | None:
    """The user named by a basic-auth header when it carries the right credentials."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, given = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        return None
    ok_user = hmac.compare_digest(user.encode(), username.encode())
    ok_pass = hmac.compare_digest(given.encode(), password.encode())
    return user if ok_user and ok_pass else None


class WebUi:
    """Built with the gateway; `install(app)` adds its routes to the HTTP server."""

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self._cfg: HttpSection = gw.settings.http
        self._password = self._cfg.basic_auth_password()
        self.csrf_token = secrets.token_urlsafe(32)
        self.messages = MessageLog()
        self.trend = Trend(gw.state)
        self.faults = FaultLog()
        self.live = LiveHub(self._event)
        self.messages.listeners.append(self.live.on_message)
        self.faults.listeners.append(self.live.on_fault)
        self._notes: OrderedDict[str, str] = OrderedDict()
        self._chart_at: dict[str, float] = {}
        self._points = gw.settings.points()
        self._owners = list(dict.fromkeys(p.sensor_id or p.rule or "gateway" for p in self._points))
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("gateway.web", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self._env.filters["duration"] = views.duration
        self._env.filters["number"] = views.number
        self._env.filters["clock"] = lambda t: (
            "—" if t is None else time.strftime("%H:%M:%S", time.localtime(t))
        )
        self._env.filters["stamp"] = lambda t: (
            "—" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
        )
        logging.getLogger("gateway").addHandler(self.faults)

    def observe_state(self, change: Change) -> None:
        self.trend.on_change(change)
        self.live.on_change(change)

    def close(self) -> None:
        logging.getLogger("gateway").removeHandler(self.faults)

    # -- wiring -----------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.sensors_page)
        r.add_get("/sensors/{sensor}", self.sensor_page)
        r.add_get("/points", self.points_page)
        r.add_get("/points/download/{fmt}", self.download)
        r.add_get("/alarms", self.alarms_page)
        r.add_get("/gateway", self.gateway_page)
        r.add_get("/events", self.events)
        r.add_get("/login", self.login)
        r.add_post("/alarms/{rule}/threshold", self.set_threshold)
        r.add_post("/alarms/{rule}/override", self.override)
        r.add_post("/sensors/{sensor}/reset", self.reset)
        static = resources.files("gateway.web") / "static"
        r.add_static("/static", str(static), append_version=False)
        app.on_startup.append(self._started)
        app.on_shutdown.append(self._stopping)

    async def _started(self, _app: web.Application) -> None:
        self.live.start()

    async def _stopping(self, _app: web.Application) -> None:
        await self.live.close()

    def warn_if_exposed(self) -> None:
        """Said loudly at start-up: a page readable from the network without credentials."""
        if self._password is None and not is_loopback(_host_ip(self._cfg.host)):
            log.warning(
                "HTTP: no http.username/password set: the commissioning page on %s:%d is readable "
                "by anyone on the network (its actions stay disabled until credentials are set)",
                self._cfg.host,
                self._cfg.port,
            )

    # -- access -----------------------------------------------------------------------------

    def _user(self, request: web.Request) -> str | None:
        if self._cfg.username is None or self._password is None:
            return None
        return basic_user(
            request.headers.get("Authorization", ""), self._cfg.username, self._password
        )

    def _check_read(self, request: web.Request) -> str | None:
        user = self._user(request)
        if user is None and self._password is not None and not is_loopback(request.remote):
            raise _challenge()
        return user

    async def _check_action(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """The user and the form of an allowed action; raises the refusal otherwise. The body is
        read only once the credentials are good."""
        peer = request.remote or "?"
        if self._password is None:
            log.warning("web %s: action refused: no http.username/password configured", peer)
            raise _refuse(
                request, "Actions need http.username and http.password in the configuration."
            )
        user = self._user(request)
        if user is None:
            log.warning("web %s: action refused: missing or wrong credentials", peer)
            if _wants_json(request):
                # No challenge for the page's own background request: the browser would hold it
                # behind a sign-in prompt; the page points to "Sign in" instead.
                raise web.HTTPUnauthorized(
                    text=json.dumps({"ok": False, "message": "Sign in first, then try again."}),
                    content_type="application/json",
                )
            raise _challenge("Sign in with the gateway's HTTP credentials to do this.")
        origin = request.headers.get("Origin") or request.headers.get("Referer")
        if origin is not None and not _same_origin(origin, request):
            log.warning(
                "web %s (%s): action refused: cross-site request from %s", peer, user, origin[:100]
            )
            raise _refuse(request, "Refused: the request did not come from this page.")
        data = await request.post()
        form = {k: v for k, v in data.items() if isinstance(v, str)}
        token = request.headers.get("X-CSRF-Token") or form.get("csrf", "")
        if not hmac.compare_digest(token.encode(), self.csrf_token.encode()):
            log.warning("web %s (%s): action refused: missing or stale page token", peer, user)
            raise _refuse(request, "Refused: the page was out of date; reload it and try again.")
        return user, form

    # -- rendering --------------------------------------------------------------------------

    def _page(
        self, request: web.Request, template: str, active: str, title: str, **ctx: Any
    ) -> web.Response:
        user = self._check_read(request)
        note = self._notes.get(request.query.get("note", ""))
        html = self._env.get_template(template).render(
            title=title,
            active=active,
            nav=NAV,
            gw_name=self._gw.settings.gateway.name,
            version=views.gateway_info(self._gw).version,
            csrf=self.csrf_token,
            user=user,
            can_act=self._password is not None,
            note=note,
            path=request.path_qs,
            summary=self._summary(),
            **ctx,
        )
        return web.Response(
            text=html, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    def _fragment(self, template: str, **ctx: Any) -> str:
        return self._env.get_template(template).render(
            csrf=self.csrf_token, can_act=self._password is not None, **ctx
        )

    def _summary(self) -> dict[str, int]:
        sensors = self._gw.state.sensors.values()
        online = sum(1 for s in sensors if s.online)
        never = sum(1 for s in sensors if s.last_report is None)
        return {
            "online": online,
            "stale": len(sensors) - online - never,
            "never": never,
            "total": len(sensors),
        }

    def _people(self) -> float:
        return sum(
            s.values.get("people_count_all", 0) for s in self._gw.state.sensors.values() if s.online
        )

    # -- pages ------------------------------------------------------------------------------

    async def sensors_page(self, request: web.Request) -> web.Response:
        rows = views.sensor_rows(self._gw)
        people = self._people()
        return self._page(
            request, "sensors.html", "sensors", "Sensors", rows=rows, people=people, live="sensors"
        )

    async def sensor_page(self, request: web.Request) -> web.Response:
        sid = request.match_info["sensor"]
        cfg = next((s for s in self._gw.settings.sensors if s.id == sid), None)
        if cfg is None:
            self._check_read(request)
            raise web.HTTPNotFound(text=f"unknown sensor {sid!r}\n")
        return self._page(
            request,
            "sensor.html",
            "sensors",
            cfg.name,
            cfg=cfg,
            row=views.sensor_rows(self._gw, [sid])[0],
            stale_after=self._gw.state.sensors[sid].stale_after,
            points=self._sensor_points(sid),
            messages=self.messages.for_sensor(sid),
            chart=chart.render(self.trend.samples(sid)),
            live=f"sensor:{sid}",
        )

    def _sensor_points(self, sid: str) -> list[views.PointRow]:
        return views.point_rows(self._gw, [p for p in self._points if p.sensor_id == sid])

    async def points_page(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "").strip().lower()
        sensor = request.query.get("sensor", "")
        kind = request.query.get("type", "")
        writable = request.query.get("writable", "")
        # Filter on the point map first: only the rows shown are given values (a site with
        # hundreds of sensors has tens of thousands of points).
        chosen = [
            p
            for p in self._points
            if (not sensor or (p.sensor_id or p.rule or "gateway") == sensor)
            and (not kind or p.object_type.value == kind)
            and (not writable or p.writable == (writable == "yes"))
        ]
        if q:
            modbus = self._gw.settings.modbus
            chosen = [p for p in chosen if q in views.search_text(p, modbus)]
        try:
            page = max(1, int(request.query.get("page", "1")))
        except ValueError:
            page = 1
        pages = max(1, math.ceil(len(chosen) / POINTS_PER_PAGE))
        page = min(page, pages)
        first = (page - 1) * POINTS_PER_PAGE
        shown = views.point_rows(self._gw, chosen[first : first + POINTS_PER_PAGE])
        query = {k: v for k, v in request.query.items() if k != "page" and v}
        return self._page(
            request,
            "points.html",
            "points",
            "Points",
            rows=shown,
            matched=len(chosen),
            first=first,
            page=page,
            pages=pages,
            query=query,
            total=len(self._points),
            owners=self._owners,
            types=sorted({p.object_type.value for p in self._points}),
            q=request.query.get("q", ""),
            sensor=sensor,
            kind=kind,
            writable=writable,
            downloads=DOWNLOADS,
            live="",
        )

    async def download(self, request: web.Request) -> web.Response:
        self._check_read(request)
        entry = DOWNLOADS.get(request.match_info["fmt"])
        if entry is None:
            raise web.HTTPNotFound(text="no such download\n")
        fmt, mime, filename, _ = entry
        return web.Response(
            text=points_text(self._gw.settings, fmt),
            content_type=mime,
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def alarms_page(self, request: web.Request) -> web.Response:
        names = {s.id: s.name for s in self._gw.settings.sensors}
        return self._page(
            request,
            "alarms.html",
            "alarms",
            "Alarms",
            rules=views.alarm_rows(self._gw),
            names=names,
            live="alarms",
        )

    async def gateway_page(self, request: web.Request) -> web.Response:
        return self._page(
            request,
            "gateway.html",
            "gateway",
            "Gateway",
            info=views.gateway_info(self._gw),
            faults=list(self.faults.entries),
            unmatched=list(self.messages.unmatched),
            live="gateway",
        )

    async def login(self, request: web.Request) -> web.Response:
        if self._password is None:
            raise web.HTTPSeeOther("/")
        if self._user(request) is None:
            raise _challenge("Sign in with the gateway's HTTP credentials.")
        raise web.HTTPSeeOther(_local(request.query.get("next", "/")))

    async def events(self, request: web.Request) -> web.StreamResponse:
        self._check_read(request)
        page, _, sensor = request.query.get("topic", "sensors").partition(":")
        if page not in ("sensors", "sensor", "alarms", "gateway"):
            raise web.HTTPBadRequest(text="unknown topic\n")
        return await self.live.stream(request, (page, sensor))

    # -- live fragments ---------------------------------------------------------------------

    def _event(self, topic: Topic, dirty: Dirty) -> dict[str, Any]:
        page, sid = topic
        replace: dict[str, str] = {}
        prepend: dict[str, list[str]] = {}
        if dirty.sensors or dirty.full:
            replace["nav-summary"] = self._fragment("_summary.html", summary=self._summary())
        if page == "sensors" and (dirty.sensors or dirty.full):
            ids = None if dirty.full else sorted(dirty.sensors)
            for row in views.sensor_rows(self._gw, ids):
                replace[f"sensor-{row.id}"] = self._fragment("_sensor_row.html", row=row)
            replace["sensors-lead"] = self._fragment(
                "_sensors_lead.html", summary=self._summary(), people=self._people()
            )
        elif page == "sensor" and sid in self._gw.state.sensors:
            if dirty.full or sid in dirty.sensors:
                row = views.sensor_rows(self._gw, [sid])[0]
                replace["sensor-state"] = self._fragment("_sensor_state.html", row=row)
                replace["points-body"] = self._fragment(
                    "_points_body.html", points=self._sensor_points(sid)
                )
                now = time.monotonic()
                if dirty.full or now - self._chart_at.get(sid, -math.inf) >= CHART_EVERY_S:
                    self._chart_at[sid] = now
                    replace["chart"] = str(chart.render(self.trend.samples(sid)))
            new = dirty.messages.get(sid)
            if new:
                prepend["messages-body"] = [
                    self._fragment("_message_row.html", m=m) for m in reversed(new)
                ]
        elif page == "alarms" and (dirty.alarms or dirty.full):
            for rule in views.alarm_rows(self._gw):
                replace[f"alarm-{rule.id}-status"] = self._fragment("_alarm_status.html", rule=rule)
        elif page == "gateway":
            replace["gateway-status"] = self._fragment(
                "_gateway_status.html", info=views.gateway_info(self._gw)
            )
            if dirty.faults:
                prepend["faults-body"] = [
                    self._fragment("_fault_row.html", f=f) for f in dirty.faults
                ]
        out: dict[str, Any] = {}
        if replace:
            out["replace"] = replace
        if prepend:
            out["prepend"] = prepend
        return out

    # -- actions ----------------------------------------------------------------------------

    def _done(self, request: web.Request, user: str, what: str, back: str) -> web.Response:
        log.info("web %s: %s by %s", request.remote or "?", what, user)
        if _wants_json(request):
            return web.json_response({"ok": True, "message": what})
        note = secrets.token_urlsafe(8)
        self._notes[note] = what
        while len(self._notes) > NOTES_KEPT:
            self._notes.popitem(last=False)
        raise web.HTTPSeeOther(f"{back}?note={note}")

    def _failed(self, request: web.Request, status: int, what: str) -> web.Response:
        if _wants_json(request):
            return web.json_response({"ok": False, "message": what}, status=status)
        return web.Response(status=status, text=what + "\n")

    async def set_threshold(self, request: web.Request) -> web.Response:
        user, form = await self._check_action(request)
        rule = request.match_info["rule"]
        try:
            value = float(form.get("threshold", ""))
        except ValueError:
            return self._failed(request, 400, "The threshold must be a number.")
        try:
            done = await self._gw.set_alarm_threshold(rule, value)
        except KeyError:
            return self._failed(request, 404, f"Unknown alarm rule {rule!r}.")
        except ValueError as exc:
            return self._failed(request, 400, f"Not set: {exc}.")
        return self._done(request, user, f"alarm {rule}: {done}", "/alarms")

    async def override(self, request: web.Request) -> web.Response:
        user, form = await self._check_action(request)
        rule = request.match_info["rule"]
        choice = form.get("value", "")
        values: dict[str, bool | None] = {"active": True, "inactive": False, "relinquish": None}
        if choice not in values:
            return self._failed(request, 400, "Choose active, inactive or relinquish.")
        try:
            done = await self._gw.command_relay(rule, OVERRIDE_LEVEL, values[choice])
        except KeyError:
            return self._failed(request, 404, f"Unknown alarm rule {rule!r}.")
        except (ValueError, CommandRefusedError) as exc:
            return self._failed(request, 400, f"Not done: {exc}.")
        return self._done(request, user, f"alarm {rule}: relay {done}", "/alarms")

    async def reset(self, request: web.Request) -> web.Response:
        user, form = await self._check_action(request)
        sid = request.match_info["sensor"]
        try:
            done = await self._gw.reset_counts(sid)
        except KeyError:
            return self._failed(request, 404, f"Unknown sensor {sid!r}.")
        back = _local(form.get("back", f"/sensors/{sid}"))
        return self._done(request, user, f"sensor {sid}: {done}", back)


def _host_ip(host: str) -> str | None:
    return "127.0.0.1" if host == "localhost" else host


def _local(path: str) -> str:
    """A path on this server only (never another site: no open redirect)."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path.split("?", 1)[0]


def _same_origin(origin: str, request: web.Request) -> bool:
    expected = f"{request.scheme}://{request.host}"
    return origin == expected or origin.startswith(expected + "/")


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _challenge(text: str = "Sign in with the gateway's HTTP credentials.") -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(text=text + "\n", headers={"WWW-Authenticate": REALM})


def _refuse(request: web.Request, text: str) -> web.HTTPForbidden:
    if _wants_json(request):
        body = json.dumps({"ok": False, "message": text})
        return web.HTTPForbidden(text=body, content_type="application/json")
    return web.HTTPForbidden(text=text + "\n")
