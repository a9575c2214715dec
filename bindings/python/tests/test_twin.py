"""Twins: create, load/save, desired/reported, merge, sync messages, history,
conflicts, rollback, and their errors."""

from __future__ import annotations

import pytest

import wrale


def test_create_edit_report_save_load() -> None:
    twin = wrale.Twin.create("pi-1", "pi4b", labels={"role": "cam"}, now_ms=1_000)
    assert twin.device == "pi-1"
    assert twin.epoch == 0
    assert twin.meta["labels"] == {"role": "cam"}
    assert twin.edit_desired({"warn": 70.0, "fan_profile": "cool"}, author="user:ada", now_ms=2_000)
    assert not twin.edit_desired({"warn": 70.0}, author="user:ada", now_ms=2_500)
    assert twin.report({"cpu_temp_c": 51.0}, now_ms=3_000)
    assert twin.desired["warn"] == 70.0 and twin.desired["fan_profile"] == "cool"
    assert twin.reported["readings"]["cpu_temp_c"] == 51.0
    assert twin.fields("desired")["warn_c"] == 70.0
    copy = wrale.Twin.load(twin.save(), "user:bob")
    assert copy.heads == twin.heads
    assert copy.desired == twin.desired
    history = twin.history()
    assert [h["author"]["kind"] for h in history][-2:] == ["user", "device"]
    assert history[-2]["at_ms"] == 2_000


def test_rollback_and_raw_fields() -> None:
    twin = wrale.Twin.create("pi-2", now_ms=0)
    twin.edit_desired({"warn": 70.0}, author="user:ada", now_ms=1)
    version = twin.heads
    twin.set_field("desired.warn_c", 60.0, author="user:ada", now_ms=2)
    assert twin.desired["warn"] == 60.0
    assert twin.rollback(version, author="user:ada", now_ms=3)
    assert twin.desired["warn"] == 70.0
    with pytest.raises(wrale.InvalidInput) as e:
        twin.set_field("desired.colour", "red", author="user:ada", now_ms=4)
    assert e.value.code == "unknown_field"
    with pytest.raises(wrale.InvalidInput):
        twin.edit_desired({"warn": "hot"}, author="user:ada")
    # A twin key is not a field of the config: refused, naming it.
    with pytest.raises(wrale.InvalidInput, match="warn_c"):
        twin.edit_desired({"warn_c": 63.0}, author="user:ada")
    with pytest.raises(wrale.InvalidInput):
        twin.edit_desired({"warn": 1.0}, author="nobody")


def test_merge_of_concurrent_edits() -> None:
    a = wrale.Twin.create("pi-3", now_ms=0)
    b = wrale.Twin.load(a.save(), "user:bob")
    a.edit_desired({"fan_profile": "quiet"}, author="user:ada", now_ms=10)
    b.edit_desired({"warn": 66.0}, author="user:bob", now_ms=11)
    a.merge(b)
    b.merge(a)
    assert a.heads == b.heads
    assert a.desired["fan_profile"] == "quiet" and a.desired["warn"] == 66.0
    # Concurrent writes of one field: resolved the same way on both, shown as a conflict.
    a.edit_desired({"warn": 61.0}, author="user:ada", now_ms=20)
    b.edit_desired({"warn": 64.0}, author="user:bob", now_ms=21)
    a.merge(b)
    b.merge(a)
    assert a.desired["warn"] == b.desired["warn"]
    conflicts = a.conflicts()
    assert [c["field"] for c in conflicts] == ["desired.warn_c"]
    assert {v["value"] for v in conflicts[0]["values"]} == {61.0, 64.0}
    # Twins of different devices do not merge.
    with pytest.raises(wrale.ConflictError) as e:
        a.merge(wrale.Twin.create("pi-4", now_ms=0))
    assert e.value.code == "wrong_device"


def test_resolve_a_manual_conflict() -> None:
    # Two copies of one twin; an operator and the local operator write the
    # device's policy overrides (a field with the manual policy) concurrently.
    fleet = wrale.Twin.create("pi-6", now_ms=0)
    device = wrale.Twin.load(fleet.save(), "device:pi-6")
    fleet.edit_desired({"policy_overrides": "[thermal]\nwarn_c = 60.0\n"}, author="user:ada", now_ms=10)
    device.edit_desired({"policy_overrides": "[thermal]\nwarn_c = 58.0\n"}, author="local:bob", now_ms=11)
    fleet.merge(device)
    device.merge(fleet)
    conflicts = fleet.conflicts()
    assert [(c["field"], c["policy"]) for c in conflicts] == [("desired.policy_overrides", "manual")]
    authors = {(v["author"]["kind"], v["author"]["name"]) for v in conflicts[0]["values"]}
    assert authors == {("user", "ada"), ("local_operator", "bob")}
    assert device.conflicts() == conflicts, "both copies see the same conflict"

    # Resolved on one copy: the chosen value wins everywhere once merged.
    chosen = "[thermal]\nwarn_c = 59.0\n"
    change = fleet.resolve("desired.policy_overrides", chosen, author="user:carol", now_ms=20)
    assert change in fleet.heads
    assert fleet.conflicts() == []
    assert fleet.desired["policy_overrides"] == chosen
    device.merge(fleet)
    assert device.conflicts() == [] and device.desired["policy_overrides"] == chosen
    assert device.heads == fleet.heads
    # The history shows the resolution: its hash, author, time and what it wrote.
    last = [h for h in device.history() if h["hash"] == change]
    assert len(last) == 1
    assert last[0]["author"] == {"kind": "user", "name": "carol"}
    assert last[0]["at_ms"] == 20
    assert "policy_overrides" in last[0]["summary"]
    # Bad input names the problem.
    with pytest.raises(wrale.InvalidInput) as bad_author:
        fleet.resolve("desired.policy_overrides", chosen, author="carol", now_ms=21)
    assert bad_author.value.code == "invalid_author"
    with pytest.raises(wrale.InvalidInput):
        fleet.resolve("policy_overrides", chosen, author="user:carol", now_ms=21)


def test_sync_sessions_converge() -> None:
    device = wrale.Twin.create("pi-5", now_ms=0)
    fleet = wrale.Twin.load(device.save(), "fleet:fleetd")
    device.report({"cpu_temp_c": 47.0}, now_ms=5)
    fleet.edit_desired({"warn": 64.0}, author="fleet:fleetd", now_ms=6)
    d, f = wrale.SyncSession(device, "fleet"), wrale.SyncSession(fleet, "device")
    for _ in range(10):
        quiet = True
        for src, dst in ((d, f), (f, d)):
            frame = src.generate()
            if frame is not None:
                quiet = False
                dst.receive(frame, now_ms=7)
        if quiet:
            break
    assert device.heads == fleet.heads
    assert device.desired["warn"] == 64.0
    assert fleet.reported["readings"]["cpu_temp_c"] == 47.0
    with pytest.raises(wrale.SyncError) as e:
        d.receive(b"\x00garbage", now_ms=8)
    assert e.value.code in ("bad_frame", "decode_error")


def test_load_garbage_is_a_sync_error() -> None:
    with pytest.raises(wrale.SyncError) as e:
        wrale.Twin.load(b"not a twin", "user:ada")
    assert e.value.code in ("decode_error", "automerge", "schema")
