"""The coordinator's federation hooks with a real store: adopting a model supersedes the
open round, the upstream hook puts a closing round's aggregate in the outbox in the same
transaction, the peers' mix replaces the next model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from fog_appliance.aggregation import Aggregate, make_strategy
from fog_appliance.errors import ModelRefused
from fog_appliance.model.spec import flatten
from fog_appliance.protocol.frame import decode_update, encode_update
from fog_appliance.rounds import Round, State
from fog_appliance.rounds.coordinator import CloseHooks, Coordinator, CurrentModel
from fog_appliance.store.outbox import OutboxItem, outbox_rows
from tests.coordinator_support import CoordinatorRig

DEVICES = ("d1", "d2", "d3")


class Fog(CoordinatorRig):
    def __init__(self, path: Path) -> None:
        super().__init__(path, DEVICES, threshold=2)
        self.seq = 0
        self.models: list[CurrentModel] = []
        self.coord.add_listener(self.models.append)

    async def submit(self, device: str, scale: float, samples: int) -> None:
        c = self.coord
        self.seq += 1
        delta = [np.full(s, scale, np.float32) for s in c.shapes]
        frame_bytes = encode_update(device_id=device, key=self.keys[device],
                                    model_version=c.round.model_version, round=c.round.id,
                                    seq=self.seq, num_samples=samples, local_steps=1,
                                    tensors=delta)
        frame = decode_update(frame_bytes, self.keys[device], c.shapes,
                              max_frame_bytes=len(frame_bytes))
        ticket = await c.rounds.admit(frame, frame_bytes, "test")
        assert ticket.row is not None
        await self.db.run(self.store.commit_intake, [ticket.row], [], 1.0)
        c.rounds.on_committed([ticket])

    def close(self) -> None:
        self.db.close()
        self.store.close()


@pytest.fixture
async def fog(tmp_path: Path) -> AsyncIterator[Fog]:
    f = Fog(tmp_path / "fog.db")
    await f.coord.start()
    yield f
    await f.coord.wait_closed()
    f.close()


def _weights(fog: Fog, value: float) -> list[np.ndarray]:
    return [np.full(s, value, np.float32) for s in fog.coord.shapes]


async def test_adopting_supersedes_the_open_round_and_reannounces(fog: Fog) -> None:
    await fog.submit("d1", 0.5, 10)
    assert fog.coord.round.state is State.COLLECTING
    model = await fog.coord.adopt(_weights(fog, 0.25), "global", {"run": 1},
                                  {"lr": 0.01, "epochs": 3})
    assert model.version == 2 and fog.models == [model]
    assert np.allclose(flatten(model.weights), 0.25)
    assert model.announcement.config["lr"] == 0.01 and model.announcement.config["epochs"] == 3
    rounds = {r.id: r for r in fog.store.rounds()}
    assert rounds[1].state == "failed" and "superseded by global model 2" in rounds[1].note
    assert rounds[2].model_version == 2 and fog.coord.round.id == 2
    row = fog.store.model(2)
    assert row is not None and row.provenance == "global"
    assert row.metrics["run"] == 1 and row.metrics["round_config"]["lr"] == 0.01
    assert fog.coord.stats.superseded == 1
    # the superseded round's update is not counted in the new round
    assert fog.coord.round.count == 0
    # announced with every round until the next adoption, and after a restart
    await fog.submit("d1", 0.1, 5)
    await fog.submit("d2", 0.1, 5)
    await fog.coord.wait_closed()
    assert fog.coord.model.announcement.config["lr"] == 0.01
    again = Coordinator(fog.cfg, fog.store, fog.db, fog.registry, make_strategy("fedavg"))
    await again.start()
    assert again.model.announcement.config["lr"] == 0.01


async def test_adopting_a_model_of_another_shape_changes_nothing(fog: Fog) -> None:
    with pytest.raises(ModelRefused, match="shapes"):
        await fog.coord.adopt([np.zeros((2, 2), np.float32)], "global", {})
    assert fog.coord.model.version == 1 and fog.coord.round.state is State.OPEN


async def test_adopting_waits_for_a_close_in_progress(fog: Fog) -> None:
    await fog.submit("d1", 1.0, 1)
    await fog.submit("d2", 3.0, 3)  # threshold: the close is scheduled, not done yet
    assert fog.coord.round.state is State.AGGREGATING
    model = await fog.coord.adopt(_weights(fog, 0.0), "global", {})
    assert model.version == 3  # 2 is the closed round's model
    published = fog.store.model(2)
    assert published is not None and published.provenance == "regional"
    assert [r.state for r in sorted(fog.store.rounds(), key=lambda r: r.id)] == [
        "published", "failed", "open"]


async def test_the_upstream_hook_puts_the_aggregate_in_the_outbox(fog: Fog) -> None:
    seen: list[tuple[Round, Aggregate]] = []

    def upstream(rnd: Round, agg: Aggregate, base: CurrentModel) -> OutboxItem | None:
        seen.append((rnd, agg))
        if rnd.id != 1:
            return None
        return OutboxItem(rnd.id, rnd.model_version, agg.num_examples, agg.delta.tobytes(),
                          {"run": 9, "server_round": 1})

    fog.coord.connect(CloseHooks(upstream_item=upstream))
    await fog.submit("d1", 1.0, 1)
    await fog.submit("d2", 3.0, 3)
    await fog.coord.wait_closed()
    (row,) = outbox_rows(fog.store, with_payload=True)
    assert row.round_id == 1 and row.model_version == 1 and row.num_examples == 4
    assert np.allclose(np.frombuffer(row.payload or b"", np.float32), 2.5)  # (1·1 + 3·3)/4
    assert fog.store.model(2) is not None
    await fog.submit("d1", 1.0, 1)
    await fog.submit("d3", 1.0, 1)
    await fog.coord.wait_closed()
    assert [r.id for r, _ in seen] == [1, 2] and len(outbox_rows(fog.store)) == 1


async def test_the_mixer_hook_replaces_the_next_model(fog: Fog) -> None:
    def mixer(weights: list[np.ndarray], agg: Aggregate
              ) -> tuple[list[np.ndarray], dict[str, object]] | None:
        return [w * 0 + 7 for w in weights], {"gossip": ["peer"]}

    fog.coord.connect(CloseHooks(mix_next_model=mixer))
    await fog.submit("d1", 1.0, 1)
    await fog.submit("d2", 1.0, 1)
    await fog.coord.wait_closed()
    row = fog.store.model(2)
    assert row is not None and row.provenance == "gossip" and row.metrics["gossip"] == ["peer"]
    assert np.allclose(flatten(fog.coord.model.weights), 7)
    fog.coord.connect(CloseHooks(mix_next_model=lambda w, a: None))
    await fog.submit("d1", 1.0, 1)
    await fog.submit("d3", 1.0, 1)
    await fog.coord.wait_closed()
    assert fog.store.model(3).provenance == "regional"  # type: ignore[union-attr]


async def test_concurrent_adoptions_are_serialised(fog: Fog) -> None:
    a, b = await asyncio.gather(fog.coord.adopt(_weights(fog, 1.0), "global", {}),
                                fog.coord.adopt(_weights(fog, 2.0), "global", {}))
    assert {a.version, b.version} == {2, 3}
    assert np.allclose(flatten(fog.coord.model.weights), 2.0 if b.version == 3 else 1.0)
