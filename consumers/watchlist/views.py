"""The duty officers' workspace: web pages and a JSON API, rendered on the server.

``create_app(engine=...)`` builds the app (tables must exist: ``models.init_db``);
``fanpin web`` serves it with uvicorn. No JavaScript and no front-end build: forms post
back and the server redirects (post/redirect/get).

Everything except the login page needs a session. Each account sees only its own region
(``access``); the pages, the API and the exports share one query path, so the scoping is
the same everywhere. Every POST carries the session's CSRF token (a form field on pages,
the ``X-CSRF-Token`` header on the API). Opening an entry records the view in its audit
trail, since the page shows personal details.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Engine, select, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumers.watchlist import access, auth, labels, workflow
from consumers.watchlist.export import HEALTH_RISK_TYPES, export_csv, export_xlsx
from consumers.watchlist.export import HEALTH_RULES as HEALTH_RULE_NAMES
from consumers.watchlist.feeds import feed_summary
from consumers.watchlist.models import (
    CLOSED_STATES,
    PENDING_STATES,
    ROLE_ADMIN,
    ROLE_COUNTY,
    ROLE_PUBLISHER,
    ROLE_TOWNSHIP,
    ROLE_VILLAGE,
    SEVERITIES,
    STATES,
    Entry,
    RegionName,
    User,
    WebSession,
    utcnow,
)
from consumers.watchlist.service import (
    DEFAULT_SORT,
    FLAGS,
    SORTS,
    EntryFilter,
    counts_by_state,
    evidence_of,
    get_entry,
    list_entries,
)
from schemas.events import Alert, RiskType, decode_event

TEMPLATES_DIR: Final = Path(__file__).with_name("templates")
RISK_TYPES: Final[tuple[str, ...]] = RiskType.__args__  # type: ignore[attr-defined]
BEIJING: Final = access.BEIJING
PAGE_SIZE: Final = 50
SESSION_COOKIE: Final = "fanpin_session"
LOGIN_COOKIE: Final = "fanpin_login"  # double-submit token for the login form
# Reasons whose details are health information (only health roles see them).
HEALTH_RISKS: Final = HEALTH_RISK_TYPES
HEALTH_DEPTS: Final = frozenset({"medical"})
HEALTH_RULES: Final = HEALTH_RULE_NAMES
REGION_OPTIONS_MAX: Final = 3000
# Who sees the department-file receipts: the publishers, and those who run the county.
FILES_ROLES: Final = (ROLE_PUBLISHER, ROLE_ADMIN, ROLE_COUNTY)

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
    assignee: str | None = None
    flag: str | None = None
    sort: str = DEFAULT_SORT
    page: int = 1
    page_size: int = PAGE_SIZE

    def filters(self, user: User) -> EntryFilter:
        """The service filter, narrowed to what ``user`` may see."""
        region = access.narrow(user, self.region)
        assignee = user.username if self.assignee == "me" else self.assignee
        # Filtering by illness would tell a role that may not see health details who is ill.
        hidden = self.risk_type in HEALTH_RISKS and not access.sees_health(user)
        return EntryFilter(
            region_prefix=region, risk_type=self.risk_type, severity=self.severity,
            state=self.state, overdue=self.overdue, assignee=assignee, flag=self.flag,
            nothing=region is None or hidden,
        )

    def params(self) -> dict[str, str]:
        """The non-default values, for building links."""
        out: dict[str, str] = {}
        for key in ("region", "risk_type", "severity", "state", "assignee", "flag"):
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
    assignee: str | None = None,
    flag: str | None = None,
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
        assignee=_blank_to_none(assignee),
        flag=_blank_to_none(flag),
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


def _clock(request: Request) -> dt.datetime:
    now: dt.datetime = request.app.state.clock()
    return now


SessionDep = Annotated[Session, Depends(get_session)]
LangDep = Annotated[labels.Lang, Depends(get_lang)]
QueryDep = Annotated[ListQuery, Depends(list_query)]
NowDep = Annotated[dt.datetime, Depends(_clock)]


# -- who is asking ------------------------------------------------------------------------


class LoginRequired(Exception):
    pass


class NotAllowed(Exception):
    """The account may not use this page at all (a publisher on the watch list)."""


@dataclass(frozen=True)
class Auth:
    user: User
    web: WebSession


def _auth(request: Request, session: Session) -> Auth | None:
    found = auth.session_user(session=session, token=request.cookies.get(SESSION_COOKIE),
                              now=request.app.state.clock())
    return Auth(*found) if found else None


def page_auth(request: Request, session: SessionDep) -> Auth:
    found = _auth(request, session)
    if found is None:
        raise LoginRequired()
    return found


def api_auth(request: Request, session: SessionDep) -> Auth:
    found = _auth(request, session)
    if found is None:
        raise ApiError(401, "需要登录。", "Login required.")
    return found


def watch_page_auth(a: Annotated[Auth, Depends(page_auth)]) -> Auth:
    if a.user.role == ROLE_PUBLISHER:
        raise NotAllowed()
    return a


def watch_api_auth(a: Annotated[Auth, Depends(api_auth)]) -> Auth:
    if a.user.role == ROLE_PUBLISHER:
        raise ApiError(403, "部门数据发布员无权查看监测清单。",
                       "Department publishers have no access to the watch list.")
    return a


PageAuth = Annotated[Auth, Depends(watch_page_auth)]
AnyPageAuth = Annotated[Auth, Depends(page_auth)]
ApiAuth = Annotated[Auth, Depends(watch_api_auth)]


class ApiError(Exception):
    def __init__(self, status: int, zh: str, en: str) -> None:
        super().__init__(en)
        self.status, self.zh, self.en = status, zh, en


def _api_csrf(request: Request, a: Auth) -> None:
    if not auth.csrf_ok(a.web, request.headers.get("x-csrf-token")):
        raise ApiError(403, "CSRF 校验失败。", "Missing or wrong X-CSRF-Token header.")


# -- presentation helpers -----------------------------------------------------------------


def _beijing(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def _day(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(BEIJING).strftime("%Y-%m-%d")


def _money(value: Decimal | int | None) -> str:
    if value is None:
        return ""
    return f"{Decimal(value):,.2f}"


def _href(path: str, params: dict[str, str], lang: labels.Lang) -> str:
    if lang != labels.DEFAULT_LANG:
        params = {**params, "lang": lang}
    return path + ("?" + urlencode(params) if params else "")


def _context(request: Request, lang: labels.Lang, a: Auth | None = None,
             **extra: Any) -> dict[str, Any]:
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
        "day": _day,
        "money": _money,
        "switch_href": _href(request.url.path, params, other_lang),
        "list_href": _href("/", {}, lang),
        "href": lambda path, **p: _href(path, {k: str(x) for k, x in p.items()}, lang),
        "user": a.user if a else None,
        "csrf": a.web.csrf_token if a else "",
        **extra,
    }


def mask_health(text_: str | None) -> str | None:
    """Health details out of a free-text value (an audit row) for roles that do not see
    them: illness and disability as risk types, and the medical rules' names."""
    if not text_:
        return text_
    for word in (*sorted(HEALTH_RISKS), *sorted(HEALTH_RULES)):
        text_ = text_.replace(word, "＊")
    return text_


