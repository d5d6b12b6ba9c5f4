"""The roster join, as pure functions: which household a person belongs to."""

from __future__ import annotations

import msgspec

from schemas.events import EmploymentEvent, MedicalSettlement, RosterMember

PersonEvent = MedicalSettlement | EmploymentEvent

# A person whose roster row has not arrived yet can park this many events; beyond that the
# person is probably not on any roster and the events go to the dead-letter topic.
PENDING_LIMIT = 200


class RosterLink(msgspec.Struct, array_like=True):
    household_id: str
    region_code: str


_LINK_ENC = msgspec.msgpack.Encoder()
_LINK_DEC = msgspec.msgpack.Decoder(RosterLink)
_PENDING_DEC = msgspec.msgpack.Decoder(list[bytes])


def link_of(member: RosterMember) -> bytes:
    return _LINK_ENC.encode(RosterLink(member.household_id, member.region_code))


def read_link(raw: bytes | None) -> RosterLink | None:
    return _LINK_DEC.decode(raw) if raw else None


def attach(event: PersonEvent, link: RosterLink) -> PersonEvent:
    return msgspec.structs.replace(event, household_id=link.household_id)


def park(pending: bytes | None, raw: bytes) -> tuple[bytes, bool]:
    """Add one raw event to a person's parked list. Returns the new list and whether it
    is still within the limit."""
    items = _PENDING_DEC.decode(pending) if pending else []
    if raw not in items:
        items.append(raw)
    return _LINK_ENC.encode(items), len(items) <= PENDING_LIMIT


def unpark(pending: bytes | None) -> list[bytes]:
    return _PENDING_DEC.decode(pending) if pending else []
