"""An in-process fleet device: a board, the safety engine and the edge agent
running inside this Python program (``wrale_sync::embedded``)."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

from . import _native
from .board import Board

CREDENTIAL_FILE: str = _native.CREDENTIAL_FILE
"""The credential file's name inside a device's data directory."""


class Device:
    """A running device: samples ``board`` every ``interval`` seconds, applies the
    safety engine's actions, keeps its twin (in ``data_dir``) in sync with fleetd
    and ships telemetry. Without a fleet it runs degraded (local only)."""

    def __init__(self, raw: _native.Device) -> None:
        self._raw = raw

    @classmethod
    def start(
        cls,
        board: Board,
        data_dir: Union[str, "os.PathLike[str]"],
        *,
        device_id: str,
        labels: Optional[Mapping[str, str]] = None,
        location: Optional[Mapping[str, str]] = None,
        fleet_url: Optional[str] = None,
        credential: Optional[str] = None,
        interval: float = 1.0,
        policies: Sequence[Union[str, Tuple[str, str]]] = (),
        step_clock: Optional[bool] = None,
    ) -> "Device":
        """Starts the device. ``policies`` are TOML policy layers (text, or
        ``(text, source_name)``). ``step_clock`` (default: on for a sim board)
        advances a sim board's virtual time by ``interval`` per sample."""
        info = {
            "id": device_id,
            "model": board.model,
            "labels": dict(labels or {}),
            "location": dict(location or {}),
            "agent_version": f"wrale-python {_native.__version__}",
        }
        layers = [(p, "<python>") if isinstance(p, str) else (p[0], p[1]) for p in policies]
        raw = _native.Device.start(
            board._raw,
            os.fspath(data_dir),
            json.dumps(info),
            fleet_url,
            credential,
            interval,
            layers,
            step_clock,
        )
        return cls(raw)

    @classmethod
    def enroll(
        cls,
        board: Board,
        data_dir: Union[str, "os.PathLike[str]"],
        *,
        fleet_url: str,
        enrollment_token: str,
        device_id: str,
        labels: Optional[Mapping[str, str]] = None,
        location: Optional[Mapping[str, str]] = None,
        **options: Any,
    ) -> "Device":
        """Enrolls with fleetd (once: the credential is kept in ``data_dir`` as
        :data:`CREDENTIAL_FILE`, mode 0600, and a later call reuses it without
        the enrollment token) and starts the device synced to it."""
        request = {
            "token": enrollment_token,
            "device_id": device_id,
            "model": board.model,
            "labels": dict(labels or {}),
            "location": dict(location or {}),
        }
        credential = _native.Device.load_or_enroll(os.fspath(data_dir), fleet_url, json.dumps(request))
        return cls.start(
            board,
            data_dir,
            device_id=device_id,
            labels=labels,
            location=location,
            fleet_url=fleet_url,
            credential=credential,
            **options,
        )

    @property
    def id(self) -> str:
        return self._raw.id

    @property
    def running(self) -> bool:
        return self._raw.running

    @property
    def status(self) -> dict[str, Any]:
        """Samples taken, last sample and decision, actions applied, alerts, flags."""
        result: dict[str, Any] = json.loads(self._raw.status_json())
        return result

    @property
    def agent_status(self) -> dict[str, Any]:
        """The fleet link: ``mode``, ``connected``, telemetry and sync counters."""
        result: dict[str, Any] = json.loads(self._raw.agent_status_json())
        return result

    @property
    def desired(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._raw.desired_json())
        return result

    @property
    def reported(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._raw.reported_json())
        return result

    @property
    def thresholds(self) -> dict[str, float]:
        """The thermal thresholds of the policy in force."""
        result: dict[str, float] = json.loads(self._raw.thresholds_json())
        return result

    def wait_until(self, predicate: Callable[["Device"], bool], timeout: float = 10.0, poll: float = 0.05) -> bool:
        """Polls ``predicate(self)`` until true or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(poll)
        return predicate(self)

    def stop(self) -> None:
        """Stops sampling and the agent (the twin is saved first). Idempotent."""
        self._raw.stop()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return repr(self._raw)