def _entry_json(entry: Entry, now: dt.datetime, health: bool = True) -> dict[str, Any]:
    out = _entry_fields(entry, now)
    if not health:
        kinds = [r for r in out["risk_types"] if r not in HEALTH_RISKS]
        out["risk_types"] = kinds
        out["risk_type"] = entry.risk_type if entry.risk_type not in HEALTH_RISKS else None
        out["rules"] = [r for r in out["rules"] if r not in HEALTH_RULES]
    return out


def _entry_fields(entry: Entry, now: dt.datetime) -> dict[str, Any]:
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
        "assignee": entry.assignee,
        "first_month": entry.first_month,
        "last_month": entry.last_month,
        "alert_count": entry.alert_count,
        "rule_version": entry.rule_version,
        "created_at": entry.created_at.isoformat(),
        "updated_at": entry.updated_at.isoformat(),
        "due_at": entry.due_at().isoformat(),
        "overdue": entry.is_overdue(now),
        "monitored_type": entry.monitored_type,
        "dismiss_reason": entry.dismiss_reason,
        "elimination_kind": entry.elimination_kind,
        "identified_at": entry.identified_at.isoformat() if entry.identified_at else None,
        "measure_count": entry.measure_count,
        "needs_measure": entry.needs_measure(now),
        "snoozed_until": entry.snoozed_until.isoformat() if entry.is_snoozed(now)
        and entry.snoozed_until else None,
        "escalated": entry.escalated_at is not None or entry.supervised_at is not None,
        "url": f"/entries/{entry.id}",
    }


def _redact_health(entry_view: dict[str, Any]) -> dict[str, Any]:
    """Drop the health details from an entry's evidence, for roles that do not need them."""
    ev = dict(entry_view["evidence"])
    ev["rigid_spending_12m"] = None
    ev["sources"] = [s for s in ev.get("sources", []) if s["dept"] not in HEALTH_DEPTS]
    entry_view["history"] = [{**h, "old": mask_health(h["old"]), "new": mask_health(h["new"])}
                             for h in entry_view.get("history", [])]
    ev["history"] = [{**m, "out_of_pocket": None} for m in ev.get("history", [])]
    entry_view = {**entry_view, "evidence": ev}
    entry_view["reasons"] = [
        {**r, "detail": None} if r["risk_type"] in HEALTH_RISKS else r
        for r in entry_view["reasons"]
    ]
    return entry_view


