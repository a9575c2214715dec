"""End to end against a real fleetd: the client (sync and asyncio), the event
stream with its stop handle, and a Python-hosted device that enrolls, syncs its
twin, ships telemetry, applies fleet config and answers commands."""

from __future__ import annotations

import asyncio
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import pytest

import wrale
from conftest import FleetServer
from wrale.device import CREDENTIAL_FILE

T = TypeVar("T")


def eventually(f: Callable[[], T], timeout: float = 20.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = f()
            if last:
                return last
        except wrale.WraleError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or f}: last {last!r}")


def test_auth_and_not_found_errors(fleetd: FleetServer) -> None:
    with pytest.raises(wrale.AuthError) as e:
        wrale.Fleet(fleetd.url, "wrt_wrong").devices()
    assert e.value.code == "unauthorized"
    assert e.value.details is not None and e.value.details["status"] == 401
    fleet = wrale.Fleet(fleetd.url, fleetd.token)
    with pytest.raises(wrale.NotFound) as nf:
        fleet.device("no-such-device")
    assert nf.value.code == "not_found"
    with pytest.raises(wrale.InvalidInput):
        fleet.create_group("Bad Group")


def test_login_groups_config_audit(fleetd: FleetServer) -> None:
    fleet = wrale.Fleet(fleetd.url)
    fleet.ready()
    session = fleet.login("admin", fleetd.password)
    assert session["user"]["role"] == "admin"
    assert fleet.whoami()["name"] == "admin"
    fleet.create_group("py-lab", name="Python lab")
    assert "py-lab" in [g["id"] for g in fleet.groups()]
    assert fleet.group("py-lab")["name"] == "Python lab"
    with pytest.raises(wrale.ConflictError) as dup:
        fleet.create_group("py-lab")
    assert dup.value.code == "conflict"
    fleet.set_config({"fan_profile": "balance"}, "group", "py-lab")
    assert fleet.config("group", "py-lab")["fields"]["fan_profile"] == "balance"
    audit = fleet.audit(target="group:py-lab")
    assert [a["action"] for a in audit if a["action"] == "group.create"], audit
    assert isinstance(fleet.alerts(), list)


