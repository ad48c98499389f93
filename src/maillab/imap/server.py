"""The thin asyncio layer around :class:`maillab.imap.core.ImapSession`.

It moves bytes between the socket and the core, records every byte in the transcript, turns on
TCP_NODELAY (and TCP_QUICKACK after each ``+`` continuation: see facts.md on the APPEND stall),
and wakes a session up when another session changes its selected folder (IDLE).

Settings it reads from the ``ServerContext``: ``ctx.tls`` (STARTTLS offered; IMAPS with
``implicit_tls=True``), ``ctx.strict`` (LOGINDISABLED until TLS), ``ctx.guard`` (late answers
to repeated failed logins) and ``ctx.options["imap_timeout"]`` (autologout, default 30 minutes).
Limits (``parser.py``): a line 64 KiB, a literal 64 KiB (50 MiB in APPEND), a command 1 MiB.
"""

from __future__ import annotations

import asyncio
import socket

from ..i18n import _
from ..net import ServerContext, quickack, set_nodelay
from ..tls import describe, serve
from .core import ImapSession

__all__ = ["start_imap", "ImapProtocol"]


class ImapProtocol(asyncio.Protocol):
    def __init__(self, ctx: ServerContext, implicit_tls: bool = False):
        self.ctx = ctx
        self.implicit_tls = implicit_tls  # the IMAPS port (993): TLS from the first byte
        self.transport = None
        self.conn = None
        self.session: ImapSession | None = None
        self.loop = asyncio.get_running_loop()
        self._wake_scheduled = False
        self._early_tls_data = b""  # encrypted-session bytes that beat the end of the handshake
        # RFC 3501 5.4: an inactivity autologout timer of at least 30 minutes (IDLE included:
        # clients re-issue IDLE every 29 minutes, RFC 2177).
        self.timeout = float(ctx.options.get("imap_timeout", 30 * 60))
        self._last_activity = self.loop.time()
        self._timer = None

    # ---- asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        set_nodelay(transport)
        peername = transport.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else ""
        self.conn = self.ctx.recorder.open(
            self.ctx.service_name("imaps" if self.implicit_tls else "imap"), peer)
        tls = describe(transport)
        if tls:
            self.conn.event(tls)
        self.ctx.connections.add(transport)
        self.session = ImapSession(self.ctx, peer, wakeup=self._wakeup_threadsafe)
        if self.implicit_tls:
            self.session.tls = True
        self.session.greeting()
        self._flush()
        self._timer = self.loop.call_later(self.timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._last_activity = self.loop.time()
        if self.session.starttls_wanted:
            # Reading stopped before the STARTTLS go-ahead, so these bytes came through TLS:
            # the client's first command, sent with its last handshake message before asyncio
            # reported the handshake done. Keep them for the encrypted session.
            self._early_tls_data += data
            return
        self.conn.client(data)
        self.session.receive_data(data)
        self._flush()

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.session is not None:
            self.session.connection_lost()
        self.ctx.connections.discard(self.transport)
        if self.conn is not None:
            self.conn.close("connection closed" if exc is None else f"connection lost: {exc}")

    def pause_writing(self) -> None:
        # A client that does not read its replies must not make us buffer without end.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    # ---- plumbing
    def _flush(self) -> None:
        s = self.session
        if s.failed_user is not None:
            guard = getattr(self.ctx, "guard", None)
            delay = guard.delay(self.conn.peer, s.failed_user) if guard is not None else 0
            s.failed_user = None
            if delay:  # a refused login is answered late; nothing else is read meanwhile
                self.transport.pause_reading()
                self.loop.call_later(delay, self._answer_late)
                return
        out = s.data_to_send()
        if out:
            self.conn.server(out)
            if not self.transport.is_closing():
                self.transport.write(out)
        if self.conn.user is None and s.user is not None:
            self.conn.user = s.user
        if s.quickack_wanted:
            s.quickack_wanted = False
            quickack(self.transport)
        if s.closing:
            self.transport.close()
        elif s.starttls_wanted:
            self.transport.pause_reading()
            self.loop.create_task(self._start_tls())

    def _check_idle(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        quiet = self.loop.time() - self._last_activity
        if quiet >= self.timeout:
            self.session.autologout()
            self._flush()
        else:
            self._timer = self.loop.call_later(self.timeout - quiet, self._check_idle)

    def _answer_late(self) -> None:
        if self.transport.is_closing():
            return
        self.transport.resume_reading()
        self._flush()

    async def _start_tls(self) -> None:
        ssl_context = (self.ctx.server_tls_context() if hasattr(self.ctx, "server_tls_context")
                       else None) or self.ctx.options.get("tls_context")
        try:
            old = self.transport
            self.transport = await self.loop.start_tls(old, self, ssl_context, server_side=True)
            self.ctx.connections.discard(old)
            self.ctx.connections.add(self.transport)
        except Exception as e:  # a failed handshake ends the connection
            self.conn.event(_("TLS handshake failed: {error}").format(error=e))
            self.transport.close()
            return
        self.conn.event(describe(self.transport) or _("TLS started"))
        self.session.tls_started()
        self._flush()
        early, self._early_tls_data = self._early_tls_data, b""
        if early:
            self.data_received(early)

    def _wakeup_threadsafe(self) -> None:
        # Called by the store in whatever thread changed the folder.
        if not self._wake_scheduled:
            self._wake_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._woken)
            except RuntimeError:  # the loop is closed: the lab is stopping
                pass

    def _woken(self) -> None:
        self._wake_scheduled = False
        if self.session is not None and self.transport is not None and not self.transport.is_closing():
            self.session.changes_arrived()
            self._flush()


async def start_imap(ctx: ServerContext, sock: socket.socket, *, implicit_tls: bool = False
                     ) -> asyncio.base_events.Server:
    """Serve IMAP on an already bound and listening socket (from ``net.bind_listener``).

    ``implicit_tls=True`` makes it IMAPS (port 993): TLS from the first byte, with ``ctx.tls``.
    """
    return await serve(ctx, sock, lambda: ImapProtocol(ctx, implicit_tls), implicit_tls=implicit_tls)
