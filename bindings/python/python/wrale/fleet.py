"""The fleet client: fleetd's API from Python, blocking (:class:`Fleet`, the GIL
released during every call) or with asyncio (:class:`AsyncFleet`, each call in
a worker thread). The live event stream is an iterator (:class:`EventStream`) or
an async iterator (:class:`AsyncEventStream`); ``close()`` stops it."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator, Mapping, Optional, Sequence

from . import _native


def _j(text: str) -> Any:
    return json.loads(text)


class Fleet:
    """A blocking client of fleetd at ``url`` with a bearer ``token``."""

    def __init__(self, url: str, token: Optional[str] = None) -> None:
        self._raw = _native.Client(url, token)

    @property
    def url(self) -> str:
        return self._raw.url

    @property
    def token(self) -> Optional[str]:
        return self._raw.token

    def ready(self) -> None:
        """Returns once fleetd answers ``/health/ready``."""
        self._raw.ready()

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Logs in; the session token is used from then on."""
        result: dict[str, Any] = _j(self._raw.login(username, password))
        return result

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.whoami())
        return result

    def devices(
        self,
        *,
        labels: Optional[Mapping[str, str]] = None,
        group: Optional[str] = None,
        site: Optional[str] = None,
        rack: Optional[str] = None,
        shelf: Optional[str] = None,
        model: Optional[str] = None,
        status: Optional[str] = None,
        health: Optional[str] = None,
    ) -> list[dict[str, Any]]:
        """Every device matching the filters (all pages)."""
        f: dict[str, Any] = {k: v for k, v in dict(group=group, site=site, rack=rack, shelf=shelf, model=model, status=status, health=health).items() if v is not None}
        if labels:
            f["labels"] = dict(labels)
        result: list[dict[str, Any]] = _j(self._raw.list_devices(json.dumps(f)))
        return result

    def device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.get_device(device_id))
        return result

    def update_device(self, device_id: str, **patch: Any) -> dict[str, Any]:
        """Changes ``labels``, ``location`` or ``group``."""
        result: dict[str, Any] = _j(self._raw.update_device(device_id, json.dumps(patch)))
        return result

    def delete_device(self, device_id: str) -> None:
        self._raw.delete_device(device_id)

    def send_command(self, device_id: str, command: Mapping[str, Any], reason: str = "") -> dict[str, Any]:
        """Sends a command to a connected device and waits for its answer
        (``status``: ``done``, ``refused``, ``failed``)."""
        result: dict[str, Any] = _j(self._raw.send_command(device_id, json.dumps(dict(command)), reason))
        return result

    def groups(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _j(self._raw.list_groups())
        return result

    def create_group(self, group_id: str, name: Optional[str] = None, parent: Optional[str] = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": group_id}
        if name is not None:
            body["name"] = name
        if parent is not None:
            body["parent"] = parent
        result: dict[str, Any] = _j(self._raw.create_group(json.dumps(body)))
        return result

    def group(self, group_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.get_group(group_id))
        return result

    def update_group(self, group_id: str, **patch: Any) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.update_group(group_id, json.dumps(patch)))
        return result

    def delete_group(self, group_id: str) -> None:
        self._raw.delete_group(group_id)

    def twin(self, device_id: str) -> dict[str, Any]:
        """The device's twin as fleetd holds it (``desired``, ``reported``, ...)."""
        result: dict[str, Any] = _j(self._raw.get_twin(device_id))
        return result

    def twin_history(self, device_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _j(self._raw.twin_history(device_id))
        return result

    def twin_conflicts(self, device_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _j(self._raw.twin_conflicts(device_id))
        return result

    def config(self, scope: str = "fleet", scope_id: Optional[str] = None) -> dict[str, Any]:
        """A config layer: ``fleet``, ``group`` + id, ``device`` + id."""
        result: dict[str, Any] = _j(self._raw.get_config(scope, scope_id))
        return result

    def set_config(self, fields: Mapping[str, Any], scope: str = "fleet", scope_id: Optional[str] = None) -> dict[str, Any]:
        """Merges fields into a config layer (``None`` removes one)."""
        result: dict[str, Any] = _j(self._raw.patch_config(scope, json.dumps(dict(fields)), scope_id))
        return result

    def replace_config(self, layer: Mapping[str, Any], scope: str = "fleet", scope_id: Optional[str] = None) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.put_config(scope, json.dumps(dict(layer)), scope_id))
        return result

    def effective_config(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.effective_config(device_id))
        return result

    def telemetry(
        self,
        device_id: str,
        metric: str,
        *,
        from_ms: Optional[int] = None,
        to_ms: Optional[int] = None,
        resolution: str = "auto",
    ) -> dict[str, Any]:
        """One metric of one device over a range (``cpu_temp_c``, ``fan_duty_pct``, ...)."""
        result: dict[str, Any] = _j(self._raw.device_telemetry(device_id, metric, from_ms, to_ms, resolution))
        return result

    def alerts(self, *, state: Optional[str] = None, device: Optional[str] = None, severity: Optional[str] = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _j(self._raw.list_alerts(state, device, severity))
        return result

    def ack_alert(self, alert_id: int) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.ack_alert(alert_id))
        return result

    def clear_alert(self, alert_id: int) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.clear_alert(alert_id))
        return result

    def audit(self, *, actor: Optional[str] = None, target: Optional[str] = None, action: Optional[str] = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _j(self._raw.audit(actor, target, action))
        return result

    def rollouts(self, status: Optional[str] = None) -> list[dict[str, Any]]:
        """Rollouts, newest first (``running``, ``paused``, ``completed``, ...)."""
        result: list[dict[str, Any]] = _j(self._raw.list_rollouts(status))["items"]
        return result

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        """One rollout: ``status``, ``progress``, ``waves``, ``failures``."""
        result: dict[str, Any] = _j(self._raw.get_rollout(rollout_id))
        return result

    def create_rollout(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Starts a rollout of a desired-config ``change`` to ``devices`` or a
        ``group``, canary first, in waves, with health gates."""
        result: dict[str, Any] = _j(self._raw.create_rollout(json.dumps(dict(spec))))
        return result

    def pause_rollout(self, rollout_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.rollout_op(rollout_id, "pause"))
        return result

    def resume_rollout(self, rollout_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.rollout_op(rollout_id, "resume"))
        return result

    def abort_rollout(self, rollout_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.rollout_op(rollout_id, "abort"))
        return result

    def rollback_rollout(self, rollout_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.rollout_op(rollout_id, "rollback"))
        return result

    def create_enrollment_token(
        self,
        *,
        group: Optional[str] = None,
        uses: int = 1,
        expires_in: str = "24h",
        labels: Optional[Mapping[str, str]] = None,
    ) -> dict[str, Any]:
        """A one-time enrollment token for devices (``token`` is in the answer, once)."""
        body: dict[str, Any] = {"uses": uses, "expires_in": expires_in}
        if group is not None:
            body["group"] = group
        if labels:
            body["labels"] = dict(labels)
        result: dict[str, Any] = _j(self._raw.create_enrollment_token(json.dumps(body)))
        return result

    def enroll(
        self,
        token: str,
        device_id: str,
        model: str,
        *,
        labels: Optional[Mapping[str, str]] = None,
        location: Optional[Mapping[str, str]] = None,
        serial: Optional[str] = None,
    ) -> dict[str, Any]:
        """Exchanges an enrollment token for a device credential (``credential``)."""
        body: dict[str, Any] = {
            "token": token,
            "device_id": device_id,
            "model": model,
            "labels": dict(labels or {}),
            "location": dict(location or {}),
        }
        if serial is not None:
            body["serial"] = serial
        result: dict[str, Any] = _j(self._raw.enroll(json.dumps(body)))
        return result

    def events(
        self,
        *,
        device: Optional[str] = None,
        group: Optional[str] = None,
        kinds: Optional[Sequence[str]] = None,
    ) -> "EventStream":
        """Opens the live event stream."""
        return EventStream(self._raw.events(device, group, None if kinds is None else list(kinds)))


class EventStream:
    """Live fleet events as dicts; iterate, and ``close()`` (or leave the
    ``with`` block) to stop. ``close`` may be called from another thread."""

    def __init__(self, raw: _native.EventStream) -> None:
        self._raw = raw

    def next(self, timeout: Optional[float] = None) -> Optional[dict[str, Any]]:
        """The next event, or ``None`` after ``timeout`` seconds or once the stream ended."""
        text = self._raw.next(timeout)
        if text is None:
            return None
        result: dict[str, Any] = json.loads(text)
        return result

    @property
    def ended(self) -> bool:
        return self._raw.ended

    def close(self) -> None:
        """Stops the stream; a waiting :meth:`next` returns ``None``."""
        self._raw.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            event = self.next()
            if event is None:
                return
            yield event

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEventStream:
    """The event stream as an async iterator; ``await close()`` stops it."""

    def __init__(self, stream: EventStream, poll: float = 0.25) -> None:
        self._stream = stream
        self._poll = poll

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> dict[str, Any]:
        # Short waits in a worker thread: a cancelled task never leaves a thread
        # blocked for long, and close() is noticed within one poll.
        while True:
            event = await asyncio.to_thread(self._stream.next, self._poll)
            if event is not None:
                return event
            if self._stream.ended:
                raise StopAsyncIteration

    async def close(self) -> None:
        await asyncio.to_thread(self._stream.close)

    async def __aenter__(self) -> "AsyncEventStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncFleet:
    """The fleet client for asyncio: the same calls as :class:`Fleet`, awaitable
    (each runs in a worker thread with the GIL released)."""

    def __init__(self, url: str, token: Optional[str] = None) -> None:
        self.sync = Fleet(url, token)

    async def ready(self) -> None:
        await asyncio.to_thread(self.sync.ready)

    async def login(self, username: str, password: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.login, username, password)

    async def whoami(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.whoami)

    async def devices(self, **filters: Any) -> list[dict[str, Any]]:
        return await asyncio.to_thread(lambda: self.sync.devices(**filters))

    async def device(self, device_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.device, device_id)

    async def groups(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.groups)

    async def create_group(self, group_id: str, name: Optional[str] = None, parent: Optional[str] = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.create_group, group_id, name, parent)

    async def twin(self, device_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.twin, device_id)

    async def config(self, scope: str = "fleet", scope_id: Optional[str] = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.config, scope, scope_id)

    async def set_config(self, fields: Mapping[str, Any], scope: str = "fleet", scope_id: Optional[str] = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.set_config, fields, scope, scope_id)

    async def telemetry(self, device_id: str, metric: str, **query: Any) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.sync.telemetry(device_id, metric, **query))

    async def alerts(self, **filters: Any) -> list[dict[str, Any]]:
        return await asyncio.to_thread(lambda: self.sync.alerts(**filters))

    async def audit(self, **filters: Any) -> list[dict[str, Any]]:
        return await asyncio.to_thread(lambda: self.sync.audit(**filters))

    async def rollouts(self, status: Optional[str] = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.rollouts, status)

    async def create_rollout(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.create_rollout, spec)

    async def send_command(self, device_id: str, command: Mapping[str, Any], reason: str = "") -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.send_command, device_id, command, reason)

    async def events(self, *, device: Optional[str] = None, group: Optional[str] = None, kinds: Optional[Sequence[str]] = None) -> AsyncEventStream:
        """Opens the live event stream as an async iterator."""
        stream = await asyncio.to_thread(lambda: self.sync.events(device=device, group=group, kinds=kinds))
        return AsyncEventStream(stream)