def test_python_device_joins_the_fleet(fleetd: FleetServer, tmp_path: Path) -> None:
    fleet = wrale.Fleet(fleetd.url, fleetd.token)
    fleet.create_group("py-devices")
    enrollment = fleet.create_enrollment_token(group="py-devices", uses=1, expires_in="1h")
    events = fleet.events(kinds=["device", "twin"])
    seen: list[dict[str, Any]] = []

    def follow() -> None:
        for event in events:
            seen.append(event)

    reader = threading.Thread(target=follow)
    reader.start()

    board = wrale.Board.sim(seed=5, load_pct=70.0, ambient_c=30.0)
    dev = wrale.Device.enroll(
        board,
        tmp_path,
        fleet_url=fleetd.url,
        enrollment_token=enrollment["token"],
        device_id="py-sim-1",
        labels={"lang": "python"},
        interval=0.05,
    )
    try:
        # Enrolled: in the device list, in its group, with its labels.
        devices = eventually(lambda: [d for d in fleet.devices(labels={"lang": "python"}) if d["id"] == "py-sim-1"])
        assert devices[0]["group"] == "py-devices"
        assert [d["id"] for d in fleet.devices(group="py-devices")] == ["py-sim-1"]
        assert (tmp_path / "fleet-credential").read_text().startswith("wrd_")
        # Connected, and the twin's reported readings reach fleetd.
        eventually(lambda: dev.agent_status["connected"], what="agent connected")
        twin = eventually(lambda: (t := fleet.twin("py-sim-1"))["reported"].get("reading.cpu_temp_c") and t,
                          what="reported readings in fleetd")
        assert twin["reported"]["reading.cpu_temp_c"] > 20
        assert twin["reported"]["config.accepted"] is True
        # Telemetry shipped and acknowledged, queryable in fleetd.
        eventually(lambda: dev.agent_status["telemetry_acked"] > 0, what="telemetry acked")
        # Stamped with the sim board's virtual clock (from 2026-01-01T00:00:00Z).
        start_ms = 1_767_225_600_000
        points = eventually(lambda: fleet.telemetry("py-sim-1", "cpu_temp_c", from_ms=start_ms,
                                                    to_ms=board.now_ms() + 1_000, resolution="raw")["points"],
                            what="telemetry points")
        assert points
        # The group's aggregate over the same range: this device's points.
        group = eventually(lambda: fleet.group_telemetry("py-devices", "cpu_temp_c", from_ms=start_ms,
                                                         to_ms=board.now_ms() + 60_000, resolution="1m",
                                                         agg="max")["points"] and
                           fleet.group_telemetry("py-devices", "cpu_temp_c", from_ms=start_ms,
                                                 to_ms=board.now_ms() + 60_000, resolution="1m", agg="max"),
                           what="group telemetry")
        assert group["devices"] == ["py-sim-1"] and group["agg"] == "max"
        assert all(p["devices"] == 1 for p in group["points"])
        with pytest.raises(wrale.InvalidInput):
            fleet.group_telemetry("py-devices", "cpu_temp_c", resolution="raw")
        # Fleet config reaches the device and changes its policy.
        fleet.set_config({"warn_c": 62.0}, "device", "py-sim-1")
        eventually(lambda: dev.thresholds["warn_c"] == 62.0, what="warn_c applied on the device")
        assert dev.desired["warn"] == 62.0
        history = fleet.twin_history("py-sim-1")
        assert any(h["author"] == "user:admin" and "warn_c" in h["summary"] for h in history), history[:5]
        assert fleet.twin_conflicts("py-sim-1") == []
        # A rollout of a desired change reaches the device (canary wave at once).
        rollout = fleet.create_rollout({
            "id": "py-cool",
            "change": {"fan_profile": "cool"},
            "devices": ["py-sim-1"],
            "canary": {"kind": "devices", "devices": ["py-sim-1"]},
        })
        assert rollout["id"] == "py-cool"
        assert "py-cool" in [r["id"] for r in fleet.rollouts()]
        eventually(lambda: dev.desired.get("fan_profile") == "cool", what="rollout change on the device")
        assert fleet.rollout("py-cool")["status"] in ("running", "completed")
        with pytest.raises(wrale.NotFound):
            fleet.rollout("no-such-rollout")
        # Commands: executed on the board, or refused by the device's engine.
        done = fleet.send_command("py-sim-1", {"type": "set_fan_duty", "fan": "fan0", "duty_pct": 100.0}, "test")
        assert done["status"] == "done", done
        assert board.fan_duty("fan0") == 100.0
        # A refusal by the device comes back as fleetd's 422 policy_violation.
        with pytest.raises(wrale.PolicyViolation) as refused:
            fleet.send_command("py-sim-1", {"type": "reboot"}, "test")
        assert refused.value.code == "policy_violation"
        assert refused.value.details is not None and refused.value.details["status"] == 422
        assert refused.value.details.get("rule") == "unsupported", refused.value.details
        # The event stream saw the device.
        eventually(lambda: any(e.get("device") == "py-sim-1" for e in seen), what="events of py-sim-1")
        # Filtered by device and by group: only this device's events.
        for stream_filter in ({"device": "py-sim-1"}, {"group": "py-devices"}):
            with fleet.events(**stream_filter) as only:
                fleet.set_config({"fan_profile": "max"}, "device", "py-sim-1")
                got = [e for e in (only.next(timeout=2.0) for _ in range(5)) if e is not None]
            assert got and {e.get("device") for e in got} == {"py-sim-1"}, (stream_filter, got)
            fleet.set_config({"fan_profile": None}, "device", "py-sim-1")
    finally:
        events.close()
        reader.join(timeout=10)
        dev.stop()
    assert not reader.is_alive(), "close() stops a blocked iterator"
    assert events.ended


