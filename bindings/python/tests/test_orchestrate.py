"""The scheduler and the optimizer over Python-hosted devices: a fleetd whose
analyzer and scheduler run every 200 ms, two simulated boards on the wall clock
(one cool, one in a hot corner under load), shipping real telemetry. The
analysis sees both, the optimizer recommends a quieter fan for the cool one
(its fan runs at `max`), an accepted recommendation reaches the device, and a
workload goes to the device with headroom."""

from __future__ import annotations

import datetime
from typing import Any, Iterator

import pytest

import wrale
from conftest import FleetServer
from test_fleet_e2e import eventually


@pytest.fixture(scope="module")
def devices(fleetd_fast: FleetServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, wrale.Device]]:
    tmp_path = tmp_path_factory.mktemp("devices")
    fleet = wrale.Fleet(fleetd_fast.url, fleetd_fast.token)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    running: dict[str, wrale.Device] = {}
    try:
        for i, (device_id, ambient, load) in enumerate((("py-cool", 25.0, 20.0), ("py-hot", 40.0, 90.0))):
            token = fleet.create_enrollment_token(uses=1, expires_in="1h")["token"]
            # The virtual clock starts at the wall clock, so fleetd's analysis
            # window (the last hour) holds the points.
            board = wrale.Board.sim(seed=i, ambient_c=ambient, load_pct=load, start=now)
            running[device_id] = wrale.Device.enroll(
                board, tmp_path / device_id, fleet_url=fleetd_fast.url, enrollment_token=token,
                device_id=device_id, location={"site": "py-lab", "rack": f"r{i}"}, interval=0.05,
            )
        yield running
    finally:
        for dev in running.values():
            dev.stop()


def test_analysis_recommendation_and_placement(fleetd_fast: FleetServer, devices: dict[str, wrale.Device]) -> None:
    fleet = wrale.Fleet(fleetd_fast.url, fleetd_fast.token)
    fleet.set_config({"fan_profile": "max"}, "device", "py-cool")
    eventually(lambda: devices["py-cool"].desired.get("fan_profile") == "max", what="max fan on py-cool")

    # The analyzer's pass covers both devices.
    analysed = eventually(lambda: sorted(d["device"] for d in fleet.fleet_analysis()["devices"]) == ["py-cool", "py-hot"],
                          what="both devices analysed")
    assert analysed
    report = fleet.device_analysis("py-hot")
    assert report["device"] == "py-hot" and report["health"], report
    assert isinstance(fleet.hot_spots()["items"], list)

    # The optimizer: py-cool's fan can run quieter and stay below its target.
    def quieter() -> Any:
        return [r for r in fleet.recommendations()["items"]
                if r["kind"] == "fan_profile" and r["detail"]["device"] == "py-cool"]

    rec = eventually(quieter, what="a fan recommendation for py-cool")[0]
    assert rec["detail"]["from"] == "max" and rec["detail"]["to"] != "max", rec
    assert rec["detail"]["power_after_w"] < rec["detail"]["power_before_w"]
    accepted = fleet.accept_recommendation(rec["id"])
    assert accepted["accepted"]["id"] == rec["id"]
    to = rec["detail"]["to"]
    eventually(lambda: devices["py-cool"].desired.get("fan_profile") == to, what="the accepted profile on the device")
    assert "fleet:fleetd/optimizer" in [h["author"] for h in fleet.twin_history("py-cool")]
    with pytest.raises(wrale.NotFound):
        fleet.accept_recommendation(rec["id"])
    assert fleet.audit(action="recommendation.accept")[0]["target"].endswith("py-cool")

    # A workload goes to the device with headroom; the hot one is rejected.
    created = fleet.create_workload("py-cam", cpu_pct=20.0, power_w=2.0, command="cam.service")
    assert [p["device"] for p in created["placements"]] == ["py-cool"], created
    candidates = {c["device"]: c for c in created["placements"][0]["decision"]["candidates"]}
    assert candidates["py-cool"]["feasible"] is True
    assert candidates["py-hot"]["feasible"] is False
    # Rejected with the scheduler's reason: no headroom in its hot corner, or
    # unschedulable when the analysis already rates its health too low.
    assert {r["code"] for r in candidates["py-hot"]["reasons"]} & {"headroom", "unschedulable"}, candidates
    assert [p["workload"] for p in fleet.placements(device="py-cool")["items"]] == ["py-cam"]
    assert fleet.placements(device="py-hot")["items"] == []
    assert fleet.workload("py-cam")["placements"][0]["device"] == "py-cool"
    eventually(lambda: fleet.twin("py-cool")["desired"].get("workload.py-cam") is True,
               what="the workload switch in py-cool's twin")
    # Deleted: the replica is stopped (its switch written false).
    fleet.delete_workload("py-cam")
    eventually(lambda: fleet.twin("py-cool")["desired"].get("workload.py-cam") is False,
               what="the workload switch off")
    assert fleet.placements()["items"] == []


def test_fleet_alerts_silences_and_dead_letters(fleetd_fast: FleetServer, devices: dict[str, wrale.Device]) -> None:
    fleet = wrale.Fleet(fleetd_fast.url, fleetd_fast.token)
    # The rules of this fleetd fire on the analysed devices.
    firing = eventually(lambda: [a for a in fleet.fleet_alerts() if a["rule"] == "health_low"],
                        what="a firing health_low fleet alert")
    assert firing[0]["status"] in ("firing", "acknowledged") and firing[0]["silenced_by"] == [], firing
    # A silence of the rule covers its alerts.
    silence = fleet.create_silence(rule="health_low", duration="1h", comment="py test")
    eventually(lambda: all(silence["id"] in a["silenced_by"] for a in fleet.fleet_alerts() if a["rule"] == "health_low"),
               what="the alerts silenced")
    fleet.delete_silence(silence["id"])
    # Their notifications went to a webhook nobody listens on: dead letters.
    dead = eventually(lambda: fleet.dead_letters(), what="a dead letter")
    letter = dead[0]
    assert letter["webhook"] == "nobody" and letter["status"] == "dead_letter", letter
    assert len(letter["attempts"]) == 1
    fleet.delete_dead_letter(letter["id"])
    assert letter["id"] not in [d["id"] for d in fleet.dead_letters()]
    with pytest.raises(wrale.NotFound):
        fleet.delete_dead_letter(letter["id"])
