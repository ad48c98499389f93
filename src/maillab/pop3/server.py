"""The POP3 server: the sans-IO :class:`~maillab.pop3.core.Pop3Session` on an asyncio socket.

All the protocol lives in ``core.py``; this file moves bytes, records them in the transcript,
and does what the session hands over, so that no client can hold up another:

* passwords are checked in a worker thread, each when the login guard gives it its turn
  (``ctx.guard.admit``): commands pipelined behind a login wait for its answer;
* a big message goes out piece by piece, and pipelined commands are answered one per turn of
  the loop, only as fast as the client reads the answers;
* the idle timeout (RFC 1939 section 3: at least 10 minutes) counts complete commands only, so
  a client trickling a byte now and then cannot keep a connection; when it expires the
  connection is closed *without* entering UPDATE, so nothing is deleted.

Options read from ``ctx.options``: ``pop3_timeout`` (seconds, default 600) and ``pop3_apop``
(default True; False leaves the APOP timestamp out of the greeting, see ``Pop3Session``).

The store is called from the loop thread directly: it is guarded by its own lock.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from ..i18n import _
from ..net import ServerContext, set_nodelay
from ..tls import describe, serve, start_tls_server
from .core import Pop3Session

__all__ = ["start_pop3", "Pop3Protocol"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0  # seconds; RFC 1939 asks for at least 10 minutes


class Pop3Protocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, ctx: ServerContext, implicit_tls: bool = False):
        self.ctx = ctx
        self.implicit_tls = implicit_tls  # the POP3S port (995): TLS from the first byte
        self.timeout = float(ctx.options.get("pop3_timeout", DEFAULT_TIMEOUT))
        self.transport: asyncio.Transport | None = None
        self.session: Pop3Session | None = None
        self.conn = None  # the transcript's record of this connection
        self._last_heard = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._close_reason: str | None = None  # why we closed, for the transcript
        self._paused = False  # the client is not reading our answers fast enough
        self._raw_transport = None  # the TCP transport under TLS, after STLS
        self._early_tls_data = b""  # encrypted-session bytes that beat the end of the handshake
        self._lost = False
        self._commands_seen = 0  # the session's commands_done at the last look
        self._login_task: asyncio.Task | None = None
        self._reading = True

    # ---- asyncio callbacks
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.ctx.connections.add(transport)
        set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self.conn = self.ctx.recorder.open(
            self.ctx.service_name("pop3s" if self.implicit_tls else "pop3"), peer)
        tls = describe(transport)
        if tls:
            self.conn.event(tls)
        self.session = Pop3Session(self.ctx, apop=bool(self.ctx.options.get("pop3_apop", True)),
                                   tls_available=self.ctx.tls is not None and not self.implicit_tls,
                                   secure=self.implicit_tls, peer=peer, defer_logins=True,
                                   commands_per_turn=1)
        self._send(self.session.greeting())
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        self._timer = loop.call_later(self.timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.session.starttls_pending:
            # Reading stopped before "+OK begin TLS", so these bytes came through TLS: the
            # client's first command, sent with its last handshake message before asyncio
            # told us the handshake is done. Keep them for the encrypted session.
            self._early_tls_data += data
            return
        self.conn.client(data)
        self._answer(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self.ctx.connections.discard(self.transport)
        self.ctx.connections.discard(self._raw_transport)
        if self._timer is not None:
            self._timer.cancel()
        if self._login_task is not None:
            self._login_task.cancel()
        if self.session is None:  # connection_made never ran to its end
            return
        # Without QUIT this deletes nothing; it only gives the maildrop back.
        self.session.connection_lost()
        reason = self._close_reason
        if reason is None:  # the client went away
            reason = _("connection lost ({0})").format(exc) if exc else _("connection closed")
        self.conn.close(reason)

    # Flow control: a client that pipelines many RETRs but does not read the answers must
    # not make us hold every message in memory. While its unread answers pile up, we neither
    # read more commands nor answer those already received (the session keeps them pending).
    def pause_writing(self) -> None:
        self._paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if not self.transport.is_closing():
            self._update_reading()
            if self.session.pending and self._login_task is None:
                self._answer()

    # ---- helpers
    def _answer(self, data: bytes = b"") -> None:
        """Give the session the client's bytes and send its answers."""
        reply = self.session.receive_data(data)
        if self.session.commands_done != self._commands_seen:  # only whole commands count
            self._commands_seen = self.session.commands_done
            self._last_heard = asyncio.get_running_loop().time()
        if self.session.starttls_pending:
            # Stop reading *before* the go-ahead goes out: the client's TLS hello must reach
            # the TLS layer, not this clear-text protocol.
            self.transport.pause_reading()
        if reply:
            self._send(reply)
        if self.session.starttls_pending:
            asyncio.get_running_loop().create_task(self._start_tls())
            return
        if self.session.login_request is not None:
            self._login_task = asyncio.get_running_loop().create_task(
                self._check_login(self.session.login_request))
        elif self.session.closed:  # after QUIT, or a fatal error
            self._close_reason = (_("closed after a server error") if self.session.failed
                                  else _("closed after QUIT"))
            self.transport.close()  # sends what is still buffered, then closes
            return
        elif self.session.pending and not self._paused:
            # More to send (pipelined commands, the rest of a message) and the client keeps
            # up: go on after the other connections had their turn.
            asyncio.get_running_loop().call_soon(self._answer_pending)
        self._update_reading()

    def _update_reading(self) -> None:
        """Read from the client only while nothing of it waits to be answered and it reads our
        answers; otherwise its bytes wait in the kernel, not in our memory."""
        s = self.session
        want = not (self._paused or s.pending or self._login_task is not None or s.closed)
        if want != self._reading and not self.transport.is_closing():
            self._reading = want
            (self.transport.resume_reading if want else self.transport.pause_reading)()

    async def _check_login(self, request) -> None:
        """Check a password off the loop, when the login guard says it is this key's turn:
        while the account or address is throttled, the right password is answered as late as a
        wrong one (``LoginGuard.admit``), each login of a pipelined packet on its own."""
        loop = asyncio.get_running_loop()
        try:
            turn = self.ctx.guard.admit(self.conn.peer, request.user)
            if turn.refused:
                reply = self.session.finish_login(None, retry_after=turn.retry_after)
            else:
                if turn.wait:
                    await asyncio.sleep(turn.wait)
                try:
                    result = await loop.run_in_executor(None, request.check)
                except Exception:  # a broken store: refuse, and keep the details in the log
                    log.exception("POP3 login check failed")
                    result = None
                if self.transport.is_closing():
                    return
                reply = self.session.finish_login(result)
            if self.session.account is not None and self.conn.user is None:
                self.conn.user = self.session.account.login
        finally:
            self._login_task = None
        self._answer_late(reply)

    def _answer_late(self, reply: bytes) -> None:
        if self.transport.is_closing():
            return
        self._send(reply)
        self._reading = False  # make _answer decide afresh
        self._answer()

    async def _start_tls(self) -> None:
        """After "+OK begin TLS negotiation": the handshake, then the same session, encrypted."""
        raw = self.transport
        try:
            self.transport = await start_tls_server(self, raw, self.ctx.server_tls_context())
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            # asyncio does not tell the protocol when a STARTTLS handshake fails: end it here.
            self._close_reason = _("TLS handshake failed ({0})").format(e)
            raw.abort()
            self.connection_lost(None)
            return
        self._raw_transport = raw
        self.ctx.connections.add(self.transport)
        self.conn.event(describe(self.transport) or "TLS established")
        self.session.tls_started()
        early, self._early_tls_data = self._early_tls_data, b""
        if early:
            self.data_received(early)

    def _answer_pending(self) -> None:
        if not self._paused and not self.transport.is_closing() and self.session.pending \
                and self._login_task is None:
            self._answer()

    def _send(self, data: bytes) -> None:
        self.conn.server(data)
        self.transport.write(data)

    def _check_idle(self) -> None:
        """Close the connection once the client has sent no complete command for ``timeout``
        seconds (a line trickled byte by byte does not count until it ends)."""
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_heard
        if quiet < self.timeout:
            self._timer = loop.call_later(self.timeout - quiet, self._check_idle)
            return
        self._close_reason = _("idle: no complete command for {0:g} s (pop3_timeout, RFC 1939 3): "
                               "closed without UPDATE (nothing deleted)").format(self.timeout)
        self.transport.abort()  # no reply is sent on timeout (RFC 1939 section 3)


async def start_pop3(ctx: ServerContext, sock: socket.socket, *, implicit_tls: bool = False
                     ) -> asyncio.base_events.Server:
    """Serve POP3 on ``sock`` (bound and listening, from ``net.bind_listener``) in this loop.

    ``implicit_tls=True`` makes it POP3S (port 995): TLS from the first byte, with ``ctx.tls``.
    A client beyond the lab's connection limit gets ``-ERR [SYS/TEMP]`` instead of a greeting
    (RFC 2449 8, RFC 3206) and is closed.
    """
    busy = "-ERR [SYS/TEMP] " + _("{host} has too many connections open; close one of yours "
                                  "or try again in a moment").format(host=ctx.hostname)
    return await serve(ctx, sock, lambda: Pop3Protocol(ctx, implicit_tls), implicit_tls=implicit_tls,
                       busy_reply=busy, service=ctx.service_name("pop3s" if implicit_tls else "pop3"))
