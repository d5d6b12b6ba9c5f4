"""The watch-list web pages and JSON API, rendered on the server (no JavaScript build).

``create_app(engine=...)`` builds the app; whoever wires the processes serves it with
uvicorn on the settings' ``web_host``/``web_port``, over ``create_engine_for(watchlist_url)``.

The pages are read-only for now. The workflow (login, accepting and closing entries) is
meant to slot in as a ``current_actor`` dependency on the router and POST routes that call
``service.set_state`` and commit.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumers.watchlist import labels
from consumers.watchlist.export import export_csv
from consumers.watchlist.models import SEVERITIES, STATES, Entry, utcnow
from consumers.watchlist.service import (
    DEFAULT_SORT,
    SORTS,
    counts_by_state,
    evidence_of,
    get_entry,
    list_entries,
)
from schemas.events import RiskType

TEMPLATES_DIR: Final = Path(__file__).with_name("templates")
RISK_TYPES: Final[tuple[str, ...]] = RiskType.__args__  # type: ignore[attr-defined]
BEIJING: Final = dt.timezone(dt.timedelta(hours=8), "CST")
PAGE_SIZE: Final = 50

_SECURITY_HEADERS: Final[list[tuple[bytes, bytes]]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    # The pages name households at risk: keep them out of shared caches and history.
    (b"cache-control", b"no-store"),
]


class _SecurityHeaders:
    """Adds the headers above to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in _SECURITY_HEADERS if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- request parsing ----------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    """The list filters as they arrive in a URL, cleaned: blanks are None, a bad page
    number is page 1, an unknown sort is the default. Values are otherwise passed on
    untouched; the service binds them as parameters."""

    region: str | None = None
    risk_type: str | None = None
    severity: str | None = None
    state: str | None = None
    overdue: bool | None = None
    sort: str = DEFAULT_SORT
    page: int = 1
    page_size: int = PAGE_SIZE

    def service_filters(self) -> dict[str, Any]:
        return {
            "region_prefix": self.region,
            "risk_type": self.risk_type,
            "severity": self.severity,
            "state": self.state,
            "overdue": self.overdue,
        }

    def params(self) -> dict[str, str]:
        """The non-default values, for building links."""
        out: dict[str, str] = {}
        for key in ("region", "risk_type", "severity", "state"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.overdue is not None:
            out["overdue"] = "1" if self.overdue else "0"
        if self.sort != DEFAULT_SORT:
            out["sort"] = self.sort
        if self.page != 1:
            out["page"] = str(self.page)
        if self.page_size != PAGE_SIZE:
            out["page_size"] = str(self.page_size)
        return out


def _blank_to_none(value: str | None, max_len: int = 64) -> str | None:
    if value is None:
        return None
    value = value.strip()[:max_len]
    return value or None


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        n = int(value) if value is not None else default
    except ValueError:
        return default
    return min(max(n, lo), hi)


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    return None


def list_query(
    region: str | None = None,
    risk_type: str | None = None,
    severity: str | None = None,
    state: str | None = None,
    overdue: str | None = None,
    sort: str | None = None,
    page: str | None = None,
    page_size: str | None = None,
) -> ListQuery:
    return ListQuery(
        region=_blank_to_none(region, 12),
        risk_type=_blank_to_none(risk_type),
        severity=_blank_to_none(severity),
        state=_blank_to_none(state),
        overdue=_bool(overdue),
        sort=sort if sort in SORTS else DEFAULT_SORT,
        page=_int(page, 1, 1, 1_000_000),
        page_size=_int(page_size, PAGE_SIZE, 1, 500),
    )


def get_lang(lang: str | None = None) -> labels.Lang:
    return labels.parse_lang(lang)


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
LangDep = Annotated[labels.Lang, Depends(get_lang)]
QueryDep = Annotated[ListQuery, Depends(list_query)]


# -- presentation helpers -----------------------------------------------------------------


def _beijing(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def _money(value: Decimal | int | None) -> str:
    if value is None:
        return ""
    return f"{Decimal(value):,.2f}"


def _href(path: str, params: dict[str, str], lang: labels.Lang) -> str:
    if lang != labels.DEFAULT_LANG:
        params = {**params, "lang": lang}
    return path + ("?" + urlencode(params) if params else "")


def _context(request: Request, lang: labels.Lang, **extra: Any) -> dict[str, Any]:
    def t(key: str, **kwargs: Any) -> str:
        text_ = labels.label(lang, key)
        return text_.format(**kwargs) if kwargs else text_

    def v(value: str | None) -> str:
        return labels.value_label(lang, value)

    def paren(value: object) -> str:
        return f"（{value}）" if lang == "zh" else f" ({value})"

    other_lang: labels.Lang = "en" if lang == "zh" else "zh"
    params = {k: val for k, val in request.query_params.items() if k != "lang"}
    return {
        "lang": lang,
        "t": t,
        "v": v,
        "paren": paren,
        "beijing": _beijing,
        "money": _money,
        "switch_href": _href(request.url.path, params, other_lang),
        "list_href": _href("/", {}, lang),
        **extra,
    }


def _entry_json(entry: Entry, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": entry.id,
        "entry_key": entry.entry_key,
        "household_id": entry.household_id,
        "region_code": entry.region_code,
        "household_type": entry.household_type,
        "episode": entry.episode,
        "risk_type": entry.risk_type,
        "risk_types": entry.risk_type_list(),
        "rules": entry.rule_list(),
        "severity": entry.severity,
        "state": entry.state,
        "first_month": entry.first_month,
        "last_month": entry.last_month,
        "alert_count": entry.alert_count,
        "rule_version": entry.rule_version,
        "created_at": entry.created_at.isoformat(),
        "updated_at": entry.updated_at.isoformat(),
        "overdue": entry.is_overdue(now),
        "url": f"/entries/{entry.id}",
    }


# -- routes -------------------------------------------------------------------------------


def _router(templates: Jinja2Templates, clock: Callable[[], dt.datetime]) -> APIRouter:
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def list_page(request: Request, session: SessionDep, lang: LangDep, q: QueryDep) -> Response:
        now = clock()
        entries, total = list_entries(
            session=session, sort=q.sort, page=q.page, page_size=q.page_size, now=now,
            **q.service_filters(),
        )
        pages = max(1, math.ceil(total / q.page_size))
        base = q.params()
        base.pop("page", None)
        filter_params = {k: val for k, val in base.items() if k not in ("sort", "page_size")}

        def page_href(n: int) -> str:
            return _href("/", {**base, "page": str(n)} if n > 1 else base, lang)

        counts = counts_by_state(session=session)
        context = _context(
            request,
            lang,
            q=q,
            entries=entries,
            total=total,
            page=q.page,
            pages=pages,
            page_href=page_href,
            counts=counts,
            counts_total=sum(counts.values()),
            state_href=lambda s: _href("/", {"state": s}, lang),
            export_href=_href("/export.csv", filter_params, labels.DEFAULT_LANG),
            entry_href=lambda e: _href(f"/entries/{e.id}", {}, lang),
            now=now,
            states=STATES,
            severities=SEVERITIES,
            risk_types=RISK_TYPES,
            sorts=list(SORTS),
        )
        return templates.TemplateResponse(request, "list.html", context)

    @router.get("/entries/{entry_id}", response_class=HTMLResponse)
    def entry_page(
        request: Request, entry_id: int, session: SessionDep, lang: LangDep
    ) -> Response:
        entry = get_entry(session=session, entry_id=entry_id)
        if entry is None:
            return templates.TemplateResponse(
                request, "not_found.html", _context(request, lang), status_code=404
            )
        view = evidence_of(entry)
        context = _context(
            request,
            lang,
            entry=entry,
            reasons=view.reasons,
            evidence=view.evidence,
            evidence_month=view.month,
            evidence_alert_id=view.alert_id,
            below_line=view.evidence.projected_per_capita < view.evidence.monitoring_line,
            now=clock(),
        )
        return templates.TemplateResponse(request, "detail.html", context)

    @router.get("/export.csv")
    def export(session: SessionDep, q: QueryDep) -> Response:
        buf = io.StringIO(newline="")
        export_csv(session=session, out=buf, now=clock(), **q.service_filters())
        stamp = clock().astimezone(BEIJING).strftime("%Y%m%d-%H%M")
        return Response(
            content=buf.getvalue().encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="watchlist-{stamp}.csv"'},
        )

    @router.get("/api/entries")
    def api_entries(session: SessionDep, q: QueryDep) -> dict[str, Any]:
        now = clock()
        entries, total = list_entries(
            session=session, sort=q.sort, page=q.page, page_size=q.page_size, now=now,
            **q.service_filters(),
        )
        return {
            "total": total,
            "page": q.page,
            "page_size": q.page_size,
            "items": [_entry_json(e, now) for e in entries],
        }

    @router.get("/healthz")
    def healthz(session: SessionDep) -> Response:
        try:
            session.execute(text("SELECT 1"))
        except Exception as exc:  # any database failure means "not healthy"
            return JSONResponse({"status": "error", "error": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    return router


def create_app(*, engine: Engine, clock: Callable[[], dt.datetime] = utcnow,
               metrics: bool = False) -> FastAPI:
    """The watch-list web app over ``engine`` (tables must exist: see ``models.init_db``).

    ``clock`` gives "now" for overdue marks; tests pass a fixed one. ``metrics`` serves
    the process's Prometheus registry at ``/metrics``.
    """
    app = FastAPI(
        title="Fanpin watch list",
        docs_url=None,
        redoc_url=None,
    )
    app.state.sessions = sessionmaker(bind=engine, expire_on_commit=False)
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    app.include_router(_router(templates, clock))
    app.add_middleware(_SecurityHeaders)
    if metrics:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        @app.get("/metrics", include_in_schema=False)
        def prometheus_metrics() -> Response:
            return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


__all__ = ["ListQuery", "create_app"]