# Region-code prefix lengths of the five levels, and their names in regions.csv.
LEVEL_DIGITS: Final[dict[str, int]] = {"省": 2, "市": 4, "县": 6, "乡镇": 9, "村": 12}
_LEVEL_OF_DIGITS: Final[dict[int, str]] = {d: name for name, d in LEVEL_DIGITS.items()}


def _region_options(session: Session, user: User, selected: str | None = None
                    ) -> list[RegionName]:
    """The region filter's choices, as a cascade: the way from the user's own region down
    to the selected one, and the selected one's next level (a county's townships, a
    township's villages). Choosing one and searching offers the level below it, so a
    province's thousands of villages never fill one drop-down."""
    scope = access.scope_prefix(user)
    chosen = selected if selected and selected.isascii() and selected.isdigit() else None
    base = chosen if chosen and chosen.startswith(scope) else scope
    lengths = sorted(LEVEL_DIGITS.values())
    path = [base[:n].ljust(12, "0") for n in lengths if len(scope) <= n <= len(base)]
    if scope and len(scope) in lengths:
        path.append(scope.ljust(12, "0"))
    below = next((n for n in lengths if n > len(base)), None)
    where: ColumnElement[bool] = RegionName.code.in_(set(path))
    if below is not None:
        where = where | (RegionName.code.startswith(base, autoescape=True)
                         & (RegionName.level == _LEVEL_OF_DIGITS[below]))
    stmt = select(RegionName).where(where).order_by(RegionName.code).limit(REGION_OPTIONS_MAX)
    return list(session.scalars(stmt))


def _display_names(session: Session, usernames: set[str | None]) -> dict[str, str]:
    wanted = {u for u in usernames if u}
    if not wanted:
        return {}
    rows = session.execute(select(User.username, User.display_name)
                           .where(User.username.in_(wanted)))
    return {u: d or u for u, d in rows}


def _region_names(session: Session, codes: set[str]) -> dict[str, str]:
    if not codes:
        return {}
    rows = session.execute(select(RegionName.code, RegionName.name)
                           .where(RegionName.code.in_(codes)))
    return {code: name for code, name in rows}


def _region_path(session: Session, code: str) -> str:
    """"云溪县 城关镇 东山村" for a village code, from the regions table ("" if unknown)."""
    wanted = [code[:6] + "0" * 6, code[:9] + "000", code]
    names = _region_names(session, set(wanted))
    return " ".join(names[c] for c in dict.fromkeys(wanted) if c in names)


def _region_prefix_of(region: RegionName) -> str:
    return region.code[:LEVEL_DIGITS.get(region.level, 12)]


def _officers_for(session: Session, entry: Entry) -> list[User]:
    """Active officers whose region covers the entry's village (its village, township or
    county), for the assign drop-down."""
    code = entry.region_code
    users = session.scalars(select(User).where(
        User.active,
        User.role.in_((ROLE_VILLAGE, ROLE_TOWNSHIP, ROLE_COUNTY)),
        User.region_code.in_((code[:6], code[:9], code[:12])),
    ).order_by(User.role, User.username))
    return [u for u in users if access.can_see(u, entry.region_code)]


def _alerts_of(entry: Entry) -> list[Alert]:
    out: list[Alert] = []
    for record in entry.alerts:
        event = decode_event(record.payload.encode())
        if isinstance(event, Alert):
            out.append(event)
    return out


def _charts(entry: Entry, lang: labels.Lang, health: bool) -> dict[str, str]:
    from consumers.watchlist import charts

    alerts = _alerts_of(entry)
    history = charts.household_series(alerts)
    ev = evidence_of(entry).evidence
    out = {"income": charts.income_chart(history, ev.monitoring_line, ev.household_size, lang),
           "employment": charts.employment_chart(history, lang)}
    if health:
        out["oop"] = charts.oop_chart(history, lang)
    return out


# -- the workflow's actions, shared by pages and API ----------------------------------------


def _parse_until(value: Any, now: dt.datetime) -> dt.datetime:
    """A snooze expiry: a date (the end of that day, Beijing time) or an ISO timestamp."""
    raw = str(value or "").strip()
    try:
        if len(raw) == 10:
            day = dt.date.fromisoformat(raw)
            return dt.datetime.combine(day, dt.time(23, 59), BEIJING).astimezone(dt.UTC)
        parsed = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise workflow.WorkflowError("请填写有效的暂缓截止日期。", "Give a valid expiry date.",
                                     status=422) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=BEIJING)


def _escalate_and_notify(*, session: Session, user: User, entry_id: int, reason: str,
                         now: dt.datetime) -> workflow.Outcome:
    from consumers.watchlist import notify

    outcome = workflow.escalate(session=session, user=user, entry_id=entry_id, reason=reason,
                                now=now)
    recipients = notify.responsible_officers(session, outcome.entry)
    notify.queue(session, entry=outcome.entry, kind="escalation", recipients=recipients,
                 now=now, tag=now.strftime("%Y%m%d%H%M%S"))
    return outcome


