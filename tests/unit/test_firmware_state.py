"""What the firmware keeps in flash (edge_firmware/device/flashstate.py): the write-ahead
sequence number and pending update survive a reset; a torn write is recovered."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.firmware_support import firmware

fs = firmware("flashstate")
enc = firmware("encoder")


def frame(seq: int) -> bytes:
    from array import array

    return bytes(enc.encode_update("esp", bytes(32), 1, 4, seq, 1, 1,
                                   [((2,), array("f", [0.5, -0.5]))]))


def state(tmp_path: Path) -> object:
    return fs.State(str(tmp_path) + "/")


def test_a_fresh_board_starts_at_sequence_one(tmp_path: Path) -> None:
    st = state(tmp_path)
    assert (st.seq, st.pending, st.done_round, st.next_seq()) == (0, None, 0, 1)
    assert not (tmp_path / "state.json").exists()  # next_seq writes nothing by itself


def test_the_pending_update_survives_a_reset(tmp_path: Path) -> None:
    st = state(tmp_path)
    f = frame(1)
    st.set_pending(f, 1, 4, 1)
    again = state(tmp_path)
    assert again.seq == 1 and again.pending_frame() == f
    assert again.pending == {"seq": 1, "round": 4, "model_version": 1, "size": len(f)}
    again.finish(4)
    third = state(tmp_path)
    assert (third.pending, third.done_round, third.seq) == (None, 4, 1)
    assert not (tmp_path / "pending.bin").exists()


def test_a_torn_pending_write_is_dropped_not_sent(tmp_path: Path) -> None:
    st = state(tmp_path)
    st.set_pending(frame(3), 3, 4, 1)
    (tmp_path / "pending.bin").write_bytes(frame(3)[:-5])  # power lost while rewriting
    assert state(tmp_path).pending is None
    st.set_pending(frame(3), 3, 4, 1)
    (tmp_path / "pending.bin").write_bytes(frame(2))  # an older frame under the new name
    assert state(tmp_path).pending is None


def test_a_frame_written_without_its_state_is_ignored(tmp_path: Path) -> None:
    # Power lost between writing pending.bin and state.json: the state never named it,
    # so it was never sent; the next update reuses the sequence number safely.
    st = state(tmp_path)
    st.set_pending(frame(1), 1, 1, 1)
    st.finish(1)
    (tmp_path / "pending.bin").write_bytes(frame(2))
    again = state(tmp_path)
    assert again.pending is None and again.next_seq() == 2


def test_state_is_recovered_from_the_temporary_file(tmp_path: Path) -> None:
    # FAT cannot rename over a file: a reset between the remove and the rename leaves
    # only state.json.tmp.
    st = state(tmp_path)
    st.set_pending(frame(5), 5, 2, 1)
    os.replace(tmp_path / "state.json", tmp_path / "state.json.tmp")
    assert state(tmp_path).seq == 5


def test_unreadable_state_starts_over(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    assert state(tmp_path).seq == 0


def test_the_model_cache_is_keyed_by_sha256(tmp_path: Path) -> None:
    st = state(tmp_path)
    st.store_model(b"FOGM...", 3, "ab" * 32)
    again = state(tmp_path)
    assert again.model_version() == 3
    assert again.cached_model("ab" * 32) == str(tmp_path) + "/model.bin"
    assert again.cached_model("cd" * 32) is None
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["model"] == {"version": 3, "sha256": "ab" * 32}
