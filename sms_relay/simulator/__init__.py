"""A local, Twilio-compatible HTTP server for tests, benchmarks and demos; never a mock.

Twilio routes (basic auth): `/2010-04-01/Accounts/{Sid}/Messages.json` (POST create,
GET list), `.../Messages/{Sid}.json` (GET), `/v2/Services/{Sid}/Verifications` and
`/VerificationCheck` (POST). Control routes (no auth, local only), under `/_simulator/`:
`health`, `messages`, `lists`, `callbacks`, `verifications?to=`, `reset`, `script`, `inbound`,
`config` (GET/POST), `clock`.

Import from the modules: `config.SimulatorConfig`, `app.create_simulator_app`,
`server.SimulatorServer`, `control_client.SimulatorClient` / `control_client.AsyncSimulatorClient`,
`command.configure_parser` / `command.run`. This module stays light so `--help` is fast.
"""

from .config import SimulatorConfig

__all__ = ["SimulatorConfig"]
