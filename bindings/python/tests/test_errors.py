"""The exception hierarchy: one class per error category, each carrying the
Rust error's code and message."""

from __future__ import annotations

import pytest

import wrale

SUBCLASSES = [
    wrale.PolicyViolation,
    wrale.HardwareError,
    wrale.SyncError,
    wrale.AuthError,
    wrale.NotFound,
    wrale.InvalidInput,
    wrale.ConflictError,
    wrale.Unavailable,
    wrale.InternalError,
]


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_every_error_is_a_wrale_error(cls: type) -> None:
    assert issubclass(cls, wrale.WraleError)
    assert issubclass(cls, Exception)


def test_attributes_match_the_rust_error() -> None:
    with pytest.raises(wrale.WraleError) as e:
        wrale.SafetyEngine("pi9z")
    err = e.value
    assert isinstance(err, wrale.InvalidInput)
    assert err.code == "invalid_argument"
    assert "pi9z" in err.message
    assert str(err) == err.message
    assert err.details is None


def test_unreachable_fleet_is_unavailable() -> None:
    fleet = wrale.Fleet("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(wrale.Unavailable) as e:
        fleet.devices()
    assert e.value.code == "transport"
    with pytest.raises(wrale.InvalidInput) as bad:
        wrale.Fleet("not a url")
    assert bad.value.code == "invalid_argument"