Action = Callable[[Session, User, int, dict[str, Any], dt.datetime], workflow.Outcome]

ACTIONS: Final[dict[str, Action]] = {
    "claim": lambda s, u, i, f, now: workflow.claim(session=s, user=u, entry_id=i, now=now),
    "visit": lambda s, u, i, f, now: workflow.start_visit(
        session=s, user=u, entry_id=i, note=f.get("note"), now=now),
    "identify": lambda s, u, i, f, now: workflow.identify(
        session=s, user=u, entry_id=i, monitored_type=str(f.get("monitored_type") or ""),
        now=now),
    "dismiss": lambda s, u, i, f, now: workflow.dismiss(
        session=s, user=u, entry_id=i, reason=str(f.get("reason") or ""), now=now),
    "measure": lambda s, u, i, f, now: workflow.add_measure(
        session=s, user=u, entry_id=i, category=str(f.get("category") or ""),
        text=str(f.get("text") or ""), now=now),
    "eliminate": lambda s, u, i, f, now: workflow.eliminate(
        session=s, user=u, entry_id=i, kind=str(f.get("kind") or ""), now=now),
    "snooze": lambda s, u, i, f, now: workflow.snooze(
        session=s, user=u, entry_id=i, until=_parse_until(f.get("until"), now),
        reason=str(f.get("reason") or ""), now=now),
    "note": lambda s, u, i, f, now: workflow.add_note(
        session=s, user=u, entry_id=i, text=str(f.get("text") or ""), now=now),
    "assign": lambda s, u, i, f, now: workflow.assign(
        session=s, user=u, entry_id=i, assignee=str(f.get("assignee") or ""), now=now),
    "escalate": lambda s, u, i, f, now: _escalate_and_notify(
        session=s, user=u, entry_id=i, reason=str(f.get("reason") or ""), now=now),
}


def _run_action(session: Session, user: User, entry_id: int, action: str,
                fields: dict[str, Any], now: dt.datetime) -> workflow.Outcome:
    if action not in ACTIONS:
        raise LookupError(action)
    try:
        outcome = ACTIONS[action](session, user, entry_id, fields, now)
        session.commit()
        return outcome
    except BaseException:
        session.rollback()
        raise


# -- API bodies ---------------------------------------------------------------------------


