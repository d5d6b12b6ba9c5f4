"""Accounts and logged-in clients for the watch-list web tests (imported by them; not a test
module itself). A client logs in the way a browser does: GET /login for the login token
(it comes back as a cookie and as a hidden form field), then POST /login with both."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
from collections.abc import Iterable
from typing import Final

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from consumers.watchlist import access, auth, workflow
from consumers.watchlist.models import (
    ROLE_ADMIN,
    ROLE_COUNTY,
    ROLE_PUBLISHER,
    ROLE_TOWNSHIP,
    ROLE_VILLAGE,
    Entry,
    History,
    Measure,
    Note,
    User,
    utcnow,
)
from consumers.watchlist.service import record_alerts
from tests.unit.test_watchlist_helpers import VILLAGE_A, make_alert

PASSWORD: Final = "s3cret-passphrase"
ROLES: Final[tuple[str, ...]] = (ROLE_VILLAGE, ROLE_TOWNSHIP, ROLE_COUNTY, ROLE_PUBLISHER,
                                 ROLE_ADMIN)
# One account per role, all around VILLAGE_A (990122 003 006): the village itself, its
# township, its county; publishers and administrators have no region.
ROLE_REGION: Final[dict[str, str]] = {
    ROLE_VILLAGE: VILLAGE_A,
    ROLE_TOWNSHIP: VILLAGE_A[:9],
    ROLE_COUNTY: VILLAGE_A[:6],
    ROLE_PUBLISHER: "",
    ROLE_ADMIN: "",
}
# The account of each role: its username is the role's name.
USERS: Final[dict[str, tuple[str, str]]] = {r: (r, ROLE_REGION[r]) for r in ROLES}

_LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')


def add_users(engine: Engine, users: dict[str, tuple[str, str]] | None = None,
              password: str = PASSWORD, *, fast: bool = False) -> None:
    """Create accounts: ``{username: (role, region_code)}`` (default: one per role), with
    ``auth.create_user``. scrypt takes a quarter of a second a hash, so ``fast`` instead
    stores (after the same validation) one hash of ``PASSWORD`` computed once per run:
    for tests that build many databases and do not test hashing itself."""
    with Session(engine) as s:
        for username, (role, region) in (users or USERS).items():
            if fast and password == PASSWORD:
                auth.validate_account(username=username, role=role, region_code=region)
                s.add(User(username=username, password_hash=_password_hash(), role=role,
                           region_code=region, display_name=f"{username} 干部", active=True,
                           created_at=utcnow()))
            else:
                auth.create_user(session=s, username=username, password=password, role=role,
                                 region_code=region, display_name=f"{username} 干部")
        s.commit()


@functools.cache
def _password_hash() -> str:
    return auth.hash_password(PASSWORD)


def login_token(client: TestClient) -> str:
    r = client.get("/login")
    assert r.status_code == 200
    found = _LOGIN_TOKEN.search(r.text)
    assert found, "the login page carries a login_token field"
    assert client.cookies.get("fanpin_login") == found.group(1)
    return found.group(1)


def post_login(client: TestClient, username: str, password: str = PASSWORD, *,
               next_: str | None = None, token: str | None = None) -> httpx.Response:
    """Submit the login form as a browser would (after GET /login); not followed."""
    form = {"username": username, "password": password,
            "login_token": token if token is not None else login_token(client)}
    if next_ is not None:
        form["next"] = next_
    return client.post("/login", data=form, follow_redirects=False)


def logged_in(app: FastAPI, username: str, password: str = PASSWORD,
              **client_options: object) -> TestClient:
    """A new client with its own cookie jar, logged in as ``username``. Close it after."""
    client = TestClient(app, **client_options)  # type: ignore[arg-type]
    r = post_login(client, username, password)
    assert r.status_code == 303, r.text
    assert client.cookies.get("fanpin_session")
    return client


def csrf_of(client: TestClient) -> str:
    """The session's CSRF token (as /api/me gives it to scripts)."""
    r = client.get("/api/me")
    assert r.status_code == 200, r.text
    token: str = r.json()["csrf_token"]
    return token


def close_all(clients: Iterable[TestClient]) -> None:
    for c in clients:
        c.close()


# -- entries ready for each workflow action -------------------------------------------------

_households = itertools.count(1)


def action_fields(action: str, now: dt.datetime, assignee: str = ROLE_VILLAGE) -> dict[str, str]:
    """The form (or JSON) fields of ``action`` that make it succeed on an entry prepared
    by ``prepare`` (``assignee`` must cover the entry's region)."""
    until = (now + dt.timedelta(days=14)).astimezone(access.BEIJING).date().isoformat()
    return {
        "claim": {},
        "visit": {"note": "入户核实：收入下降属实"},
        "identify": {"monitored_type": "边缘易致贫户"},
        "dismiss": {"reason": "not_at_risk"},
        "measure": {"category": "健康帮扶", "text": "落实医疗救助"},
        "eliminate": {"kind": "自然消除"},
        "snooze": {"until": until, "reason": "外出务工，月底返乡"},
        "note": {"text": "电话联系户主"},
        "assign": {"assignee": assignee},
        "escalate": {"reason": "逾期未核实"},
    }[action]


# What each action needs done first (by an administrator, "admin").
_BEFORE: Final[dict[str, tuple[str, ...]]] = {
    "claim": (), "visit": (), "identify": ("visit",), "dismiss": ("visit",),
    "measure": ("visit", "identify"), "eliminate": ("visit", "identify"), "snooze": (),
    "note": (), "assign": (), "escalate": (),
}


def prepare(engine: Engine, action: str, village: str, now: dt.datetime) -> int:
    """A new entry in ``village`` in a state where ``action`` succeeds at ``now`` (identified
    seven months before, so elimination is allowed). Needs an "admin" account."""
    hid = f"{village}{next(_households):04d}"
    earlier = workflow.add_months(now, -7)
    with Session(engine) as s:
        record_alerts(session=s, alerts=[make_alert(hid, "2026-03")], now=earlier)
        eid = s.scalars(select(Entry.id).where(Entry.household_id == hid)).one()
        admin = s.scalars(select(User).where(User.username == "admin")).one()
        for step in _BEFORE[action]:
            if step == "visit":
                workflow.start_visit(session=s, user=admin, entry_id=eid, note="走访", now=earlier)
            else:
                workflow.identify(session=s, user=admin, entry_id=eid,
                                  monitored_type="脱贫不稳定户", now=earlier)
        s.commit()
    return eid


def entry_state(engine: Engine, entry_id: int) -> tuple[object, ...]:
    """What an action changes: the entry's columns and its notes, measures and audit rows
    (the "viewed" rows aside: reading an entry's page records the view)."""
    with Session(engine) as s:
        e = s.get(Entry, entry_id)
        assert e is not None
        cols = tuple(getattr(e, c.key) for c in Entry.__table__.columns)
        rows = tuple(
            s.scalar(select(func.count()).select_from(t).where(t.entry_id == entry_id))
            for t in (Note, Measure)
        )
        history = s.scalar(select(func.count()).select_from(History).where(
            History.entry_id == entry_id, History.action != "viewed"))
        return (*cols, *rows, history)
