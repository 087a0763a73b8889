"""The dashboard's ASGI application: server-rendered pages, refreshed in place.

Two pages, each a full HTML page or, asked with the ``X-Pprunner-Live``
header, only its live part, which ``static/live.js`` (fetch every
``interval``, no build step) swaps in. POSTs act through :class:`Watch` and
answer with a redirect back (post/redirect/get): a reload never repeats one.
"""

from __future__ import annotations

import collections
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pprunner import control
from pprunner.config import parse_duration
from pprunner.display import duration_text, shown_url
from pprunner.errors import PprunnerError
from pprunner.invocation import Status, this_host
from pprunner.top import failure_row, sections, summary

from . import access
from .watch import RatePoint, Watch

HERE = Path(__file__).resolve().parent
#: the header live.js sends: answer with the page's live part only
LIVE_HEADER = "x-pprunner-live"
#: notices kept for the page a POST redirects to
NOTICES_KEPT = 100
#: the rates chart's size in SVG units
CHART_WIDTH, CHART_HEIGHT = 600, 80


def chart_points(history: collections.deque[RatePoint], field: str) -> str:
    """An SVG polyline's ``points`` for one rate over the history, scaled to the
    chart's height by the highest rate of either kind (0 stays at the bottom)."""
    points = list(history)
    if len(points) < 2:
        return ""
    top = max(max(p.succeeded, p.failed) for p in points) or 1.0
    first, span = points[0].at, (points[-1].at - points[0].at) or 1.0
    return " ".join(f"{CHART_WIDTH * (p.at - first) / span:.1f},"
                    f"{CHART_HEIGHT * (1 - getattr(p, field) / top):.1f}" for p in points)


