"""The safety engine: a policy (the board's floor plus TOML layers) evaluated
on samples and checked against commands."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from . import _native
from ._native import Sample


@dataclass(frozen=True)
class Action:
    """Something the engine wants done through the HAL at once
    (``set_fan_duty``, ``throttle_workloads``, ``emergency_shutdown``, ...)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Action":
        params = {k: v for k, v in d.items() if k != "action"}
        return cls(kind=str(d["action"]), params=params)


@dataclass(frozen=True)
class AlertChange:
    """An alert raised or cleared by a decision."""

    change: str
    code: str
    severity: str
    message: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "AlertChange":
        a = d["alert"]
        return cls(change=str(d["change"]), code=str(a["code"]), severity=str(a["severity"]), message=str(a["message"]))


@dataclass(frozen=True)
class Decision:
    """What the engine decided for one sample; falsy when nothing needs doing."""

    actions: list[Action]
    alerts: list[AlertChange]
    transitions: list[dict[str, Any]]

    @classmethod
    def from_json(cls, text: str) -> "Decision":
        d = json.loads(text)
        return cls(
            actions=[Action.from_json(a) for a in d["actions"]],
            alerts=[AlertChange.from_json(a) for a in d["alerts"]],
            transitions=list(d["transitions"]),
        )

    def __bool__(self) -> bool:
        return bool(self.actions or self.alerts or self.transitions)


@dataclass(frozen=True)
class Verdict:
    """The engine's verdict on a command: allowed, or refused by ``rule`` with a ``reason``."""

    allowed: bool
    rule: Optional[str] = None
    reason: Optional[str] = None

    @classmethod
    def from_json(cls, text: str) -> "Verdict":
        d = json.loads(text)
        if d["verdict"] == "allowed":
            return cls(allowed=True)
        return cls(allowed=False, rule=d["rule"], reason=d["reason"])

    def __bool__(self) -> bool:
        return self.allowed


class SafetyEngine:
    """The safety/policy engine of one board model, with its own state."""

    def __init__(self, model: str = "pi4b", policy: Optional[str] = None, *, source_name: str = "<python>") -> None:
        self._raw = _native.SafetyEngine(model)
        if policy is not None:
            self.load(policy, source_name=source_name)

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"], model: str = "pi4b") -> "SafetyEngine":
        """The engine with the policy layer in a TOML file."""
        engine = cls(model)
        engine.load_file(path)
        return engine

    def load(self, text: str, *, source_name: str = "<python>") -> None:
        """Loads a policy layer (TOML). A bad or loosening layer raises
        (``InvalidInput`` / ``PolicyViolation``) and the previous policy stays."""
        self._raw.load(text, source_name)

    def load_file(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Loads a policy layer from a TOML file."""
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self._raw.load(text, os.fspath(path))

    def evaluate(self, sample: Sample, now_ms: Optional[int] = None) -> Decision:
        """Evaluates one sample (updating the engine's state)."""
        return Decision.from_json(self._raw.evaluate(sample, now_ms))

    def check(self, command: Mapping[str, Any], *, actor: str = "user:python", reason: str = "", now_ms: int = 0) -> Verdict:
        """Checks a command (``{"type": "set_gpio", "pin": 17, "level": "high"}``) without recording it."""
        return Verdict.from_json(self._raw.check(json.dumps(dict(command)), actor, reason, now_ms))

    def admit(self, command: Mapping[str, Any], *, actor: str = "user:python", reason: str = "", now_ms: int = 0) -> Verdict:
        """Checks a command and records it when allowed (rate limits, overrides)."""
        return Verdict.from_json(self._raw.admit(json.dumps(dict(command)), actor, reason, now_ms))

    def require(self, command: Mapping[str, Any], *, actor: str = "user:python", reason: str = "", now_ms: int = 0) -> None:
        """Like :meth:`admit`, but a refusal raises :class:`wrale.PolicyViolation`."""
        self._raw.require(json.dumps(dict(command)), actor, reason, now_ms)

    @property
    def state(self) -> dict[str, Any]:
        """Thermal level, fan target and profile, throttling, GPIO lock, fail-safe, alerts."""
        result: dict[str, Any] = json.loads(self._raw.state_json())
        return result

    @property
    def thresholds(self) -> dict[str, float]:
        """The thermal thresholds in force (``warn_c``, ``throttle_c``, ``critical_c``)."""
        result: dict[str, float] = json.loads(self._raw.thresholds_json())
        return result

    def reset(self) -> None:
        """A fresh state for the policy in force."""
        self._raw.reset()
