"""HTTP listeners that fail to start with one line naming their setting, not a traceback."""

from __future__ import annotations

import errno
import socket

from sms_relay.errors import ConfigurationError


def cannot_listen(variable: str, host: str, port: int, error: OSError) -> ConfigurationError:
    """The start-up error for a port we could not bind (`variable` is its setting)."""
    if error.errno == errno.EADDRINUSE:
        return ConfigurationError(
            f"{variable}={port}: port {port} on {host} is already in use; stop what listens "
            f"there or set {variable} to a free port"
        )
    return ConfigurationError(
        f"HOST={host}, {variable}={port}: cannot listen there ({error.strerror or error})"
    )


def listening_socket(host: str, port: int, variable: str) -> socket.socket:
    """A bound, listening TCP socket (SO_REUSEADDR, as aiohttp sets it).

    Raises ConfigurationError naming `variable` when the port is taken or the host is wrong.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise cannot_listen(variable, host, port, error) from None
