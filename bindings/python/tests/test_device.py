"""The in-process device without a fleet: sampling, safety actions applied to
the board, the twin and telemetry kept locally."""

from __future__ import annotations

from pathlib import Path

import pytest

import wrale


def test_degraded_device_samples_and_drives_the_fan(tmp_path: Path) -> None:
    board = wrale.Board.sim(load_pct=100.0, ambient_c=35.0, seed=2)
    with wrale.Device.start(board, tmp_path, device_id="py-local", interval=0.005) as dev:
        assert dev.id == "py-local" and dev.running
        assert dev.wait_until(lambda d: d.status["samples"] >= 50, timeout=20)
        status = dev.status
        assert status["actions_applied"] > 0
        assert status["telemetry_points"] == status["samples"]
        assert board.fan_duty("fan0") > 0
        assert dev.reported["readings"]["cpu_temp_c"] > 30
        agent = dev.agent_status
        assert agent["connected"] is False and agent["mode"] == "degraded"
        assert "no fleet configured" in (agent["last_error"] or "")
    assert not dev.running
    with pytest.raises(wrale.InvalidInput) as e:
        _ = dev.status
    assert e.value.code == "stopped"
    dev.stop()  # idempotent
    # The twin survived in the data directory.
    assert (tmp_path / "twin.db").exists()


def test_host_sensor_device_with_a_policy(tmp_path: Path) -> None:
    temps = {"value": 50.0}
    duties: list[float] = []
    board = wrale.Board.from_callbacks(
        temperatures={"cpu": lambda: temps["value"]}, fans={"fan0": duties.append}
    )
    policy = 'scope = "fleet"\n[thermal]\nwarn_c = 60.0\n'
    with wrale.Device.start(board, tmp_path, device_id="py-host", interval=0.01, policies=[policy]) as dev:
        assert dev.thresholds["warn_c"] == 60.0
        temps["value"] = 78.0
        assert dev.wait_until(lambda d: bool(duties) and duties[-1] > 0, timeout=10), dev.status
        assert dev.status["last_sample"]["temperatures"][0]["temp_c"]["value"] == 78.0


def test_bad_arguments(tmp_path: Path) -> None:
    board = wrale.Board.sim()
    with pytest.raises(wrale.InvalidInput):
        wrale.Device.start(board, tmp_path, device_id="Not A Label")
    with pytest.raises(wrale.InvalidInput):
        wrale.Device.start(board, tmp_path, device_id="ok", fleet_url="http://127.0.0.1:1")
    with pytest.raises(wrale.InvalidInput) as e:
        wrale.Device.start(board, tmp_path, device_id="ok", policies=["[thermal]\nwarn_c = 'x'\n"])
    assert e.value.code == "invalid_policy"
