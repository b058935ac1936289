"""The torch.distributed rendezvous port (no Ray here: a local run imports nothing of Ray)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A free TCP port on this host (the torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
