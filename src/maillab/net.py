"""Sockets and the context every server of a lab shares."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections import deque
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


@dataclass(frozen=True)
class LoginAttempt:
    """One login attempt on any server of the lab, for the audit view."""

    time: float
    service: str  # e.g. "pop3:example.com"
    user: str
    peer: str  # "host:port"
    mechanism: str  # "USER/PASS", "AUTH PLAIN", "LOGIN", ...
    secure: bool  # over TLS?
    success: bool


class LoginGuard:
    """Counts failed logins, slows repeated failures down, and keeps every attempt.

    Each failure from the same client address for the same user doubles the wait before the
    answer (``base`` seconds after the second failure, at most ``cap``); a success resets it.
    """

    def __init__(self, base: float = 0.25, cap: float = 4.0, keep: int = 10_000):
        self.base, self.cap = base, cap
        self.attempts: deque[LoginAttempt] = deque(maxlen=keep)
        self._failures: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def record(self, attempt: LoginAttempt) -> None:
        key = (attempt.peer.rsplit(":", 1)[0], attempt.user.lower())
        with self._lock:
            self.attempts.append(attempt)
            if attempt.success:
                self._failures.pop(key, None)
            else:
                self._failures[key] = self._failures.get(key, 0) + 1

    def delay(self, peer: str, user: str) -> float:
        """Seconds to wait before answering the latest failure of this client and user."""
        with self._lock:
            n = self._failures.get((peer.rsplit(":", 1)[0], user.lower()), 0)
        return 0.0 if n < 2 else min(self.cap, self.base * 2 ** (n - 2))

    def failures(self) -> int:
        with self._lock:
            return sum(1 for a in self.attempts if not a.success)


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
    guard: LoginGuard = field(default_factory=LoginGuard)  # one per lab, shared by all hosts
    tls: object = None  # the lab's LabCA (maillab.tls), or None when TLS is off
    strict: bool = False  # True: no password may cross a connection before TLS

    def server_tls_context(self):
        return self.tls.server_context(self.hostname) if self.tls is not None else None

    def service_name(self, protocol: str) -> str:
        """Name used in transcripts, e.g. ``"pop3:example.com"``."""
        return f"{protocol}:{self.domain}"

    def authenticate(self, user: str, password: str, *, protocol: str = "?", peer: str = "",
                     mechanism: str = "", secure: bool = False):
        """Log a user of *this* domain in (by login or address); None if that fails.

        Every attempt is recorded in ``guard`` (the lab's audit view). A server that refuses a
        login should wait ``guard.delay(peer, user)`` seconds before it answers.
        """
        acct = self.store.authenticate(user, password)
        if acct is not None and acct.domain != self.domain:
            acct = None
        self.guard.record(LoginAttempt(time.time(), self.service_name(protocol), user, peer,
                                       mechanism, secure, acct is not None))
        return acct
