"""The checks of ota.py (the board's side of firmware over the air) on any JSON an offer
may hold: never an exception, only a well-formed offer is taken. The download itself runs
end to end in tests/e2e/test_board_ota.py and on MicroPython in
tests/integration/test_firmware_wasm_ota.py."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.firmware_support import firmware

ota = firmware("ota")
SHA = "ab" * 32
GOOD: dict[str, Any] = {"type": "firmware", "ver": "0.2.0", "rid": 7, "ctr": 3, "down": False,
                        "files": [["edgeloop.mpy", 9000, SHA], ["fwver.mpy", 80, SHA]],
                        "total": 9080}

_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=70)
                     | st.floats(allow_nan=False),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def test_a_well_formed_offer_is_taken() -> None:
    assert ota.check_offer(GOOD) == (0, 2, 0)
    assert ota.version("12.0.3.4") == (12, 0, 3, 4) and ota.version("0.10") > ota.version("0.9")


def test_each_bad_field_is_refused() -> None:
    def bad(path: list[Any], value: Any) -> dict[str, Any]:
        d = copy.deepcopy(GOOD)
        target = d
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        return d

    many = bad(["files"], [[f"m{i}.mpy", 1, SHA] for i in range(47)] + [["fwver.mpy", 80, SHA]])
    many["total"] = 47 + 80  # a 49th file of 0 bytes keeps this total
    assert ota.check_offer(many) == (0, 2, 0)  # 48 files: the most
    for d in (bad(["ver"], "0.2.x"), bad(["ver"], "1.2.3.4.5"), bad(["ver"], "12345"),
              bad(["ver"], "0.²"), bad(["ver"], ""), bad(["rid"], "7"), bad(["rid"], True),
              bad(["total"], 9081), bad(["down"], "yes"), bad(["files"], []),
              bad(["files", 0, 0], "../boot.py"), bad(["files", 0, 0], "Edgeloop.mpy"),
              bad(["files", 0, 0], "a" * 25 + ".mpy"), bad(["files", 0, 0], "edgeloop.txt"),
              bad(["files", 0, 1], 65537), bad(["files", 0, 1], -1),
              bad(["files", 0, 2], "AB" * 32), bad(["files", 0, 2], "0x" + "a" * 62),
              bad(["files", 0, 2], SHA[:-1]), bad(["files", 1, 0], "edgeloop.mpy"),
              bad(["files", 1, 0], "other.mpy"),  # no fwver module: no version to run
              {**many, "files": [*many["files"], ["m47.mpy", 0, SHA]]}):  # 49 files
        assert ota.check_offer(d) is None, d


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["ver", "rid", "files", "total", "down", "ctr"]), _JSON,
                       max_size=6))
def test_any_json_is_checked_without_an_exception(fields: dict[str, Any]) -> None:
    d = {**GOOD, **fields}
    got = ota.check_offer(d)
    assert got is None or (isinstance(got, tuple) and got == ota.version(d["ver"]))
    ota.version(fields.get("ver"))
