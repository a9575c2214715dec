"""Device twins (a CRDT document per device: meta, desired, reported) and the
sans-I/O sync protocol."""

from __future__ import annotations

import json
import time
from typing import Any, Mapping, Optional

from . import _native


def _now_ms() -> int:
    return int(time.time() * 1000)


class Twin:
    """A device twin. Writes name their ``author`` as ``kind:name``
    (``user:ada``, ``device:pi-1``, ``local:bob``, ``fleet:fleetd``)."""

    def __init__(self, raw: _native.Twin) -> None:
        self._raw = raw

    @classmethod
    def create(
        cls,
        device_id: str,
        model: str = "pi4b",
        *,
        author: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        now_ms: Optional[int] = None,
    ) -> "Twin":
        """A new twin for a device."""
        info = {"id": device_id, "model": model, "labels": dict(labels or {})}
        return cls(_native.Twin(json.dumps(info), author or f"device:{device_id}", _now_ms() if now_ms is None else now_ms))

    @classmethod
    def load(cls, data: bytes, author: str) -> "Twin":
        """A twin from :meth:`save`'s bytes."""
        return cls(_native.Twin.load(data, author))

    def save(self) -> bytes:
        """The whole document."""
        return self._raw.save()

    @property
    def device(self) -> str:
        return self._raw.device

    @property
    def epoch(self) -> int:
        """The compaction epoch (0 until the history is compacted)."""
        return self._raw.epoch

    @property
    def heads(self) -> list[str]:
        """The current version (change hashes)."""
        return self._raw.heads()

    @property
    def meta(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._raw.meta_json())
        return result

    @property
    def desired(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._raw.desired_json())
        return result

    @property
    def reported(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._raw.reported_json())
        return result

    def fields(self, section: str) -> dict[str, Any]:
        """The raw flat fields of ``meta``, ``desired`` or ``reported``."""
        result: dict[str, Any] = json.loads(self._raw.fields_json(section))
        return result

    def edit_desired(self, patch: Mapping[str, Any], *, author: str, now_ms: Optional[int] = None) -> bool:
        """Edits ``desired`` (``{"warn": 70.0, "fan_profile": "cool"}``; ``None`` removes a field)."""
        return self._raw.edit_desired(json.dumps(dict(patch)), author, _now_ms() if now_ms is None else now_ms)

    def set_field(self, path: str, value: Any, *, author: str, now_ms: Optional[int] = None) -> bool:
        """Sets (``None``: deletes) one raw field ``section.key``."""
        value_json = None if value is None else json.dumps(value)
        return self._raw.set_field(path, value_json, author, _now_ms() if now_ms is None else now_ms)

    def report(self, readings: Mapping[str, float], *, now_ms: Optional[int] = None) -> bool:
        """Reports readings (``{"cpu_temp_c": 51.0}``) as the local author."""
        return self._raw.report(json.dumps(dict(readings)), _now_ms() if now_ms is None else now_ms)

    def merge(self, other: "Twin") -> None:
        """Merges another copy of the same device's twin into this one."""
        self._raw.merge(other._raw)

    def history(self) -> list[dict[str, Any]]:
        """Every change: ``hash``, ``author``, ``at_ms``, ``summary``."""
        result: list[dict[str, Any]] = json.loads(self._raw.history_json())
        return result

    def rollback(self, version: list[str], *, author: str, now_ms: Optional[int] = None) -> bool:
        """Returns to the state right after ``version`` (as a new change)."""
        return self._raw.rollback(list(version), author, _now_ms() if now_ms is None else now_ms)

    def conflicts(self) -> list[dict[str, Any]]:
        """Fields holding concurrent values: ``field``, ``policy``, ``values``, ``visible``."""
        result: list[dict[str, Any]] = json.loads(self._raw.conflicts_json())
        return result

    def resolve(self, path: str, value: Any, *, author: str, now_ms: Optional[int] = None) -> str:
        """Resolves a conflict on ``section.key``; returns the change hash."""
        return self._raw.resolve(path, json.dumps(value), author, _now_ms() if now_ms is None else now_ms)

    def __repr__(self) -> str:
        return repr(self._raw)


class SyncSession:
    """One side of the sync protocol with one peer: frames out with
    :meth:`generate`, frames in with :meth:`receive`; any transport moves them."""

    def __init__(self, twin: Twin, peer: str) -> None:
        self._twin = twin
        self._raw = _native.SyncSession(twin._raw, peer)

    def generate(self) -> Optional[bytes]:
        """The next frame for the peer, or ``None`` when it is up to date."""
        return self._raw.generate(self._twin._raw)

    def receive(self, frame: bytes, *, now_ms: Optional[int] = None) -> bool:
        """Applies a frame from the peer; returns whether the twin changed."""
        return self._raw.receive(self._twin._raw, frame, _now_ms() if now_ms is None else now_ms)
