"""Sockets and the context every server of a lab shares."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field

from .store import Store
from .transcript import Recorder

LOOPBACK = "127.0.0.1"


def bind_listener(preferred: int | None, host: str = LOOPBACK) -> socket.socket:
    """A listening TCP socket on ``preferred`` if it is free, otherwise on any free port.

    Never fails because a port is taken: the lab shows which port each service got.
    """
    for port in ([preferred] if preferred else []) + [0]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR lets a re-run notebook take its port back from TIME_WAIT at once;
        # on Linux it still refuses a port another process listens on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)
        except OSError as e:
            sock.close()
            if e.errno in (errno.EADDRINUSE, errno.EACCES) and port:
                continue
            raise
        sock.setblocking(False)
        return sock
    raise OSError("no free port")  # unreachable: port 0 always binds


def set_nodelay(transport) -> None:
    """Send small replies at once (no Nagle delay); see docs on APPEND stalls."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def quickack(transport) -> None:
    """Ask Linux to acknowledge at once instead of delaying the ACK (where supported)."""
    sock = transport.get_extra_info("socket")
    opt = getattr(socket, "TCP_QUICKACK", None)
    if sock is not None and opt is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, opt, 1)
        except OSError:
            pass


@dataclass
class ServerContext:
    """What one lab's servers share: the store, the transcript recorder, names and settings."""

    store: Store
    recorder: Recorder
    hostname: str  # the name servers greet with, e.g. "mail.example.com"
    domain: str  # the mail domain this host serves, e.g. "example.com"
    options: dict = field(default_factory=dict)
    # Open client connections (transports), so that stopping the lab can close them all.
    connections: set = field(default_factory=set)

    def service_name(self, protocol: str) -> str:
        """Name used in transcripts, e.g. ``"pop3:example.com"``."""
        return f"{protocol}:{self.domain}"

    def authenticate(self, user: str, password: str):
        """Log a user of *this* domain in (by login or address); None if that fails."""
        acct = self.store.authenticate(user, password)
        return acct if acct is not None and acct.domain == self.domain else None