class LoginBody(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class ActionBody(BaseModel):
    """Fields of a workflow action; which ones are needed depends on the action."""

    note: str | None = Field(default=None, max_length=workflow.NOTE_MAX,
                             description="visit: what the home visit found")
    monitored_type: str | None = Field(default=None, description="identify: "
                                       + " | ".join(workflow.MONITORED_TYPES))
    reason: str | None = Field(default=None, max_length=workflow.NOTE_MAX, description=(
        "dismiss: " + " | ".join(workflow.DISMISS_REASONS) + "; snooze/escalate: free text"))
    category: str | None = Field(default=None, description="measure: "
                                 + " | ".join(workflow.MEASURE_CATEGORIES))
    text: str | None = Field(default=None, max_length=workflow.NOTE_MAX,
                             description="measure/note: the text")
    kind: str | None = Field(default=None, description="eliminate: "
                             + " | ".join(workflow.ELIMINATION_KINDS))
    until: str | None = Field(default=None, description="snooze: YYYY-MM-DD or ISO time")
    assignee: str | None = Field(default=None, description="assign: a username")


# -- routes -------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only a local path may follow a login (no open redirect)."""
    if not value:
        return "/"
    parts = urlsplit(value)
    if (parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//")
            or "\\" in value or any(ord(c) < 32 for c in value)):
        return "/"
    return value


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _pages(templates: Jinja2Templates, secure: bool) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def render(request: Request, name: str, context: dict[str, Any],
               status: int = 200) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def set_session_cookie(response: Response, token: str) -> None:
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                            secure=secure, max_age=auth.SESSION_HOURS * 3600, path="/")

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, lang: LangDep, next: str | None = None) -> Response:
        token = secrets.token_urlsafe(24)
        response = render(request, "login.html", _context(
            request, lang, login_token=token, next=_safe_next(next), error=None))
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict",
                            secure=secure, max_age=1800, path="/login")
        return response

    @router.post("/login", response_class=HTMLResponse)
    async def login_submit(request: Request, session: SessionDep, lang: LangDep,
                           now: NowDep) -> Response:
        form = await request.form()
        sent = str(form.get("login_token") or "")
        nxt = _safe_next(str(form.get("next") or "/"))

        def again(error: str, status: int) -> Response:
            token = secrets.token_urlsafe(24)
            response = render(request, "login.html", _context(
                request, lang, login_token=token, next=nxt, error=error), status)
            response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict",
                                secure=secure, max_age=1800, path="/login")
            return response

        cookie = request.cookies.get(LOGIN_COOKIE) or ""
        if not sent or not secrets.compare_digest(sent, cookie):
            return again("login_expired", 403)
        # Whatever session the browser had is ended: a login always starts a new one.
        auth.logout(session=session, token=request.cookies.get(SESSION_COOKIE))
        try:
            result = auth.login(session=session, username=str(form.get("username") or ""),
                                password=str(form.get("password") or ""),
                                address=_client(request), now=now)
        except auth.RateLimited:
            return again("login_rate_limited", 429)
        if result is None:
            return again("login_failed", 401)
        user, token = result
        target = nxt
        if user.role == ROLE_PUBLISHER and target == "/":
            target = "/files"
        response = RedirectResponse(_href(target, {}, lang) if target == "/" else target, 303)
        set_session_cookie(response, token)
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    @router.post("/logout")
    async def logout(request: Request, session: SessionDep, a: AnyPageAuth) -> Response:
        form = await request.form()
        if not auth.csrf_ok(a.web, str(form.get("csrf_token") or "")):
            lang = labels.parse_lang(request.query_params.get("lang"))
            return render(request, "error.html", _context(
                request, lang, a, message=labels.label(lang, "csrf_failed")), 403)
        auth.logout(session=session, token=request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @router.get("/", response_class=HTMLResponse)
    def list_page(request: Request, session: SessionDep, lang: LangDep, q: QueryDep,
                  a: PageAuth, now: NowDep) -> Response:
        filters = q.filters(a.user)
        entries, total = list_entries(session=session, filters=filters, sort=q.sort,
                                      page=q.page, page_size=q.page_size, now=now)
        pages = max(1, math.ceil(total / q.page_size))
        base = q.params()
        base.pop("page", None)
        filter_params = {k: val for k, val in base.items() if k not in ("sort", "page_size")}

        def page_href(n: int) -> str:
            return _href("/", {**base, "page": str(n)} if n > 1 else base, lang)

        def sort_href(key: str) -> str:
            return _href("/", {**base, "sort": key}, lang)

        counts = counts_by_state(session=session, filters=replace(filters, state=None))
        regions = _region_options(session, a.user, q.region)
        context = _context(
            request, lang, a,
            q=q, entries=entries, total=total, page=q.page, pages=pages,
            page_href=page_href, sort_href=sort_href, counts=counts,
            counts_total=sum(counts.values()),
            state_href=lambda s: _href("/", {**filter_params, "state": s}, lang),
            all_states_href=_href("/", {k: x for k, x in filter_params.items()
                                        if k != "state"}, lang),
            export_href=_href("/export.csv", filter_params, labels.DEFAULT_LANG),
            export_xlsx_href=_href("/export.xlsx", filter_params, labels.DEFAULT_LANG),
            entry_href=lambda e: _href(f"/entries/{e.id}", {}, lang),
            now=now, states=STATES, severities=SEVERITIES, risk_types=RISK_TYPES,
            sorts=list(SORTS), flags=FLAGS, regions=regions, region_prefix=_region_prefix_of,
            scope=access.scope_prefix(a.user), pending_states=PENDING_STATES,
            names=_display_names(session, {e.assignee for e in entries}),
            region_names=_region_names(session, {e.region_code for e in entries}),
            filters_active=len(filter_params),
            health=access.sees_health(a.user), health_risks=HEALTH_RISKS,
        )
        return render(request, "list.html", context)

    def entry_context(request: Request, session: Session, lang: labels.Lang, a: Auth,
                      entry: Entry, now: dt.datetime, **extra: Any) -> dict[str, Any]:
        view = evidence_of(entry)
        health = access.sees_health(a.user)
        return _context(
            request, lang, a,
            entry=entry,
            reasons=view.reasons,
            evidence=view.evidence,
            evidence_month=view.month,
            evidence_alert_id=view.alert_id,
            below_line=view.evidence.projected_per_capita < view.evidence.monitoring_line,
            health=health, health_risks=HEALTH_RISKS, health_depts=HEALTH_DEPTS,
            audit_value=(lambda x: x) if health else mask_health,
            charts=_charts(entry, lang, health),
            notes=workflow.notes_of(session=session, entry_id=entry.id),
            measures=workflow.measures_of(session=session, entry_id=entry.id),
            officers=_officers_for(session, entry) if access.can_assign(a.user) else [],
            can_assign=access.can_assign(a.user),
            earliest_elimination=workflow.earliest_elimination(entry),
            can_eliminate=workflow.can_eliminate(entry, now),
            names=_display_names(session, {entry.assignee}),
            region_path=_region_path(session, entry.region_code),
            monitored_types=workflow.MONITORED_TYPES,
            dismiss_reasons=workflow.DISMISS_REASONS,
            measure_categories=workflow.MEASURE_CATEGORIES,
            elimination_kinds=workflow.ELIMINATION_KINDS,
            closed=entry.state in CLOSED_STATES,
            now=now,
            snooze_default=_day(now + dt.timedelta(days=14)),
            **extra,
        )

    @router.get("/entries/{entry_id}", response_class=HTMLResponse)
    def entry_page(request: Request, entry_id: int, session: SessionDep, lang: LangDep,
                   a: PageAuth, now: NowDep, done: str | None = None) -> Response:
        try:
            workflow.view(session=session, user=a.user, entry_id=entry_id, now=now)
            session.commit()
        except LookupError:
            return render(request, "not_found.html", _context(request, lang, a), 404)
        entry = get_entry(session=session, entry_id=entry_id)
        assert entry is not None
        return render(request, "detail.html", entry_context(
            request, session, lang, a, entry, now,
            done=done if done in ACTIONS else None, error=None))

    @router.post("/entries/{entry_id}/{action}", response_class=HTMLResponse)
    async def entry_action(request: Request, entry_id: int, action: str,
                           session: SessionDep, a: PageAuth, now: NowDep) -> Response:
        form = await request.form()
        lang = labels.parse_lang(str(form.get("lang") or request.query_params.get("lang")))
        if not auth.csrf_ok(a.web, str(form.get("csrf_token") or "")):
            return render(request, "error.html", _context(
                request, lang, a, message=labels.label(lang, "csrf_failed")), 403)
        fields = {k: str(val) for k, val in form.items() if isinstance(val, str)}
        try:
            _run_action(session, a.user, entry_id, action, fields, now)
        except LookupError:
            return render(request, "not_found.html", _context(request, lang, a), 404)
        except workflow.WorkflowError as exc:
            entry = get_entry(session=session, entry_id=entry_id)
            assert entry is not None
            message = exc.zh if lang == "zh" else exc.en
            return render(request, "detail.html", entry_context(
                request, session, lang, a, entry, now, done=None, error=message), exc.status)
        return RedirectResponse(_href(f"/entries/{entry_id}", {"done": action}, lang), 303)

    def _export_response(kind: str, session: Session, a: Auth, q: ListQuery,
                         now: dt.datetime, public: bool) -> Response:
        stamp = now.astimezone(BEIJING).strftime("%Y%m%d-%H%M")
        # The posting version (公示版) never carries health details; the working version
        # does only for the roles that see them on the page.
        health = access.sees_health(a.user) and not public
        suffix = "-public" if public else ""
        if kind == "csv":
            buf = io.StringIO(newline="")
            export_csv(session=session, out=buf, filters=q.filters(a.user), now=now,
                       health=health)
            return Response(
                content=buf.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8",
                headers={"content-disposition":
                         f'attachment; filename="watchlist-{stamp}{suffix}.csv"'})
        data = io.BytesIO()
        export_xlsx(session=session, out=data, filters=q.filters(a.user), now=now,
                    health=health)
        return Response(
            content=data.getvalue(),
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"content-disposition":
                     f'attachment; filename="watchlist-{stamp}{suffix}.xlsx"'})

    @router.get("/export.csv")
    def export(session: SessionDep, q: QueryDep, a: PageAuth, now: NowDep,
               public: str | None = None) -> Response:
        return _export_response("csv", session, a, q, now, _bool(public) is True)

    @router.get("/export.xlsx")
    def export_excel(session: SessionDep, q: QueryDep, a: PageAuth, now: NowDep,
                     public: str | None = None) -> Response:
        return _export_response("xlsx", session, a, q, now, _bool(public) is True)

    @router.get("/files", response_class=HTMLResponse)
    def files_page(request: Request, session: SessionDep, lang: LangDep,
                   a: AnyPageAuth) -> Response:
        if a.user.role not in FILES_ROLES:
            return render(request, "error.html", _context(
                request, lang, a, message=labels.label(lang, "files_refused")), 403)
        return render(request, "files.html", _context(
            request, lang, a, feeds=feed_summary(session=session)))

    @router.get("/account", response_class=HTMLResponse)
    def account_page(request: Request, lang: LangDep, a: AnyPageAuth,
                     done: str | None = None) -> Response:
        return render(request, "account.html", _context(
            request, lang, a, channels=auth.CHANNELS, done=done, error=None))

    @router.post("/account", response_class=HTMLResponse)
    async def account_submit(request: Request, session: SessionDep, a: AnyPageAuth,
                             now: NowDep) -> Response:
        form = await request.form()
        lang = labels.parse_lang(str(form.get("lang") or request.query_params.get("lang")))
        if not auth.csrf_ok(a.web, str(form.get("csrf_token") or "")):
            return render(request, "error.html", _context(
                request, lang, a, message=labels.label(lang, "csrf_failed")), 403)
        user = session.get(User, a.user.id)
        assert user is not None
        error = None
        try:
            if form.get("what") == "password":
                if not auth.verify_password(str(form.get("current") or ""), user.password_hash):
                    raise auth.AccountError(labels.label(lang, "wrong_password"))
                auth.check_password_strength(str(form.get("new") or ""))
                user.password_hash = auth.hash_password(str(form.get("new") or ""))
                auth.end_sessions(session=session, user=user)
            else:
                chosen = ",".join(c for c in auth.CHANNELS if form.get(f"channel_{c}"))
                user.channels = auth.normalise_channels(chosen)
                user.email = _blank_to_none(str(form.get("email") or ""), 255)
                user.wecom_webhook = _blank_to_none(str(form.get("wecom_webhook") or ""), 500)
                user.dingtalk_webhook = _blank_to_none(
                    str(form.get("dingtalk_webhook") or ""), 500)
                secret = _blank_to_none(str(form.get("dingtalk_secret") or ""), 128)
                if secret:
                    user.dingtalk_secret = secret
            session.commit()
        except auth.AccountError as exc:
            session.rollback()
            error = str(exc)
        if error:
            return render(request, "account.html", _context(
                request, lang, a, channels=auth.CHANNELS, done=None, error=error), 422)
        if form.get("what") == "password":
            return RedirectResponse(_href("/login", {}, lang), 303)
        return RedirectResponse(_href("/account", {"done": "1"}, lang), 303)

    return router


