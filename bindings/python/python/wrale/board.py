"""Boards: a seeded simulator, Linux/Raspberry Pi hardware, or sensors supplied
by the host program as callables."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping, Optional, Union

from . import _native
from ._native import Sample


class Board:
    """One device's hardware (``wrale_hal::Board``)."""

    def __init__(self, raw: _native.Board) -> None:
        self._raw = raw

    @classmethod
    def open(cls, config: Mapping[str, Any]) -> "Board":
        """Opens the backend a config names (``{"backend": "sim", ...}``, the
        TOML ``[hal]`` table of metald as a dict)."""
        return cls(_native.Board.open(json.dumps(dict(config))))

    @classmethod
    def sim(
        cls,
        model: str = "pi4b",
        *,
        seed: int = 0,
        ambient_c: Optional[float] = None,
        load_pct: float = 0.0,
        faults: Iterable[Union[str, Mapping[str, Any]]] = (),
        noise: bool = True,
        **extra: Any,
    ) -> "Board":
        """A simulated board on virtual time: same seed and script, same readings.
        ``faults`` are fault kinds (``"fan_stall"``) or dicts with parameters."""
        config: dict[str, Any] = {
            "backend": "sim",
            "model": model,
            "seed": seed,
            "load_pct": load_pct,
            "noise": noise,
            "faults": [_fault(f) for f in faults],
            **extra,
        }
        if ambient_c is not None:
            config["ambient_c"] = ambient_c
        return cls.open(config)

    @classmethod
    def linux(cls, root: str = "/", **extra: Any) -> "Board":
        """The Linux sysfs/hwmon backend (``root`` may be a fixture tree)."""
        return cls.open({"backend": "linux", "root": root, **extra})

    @classmethod
    def rpi(cls, **extra: Any) -> "Board":
        """The Raspberry Pi backend (GPIO, PWM, I2C sensors)."""
        return cls.open({"backend": "rpi", **extra})

    @classmethod
    def from_callbacks(
        cls,
        model: str = "pi4b",
        *,
        temperatures: Mapping[str, Callable[[], float]],
        fans: Optional[Mapping[str, Callable[[float], object]]] = None,
    ) -> "Board":
        """A board whose sensors are Python callables returning °C (``"cpu"``
        drives the safety engine) and whose fans are callables taking a duty in %."""
        return cls(_native.Board.from_callbacks(model, dict(temperatures), None if fans is None else dict(fans)))

    @property
    def backend(self) -> str:
        """``sim``, ``linux``, ``rpi`` or ``host``."""
        return self._raw.backend

    @property
    def profile(self) -> dict[str, Any]:
        """The board profile (model, thermal, power figures)."""
        result: dict[str, Any] = json.loads(self._raw.profile_json())
        return result

    @property
    def model(self) -> str:
        """The board model (``pi4b``)."""
        return str(self.profile["model"])

    def sample(self) -> Sample:
        """Reads every sensor once."""
        return self._raw.sample()

    def now_ms(self) -> int:
        """The board's clock (virtual on a sim board), ms since the Unix epoch."""
        return self._raw.now_ms()

    def step(self, seconds: float) -> None:
        """Advances a sim board's virtual time."""
        self._raw.step(seconds)

    def set_load(self, load_pct: float) -> None:
        """Sets a sim board's CPU load."""
        self._raw.set_load(load_pct)

    def set_ambient(self, celsius: float) -> None:
        """Sets a sim board's room temperature."""
        self._raw.set_ambient(celsius)

    def inject(self, fault: Union[str, Mapping[str, Any]]) -> None:
        """Injects a fault into a sim board (``"fan_stall"``, ``{"kind": "sensor_stuck", ...}``)."""
        self._raw.inject(json.dumps(_fault(fault)))

    def clear_faults(self) -> None:
        """Clears every injected fault."""
        self._raw.clear_faults()

    def set_security(self, kind: str, active: bool) -> None:
        """Sets a sim board's security input (``case_switch``, ``tamper``,
        ``motion``, ``voltage_monitor``)."""
        self._raw.set_security(kind, active)

    @property
    def fans(self) -> list[str]:
        """The fan ids."""
        return self._raw.fans()

    def set_fan(self, fan: str, duty_pct: float) -> None:
        """Sets a fan's duty directly (unchecked; the safety engine is the checked path)."""
        self._raw.set_fan(fan, duty_pct)

    def fan_duty(self, fan: str) -> float:
        """A fan's duty in %."""
        return self._raw.fan_duty(fan)

    def gpio_write(self, pin: int, high: bool) -> None:
        """Drives a GPIO output."""
        self._raw.gpio_write(pin, high)

    def gpio_read(self, pin: int) -> bool:
        """Reads a GPIO line."""
        return self._raw.gpio_read(pin)

    def pwm(self, pin: int, duty_pct: float, frequency_hz: Optional[float] = None) -> None:
        """Sets a hardware PWM output."""
        self._raw.pwm(pin, duty_pct, frequency_hz)

    def diagnostics(self, options: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        """Runs the hardware self-tests; returns the report (``status``, ``checks``)."""
        text = self._raw.diagnostics(None if options is None else json.dumps(dict(options)))
        result: dict[str, Any] = json.loads(text)
        return result

    def __repr__(self) -> str:
        return repr(self._raw)


def _fault(f: Union[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {"kind": f} if isinstance(f, str) else dict(f)
