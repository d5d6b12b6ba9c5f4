"""Pseudonyms and masking.

Resident ID numbers are replaced by a keyed HMAC-SHA256 pseudonym in the producer, before
anything is published. Without the key a pseudonym cannot be reversed or recomputed from a
guessed ID number, and the same key gives the same pseudonym in every department's feed,
so people can still be joined to their households.
"""

from __future__ import annotations

import hashlib


class Pseudonymiser:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the pseudonym key must be at least 16 bytes long")
        self._key = key
        # HMAC-SHA256 as RFC 2104 defines it, with the inner and outer hash states of the
        # key computed once: a pseudonym then costs two state copies, about half the time
        # of a new hmac object. Same digest as hmac.new(key, msg, sha256) (tested).
        block = hashlib.sha256().block_size
        k = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in k))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in k))

    def __reduce__(self) -> tuple[type, tuple[bytes]]:
        # The prepared hash states do not pickle; the key rebuilds them (for the parse
        # processes of producers.publish).
        return (Pseudonymiser, (self._key,))

    def person(self, id_number: str) -> str:
        inner = self._inner.copy()
        inner.update(id_number.strip().upper().encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return "p" + outer.hexdigest()[:31]


def mask_id_number(id_number: str) -> str:
    """990122199209043751 -> 990122********3751: region visible, birth date hidden."""
    s = id_number.strip()
    if len(s) <= 10:
        return "*" * len(s)
    return s[:6] + "*" * (len(s) - 10) + s[-4:]