def _api(clock: Callable[[], dt.datetime], secure: bool) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["watch list"])

    def entry_or_404(session: Session, user: User, entry_id: int) -> Entry:
        try:
            workflow.view(session=session, user=user, entry_id=entry_id, now=clock())
            session.commit()
        except LookupError:
            raise ApiError(404, "未找到该预警。", "No such entry.") from None
        entry = get_entry(session=session, entry_id=entry_id)
        assert entry is not None
        return entry

    @router.post("/login")
    def api_login(request: Request, body: LoginBody, session: SessionDep) -> JSONResponse:
        """Log in; the session cookie is set and the CSRF token for later POSTs returned."""
        auth.logout(session=session, token=request.cookies.get(SESSION_COOKIE))
        try:
            result = auth.login(session=session, username=body.username,
                                password=body.password, address=_client(request), now=clock())
        except auth.RateLimited:
            raise ApiError(429, "登录失败次数过多，请 15 分钟后再试。",
                           "Too many failed logins; try again in 15 minutes.") from None
        if result is None:
            raise ApiError(401, "用户名或密码错误。", "Wrong username or password.")
        user, token = result
        found = auth.session_user(session=session, token=token, now=clock())
        assert found is not None
        response = JSONResponse({"username": user.username, "role": user.role,
                                 "region_code": user.region_code,
                                 "csrf_token": found[1].csrf_token})
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                            secure=secure, max_age=auth.SESSION_HOURS * 3600, path="/")
        return response

    @router.post("/logout")
    def api_logout(request: Request, session: SessionDep,
                   a: Annotated[Auth, Depends(api_auth)]) -> JSONResponse:
        _api_csrf(request, a)
        auth.logout(session=session, token=request.cookies.get(SESSION_COOKIE))
        response = JSONResponse({"ok": True})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @router.get("/me")
    def api_me(a: Annotated[Auth, Depends(api_auth)]) -> dict[str, Any]:
        return {"username": a.user.username, "role": a.user.role,
                "region_code": a.user.region_code, "channels": a.user.channel_list(),
                "csrf_token": a.web.csrf_token}

    @router.get("/entries")
    def api_entries(session: SessionDep, q: QueryDep, a: ApiAuth) -> dict[str, Any]:
        """Entries in the caller's region, filtered, sorted and paged as on the list page."""
        now = clock()
        entries, total = list_entries(session=session, filters=q.filters(a.user), sort=q.sort,
                                      page=q.page, page_size=q.page_size, now=now)
        return {"total": total, "page": q.page, "page_size": q.page_size,
                "items": [_entry_json(e, now, access.sees_health(a.user)) for e in entries]}

    @router.get("/entries/{entry_id}")
    def api_entry(entry_id: int, session: SessionDep, a: ApiAuth) -> dict[str, Any]:
        """One entry with its evidence, alerts, notes, measures and audit trail. Opening it
        is recorded in the audit trail."""
        now = clock()
        entry = entry_or_404(session, a.user, entry_id)
        view = evidence_of(entry)
        out = _entry_json(entry, now, access.sees_health(a.user))
        out["reasons"] = [{"rule": r.rule, "risk_type": r.risk_type, "detail": r.detail}
                          for r in view.reasons]
        out["evidence"] = msgspec_to_builtins(view.evidence)
        out["evidence"]["sources"] = [{"dept": o.dept, "file": o.file, "line": o.line}
                                      for o in view.evidence.sources]
        out["evidence_month"] = view.month
        out["alerts"] = [{"alert_id": r.alert_id, "month": r.month,
                          "received_at": r.received_at.isoformat()} for r in entry.alerts]
        out["notes"] = [{"at": n.at.isoformat(), "author": n.author, "kind": n.kind,
                         "text": n.text}
                        for n in workflow.notes_of(session=session, entry_id=entry.id)]
        out["measures"] = [{"at": m.at.isoformat(), "author": m.author,
                            "category": m.category, "text": m.text}
                           for m in workflow.measures_of(session=session, entry_id=entry.id)]
        out["history"] = [{"at": h.at.isoformat(), "actor": h.actor, "action": h.action,
                           "old": h.old_value, "new": h.new_value} for h in entry.history]
        if not access.sees_health(a.user):
            out = _redact_health(out)
        return out

    @router.post("/entries/{entry_id}/{action}")
    def api_action(request: Request, entry_id: int, action: str, session: SessionDep,
                   a: ApiAuth, body: Annotated[ActionBody, Body()] = ActionBody()
                   ) -> dict[str, Any]:
        """Run a workflow action: claim, visit, identify, dismiss, measure, eliminate,
        snooze, note, assign (county lead), escalate (county lead)."""
        _api_csrf(request, a)
        if action not in ACTIONS:
            raise ApiError(404, "未知操作。", f"Unknown action {action!r}.")
        try:
            outcome = _run_action(session, a.user, entry_id, action,
                                  body.model_dump(exclude_none=True), clock())
        except LookupError:
            raise ApiError(404, "未找到该预警。", "No such entry.") from None
        except workflow.WorkflowError as exc:
            raise ApiError(exc.status, exc.zh, exc.en) from None
        return {"changed": outcome.changed,
                "entry": _entry_json(outcome.entry, clock(), access.sees_health(a.user))}

    @router.get("/regions")
    def api_regions(session: SessionDep, a: ApiAuth,
                    parent: str | None = None) -> list[dict[str, str]]:
        """Regions inside the caller's own, as the list's region filter offers them: the
        way from the caller's region down to ``parent`` (a code prefix), and the level
        below ``parent``. Pass a returned ``prefix`` as ``region`` to /api/entries."""
        chosen = _blank_to_none(parent, 12)
        return [{"code": r.code, "name": r.name, "level": r.level,
                 "prefix": _region_prefix_of(r)}
                for r in _region_options(session, a.user, chosen)]

    return router


