"""Who sees and does what: every role against every page and API route, on SQLite through
TestClient. An account sees only its region (village 12 digits, township 9, county 6;
administrators everything), publishers no entry at all; health details are for officers."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from decimal import Decimal

import msgspec
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from consumers.watchlist.charts import oop_chart
from consumers.watchlist.models import (
    ROLE_ADMIN,
    ROLE_COUNTY,
    ROLE_PUBLISHER,
    ROLE_TOWNSHIP,
    ROLE_VILLAGE,
    Entry,
    RegionName,
)
from consumers.watchlist.service import record_alerts
from consumers.watchlist.views import ACTIONS, create_app
from schemas import Origin
from schemas.events import MonthFigures
from tests.unit.test_watchlist_helpers import NOW, make_alert, sqlite_engine
from tests.unit.watchlist_web import (
    ROLE_REGION,
    ROLES,
    action_fields,
    add_users,
    close_all,
    csrf_of,
    entry_state,
    logged_in,
    prepare,
)

APP_NOW = NOW + dt.timedelta(days=1)
# VILLAGE_A, another village of its township, a village of another township of its county,
# and a village of another county.
OWN = "990122003006"
SIBLING = "990122003007"
COUSIN = "990122004001"
FAR = "990123001006"
VILLAGES = (OWN, SIBLING, COUSIN, FAR)
SEES: dict[str, tuple[str, ...]] = {
    ROLE_VILLAGE: (OWN,),
    ROLE_TOWNSHIP: (OWN, SIBLING),
    ROLE_COUNTY: (OWN, SIBLING, COUSIN),
    ROLE_ADMIN: VILLAGES,
    ROLE_PUBLISHER: (),
}
WATCHERS = (ROLE_VILLAGE, ROLE_TOWNSHIP, ROLE_COUNTY, ROLE_ADMIN)
OFFICERS = (ROLE_VILLAGE, ROLE_TOWNSHIP, ROLE_COUNTY)
REGIONS = [
    ("990000000000", "示范省", "省"), ("990100000000", "示范市", "市"),
    ("990122000000", "甲县", "县"), ("990123000000", "乙县", "县"),
    ("990122003000", "甲镇", "乡镇"), ("990122004000", "丙镇", "乡镇"),
    ("990123001000", "乙镇", "乡镇"),
    (OWN, "本村", "村"), (SIBLING, "邻村", "村"), (COUSIN, "丙村", "村"), (FAR, "远村", "村"),
]
# Words only the health details carry, on the detail page.
RIGID_LABEL = "窗口内刚性支出"
MEDICAL_DETAIL = "住院三重保障后自付 12,000.00 元"
MEDICAL_FILE = "medical/2026-04.csv"
# The out-of-pocket chart's title (whatever it says today).
OOP_CAPTION = re.findall(r"<title>([^<]+)</title>", oop_chart([], "zh"))[0]
OOP_CAPTION_EN = re.findall(r"<title>([^<]+)</title>", oop_chart([], "en"))[0]
ID_LIKE = re.compile(r"\d{17}[\dX]")


def hid(village: str) -> str:
    return f"{village}0001"


def health_alert(village: str):  # type: ignore[no-untyped-def]
    alert = make_alert(
        hid(village), "2026-04", risk_type="因病", severity="高",
        rules=(("medical-spike", "因病", MEDICAL_DETAIL),
               ("below_line", "因务工就业不稳", "预计人均纯收入低于监测线")),
        sources=[Origin("medical", MEDICAL_FILE, 4711), Origin("rural", "income/2026-04.csv", 8)],
    )
    history = [MonthFigures("2026-03", Decimal("2100"), Decimal("0"), 0, 0),
               MonthFigures("2026-04", Decimal("900"), Decimal("12000.00"), 1, 0)]
    return msgspec.structs.replace(
        alert, evidence=msgspec.structs.replace(alert.evidence, history=history))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path_factory.mktemp("access"))
    with Session(engine) as s:
        record_alerts(session=s, alerts=[health_alert(v) for v in VILLAGES], now=NOW)
        s.add_all(RegionName(code=c, name=n, level=lv) for c, n, lv in REGIONS)
        s.commit()
    add_users(engine)  # username = role; village/township/county around OWN
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def app(engine: Engine) -> FastAPI:
    return create_app(engine=engine, clock=lambda: APP_NOW)


@pytest.fixture(scope="module")
def clients(app: FastAPI) -> Iterator[dict[str, TestClient]]:
    by_role = {role: logged_in(app, role) for role in ROLES}
    yield by_role
    close_all(by_role.values())


@pytest.fixture(scope="module")
def ids(engine: Engine) -> dict[str, int]:
    """The seeded entry of each village."""
    with Session(engine) as s:
        return {v: s.scalars(select(Entry.id).where(Entry.household_id == hid(v))).one()
                for v in VILLAGES}


def rows_of(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1] if "<tbody>" in html else ""
    return re.findall(r'href="/entries/\d+[^"]*">(\d{16})</a>', body)


def seeded(households: list[str]) -> set[str]:
    """The seeded households among ``households`` (other tests add their own)."""
    return {h for h in households if h in {hid(v) for v in VILLAGES}}


def csv_households(content: bytes) -> list[str]:
    return [r[0] for r in list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))[1:]]


def xlsx_households(content: bytes) -> list[str]:
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(content), read_only=True)["监测预警清单"]
    return [str(row[0]) for row in list(sheet.iter_rows(values_only=True))[1:]]


def outside(role: str) -> tuple[str, ...]:
    return tuple(v for v in VILLAGES if v not in SEES[role])


# -- lists, exports and the API list --------------------------------------------------------


@pytest.mark.parametrize("role", WATCHERS)
def test_lists_show_only_the_region(clients: dict[str, TestClient], role: str) -> None:
    c = clients[role]
    visible = {hid(v) for v in SEES[role]}
    scope = ROLE_REGION[role]
    page = c.get("/", params={"page_size": "500"})
    assert page.status_code == 200
    listed = rows_of(page.text)
    assert seeded(listed) == visible
    assert all(h.startswith(scope) for h in listed)  # and the other tests' entries too
    api = c.get("/api/entries", params={"page_size": "500"}).json()
    assert seeded([i["household_id"] for i in api["items"]]) == visible
    assert all(i["region_code"].startswith(scope) for i in api["items"])
    assert api["total"] == len(listed)
    for path, read in (("/export.csv", csv_households), ("/export.xlsx", xlsx_households)):
        for public in ({}, {"public": "1"}):
            r = c.get(path, params=public)
            assert r.status_code == 200
            exported = read(r.content)
            assert seeded(exported) == visible, (path, public)
            assert all(h.startswith(scope) for h in exported)


@pytest.mark.parametrize("role", WATCHERS)
def test_a_region_filter_cannot_widen_the_scope(clients: dict[str, TestClient],
                                                role: str) -> None:
    c = clients[role]
    for village in outside(role):
        for params in ({"region": village}, {"region": village[:9]}, {"region": village[:6]}):
            if any(v.startswith(params["region"]) for v in SEES[role]):
                continue  # a prefix that also covers the user's own villages
            assert rows_of(c.get("/", params=params).text) == [], params
            assert c.get("/api/entries", params=params).json()["total"] == 0, params
            assert csv_households(c.get("/export.csv", params=params).content) == []
            assert xlsx_households(c.get("/export.xlsx", params=params).content) == []
    # a wider region than the user's means the user's own
    for wider in ("9", "99", "990122"):
        got = seeded(rows_of(c.get("/", params={"region": wider, "page_size": "500"}).text))
        assert got == {hid(v) for v in SEES[role] if v.startswith(wider)}
    # a narrower one inside it narrows
    assert seeded(rows_of(c.get("/", params={"region": OWN}).text)) == {hid(OWN)}


@pytest.mark.parametrize("role", WATCHERS)
def test_the_counts_and_region_choices_are_scoped(clients: dict[str, TestClient],
                                                  role: str) -> None:
    c = clients[role]
    prefix = ROLE_REGION[role]
    # The region filter is a cascade: walking it down from the user's own region reaches
    # every region inside it, and nothing outside.
    seen: set[str] = set()
    todo: list[str | None] = [None]
    while todo:
        parent = todo.pop()
        for r in c.get("/api/regions", params={"parent": parent} if parent else {}).json():
            assert r["code"].startswith(prefix), r
            if r["code"] not in seen:
                seen.add(r["code"])
                todo.append(r["prefix"])
    assert seen == {code for code, _, _ in REGIONS if code.startswith(prefix)}
    # The page offers the same, level by level: a township chosen, its villages by name.
    names = {"本村": OWN, "邻村": SIBLING, "丙村": COUSIN, "远村": FAR}
    html = c.get("/", params={"region": OWN[:9]}).text
    for name, village in names.items():
        offered = village in SEES[role] and village.startswith(OWN[:9])
        assert (f"{name}（村）" in html) == offered, name
    # a region outside the user's own offers nothing of it
    assert "远村（村）" not in c.get("/", params={"region": FAR[:9]}).text or role == ROLE_ADMIN


@pytest.mark.parametrize("role", ROLES)
def test_api_me(clients: dict[str, TestClient], role: str) -> None:
    me = clients[role].get("/api/me").json()
    assert (me["username"], me["role"], me["region_code"]) == (role, role, ROLE_REGION[role])
    assert me["csrf_token"]


# -- one entry ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", WATCHERS)
def test_entry_pages_inside_and_outside(clients: dict[str, TestClient], ids: dict[str, int],
                                        role: str, engine: Engine) -> None:
    c = clients[role]
    unknown = c.get("/entries/987654")
    assert unknown.status_code == 404
    for village in VILLAGES:
        r = c.get(f"/entries/{ids[village]}")
        if village in SEES[role]:
            assert r.status_code == 200 and hid(village) in r.text
        else:
            before = entry_state(engine, ids[village])
            assert r.status_code == 404
            assert hid(village) not in r.text
            # the same answer as for an entry that does not exist: ids do not leak
            assert r.text.replace(f"/entries/{ids[village]}", "/entries/987654") == unknown.text
            api = c.get(f"/api/entries/{ids[village]}")
            assert api.status_code == 404
            assert api.json() == c.get("/api/entries/987654").json()
            assert entry_state(engine, ids[village]) == before


@pytest.mark.parametrize("role", [
    *OFFICERS,
    ROLE_ADMIN,
])
def test_api_entry_inside(clients: dict[str, TestClient], ids: dict[str, int],
                          role: str) -> None:
    r = clients[role].get(f"/api/entries/{ids[OWN]}")
    assert r.status_code == 200
    body = r.json()
    assert body["household_id"] == hid(OWN)
    assert body["history"][-1]["action"] == "viewed"
    assert body["history"][-1]["actor"] == role


@pytest.mark.parametrize("role", OFFICERS)
def test_officers_see_the_health_details(clients: dict[str, TestClient], ids: dict[str, int],
                                         role: str) -> None:
    html = clients[role].get(f"/entries/{ids[OWN]}").text
    for text in (RIGID_LABEL, "10,000.00", MEDICAL_DETAIL, MEDICAL_FILE, OOP_CAPTION, "因病"):
        assert text in html, text
    body = clients[role].get(f"/api/entries/{ids[OWN]}").json()
    ev = body["evidence"]
    assert Decimal(ev["rigid_spending_12m"]) == Decimal("10000.00")
    assert [r["detail"] for r in body["reasons"]][0] == MEDICAL_DETAIL
    assert any("medical" in str(s) for s in ev["sources"])
    assert [Decimal(m["out_of_pocket"]) for m in ev["history"]] == [Decimal(0),
                                                                    Decimal("12000.00")]


def test_the_administrator_sees_no_health_details_on_the_page(
        clients: dict[str, TestClient], ids: dict[str, int]) -> None:
    html = clients[ROLE_ADMIN].get(f"/entries/{ids[OWN]}").text
    for text in (RIGID_LABEL, "10,000.00", MEDICAL_DETAIL, "12,000", MEDICAL_FILE, OOP_CAPTION):
        assert text not in html, text
    assert "（健康信息，本角色不可见）" in html
    assert "预计人均纯收入低于监测线" in html  # the other reasons stay
    en = clients[ROLE_ADMIN].get(f"/entries/{ids[OWN]}?lang=en").text
    assert OOP_CAPTION_EN not in en and "Rigid spending" not in en


def test_the_administrator_sees_no_health_details_in_the_api(
        clients: dict[str, TestClient], ids: dict[str, int]) -> None:
    body = clients[ROLE_ADMIN].get(f"/api/entries/{ids[OWN]}").json()
    ev = body["evidence"]
    assert ev["rigid_spending_12m"] is None
    assert not any("medical" in str(s) for s in ev["sources"])
    assert all(m["out_of_pocket"] is None for m in ev["history"])
    assert MEDICAL_DETAIL not in str(body)
    assert "12000" not in str(body)


def tbody(html: str) -> str:
    """The list's rows (the filter form offers every risk type, which tells nothing)."""
    return html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]




