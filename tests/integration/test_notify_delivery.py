"""Notifications delivered by the real senders to real local receivers.

An aiosmtpd SMTP server and an HTTP server playing the WeCom (企业微信) and DingTalk (钉钉)
robot endpoints run on 127.0.0.1 on free ports; the HTTP server checks the DingTalk
signature itself. These need neither Kafka nor PostgreSQL, so they are not marked
``integration`` (that marker means "needs the broker and PostgreSQL"); the one test at the
end that does use PostgreSQL is.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import socket
import threading
import time
import typing
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from consumers.watchlist import notify
from consumers.watchlist.models import (
    ROLE_COUNTY,
    ROLE_TOWNSHIP,
    ROLE_VILLAGE,
    Notification,
    User,
)
from consumers.watchlist.notify import dispatch, sweep
from consumers.watchlist.service import record_alerts
from fanpin.settings import Settings
from schemas.events import HouseholdType, RiskType
from tests.unit.test_watchlist_helpers import (
    NOW,
    VILLAGE_A,
    VILLAGE_B,
    household,
    make_alert,
    sqlite_engine,
)

DING_SECRET = "SECd2f1e0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3"
BASE_URL = "https://fanpin.example.gov.cn"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- SMTP --------------------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"

    def parsed(self) -> list[EmailMessage]:
        out = []
        for _, _, raw in self.messages:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
        return out


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    assert port != 25
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


# -- the robots --------------------------------------------------------------------------


@dataclass
class Robots:
    """What the fake WeCom/DingTalk endpoints received."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, prefix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].startswith(prefix)]


def _dingtalk_sign_ok(query: dict[str, list[str]]) -> bool:
    """The server side of 钉钉加签: recompute and compare, and refuse stale timestamps."""
    try:
        timestamp = query["timestamp"][0]
        sign = query["sign"][0]  # parse_qs has URL-decoded it already
    except (KeyError, IndexError):
        return False
    if abs(int(timestamp) - time.time() * 1000) > 3600 * 1000:
        return False
    expected = base64.b64encode(hmac.new(
        DING_SECRET.encode(), f"{timestamp}\n{DING_SECRET}".encode(), hashlib.sha256,
    ).digest()).decode()
    return hmac.compare_digest(expected, sign)


def make_handler(robots: Robots) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(parts.query)
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with robots.lock:
                robots.requests.append({
                    "path": parts.path, "query": query, "raw": raw,
                    "content_type": self.headers.get("Content-Type", ""),
                })
            if parts.path == "/wecom/http500":
                self.send_error(500)
                return
            reply: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}
            if parts.path == "/wecom/refuses":
                reply = {"errcode": 93000, "errmsg": "invalid webhook url"}
            elif parts.path.startswith("/dingtalk/") and not _dingtalk_sign_ok(query):
                reply = {"errcode": 310000, "errmsg": "sign not match"}
            body = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def robots(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Robots, str]]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    state = Robots()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- the scenario ------------------------------------------------------------------------


def user(session: Session, username: str, role: str, region: str, channels: str,
         **addresses: str) -> None:
    session.add(User(username=username, password_hash="x", role=role, region_code=region,
                     channels=channels, **addresses))


def entry(session: Session, village: str, n: int, *, severity: str,
          created: dt.datetime, risk_type: str = "因病") -> None:
    record_alerts(session=session, now=created, alerts=[
        make_alert(household(village, n), "2026-10", severity=severity, risk_type=risk_type)])


def populate(session: Session, robots_url: str) -> None:
    user(session, "cun1", ROLE_VILLAGE, VILLAGE_A, "email,wecom,dingtalk",
         email="cun1@village-a.example.org",
         wecom_webhook=f"{robots_url}/wecom/ok?key=693a91f6-7xxx",
         dingtalk_webhook=f"{robots_url}/dingtalk/robot/send?access_token=abc123",
         dingtalk_secret=DING_SECRET)
    user(session, "cun2", ROLE_VILLAGE, VILLAGE_A, "email", email="cun2@village-a.example.org")
    user(session, "lead1", ROLE_COUNTY, VILLAGE_A[:6], "email,wecom",
         email="lead1@county.example.org", wecom_webhook=f"{robots_url}/wecom/refuses?key=x")
    user(session, "zhen_b", ROLE_TOWNSHIP, VILLAGE_B[:9], "wecom,dingtalk",
         wecom_webhook=f"{robots_url}/wecom/http500?key=y",
         dingtalk_webhook=f"{robots_url}/dingtalk/robot/send?access_token=bad",
         dingtalk_secret="SECwrong")
    session.commit()
    for n in (1, 2, 3):
        entry(session, VILLAGE_A, n, severity="高", created=NOW - dt.timedelta(hours=1))
    entry(session, VILLAGE_A, 4, severity="中", created=NOW - dt.timedelta(days=16),
          risk_type="因残")
    entry(session, VILLAGE_B, 1, severity="高", created=NOW - dt.timedelta(hours=1))