def msgspec_to_builtins(value: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(value)


def _health_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    def healthz(session: SessionDep) -> Response:
        try:
            session.execute(text("SELECT 1"))
        except Exception as exc:  # any database failure means "not healthy"
            return JSONResponse({"status": "error", "error": type(exc).__name__},
                                status_code=503)
        return JSONResponse({"status": "ok"})

    return router


def create_app(*, engine: Engine, clock: Callable[[], dt.datetime] = utcnow,
               metrics: bool = False, secure_cookies: bool = False) -> FastAPI:
    """The watch-list web app over ``engine`` (tables must exist: see ``models.init_db``).

    ``clock`` gives "now" (tests pass a fixed one). ``metrics`` serves the process's
    Prometheus registry at ``/metrics``. ``secure_cookies`` marks cookies HTTPS-only (set
    it behind TLS).
    """
    app = FastAPI(
        title="Fanpin watch list API",
        description="The duty officers' watch list: the same operations and the same "
        "region scoping as the web pages. Log in with POST /api/login; send the returned "
        "csrf_token as the X-CSRF-Token header on every POST.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.sessions = sessionmaker(bind=engine, expire_on_commit=False)
    app.state.clock = clock
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    app.include_router(_pages(templates, secure_cookies))
    app.include_router(_api(clock, secure_cookies))
    app.include_router(_health_router())
    app.add_middleware(_SecurityHeaders)

    @app.exception_handler(LoginRequired)
    def _login_required(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        lang = labels.parse_lang(request.query_params.get("lang"))
        return RedirectResponse(_href("/login", {"next": target}, lang), 303)

    @app.exception_handler(NotAllowed)
    def _not_allowed(request: Request, exc: NotAllowed) -> Response:
        lang = labels.parse_lang(request.query_params.get("lang"))
        return templates.TemplateResponse(request, "error.html", _context(
            request, lang, None, message=labels.label(lang, "publisher_refused")),
            status_code=403)

    @app.exception_handler(ApiError)
    def _api_error(request: Request, exc: ApiError) -> Response:
        return JSONResponse({"error": exc.en, "error_zh": exc.zh}, status_code=exc.status)

    if metrics:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        @app.get("/metrics", include_in_schema=False)
        def prometheus_metrics() -> Response:
            return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


__all__ = ["ACTIONS", "ListQuery", "create_app"]
