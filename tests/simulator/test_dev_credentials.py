"""One set of development credentials: the simulator's defaults are what scripts/stack
and docker-compose.yml give the simulator and our services."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from sms_relay.simulator.config import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    DEFAULT_FROM_NUMBER,
    DEFAULT_VERIFY_SERVICE_SID,
)

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "SIM_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
    "SIM_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
    "SIM_VERIFY_SERVICE_SID": DEFAULT_VERIFY_SERVICE_SID,
    "SIM_FROM_NUMBER": DEFAULT_FROM_NUMBER,
}


def _function(script: str, name: str) -> str:
    # A one-line function (`rel() { ...; }`) or one that ends at a `}` line.
    one_line = rf"^{name}\(\) {{[^\n]*}}$"
    found = re.search(one_line, script, re.MULTILINE) or re.search(
        rf"^{name}\(\) {{[^\n]*\n.*?^}}$", script, re.MULTILINE | re.DOTALL
    )
    assert found, f"scripts/stack has no function {name}"
    return found.group(0)


def test_scripts_stack_reads_the_simulators_defaults() -> None:
    # Runs only the script's credential loading (never `up`): its function, with the
    # helpers it calls, against this checkout and this interpreter.
    script = (ROOT / "scripts" / "stack").read_text()
    program = "\n".join(
        [
            "set -euo pipefail",
            *(_function(script, name) for name in ("die", "rel", "load_dev_credentials")),
            "load_dev_credentials",
            *(f'printf "{name}=%s\\n" "${name}"' for name in EXPECTED),
        ]
    )
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-c", program],
        env={"ROOT": str(ROOT), "PY": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert dict(line.split("=", 1) for line in result.stdout.splitlines()) == EXPECTED


def test_docker_compose_gives_the_same_credentials() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    values = dict(re.findall(r"^\s+(TWILIO_[A-Z_]+): \"?([^\"\s]+)\"?$", compose, re.MULTILINE))
    assert values["TWILIO_ACCOUNT_SID"] == DEFAULT_ACCOUNT_SID
    assert values["TWILIO_AUTH_TOKEN"] == DEFAULT_AUTH_TOKEN
    assert values["TWILIO_VERIFY_SERVICE_SID"] == DEFAULT_VERIFY_SERVICE_SID
    assert values["TWILIO_FROM_NUMBER"] == DEFAULT_FROM_NUMBER
