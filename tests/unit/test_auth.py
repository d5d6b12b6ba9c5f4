"""Passwords, logins, sessions, rate limiting and CSRF (consumers.watchlist.auth and the
pages and API that use it), on SQLite through TestClient."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from consumers.watchlist import auth
from consumers.watchlist.models import (
    ROLE_ADMIN,
    ROLE_COUNTY,
    ROLE_VILLAGE,
    LoginAttempt,
    User,
    WebSession,
)
from consumers.watchlist.views import ACTIONS, create_app
from tests.unit.test_watchlist_helpers import NOW, VILLAGE_A, sqlite_engine
from tests.unit.watchlist_web import (
    PASSWORD,
    ROLES,
    action_fields,
    add_users,
    csrf_of,
    entry_state,
    logged_in,
    login_token,
    post_login,
    prepare,
)

APP_NOW = NOW + dt.timedelta(days=1)


class Clock:
    """The app's "now", which a test can move."""

    def __init__(self, now: dt.datetime = APP_NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path)
    add_users(engine, fast=True)  # one account per role, username = role
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(engine: Engine, clock: Clock) -> FastAPI:
    return create_app(engine=engine, clock=clock)


@pytest.fixture
def browser(app: FastAPI) -> Iterator[TestClient]:
    """A browser that has not logged in."""
    with TestClient(app) as c:
        yield c


def authenticates(app: FastAPI, token: str) -> bool:
    """Does a browser holding only this session cookie get in?"""
    with TestClient(app, cookies={"fanpin_session": token}) as c:
        page = c.get("/account", follow_redirects=False)
        api = c.get("/api/me")
    assert (page.status_code == 200) == (api.status_code == 200)
    return api.status_code == 200


def plant(client: TestClient, name: str, value: str, path: str = "/") -> None:
    """Set a cookie in the browser as if the site had set it (same domain and path, so
    the site's next Set-Cookie replaces it, as in a real browser)."""
    client.cookies.set(name, value, domain="testserver.local", path=path)


def sessions(engine: Engine) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(WebSession)) or 0


def the_user(engine: Engine, username: str) -> User:
    with Session(engine) as s:
        return s.scalars(select(User).where(User.username == username)).one()


# -- passwords ----------------------------------------------------------------------------


def test_hash_and_verify() -> None:
    first, second = auth.hash_password("correct horse"), auth.hash_password("correct horse")
    assert first != second  # each hash has its own salt
    assert first.split("$")[4] != second.split("$")[4]
    assert first.startswith("scrypt$") and "correct horse" not in first
    assert auth.verify_password("correct horse", first)
    assert auth.verify_password("correct horse", second)
    assert not auth.verify_password("correct horsE", first)
    assert not auth.verify_password("", first)
    for broken in ("", "scrypt$1$2", "bcrypt$16384$8$1$AAAA$AAAA", "scrypt$x$8$1$AAAA$AAAA",
                   "scrypt$16384$8$1$!!!$AAAA"):
        assert not auth.verify_password("correct horse", broken)


def test_account_validation() -> None:
    with pytest.raises(auth.AccountError, match="12-digit"):
        auth.validate_account(username="a", role=ROLE_VILLAGE, region_code="990122")
    with pytest.raises(auth.AccountError, match="no region"):
        auth.validate_account(username="a", role=ROLE_ADMIN, region_code="990122")
    with pytest.raises(auth.AccountError, match="role"):
        auth.validate_account(username="a", role="root", region_code="")
    with pytest.raises(auth.AccountError, match="username"):
        auth.validate_account(username="a b", role=ROLE_ADMIN, region_code="")
    with pytest.raises(auth.AccountError, match="8"):
        auth.check_password_strength("short")


