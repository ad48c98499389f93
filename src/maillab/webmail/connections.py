"""The webmail's connections: how many may be open at once, and how long one may do nothing.

aiohttp answers HTTP; this module sits between the listening socket and aiohttp's protocol:

* Beyond ``limit`` open connections a new one gets a short ``503 Service Unavailable`` page
  with ``Retry-After`` instead of a place in the queue, so that idle or slow clients cannot use
  up the kernel's open files (every service of the lab shares them).
* A connection that sends no complete request within ``idle_timeout`` seconds (after it opened
  or after its last response: keep-alive), or stops reading a response for that long, is closed.
* Each refusal and each timeout is one short connection in the lab's transcript, under the
  webmail's service name, saying what happened.

Request bodies have their own deadline in the application (``Webmail.read_form``).
"""

from __future__ import annotations

import asyncio
import time
import weakref

from ..i18n import _

__all__ = ["ConnectionGuard"]

# The end of a request's header block: the refusal waits for it before it answers.
_HEAD_END = b"\r\n\r\n"
_HEAD_LIMIT = 16 * 1024


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the times the guard needs."""

    def __init__(self, guard: "ConnectionGuard", inner: asyncio.Protocol):
        self.guard = guard
        self.inner = inner
        self.transport = None
        self.peer = ""
        self.busy = 0  # requests being handled
        self.last_activity = time.monotonic()  # connection made, response done, bytes sent out
        self.received_since = False  # bytes arrived since the last response (a request begun)
        self.unsent = 0  # bytes waiting to go out at the last sweep

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""
        self.guard.open.add(self)
        self.inner.connection_made(transport)

    def data_received(self, data):
        self.received_since = True
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def connection_lost(self, exc):
        self.guard.open.discard(self)
        self.inner.connection_lost(exc)

    def pause_writing(self):
        self.inner.pause_writing()

    def resume_writing(self):
        self.inner.resume_writing()


class _Refusal(asyncio.Protocol):
    """Reads a request's header block (or waits a moment), answers 503, and hangs up."""

    def __init__(self, guard: "ConnectionGuard"):
        self.guard = guard
        self.head = b""
        self.transport = None
        self.timer = None

    def connection_made(self, transport):
        self.transport = transport
        self.guard.refusing.add(transport)
        self.timer = asyncio.get_running_loop().call_later(self.guard.refusal_wait, self.answer)

    def data_received(self, data):
        self.head += data
        if _HEAD_END in self.head or len(self.head) > _HEAD_LIMIT:
            self.answer()

    def answer(self):
        if self.transport is None or self.transport.is_closing():
            return
        self.timer.cancel()
        self.transport.write(self.guard.refusal_response())
        peer = self.transport.get_extra_info("peername")
        self.guard.record(f"{peer[0]}:{peer[1]}" if peer else "", _(
            "refused: {0} connections are open already (the limit); answered "
            "503 Service Unavailable, Retry-After: {1}").format(self.guard.limit,
                                                                  self.guard.retry_after))
        self.transport.close()

    def connection_lost(self, exc):
        if self.timer is not None:
            self.timer.cancel()
        self.guard.refusing.discard(self.transport)
        self.transport = None


class ConnectionGuard:
    """Counts the webmail's connections, refuses those beyond ``limit``, closes idle ones."""

    def __init__(self, *, limit: int = 64, idle_timeout: float = 30.0, retry_after: int = 5,
                 recorder=None, service_name: str = "http", refusal_wait: float = 2.0):
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.retry_after = retry_after
        self.recorder = recorder
        self.service_name = service_name
        self.refusal_wait = refusal_wait  # how long a refused client may take to send its request
        # The open connections, weakly: the guard must keep no connection (and so no aiohttp
        # task) alive, even while a traceback keeps the guard alive.
        self.open: weakref.WeakSet[_Tracked] = weakref.WeakSet()
        self.refusing: set = set()  # transports being answered 503
        # A timer, not a task: a task still pending when the interpreter exits (a lab stopped
        # by atexit, say) can crash CPython 3.11 while it is finalized.
        self._sweeper: asyncio.TimerHandle | None = None

    # ---- wiring
    def protocol_factory(self, make_protocol):
        """What ``loop.create_server`` needs: aiohttp's protocol, tracked, or a refusal."""
        def factory():
            if len(self.open) >= self.limit:
                return _Refusal(self)
            return _Tracked(self, make_protocol())
        return factory

    def start(self) -> None:
        self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        for transport in list(self.refusing):
            transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # ---- what the application tells the guard
    @staticmethod
    def _tracked(transport) -> _Tracked | None:
        conn = transport.get_protocol() if transport is not None else None
        return conn if isinstance(conn, _Tracked) else None

    def request_started(self, transport) -> None:
        conn = self._tracked(transport)
        if conn is not None:
            conn.busy += 1

    def request_finished(self, transport) -> None:
        conn = self._tracked(transport)
        if conn is not None:
            conn.busy = max(0, conn.busy - 1)
            conn.last_activity = time.monotonic()
            conn.received_since = False

    def record(self, peer: str, text: str) -> None:
        """One short connection in the transcript that says what happened to a client."""
        if self.recorder is not None:
            self.recorder.open(self.service_name, peer).close(text)

    def refusal_response(self) -> bytes:
        page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>503</title></head>"
                "<body><p>{0}</p></body></html>").format(_(
                    "The webmail has too many open connections just now. Wait a few seconds, "
                    "then reload the page.")).encode("utf-8")
        head = ("HTTP/1.1 503 Service Unavailable\r\n"
                f"Retry-After: {self.retry_after}\r\n"
                "Content-Type: text/html; charset=utf-8\r\n"
                "Content-Security-Policy: default-src 'none'\r\n"
                "X-Content-Type-Options: nosniff\r\n"
                "Cache-Control: no-store\r\n"
                f"Content-Length: {len(page)}\r\n"
                "Connection: close\r\n\r\n")
        return head.encode("ascii") + page

    # ---- the idle sweep
    def _schedule(self, loop) -> None:
        interval = max(0.05, min(1.0, self.idle_timeout / 4))
        self._sweeper = loop.call_later(interval, self._sweep_and_schedule, loop)

    def _sweep_and_schedule(self, loop) -> None:
        self.sweep(time.monotonic())
        self._schedule(loop)

    def sweep(self, now: float) -> None:
        for conn in list(self.open):
            transport = conn.transport
            if conn.busy or transport.is_closing():
                continue
            unsent = transport.get_write_buffer_size()
            if unsent and unsent != conn.unsent:  # a response is still going out: progress
                conn.unsent = unsent
                conn.last_activity = now
                continue
            conn.unsent = unsent
            if now - conn.last_activity < self.idle_timeout:
                continue
            seconds = f"{self.idle_timeout:g}"
            if unsent:
                text = _("closed: the client read none of the response for {0} s")
            elif conn.received_since:
                text = _("closed: a request was begun but not finished within {0} s "
                         "(its header lines never ended)")
            else:
                text = _("closed: no request for {0} s (idle keep-alive connection)")
            self.record(conn.peer, text.format(seconds))
            close = getattr(conn.inner, "force_close", None)
            if close is not None:
                close()
            if unsent:
                transport.abort()  # close() would wait for the unread bytes to go out
            else:
                transport.close()
