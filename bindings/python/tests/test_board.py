"""Boards: the seeded simulator with fault injection and virtual time, GPIO/PWM/fan,
diagnostics, host-supplied sensors, and the errors of each."""

from __future__ import annotations

import json

import pytest

import wrale


def test_sim_sample_is_deterministic_per_seed() -> None:
    a, b = wrale.Board.sim(seed=7), wrale.Board.sim(seed=7)
    c = wrale.Board.sim(seed=8)
    for board in (a, b, c):
        board.set_load(80.0)
        board.step(120)
    sa, sb, sc = a.sample(), b.sample(), c.sample()
    assert sa.to_json() == sb.to_json()
    assert sa.to_json() != sc.to_json()
    assert isinstance(sa.cpu_temp_c, float)
    d = sa.to_dict()
    assert d["temperatures"][0]["id"] == "cpu"
    # A sample round-trips through its JSON form.
    assert wrale.Sample.from_json(sa.to_json()).to_json() == sa.to_json()


def test_profile_room_temperature_security_inputs_and_sample_time() -> None:
    board = wrale.Board.sim("pi5", noise=False, seed=3)
    assert board.model == "pi5" and board.profile["model"] == "pi5"
    assert board.profile["thermal"]
    assert board.sample().at_ms == board.now_ms()
    board.step(900)
    cool = board.sample().cpu_temp_c
    board.set_ambient(40.0)
    board.step(900)
    warm = board.sample().cpu_temp_c
    assert cool is not None and warm is not None and warm > cool + 5
    # An opened case reads as active and the engine raises its alert.
    engine = wrale.SafetyEngine(board.model)
    board.set_security("case_switch", True)
    case = [s for s in board.sample().to_dict()["security"] if s["kind"] == "case_switch"]
    assert case[0]["active"]["value"] is True
    assert "case_open" in [a.code for a in engine.evaluate(board.sample()).alerts if a.change == "raised"]
    board.set_security("case_switch", False)
    case = [s for s in board.sample().to_dict()["security"] if s["kind"] == "case_switch"]
    assert case[0]["active"]["value"] is False
    with pytest.raises(wrale.InvalidInput) as e:
        board.set_security("laser_grid", True)
    assert "laser_grid" in e.value.message


def test_virtual_time_and_load_heat_the_board() -> None:
    board = wrale.Board.sim(noise=False, cooling="heatsink")
    t0, cold = board.now_ms(), board.sample().cpu_temp_c
    board.set_load(100.0)
    board.step(600)
    assert board.now_ms() - t0 == 600_000
    hot = board.sample().cpu_temp_c
    assert cold is not None and hot is not None and hot > cold + 10


def test_fault_injection_and_clear() -> None:
    board = wrale.Board.sim(noise=False)
    board.set_fan("fan0", 100.0)
    board.step(30)
    assert board.sample().to_dict()["fans"][0]["rpm"]["value"] > 0
    board.inject("fan_stall")
    board.step(30)
    assert board.sample().to_dict()["fans"][0]["rpm"]["value"] == 0
    board.clear_faults()
    board.step(30)
    assert board.sample().to_dict()["fans"][0]["rpm"]["value"] > 0
    # A stuck sensor reads the same value whatever happens.
    before = board.sample().cpu_temp_c
    board.inject({"kind": "sensor_stuck", "sensor": "cpu"})
    board.set_load(100.0)
    board.step(300)
    assert board.sample().cpu_temp_c == before
    with pytest.raises(wrale.InvalidInput) as e:
        board.inject("no_such_fault")
    assert e.value.code == "invalid_argument"
    assert "no_such_fault" in e.value.message


def test_faults_from_the_config() -> None:
    board = wrale.Board.sim(faults=[{"kind": "sensor_missing", "sensor": "cpu"}])
    assert board.sample().cpu_temp_c is None


def test_fan_gpio_pwm() -> None:
    board = wrale.Board.sim()
    assert board.fans == ["fan0"]
    board.set_fan("fan0", 55.0)
    assert board.fan_duty("fan0") == 55.0
    board.gpio_write(17, True)
    assert board.gpio_read(17) is True
    board.gpio_write(17, False)
    assert board.gpio_read(17) is False
    board.pwm(12, 25.0, 1000.0)
    board.pwm(12, 50.0)


def test_hardware_errors_are_typed() -> None:
    board = wrale.Board.sim()
    with pytest.raises(wrale.NotFound) as nf:
        board.set_fan("fan9", 10.0)
    assert nf.value.code == "not_found" and nf.value.category == "not_found"
    with pytest.raises(wrale.InvalidInput) as bad:
        board.set_fan("fan0", 140.0)
    assert bad.value.code == "invalid_argument"
    # GPIO 17 has no hardware PWM channel: refused, never faked in software.
    with pytest.raises(wrale.HardwareError) as hw:
        board.pwm(17, 50.0)
    assert hw.value.code == "unsupported"
    assert isinstance(hw.value, wrale.WraleError)
    # Simulator controls on a non-sim board.
    host = wrale.Board.from_callbacks(temperatures={"cpu": lambda: 40.0})
    with pytest.raises(wrale.HardwareError) as unsup:
        host.step(1.0)
    assert unsup.value.code == "unsupported"


def test_diagnostics_report() -> None:
    report = wrale.Board.sim(seed=3).diagnostics()
    assert report["status"] in ("pass", "warn")
    assert {c["name"] for c in report["checks"]} >= {"supply_voltage", "fan_spin"}
    with pytest.raises(wrale.InvalidInput):
        wrale.Board.sim().diagnostics({"no_such_option": 1})


def test_host_callbacks_are_the_sensors() -> None:
    readings = iter([51.5, 52.0])
    duties: list[float] = []
    board = wrale.Board.from_callbacks(
        "pi4b",
        temperatures={"cpu": lambda: next(readings), "ambient": lambda: 24.0},
        fans={"fan0": duties.append},
    )
    assert board.backend == "host"
    s = board.sample()
    assert s.cpu_temp_c == 51.5
    temps = {t["id"]: t for t in s.to_dict()["temperatures"]}
    assert temps["ambient"]["temp_c"]["value"] == 24.0
    board.set_fan("fan0", 70.0)
    assert duties == [70.0] and board.fan_duty("fan0") == 70.0
    # A failing callback becomes a sensor fault in the sample, not a crash.
    def broken() -> float:
        raise RuntimeError("i2c gone")
    bad = wrale.Board.from_callbacks(temperatures={"cpu": broken})
    sample = bad.sample()
    assert sample.cpu_temp_c is None
    assert sample.to_dict()["temperatures"][0]["temp_c"] == {"status": "fault", "value": "sensor_fault"}


def test_linux_board_on_a_fixture_tree(tmp_path: "pytest.TempPathFactory") -> None:
    root = tmp_path  # type: ignore[assignment]
    zone = root / "sys" / "class" / "thermal" / "thermal_zone0"  # type: ignore[operator]
    zone.mkdir(parents=True)
    (zone / "temp").write_text("48500\n")
    (zone / "type").write_text("cpu-thermal\n")
    board = wrale.Board.linux(root=str(root), model="pi4b", gpio_chip=None)
    assert board.backend == "linux"
    assert board.sample().cpu_temp_c == 48.5


def test_rpi_backend_errors_off_a_pi() -> None:
    with pytest.raises(wrale.WraleError) as e:
        wrale.Board.rpi()
    assert e.value.code and e.value.message
    with pytest.raises(wrale.InvalidInput) as bad:
        wrale.Board.open({"backend": "abacus"})
    assert bad.value.code == "invalid_argument"