def test_the_administrator_list_shows_no_illness(clients: dict[str, TestClient]) -> None:
    c = clients[ROLE_ADMIN]
    assert "因病" not in tbody(c.get("/").text)
    assert "Illness" not in tbody(c.get("/?lang=en").text)


def test_filtering_by_illness_tells_the_administrator_nothing(
        clients: dict[str, TestClient]) -> None:
    # Otherwise the filter itself would reveal which households are ill.
    assert clients[ROLE_ADMIN].get("/api/entries?risk_type=因病").json()["total"] == 0
    assert clients[ROLE_ADMIN].get("/api/entries?risk_type=因残").json()["total"] == 0
    assert clients[ROLE_VILLAGE].get("/api/entries?risk_type=因病").json()["total"] > 0


def test_the_administrator_api_list_shows_no_illness(clients: dict[str, TestClient]) -> None:
    text = clients[ROLE_ADMIN].get("/api/entries").text
    assert "因病" not in text and "medical-spike" not in text


def test_the_administrator_audit_trail_shows_no_illness(clients: dict[str, TestClient],
                                                        ids: dict[str, int]) -> None:
    assert "因病" not in clients[ROLE_ADMIN].get(f"/entries/{ids[OWN]}").text


def test_the_administrator_exports_show_no_illness(clients: dict[str, TestClient]) -> None:
    c = clients[ROLE_ADMIN]
    for path in ("/export.csv", "/export.csv?public=1"):
        text = c.get(path).content.decode("utf-8-sig")
        assert "因病" not in text and "medical-spike" not in text