@pytest.fixture
def settings(tmp_path: Path, smtp: tuple[Inbox, int]) -> Settings:
    return Settings(var_dir=tmp_path / "var", web_base_url=BASE_URL, smtp_host="127.0.0.1",
                    smtp_port=smtp[1], smtp_from="预警 <fanpin@county.example.org>")


def personal_words() -> list[str]:
    return [*typing.get_args(RiskType), *typing.get_args(HouseholdType), "因病", "病"]


def test_real_senders_deliver_one_message_per_person_per_channel(
    tmp_path: Path, settings: Settings, smtp: tuple[Inbox, int], robots: tuple[Robots, str]
) -> None:
    inbox, _ = smtp
    received, robots_url = robots
    engine = sqlite_engine(tmp_path)
    try:
        with Session(engine) as s:
            populate(s, robots_url)
            swept = sweep(session=s, now=NOW)
            s.commit()
            assert (swept.high, swept.escalated) == (4, 1)
            stats = dispatch(session=s, settings=settings, now=NOW)  # the real senders
        # cun1: email + wecom + dingtalk; cun2: email; lead1: email (its wecom is refused);
        # zhen_b: both robots fail.
        assert (stats.messages, stats.failed) == (5, 3)

        # E-mail: one each, UTF-8 Chinese subject decoded, only what may be shown.
        mails = {m["To"].addresses[0].username: m for m in inbox.parsed()}
        assert sorted(mails) == ["cun1", "cun2", "lead1"]
        assert len(inbox.messages) == 3
        title = "【防返贫预警】3 条高风险新预警、1 条逾期、1 条待接收提醒"
        assert mails["cun1"]["Subject"] == title
        assert mails["lead1"]["Subject"] == "【防返贫预警】1 条升级督办"
        assert str(mails["cun1"]["From"]) == "预警 <fanpin@county.example.org>"
        body = mails["cun1"].get_content()
        assert mails["cun1"].get_content_charset() == "utf-8"
        assert body.startswith("【防返贫预警】") and f"{BASE_URL}/entries/" in body
        assert household(VILLAGE_A, 1) in body and "识别期限" in body
        for m in mails.values():
            assert m["Subject"].isprintable()
            for word in personal_words():
                assert word not in m["Subject"] and word not in m.get_content()

        # WeCom: exactly the markdown shape, UTF-8 JSON.
        (wecom,) = received.on("/wecom/ok")
        assert wecom["query"] == {"key": ["693a91f6-7xxx"]}
        assert wecom["content_type"].startswith("application/json")
        payload = json.loads(wecom["raw"].decode("utf-8"))
        assert set(payload) == {"msgtype", "markdown"} and payload["msgtype"] == "markdown"
        assert set(payload["markdown"]) == {"content"}
        content = payload["markdown"]["content"]
        assert content.startswith("### 【防返贫预警】3 条高风险新预警、1 条逾期、1 条待接收提醒")
        assert content.count(f"]({BASE_URL}/entries/") == 5
        assert len(content.encode()) <= 4096

        # DingTalk: markdown with title and text, signed; the server checked the signature.
        (ding,) = [r for r in received.on("/dingtalk/") if r["query"]["access_token"] == ["abc123"]]
        assert _dingtalk_sign_ok(ding["query"])
        payload = json.loads(ding["raw"].decode("utf-8"))
        assert set(payload) == {"msgtype", "markdown"} and payload["msgtype"] == "markdown"
        assert set(payload["markdown"]) == {"title", "text"}
        assert payload["markdown"]["title"] == mails["cun1"]["Subject"]
        assert payload["markdown"]["text"] == content
        for word in personal_words():
            assert word not in content

        # Failures: an error type or code only, no content, no URL with its key.
        with Session(engine) as s:
            errors = {(n.recipient, n.channel): (n.attempts, n.last_error, n.sent_at)
                      for n in s.scalars(select(Notification))}
        assert errors[("lead1", "wecom")] == (1, "errcode 93000", None)
        assert errors[("zhen_b", "wecom")] == (1, "HTTP 500", None)
        assert errors[("zhen_b", "dingtalk")] == (1, "errcode 310000", None)
        assert errors[("cun1", "dingtalk")] == (0, None, NOW)
        assert errors[("lead1", "email")] == (0, None, NOW)

        # The next run retries only the failures; nobody gets a second message.
        before = len(received.requests)
        with Session(engine) as s:
            again = dispatch(session=s, settings=settings, now=NOW + dt.timedelta(minutes=1))
        assert (again.messages, again.failed) == (0, 3)
        assert len(inbox.messages) == 3
        assert sorted(r["path"] for r in received.requests[before:]) == [
            "/dingtalk/robot/send", "/wecom/http500", "/wecom/refuses"]
    finally:
        engine.dispose()


