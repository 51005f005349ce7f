"""The environment of a subprocess that runs JAX on N simulated CPU devices.

XLA reads XLA_FLAGS once, when JAX starts, so tests that need several devices run a
subprocess with this environment. XLA:CPU aborts the whole process when the participants of
a collective (an all-reduce over `data`, say) reach it more than 40 s apart; on a loaded
2-core machine the four simulated devices of one program can be that far apart (a CI run of
2026-12-05 died so in `tests/test_sharding.py`), so the limit is raised to TERMINATE_S, below
the callers' subprocess timeouts (300-900 s): a collective that never completes still aborts
the process, with XLA's message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

TERMINATE_S = 240
WARN_S = 60


def xla_flags(devices: int) -> str:
    return " ".join(
        (
            f"--xla_force_host_platform_device_count={devices}",
            f"--xla_cpu_collective_call_terminate_timeout_seconds={TERMINATE_S}",
            f"--xla_cpu_collective_call_warn_stuck_timeout_seconds={WARN_S}",
        )
    )


def simulated_devices_env(devices: int, **extra: str) -> dict[str, str]:
    """os.environ with `devices` CPU devices, JAX on the CPU, and `extra` variables."""
    return os.environ | {"XLA_FLAGS": xla_flags(devices), "JAX_PLATFORMS": "cpu", **extra}


def json_from_script(script: str, *argv: str, devices: int, timeout: int = 300):
    """Runs `python -c script argv...` on `devices` simulated devices; its last stdout line,
    parsed as JSON (the test's assertion message is the script's stderr)."""
    done = subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True,
        text=True,
        env=simulated_devices_env(devices),
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