class Dashboard:
    """Routes and state of one ``pprunner web``."""

    def __init__(self, watch: Watch, *, title: str, token: str | None,
                 read_only: bool) -> None:
        self.watch = watch
        self.title = title
        self.token = token
        self.read_only = read_only
        self.csrf = access.new_csrf_secret()
        self.notices: collections.OrderedDict[str, list[str]] = collections.OrderedDict()
        self.templates = Jinja2Templates(directory=HERE / "templates")

    def asgi(self) -> Starlette:
        routes = [Route("/", self.overview), Route("/failures", self.failures),
                  Route("/retry", self.retry, methods=["POST"]),
                  Route("/purge", self.purge, methods=["POST"]),
                  Route("/scale", self.scale, methods=["POST"]),
                  Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
        return Starlette(routes=routes,
                         middleware=[Middleware(BaseHTTPMiddleware, dispatch=self.guard)],
                         exception_handlers={PprunnerError: _store_unreadable})

    # -- access --------------------------------------------------------------------

    async def guard(self, request: Request,
                    call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """The token (when there is one) on every request, else a loopback ``Host``;
        the CSRF secret and the origin on every POST; nothing that writes in
        read-only mode."""
        if self.token is None:
            if not access.loopback_host(request.headers.get("host", "")):
                return PlainTextResponse(
                    "403 Forbidden: this dashboard has no token, so it answers only "
                    "requests addressed to this host's loopback (localhost, 127.0.0.1)",
                    status_code=403)
        else:
            if access.matches(request.query_params.get("token"), self.token):
                return self._keep_token(request)
            if not access.matches(access.presented_token(dict(request.headers),
                                                         request.cookies), self.token):
                return PlainTextResponse(
                    "401 Unauthorized: this dashboard needs its token: open it once as "
                    "/?token=..., or send Authorization: Bearer ...", status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="pprunner web"'})
        if request.method == "POST":
            if self.read_only:
                return PlainTextResponse("403 Forbidden: pprunner web runs --read-only",
                                         status_code=403)
            form = request.state.form = await _form(request)
            if not (access.matches(form.get(access.CSRF_FIELD), self.csrf)
                    and access.same_origin(request.headers.get("origin"),
                                           request.headers.get("host"))):
                return PlainTextResponse("403 Forbidden: this form did not come from the "
                                         "dashboard's own page (reload it and try again)",
                                         status_code=403)
        return await call_next(request)

    def _keep_token(self, request: Request) -> Response:
        """A browser that gave ``?token=`` keeps it in a cookie, and the address bar
        (and history) loses it."""
        target = request.url.remove_query_params("token")
        response = RedirectResponse(target.path + (f"?{target.query}" if target.query else ""),
                                    status_code=303)
        response.set_cookie(access.COOKIE, request.query_params["token"], httponly=True,
                            samesite="strict", path="/")
        return response

    # -- pages ---------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        snapshot = self.watch.snapshot()
        history = self.watch.history
        supervisors, workers, latest = sections(snapshot)
        local = {v.runner.id for v in snapshot.supervisors
                 if v.runner.host == this_host() and not v.lost_because}
        return self._page(request, "overview", snapshot=snapshot, summary=summary(snapshot),
                          supervisors=supervisors, workers=workers, latest=latest,
                          scalable=local, succeeded=chart_points(history, "succeeded"),
                          failed=chart_points(history, "failed"),
                          peak=max((max(p.succeeded, p.failed) for p in history), default=0.0),
                          span=duration_text(history[-1].at - history[0].at),
                          chart_width=CHART_WIDTH, chart_height=CHART_HEIGHT)

    def failures(self, request: Request) -> Response:
        snapshot = self.watch.snapshot()
        task = request.query_params.get("task", "").strip()
        found = self.watch.search_failures(task) if task else list(snapshot.failures)
        rows = [(failure_row(i, snapshot.taken_at), i) for i in found]
        return self._page(request, "failures", snapshot=snapshot, task=task, rows=rows,
                          failed=snapshot.counts.get(Status.FAILED, 0))

    def _page(self, request: Request, name: str, **context: Any) -> Response:
        live = LIVE_HEADER in request.headers
        context.update(request=request, title=self.title, read_only=self.read_only,
                       csrf=self.csrf, csrf_field=access.CSRF_FIELD,
                       interval_ms=int(self.watch.interval * 1000), page=name,
                       notices=self.notices.get(request.query_params.get("notice", ""), []))
        template = f"{name}_live.html" if live else f"{name}.html"
        return self.templates.TemplateResponse(request, template, context,
                                               headers={"Cache-Control": "no-store"})

    # -- actions -------------------------------------------------------------------

    def retry(self, request: Request) -> Response:
        form = request.state.form
        invocation_id = form.get("id", "")
        done = self.watch.retry(invocation_id)
        return self._back(request, "/failures", [
            f"requeued {invocation_id}" if done else
            f"{invocation_id} is not FAILED (or unknown): left alone"])

    def purge(self, request: Request) -> Response:
        form = request.state.form
        text = form.get("older_than", "").strip()
        try:
            older_than = parse_duration(text)
        except ValueError as exc:
            return self._back(request, "/", [f"purge: {text!r}: {exc}"])
        purged, all_gone = self.watch.purge(older_than)
        return self._back(request, "/", [
            f"deleted {purged} invocation(s) that finished more than "
            f"{duration_text(older_than)} ago" + ("" if all_gone else
                                                 "; more remain: purge again")])

    def scale(self, request: Request) -> Response:
        form = request.state.form
        try:
            processes = int(form.get("processes", ""))
        except ValueError:
            processes = 0
        if processes < 1:
            return self._back(request, "/", ["scale: the number of workers must be a whole "
                                              "number, at least 1"])
        notices = self.watch.scale(processes, form.get("supervisor", ""))
        return self._back(request, "/", [
            n.text if n.outcome is control.Outcome.SENT else f"{n.outcome.value}: {n.text}"
            for n in notices])

    def _back(self, request: Request, path: str, lines: list[str]) -> Response:
        """Redirect to ``path``, which shows ``lines`` once it loads."""
        key = secrets.token_urlsafe(8)
        self.notices[key] = lines
        while len(self.notices) > NOTICES_KEPT:
            self.notices.popitem(last=False)
        return RedirectResponse(f"{path}?notice={key}", status_code=303)


def create_app(watch: Watch, *, title: str, token: str | None = None,
               read_only: bool = False) -> Starlette:
    """The dashboard over ``watch``; ``token`` None means no token is asked for."""
    return Dashboard(watch, title=title, token=token, read_only=read_only).asgi()


async def _form(request: Request) -> dict[str, str]:
    """The fields of the dashboard's forms (URL-encoded, one value each): parsed here,
    which spares the web extra python-multipart for three small forms."""
    body = (await request.body()).decode(errors="replace")
    return dict(urllib.parse.parse_qsl(body, max_num_fields=20))


def title_for(app_name: str, url: str) -> str:
    return f"pprunner web: {app_name}, {shown_url(url)}"


async def _store_unreadable(request: Request, exc: Exception) -> Response:
    """A store that cannot be read is a line on the page, and live.js keeps what it
    showed and tries again at the next refresh."""
    return PlainTextResponse(f"503 Service Unavailable: cannot read the store: {exc}",
                             status_code=503)
