"""The torch.distributed rendezvous port (no Ray here: a local run imports nothing of Ray)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A free TCP port on this host, on every address (the torch.distributed rendezvous listens on
    the node's address, which other nodes reach)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
