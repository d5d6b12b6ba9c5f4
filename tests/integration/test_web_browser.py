"""The duty officers' workspace end to end, in a real browser: Debian's headless chromium
driven by Playwright against uvicorn.

The server runs in a background thread on 127.0.0.1 on a free port, over SQLite with a
fixed clock; Playwright starts chromium itself (``executable_path``; nothing downloaded)
and every browser context, the browser and the server are stopped by the fixture that
started them. The screenshots of the list and household pages (phone and desktop, in
Chinese) are written to docs/screenshots/ (or $FANPIN_SCREENSHOT_DIR) for people to look
at.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvicorn
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    expect,
    sync_playwright,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from consumers.watchlist import workflow
from consumers.watchlist.auth import create_user
from consumers.watchlist.models import Entry, RegionName
from consumers.watchlist.service import record_alerts
from consumers.watchlist.views import create_app
from schemas import Alert, Origin
from schemas.events import MonthFigures
from tests.unit.test_watchlist_helpers import (
    NOW,
    VILLAGE_A,
    VILLAGE_B,
    household,
    make_alert,
    sqlite_engine,
)

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("FANPIN_SCREENSHOT_DIR") or REPO / "docs" / "screenshots")

PASSWORD = "Xinmin-2026-duty"
OFFICER = "wang.chunyan"  # 村级干部 of VILLAGE_A (石门县青石乡新民村)
OFFICER_NAME = "王春燕"
LEAD = "zhao.jianguo"  # 县级负责人 of 石门县 (990122)
LEAD_NAME = "赵建国"
NOW_BEIJING = "2026-11-20 10:00"  # NOW shown in Beijing time

A1, A2, A3, A4, A5 = (household(VILLAGE_A, n) for n in (1, 2, 3, 4, 5))
B7, B8 = household(VILLAGE_B, 7), household(VILLAGE_B, 8)
OWN = {A1, A2, A3, A4, A5}
OTHER = {B7, B8}

# The regions table as the sink writes it from the statistics bureau's regions.csv.
REGIONS = [
    ("990000000000", "示范省", "省"),
    ("990100000000", "青山市", "市"),
    ("990122000000", "石门县", "县"),
    ("990122001000", "城关镇", "乡镇"),
    ("990122001001", "东山村", "村"),
    ("990122003000", "青石乡", "乡镇"),
    ("990122003005", "中坝村", "村"),
    ("990122003006", "新民村", "村"),
    ("990123000000", "白沙县", "县"),
    ("990123001000", "城关镇", "乡镇"),
    ("990123001006", "柳树湾村", "村"),
]


# -- realistic households ----------------------------------------------------------------


def _month_index(month: str) -> int:
    return int(month[:4]) * 12 + int(month[5:7]) - 1


def _month(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _wobble(month: str, amplitude: int) -> Decimal:
    """A deterministic month-to-month variation of income (0 .. amplitude yuan)."""
    return Decimal((_month_index(month) * 37) % 7 * amplitude // 6)


def illness(spike: str) -> Callable[[str], MonthFigures]:
    """The earner falls ill in ``spike``: a hospital stay, income down to a third, the
    job lost; one month's income is not reported (a gap in the chart)."""
    after = _month_index(spike)

    def figures(month: str) -> MonthFigures:
        i = _month_index(month)
        if i < after:
            income: Decimal | None = Decimal("3480") + _wobble(month, 360)
        else:
            income = Decimal("1150") + _wobble(month, 180)
        if i == after + 3:
            income = None
        oop = {0: "14850.40", 1: "4420.00", 2: "980.50", 3: "760.00", 4: "640.00"}.get(
            i - after, "85.00" if i % 4 == 0 else "0")
        return MonthFigures(month=month, income=income, out_of_pocket=Decimal(oop),
                            job_losses=int(i == after), job_starts=0)

    return figures


