"""Shared fixtures: a real fleetd (the binary built from this workspace) on a
free port of 127.0.0.1 with a temporary data directory and an admin token."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]


@dataclass
class FleetServer:
    url: str
    token: str
    password: str
    data_dir: Path


def _fleetd_binary() -> Path:
    env = os.environ.get("PYTEST_FLEETD")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "fleetd"


def _clean_env() -> dict[str, str]:
    # fleetd reads WRALE_* / FLEETD_* variables as config and refuses unknown ones.
    return {k: v for k, v in os.environ.items() if not k.startswith(("WRALE_", "FLEETD_"))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_fleetd(tmp_path_factory: pytest.TempPathFactory, config: str = "") -> Iterator[FleetServer]:
    binary = _fleetd_binary()
    if not binary.exists():
        pytest.fail(f"fleetd binary {binary} not found: run `cargo build -p fleetd` (scripts/test-python does)")
    data = tmp_path_factory.mktemp("fleetd") / "data"
    env = _clean_env()
    created = subprocess.run(
        [str(binary), "admin", "create", "--name", "admin", "--data-dir", str(data)],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    )
    out = created.stdout + created.stderr
    token = re.search(r"API token:\s*(\S+)", out)
    password = re.search(r"password:\s*(\S+)", out)
    assert token and password, out
    port = _free_port()
    args = [str(binary), "--bind", f"127.0.0.1:{port}", "--data-dir", str(data)]
    if config:
        config_file = data.parent / "fleetd.toml"
        config_file.write_text(config)
        args += ["--config", str(config_file)]
    log = open(data.parent / "fleetd.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"fleetd did not start: {(data.parent / 'fleetd.log').read_text()}")
        time.sleep(0.1)
    try:
        yield FleetServer(url=url, token=token.group(1), password=password.group(1), data_dir=data)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def fleetd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    """fleetd with its default config."""
    yield from _start_fleetd(tmp_path_factory)


@pytest.fixture(scope="module")
def fleetd_fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    """A fleetd of its own whose analyzer, scheduler and rollout driver run every
    200 ms (instead of every 30 s), for tests that wait for their passes."""
    yield from _start_fleetd(tmp_path_factory, FAST_CONFIG)


# A fleet alert rule that fires on the test fleet (any health short of perfect)
# and a webhook nobody listens on, tried once: its deliveries end as dead letters.
FAST_CONFIG = f"""
[orchestrate]
scheduler_interval = "200ms"
rollout_tick = "100ms"

[intel]
interval = "200ms"

[[intel.rules]]
id = "health_low"
severity = "warning"
condition = {{ kind = "health_below", score = 100.0 }}

[[intel.webhooks]]
id = "nobody"
url = "http://127.0.0.1:{_free_port()}/hook"

[intel.retry]
max_attempts = 1
initial_backoff = "100ms"
factor = 2.0
max_backoff = "1s"
"""
