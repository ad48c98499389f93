"""What keeps the webmail's users safe: server-side sessions, CSRF tokens, login throttling, CSP.

* The browser holds only a random session id, in an HttpOnly, SameSite=Strict cookie. The
  address and password live in this process's memory (they are needed for every IMAP and SMTP
  session, as in Roundcube) and never appear in a cookie, a URL or a page.
* Every form carries a CSRF token tied to the session (the login form: to a pre-session cookie),
  checked on every POST.
* Password guessing is slowed down, never answered with a lockout: see ``LoginThrottle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Session", "SessionStore", "LoginThrottle", "Busy", "page_csp", "frame_csp",
           "download_csp", "new_token", "tokens_equal", "is_token", "device_cookie",
           "device_of"]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_equal(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and is_token(str(a)) and is_token(str(b)) and \
        hmac.compare_digest(str(a), str(b))


_TOKEN = re.compile(r"[A-Za-z0-9_.-]{16,200}")


def is_token(value: str | None) -> bool:
    """Looks like a token we made (cookies and form fields may carry anything at all)."""
    return bool(value) and _TOKEN.fullmatch(value) is not None


@dataclass
class Session:
    id: str
    address: str  # what the user typed to log in (their e-mail address)
    password: str = field(repr=False)  # server memory only
    domain: str
    csrf: str = field(default_factory=new_token, repr=False)
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    notices: list = field(default_factory=list)  # (kind, text) shown once on the next page

    def notify(self, text: str, kind: str = "ok") -> None:
        self.notices.append((kind, text))
        del self.notices[:-5]

    def take_notices(self) -> list:
        out, self.notices = self.notices, []
        return out


class SessionStore:
    """Sessions in memory, ended after ``idle`` seconds without a request or ``lifetime`` in all."""

    def __init__(self, idle: float = 30 * 60, lifetime: float = 12 * 3600, limit: int = 1000):
        self.idle, self.lifetime, self.limit = idle, lifetime, limit
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, address: str, password: str, domain: str) -> Session:
        s = Session(new_token(), address, password, domain)
        with self._lock:
            self._expire()
            while len(self._sessions) >= self.limit:  # the oldest go first
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[s.id] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None
            now = time.monotonic()
            if now - s.last_seen > self.idle or now - s.created > self.lifetime:
                del self._sessions[sid]
                return None
            s.last_seen = now
            return s

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def clear(self) -> None:
        with self._lock:
            for s in self._sessions.values():
                s.password = ""
            self._sessions.clear()

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [k for k, s in self._sessions.items()
                    if now - s.last_seen > self.idle or now - s.created > self.lifetime]:
            del self._sessions[sid]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


class Busy(Exception):
    """Too many login attempts for one account are waiting their turn right now."""

    def __init__(self, retry_after: float):
        super().__init__(retry_after)
        self.retry_after = retry_after


class LoginThrottle:
    """Slows password guessing down without ever locking the owner out.

    Each key (``acct:<address>``, ``device:<id>``, ``client:<id>``) has a failure score that
    halves every ``half_life`` seconds. Before its password is checked, an attempt waits
    ``delay()``: nothing for the first ``free`` failures, then ``base`` seconds, doubling up to
    ``cap``. The right password is checked like any other once the wait is over: a slower
    answer, never a refusal.

    Attempts on one account take turns (``turn()``), so parallel connections do not multiply
    the guessing rate. While ``max_waiting`` attempts wait already (a flood in progress), more
    are told to come back shortly (``Busy``). A browser that logged in to the account before
    carries a device cookie (OWASP's "device cookies") and takes turns on its own key, so an
    attacker's failures neither slow nor queue the owner's own browser. The client key is the
    browser (its pre-session cookie) where the peer is the loopback address: behind
    jupyter-server-proxy every browser is 127.0.0.1, and one of them must not slow the others.

    Used on the event loop only (the waits are ``asyncio.sleep``, the turns asyncio locks).
    """

    def __init__(self, free: int = 3, base: float = 1.0, cap: float = 15.0,
                 half_life: float = 600.0, max_waiting: int = 8, max_keys: int = 10_000):
        self.free, self.base, self.cap = free, base, cap
        self.half_life = half_life
        self.max_waiting = max_waiting
        self.max_keys = max_keys
        self._scores: dict[str, tuple[float, float]] = {}  # key -> (score, when)
        self._turns: dict[str, list] = {}  # key -> [asyncio.Lock, attempts holding or waiting]

    def score(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        value, when = self._scores.get(key, (0.0, now))
        return value * 0.5 ** (max(0.0, now - when) / self.half_life)

    def delay(self, keys) -> float:
        """Seconds an attempt under these keys waits before its password is checked."""
        worst = max((self.score(k) for k in keys), default=0.0)
        over = worst - self.free
        if over < -0.05:  # (a score decays a little between two quick attempts)
            return 0.0
        return min(self.cap, self.base * 2 ** min(max(over, 0.0), 32))  # no overflow, ever

    def failed(self, keys) -> None:
        now = time.monotonic()
        for key in keys:
            self._scores[key] = (self.score(key, now) + 1, now)
        if len(self._scores) > self.max_keys:
            self._forget(now)

    def succeeded(self, keys) -> None:
        for key in keys:
            self._scores.pop(key, None)

    def _forget(self, now: float) -> None:
        """Keep the map small: drop faded scores, then the oldest."""
        for key in [k for k in self._scores if self.score(k, now) < 0.5]:
            del self._scores[key]
        while len(self._scores) > self.max_keys // 2:
            del self._scores[next(iter(self._scores))]

    @contextlib.asynccontextmanager
    async def turn(self, key: str):
        """One attempt at a time per key; Busy when too many wait already."""
        entry = self._turns.setdefault(key, [asyncio.Lock(), 0])
        if entry[1] > self.max_waiting:
            raise Busy(min(self.cap, max(1.0, self.delay([key]))) * entry[1])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0 and self._turns.get(key) is entry:
                del self._turns[key]


def device_cookie(secret: bytes, address: str) -> str:
    """A cookie value that says "this browser logged in as ``address`` before"."""
    device = secrets.token_urlsafe(18)
    return f"{device}.{_device_mac(secret, device, address)}"


def device_of(secret: bytes, value: str | None, address: str) -> str | None:
    """The device id in a device cookie, if it was made here for this address; else None."""
    if not value or not is_token(value) or value.count(".") != 1:
        return None
    device, mac = value.split(".")
    return device if hmac.compare_digest(mac, _device_mac(secret, device, address)) else None


def _device_mac(secret: bytes, device: str, address: str) -> str:
    data = f"device:{device}:{address.lower()}".encode("utf-8", "surrogatepass")
    return hmac.new(secret, data, hashlib.sha256).hexdigest()[:32]


def login_token(secret: bytes, pre: str) -> str:
    """The login form's CSRF token: an HMAC of the pre-session cookie's random value."""
    return hmac.new(secret, b"login:" + pre.encode("utf-8", "surrogatepass"),
                    hashlib.sha256).hexdigest()


# Pages: no script at all, styles and images from the webmail itself, forms only to itself,
# frames only its own message bodies, and framed only by the notebook (same origin under
# jupyter-server-proxy; a loopback page when the webmail is opened at its own port).
FRAME_ANCESTORS = "'self' http://127.0.0.1:* http://localhost:*"


def page_csp() -> str:
    return ("default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors " + FRAME_ANCESTORS)


def frame_csp(allow_remote_images: bool) -> str:
    """A message body's own document: no script, no forms, images only when the reader allows."""
    # data: carries the message's own inline (cid:) images, embedded by the server.
    images = "'self' data: http: https:" if allow_remote_images else "'self' data:"
    return (f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; "
            f"form-action 'none'; base-uri 'none'; frame-ancestors {FRAME_ANCESTORS}; "
            "sandbox allow-popups allow-popups-to-escape-sandbox")


def download_csp() -> str:
    return "default-src 'none'; sandbox; frame-ancestors 'none'"