def test_login_issues_a_new_token_each_time(engine: Engine) -> None:
    with Session(engine) as s:
        first = auth.login(session=s, username="village", password=PASSWORD, address="a",
                           now=APP_NOW)
        second = auth.login(session=s, username="village", password=PASSWORD, address="a",
                            now=APP_NOW)
        assert first is not None and second is not None
        assert first[0].username == second[0].username == "village"
        assert first[1] != second[1]
        for _, token in (first, second):
            found = auth.session_user(session=s, token=token, now=APP_NOW)
            assert found is not None and found[0].username == "village"
            # only the token's SHA-256 is stored
            assert found[1].id == hashlib.sha256(token.encode()).hexdigest()
            assert s.get(WebSession, token) is None
        webs = s.scalars(select(WebSession)).all()
        assert len({w.csrf_token for w in webs}) == 2  # each session its own CSRF token
        assert auth.login(session=s, username="village", password="wrong", address="a",
                          now=APP_NOW) is None
        assert auth.login(session=s, username="nobody", password=PASSWORD, address="a",
                          now=APP_NOW) is None
        assert auth.session_user(session=s, token="made-up", now=APP_NOW) is None
        assert auth.session_user(session=s, token="x" * 500, now=APP_NOW) is None
        assert auth.session_user(session=s, token=None, now=APP_NOW) is None


def test_an_inactive_account_cannot_log_in_and_loses_its_sessions(app: FastAPI,
                                                                 engine: Engine) -> None:
    with logged_in(app, "village") as c:
        token = c.cookies["fanpin_session"]
        with Session(engine) as s:
            s.scalars(select(User).where(User.username == "village")).one().active = False
            s.commit()
        assert not authenticates(app, token)
        with TestClient(app) as other:
            assert post_login(other, "village").status_code == 401


# -- the login page -----------------------------------------------------------------------


def test_login_sets_a_http_only_session_cookie(browser: TestClient, app: FastAPI,
                                               engine: Engine, clock: Clock) -> None:
    r = post_login(browser, "county_lead")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "fanpin_session=" in cookie
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert authenticates(app, browser.cookies["fanpin_session"])
    # behind TLS the cookie is HTTPS-only
    secure = create_app(engine=engine, clock=clock, secure_cookies=True)
    with TestClient(secure, base_url="https://testserver") as c:
        r = post_login(c, "county_lead")
        assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


def test_a_wrong_password_is_refused(browser: TestClient) -> None:
    r = post_login(browser, "village", "wrong password")
    assert r.status_code == 401
    assert "用户名或密码错误" in r.text
    assert "fanpin_session" not in browser.cookies
    r = post_login(browser, "nobody", PASSWORD)
    assert r.status_code == 401


def test_session_fixation_a_chosen_cookie_is_replaced(browser: TestClient, app: FastAPI) -> None:
    plant(browser, "fanpin_session", "attacker-chosen-value")
    r = post_login(browser, "county_lead")
    assert r.status_code == 303
    new = browser.cookies["fanpin_session"]
    assert new != "attacker-chosen-value"
    assert authenticates(app, new)
    assert not authenticates(app, "attacker-chosen-value")


def test_session_fixation_a_planted_session_is_ended(app: FastAPI, engine: Engine) -> None:
    # The attacker logs in as themselves and plants their session cookie in the victim's
    # browser; the victim then logs in. The victim must not end up in the attacker's
    # session, and the planted one is over.
    with logged_in(app, "village") as attacker:
        planted = attacker.cookies["fanpin_session"]
    with TestClient(app) as victim:
        plant(victim, "fanpin_session", planted)
        assert victim.get("/api/me").json()["username"] == "village"
        r = post_login(victim, "county_lead")
        assert r.status_code == 303
        assert victim.cookies["fanpin_session"] != planted
        assert victim.get("/api/me").json()["username"] == "county_lead"
    assert not authenticates(app, planted)
    assert sessions(engine) == 1


