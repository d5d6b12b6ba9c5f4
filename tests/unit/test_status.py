"""`fanpin status` rendering: what an operator reads at a terminal."""

from __future__ import annotations

from fanpin.status import FeedStatus, GroupStatus, Status, render


def feed(name: str, age: float, *, error: str | None = None, rejected: int = 0) -> FeedStatus:
    return FeedStatus(feed=name, dept="rural", last_file=f"{name}/2026-10.csv",
                      published_at="2026-11-02T08:00:00+00:00", age_days=age,
                      rows_accepted=300, rows_rejected=rejected, files=24, file_error=error)


def test_a_healthy_pipeline_reads_healthy() -> None:
    st = Status("127.0.0.1:19092", True,
                groups=[GroupStatus("fanpin-worker", 2, {"fanpin.person-events": 0,
                                                          "fanpin.household-events": 3}),
                        GroupStatus("fanpin-sink", 1, {"fanpin.alerts": 0})],
                feeds=[feed("income", 3.0, rejected=2), feed("medical", 3.0),
                       feed("employment", 3.0)],
                entries_by_state={"新预警": 5, "已接收": 1})
    text = render(st)
    assert st.healthy and text.endswith("healthy")
    assert "fanpin-worker" in text and "2 up" in text and "household-events 3" in text
    assert "income 收入监测" in text and "LATE" not in text and "DOWN" not in text
    assert "新预警 5" in text


def test_late_refused_and_missing_feeds_and_dead_processes_are_flagged() -> None:
    st = Status("127.0.0.1:19092", True,
                groups=[GroupStatus("fanpin-worker", 0, {"fanpin.person-events": 120}),
                        GroupStatus("fanpin-sink", 1, {"fanpin.alerts": 0})],
                dead_letters=4,
                feeds=[feed("income", 40.0), feed("medical", 2.0, error="缺少列：结算日期")])
    text = render(st)
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("  ")}
    assert "LATE" in lines["income"]
    assert "FILE REFUSED" in lines["medical"]
    assert "(no file yet)" in lines["employment"]
    assert "DOWN" in lines["fanpin-worker"] and "120" in lines["fanpin-worker"]
    assert "dead letters (死信): 4" in text
    assert not st.healthy and "NOT HEALTHY" in text


def test_broker_down_is_unhealthy_with_the_reason() -> None:
    st = Status("127.0.0.1:19092", False, broker_error="connection refused")
    assert not st.healthy
    assert "DOWN (connection refused)" in render(st)
    assert st.as_dict()["healthy"] is False