# -- the workflow's actions -----------------------------------------------------------------


def expected_ok(role: str, action: str) -> bool:
    return not (action in ("assign", "escalate") and role in (ROLE_VILLAGE, ROLE_TOWNSHIP))


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("role", WATCHERS)
def test_page_actions_inside_and_outside(clients: dict[str, TestClient], engine: Engine,
                                         role: str, action: str) -> None:
    c = clients[role]
    csrf = csrf_of(c)
    fields = {**action_fields(action, APP_NOW), "csrf_token": csrf}
    for village in outside(role):
        eid = prepare(engine, action, village, APP_NOW)
        before = entry_state(engine, eid)
        r = c.post(f"/entries/{eid}/{action}", data=fields, follow_redirects=False)
        assert r.status_code == 404, village
        assert hid(village)[:12] not in r.text
        assert entry_state(engine, eid) == before
    eid = prepare(engine, action, OWN, APP_NOW)
    before = entry_state(engine, eid)
    r = c.post(f"/entries/{eid}/{action}", data=fields, follow_redirects=False)
    if expected_ok(role, action):
        assert r.status_code == 303, r.text[:500]
        assert r.headers["location"] == f"/entries/{eid}?done={action}"
        assert entry_state(engine, eid) != before
    else:
        assert r.status_code == 403
        assert "只有县级负责人" in r.text
        assert entry_state(engine, eid) == before


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("role", WATCHERS)
def test_api_actions_inside_and_outside(clients: dict[str, TestClient], engine: Engine,
                                        role: str, action: str) -> None:
    c = clients[role]
    headers = {"X-CSRF-Token": csrf_of(c)}
    fields = action_fields(action, APP_NOW)
    for village in outside(role):
        eid = prepare(engine, action, village, APP_NOW)
        before = entry_state(engine, eid)
        r = c.post(f"/api/entries/{eid}/{action}", json=fields, headers=headers)
        assert r.status_code == 404
        assert r.json() == c.post(f"/api/entries/987654/{action}", json=fields,
                                  headers=headers).json()
        assert entry_state(engine, eid) == before
    eid = prepare(engine, action, OWN, APP_NOW)
    before = entry_state(engine, eid)
    r = c.post(f"/api/entries/{eid}/{action}", json=fields, headers=headers)
    if expected_ok(role, action):
        assert r.status_code == 200, r.text
        assert r.json()["changed"] is True and r.json()["entry"]["id"] == eid
        assert entry_state(engine, eid) != before
    else:
        assert r.status_code == 403
        assert r.json()["error"].startswith("Only a county lead")
        assert entry_state(engine, eid) == before


