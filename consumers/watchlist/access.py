"""Who may see and do what on the watch list.

Every account is bound to a region by the leading digits of the 12-digit village code
(province 2, city 2, county 2, township 3, village 3): a village officer to 12, a township
officer to 9, a county lead to 6. Administrators see every region. Department publishers
see no entry at all. The same rules apply to the pages, the API and the exports; the list
queries take the scope as a region prefix, so a user can never widen it with a filter.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from consumers.watchlist.models import (
    REGION_DIGITS,
    ROLE_ADMIN,
    ROLE_COUNTY,
    ROLE_PUBLISHER,
    ROLE_TOWNSHIP,
    ROLE_VILLAGE,
    User,
)

BEIJING: Final = dt.timezone(dt.timedelta(hours=8), "CST")
OFFICER_ROLES: Final = (ROLE_VILLAGE, ROLE_TOWNSHIP, ROLE_COUNTY)
# Health details (medical amounts, hospital settlements, illness as a risk reason) are
# shown to the officers who verify and assist the household, not to administrators.
HEALTH_ROLES: Final = OFFICER_ROLES


class NoWatchlistAccess(PermissionError):
    """The account's role has no access to the watch list (department publishers)."""


def scope_prefix(user: User) -> str:
    """The region-code prefix the user may see ("" for everything). Raises
    ``NoWatchlistAccess`` for roles that see nothing, and for a misconfigured account."""
    if user.role == ROLE_ADMIN:
        return ""
    digits = REGION_DIGITS.get(user.role)
    if digits is None or len(user.region_code) != digits or not user.region_code.isdigit():
        raise NoWatchlistAccess(f"role {user.role!r} has no watch-list access")
    return user.region_code


def can_see(user: User, region_code: str) -> bool:
    try:
        return region_code.startswith(scope_prefix(user))
    except NoWatchlistAccess:
        return False


def can_act(user: User) -> bool:
    """Workflow actions: officers of every level, and administrators."""
    return user.role in OFFICER_ROLES or user.role == ROLE_ADMIN


def sees_health(user: User) -> bool:
    return user.role in HEALTH_ROLES


def can_assign(user: User) -> bool:
    return user.role in (ROLE_COUNTY, ROLE_ADMIN)


def narrow(user: User, requested: str | None) -> str | None:
    """The region prefix to query: the requested one when it lies inside the user's scope,
    the user's own scope when the request is wider or absent, and None when the request
    lies outside it (nothing matches)."""
    scope = scope_prefix(user)
    if not requested:
        return scope
    if requested.startswith(scope):
        return requested
    if scope.startswith(requested):
        return scope
    return None


def is_publisher(user: User) -> bool:
    return user.role == ROLE_PUBLISHER
