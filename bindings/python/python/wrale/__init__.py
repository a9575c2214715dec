"""Wrale for Python: boards, the safety engine, device twins, the fleet client
and an in-process fleet device, over the Rust crates (`wrale._native`).

Every error is a :class:`WraleError` subclass carrying the Rust error's stable
``code`` and its ``message``.
"""

from ._native import (
    AuthError,
    ConflictError,
    HardwareError,
    InternalError,
    InvalidInput,
    NotFound,
    PolicyViolation,
    Sample,
    SyncError,
    Unavailable,
    WraleError,
    __version__,
)
from .board import Board
from .device import Device
from .fleet import AsyncEventStream, AsyncFleet, EventStream, Fleet
from .safety import Action, AlertChange, Decision, SafetyEngine, Verdict
from .twin import SyncSession, Twin

__all__ = [
    "Action",
    "AlertChange",
    "AsyncEventStream",
    "AsyncFleet",
    "AuthError",
    "Board",
    "ConflictError",
    "Decision",
    "Device",
    "EventStream",
    "Fleet",
    "HardwareError",
    "InternalError",
    "InvalidInput",
    "NotFound",
    "PolicyViolation",
    "SafetyEngine",
    "Sample",
    "SyncError",
    "SyncSession",
    "Twin",
    "Unavailable",
    "Verdict",
    "WraleError",
    "__version__",
]
