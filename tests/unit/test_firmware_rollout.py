"""The staged rollout state machine (firmware/rollout.py): canary then all, a failing or
rolled-back canary halts the rollout at the canaries, the window, pause/resume/abort,
downgrades refused unless asked, and a round trip through JSON."""

from __future__ import annotations

import json

import pytest

from fog_appliance.errors import ActionError
from fog_appliance.firmware.rollout import DevState, Phase, Plan, Rollout, plan_rollout
from fog_appliance.protocol.firmware import FirmwareRequestError, FwReason, StatusReport

OLD = "0.1.0"
NEW = "0.2.0"


def _rollout(n: int = 4, **plan: object) -> Rollout:
    running: dict[str, str | None] = {f"d{i}": OLD for i in range(n)}
    return plan_rollout(7, Plan(NEW, **plan), running, 0.0)  # type: ignore[arg-type]


def _report(r: Rollout, dev: str, st: str, t: float, **kw: object) -> list[str]:
    return r.on_status(dev, StatusReport(NEW, st, 7, **kw), t)  # type: ignore[arg-type]


def _update(r: Rollout, dev: str, t: float) -> list[str]:
    pushes = r.on_hello(dev, OLD, t)
    assert dev in pushes
    for st in ("downloading", "verified", "installed", "healthy"):
        pushes += _report(r, dev, st, t, pct=50 if st == "downloading" else None)
    return pushes


def test_canary_then_all() -> None:
    r = _rollout(4, canary=2)
    assert r.begin(0.0) == ["d0", "d1"]  # offered to the canaries at once
    assert r.on_hello("d2", OLD, 1.0) == []  # not a canary: no offer yet
    assert _update(r, "d0", 2.0) == ["d0"]
    assert r.phase is Phase.CANARY
    pushes = _update(r, "d1", 3.0)
    assert r.phase is Phase.ALL and r.phase_started_at == 3.0
    assert set(pushes) == {"d1", "d2", "d3"}  # the rest is offered when the canaries pass
    _update(r, "d2", 4.0)
    assert r.phase is Phase.ALL
    _report(r, "d3", "failed", 5.0, reason="no_space")
    assert r.phase is Phase.DONE and "1 failed" in r.note
    assert r.devices["d3"].reason == "no_space"


def test_download_progress_and_states() -> None:
    r = _rollout(2, canary=1)
    assert r.begin(0.0) == ["d0"]
    assert r.devices["d0"].state is DevState.OFFERED  # pushed at the start
    assert r.devices["d1"].state is DevState.PENDING
    assert r.on_hello("d0", OLD, 1.0) == ["d0"]
    assert r.serves("d0", NEW) and not r.serves("d0", OLD) and not r.serves("d1", NEW)
    _report(r, "d0", "downloading", 2.0, pct=40)
    assert (r.devices["d0"].state, r.devices["d0"].pct) == (DevState.DOWNLOADING, 40)
    assert r.on_hello("d0", OLD, 3.0) == ["d0"]  # a reconnect mid-download: offered again
    assert r.devices["d0"].state is DevState.DOWNLOADING
    _report(r, "d0", "verified", 4.0)
    assert r.devices["d0"].pct == 100
    _report(r, "d0", "installed", 5.0)
    assert r.devices["d0"].state is DevState.INSTALLED and not r.serves("d0", NEW)


@pytest.mark.parametrize("bad", ["failed", "rolled_back"])
def test_bad_canary_halts_at_the_canaries(bad: str) -> None:
    r = _rollout(5, canary_pct=40)
    assert r.begin(0.0) == ["d0", "d1"]
    _update(r, "d0", 1.0)
    r.on_hello("d1", OLD, 2.0)
    _report(r, "d1", bad, 3.0, reason="crash on import")
    assert r.phase is Phase.HALTED and "d1" in r.note and "crash on import" in r.note
    assert r.on_hello("d3", OLD, 4.0) == []  # nobody else is offered
    assert r.devices["d3"].state is DevState.PENDING
    assert not r.serves("d1", NEW)


def test_canary_that_comes_back_on_the_old_version_rolled_back() -> None:
    r = _rollout(2, canary=1)
    r.begin(0.0)
    r.on_hello("d0", OLD, 1.0)
    _report(r, "d0", "installed", 2.0)
    assert r.on_hello("d0", None, 20.0) == []  # names no version: proves nothing
    assert r.devices["d0"].state is DevState.INSTALLED
    r.on_hello("d0", OLD, 30.0)  # the loader switched back by itself
    assert r.devices["d0"].state is DevState.ROLLED_BACK
    assert r.phase is Phase.HALTED


def test_window_expiry_halts() -> None:
    r = _rollout(3, canary=1, window_s=60.0)
    r.begin(0.0)
    r.on_hello("d0", OLD, 1.0)
    r.tick(60.0)
    assert r.phase is Phase.CANARY
    r.tick(61.0)
    assert r.phase is Phase.HALTED and "window" in r.note and "d0" in r.note


def test_healthy_by_hello_then_heartbeat_or_update_within_the_window() -> None:
    r = _rollout(3, canary=2, window_s=100.0)
    r.begin(0.0)
    for d in ("d0", "d1"):
        r.on_hello(d, OLD, 1.0)
        _report(r, d, "installed", 2.0)
    r.on_hello("d0", NEW, 10.0)  # new version, not yet proven
    assert r.devices["d0"].state is DevState.INSTALLED
    r.on_hello("d0", NEW, 20.0)  # a heartbeat within the window
    assert r.devices["d0"].state is DevState.HEALTHY
    r.on_hello("d1", NEW, 10.0)
    assert r.on_update("d1", 5.0) == []  # before that hello: does not count
    assert r.on_update("d1", 200.0) == []  # after the window: does not count
    assert r.devices["d1"].state is DevState.INSTALLED
    assert r.on_update("d1", 50.0) == ["d2"]
    assert r.devices["d1"].state is DevState.HEALTHY and r.phase is Phase.ALL


