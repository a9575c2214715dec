"""The safety engine: policies from TOML text and files, evaluation of samples,
command checks, and typed refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

import wrale

INTERLOCK = """
scope = "fleet"
[security]
lock_gpio_when_case_open = true
[[interlock]]
id = "gpio17-case-open"
deny = { command = "set_gpio", pin = 17, level = "high" }
when = { case_open = true }
"""


def hot_sample() -> wrale.Sample:
    board = wrale.Board.sim(noise=False, load_pct=100.0, ambient_c=35.0)
    board.step(900)
    return board.sample()


def test_hot_sample_drives_the_fan_and_raises_alerts() -> None:
    engine = wrale.SafetyEngine("pi4b")
    decision = engine.evaluate(hot_sample())
    assert decision
    fan = [a for a in decision.actions if a.kind == "set_fan_duty"]
    assert fan and fan[0].params["fan"] == "fan0" and fan[0].params["duty_pct"] > 0
    # Above the warning and throttle thresholds past their hold: alerts and throttling.
    sample = hot_sample()
    later = engine.evaluate(sample, now_ms=sample.at_ms + 10_000)
    assert {a.code for a in later.alerts} >= {"thermal_warning", "thermal_throttle"}
    assert any(a.kind == "throttle_workloads" for a in later.actions)
    assert later.transitions == [{"from": "normal", "to": "throttle"}]
    assert engine.state["throttled"] is True


def test_an_untrusted_sensor_is_fail_safe() -> None:
    board = wrale.Board.sim(faults=[{"kind": "sensor_fault", "sensor": "cpu"}])
    engine = wrale.SafetyEngine()
    decision = engine.evaluate(board.sample())
    assert engine.state["fail_safe"] is True
    assert decision.alerts and decision.alerts[0].change == "raised"


def test_command_checks_and_refusals() -> None:
    engine = wrale.SafetyEngine("pi4b", INTERLOCK, source_name="fleet.toml")
    cmd = {"type": "set_gpio", "pin": 17, "level": "high"}
    # Case state unknown: the interlock fails closed.
    verdict = engine.check(cmd, actor="user:ada", reason="test")
    assert not verdict and verdict.rule == "interlock:gpio17-case-open"
    assert verdict.reason
    other = engine.check({"type": "set_gpio", "pin": 27, "level": "high"})
    assert other.allowed and other.rule is None
    with pytest.raises(wrale.PolicyViolation) as e:
        engine.require(cmd)
    assert e.value.code == "policy_violation"
    assert e.value.category == "policy"
    assert e.value.message.startswith("policy violation: rule interlock:gpio17-case-open: ")
    assert str(e.value) == e.value.message
    assert engine.admit({"type": "set_fan_duty", "fan": "fan0", "duty_pct": 100.0}).allowed
    with pytest.raises(wrale.InvalidInput) as bad:
        engine.check({"type": "warp_drive"})
    assert bad.value.code == "invalid_argument"
    # Actors in their text forms (wrale_core's Actor parser); bad ones name the problem.
    for actor in ("ada", "user:ada", "local:bob", "device:pi-1", "fleet"):
        assert engine.check({"type": "set_gpio", "pin": 27, "level": "high"}, actor=actor).allowed
    for actor, why in (("robot:r2", "robot"), ("user:", "empty"), ("device:Not Valid", "Not Valid")):
        with pytest.raises(wrale.InvalidInput) as bad_actor:
            engine.check(cmd, actor=actor)
        assert bad_actor.value.code == "invalid_actor"
        assert why in bad_actor.value.message


def test_loosening_or_broken_policies_are_refused_and_the_old_one_stays() -> None:
    engine = wrale.SafetyEngine("pi4b")
    engine.load('scope = "fleet"\n[thermal]\nwarn_c = 65.0\n')
    assert engine.thresholds["warn_c"] == 65.0
    with pytest.raises(wrale.PolicyViolation) as loose:
        engine.load('scope = "fleet"\n[thermal]\ncritical_c = 95.0\n')
    assert loose.value.code == "policy_violation"
    with pytest.raises(wrale.InvalidInput) as broken:
        engine.load('scope = "fleet"\n[thermal]\nwarn_c = "hot"\n', source_name="fleet.toml")
    assert broken.value.code == "invalid_policy"
    assert broken.value.message.startswith("fleet.toml")
    assert engine.thresholds["warn_c"] == 65.0


def test_policy_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('scope = "fleet"\n[thermal]\nwarn_c = 60.0\nthrottle_c = 70.0\n')
    engine = wrale.SafetyEngine.from_file(path)
    assert engine.thresholds["warn_c"] == 60.0
    assert engine.thresholds["throttle_c"] == 70.0
    engine.reset()
    assert engine.state["alerts"] == []