def test_unknown_actions(clients: dict[str, TestClient], ids: dict[str, int]) -> None:
    c = clients[ROLE_COUNTY]
    csrf = csrf_of(c)
    page = c.post(f"/entries/{ids[OWN]}/delete", data={"csrf_token": csrf})
    assert page.status_code == 404
    api = c.post(f"/api/entries/{ids[OWN]}/delete", json={}, headers={"X-CSRF-Token": csrf})
    assert api.status_code == 404


# -- publishers and strangers ---------------------------------------------------------------


def watch_routes(entry_id: int) -> list[tuple[str, str]]:
    """Every watch-list page and API route: (method, path)."""
    routes = [("GET", "/"), ("GET", f"/entries/{entry_id}"), ("GET", "/export.csv"),
              ("GET", "/export.xlsx"), ("GET", "/export.csv?public=1"),
              ("GET", "/api/entries"), ("GET", f"/api/entries/{entry_id}"),
              ("GET", "/api/regions")]
    for action in ACTIONS:
        routes += [("POST", f"/entries/{entry_id}/{action}"),
                   ("POST", f"/api/entries/{entry_id}/{action}")]
    return routes


def test_a_publisher_has_no_watch_list(clients: dict[str, TestClient], ids: dict[str, int],
                                       engine: Engine) -> None:
    c = clients[ROLE_PUBLISHER]
    csrf = csrf_of(c)
    before = entry_state(engine, ids[OWN])
    for method, path in watch_routes(ids[OWN]):
        if method == "GET":
            r = c.get(path, follow_redirects=False)
        elif path.startswith("/api/"):
            r = c.post(path, json=action_fields(path.rsplit("/", 1)[1], APP_NOW),
                       headers={"X-CSRF-Token": csrf})
        else:
            r = c.post(path, data={**action_fields(path.rsplit("/", 1)[1], APP_NOW),
                                   "csrf_token": csrf}, follow_redirects=False)
        assert r.status_code == 403, (method, path)
        assert hid(OWN) not in r.text
        if path.startswith("/api/"):
            assert r.json()["error_zh"] == "部门数据发布员无权查看监测清单。"
        else:
            assert "部门数据发布员账号无权查看监测清单" in r.text
    assert entry_state(engine, ids[OWN]) == before
    for path in ("/files", "/account", "/api/me"):
        assert c.get(path).status_code == 200, path
    assert "导出" not in c.get("/files").text  # no list, no exports in the navigation


