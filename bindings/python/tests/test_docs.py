"""The Python program in docs/bindings.md runs against a real fleetd."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO, FleetServer


def test_the_documented_program_runs(fleetd: FleetServer) -> None:
    text = (REPO / "docs" / "bindings.md").read_text()
    section = text.split("## Python", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    env = dict(os.environ, WRALE_URL=fleetd.url, WRALE_TOKEN=fleetd.token)
    out = subprocess.run([sys.executable, "-c", blocks[0]], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cpu " in out.stdout
    assert "action: set_fan_duty" in out.stdout
    assert "refused: policy_violation" in out.stdout
