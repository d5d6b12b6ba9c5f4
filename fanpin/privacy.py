"""Pseudonyms and masking.

Resident ID numbers are replaced by a keyed HMAC-SHA256 pseudonym in the producer, before
anything is published. Without the key a pseudonym cannot be reversed or recomputed from a
guessed ID number, and the same key gives the same pseudonym in every department's feed,
so people can still be joined to their households.
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymiser:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the pseudonym key must be at least 16 bytes long")
        self._key = key

    def person(self, id_number: str) -> str:
        digest = hmac.new(self._key, id_number.strip().upper().encode(), hashlib.sha256)
        return "p" + digest.hexdigest()[:31]


def mask_id_number(id_number: str) -> str:
    """990122199209043751 -> 990122********3751: region visible, birth date hidden."""
    s = id_number.strip()
    if len(s) <= 10:
        return "*" * len(s)
    return s[:6] + "*" * (len(s) - 10) + s[-4:]