def test_enroll_keeps_the_credential_0600_and_reuses_it(fleetd: FleetServer, tmp_path: Path) -> None:
    fleet = wrale.Fleet(fleetd.url, fleetd.token)
    token = fleet.create_enrollment_token(uses=1, expires_in="1h")["token"]
    board = wrale.Board.sim(seed=9)
    path = tmp_path / CREDENTIAL_FILE
    # A refused enrollment stores nothing.
    with pytest.raises(wrale.WraleError):
        wrale.Device.enroll(board, tmp_path, fleet_url=fleetd.url, enrollment_token="wre_bogus", device_id="py-enr")
    assert not path.exists()
    with wrale.Device.enroll(board, tmp_path, fleet_url=fleetd.url, enrollment_token=token,
                             device_id="py-enr", interval=0.05) as dev:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        credential = path.read_text().strip()
        assert credential.startswith("wrd_")
        eventually(lambda: dev.agent_status["connected"], what="first run connected")
    # The token is used up now: a second enroll of the same data dir starts only
    # because it reuses the stored credential (no new enrollment).
    with pytest.raises(wrale.WraleError):
        fleet.enroll(token, "py-enr-2", "pi4b")
    with wrale.Device.enroll(board, tmp_path, fleet_url=fleetd.url, enrollment_token=token,
                             device_id="py-enr", interval=0.05) as dev:
        eventually(lambda: dev.agent_status["connected"], what="second run connected")
    assert path.read_text().strip() == credential
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if "credential" in p.name] == [CREDENTIAL_FILE]
    assert [d["id"] for d in fleet.devices() if d["id"].startswith("py-enr")] == ["py-enr"]


def test_event_stream_next_times_out_and_closes(fleetd: FleetServer) -> None:
    fleet = wrale.Fleet(fleetd.url, fleetd.token)
    # A device nobody has: its stream stays quiet, so next() returns at the timeout.
    with fleet.events(device="py-no-such-device") as quiet:
        started = time.monotonic()
        assert quiet.next(timeout=0.2) is None
        assert time.monotonic() - started < 5
        assert not quiet.ended
    assert quiet.ended and quiet.next(timeout=0.1) is None
    with fleet.events(kinds=["audit"]) as events:
        fleet.create_group("py-next")

        def group_created() -> Optional[dict[str, Any]]:
            event = events.next(timeout=1.0)
            if event is not None and event["data"].get("target") == "group:py-next":
                return event
            return None

        event = eventually(group_created, what="the audit event of the group")
        assert event is not None
        assert event["kind"] == "audit" and event["data"]["action"] == "group.create", event


def test_token_switch(fleetd: FleetServer) -> None:
    fleet = wrale.Fleet(fleetd.url)
    with pytest.raises(wrale.AuthError):
        fleet.whoami()
    fleet.token = fleetd.token
    assert fleet.token == fleetd.token and fleet.whoami()["role"] == "admin"
    fleet.token = None
    with pytest.raises(wrale.AuthError):
        fleet.whoami()


def test_asyncio_client_and_event_stream(fleetd: FleetServer) -> None:
    async def main() -> None:
        fleet = wrale.AsyncFleet(fleetd.url, fleetd.token)
        who, devices = await asyncio.gather(fleet.whoami(), fleet.devices())
        assert who["role"] == "admin"
        assert isinstance(devices, list)
        stream = await fleet.events(kinds=["audit"])
        received: list[dict[str, Any]] = []

        async def consume() -> None:
            async for event in stream:
                received.append(event)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        await fleet.create_group("py-async")
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.1)
        await stream.close()
        await asyncio.wait_for(task, timeout=5)
        assert received and received[0]["kind"] == "audit"

    asyncio.run(main())
