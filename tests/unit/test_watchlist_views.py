"""The watch-list pages and API, through FastAPI's TestClient on SQLite."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from consumers.watchlist.models import Entry
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

H1 = household(VILLAGE_A, 1)
H2 = household(VILLAGE_A, 2)
H3 = household(VILLAGE_B, 3)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    # Read-only tests share one seeded database.
    engine = sqlite_engine(tmp_path_factory.mktemp("views"))
    with Session(engine) as s:
        record_alerts(
            session=s,
            alerts=[
                make_alert(
                    H1, "2026-03", risk_type="因病", severity="高",
                    rules=(
                        ("medical_spike", "因病", "单次住院三重保障后自付 12,000.00 元"),
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
        s.commit()
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def client(engine: Engine) -> TestClient:
    app = create_app(engine=engine, clock=lambda: NOW + dt.timedelta(days=1))
    with TestClient(app) as c:
        yield c


def entry_id(engine: Engine, household_id: str) -> int:
    with Session(engine) as s:
        return s.scalars(select(Entry.id).where(Entry.household_id == household_id)).one()


def rows_of(html: str) -> list[str]:
    """The household numbers listed in the table body, in order."""
    body = html.split("<tbody>", 1)[1] if "<tbody>" in html else ""
    return re.findall(r'href="/entries/\d+[^"]*">(\d{16})</a>', body)


def test_list_page_is_chinese_by_default(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<html lang="zh-CN">' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    for label in ("防返贫监测预警清单", "户编号", "风险类型", "严重程度", "状态", "预警月份",
                  "行政区划代码", "户类型", "预警次数", "导出 CSV", "查询"):
        assert label in html
    assert rows_of(html) == [H2, H1, H3]  # oldest first month first
    assert 'href="/?lang=en"' in html  # the language switch
    assert 'href="/export.csv"' in html
    # counts by state, at the top, before the table
    assert re.search(r"新预警<b>2</b>", html)
    assert re.search(r"核实中<b>1</b>", html)
    assert html.index("新预警<b>") < html.index("<table>")
    # 高 is highlighted
    assert re.search(r'<tr class="sev-高">\s*<td><a href="/entries/\d+">' + H1, html)
    assert "overflow-x:auto" in html


def test_english_switch(client: TestClient) -> None:
    html = client.get("/?lang=en").text
    assert '<html lang="en">' in html
    for label in ("Household", "Risk types", "Severity", "State", "First warned",
                  "Export CSV", "Illness", "High"):
        assert label in html
    assert "户编号" not in html
    assert 'href="/?"' not in html
    assert 'href="/"' in html or 'href="/?' in html
    assert ">中文</a>" in html  # and back
    assert '<input type="hidden" name="lang" value="en">' in html
    assert re.search(r'href="/entries/\d+\?lang=en"', html)
    # the switch keeps the filters
    html = client.get("/?severity=高&lang=en").text
    assert "href=\"/?severity=%E9%AB%98\"" in html


def test_filters_from_the_form(client: TestClient) -> None:
    assert rows_of(client.get("/", params={"severity": "高"}).text) == [H1]
    assert rows_of(client.get("/", params={"region": VILLAGE_B}).text) == [H3]
    assert rows_of(client.get("/", params={"region": "990122"}).text) == [H2, H1]
    assert rows_of(client.get("/", params={"risk_type": "因务工就业不稳"}).text) == [H2]
    assert rows_of(client.get("/", params={"state": "核实中"}).text) == [H3]
    # blank form fields mean "any"
    blank = {"region": "", "risk_type": "", "severity": "", "state": "", "overdue": ""}
    assert rows_of(client.get("/", params=blank).text) == [H2, H1, H3]
    # the form shows what was chosen
    html = client.get("/", params={"severity": "高", "region": "9901"}).text
    assert '<option value="高" selected>' in html
    assert 'name="region" value="9901"' in html
    assert 'href="/export.csv?region=9901&amp;severity=%E9%AB%98"' in html


def test_overdue_marks_and_filter(engine: Engine) -> None:
    late = create_app(engine=engine, clock=lambda: NOW + dt.timedelta(days=20))
    with TestClient(late) as c:
        html = c.get("/").text
        assert html.count('class="badge overdue"') == 3
        assert rows_of(c.get("/?overdue=1").text) == [H2, H1, H3]
        assert rows_of(c.get("/?overdue=0").text) == []


HOSTILE = ["' OR '1'='1", "1' OR 1=1 --", "%", "_", "'; DROP TABLE watchlist_entries; --",
           "<script>x</script>", "高' OR '1'='1", "\x00"]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["region", "risk_type", "severity", "state"])
def test_hostile_filter_values(client: TestClient, field: str, value: str) -> None:
    r = client.get("/", params={field: value})
    assert r.status_code == 200
    assert rows_of(r.text) == []
    assert "<script>x</script>" not in r.text
    api = client.get("/api/entries", params={field: value})
    assert api.status_code == 200 and api.json()["total"] == 0
    assert client.get("/api/entries").json()["total"] == 3


@pytest.mark.parametrize("params", [{"page": "abc"}, {"page": "-3"}, {"page_size": "0"},
                                    {"sort": "id; DROP TABLE x"}, {"overdue": "maybe"},
                                    {"lang": "fr"}])
def test_bad_parameters_fall_back(client: TestClient, params: dict[str, str]) -> None:
    r = client.get("/", params=params)
    assert r.status_code == 200
    assert len(rows_of(r.text)) >= 1


def test_pagination(client: TestClient) -> None:
    html = client.get("/", params={"page_size": "2"}).text
    assert rows_of(html) == [H2, H1]
    assert "第 1 / 2 页，共 3 条" in html
    assert 'href="/?page_size=2&amp;page=2" rel="next"' in html
    html = client.get("/", params={"page_size": "2", "page": "2"}).text
    assert rows_of(html) == [H3]
    assert 'href="/?page_size=2" rel="prev"' in html


def test_detail_page_shows_the_evidence(client: TestClient, engine: Engine) -> None:
    r = client.get(f"/entries/{entry_id(engine, H1)}")
    assert r.status_code == 200
    html = r.text
    for text in (H1, VILLAGE_A, "脱贫户", "新预警", "因病", "2026-03", "2026-04", "2026.11-1",
                 "预警原因", "测算依据", "监测线", "8,300.00", "6,900.00", "38,402.00",
                 "10,000.00", "41,230.40", "来源数据行", "income/2026-04.csv",
                 "medical/2026-04.csv", "203", "处理记录", "新建预警", "合并新预警", "系统",
                 "低于监测线", "below_line", "收到的预警"):
        assert text in html, text
    # the evidence is the latest month's, the alerts list has both months
    assert "medical/2026-03.csv" not in html
    assert f"<td>alert:{H1}:2026-03:2026.11-1</td>" in html
    assert f"<td>alert:{H1}:2026-04:2026.11-1</td>" in html


def test_detail_page_escapes_and_translates(client: TestClient, engine: Engine) -> None:
    html = client.get(f"/entries/{entry_id(engine, H3)}").text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "李干部" in html and "状态变更" in html
    en = client.get(f"/entries/{entry_id(engine, H3)}?lang=en").text
    for text in ("Evidence", "Monitoring line", "Source rows", "History", "Verifying",
                 "Lack of labour", "Back to the list"):
        assert text in en, text


def test_unknown_entry_is_404(client: TestClient) -> None:
    r = client.get("/entries/987654")
    assert r.status_code == 404
    assert "未找到该预警" in r.text
    assert client.get("/entries/abc").status_code == 422


def test_api_entries(client: TestClient) -> None:
    data = client.get("/api/entries").json()
    assert data["total"] == 3 and data["page"] == 1 and data["page_size"] == 50
    assert [i["household_id"] for i in data["items"]] == [H2, H1, H3]
    h1 = data["items"][1]
    assert h1["severity"] == "高" and h1["alert_count"] == 2 and h1["risk_types"] == ["因病"]
    assert h1["first_month"] == "2026-03" and h1["last_month"] == "2026-04"
    assert h1["created_at"].endswith("+00:00")
    assert h1["url"].startswith("/entries/")
    assert h1["overdue"] is False
    only = client.get("/api/entries", params={"severity": "低"}).json()
    assert [i["household_id"] for i in only["items"]] == [H3]


def test_export_download(client: TestClient) -> None:
    r = client.get("/export.csv")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="watchlist-')
    assert r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][:7] == ["户编号", "行政区划代码", "风险类型", "预警规则", "预警月份", "严重程度",
                           "状态"]
    assert len(rows) == 4
    filtered = client.get("/export.csv", params={"region": VILLAGE_B}).content.decode("utf-8-sig")
    assert len(list(csv.reader(io.StringIO(filtered)))) == 2


def test_healthz_and_headers(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    page = client.get("/")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert client.get("/docs").status_code == 404


def test_empty_watch_list(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    with TestClient(create_app(engine=engine)) as c:
        html = c.get("/").text
        assert "没有符合条件的预警。" in html
        assert "第 1 / 1 页，共 0 条" in html
    engine.dispose()