def test_unreachable_smtp_is_a_retryable_failure(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    settings = Settings(var_dir=tmp_path / "var", smtp_host="127.0.0.1", smtp_port=free_port())
    try:
        with Session(engine) as s:
            user(s, "cun1", ROLE_VILLAGE, VILLAGE_A, "email", email="cun1@example.org")
            s.commit()
            entry(s, VILLAGE_A, 1, severity="高", created=NOW)
            sweep(session=s, now=NOW)
            s.commit()
            stats = dispatch(session=s, settings=settings, now=NOW)
            assert (stats.messages, stats.failed) == (0, 1)
            s.expire_all()
            n = s.scalars(select(Notification)).one()
            assert (n.attempts, n.last_error) == (1, "ConnectionRefusedError")
    finally:
        engine.dispose()


@pytest.mark.integration
def test_postgres_sweeps_and_dispatchers_do_not_collide(pg_engine: Engine,
                                                         tmp_path: Path) -> None:
    """Two sweeps at once: the second skips the rows the first has locked, and nothing is
    queued twice. Two dispatchers at once: the second stands aside."""
    with Session(pg_engine) as s:
        user(s, "cun1", ROLE_VILLAGE, VILLAGE_A, "email", email="cun1@example.org")
        user(s, "lead1", ROLE_COUNTY, VILLAGE_A[:6], "email", email="lead1@example.org")
        s.commit()
        for n in (1, 2, 3):
            entry(s, VILLAGE_A, n, severity="高", created=NOW - dt.timedelta(days=16))
    with Session(pg_engine) as a, Session(pg_engine) as b:
        first = sweep(session=a, now=NOW)
        second = sweep(session=b, now=NOW)
        assert (first.high, first.escalated, first.reminded, first.queued) == (3, 3, 3, 12)
        assert (second.high, second.escalated, second.reminded, second.queued) == (0, 0, 0, 0)
        a.commit()
        b.commit()
    with Session(pg_engine) as s:
        assert sweep(session=s, now=NOW).queued == 0
        s.commit()
        # Queueing the same rows again is a no-op even without the entry flags.
        e = s.get(notify.Entry, s.scalars(select(Notification.entry_id)).first())
        assert e is not None
        assert notify.queue(s, entry=e, kind="high", recipients=notify.responsible_officers(
            s, e), now=NOW) == 0

    sent: list[tuple[str, str]] = []
    senders: dict[str, notify.Sender] = {
        "email": lambda u, m: sent.append((u.username, m.title))}
    settings = Settings(var_dir=tmp_path)
    with Session(pg_engine) as a, Session(pg_engine) as b:
        with notify._dispatcher_lock(a) as held:
            assert held
            assert dispatch(session=b, settings=settings, now=NOW, senders=senders).busy
        stats = dispatch(session=b, settings=settings, now=NOW, senders=senders)
    assert (stats.messages, stats.delivered) == (2, 12)
    assert sorted(sent) == [("cun1", "【防返贫预警】3 条高风险新预警、3 条逾期、3 条待接收提醒"),
                            ("lead1", "【防返贫预警】3 条升级督办")]
