"""What keeps the webmail's users safe: server-side sessions, CSRF tokens, login throttling, CSP.

* The browser holds only a random session id, in an HttpOnly, SameSite=Strict cookie. The
  address and password live in this process's memory (they are needed for every IMAP and SMTP
  session, as in Roundcube) and never appear in a cookie, a URL or a page.
* Every form carries a CSRF token tied to the session (the login form: to a pre-session cookie),
  checked on every POST.
* Failed logins are counted per client address and per account in a sliding window; past the
  limit the login form answers 429 until the window has moved on.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Session", "SessionStore", "Throttle", "page_csp", "frame_csp", "download_csp",
           "new_token", "tokens_equal"]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_equal(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


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


class Throttle:
    """Failed logins per key ("addr:127.0.0.1", "acct:alice@example.com") in a sliding window."""

    def __init__(self, per_address: int = 20, per_account: int = 5, window: float = 300):
        self.limits = {"addr": per_address, "acct": per_account}
        self.window = window
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.window:
            q.popleft()
        return q

    def retry_after(self, keys: list[str]) -> float:
        """0 if a login may be tried now, else the seconds until one may."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                q = self._recent(key, now)
                limit = self.limits[key.split(":", 1)[0]]
                if len(q) >= limit:
                    wait = max(wait, self.window - (now - q[-limit]))
        return wait

    def failed(self, keys: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
            if len(self._failures) > 10_000:  # forget keys with nothing recent
                for k in [k for k, q in self._failures.items() if not q]:
                    del self._failures[k]

    def succeeded(self, account_key: str) -> None:
        with self._lock:
            self._failures.pop(account_key, None)


def login_token(secret: bytes, pre: str) -> str:
    """The login form's CSRF token: an HMAC of the pre-session cookie's random value."""
    return hmac.new(secret, b"login:" + pre.encode(), hashlib.sha256).hexdigest()


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
