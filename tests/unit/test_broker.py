"""The local broker's pure helpers."""

import pytest


def test_kraft_cluster_ids_never_look_like_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage format -t <id>: an id starting with "-" is read as an option and the
    broker never starts (1 start in 64 failed in CI that way)."""
    import uuid

    from fanpin import broker

    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # base64 starts with "-"
    ids = iter([dashed, uuid.UUID(int=1)])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(ids))
    cid = broker.new_cluster_id()
    assert not cid.startswith("-") and len(cid) == 22
    assert cid == broker.base64.urlsafe_b64encode(uuid.UUID(int=1).bytes).decode().rstrip("=")
