"""The outbox and model adoption in a real SQLite file (store/outbox.py, store/edges.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fog_appliance.errors import ProvisioningError, StoreError
from fog_appliance.store import DeviceRow, ModelRow, RoundRow, Store
from fog_appliance.store.edges import active_devices, import_device
from fog_appliance.store.outbox import (
    ACKED,
    PENDING,
    SENT,
    SUPERSEDED,
    UNCONFIRMED,
    OutboxItem,
    adopt_model,
    find_global,
    mark_sent,
    outbox_counts,
    outbox_for_base,
    outbox_rows,
    publish_with_outbox,
    settle,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "fog.db", synchronous="normal")
    s.put_model(_model(1, "initial"))
    s.insert_round(RoundRow(1, 1, "collecting", 0.0, 60.0, 2, 1))
    yield s
    s.close()


def _model(version: int, provenance: str, **metrics: object) -> ModelRow:
    return ModelRow(version, None, float(version), f"sha{version}", {"kind": "softmax"},
                    b"blob%d" % version, 5, provenance, dict(metrics))


def _publish(store: Store, rnd: int, version: int, run: int, server_round: int) -> int:
    item = OutboxItem(rnd, version - 1, 10 * rnd, b"payload%d" % rnd,
                      {"run": run, "server_round": server_round, "updates": 2})
    return publish_with_outbox(store, rnd, _model(version, "regional"),
                               RoundRow(rnd + 1, version, "open", 1.0, 61.0, 2, 1), 2.0,
                               "closed", item)


def test_publishing_with_an_aggregate_is_one_transaction(store: Store) -> None:
    oid = _publish(store, 1, 2, run=5, server_round=1)
    row = outbox_for_base(store, 1)
    assert row is not None and row.id == oid and row.state == PENDING
    assert row.payload == b"payload1" and row.num_examples == 10
    assert (row.run_id, row.server_round) == (5, 1)
    assert store.model(2) is not None
    assert [r.state for r in store.rounds()] == ["open", "published"]
    # a failing publication (model version taken) leaves nothing behind
    with pytest.raises(StoreError):
        _publish(store, 2, 2, run=5, server_round=2)
    assert len(outbox_rows(store)) == 1
    assert store.current_round() is not None and store.current_round().id == 2


def test_adoption_supersedes_the_open_round(store: Store) -> None:
    adopt_model(store, 1, _model(2, "global", content_sha256="abc", run=3), RoundRow(
        2, 2, "open", 5.0, 65.0, 2, 1), 5.0, "superseded by global model 2")
    rounds = {r.id: r for r in store.rounds()}
    assert rounds[1].state == "failed" and "superseded" in rounds[1].note
    assert rounds[2].state == "open" and rounds[2].model_version == 2
    found = find_global(store, "abc")
    assert found is not None and found.version == 2 and found.blob is None
    assert find_global(store, "nope") is None
    with pytest.raises(StoreError):  # same version again: nothing changes
        adopt_model(store, 2, _model(2, "global"), RoundRow(3, 2, "open", 6.0, 66.0, 2, 1),
                    6.0, "x")
    assert store.current_round().id == 2  # type: ignore[union-attr]


def test_find_global_ignores_regional_models_with_the_same_hash(store: Store) -> None:
    store.put_model(_model(2, "regional", content_sha256="abc"))
    assert find_global(store, "abc") is None


def test_settling_follows_the_cloud_past_its_rounds(store: Store) -> None:
    ids = {}
    for rnd, (run, sr) in enumerate([(5, 1), (5, 2), (5, 3), (4, 9), (4, 10)], start=1):
        ids[(run, sr)] = _publish(store, rnd, rnd + 1, run, sr)
    mark_sent(store, ids[(5, 1)], 10.0)
    mark_sent(store, ids[(5, 1)], 11.0)
    mark_sent(store, ids[(4, 9)], 12.0)
    changed = settle(store, 5, 3, 20.0)  # run 5 is at round 3
    assert changed == {ACKED: 1, SUPERSEDED: 2, UNCONFIRMED: 1}
    rows = {(r.run_id, r.server_round): r for r in outbox_rows(store, with_payload=True)}
    assert rows[(5, 1)].state == ACKED and rows[(5, 1)].attempts == 2
    assert rows[(5, 2)].state == SUPERSEDED
    assert rows[(5, 3)].state == PENDING and rows[(5, 3)].payload == b"payload3"
    assert rows[(4, 9)].state == UNCONFIRMED and rows[(4, 10)].state == SUPERSEDED
    assert all(r.payload == b"" for k, r in rows.items() if k != (5, 3))
    assert rows[(5, 1)].metrics["settled_at"] == 20.0
    assert outbox_counts(store) == {PENDING: 1, SENT: 0, ACKED: 1, SUPERSEDED: 2,
                                    UNCONFIRMED: 1}
    # settled rows are final: never sent again, never found as live
    mark_sent(store, ids[(5, 1)], 30.0)
    assert [r.state for r in outbox_rows(store, (ACKED,))] == [ACKED]
    assert outbox_for_base(store, 1) is None
    assert settle(store, 5, 3, 21.0) == {ACKED: 0, SUPERSEDED: 0, UNCONFIRMED: 0}


def test_outbox_rows_filters_and_limits(store: Store) -> None:
    _publish(store, 1, 2, 1, 1)
    assert outbox_rows(store, ("bogus",)) == []
    assert outbox_rows(store)[0].payload is None
    assert outbox_rows(store, limit=0) == []


def test_active_devices_and_hand_over(store: Store) -> None:
    dev = DeviceRow("e1", b"k" * 32, "$7$101$aaaa$bbbb", 1.0)
    assert import_device(store, dev) is True
    assert import_device(store, dev) is False  # the same key: already known
    with pytest.raises(ProvisioningError, match="another key"):
        import_device(store, DeviceRow("e1", b"x" * 32, "$7$101$aaaa$bbbb", 1.0))
    store.record_hello("e1", {}, 100.0)
    store.add_device(DeviceRow("e2", b"k" * 32, "$7$101$aaaa$bbbb", 1.0))
    store.record_hello("e2", {}, 50.0)
    assert active_devices(store, 60.0) == {"e1": 100.0}
    store.revoke_device("e1", 200.0)
    assert active_devices(store, 0.0) == {"e2": 50.0}
    with pytest.raises(ProvisioningError, match="revoked"):
        import_device(store, dev)