def job_loss(month: str) -> MonthFigures:
    """Two migrant workers lose their jobs in 2026-05; one finds work again in 2026-09."""
    i = _month_index(month)
    if i < _month_index("2026-05"):
        income = Decimal("3300") + _wobble(month, 420)
    elif i < _month_index("2026-09"):
        income = Decimal("1100") + _wobble(month, 200)
    else:
        income = Decimal("1900") + _wobble(month, 200)
    return MonthFigures(
        month=month, income=income,
        out_of_pocket=Decimal("126.30") if month == "2025-11" else Decimal(0),
        job_losses={"2025-01": 1, "2026-05": 2}.get(month, 0),
        job_starts={"2025-03": 1, "2026-09": 1}.get(month, 0),
    )


def no_labour(month: str) -> MonthFigures:
    """An elderly couple: low income all along, no wages."""
    return MonthFigures(month=month, income=Decimal("1880") + _wobble(month, 240),
                        out_of_pocket=Decimal("210.00") if month.endswith("-03") else Decimal(0),
                        job_losses=0, job_starts=0)


HISTORY_START = "2025-01"
SIZE = 4
CENT = Decimal("0.01")


def history_until(profile: Callable[[str], MonthFigures], month: str) -> list[MonthFigures]:
    """Up to 24 months of figures ending at ``month``, oldest first (as alerts carry them)."""
    end = _month_index(month)
    start = max(_month_index(HISTORY_START), end - 23)
    return [profile(_month(i)) for i in range(start, end + 1)]


def _zh_month(month: str) -> str:
    return f"{month[:4]}年{int(month[5:7])}月"


def reasons(risk: str, history: list[MonthFigures], per_capita: Decimal
            ) -> tuple[tuple[str, str, str], ...]:
    """The rules' findings, worded as the detector words them, from the same figures."""
    window = f"{_zh_month(history[-12].month)} 至 {_zh_month(history[-1].month)}"
    below = ("projected-below-line", risk,
             f"{window} 人均纯收入（扣除刚性支出后）预计 {per_capita:,.2f} 元，"
             "低于 2026 年监测线 8300 元")
    if risk == "因病":
        stays = [f for f in history if f.out_of_pocket >= 10_000]
        since = [f for f in history if f.month >= stays[0].month]
        spent = sum((f.out_of_pocket for f in since), Decimal(0))
        return (
            ("medical-spike", risk,
             f"单次住院个人自付 {stays[0].out_of_pocket:,.2f} 元，超过 10000 元"),
            ("illness", risk, f"自 {_zh_month(stays[0].month)} 起 {len(since)} 个月医疗费用"
                              f"个人自付 {spent:,.2f} 元（三重保障后）"),
            below,
        )
    if risk == "因务工就业不稳":
        return (("job-loss", risk, "工资性收入自 2026年5月 起降至正常水平的 33%（正常每月约 "
                                   "3,520.00 元），预计持续至 2027年2月"), below)
    return (below,)


def build_alert(n: int, household_id: str, month: str) -> Alert:
    """An alert whose evidence agrees with the figures it carries for the charts."""
    profile, risk, severities = SEED[household_id]
    history = history_until(profile, month)
    window = history[-12:]
    reported = [f.income for f in window if f.income is not None]
    baseline = sum(reported, Decimal(0))
    projected = (baseline + baseline / len(reported) * (12 - len(reported))).quantize(CENT)
    rigid = sum((f.out_of_pocket for f in window), Decimal(0))
    per_capita = ((projected - rigid) / SIZE).quantize(CENT)
    sources = [Origin("rural", f"income/{month}.csv", 120 + 17 * n)]
    if risk == "因病":
        sources.append(Origin("medical", f"medical/{month}.csv", 2200 + 31 * n))
    if risk == "因务工就业不稳":
        sources.append(Origin("employment", f"employment/{month}.csv", 640 + 9 * n))
    alert = make_alert(household_id, month, risk_type=risk, severity=severities[month],
                       rules=reasons(risk, history, per_capita),
                       projected_per_capita=str(per_capita),
                       household_type="脱贫户" if n % 3 else "一般农户", sources=sources)
    evidence = msgspec.structs.replace(
        alert.evidence, household_size=SIZE, projected_income_12m=projected,
        rigid_spending_12m=rigid, baseline_income_12m=baseline,
        months_of_history=sum(f.income is not None for f in history), history=history)
    return msgspec.structs.replace(alert, evidence=evidence)


