"""A local, Twilio-compatible HTTP server for tests, benchmarks and demos; never a mock.

Import from the modules: `config.SimulatorConfig`, `app.create_simulator_app`,
`server.SimulatorServer`, `client.SimulatorClient` / `client.AsyncSimulatorClient`,
`cli.configure_parser` / `cli.run`. This package module stays light so `--help` is fast.
"""

from .config import SimulatorConfig

__all__ = ["SimulatorConfig"]
