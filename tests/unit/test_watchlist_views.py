"""The watch-list pages and API, through FastAPI's TestClient on SQLite, logged in.

Access by role and region, authentication and CSRF have their own modules (test_access,
test_auth); this one checks what the pages and the API show and how they take filters.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from consumers.watchlist.charts import oop_chart
from consumers.watchlist.models import ROLE_ADMIN, ROLE_COUNTY, ROLE_VILLAGE, Entry
from consumers.watchlist.service import record_alerts, set_state
from consumers.watchlist.views import create_app
from schemas import Origin
from tests.unit.test_watchlist_helpers import (
    NOW,
    VILLAGE_A,
    VILLAGE_B,
    household,
    make_alert,
    sqlite_engine,
)
from tests.unit.watchlist_web import ROLES, add_users, close_all, logged_in

H1 = household(VILLAGE_A, 1)
H2 = household(VILLAGE_A, 2)
H3 = household(VILLAGE_B, 3)
APP_NOW = NOW + dt.timedelta(days=1)
# The out-of-pocket medical chart's title (shown to officers only).
OOP_TITLE = re.findall(r"<title>([^<]+)</title>", oop_chart([], "zh"))[0]


def seed(engine: Engine) -> None:
    """Three entries: H1 and H2 in VILLAGE_A, H3 in VILLAGE_B; one account per role."""
    with Session(engine) as s:
        record_alerts(
            session=s,
            alerts=[
                make_alert(
                    H1, "2026-03", risk_type="因病", severity="高",
                    rules=(
                        ("medical-spike", "因病", "单次住院三重保障后自付 12,000.00 元"),
                        ("below_line", "因病", "扣除刚性支出后人均 7,100.50 元，低于监测线"),
                    ),
                    sources=[Origin("medical", "medical/2026-03.csv", 4711),
                             Origin("rural", "income/2026-03.csv", 88)],
                ),
                make_alert(H1, "2026-04", severity="中", projected_per_capita="6900.00"),
                make_alert(H2, "2026-02", risk_type="因务工就业不稳", severity="中",
                           household_type="一般农户"),
                make_alert(H3, "2026-05", risk_type="缺劳动力", severity="低",
                           rules=(("below_line", "缺劳动力", "<script>alert(1)</script>"),)),
            ],
            now=NOW,
        )
        h3 = s.scalars(select(Entry).where(Entry.household_id == H3)).one()
        set_state(session=s, entry_id=h3.id, state="核实中", actor="李干部")
        h2 = s.scalars(select(Entry).where(Entry.household_id == H2)).one()
        h2.assignee = ROLE_VILLAGE  # the village officer's (username "village")
        s.commit()
    # One account per role (username = role): the village, township and county of VILLAGE_A
    # (so H1 and H2, not H3), a publisher and an administrator (every region).
    add_users(engine)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    # Read-only tests share one seeded database (a login at another "now" would end the
    # shared sessions: it purges the expired ones, so such tests seed their own).
    engine = sqlite_engine(tmp_path_factory.mktemp("views"))
    seed(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def clients(engine: Engine) -> Iterator[dict[str, TestClient]]:
    app = create_app(engine=engine, clock=lambda: APP_NOW)
    by_role = {role: logged_in(app, role) for role in ROLES}
    yield by_role
    close_all(by_role.values())


@pytest.fixture(scope="module")
def admin(clients: dict[str, TestClient]) -> TestClient:
    """Sees every region (all three entries), but no health details."""
    return clients[ROLE_ADMIN]


@pytest.fixture(scope="module")
def county(clients: dict[str, TestClient]) -> TestClient:
    """The county lead of 990122: H1 and H2, with health details."""
    return clients[ROLE_COUNTY]


def entry_id(engine: Engine, household_id: str) -> int:
    with Session(engine) as s:
        return s.scalars(select(Entry.id).where(Entry.household_id == household_id)).one()


def rows_of(html: str) -> list[str]:
    """The household numbers listed in the table body, in order."""
    body = html.split("<tbody>", 1)[1] if "<tbody>" in html else ""
    return re.findall(r'href="/entries/\d+[^"]*">(\d{16})</a>', body)


def test_list_page_is_chinese_by_default(admin: TestClient) -> None:
    r = admin.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<html lang="zh-CN">' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    for label in ("防返贫监测预警清单", "户编号", "风险类型", "严重程度", "状态", "预警月份",
                  "地区", "户类型", "预警次数", "导出 CSV", "导出 Excel", "导出公示版",
                  "查询", "责任人", "标记", "我负责的"):
        assert label in html, label
    assert rows_of(html) == [H2, H1, H3]  # oldest first month first
    assert 'href="/?lang=en"' in html  # the language switch
    assert 'href="/export.csv"' in html
    assert 'href="/export.xlsx"' in html
    # counts by state, at the top, before the table
    assert re.search(r"新预警<b>2</b>", html)
    assert re.search(r"核实中<b>1</b>", html)
    assert html.index("新预警<b>") < html.index('<table class="cards">')
    # on a phone each row becomes a card, every cell labelled
    assert re.search(r'<td[^>]* data-label="户编号"[^>]*><a href="/entries/', html)
    assert 'data-label="严重程度"' in html and 'data-label="状态"' in html
    # 高 is highlighted
    assert re.search(r'<tr class="sev-高">\s*<td[^>]* data-label="户编号"[^>]*>'
                     r'<a href="/entries/\d+">' + H1, html)
    assert "overflow-x:auto" in html
    # who is logged in, and a logout form carrying the CSRF token
    assert "admin 干部" in html
    assert re.search(r'<form method="post" action="/logout"><input type="hidden" '
                     r'name="csrf_token" value="[^"]{20,}">', html)


def test_english_switch(county: TestClient) -> None:
    html = county.get("/?lang=en").text
    assert '<html lang="en">' in html
    for label in ("Household", "Risk types", "Severity", "State", "First warned",
                  "Export CSV", "Illness", "High"):
        assert label in html, label
    assert "户编号" not in html
    assert 'data-label="Household"' in html
    assert 'href="/?"' not in html
    assert 'href="/"' in html or 'href="/?' in html
    assert ">中文</a>" in html  # and back
    assert '<input type="hidden" name="lang" value="en">' in html
    assert re.search(r'href="/entries/\d+\?lang=en"', html)
    assert rows_of(html) == [H2, H1]
    # the switch keeps the filters
    html = county.get("/?severity=高&lang=en").text
    assert "href=\"/?severity=%E9%AB%98\"" in html


def test_filters_from_the_form(admin: TestClient, clients: dict[str, TestClient]) -> None:
    def listed(params: dict[str, str], client: TestClient = admin) -> list[str]:
        r = client.get("/", params=params)
        assert r.status_code == 200
        return rows_of(r.text)

    assert listed({"severity": "高"}) == [H1]
    assert listed({"region": VILLAGE_B}) == [H3]
    assert listed({"region": "990122"}) == [H2, H1]
    assert listed({"risk_type": "因务工就业不稳"}) == [H2]
    assert listed({"state": "核实中"}) == [H3]
    assert listed({"assignee": ROLE_VILLAGE}) == [H2]
    assert listed({"assignee": "me"}) == []  # nothing is the administrator's
    assert listed({"assignee": "me"}, clients[ROLE_VILLAGE]) == [H2]
    assert listed({"flag": "unassigned"}) == [H1, H3]
    assert listed({"flag": "escalated"}) == []
    # blank form fields mean "any"
    blank = {"region": "", "risk_type": "", "severity": "", "state": "", "overdue": "",
             "assignee": "", "flag": ""}
    assert listed(blank) == [H2, H1, H3]
    # the form shows what was chosen
    html = admin.get("/", params={"severity": "高", "region": "9901"}).text
    assert '<option value="高" selected>' in html
    assert 'name="region" value="9901"' in html
    assert 'href="/export.csv?region=9901&amp;severity=%E9%AB%98"' in html
    html = admin.get("/", params={"flag": "unassigned", "assignee": "me"}).text
    assert '<option value="unassigned" selected>' in html
    assert 'name="assignee" value="me"' in html


def test_overdue_marks_and_filter(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    seed(engine)
    late = create_app(engine=engine, clock=lambda: NOW + dt.timedelta(days=20))
    with logged_in(late, ROLE_ADMIN) as c:
        html = c.get("/").text
        assert html.count('class="badge overdue"') == 3
        assert html.count('<tr class="sev-') == 3
        assert len(re.findall(r'<tr class="sev-\S+ overdue">', html)) == 3
        assert rows_of(c.get("/?overdue=1").text) == [H2, H1, H3]
        assert rows_of(c.get("/?overdue=0").text) == []
        api = c.get("/api/entries").json()
        assert [i["overdue"] for i in api["items"]] == [True, True, True]
    engine.dispose()


HOSTILE = ["' OR '1'='1", "1' OR 1=1 --", "%", "_", "'; DROP TABLE watchlist_entries; --",
           "<script>x</script>", "高' OR '1'='1", "village' OR assignee IS NULL --", "\x00"]
FIELDS = ["region", "risk_type", "severity", "state", "assignee", "flag"]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", FIELDS)
def test_hostile_filter_values(admin: TestClient, county: TestClient, engine: Engine,
                               field: str, value: str) -> None:
    for client in (admin, county):
        r = client.get("/", params={field: value})
        assert r.status_code == 200
        assert rows_of(r.text) == []
        assert "<script>x</script>" not in r.text
        api = client.get("/api/entries", params={field: value})
        assert api.status_code == 200 and api.json()["total"] == 0
        export = client.get("/export.csv", params={field: value})
        assert export.status_code == 200
        assert len(list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"))))) == 1
    assert admin.get("/api/entries").json()["total"] == 3  # the table is still there
    assert county.get("/api/entries").json()["total"] == 2
    assert inspect(engine).has_table("watchlist_entries")


@pytest.mark.parametrize("params", [{"page": "abc"}, {"page": "-3"}, {"page_size": "0"},
                                    {"sort": "id; DROP TABLE x"}, {"overdue": "maybe"},
                                    {"lang": "fr"}])
def test_bad_parameters_fall_back(admin: TestClient, params: dict[str, str]) -> None:
    r = admin.get("/", params=params)
    assert r.status_code == 200
    assert len(rows_of(r.text)) >= 1
    assert admin.get("/api/entries", params=params).status_code == 200


def test_pagination(admin: TestClient) -> None:
    html = admin.get("/", params={"page_size": "2"}).text
    assert rows_of(html) == [H2, H1]
    assert "第 1 / 2 页，共 3 条" in html
    assert 'href="/?page_size=2&amp;page=2" rel="next"' in html
    html = admin.get("/", params={"page_size": "2", "page": "2"}).text
    assert rows_of(html) == [H3]
    assert 'href="/?page_size=2" rel="prev"' in html
    api = admin.get("/api/entries", params={"page_size": "2", "page": "2"}).json()
    assert (api["total"], api["page"], api["page_size"]) == (3, 2, 2)
    assert [i["household_id"] for i in api["items"]] == [H3]


def test_detail_page_shows_the_evidence(county: TestClient, engine: Engine) -> None:
    r = county.get(f"/entries/{entry_id(engine, H1)}")
    assert r.status_code == 200
    html = r.text
    for text in (H1, VILLAGE_A, "脱贫户", "新预警", "因病", "2026-03", "2026-04", "2026.11-1",
                 "预警原因", "测算依据", "监测线", "8,300.00", "6,900.00", "38,402.00",
                 "10,000.00", "41,230.40", "来源数据行", "income/2026-04.csv",
                 "medical/2026-04.csv", "203", "处理记录", "新建预警", "合并新预警", "系统",
                 "低于监测线", "below_line", "收到的预警", OOP_TITLE):
        assert text in html, text
    # the evidence is the latest month's, the alerts list has both months
    assert "medical/2026-03.csv" not in html
    for month in ("2026-03", "2026-04"):
        assert re.search(f'<td[^>]* data-label="预警编号"[^>]*>alert:{H1}:{month}:2026.11-1</td>',
                         html), month
    # the workflow's forms, each with the session's CSRF token
    for action in ("claim", "visit", "snooze", "note", "assign", "escalate"):
        assert f'action="/entries/{entry_id(engine, H1)}/{action}"' in html, action
    assert html.count('name="csrf_token"') >= 7


def test_detail_page_escapes_and_translates(admin: TestClient, engine: Engine) -> None:
    html = admin.get(f"/entries/{entry_id(engine, H3)}").text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "李干部" in html and "状态变更" in html
    en = admin.get(f"/entries/{entry_id(engine, H3)}?lang=en").text
    for text in ("Evidence", "Monitoring line", "Source rows", "History", "Verifying",
                 "Lack of labour"):
        assert text in en, text
    missing = admin.get("/entries/987654?lang=en").text
    assert "Back to the list" in missing


def test_opening_an_entry_is_audited(county: TestClient, engine: Engine) -> None:
    eid = entry_id(engine, H2)
    before = county.get(f"/api/entries/{eid}").json()["history"]
    county.get(f"/entries/{eid}")
    after = county.get(f"/api/entries/{eid}").json()["history"]
    viewed = [h for h in after if h["action"] == "viewed"]
    assert len(after) == len(before) + 2  # the page view and this API read
    assert viewed[-1]["actor"] == ROLE_COUNTY


def test_unknown_entry_is_404(admin: TestClient) -> None:
    r = admin.get("/entries/987654")
    assert r.status_code == 404
    assert "未找到该预警" in r.text
    assert admin.get("/entries/abc").status_code == 422
    api = admin.get("/api/entries/987654")
    assert api.status_code == 404 and api.json()["error_zh"] == "未找到该预警。"


def test_api_entries(county: TestClient, admin: TestClient) -> None:
    data = county.get("/api/entries").json()
    assert data["total"] == 2 and data["page"] == 1 and data["page_size"] == 50
    assert [i["household_id"] for i in data["items"]] == [H2, H1]
    h2, h1 = data["items"]
    assert h1["severity"] == "高" and h1["alert_count"] == 2 and h1["risk_types"] == ["因病"]
    assert h1["first_month"] == "2026-03" and h1["last_month"] == "2026-04"
    assert h1["created_at"].endswith("+00:00")
    assert h1["url"].startswith("/entries/")
    assert h1["overdue"] is False
    assert h1["assignee"] is None and h2["assignee"] == ROLE_VILLAGE
    assert h1["needs_measure"] is False and h1["escalated"] is False
    only = admin.get("/api/entries", params={"severity": "低"}).json()
    assert [i["household_id"] for i in only["items"]] == [H3]
    mine = county.get("/api/entries", params={"assignee": "me"}).json()
    assert mine["total"] == 0


def export_rows(client: TestClient, path: str = "/export.csv",
                **params: str) -> list[list[str]]:
    r = client.get(path, params=params)
    assert r.status_code == 200
    return list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))


def test_export_download(admin: TestClient, county: TestClient) -> None:
    r = admin.get("/export.csv")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="watchlist-')
    assert r.headers["cache-control"] == "no-store"
    assert r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][:7] == ["户编号", "行政区划代码", "风险类型", "预警规则", "预警月份", "严重程度",
                           "状态"]
    assert len(rows) == 4
    assert len(export_rows(admin, region=VILLAGE_B)) == 2
    # An officer's working sheet has the health details; the posting version does not.
    working = export_rows(county)
    assert [row[0] for row in working[1:]] == [H1, H2]  # by region and household
    assert working[1][2] == "因病" and "medical-spike" in working[1][3]
    public = county.get("/export.csv", params={"public": "1"})
    assert public.headers["content-disposition"].endswith('-public.csv"')
    text = public.content.decode("utf-8-sig")
    assert "因病" not in text and "medical-spike" not in text
    assert len(list(csv.reader(io.StringIO(text)))) == 3
    # The administrator's sheets carry no health details either.
    admin_text = admin.get("/export.csv").content.decode("utf-8-sig")
    assert "因病" not in admin_text and "medical-spike" not in admin_text


def test_export_xlsx_download(county: TestClient) -> None:
    from openpyxl import load_workbook

    r = county.get("/export.xlsx", params={"region": VILLAGE_A})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    assert r.headers["content-disposition"].endswith('.xlsx"')
    sheet = load_workbook(io.BytesIO(r.content), read_only=True)["监测预警清单"]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] == "户编号"
    assert [row[0] for row in rows[1:]] == [H1, H2]
    public = county.get("/export.xlsx", params={"public": "1"})
    assert public.headers["content-disposition"].endswith('-public.xlsx"')
    cells = [c for row in load_workbook(io.BytesIO(public.content), read_only=True)
             ["监测预警清单"].iter_rows(values_only=True) for c in row]
    assert "因病" not in cells and not any("medical-spike" in str(c) for c in cells)


def test_healthz_and_headers(admin: TestClient, engine: Engine) -> None:
    r = admin.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    anonymous = TestClient(create_app(engine=engine, clock=lambda: APP_NOW))
    try:
        assert anonymous.get("/healthz").status_code == 200  # no login needed
        responses = [admin.get("/"), admin.get(f"/entries/{entry_id(engine, H3)}"),
                     admin.get("/api/entries"), admin.get("/export.csv"),
                     anonymous.get("/login"), anonymous.get("/", follow_redirects=False),
                     anonymous.get("/api/entries")]
    finally:
        anonymous.close()
    for page in responses:
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert admin.get("/docs").status_code == 404
    assert admin.get("/openapi.json").status_code == 200


def test_empty_watch_list(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    add_users(engine, {"admin": (ROLE_ADMIN, "")})
    with logged_in(create_app(engine=engine), "admin") as c:
        html = c.get("/").text
        assert "没有符合条件的预警。" in html
        assert "第 1 / 1 页，共 0 条" in html
        assert c.get("/api/entries").json() == {"total": 0, "page": 1, "page_size": 50,
                                                "items": []}
    engine.dispose()