# household: (its months' figures, main risk type, {alert month: severity})
SEED: dict[str, tuple[Callable[[str], MonthFigures], str, dict[str, str]]] = {
    A1: (illness("2026-06"), "因病",
         {"2026-07": "中", "2026-08": "高", "2026-09": "高", "2026-10": "高"}),
    A2: (job_loss, "因务工就业不稳", {"2026-09": "中", "2026-10": "中"}),
    A3: (illness("2026-05"), "因病",
         {"2026-06": "高", "2026-07": "高", "2026-08": "高", "2026-09": "高", "2026-10": "高"}),
    A4: (no_labour, "缺劳动力", {"2026-10": "低"}),
    A5: (job_loss, "因务工就业不稳", {"2026-10": "中"}),
    B7: (illness("2026-07"), "因病", {"2026-09": "高", "2026-10": "高"}),
    B8: (no_labour, "缺劳动力", {"2026-10": "低"}),
}


def alerts_of_month(month: str) -> list[Alert]:
    return [build_alert(n, hid, month) for n, (hid, (*_, severities)) in enumerate(SEED.items())
            if month in severities]


def received(month: str) -> dt.datetime:
    """Monthly data reach the watch list on the 8th of the next month."""
    i = _month_index(month) + 1
    return dt.datetime(i // 12, i % 12 + 1, 8, 2, 0, tzinfo=dt.UTC)


def at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day + "T01:30:00+00:00")


def seed(session: Session) -> None:
    for code, name, level in REGIONS:
        session.add(RegionName(code=code, name=name, level=level))
    officer = create_user(session=session, username=OFFICER, password=PASSWORD,
                          role="village", region_code=VILLAGE_A, display_name=OFFICER_NAME)
    create_user(session=session, username=LEAD, password=PASSWORD, role="county_lead",
                region_code=VILLAGE_A[:6], display_name=LEAD_NAME)
    create_user(session=session, username="chen.tao", password=PASSWORD, role="township",
                region_code=VILLAGE_A[:9], display_name="陈涛")
    create_user(session=session, username="li.xiaomei", password=PASSWORD, role="village",
                region_code=VILLAGE_B, display_name="李晓梅")
    session.commit()

    months = sorted({m for *_, severities in SEED.values() for m in severities})
    for month in months:
        if month == "2026-07":
            # A3 was worked in July: claimed, visited, identified, two measures, a note.
            a3 = session.scalars(select(Entry.id).where(Entry.household_id == A3)).one()
            steps: list[tuple[str, Callable[..., Any], dict[str, str]]] = [
                ("2026-07-09", workflow.claim, {}),
                ("2026-07-10", workflow.start_visit, {
                    "note": "入户核实：户主王建军 5 月底因脑梗住院，医保报销后自付两万余元；"
                            "妻子在家照顾，务工收入中断，两个孩子在读初中。"}),
                ("2026-07-14", workflow.identify, {"monitored_type": "突发严重困难户"}),
                ("2026-07-25", workflow.add_measure, {
                    "category": "健康帮扶",
                    "text": "协助申请县医疗救助 6,000 元，落实家庭医生签约和门诊慢特病待遇。"}),
                ("2026-08-03", workflow.add_measure, {
                    "category": "公益岗位", "text": "妻子安排村保洁公益岗位，每月 800 元。"}),
                ("2026-08-05", workflow.add_note, {"text": "已联系镇卫生院每月随访一次。"}),
            ]
            for day, action, fields in steps:
                action(session=session, user=officer, entry_id=a3, now=at(day), **fields)
            session.commit()
        record_alerts(session=session, alerts=alerts_of_month(month), now=received(month))


