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
        """The bearer token in use (a session token after :meth:`login`)."""
        return self._raw.token

    @token.setter
    def token(self, token: Optional[str]) -> None:
        self._raw.token = token

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
        """Changes ``labels``, ``location`` or ``group`` (``group=None`` takes the
        device out of its group); any other keyword raises ``InvalidInput``."""
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
        """Changes ``name`` or ``parent`` (``parent=None`` makes it a root; a
        cycle raises ``ConflictError``)."""
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
        """The device's merged config: ``fields`` maps each name to its ``value``
        and the ``layer`` it came from (``fleet``, ``group:<id>``, ``device:<id>``)."""
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

    def logout(self) -> None:
        """Revokes the session token in use (from :meth:`login`) and forgets it."""
        self._raw.logout()

    # Users and API tokens.

    def users(self) -> list[dict[str, Any]]:
        """Every user: ``name``, ``role``, ``created_at`` (admin)."""
        result: list[dict[str, Any]] = _j(self._raw.list_users())
        return result

    def user(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.get_user(name))
        return result

    def create_user(self, name: str, password: str, role: str = "viewer") -> dict[str, Any]:
        """Creates a user with a role: ``viewer``, ``operator`` or ``admin`` (admin)."""
        result: dict[str, Any] = _j(self._raw.create_user(json.dumps({"name": name, "password": password, "role": role})))
        return result

    def update_user(self, name: str, *, password: Optional[str] = None, role: Optional[str] = None) -> dict[str, Any]:
        """Changes a user's password or role (admin)."""
        patch = {k: v for k, v in (("password", password), ("role", role)) if v is not None}
        result: dict[str, Any] = _j(self._raw.update_user(name, json.dumps(patch)))
        return result

    def delete_user(self, name: str) -> None:
        self._raw.delete_user(name)

    def tokens(self) -> list[dict[str, Any]]:
        """The caller's API tokens (every token for an admin), without secrets."""
        result: list[dict[str, Any]] = _j(self._raw.list_tokens())
        return result

    def create_token(self, name: str, *, role: Optional[str] = None, expires_in: Optional[str] = None) -> dict[str, Any]:
        """A new API token (role at most the caller's; ``expires_in`` like ``"30d"``).
        The secret (``token``) is in the answer, once."""
        body = {k: v for k, v in (("name", name), ("role", role), ("expires_in", expires_in)) if v is not None}
        result: dict[str, Any] = _j(self._raw.create_token(json.dumps(body)))
        return result

    def revoke_token(self, token_id: str) -> None:
        """Revokes an API token by its ``id``."""
        self._raw.revoke_token(token_id)

    def enrollment_tokens(self) -> list[dict[str, Any]]:
        """Every enrollment token (admin), without secrets."""
        result: list[dict[str, Any]] = _j(self._raw.list_enrollment_tokens())
        return result

    def delete_enrollment_token(self, token_id: str) -> None:
        self._raw.delete_enrollment_token(token_id)

    # Devices: revocation and where they are.

    def revoke_device(self, device_id: str) -> dict[str, Any]:
        """Revokes a device's credential and closes its live session (admin)."""
        result: dict[str, Any] = _j(self._raw.revoke_device(device_id))
        return result

    def neighbours(self, device_id: str) -> dict[str, Any]:
        """The devices on the same shelf and rack: ``same_shelf``, ``same_rack``."""
        result: dict[str, Any] = _j(self._raw.neighbours(device_id))
        return result

    def topology(self) -> dict[str, Any]:
        """Sites, racks, shelves and their device ids."""
        result: dict[str, Any] = _j(self._raw.topology())
        return result

    # Twins held by fleetd.

    def rollback_twin(self, device_id: str, version: Any) -> dict[str, Any]:
        """Writes the desired values of ``version`` (as :meth:`twin_history` lists
        it) as a new change."""
        result: dict[str, Any] = _j(self._raw.twin_rollback(device_id, json.dumps(version)))
        return result

    def resolve_conflict(self, device_id: str, field: str, value: Any) -> dict[str, Any]:
        """Picks ``value`` for a manual-policy conflict on ``field``."""
        result: dict[str, Any] = _j(self._raw.resolve_conflict(device_id, field, json.dumps(value)))
        return result

    def group_telemetry(
        self,
        group_id: str,
        metric: str,
        *,
        from_ms: Optional[int] = None,
        to_ms: Optional[int] = None,
        resolution: str = "auto",
        agg: Optional[str] = None,
    ) -> dict[str, Any]:
        """One metric across a group and its subgroups (``agg``: ``avg``, ``min``, ``max``)."""
        result: dict[str, Any] = _j(self._raw.group_telemetry(group_id, metric, from_ms, to_ms, resolution, agg))
        return result

    def raise_alert(
        self,
        code: str,
        severity: str,
        message: str,
        *,
        device: Optional[str] = None,
        key: Optional[str] = None,
    ) -> dict[str, Any]:
        """Raises an alert (``severity``: ``info``, ``warning``, ``critical``); an
        active alert with the same key is returned instead of a new one."""
        body = {k: v for k, v in (("code", code), ("severity", severity), ("message", message), ("device", device), ("key", key)) if v is not None}
        result: dict[str, Any] = _j(self._raw.raise_alert(json.dumps(body)))
        return result

    # Analysis and fleet alerting.

    def fleet_analysis(self) -> dict[str, Any]:
        """The analyzer's latest pass: health per device and per scope, anomalies, hot spots."""
        result: dict[str, Any] = _j(self._raw.fleet_analysis())
        return result

    def device_analysis(self, device_id: str) -> dict[str, Any]:
        """The latest analysis of one device (``NotFound`` before it had telemetry)."""
        result: dict[str, Any] = _j(self._raw.device_analysis(device_id))
        return result

    def hot_spots(self) -> dict[str, Any]:
        result: dict[str, Any] = _j(self._raw.hot_spots())
        return result

    def fleet_alerts(self) -> list[dict[str, Any]]:
        """The open fleet alerts of the alert book."""
        result: list[dict[str, Any]] = _j(self._raw.fleet_alerts())
        return result

    def silences(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _j(self._raw.list_silences())
        return result

    def create_silence(
        self,
        *,
        rule: Optional[str] = None,
        device: Optional[str] = None,
        key_prefix: Optional[str] = None,
        duration: Optional[str] = None,
        until_ms: Optional[int] = None,
        comment: str = "",
    ) -> dict[str, Any]:
        """Silences fleet alerts matching ``rule``, ``device`` or ``key_prefix``
        for ``duration`` (``"2h"``) or until ``until_ms``."""
        body: dict[str, Any] = {k: v for k, v in (("rule", rule), ("device", device), ("key_prefix", key_prefix), ("duration", duration), ("until", until_ms)) if v is not None}
        if comment:
            body["comment"] = comment
        result: dict[str, Any] = _j(self._raw.create_silence(json.dumps(body)))
        return result

    def delete_silence(self, silence_id: str) -> None:
        self._raw.delete_silence(silence_id)

    def dead_letters(self) -> list[dict[str, Any]]:
        """Webhook deliveries given up."""
        result: list[dict[str, Any]] = _j(self._raw.dead_letters())
        return result

    def delete_dead_letter(self, letter_id: int) -> None:
        self._raw.delete_dead_letter(letter_id)

    # Orchestration: workloads, placements, recommendations.

    def workloads(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _j(self._raw.list_workloads())["items"]
        return result

    def workload(self, name: str) -> dict[str, Any]:
        """One workload and its placements: ``workload``, ``placements``."""
        result: dict[str, Any] = _j(self._raw.get_workload(name))
        return result

    def create_workload(
        self,
        name: str,
        *,
        cpu_pct: float,
        power_w: float,
        command: Optional[str] = None,
        replicas: int = 1,
        priority: int = 0,
        constraints: Optional[Mapping[str, Any]] = None,
    ) -> dict[str, Any]:
        """Declares a workload and runs a scheduler pass: ``workload``, its
        ``placements`` and its replicas still ``pending`` (with why).
        ``constraints``: ``labels``, ``models``, ``anti_affinity``, ``spread_racks``."""
        body: dict[str, Any] = {"name": name, "cpu_pct": cpu_pct, "power_w": power_w, "replicas": replicas, "priority": priority}
        if command is not None:
            body["command"] = command
        if constraints is not None:
            body["constraints"] = dict(constraints)
        result: dict[str, Any] = _j(self._raw.create_workload(json.dumps(body)))
        return result

    def delete_workload(self, name: str) -> dict[str, Any]:
        """Deletes a workload; its replicas are stopped (``deleted``, ``decisions``)."""
        result: dict[str, Any] = _j(self._raw.delete_workload(name))
        return result

    def placements(self, *, workload: Optional[str] = None, device: Optional[str] = None) -> dict[str, Any]:
        """``items`` (placed replicas with their decisions), ``pending``, ``last_pass``."""
        result: dict[str, Any] = _j(self._raw.list_placements(workload, device))
        return result

    def recommendations(self) -> dict[str, Any]:
        """The optimizer's plan: ``items`` (``id``, ``kind``, ``detail``), ``expected``, ``auto_apply``."""
        result: dict[str, Any] = _j(self._raw.list_recommendations())
        return result

    def accept_recommendation(self, recommendation_id: str) -> dict[str, Any]:
        """Applies a recommendation of the current plan (``NotFound`` once it is gone)."""
        result: dict[str, Any] = _j(self._raw.accept_recommendation(recommendation_id))
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
        """:meth:`Fleet.ready`, awaitable."""
        await asyncio.to_thread(self.sync.ready)

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """:meth:`Fleet.login`, awaitable."""
        return await asyncio.to_thread(self.sync.login, username, password)

    async def whoami(self) -> dict[str, Any]:
        """:meth:`Fleet.whoami`, awaitable."""
        return await asyncio.to_thread(self.sync.whoami)

    async def devices(
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
        """:meth:`Fleet.devices`, awaitable."""
        return await asyncio.to_thread(self.sync.devices, labels=labels, group=group, site=site, rack=rack, shelf=shelf, model=model, status=status, health=health)

    async def device(self, device_id: str) -> dict[str, Any]:
        """:meth:`Fleet.device`, awaitable."""
        return await asyncio.to_thread(self.sync.device, device_id)

    async def update_device(self, device_id: str, **patch: Any) -> dict[str, Any]:
        """:meth:`Fleet.update_device`, awaitable."""
        return await asyncio.to_thread(self.sync.update_device, device_id, **patch)

    async def delete_device(self, device_id: str) -> None:
        """:meth:`Fleet.delete_device`, awaitable."""
        await asyncio.to_thread(self.sync.delete_device, device_id)

    async def send_command(self, device_id: str, command: Mapping[str, Any], reason: str = "") -> dict[str, Any]:
        """:meth:`Fleet.send_command`, awaitable."""
        return await asyncio.to_thread(self.sync.send_command, device_id, command, reason)

    async def groups(self) -> list[dict[str, Any]]:
        """:meth:`Fleet.groups`, awaitable."""
        return await asyncio.to_thread(self.sync.groups)

    async def create_group(self, group_id: str, name: Optional[str] = None, parent: Optional[str] = None) -> dict[str, Any]:
        """:meth:`Fleet.create_group`, awaitable."""
        return await asyncio.to_thread(self.sync.create_group, group_id, name, parent)

    async def group(self, group_id: str) -> dict[str, Any]:
        """:meth:`Fleet.group`, awaitable."""
        return await asyncio.to_thread(self.sync.group, group_id)

    async def update_group(self, group_id: str, **patch: Any) -> dict[str, Any]:
        """:meth:`Fleet.update_group`, awaitable."""
        return await asyncio.to_thread(self.sync.update_group, group_id, **patch)

    async def delete_group(self, group_id: str) -> None:
        """:meth:`Fleet.delete_group`, awaitable."""
        await asyncio.to_thread(self.sync.delete_group, group_id)

    async def twin(self, device_id: str) -> dict[str, Any]:
        """:meth:`Fleet.twin`, awaitable."""
        return await asyncio.to_thread(self.sync.twin, device_id)

    async def twin_history(self, device_id: str) -> list[dict[str, Any]]:
        """:meth:`Fleet.twin_history`, awaitable."""
        return await asyncio.to_thread(self.sync.twin_history, device_id)

    async def twin_conflicts(self, device_id: str) -> list[dict[str, Any]]:
        """:meth:`Fleet.twin_conflicts`, awaitable."""
        return await asyncio.to_thread(self.sync.twin_conflicts, device_id)

    async def config(self, scope: str = "fleet", scope_id: Optional[str] = None) -> dict[str, Any]:
        """:meth:`Fleet.config`, awaitable."""
        return await asyncio.to_thread(self.sync.config, scope, scope_id)

    async def set_config(self, fields: Mapping[str, Any], scope: str = "fleet", scope_id: Optional[str] = None) -> dict[str, Any]:
        """:meth:`Fleet.set_config`, awaitable."""
        return await asyncio.to_thread(self.sync.set_config, fields, scope, scope_id)

    async def replace_config(self, layer: Mapping[str, Any], scope: str = "fleet", scope_id: Optional[str] = None) -> dict[str, Any]:
        """:meth:`Fleet.replace_config`, awaitable."""
        return await asyncio.to_thread(self.sync.replace_config, layer, scope, scope_id)

    async def effective_config(self, device_id: str) -> dict[str, Any]:
        """:meth:`Fleet.effective_config`, awaitable."""
        return await asyncio.to_thread(self.sync.effective_config, device_id)

    async def telemetry(
        self,
        device_id: str,
        metric: str,
        *,
        from_ms: Optional[int] = None,
        to_ms: Optional[int] = None,
        resolution: str = "auto",
    ) -> dict[str, Any]:
        """:meth:`Fleet.telemetry`, awaitable."""
        return await asyncio.to_thread(self.sync.telemetry, device_id, metric, from_ms=from_ms, to_ms=to_ms, resolution=resolution)

    async def alerts(self, *, state: Optional[str] = None, device: Optional[str] = None, severity: Optional[str] = None) -> list[dict[str, Any]]:
        """:meth:`Fleet.alerts`, awaitable."""
        return await asyncio.to_thread(self.sync.alerts, state=state, device=device, severity=severity)

    async def ack_alert(self, alert_id: int) -> dict[str, Any]:
        """:meth:`Fleet.ack_alert`, awaitable."""
        return await asyncio.to_thread(self.sync.ack_alert, alert_id)

    async def clear_alert(self, alert_id: int) -> dict[str, Any]:
        """:meth:`Fleet.clear_alert`, awaitable."""
        return await asyncio.to_thread(self.sync.clear_alert, alert_id)

    async def audit(self, *, actor: Optional[str] = None, target: Optional[str] = None, action: Optional[str] = None) -> list[dict[str, Any]]:
        """:meth:`Fleet.audit`, awaitable."""
        return await asyncio.to_thread(self.sync.audit, actor=actor, target=target, action=action)

    async def rollouts(self, status: Optional[str] = None) -> list[dict[str, Any]]:
        """:meth:`Fleet.rollouts`, awaitable."""
        return await asyncio.to_thread(self.sync.rollouts, status)

    async def rollout(self, rollout_id: str) -> dict[str, Any]:
        """:meth:`Fleet.rollout`, awaitable."""
        return await asyncio.to_thread(self.sync.rollout, rollout_id)

    async def create_rollout(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`Fleet.create_rollout`, awaitable."""
        return await asyncio.to_thread(self.sync.create_rollout, spec)

    async def pause_rollout(self, rollout_id: str) -> dict[str, Any]:
        """:meth:`Fleet.pause_rollout`, awaitable."""
        return await asyncio.to_thread(self.sync.pause_rollout, rollout_id)

    async def resume_rollout(self, rollout_id: str) -> dict[str, Any]:
        """:meth:`Fleet.resume_rollout`, awaitable."""
        return await asyncio.to_thread(self.sync.resume_rollout, rollout_id)

    async def abort_rollout(self, rollout_id: str) -> dict[str, Any]:
        """:meth:`Fleet.abort_rollout`, awaitable."""
        return await asyncio.to_thread(self.sync.abort_rollout, rollout_id)

    async def rollback_rollout(self, rollout_id: str) -> dict[str, Any]:
        """:meth:`Fleet.rollback_rollout`, awaitable."""
        return await asyncio.to_thread(self.sync.rollback_rollout, rollout_id)

    async def create_enrollment_token(
        self,
        *,
        group: Optional[str] = None,
        uses: int = 1,
        expires_in: str = "24h",
        labels: Optional[Mapping[str, str]] = None,
    ) -> dict[str, Any]:
        """:meth:`Fleet.create_enrollment_token`, awaitable."""
        return await asyncio.to_thread(self.sync.create_enrollment_token, group=group, uses=uses, expires_in=expires_in, labels=labels)

    async def enroll(
        self,
        token: str,
        device_id: str,
        model: str,
        *,
        labels: Optional[Mapping[str, str]] = None,
        location: Optional[Mapping[str, str]] = None,
        serial: Optional[str] = None,
    ) -> dict[str, Any]:
        """:meth:`Fleet.enroll`, awaitable."""
        return await asyncio.to_thread(self.sync.enroll, token, device_id, model, labels=labels, location=location, serial=serial)

    async def logout(self) -> None:
        """:meth:`Fleet.logout`, awaitable."""
        await asyncio.to_thread(self.sync.logout)

    async def users(self) -> list[dict[str, Any]]:
        """:meth:`Fleet.users`, awaitable."""
        return await asyncio.to_thread(self.sync.users)

    async def user(self, name: str) -> dict[str, Any]:
        """:meth:`Fleet.user`, awaitable."""
        return await asyncio.to_thread(self.sync.user, name)

    async def create_user(self, name: str, password: str, role: str = "viewer") -> dict[str, Any]:
        """:meth:`Fleet.create_user`, awaitable."""
        return await asyncio.to_thread(self.sync.create_user, name, password, role)

    async def update_user(self, name: str, *, password: Optional[str] = None, role: Optional[str] = None) -> dict[str, Any]:
        """:meth:`Fleet.update_user`, awaitable."""
        return await asyncio.to_thread(self.sync.update_user, name, password=password, role=role)

    async def delete_user(self, name: str) -> None:
        """:meth:`Fleet.delete_user`, awaitable."""
        await asyncio.to_thread(self.sync.delete_user, name)

    async def tokens(self) -> list[dict[str, Any]]:
        """:meth:`Fleet.tokens`, awaitable."""
        return await asyncio.to_thread(self.sync.tokens)

    async def create_token(self, name: str, *, role: Optional[str] = None, expires_in: Optional[str] = None) -> dict[str, Any]:
        """:meth:`Fleet.create_token`, awaitable."""
        return await asyncio.to_thread(self.sync.create_token, name, role=role, expires_in=expires_in)

    async def revoke_token(self, token_id: str) -> None:
        """:meth:`Fleet.revoke_token`, awaitable."""
        await asyncio.to_thread(self.sync.revoke_token, token_id)

    async def enrollment_tokens(self) -> list[dict[str, Any]]:
        """:meth:`Fleet.enrollment_tokens`, awaitable."""
        return await asyncio.to_thread(self.sync.enrollment_tokens)

    async def delete_enrollment_token(self, token_id: str) -> None:
        """:meth:`Fleet.delete_enrollment_token`, awaitable."""
        await asyncio.to_thread(self.sync.delete_enrollment_token, token_id)

    async def revoke_device(self, device_id: str) -> dict[str, Any]:
        """:meth:`Fleet.revoke_device`, awaitable."""
        return await asyncio.to_thread(self.sync.revoke_device, device_id)

    async def neighbours(self, device_id: str) -> dict[str, Any]:
        """:meth:`Fleet.neighbours`, awaitable."""
        return await asyncio.to_thread(self.sync.neighbours, device_id)

    async def topology(self) -> dict[str, Any]:
        """:meth:`Fleet.topology`, awaitable."""
        return await asyncio.to_thread(self.sync.topology)

    async def rollback_twin(self, device_id: str, version: Any) -> dict[str, Any]:
        """:meth:`Fleet.rollback_twin`, awaitable."""
        return await asyncio.to_thread(self.sync.rollback_twin, device_id, version)

    async def resolve_conflict(self, device_id: str, field: str, value: Any) -> dict[str, Any]:
        """:meth:`Fleet.resolve_conflict`, awaitable."""
        return await asyncio.to_thread(self.sync.resolve_conflict, device_id, field, value)

    async def group_telemetry(
        self,
        group_id: str,
        metric: str,
        *,
        from_ms: Optional[int] = None,
        to_ms: Optional[int] = None,
        resolution: str = "auto",
        agg: Optional[str] = None,
    ) -> dict[str, Any]:
        """:meth:`Fleet.group_telemetry`, awaitable."""
        return await asyncio.to_thread(self.sync.group_telemetry, group_id, metric, from_ms=from_ms, to_ms=to_ms, resolution=resolution, agg=agg)

    async def raise_alert(
        self,
        code: str,
        severity: str,
        message: str,
        *,
        device: Optional[str] = None,
        key: Optional[str] = None,
    ) -> dict[str, Any]:
        """:meth:`Fleet.raise_alert`, awaitable."""
        return await asyncio.to_thread(self.sync.raise_alert, code, severity, message, device=device, key=key)

    async def fleet_analysis(self) -> dict[str, Any]:
        """:meth:`Fleet.fleet_analysis`, awaitable."""
        return await asyncio.to_thread(self.sync.fleet_analysis)

    async def device_analysis(self, device_id: str) -> dict[str, Any]:
        """:meth:`Fleet.device_analysis`, awaitable."""
        return await asyncio.to_thread(self.sync.device_analysis, device_id)

    async def hot_spots(self) -> dict[str, Any]:
        """:meth:`Fleet.hot_spots`, awaitable."""
        return await asyncio.to_thread(self.sync.hot_spots)

    async def fleet_alerts(self) -> list[dict[str, Any]]:
        """:meth:`Fleet.fleet_alerts`, awaitable."""
        return await asyncio.to_thread(self.sync.fleet_alerts)

    async def silences(self) -> list[dict[str, Any]]:
        """:meth:`Fleet.silences`, awaitable."""
        return await asyncio.to_thread(self.sync.silences)

    async def create_silence(
        self,
        *,
        rule: Optional[str] = None,
        device: Optional[str] = None,
        key_prefix: Optional[str] = None,
        duration: Optional[str] = None,
        until_ms: Optional[int] = None,
        comment: str = "",
    ) -> dict[str, Any]:
        """:meth:`Fleet.create_silence`, awaitable."""
        return await asyncio.to_thread(self.sync.create_silence, rule=rule, device=device, key_prefix=key_prefix, duration=duration, until_ms=until_ms, comment=comment)

    async def delete_silence(self, silence_id: str) -> None:
        """:meth:`Fleet.delete_silence`, awaitable."""
        await asyncio.to_thread(self.sync.delete_silence, silence_id)

    async def dead_letters(self) -> list[dict[str, Any]]:
        """:meth:`Fleet.dead_letters`, awaitable."""
        return await asyncio.to_thread(self.sync.dead_letters)

    async def delete_dead_letter(self, letter_id: int) -> None:
        """:meth:`Fleet.delete_dead_letter`, awaitable."""
        await asyncio.to_thread(self.sync.delete_dead_letter, letter_id)

    async def workloads(self) -> list[dict[str, Any]]:
        """:meth:`Fleet.workloads`, awaitable."""
        return await asyncio.to_thread(self.sync.workloads)

    async def workload(self, name: str) -> dict[str, Any]:
        """:meth:`Fleet.workload`, awaitable."""
        return await asyncio.to_thread(self.sync.workload, name)

    async def create_workload(
        self,
        name: str,
        *,
        cpu_pct: float,
        power_w: float,
        command: Optional[str] = None,
        replicas: int = 1,
        priority: int = 0,
        constraints: Optional[Mapping[str, Any]] = None,
    ) -> dict[str, Any]:
        """:meth:`Fleet.create_workload`, awaitable."""
        return await asyncio.to_thread(self.sync.create_workload, name, cpu_pct=cpu_pct, power_w=power_w, command=command, replicas=replicas, priority=priority, constraints=constraints)

    async def delete_workload(self, name: str) -> dict[str, Any]:
        """:meth:`Fleet.delete_workload`, awaitable."""
        return await asyncio.to_thread(self.sync.delete_workload, name)

    async def placements(self, *, workload: Optional[str] = None, device: Optional[str] = None) -> dict[str, Any]:
        """:meth:`Fleet.placements`, awaitable."""
        return await asyncio.to_thread(self.sync.placements, workload=workload, device=device)

    async def recommendations(self) -> dict[str, Any]:
        """:meth:`Fleet.recommendations`, awaitable."""
        return await asyncio.to_thread(self.sync.recommendations)

    async def accept_recommendation(self, recommendation_id: str) -> dict[str, Any]:
        """:meth:`Fleet.accept_recommendation`, awaitable."""
        return await asyncio.to_thread(self.sync.accept_recommendation, recommendation_id)

    async def events(self, *, device: Optional[str] = None, group: Optional[str] = None, kinds: Optional[Sequence[str]] = None) -> AsyncEventStream:
        """Opens the live event stream as an async iterator."""
        stream = await asyncio.to_thread(lambda: self.sync.events(device=device, group=group, kinds=kinds))
        return AsyncEventStream(stream)