def test_pause_resume_abort() -> None:
    r = _rollout(3, canary=1, window_s=60.0)
    r.begin(0.0)
    r.pause(10.0)
    assert r.on_hello("d0", OLD, 11.0) == []  # no offer while paused
    r.tick(500.0)
    assert r.phase is Phase.CANARY  # the window does not run while paused
    with pytest.raises(ActionError):
        r.pause(12.0)
    assert r.resume(510.0) == ["d0"]
    assert r.phase_started_at == 500.0
    r.tick(555.0)
    assert r.phase is Phase.CANARY
    r.abort(556.0)
    assert r.phase is Phase.ABORTED and r.on_hello("d0", OLD, 557.0) == []
    for action in (r.abort, r.pause, r.resume):
        with pytest.raises(ActionError):
            action(558.0)


def test_downgrade_refused_unless_asked() -> None:
    running: dict[str, str | None] = {"d0": OLD, "d1": "0.3.0", "d2": None}
    with pytest.raises(ActionError, match="d1 run a version newer"):
        plan_rollout(1, Plan(NEW), running, 0.0)
    r = plan_rollout(1, Plan(NEW, canary=3, downgrade=True), running, 0.0)
    assert r.downgrade and r.begin(0.0) == ["d0", "d1", "d2"]
    assert r.on_hello("d1", "0.3.0", 1.0) == ["d1"]
    # a device whose version was unknown at the start says it runs a newer one
    r2 = plan_rollout(1, Plan(NEW, canary=1), {"d0": None, "d1": OLD}, 0.0)
    r2.begin(0.0)
    assert r2.on_hello("d0", "1.0", 1.0) == []
    assert r2.devices["d0"].state is DevState.FAILED
    assert r2.devices["d0"].reason == "downgrade_refused" and r2.phase is Phase.HALTED


def test_plan_checks() -> None:
    for plan, running in ((Plan(NEW), {}), (Plan(NEW, devices=("zz",)), {"d0": OLD}),
                          (Plan("v2"), {"d0": OLD}), (Plan(NEW, canary=0), {"d0": OLD}),
                          (Plan(NEW, canary_pct=0.0), {"d0": OLD}),
                          (Plan(NEW, window_s=0.0), {"d0": OLD}),
                          (Plan(NEW, canary=1, canary_pct=5.0), {"d0": OLD})):
        with pytest.raises(ActionError):
            plan_rollout(1, plan, running, 0.0)  # type: ignore[arg-type]
    # devices already on the release count as healthy and are not canaries
    r = plan_rollout(1, Plan(NEW, canary=1), {"d0": NEW, "d1": OLD}, 0.0)
    assert r.devices["d0"].state is DevState.HEALTHY and not r.devices["d0"].canary
    assert r.devices["d1"].canary
    done = plan_rollout(2, Plan(NEW), {"d0": NEW}, 0.0)
    assert done.begin(0.0) == [] and done.phase is Phase.DONE


def test_reports_of_other_devices_releases_or_rollouts_are_refused() -> None:
    r = _rollout(2, canary=1)
    r.begin(0.0)
    cases = (("zz", StatusReport(NEW, "healthy", 7), FwReason.NOT_OFFERED),
             ("d0", StatusReport("0.9", "healthy", 7), FwReason.UNKNOWN_RELEASE),
             ("d0", StatusReport(NEW, "healthy", 8), FwReason.WRONG_ROLLOUT))
    for dev, rep, code in cases:
        with pytest.raises(FirmwareRequestError) as info:
            r.on_status(dev, rep, 1.0)
        assert info.value.code is code
    assert r.devices["d0"].state is DevState.OFFERED  # unchanged by the refused reports
    r.on_status("d0", StatusReport(NEW, "healthy"), 2.0)  # no rid (rebooted): accepted
    assert r.devices["d0"].state is DevState.HEALTHY


def test_json_round_trip() -> None:
    r = _rollout(4, canary=1)  # d3 says nothing: the rollout stays in "all"
    r.begin(0.0)
    _update(r, "d0", 1.0)
    r.pause(2.0)
    back = Rollout.from_json(json.loads(json.dumps(r.to_json())))
    assert back == r
    assert back.summary()["counts"]["healthy"] == 1


def test_a_device_that_failed_or_rolled_back_is_not_offered_again() -> None:
    """The contract (docs/protocol.md "Firmware over the air"): once a device reported
    ``failed`` or ``rolled_back``, its hellos (still naming the old version) bring no offer,
    in the phase ``all`` as after a resume."""
    r = _rollout(4, canary=1)  # d3 says nothing: the rollout stays in "all"
    r.begin(0.0)
    _update(r, "d0", 1.0)
    assert r.phase is Phase.ALL
    assert r.on_hello("d1", OLD, 2.0) == ["d1"]
    _report(r, "d1", "failed", 3.0, reason="sha_mismatch")
    assert r.on_hello("d2", OLD, 2.0) == ["d2"]
    _report(r, "d2", "installed", 3.0)
    _report(r, "d2", "rolled_back", 4.0, reason="not confirmed in 3 boots")
    for t in (5.0, 6.0):
        assert r.on_hello("d1", OLD, t) == [] and r.on_hello("d2", OLD, t) == []
    assert (r.devices["d1"].state, r.devices["d2"].state) == (DevState.FAILED,
                                                              DevState.ROLLED_BACK)
    r.pause(7.0)
    assert r.resume(8.0) == ["d3"]  # a resume offers the phase again: not to these