# -- the server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    url: str
    ids: dict[str, int]

    def entry(self, household_id: str) -> str:
        return f"{self.url}/entries/{self.ids[household_id]}"


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is required in CI")
        pytest.skip(f"{CHROMIUM} not installed")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    engine = sqlite_engine(tmp_path_factory.mktemp("browser"))
    with Session(engine) as s:
        seed(s)
        ids = {e.household_id: e.id for e in s.scalars(select(Entry))}
    assert set(ids) == OWN | OTHER
    app = create_app(engine=engine, clock=lambda: NOW)
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    for _attempt in range(3):  # the probed port can be taken before uvicorn binds it
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        thread = threading.Thread(target=server.run, name="watchlist-web", daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if server.started:
            break
        server.should_exit = True
        thread.join(10)
    assert server is not None and thread is not None and server.started, "uvicorn did not start"
    try:
        yield Site(f"http://127.0.0.1:{port}", ids)
    finally:
        server.should_exit = True
        thread.join(15)
        engine.dispose()
        assert not thread.is_alive()


# -- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    # Playwright's driver starts chromium in its own process and kills it on close().
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(chromium), headless=True,
                               args=["--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@dataclass
class Tabs:
    """Opens pages in fresh browser contexts (no shared cookies) and remembers what went
    wrong in them: script errors, console errors (a CSP violation shows up there)."""

    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def open(self, **options: Any) -> Page:
        context = self.browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai",
                                           **options)
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("response", self._response)
        return page

    def _console(self, msg: ConsoleMessage) -> None:
        # A failed load is reported with its address by _response.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {msg.text}")

    def _response(self, response: Response) -> None:
        # Pages may answer 401/404 on purpose; anything they load must not fail.
        if response.status >= 400 and response.request.resource_type != "document":
            self.problems.append(f"{response.status} {response.request.resource_type} "
                                 f"{response.url}")


@pytest.fixture
def tabs(browser: Browser) -> Iterator[Tabs]:
    t = Tabs(browser)
    try:
        yield t
    finally:
        for context in t.contexts:
            context.close()


def log_in(page: Page, site: Site, username: str, path: str = "/") -> None:
    """Open ``path``, get sent to the login form, log in and land back on ``path``."""
    page.goto(site.url + path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()
    expect(page).to_have_url(site.url + path)


def listed(page: Page) -> list[str]:
    """The household numbers in the list's table, in order."""
    return page.locator("table.cards tbody tr td:first-child a").all_inner_texts()


def fact(page: Page, label: str) -> str:
    """A value of the facts list at the top of an entry page."""
    return page.locator(f"dl.facts:not(.evidence) dt:text-is('{label}') + dd").inner_text()


def audit_rows(page: Page) -> list[list[str]]:
    """The audit trail: [time, actor, action, old, new] a row."""
    return [row.locator("td").all_inner_texts()
            for row in page.locator("table.audit tbody tr").all()]


# -- the tests -----------------------------------------------------------------------------


def test_village_officer_sees_only_own_village(site: Site, tabs: Tabs) -> None:
    page = tabs.open()
    page.goto(site.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
    # A wrong password is refused with a message, on the form.
    page.get_by_label("用户名").fill(OFFICER)
    page.get_by_label("密码").fill("not-the-password")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="登录", exact=True).click()
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("用户名或密码错误。")
    page.get_by_label("用户名").fill(OFFICER)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()
    expect(page).to_have_url(site.url + "/")
    expect(page.locator("header")).to_contain_text(OFFICER_NAME)

    assert set(listed(page)) == OWN
    html = page.content()
    for hid in OTHER:
        assert hid not in html
    expect(page.locator("ul.counts li").first).to_have_text("合计5")

    # The region dropdown offers the officer's own village only, by name.
    # The filters fold away on an unfiltered list (phones); open them as an officer would.
    page.locator("details.filterbox > summary").click()
    options = page.locator("select[name=region] option").all_inner_texts()
    assert [o.strip() for o in options] == ["本辖区全部", "新民村（村）"]
    page.locator("select[name=region]").select_option(VILLAGE_A)
    page.get_by_role("button", name="查询", exact=True).click()
    expect(page).to_have_url(re.compile(rf"region={VILLAGE_A}"))
    assert set(listed(page)) == OWN

    # Asking for a wider or another region by URL does not widen the scope.
    page.goto(site.url + "/?region=99")
    assert set(listed(page)) == OWN
    for region in (VILLAGE_B, VILLAGE_B[:6]):
        page.goto(f"{site.url}/?region={region}")
        expect(page.get_by_text("没有符合条件的预警。")).to_be_visible()
        assert not {hid for hid in OTHER if hid in page.content()}

    # Another village's entry is "not found", exactly like an id that does not exist.
    for url in (site.entry(B7), site.url + "/entries/99999"):
        response = page.goto(url)
        assert response is not None and response.status == 404
        expect(page.locator("main")).to_contain_text("未找到该预警。")
        assert B7 not in page.content()
    assert not tabs.problems


def test_village_officer_claims_visits_and_identifies(site: Site, tabs: Tabs) -> None:
    page = tabs.open()
    log_in(page, site, OFFICER)
    page.get_by_role("link", name=A1, exact=True).click()
    expect(page).to_have_url(site.entry(A1))
    expect(page.locator("main h2").first).to_contain_text(A1)
    assert fact(page, "状态") == "新预警"
    assert fact(page, "责任人") == "—"

    # The charts carry the household's months: income below the line, the hospital bill,
    # the lost job.
    assert page.locator("svg.chart").count() == 3
    assert page.locator("svg.chart circle.point.below").count() >= 3
    assert page.locator("svg.chart rect.bar").count() >= 3
    assert page.locator("svg.chart rect.loss").count() == 1
    # ... and the evidence behind the newest alert, with the departments' rows.
    main = page.locator("main")
    for text in ("测算依据", "8,300.00", "低于监测线", "medical-spike", "income/2026-10.csv",
                 "medical/2026-10.csv", "医保局"):
        expect(main).to_contain_text(text)

    page.get_by_role("button", name="认领", exact=True).click()
    expect(page.locator(".flash.ok")).to_have_text("已认领。")
    assert fact(page, "状态") == "已接收"
    assert fact(page, "责任人") == OFFICER_NAME  # shown by display name

    visit = ("入户核实：户主 6 月住院，出院后在家休养，暂无劳动能力；"
             "医保报销后仍自付两万余元，家中无其他务工收入。")
    page.get_by_label("核实情况").fill(visit)
    page.get_by_role("button", name="登记入户核实", exact=True).click()
    expect(page.locator(".flash.ok")).to_have_text("已登记入户核实。")
    assert fact(page, "状态") == "核实中"
    expect(page.locator("main")).to_contain_text(visit)

    page.get_by_label("监测对象类型").select_option("突发严重困难户")
    page.get_by_role("button", name="识别纳入监测", exact=True).click()
    expect(page.locator(".flash.ok")).to_have_text("已识别纳入监测。")
    assert fact(page, "状态") == "已纳入监测（突发严重困难户）"
    assert fact(page, "纳入监测时间") == NOW_BEIJING

    # The audit trail names the officer on every step, in order.
    mine = [(action, old, new) for when, actor, action, old, new in audit_rows(page)
            if actor == OFFICER and when == NOW_BEIJING]
    assert [a for a, _, _ in mine if a != "查看详情"] == [
        "认领", "状态变更", "登记入户核实", "状态变更", "识别纳入", "状态变更"]
    assert mine.count(("查看详情", "", "")) == 4  # the list link, then after each action
    assert ("认领", "", OFFICER) in mine
    assert ("状态变更", "新预警", "已接收") in mine
    assert ("登记入户核实", "", visit) in mine
    assert ("状态变更", "已接收", "核实中") in mine
    assert ("识别纳入", "", "突发严重困难户") in mine
    assert ("状态变更", "核实中", "已纳入监测") in mine
    system = [r for r in audit_rows(page) if r[1] == "系统"]
    assert [r[2] for r in system][:2] == ["新建预警", "合并新预警"]

    # "Mine" on the list now shows it, in its new state.
    page.get_by_role("link", name="防返贫监测预警清单").click()
    page.get_by_role("link", name="我负责的", exact=True).click()
    expect(page).to_have_url(re.compile(r"assignee=me"))
    assert A1 in listed(page)
    row = page.locator("table.cards tbody tr", has=page.get_by_role("link", name=A1))
    expect(row).to_contain_text("已纳入监测")
    assert not tabs.problems


def test_county_lead_assigns_and_reads_it_in_english(site: Site, tabs: Tabs) -> None:
    page = tabs.open()
    log_in(page, site, LEAD)
    expect(page.locator("header")).to_contain_text(LEAD_NAME)
    assert set(listed(page)) == OWN  # 石门县 only: nothing of 白沙县
    # The region filter is a cascade: the county's townships, then a township's villages.
    options = " ".join(page.locator("select[name=region] option").all_text_contents())
    for name in ("石门县", "青石乡", "城关镇"):
        assert name in options
    assert "白沙县" not in options and "柳树湾村" not in options
    page.locator("details.filterbox > summary").click()
    page.locator("select[name=region]").select_option(label="\u3000\u3000青石乡（乡镇）")
    page.get_by_role("button", name="查询", exact=True).click()
    options = " ".join(page.locator("select[name=region] option").all_text_contents())
    assert "新民村" in options and "东山村" not in options and "柳树湾村" not in options
    page.goto(site.url + "/")

    page.goto(site.entry(A2))
    assert fact(page, "状态") == "新预警"
    page.locator("details.more > summary").click()  # assign sits with the rarer actions
    choices = page.locator("select[name=assignee] option").all_inner_texts()
    assert f"{OFFICER_NAME}（村级干部）" in choices
    assert not [c for c in choices if "李晓梅" in c]  # the other village's officer
    page.locator("select[name=assignee]").select_option(OFFICER)
    page.get_by_role("button", name="分配/改派", exact=True).click()
    expect(page.locator(".flash.ok")).to_have_text("已分配。")
    assert fact(page, "责任人") == OFFICER_NAME  # shown by display name
    assert fact(page, "状态") == "已接收"
    assert [NOW_BEIJING, LEAD, "分配", "", OFFICER] in audit_rows(page)
    assert [NOW_BEIJING, LEAD, "状态变更", "新预警", "已接收"] in audit_rows(page)

    # The language switch in the header.
    page.locator("header").get_by_role("link", name="English").click()
    expect(page).to_have_url(re.compile(r"[?&]lang=en\b"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("header h1")).to_have_text("Poverty-relapse early-warning watch list")
    assert fact(page, "State") == "Accepted"
    assert fact(page, "Assignee") == OFFICER_NAME
    for text in ("History", "Assigned", "State changed", "Assign", "Escalate", "Log out"):
        expect(page.locator("body")).to_contain_text(text)
    body = page.locator("body").inner_text()
    for zh in ("处理记录", "责任人", "状态变更", "分配/改派"):
        assert zh not in body
    page.locator("header").get_by_role("link", name="Watch list", exact=True).click()
    expect(page).to_have_url(re.compile(r"/\?lang=en$"))
    for text in ("Household", "Severity", "State", "Assignee", "Unstable employment"):
        expect(page.locator("main")).to_contain_text(text)
    page.locator("header").get_by_role("link", name="中文").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")

    # The village officer finds it among the entries assigned to them.
    officer = tabs.open()
    log_in(officer, site, OFFICER, "/?assignee=me")
    assert A2 in listed(officer)
    assert not tabs.problems


VIEWPORTS: dict[str, dict[str, Any]] = {
    "phone": {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
              "is_mobile": True, "has_touch": True},
    "desktop": {"viewport": {"width": 1366, "height": 900}},
}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("device", list(VIEWPORTS))
@pytest.mark.parametrize("page_name", ["list", "entry"])
def test_screenshots(site: Site, tabs: Tabs, page_name: str, device: str) -> None:
    page = tabs.open(**VIEWPORTS[device])
    path = "/" if page_name == "list" else f"/entries/{site.ids[A3]}"
    log_in(page, site, OFFICER, path)
    page.evaluate("document.fonts.ready")
    if page_name == "entry":
        expect(page.locator("main")).to_contain_text("健康帮扶")
        assert page.locator("svg.chart").count() == 3
    width = VIEWPORTS[device]["viewport"]["width"]
    # No sideways scrolling of the page itself (wide tables scroll in their own box).
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width}px wide on a {width}px screen"
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{page_name}-{device}.png"
    page.screenshot(path=str(shot), full_page=True, animations="disabled")
    scale = VIEWPORTS[device].get("device_scale_factor", 1)
    shot_width, shot_height = png_size(shot)
    assert shot_width == width * scale
    assert shot_height >= VIEWPORTS[device]["viewport"]["height"] * scale
    assert not tabs.problems
