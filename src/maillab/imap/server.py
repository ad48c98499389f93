"""The thin asyncio layer around :class:`maillab.imap.core.ImapSession`.

It moves bytes between the socket and the core, records every byte in the transcript, turns on
TCP_NODELAY (and TCP_QUICKACK after each ``+`` continuation: see facts.md on the APPEND stall),
and wakes a session up when another session changes its selected folder (IDLE). It also does
the three things the core hands over (see ``core.py``), so that no client can hold up another:

* long answers (FETCH, SEARCH) are made piece by piece, and pipelined commands run one per
  turn of the loop, only as fast as the client reads the answers;
* passwords are checked in a worker thread, each when the login guard gives it its turn
  (``ctx.guard.admit``): commands pipelined behind a login wait for its answer;
* timers end sessions that stall (RFC 3501 5.4), with a line in the transcript saying why.

Settings it reads from the ``ServerContext``: ``ctx.tls`` (STARTTLS offered; IMAPS with
``implicit_tls=True``), ``ctx.strict`` (LOGINDISABLED until TLS), ``ctx.guard`` (password checks
spaced out while an account or address is being guessed) and ``ctx.options``:

``imap_timeout``
    autologout of a logged-in session after that many seconds without a complete command
    (default 30 minutes, RFC 3501's minimum; IDLE clients renew every 29 minutes, RFC 2177);
``imap_login_timeout``
    a session that has not logged in is closed that long after it connected or last tried to
    log in (default 3 minutes, as Dovecot);
``imap_command_timeout``
    a command that has begun to arrive must be complete within that time (default 5 minutes),
    so a client cannot keep a connection by trickling a byte now and then.

Limits (``parser.py``): a line 64 KiB, a literal 64 KiB (50 MiB in APPEND), a command 1 MiB.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from ..i18n import _
from ..net import ServerContext, quickack, set_nodelay
from ..serverlang import speaking
from ..tls import describe, serve
from .core import ImapSession, State

__all__ = ["start_imap", "ImapProtocol"]

log = logging.getLogger(__name__)

OUTPUT_CHUNK = 256 * 1024  # bytes of a long answer made and written at a time
DEFAULT_TIMEOUT = 30 * 60.0
DEFAULT_LOGIN_TIMEOUT = 3 * 60.0
DEFAULT_COMMAND_TIMEOUT = 5 * 60.0


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
        options = ctx.options
        self.timeout = float(options.get("imap_timeout", DEFAULT_TIMEOUT))
        self.login_timeout = float(options.get("imap_login_timeout", DEFAULT_LOGIN_TIMEOUT))
        self.command_timeout = float(options.get("imap_command_timeout", DEFAULT_COMMAND_TIMEOUT))
        now = self.loop.time()
        self._last_command = now  # when the last complete command arrived
        self._login_clock = now  # when the client connected or last tried to log in
        self._partial_since: float | None = None  # when the unfinished command began
        self._seen = (0, 0)  # the session's (commands_done, login_attempts) at the last look
        self._timer: asyncio.TimerHandle | None = None
        self._write_paused = False  # the client does not read our answers fast enough
        self._reading = True
        self._pump_scheduled = False
        self._login_task: asyncio.Task | None = None
        self._tls_task: asyncio.Task | None = None

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
        self.session = ImapSession(self.ctx, peer, wakeup=self._wakeup_threadsafe, defer_logins=True,
                                   commands_per_turn=1)
        if self.implicit_tls:
            self.session.tls = True
        self.session.greeting()
        self._pump()

    def data_received(self, data: bytes) -> None:
        if self.session.starttls_wanted:
            # Reading stopped before the STARTTLS go-ahead, so these bytes came through TLS:
            # the client's first command, sent with its last handshake message before asyncio
            # reported the handshake done. Keep them for the encrypted session.
            self._early_tls_data += data
            return
        self.conn.client(data)
        self.session.receive_data(data)
        self._pump()

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in (self._login_task, self._tls_task):
            if task is not None:
                task.cancel()
        if self.session is not None:
            self.session.connection_lost()
        self.ctx.connections.discard(self.transport)
        if self.conn is not None:
            self.conn.close("connection closed" if exc is None else f"connection lost: {exc}")

    # A client that does not read its replies must not make us buffer without end: while its
    # unread answers pile up, we neither make more of a long answer nor read further commands.
    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._schedule_pump()

    # ---- plumbing
    def _pump(self) -> None:
        """Send what the session has, then do what it waits for (a login, TLS, more output)."""
        self._pump_scheduled = False
        s = self.session
        if self.transport is None or self.transport.is_closing():
            return
        out = s.data_to_send(OUTPUT_CHUNK)
        if out:
            self.conn.server(out)
            self.transport.write(out)
        if self.conn.user is None and s.user is not None:
            self.conn.user = s.user
        if s.quickack_wanted:
            s.quickack_wanted = False
            quickack(self.transport)
        self._note_activity()
        if s.closing:
            self.transport.close()
            return
        if s.login_request is not None and self._login_task is None:
            self._login_task = self.loop.create_task(self._check_login(s.login_request))
        elif s.starttls_wanted and self._tls_task is None:
            self._tls_task = self.loop.create_task(self._start_tls())
        elif s.has_more and not self._write_paused:
            self._schedule_pump()  # the next piece after other connections had their turn
        self._update_reading()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.loop.call_soon(self._pump)

    def _update_reading(self) -> None:
        """Read from the client only while the session can take commands and the client reads
        our answers; otherwise the bytes wait in the kernel, not in our memory."""
        want = not (self._write_paused or self.session.busy or self.session.has_more)
        if want != self._reading and not self.transport.is_closing():
            self._reading = want
            (self.transport.resume_reading if want else self.transport.pause_reading)()

    async def _check_login(self, request) -> None:
        """Check a password off the loop, when the login guard says it is this key's turn:
        while the account or address is throttled, the right password is answered as late as a
        wrong one (``LoginGuard.admit``), each login of a pipelined packet on its own."""
        retry_after = None
        try:
            guard = getattr(self.ctx, "guard", None)
            turn = guard.admit(self.conn.peer, request.user) if guard is not None else None
            account = None
            if turn is not None and turn.refused:
                retry_after = turn.retry_after
            else:
                if turn is not None and turn.wait:
                    await asyncio.sleep(turn.wait)
                try:
                    account = await self.loop.run_in_executor(None, request.check)
                except Exception:  # a broken store: refuse, and keep the details in the log
                    log.exception("IMAP login check failed")
        finally:
            self._login_task = None
        if not self.transport.is_closing():
            self.session.finish_login(account, retry_after=retry_after)
            self._pump()

    # ---- timers
    def _note_activity(self) -> None:
        s = self.session
        now = self.loop.time()
        seen = (s.commands_done, s.login_attempts)
        if seen[0] != self._seen[0]:
            self._last_command = now
            self._partial_since = None
        if seen[1] != self._seen[1]:
            self._login_clock = now
        self._seen = seen
        if not s.command_in_progress:
            self._partial_since = None
        elif self._partial_since is None:
            self._partial_since = now
        when = self._next_deadline()[0]
        if self._timer is None or when < self._timer.when():  # a deadline came closer
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(when, self._check_timers)

    def _next_deadline(self) -> tuple[float, str]:
        """(when, why) of the first timer that would end this session."""
        if self.session.state is State.NOT_AUTHENTICATED:
            deadlines = [(self._login_clock + self.login_timeout, "login")]
        else:
            deadlines = [(self._last_command + self.timeout, "idle")]
        if self._partial_since is not None:
            deadlines.append((self._partial_since + self.command_timeout, "command"))
        return min(deadlines)

    def _check_timers(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        when, why = self._next_deadline()
        if self.loop.time() < when:
            self._timer = self.loop.call_at(when, self._check_timers)
            return
        _bye, event, seconds = self._timeout_texts(why)  # the transcript's line: the lab's words
        with speaking(self.session.language):  # the client's: in its LANGUAGE, if it asked
            bye = self._timeout_texts(why)[0]
        self.conn.event(event.format(seconds=seconds))
        self.session.autologout(bye)
        out = self.session.data_to_send()
        self.conn.server(out)
        self.transport.write(out)
        self.transport.close()

    def _timeout_texts(self, why: str) -> tuple[str, str, float]:
        """(the BYE text, the transcript's line, the seconds) for a timer that ran out."""
        if why == "login":
            seconds = self.login_timeout
            bye = _("Autologout; no login within {seconds:g} seconds; connect again").format(seconds=seconds)
            event = _("no login within {seconds:g} s of connecting (imap_login_timeout): closed")
        elif why == "command":
            seconds = self.command_timeout
            bye = _("Autologout; a command was begun but not finished within {seconds:g} seconds").format(
                seconds=seconds)
            event = _("a command begun but not finished within {seconds:g} s (imap_command_timeout): closed")
        else:
            seconds = self.timeout
            bye = _("Autologout; idle for {seconds:g} seconds").format(seconds=seconds)
            event = _("no command for {seconds:g} s (imap_timeout, RFC 3501 5.4): autologout")
        return bye, event, seconds

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
        finally:
            self._tls_task = None
        self._reading = True  # a new transport, reading
        self.conn.event(describe(self.transport) or _("TLS started"))
        self.session.tls_started()
        self._pump()
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
            self._pump()


async def start_imap(ctx: ServerContext, sock: socket.socket, *, implicit_tls: bool = False
                     ) -> asyncio.base_events.Server:
    """Serve IMAP on an already bound and listening socket (from ``net.bind_listener``).

    ``implicit_tls=True`` makes it IMAPS (port 993): TLS from the first byte, with ``ctx.tls``.
    A client beyond the lab's connection limit gets ``* BYE [UNAVAILABLE]`` as its greeting
    (RFC 3501 7.1.5, RFC 5530) and is closed.
    """
    busy = "* BYE [UNAVAILABLE] " + _("{host} has too many connections open; close one of yours "
                                      "or try again in a moment").format(host=ctx.hostname)
    return await serve(ctx, sock, lambda: ImapProtocol(ctx, implicit_tls), implicit_tls=implicit_tls,
                       busy_reply=busy, service=ctx.service_name("imaps" if implicit_tls else "imap"))