@pytest.mark.parametrize("role", [ROLE_COUNTY, ROLE_ADMIN, ROLE_PUBLISHER])
def test_files_page(clients: dict[str, TestClient], role: str) -> None:
    r = clients[role].get("/files")
    assert r.status_code == 200
    assert 'href="/files"' in r.text


@pytest.mark.parametrize("role", [ROLE_VILLAGE, ROLE_TOWNSHIP])
def test_files_page_is_not_for_village_and_township_officers(
        clients: dict[str, TestClient], role: str) -> None:
    assert clients[role].get("/files").status_code == 403


def test_strangers_are_sent_to_log_in(app: FastAPI, ids: dict[str, int],
                                      engine: Engine) -> None:
    before = entry_state(engine, ids[OWN])
    with TestClient(app) as c:
        for method, path in [*watch_routes(ids[OWN]), ("GET", "/files"), ("GET", "/account"),
                             ("POST", "/account"), ("POST", "/logout"), ("GET", "/api/me"),
                             ("POST", "/api/logout")]:
            if method == "GET":
                r = c.get(path, follow_redirects=False)
            elif path.startswith("/api/"):
                r = c.post(path, json={})
            else:
                r = c.post(path, data={"csrf_token": "x"}, follow_redirects=False)
            if path.startswith("/api/"):
                assert r.status_code == 401, path
                assert r.json()["error"] == "Login required."
            else:
                assert r.status_code == 303, path
                assert r.headers["location"].startswith("/login?next=")
            assert hid(OWN) not in r.text
    assert entry_state(engine, ids[OWN]) == before


# -- no ID numbers anywhere -----------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_no_page_shows_an_id_number(clients: dict[str, TestClient], ids: dict[str, int],
                                    role: str) -> None:
    c = clients[role]
    paths = ["/", "/?lang=en", "/files", "/account", "/api/me", "/api/entries",
             "/api/regions", "/export.csv", "/export.csv?public=1"]
    for village in VILLAGES:
        paths += [f"/entries/{ids[village]}", f"/entries/{ids[village]}?lang=en"]
        if role != ROLE_ADMIN:  # see test_api_entry_inside: the admin's read fails for now
            paths.append(f"/api/entries/{ids[village]}")
    seen = 0
    for path in paths:
        r = c.get(path)
        text = r.content.decode("utf-8-sig")
        assert not ID_LIKE.search(text), (path, ID_LIKE.search(text))
        seen += hid(OWN) in text
    assert seen >= (1 if role != ROLE_PUBLISHER else 0)
