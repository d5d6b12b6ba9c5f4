"""The watch-list pages in a real browser: Debian's headless chromium against uvicorn.

The server runs in a background thread on 127.0.0.1 on a free port; chromium runs in its own
process group with a throwaway profile, and both are stopped by the test that started them.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy.orm import Session

from consumers.watchlist.service import record_alerts
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

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SEEDED = {
    household(VILLAGE_A, 1): "高",
    household(VILLAGE_A, 2): "中",
    household(VILLAGE_B, 7): "低",
}


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
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    engine = sqlite_engine(tmp_path_factory.mktemp("browser"))
    with Session(engine) as s:
        record_alerts(
            session=s,
            alerts=[
                make_alert(hid, f"2026-0{i + 3}", severity=sev,
                           risk_type=("因病", "因务工就业不稳", "缺劳动力")[i],
                           sources=[Origin("rural", f"income/2026-0{i + 3}.csv", 40 + i)])
                for i, (hid, sev) in enumerate(SEEDED.items())
            ],
            now=NOW,
        )
    app = create_app(engine=engine)
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
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        engine.dispose()
        assert not thread.is_alive()


def run_chromium(chromium: Path, profile: Path, *args: str, timeout: float = 120) -> str:
    cmd = [
        str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        # Chromium's helpers share the group we created for it; leave none behind.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode("utf-8", errors="replace")


def png_info(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the pixel data) of a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    return width, height, len(set(pixels))


def test_list_page_in_chromium(chromium: Path, base_url: str, tmp_path: Path) -> None:
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", base_url + "/")
    for hid in SEEDED:
        assert hid in dom
    for label in ("防返贫监测预警清单", "户编号", "风险类型", "严重程度", "状态", "预警月份",
                  "导出 CSV", "新预警"):
        assert label in dom
    assert 'class="sev-高"' in dom
    en = run_chromium(chromium, tmp_path / "profile", "--dump-dom", base_url + "/?lang=en")
    assert "Household" in en and "Severity" in en
    for hid in SEEDED:
        assert hid in en


def test_detail_page_in_chromium(chromium: Path, base_url: str, tmp_path: Path) -> None:
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", base_url + "/entries/1")
    for text in (household(VILLAGE_A, 1), "测算依据", "8,300.00", "income/2026-03.csv",
                 "处理记录"):
        assert text in dom


@pytest.mark.parametrize("page", ["/", "/entries/1"])
def test_phone_screenshot(chromium: Path, base_url: str, tmp_path: Path, page: str) -> None:
    shot = tmp_path / "phone.png"
    run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}",
                 "--window-size=390,844", "--hide-scrollbars", base_url + page)
    assert shot.exists()
    assert shot.stat().st_size > 5_000
    width, height, distinct = png_info(shot)
    assert (width, height) == (390, 844)
    assert distinct > 20  # text and colours, not a blank page
    keep = os.environ.get("FANPIN_SCREENSHOT_DIR")
    if keep:  # for looking at it
        name = "phone-list.png" if page == "/" else "phone-detail.png"
        Path(keep, name).write_bytes(shot.read_bytes())
