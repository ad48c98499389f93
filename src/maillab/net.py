"""Sockets and the context every server of a lab shares."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import socket
import sys
import threading
import time
from collections import OrderedDict, deque
from typing import Callable, NamedTuple

from .i18n import _, ngettext
from .store import Store
from .transcript import Recorder

LOOPBACK = "127.0.0.1"
# Characters of a user name or address the login guard keeps, in its counters and in the
# attempts it shows: a made-up name of megabytes costs no more than a short one (names longer
# than this share a counter).
MAX_NAME = 64


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


# ----------------------------------------------------------------------------- connection limits

DEFAULT_MAX_CONNECTIONS = 100  # per service; the lab lowers it when few file descriptors are left
RESERVED_FILES = 64  # descriptors kept for the store, relays and the notebook itself


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit, where allowed.

    Every connection is a file descriptor; the usual soft limit (1,024) is far below the usual
    hard one. Returns the soft limit in force afterwards.
    """
    try:
        import resource
    except ImportError:  # not on this platform: nothing to raise
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft if soft != resource.RLIM_INFINITY else wanted
    for target in (wanted, 65536, 4096):
        if soft < target <= wanted:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                return target
            except (ValueError, OSError):
                continue
    return soft


def connection_limit_for(services: int, open_files: int) -> int:
    """A per-service connection limit that keeps all services together under ``open_files``.

    A relayed message costs two descriptors (the relay's client end and the server's end).
    """
    return max(8, min(DEFAULT_MAX_CONNECTIONS, (open_files - RESERVED_FILES) // (2 * max(1, services))))


class ConnectionLimit:
    """At most ``limit`` open connections on one service; the next ones are refused politely.

    A refused client gets ``busy_reply`` (the protocol's own words: SMTP ``421``, IMAP
    ``* BYE [UNAVAILABLE]``, POP3 ``-ERR [SYS/TEMP]``) and is closed; the transcript shows it.
    A connection holds its place from its first byte until ``connection_lost``. A TLS port's
    connection whose handshake never completes never reaches the protocol: it gives its place
    back after ``grace`` seconds (longer than the handshake timeout).
    """

    def __init__(self, limit: int, *, busy_reply: bytes | str | None = None, recorder=None,
                 service: str = "", grace: float | None = None):
        self.limit = limit
        if isinstance(busy_reply, str):
            busy_reply = busy_reply.encode("utf-8", "replace")
        self.busy_reply = busy_reply.rstrip(b"\r\n") + b"\r\n" if busy_reply else None
        self.recorder = recorder
        self.service = service
        self.grace = grace
        self.open = 0
        self.refused = 0

    def wrap(self, protocol_factory: Callable[[], object]) -> Callable[[], object]:
        """A protocol factory for ``loop.create_server`` that counts and limits connections."""
        def make():
            if self.open >= self.limit:
                self.refused += 1
                return _Busy(self)
            protocol = protocol_factory()
            self._hold(protocol)
            return protocol
        return make

    def _hold(self, protocol) -> None:
        # The protocol object stays the same through STARTTLS (asyncio hands it to the TLS
        # transport), so its own connection_lost is the one place where its connection ends:
        # wrap that method on this instance rather than putting a proxy in between.
        self.open += 1
        made = False
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open -= 1

        original_made, original_lost = protocol.connection_made, protocol.connection_lost

        def connection_made(transport) -> None:
            nonlocal made
            made = True
            original_made(transport)

        def connection_lost(exc) -> None:
            release()
            original_lost(exc)

        protocol.connection_made, protocol.connection_lost = connection_made, connection_lost
        if self.grace is not None:
            asyncio.get_running_loop().call_later(self.grace, lambda: made or release())


class _Busy(asyncio.Protocol):
    """The protocol of a refused connection: the busy reply, a transcript line, and goodbye."""

    def __init__(self, limit: ConnectionLimit):
        self.limit = limit

    def connection_made(self, transport) -> None:
        peer = transport.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        conn = self.limit.recorder.open(self.limit.service, peer) if self.limit.recorder else None
        if self.limit.busy_reply:
            if conn is not None:
                conn.server(self.limit.busy_reply)
            transport.write(self.limit.busy_reply)
        if conn is not None:
            conn.close(_("refused: {0} connections already open on this service").format(
                self.limit.limit))
        transport.close()


# Client ends ("127.0.0.1:50123") of connections this process opened for a caller that
# throttles its logins itself (the lab's webmail, per browser): LoginGuard lets them through.
_THROTTLED_ELSEWHERE: set[str] = set()


@contextlib.contextmanager
def throttled_elsewhere(sock: socket.socket | None):
    """``with throttled_elsewhere(conn.sock): conn.login(...)``: the lab's servers check this
    connection's password at once, without the login guard's queue (the caller has one)."""
    try:
        host, port = sock.getsockname()[:2]
    except (AttributeError, OSError):  # no socket (yet): nothing to mark
        yield
        return
    peer = f"{host}:{port}"
    _THROTTLED_ELSEWHERE.add(peer)
    try:
        yield
    finally:
        _THROTTLED_ELSEWHERE.discard(peer)


class LoginAttempt(NamedTuple):
    """One login attempt on any server of the lab, for the audit view."""

    time: float
    service: str  # e.g. "pop3:example.com"
    user: str
    peer: str  # "host:port"
    mechanism: str  # "USER/PASS", "AUTH PLAIN", "LOGIN", ...
    secure: bool  # over TLS?
    success: bool


class LoginGuard:
    """Keeps every login attempt and slows password guessing down, across connections.

    Attempts are counted per *key*: the account being guessed (``user:alice``) and the client's
    address (``addr:127.0.0.1``). A server asks :meth:`admit` *before* it checks a password and
    waits the seconds it is told before checking; only then does it answer, right or wrong.

    * A key is *hot* once its recorded failures are past its free allowance (``free`` per
      account, ``free_per_address`` per address): then every check of it takes the key's next
      *check slot*, ``base`` seconds after the previous one, doubling with each failure (and
      each check still waiting in the queue) up to ``cap``. While a key is hot the answer to the
      right password comes as late as a refusal would: a guesser who hangs up early learns
      nothing, and opening more connections does not buy more guesses.
    * A key without such failures is not queued at all: many clients logging in at the same
      moment (a class behind one address, a load test) are checked at once. Only answers count:
      an attempt is a failure when :meth:`record` hears it failed, never from its admission.
    * Nobody waits longer than ``cap``: when the next free slot is further away than that (many
      guesses are queued already), :meth:`admit` refuses the attempt *without checking the
      password* and the server answers with its protocol's temporary failure ("try again in a
      few seconds"). The owner is slowed down, never told a right password is wrong.
    * Counters decay: a key's failure score halves every ``half_life`` seconds. A right
      password clears its account's score, not its address's (else logging in to any known
      account would wipe a guesser's record).
    * At most ``max_keys`` keys are remembered (the least recently used are forgotten first),
      and at most ``keep`` attempts, so a flood of made-up user names cannot grow memory.
    * Logins that the lab's own webmail makes for a browser were throttled by the webmail
      already (per browser, see ``webmail.security.LoginThrottle``): their connections are
      marked with :func:`throttled_elsewhere` and checked at once.
    """

    def __init__(self, base: float = 0.25, cap: float = 4.0, keep: int = 10_000, *,
                 free: int = 1, free_per_address: int = 10, half_life: float = 300.0,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.base, self.cap, self.half_life = base, cap, half_life
        self.free = {"user": free, "addr": free_per_address}
        self.max_keys = max_keys
        self.attempts: deque[LoginAttempt] = deque(maxlen=keep)
        self._clock = clock
        self._keys_state: OrderedDict[tuple[str, str], _KeyState] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _keys(peer: str, user: str) -> list[tuple[str, str]]:
        host = peer.rsplit(":", 1)[0] if ":" in peer else peer
        return [("user", user[:MAX_NAME].lower()), ("addr", host[:MAX_NAME])]

    def _decayed(self, state: "_KeyState", now: float) -> float:
        if self.half_life <= 0:
            return state.score
        return state.score * 0.5 ** (max(0.0, now - state.changed) / self.half_life)

    def _state(self, key: tuple[str, str], now: float, *, create: bool = True) -> "_KeyState | None":
        """The key's state with its score decayed to ``now``, as the most recently used key."""
        state = self._keys_state.pop(key, None)
        if state is None:
            if not create:
                return None
            state = _KeyState(changed=now)
        state.score, state.changed = self._decayed(state, now), now
        if state.queued:  # slots whose time has come are done
            state.queued = tuple(t for t in state.queued if t > now)
        self._keys_state[key] = state
        while len(self._keys_state) > self.max_keys:
            self._keys_state.popitem(last=False)
        return state

    def admit(self, peer: str, user: str) -> "Turn":
        """Before checking a password of ``user`` from ``peer``: when to check it.

        Returns a :class:`Turn`: wait ``turn.wait`` seconds, check, then answer; or, if
        ``turn.refused``, answer a temporary failure without checking.
        """
        now = self._clock()
        with self._lock:
            if peer in _THROTTLED_ELSEWHERE:
                return Turn(0.0)
            # A key nobody failed on is not even remembered: a login costs the guard nothing
            # until a password is wrong.
            hot = []
            for key in self._keys(peer, user):
                state = self._state(key, now, create=False)
                # this attempt and the ones queued before it come after the failures so far
                spacing = self._spacing(key[0], state.score + len(state.queued) + 1) if state else 0
                if spacing > 0:
                    hot.append((state, max(now, state.next_check) + spacing))
            if not hot:
                return Turn(0.0)
            check_at = max(at for _state, at in hot)
            if check_at - now > self.cap + 1e-9:  # the queue is full: come back later
                return Turn(0.0, retry_after=max(1.0, check_at - now - self.cap))
            for state, _at in hot:
                state.next_check = max(state.next_check, check_at)
                state.queued += (check_at,)
            return Turn(check_at - now)

    def record(self, attempt: LoginAttempt) -> None:
        """Keep an attempt for the audit view, and count it: a failure adds to both its keys'
        scores; a right password clears its account's score."""
        if len(attempt.user) > MAX_NAME:  # a made-up name of megabytes must not stay in memory
            attempt = attempt._replace(user=attempt.user[:MAX_NAME])
        # Ten thousand attempts are kept: one copy of each service's name serves them all.
        attempt = attempt._replace(service=sys.intern(attempt.service))
        now = self._clock()
        with self._lock:
            self.attempts.append(attempt)
            user_key, addr_key = self._keys(attempt.peer, attempt.user)
            if attempt.success:
                state = self._keys_state.get(user_key)
                if state is not None:
                    state.score = 0.0  # (its queued slots stay: guesses already waiting keep them)
                return
            for key in (user_key, addr_key):
                self._state(key, now).score += 1

    def _spacing(self, kind: str, score: float) -> float:
        """Seconds between two password checks for a key with this many (decayed) attempts,
        the one to be checked included."""
        over = score - self.free[kind]  # fractional: older failures count less
        if over < 0.5:
            return 0.0
        # 2 ** k is bounded before it is computed: no overflow after thousands of failures.
        return min(self.cap, self.base * 2.0 ** min(max(over - 1, 0.0), 64))

    def failures(self) -> int:
        with self._lock:
            return sum(1 for a in self.attempts if not a.success)


def busy_login_hint(retry_after: float) -> str:
    """The hint of a login refused unchecked by :meth:`LoginGuard.admit` (in the learner's
    language; each protocol puts it in its own temporary-failure reply)."""
    seconds = math.ceil(retry_after)
    return ngettext("too many login attempts on this account just now, so your password was "
                    "not checked; try again in {seconds} second",
                    "too many login attempts on this account just now, so your password was "
                    "not checked; try again in {seconds} seconds", seconds).format(seconds=seconds)


class Turn(NamedTuple):
    """:meth:`LoginGuard.admit`'s answer: wait ``wait`` seconds, then check the password; or,
    when ``retry_after`` is set, do not check it and answer a temporary failure."""

    wait: float
    retry_after: float | None = None

    @property
    def refused(self) -> bool:
        return self.retry_after is not None


class _KeyState:
    """What the guard remembers about one key (an account or a client address)."""

    __slots__ = ("score", "changed", "next_check", "queued")

    def __init__(self, changed: float = 0.0):
        self.score = 0.0  # failures, decaying over time
        self.changed = changed  # clock time the score was last brought up to date
        self.next_check = 0.0  # clock time of the key's last taken check slot
        self.queued: tuple = ()  # check slots still to come (clock times)


class ServerContext:
    """What one lab's servers share: the store, the transcript recorder, names and settings."""

    def __init__(self, store: Store, recorder: Recorder, hostname: str, domain: str,
                 options: dict | None = None, *, guard: LoginGuard | None = None,
                 tls: object = None, strict: bool = False):
        self.store = store
        self.recorder = recorder
        self.hostname = hostname  # the name servers greet with, e.g. "mail.example.com"
        self.domain = domain  # the mail domain this host serves, e.g. "example.com"
        self.options = options if options is not None else {}
        # Open client connections (transports), so that stopping the lab can close them all.
        self.connections: set = set()
        self.guard = guard if guard is not None else LoginGuard()  # one per lab, for all hosts
        self.tls = tls  # the lab's LabCA (maillab.tls), or None when TLS is off
        self.strict = strict  # True: no password may cross a connection before TLS

    def server_tls_context(self):
        return self.tls.server_context(self.hostname) if self.tls is not None else None

    def service_name(self, protocol: str) -> str:
        """Name used in transcripts, e.g. ``"pop3:example.com"``."""
        return f"{protocol}:{self.domain}"

    def authenticate(self, user: str, password: str, *, protocol: str = "?", peer: str = "",
                     mechanism: str = "", secure: bool = False):
        """Log a user of *this* domain in (by login or address); None if that fails.

        Every attempt is recorded in ``guard`` (the lab's audit view). A server asks
        ``guard.admit(peer, user)`` before calling this, and waits its turn.
        """
        acct = self.store.authenticate(user, password)
        if acct is not None and acct.domain != self.domain:
            acct = None
        self.guard.record(LoginAttempt(time.time(), self.service_name(protocol), user, peer,
                                       mechanism, secure, acct is not None))
        return acct
