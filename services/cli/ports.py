"""Free loopback ports for processes a command (or a test) starts for itself."""

from __future__ import annotations

import socket

__all__ = ["free_port", "free_port_pair"]


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A free port whose successor is free too (a broker's controller listens on port + 1).

    Raises:
        RuntimeError: no such pair was found in 50 tries.
    """
    for _ in range(50):
        port = free_port()
        if port < 65535 and _port_free(port + 1):
            return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")
