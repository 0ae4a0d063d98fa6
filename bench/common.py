"""What every benchmark shares: the simulator process, events, process probes, statistics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sms_relay.simulator.control_client import SimulatorClient, SimulatorError

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
FROM_NUMBER = "+15005550006"  # Twilio's magic "valid sender" test number


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def event_id(run: str, i: int) -> str:
    return f"bench_{run}_{i:07d}"


def phone(i: int) -> str:
    """Fictional 555-01xx numbers of a real area code (never a real person's)."""
    return f"+1212555{100 + i % 100:04d}"


def order_body(i: int) -> str:
    """What ORDER_SHIPPED renders for `order_value(run, i)`."""
    return f"Your order {i} has shipped. Tracking: https://example.com/track/{i}"


def order_value(run: str, i: int, consent_at: str) -> bytes:
    return json.dumps(
        {
            "eventId": event_id(run, i),
            "phone": phone(i),
            "orderId": str(i),
            "trackingUrl": f"https://example.com/track/{i}",
            "consentAt": consent_at,
        }
    ).encode()


def callback_url(public_base_url: str, eid: str) -> str:
    """The StatusCallback URL as the consumer builds it (every bench event is order-shipped)."""
    return public_base_url.rstrip("/") + callback_path(eid)


def callback_path(eid: str) -> str:
    return "/twilio/status-callback?kind=order-shipped&eventId=" + eid


@dataclass(frozen=True)
class Create:
    """One create request the simulator answered: when, which event, with what."""

    at_ms: float
    event_id: str | None
    created: bool
    outcome: str


def creates(simulator: SimulatorClient) -> list[Create]:
    """The simulator's create log; the eventId comes from the StatusCallback URL."""
    found = []
    for entry in simulator.messages():
        at = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp() * 1000
        query = parse_qs(urlsplit(entry["params"].get("StatusCallback", "")).query)
        eid = query.get("eventId", [None])[0]
        found.append(Create(at, eid, bool(entry["created"]), str(entry["outcome"])))
    return found


def rate(created: list[Create], trim: float = 0.0) -> float:
    """Steady throughput: creates per second between the first and the last create, or
    between those `trim` of the way in from either end."""
    times = sorted(c.at_ms for c in created if c.created)
    cut = int(len(times) * trim)
    times = times[cut : len(times) - cut]
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / ((times[-1] - times[0]) / 1000)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class ProcessSample:
    at: float
    cpu_s: float
    rss_mib: float


def machine_cpu_seconds() -> float:
    """CPU time all cores spent busy since boot (user, nice, system, irq, softirq, steal):
    what the broker, PostgreSQL, the simulator and the contender took together."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class ProcessWatch:
    """Samples CPU and RSS of some processes in a thread (RSS over time, peak RSS)."""

    pids: list[int]
    interval: float = 0.5
    samples: list[ProcessSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def peak_rss_mib(self) -> float:
        """The largest peak (VmHWM) of the processes watched."""
        return max(rss_mib(pid, "VmHWM") for pid in self.pids)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                rss = sum(rss_mib(pid) for pid in self.pids)
                self.samples.append(ProcessSample(time.monotonic() - started, self.cpu(), rss))
            except (FileNotFoundError, ProcessLookupError):
                return

    @contextmanager
    def running(self) -> Iterator[ProcessWatch]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def relay_process(command: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`sms-relay <command>` as a process of its own, its output appended to `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", command],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def simulator_process(account_sid: str, auth_token: str) -> Iterator[SimulatorClient]:
    """The Twilio simulator in its own process, like the real Twilio: it must not compete
    for the interpreter of what it measures. Status callbacks are never posted."""
    port = free_port()
    command = [sys.executable, "-m", "cli.main", "simulator", "--port", str(port)]
    command += ["--callback-delay-ms", "0", "--drop-callbacks", "1"]
    env = {**os.environ, "TWILIO_ACCOUNT_SID": account_sid, "TWILIO_AUTH_TOKEN": auth_token}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = SimulatorClient(f"http://127.0.0.1:{port}", timeout=60)
    try:
        for _ in range(200):
            try:
                client.health()
                break
            except SimulatorError:
                time.sleep(0.1)
        yield client
    finally:
        process.terminate()
        process.wait(10)


def result_line(result: dict[str, Any]) -> None:
    """How a child contender hands back its result: one JSON line on stdout."""
    print(json.dumps(result), flush=True)
