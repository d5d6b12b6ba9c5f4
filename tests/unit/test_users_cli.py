"""`fanpin users add|list|passwd|set` through click's CliRunner, on a SQLite watch list in
tmp_path (FANPIN_DATABASE_URL; the settings are cached per process, so the cache is
cleared around each test)."""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from consumers.watchlist import auth
from consumers.watchlist.models import User, WebSession, create_engine_for, init_db
from fanpin.cli import main
from fanpin.settings import get_settings
from tests.unit.test_watchlist_helpers import VILLAGE_A

PASSWORD = "a-long-passphrase"
NOW = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'var' / 'watchlist.db'}"
    monkeypatch.setenv("FANPIN_DATABASE_URL", url)
    monkeypatch.setenv("FANPIN_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    sigterm = signal.getsignal(signal.SIGTERM)  # `fanpin` installs its own handler
    yield url
    signal.signal(signal.SIGTERM, sigterm)
    get_settings.cache_clear()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_engine_for(db_url)
    init_db(engine)  # as the command does; here so that a refused command can be checked
    yield engine
    engine.dispose()


def fanpin(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["users", *args], input=input)


def add(username: str, role: str, region: str = "", password: str = PASSWORD,
        *extra: str) -> Result:
    args = [username, "--role", role, *(["--region", region] if region else []), *extra,
            "--password-stdin"]
    return fanpin("add", *args, input=password + "\n")


def account(engine: Engine, username: str) -> User | None:
    with Session(engine) as s:
        return s.scalars(select(User).where(User.username == username)).one_or_none()


def log_in(engine: Engine, username: str, password: str = PASSWORD) -> str:
    with Session(engine) as s:
        result = auth.login(session=s, username=username, password=password, address="cli",
                            now=NOW)
        assert result is not None
        return result[1]


def sessions_of(engine: Engine, username: str) -> int:
    with Session(engine) as s:
        user = s.scalars(select(User).where(User.username == username)).one()
        return s.scalar(select(func.count()).select_from(WebSession).where(
            WebSession.user_id == user.id)) or 0


def test_help_lists_the_commands(db_url: str) -> None:
    result = fanpin("--help")
    assert result.exit_code == 0
    for command in ("add", "list", "passwd", "set"):
        assert command in result.output
    assert "county_lead" in result.output


def test_add_creates_an_account_that_can_log_in(engine: Engine) -> None:
    result = add("zhang", "village", VILLAGE_A, PASSWORD, "--name", "张三",
                 "--email", "zhang@example.gov.cn", "--channels", "email")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"created village zhang for region {VILLAGE_A}"
    assert PASSWORD not in result.output
    user = account(engine, "zhang")
    assert user is not None
    assert (user.role, user.region_code, user.display_name, user.email, user.channels,
            user.active) == ("village", VILLAGE_A, "张三", "zhang@example.gov.cn", "email", True)
    assert user.password_hash.startswith("scrypt$") and PASSWORD not in user.password_hash
    assert auth.verify_password(PASSWORD, user.password_hash)
    assert log_in(engine, "zhang")


def test_add_reads_the_password_from_a_hidden_prompt(engine: Engine) -> None:
    result = fanpin("add", "admin1", "--role", "admin", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output  # hidden
    user = account(engine, "admin1")
    assert user is not None and auth.verify_password(PASSWORD, user.password_hash)
    # a mistyped confirmation is asked again, not taken
    result = fanpin("add", "admin2", "--role", "admin",
                    input=f"{PASSWORD}\nsomething-else\n{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    user = account(engine, "admin2")
    assert user is not None and auth.verify_password(PASSWORD, user.password_hash)


@pytest.mark.parametrize(("role", "region", "message"), [
    ("village", "990122", "a village account needs a 12-digit region code"),
    ("village", "9901220030061", "a village account needs a 12-digit region code"),
    ("village", "99012200300a", "a village account needs a 12-digit region code"),
    ("village", "", "a village account needs a 12-digit region code"),
    ("township", VILLAGE_A, "a township account needs a 9-digit region code"),
    ("county_lead", "990122003", "a county_lead account needs a 6-digit region code"),
    ("admin", "990122", "a admin account has no region"),
    ("publisher", VILLAGE_A, "a publisher account has no region"),
])
def test_add_refuses_a_region_of_the_wrong_length(engine: Engine, role: str, region: str,
                                                  message: str) -> None:
    result = add("li", role, region)
    assert result.exit_code == 1
    assert f"Error: {message}" in result.output
    assert account(engine, "li") is None


@pytest.mark.parametrize(("args", "message"), [
    (["--role", "root"], "Invalid value for '--role'"),
    (["--role", "admin", "--channels", "email,fax"], "unknown channel(s) fax"),
])
def test_add_refuses_unknown_roles_and_channels(engine: Engine, args: list[str],
                                                message: str) -> None:
    result = fanpin("add", "li", *args, "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code != 0
    assert message in result.output
    assert account(engine, "li") is None


def test_add_refuses_weak_passwords_bad_names_and_duplicates(engine: Engine) -> None:
    result = add("wang", "admin", "", "short")
    assert result.exit_code == 1 and "at least 8" in result.output
    assert account(engine, "wang") is None
    result = add("wang li", "admin")
    assert result.exit_code == 1 and "username" in result.output
    assert add("wang", "admin").exit_code == 0
    again = add("wang", "township", VILLAGE_A[:9])
    assert again.exit_code == 1 and "already exists" in again.output
    user = account(engine, "wang")
    assert user is not None and user.role == "admin"


def test_list_never_prints_secrets(engine: Engine) -> None:
    assert add("zhang", "village", VILLAGE_A).exit_code == 0
    assert add("boss", "county_lead", VILLAGE_A[:6]).exit_code == 0
    assert add("pub", "publisher").exit_code == 0
    secret, webhook = "SECabcdef0123456789", "https://oapi.dingtalk.com/robot/send?access_token=t0k3n"
    assert fanpin("set", "boss", "--dingtalk-secret", secret, "--dingtalk-webhook", webhook,
                  "--channels", "dingtalk").exit_code == 0
    result = fanpin("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["username", "role", "region", "active", "channels"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["zhang"] == ["zhang", "village", VILLAGE_A, "yes", "-"]
    assert rows["boss"] == ["boss", "county_lead", VILLAGE_A[:6], "yes", "dingtalk"]
    assert rows["pub"] == ["pub", "publisher", "-", "yes", "-"]
    for user in ("zhang", "boss", "pub"):
        found = account(engine, user)
        assert found is not None and found.password_hash not in result.output
    for leak in ("scrypt", "$", PASSWORD, secret, "t0k3n", "oapi.dingtalk.com"):
        assert leak not in result.output, leak


def test_list_on_an_empty_watch_list(db_url: str) -> None:
    result = fanpin("list")
    assert result.exit_code == 0
    assert len(result.output.splitlines()) == 1


def test_passwd_changes_the_password_and_ends_sessions(engine: Engine) -> None:
    assert add("zhang", "village", VILLAGE_A).exit_code == 0
    token = log_in(engine, "zhang")
    new = "an-even-longer-passphrase"
    result = fanpin("passwd", "zhang", "--password-stdin", input=new + "\n")
    assert result.exit_code == 0, result.output
    assert "sessions were ended" in result.output and new not in result.output
    with Session(engine) as s:
        assert auth.session_user(session=s, token=token, now=NOW) is None
    user = account(engine, "zhang")
    assert user is not None
    assert auth.verify_password(new, user.password_hash)
    assert not auth.verify_password(PASSWORD, user.password_hash)
    # a weak password and an unknown account are refused
    weak = fanpin("passwd", "zhang", "--password-stdin", input="short\n")
    assert weak.exit_code == 1 and "at least 8" in weak.output
    refreshed = account(engine, "zhang")
    assert refreshed is not None and refreshed.password_hash == user.password_hash
    unknown = fanpin("passwd", "nobody", "--password-stdin", input=new + "\n")
    assert unknown.exit_code == 1 and "no user 'nobody'" in unknown.output


def test_set_changes_the_scope_and_ends_sessions(engine: Engine) -> None:
    assert add("zhang", "village", VILLAGE_A).exit_code == 0
    log_in(engine, "zhang")
    # a new display name keeps the sessions
    assert fanpin("set", "zhang", "--name", "张三").exit_code == 0
    assert sessions_of(engine, "zhang") == 1
    result = fanpin("set", "zhang", "--role", "township", "--region", VILLAGE_A[:9])
    assert result.exit_code == 0, result.output
    user = account(engine, "zhang")
    assert user is not None
    assert (user.role, user.region_code, user.display_name) == ("township", VILLAGE_A[:9],
                                                                "张三")
    assert sessions_of(engine, "zhang") == 0  # a new scope: log in again


@pytest.mark.parametrize(("args", "message"), [
    (["--region", "990122"], "a village account needs a 12-digit region code"),
    (["--role", "township"], "a township account needs a 9-digit region code"),
    (["--role", "admin"], "a admin account has no region"),
    (["--channels", "pager"], "unknown channel(s) pager"),
])
def test_set_refuses_bad_values_and_changes_nothing(engine: Engine, args: list[str],
                                                    message: str) -> None:
    assert add("zhang", "village", VILLAGE_A).exit_code == 0
    before = account(engine, "zhang")
    result = fanpin("set", "zhang", *args)
    assert result.exit_code == 1
    assert f"Error: {message}" in result.output
    after = account(engine, "zhang")
    assert before is not None and after is not None
    assert (after.role, after.region_code, after.channels) == (before.role, before.region_code,
                                                               before.channels)


def test_set_inactive_stops_logins(engine: Engine) -> None:
    assert add("zhang", "village", VILLAGE_A).exit_code == 0
    token = log_in(engine, "zhang")
    assert fanpin("set", "zhang", "--inactive").exit_code == 0
    with Session(engine) as s:
        assert auth.session_user(session=s, token=token, now=NOW) is None
        assert auth.login(session=s, username="zhang", password=PASSWORD, address="cli",
                          now=NOW) is None
    assert fanpin("list").output.splitlines()[1].split()[3] == "no"
    assert fanpin("set", "zhang", "--active").exit_code == 0
    assert log_in(engine, "zhang")
    assert fanpin("set", "nobody", "--active").exit_code == 1