def test_api_login_replaces_the_session_too(browser: TestClient, app: FastAPI) -> None:
    plant(browser, "fanpin_session", "attacker-chosen-value")
    r = browser.post("/api/login", json={"username": "township", "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert (body["username"], body["role"], body["region_code"]) == (
        "township", "township", VILLAGE_A[:9])
    assert body["csrf_token"] == csrf_of(browser)
    assert browser.cookies["fanpin_session"] != "attacker-chosen-value"
    assert "httponly" in r.headers["set-cookie"].lower()
    wrong = browser.post("/api/login", json={"username": "township", "password": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error_zh"]


@pytest.mark.parametrize("form_token", ["missing", "mismatched", "no-cookie", "empty"])
def test_the_login_form_needs_its_login_token(app: FastAPI, form_token: str,
                                              engine: Engine) -> None:
    with TestClient(app) as c:
        token = login_token(c)
        form = {"username": "village", "password": PASSWORD}
        if form_token == "mismatched":
            form["login_token"] = token[::-1]
        elif form_token == "no-cookie":
            form["login_token"] = token
            c.cookies.delete("fanpin_login")
        elif form_token == "empty":
            form["login_token"] = ""
            plant(c, "fanpin_login", "", path="/login")
        r = c.post("/login", data=form, follow_redirects=False)
        assert r.status_code == 403
        assert "fanpin_session" not in c.cookies
        assert "登录页面已过期" in r.text
        # the page comes back with a new token, which works
        assert re.search(r'name="login_token" value="[^"]+"', r.text)
        assert post_login(c, "village").status_code == 303
    assert sessions(engine) == 1


def safe_target(location: str) -> bool:
    """Would a browser following this Location stay on this site?"""
    browser_view = location.replace("\\", "/")
    for ch in "\t\r\n":
        browser_view = browser_view.replace(ch, "")
    target = urlsplit(urljoin("http://testserver/login", browser_view))
    return target.scheme == "http" and target.netloc == "testserver"


@pytest.mark.parametrize("target", [
    "//evil.example", "https://evil.example", "http://evil.example/", "//evil.example/x",
    "/\\evil.example", "\\\\evil.example", "/\t/evil.example", "http:evil.example",
    "javascript:alert(1)", " //evil.example", "evil.example", "///evil.example",
])
def test_next_cannot_redirect_elsewhere(browser: TestClient, target: str) -> None:
    page = browser.get("/login", params={"next": target})
    hidden = re.search(r'name="next" value="([^"]*)"', page.text)
    assert hidden and hidden.group(1).startswith("/") and not hidden.group(1).startswith("//")
    r = post_login(browser, "village", next_=target)
    assert r.status_code == 303
    location = r.headers["location"]
    assert safe_target(location), location
    assert location == "/" or location.startswith("/") and not location.startswith("//")


def test_next_keeps_a_local_page(browser: TestClient) -> None:
    r = browser.get("/entries/7?lang=en", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=")
    page = browser.get(r.headers["location"])
    assert 'name="next" value="/entries/7?lang=en"' in page.text
    r = post_login(browser, "village", next_="/entries/7?lang=en")
    assert r.headers["location"] == "/entries/7?lang=en"
    publisher = post_login(browser, "publisher")
    assert publisher.headers["location"] == "/files"  # publishers have no list


# -- rate limiting ------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["page", "api"])
def test_five_failures_lock_the_username(app: FastAPI, clock: Clock, via: str) -> None:
    def attempt(c: TestClient, username: str, password: str) -> int:
        if via == "page":
            return post_login(c, username, password).status_code
        return c.post("/api/login", json={"username": username,
                                          "password": password}).status_code

    with TestClient(app) as c:
        assert [attempt(c, "village", f"guess-{i}") for i in range(5)] == [401] * 5
        # the sixth is refused even with the right password
        assert attempt(c, "village", PASSWORD) == 429
        assert attempt(c, "village", PASSWORD) == 429
        assert "fanpin_session" not in c.cookies
        # other accounts, from the same address, are not locked
        assert attempt(c, "township", PASSWORD) in (200, 303)
        # 15 minutes later the username may try again
        clock.now = APP_NOW + auth.LOGIN_WINDOW + dt.timedelta(seconds=1)
        assert attempt(c, "village", PASSWORD) in (200, 303)


def test_the_page_says_why(browser: TestClient) -> None:
    for _ in range(5):
        post_login(browser, "village", "guess")
    r = post_login(browser, "village", PASSWORD)
    assert r.status_code == 429
    assert "登录失败次数过多" in r.text


def test_twenty_failures_lock_the_address(app: FastAPI, engine: Engine) -> None:
    usernames = ROLES  # 5 accounts, 4 failures each: no username reaches 5
    with TestClient(app, client=("10.0.0.1", 40000)) as c:
        for i in range(4):
            for name in usernames:
                assert post_login(c, name, f"guess-{i}").status_code == 401
        with Session(engine) as s:
            assert s.scalar(select(func.count()).select_from(LoginAttempt).where(
                LoginAttempt.key == "ip:10.0.0.1")) == 20
        assert post_login(c, "village", PASSWORD).status_code == 429
        api = c.post("/api/login", json={"username": "admin", "password": PASSWORD})
        assert api.status_code == 429 and api.json()["error_zh"]
    # the same accounts from another address are fine
    with TestClient(app, client=("10.0.0.2", 40000)) as other:
        assert post_login(other, "village", PASSWORD).status_code == 303


# -- sessions end -------------------------------------------------------------------------


def test_logout_ends_the_session(app: FastAPI, engine: Engine) -> None:
    with logged_in(app, "village") as c:
        token = c.cookies["fanpin_session"]
        r = c.post("/logout", data={"csrf_token": csrf_of(c)}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert "fanpin_session" not in c.cookies
        assert c.get("/", follow_redirects=False).status_code == 303
    assert not authenticates(app, token)
    assert sessions(engine) == 0


def test_api_logout_ends_the_session(app: FastAPI) -> None:
    with logged_in(app, "village") as c:
        token = c.cookies["fanpin_session"]
        r = c.post("/api/logout", headers={"X-CSRF-Token": csrf_of(c)})
        assert r.status_code == 200 and r.json() == {"ok": True}
        assert c.get("/api/me").status_code == 401
    assert not authenticates(app, token)


def test_sessions_expire(app: FastAPI, clock: Clock) -> None:
    with logged_in(app, "county_lead") as c:
        clock.now = APP_NOW + dt.timedelta(hours=auth.SESSION_HOURS) - dt.timedelta(seconds=1)
        assert c.get("/").status_code == 200
        clock.now = APP_NOW + dt.timedelta(hours=auth.SESSION_HOURS)
        r = c.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert c.get("/api/entries").status_code == 401
        assert c.get("/api/me").status_code == 401


def test_changing_the_password_ends_every_session(app: FastAPI, engine: Engine) -> None:
    new_password = "another-long-passphrase"
    with logged_in(app, "township") as first, logged_in(app, "township") as second:
        tokens = [first.cookies["fanpin_session"], second.cookies["fanpin_session"]]
        csrf = csrf_of(first)
        # a wrong current password, or a weak new one, changes nothing
        for current, new in ((new_password, new_password), (PASSWORD, "short")):
            r = first.post("/account", data={"csrf_token": csrf, "what": "password",
                                             "current": current, "new": new})
            assert r.status_code == 422
        assert all(authenticates(app, t) for t in tokens)
        r = first.post("/account", data={"csrf_token": csrf, "what": "password",
                                         "current": PASSWORD, "new": new_password},
                       follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
    assert not any(authenticates(app, t) for t in tokens)
    with TestClient(app) as c:
        assert post_login(c, "township", PASSWORD).status_code == 401
        assert post_login(c, "township", new_password).status_code == 303


# -- CSRF ---------------------------------------------------------------------------------


def bad_tokens(own: str, other: str) -> list[dict[str, str] | None]:
    """Missing, empty, wrong, and another session's (valid) token."""
    return [None, {"csrf_token": ""}, {"csrf_token": own[:-2] + "xx"},
            {"csrf_token": other}]


@pytest.fixture
def county(app: FastAPI) -> Iterator[TestClient]:
    with logged_in(app, ROLE_COUNTY) as c:
        yield c


@pytest.fixture
def other_csrf(app: FastAPI) -> str:
    """A valid CSRF token of somebody else's session."""
    with logged_in(app, ROLE_ADMIN) as c:
        return csrf_of(c)


@pytest.mark.parametrize("action", list(ACTIONS))
def test_page_actions_need_the_csrf_token(app: FastAPI, engine: Engine, county: TestClient,
                                          other_csrf: str, action: str) -> None:
    eid = prepare(engine, action, VILLAGE_A, APP_NOW)
    fields = action_fields(action, APP_NOW)
    csrf = csrf_of(county)
    before = entry_state(engine, eid)
    for token in bad_tokens(csrf, other_csrf):
        r = county.post(f"/entries/{eid}/{action}", data={**fields, **(token or {})},
                        follow_redirects=False)
        assert r.status_code == 403, (token, r.text[:200])
        assert "CSRF" in r.text
        assert entry_state(engine, eid) == before
    # the token as a header, or in the URL, is not the form field either
    r = county.post(f"/entries/{eid}/{action}", data=fields, headers={"X-CSRF-Token": csrf},
                    params={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 403
    assert entry_state(engine, eid) == before
    # with it, the same request goes through
    r = county.post(f"/entries/{eid}/{action}", data={**fields, "csrf_token": csrf},
                    follow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    assert r.headers["location"] == f"/entries/{eid}?done={action}"
    assert entry_state(engine, eid) != before


@pytest.mark.parametrize("action", list(ACTIONS))
def test_api_actions_need_the_csrf_header(app: FastAPI, engine: Engine, county: TestClient,
                                          other_csrf: str, action: str) -> None:
    eid = prepare(engine, action, VILLAGE_A, APP_NOW)
    fields = action_fields(action, APP_NOW)
    csrf = csrf_of(county)
    before = entry_state(engine, eid)
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": csrf[:-2] + "xx"},
                    {"X-CSRF-Token": other_csrf}):
        r = county.post(f"/api/entries/{eid}/{action}", json=fields, headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"].startswith("Missing or wrong X-CSRF-Token")
        assert entry_state(engine, eid) == before
    # a form field or a query parameter is not the header
    r = county.post(f"/api/entries/{eid}/{action}", json={**fields, "csrf_token": csrf},
                    params={"csrf_token": csrf})
    assert r.status_code == 403
    assert entry_state(engine, eid) == before
    r = county.post(f"/api/entries/{eid}/{action}", json=fields, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True
    assert entry_state(engine, eid) != before


def test_account_changes_need_the_csrf_token(app: FastAPI, engine: Engine, county: TestClient,
                                             other_csrf: str) -> None:
    before = the_user(engine, ROLE_COUNTY)
    csrf = csrf_of(county)
    forms = [{"what": "channels", "channel_email": "1", "email": "lead@example.gov.cn"},
             {"what": "password", "current": PASSWORD, "new": "a-new-long-password"}]
    for form in forms:
        for token in bad_tokens(csrf, other_csrf):
            r = county.post("/account", data={**form, **(token or {})}, follow_redirects=False)
            assert r.status_code == 403
            after = the_user(engine, ROLE_COUNTY)
            assert (after.channels, after.email, after.password_hash) == (
                before.channels, before.email, before.password_hash)
    assert sessions(engine) == 2  # nobody was logged out
    r = county.post("/account", data={**forms[0], "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    after = the_user(engine, ROLE_COUNTY)
    assert (after.channels, after.email) == ("email", "lead@example.gov.cn")


def test_logout_without_the_token_ends_nothing(app: FastAPI, other_csrf: str) -> None:
    with logged_in(app, ROLE_VILLAGE) as c:
        token = c.cookies["fanpin_session"]
        for bad in bad_tokens(csrf_of(c), other_csrf):
            plant(c, "fanpin_session", token)
            c.post("/logout", data=bad or {}, follow_redirects=False)
            assert authenticates(app, token)  # the server-side session was not ended


def test_logout_without_the_token_is_refused(app: FastAPI) -> None:
    with logged_in(app, ROLE_VILLAGE) as c:
        r = c.post("/logout", data={"csrf_token": "wrong"}, follow_redirects=False)
        assert r.status_code == 403
        assert c.cookies.get("fanpin_session")


def test_api_logout_needs_the_csrf_header(app: FastAPI, other_csrf: str) -> None:
    with logged_in(app, ROLE_VILLAGE) as c:
        token = c.cookies["fanpin_session"]
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": other_csrf}):
            r = c.post("/api/logout", headers=headers)
            assert r.status_code == 403
            assert authenticates(app, token)
