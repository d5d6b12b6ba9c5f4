"""Accounts, passwords, sessions, CSRF tokens and login rate limiting.

Passwords are hashed with scrypt (standard library), each with its own salt. A session is a
random cookie value; the database keeps only its SHA-256, so a copy of the table logs
nobody in. Logging in always issues a new session id (no session fixation) and each session
has its own CSRF token, which every POST must echo. Failed logins are counted per username
and per client address in the database, so every web process sees the same count.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from typing import Final

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from consumers.watchlist.models import (
    REGION_DIGITS,
    ROLES,
    LoginAttempt,
    User,
    WebSession,
    utcnow,
)

SESSION_HOURS: Final = 12
# At most this many failed logins per window, per username and per client address.
LOGIN_MAX_FAILURES: Final = 5
LOGIN_MAX_FAILURES_PER_ADDRESS: Final = 20
LOGIN_WINDOW: Final = dt.timedelta(minutes=15)
PASSWORD_MIN: Final = 8
CHANNELS: Final = ("email", "wecom", "dingtalk")

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R,
                            p=_SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# A hash to check against when the username does not exist, so a login for an unknown
# name takes as long as one for a known name.
_DUMMY_HASH: Final = hash_password(secrets.token_hex(8))


class AccountError(ValueError):
    pass


def validate_account(*, username: str, role: str, region_code: str) -> None:
    if not username or len(username) > 64 or not username.replace("_", "").replace(
            "-", "").replace(".", "").isalnum():
        raise AccountError("username: 1–64 letters, digits, '_', '-' or '.'")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    digits = REGION_DIGITS.get(role)
    if digits is None:
        if region_code:
            raise AccountError(f"a {role} account has no region")
    elif len(region_code) != digits or not region_code.isdigit():
        raise AccountError(f"a {role} account needs a {digits}-digit region code")


def check_password_strength(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise AccountError(f"password: at least {PASSWORD_MIN} characters")


def create_user(*, session: Session, username: str, password: str, role: str,
                region_code: str = "", display_name: str = "", email: str | None = None,
                channels: str = "") -> User:
    validate_account(username=username, role=role, region_code=region_code)
    check_password_strength(password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AccountError(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=role,
                region_code=region_code, display_name=display_name, email=email,
                channels=normalise_channels(channels), active=True, created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def normalise_channels(channels: str) -> str:
    chosen = [c.strip() for c in channels.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CHANNELS]
    if unknown:
        raise AccountError(f"unknown channel(s) {', '.join(unknown)}; known: {', '.join(CHANNELS)}")
    return ",".join(dict.fromkeys(chosen))


# -- login and sessions -------------------------------------------------------------------


class RateLimited(Exception):
    pass


def _token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _failures(session: Session, key: str, now: dt.datetime) -> int:
    return session.scalar(select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.key == key, LoginAttempt.at > now - LOGIN_WINDOW)) or 0


def login(*, session: Session, username: str, password: str, address: str,
          now: dt.datetime | None = None) -> tuple[User, str] | None:
    """Check a login. Returns the user and a new session token, or None for a wrong
    username or password. Raises ``RateLimited`` when too many recent failures came for
    this username or from this address (the check happens before the password is tried,
    so guessing on cannot succeed). Commits."""
    now = now or utcnow()
    user_key, addr_key = f"user:{username[:64]}", f"ip:{address[:64]}"
    if (_failures(session, user_key, now) >= LOGIN_MAX_FAILURES
            or _failures(session, addr_key, now) >= LOGIN_MAX_FAILURES_PER_ADDRESS):
        raise RateLimited()
    user = session.scalar(select(User).where(User.username == username))
    ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
    if not ok or user is None or not user.active:
        session.add_all([LoginAttempt(key=user_key, at=now), LoginAttempt(key=addr_key, at=now)])
        session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - LOGIN_WINDOW))
        session.commit()
        return None
    token = secrets.token_urlsafe(32)
    session.add(WebSession(id=_token_id(token), user_id=user.id,
                           csrf_token=secrets.token_urlsafe(32), created_at=now,
                           expires_at=now + dt.timedelta(hours=SESSION_HOURS)))
    session.execute(delete(LoginAttempt).where(LoginAttempt.key == user_key))
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    session.commit()
    return user, token


def session_user(*, session: Session, token: str | None,
                 now: dt.datetime | None = None) -> tuple[User, WebSession] | None:
    """The active user behind a session cookie, or None."""
    if not token or len(token) > 128:
        return None
    now = now or utcnow()
    web = session.get(WebSession, _token_id(token))
    if web is None or web.expires_at <= now:
        return None
    user = session.get(User, web.user_id)
    if user is None or not user.active:
        return None
    return user, web


def logout(*, session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(WebSession).where(WebSession.id == _token_id(token)))
        session.commit()


def end_sessions(*, session: Session, user: User) -> int:
    """Log the user out everywhere (after a password change or deactivation)."""
    result = session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    return int(getattr(result, "rowcount", 0) or 0)


def csrf_ok(web: WebSession, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(web.csrf_token, sent or "")
