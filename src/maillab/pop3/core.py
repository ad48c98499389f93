"""The POP3 protocol (RFC 1939, with RFC 2449 CAPA) as a sans-IO state machine.

A :class:`Pop3Session` knows nothing about sockets: feed it the bytes a client sent with
:meth:`Pop3Session.receive_data` and it returns the bytes to send back. That makes it easy to
test and easy to read, because the whole protocol is here:

    AUTHORIZATION --USER+PASS or APOP--> TRANSACTION --QUIT--> UPDATE (deletions happen) --> closed
          |                                   |
          +--QUIT--> closed                   +--connection dropped--> closed, nothing deleted

* In AUTHORIZATION the client proves who it is. The maildrop is then locked: one POP3 session
  per maildrop at a time (RFC 1939 section 8).
* In TRANSACTION the client sees a *snapshot* of INBOX taken at login. Messages are numbered
  1, 2, 3 ... in that snapshot and keep their numbers for the whole session; DELE only *marks* a
  message (it disappears from STAT/LIST/RETR, its number is never reused) and RSET unmarks all.
* Only QUIT in TRANSACTION enters UPDATE, where the marked messages are really removed.
  A connection that just drops (or times out) deletes nothing.

Extension points for later RFCs: STLS (RFC 2595) and AUTH (RFC 5034) are more commands for
AUTHORIZATION (add them to ``COMMANDS``) plus lines in :meth:`Pop3Session.capabilities`.
After STLS the loop in :meth:`Pop3Session.receive_data` must stop and drop whatever the client
pipelined behind it (commands sent in plain text must not run inside TLS).

Two things a server may do outside the loop it runs on, so the session hands them over:

* A message is sent in pieces of at most ``OUTPUT_BUDGET`` bytes: :attr:`Pop3Session.pending`
  stays true, and ``receive_data()`` with no new bytes gives the next piece. With
  ``commands_per_turn`` a call also answers at most that many pipelined commands, so one
  client's burst cannot keep a server from its others.
* Checking a password is slow on purpose (scrypt). With ``defer_logins=True`` a PASS, APOP or
  AUTH leaves a :class:`LoginRequest` in :attr:`Pop3Session.login_request`; the server runs
  ``request.check()`` in a worker thread and ``session.finish_login(result)`` gives the reply.
  Without it (tests) the check runs at once.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from dataclasses import dataclass

from .. import __version__
from ..i18n import _
from .. import serverlang
from ..net import LoginAttempt, busy_login_hint
from ..serverlang import speaking

__all__ = ["Pop3Session", "State", "MAX_LINE"]

log = logging.getLogger(__name__)

# RFC 2449 limits a command line to 255 octets (CRLF included). We are a little more generous,
# but a line longer than this is refused, and a client that never sends a newline cannot make
# us buffer more than this.
MAX_LINE = 512

# A client may pipeline many RETRs at once. Answering all of them in one go could need
# gigabytes, so one call answers commands until about this much output is ready; the rest
# waits in the buffer (see Pop3Session.pending) until the caller asks again. A big message
# goes out in pieces of this size too.
OUTPUT_BUDGET = 1 << 20

CRLF = b"\r\n"


class State(enum.Enum):
    """The three states of a POP3 session (RFC 1939 section 3)."""

    AUTHORIZATION = "AUTHORIZATION"  # waiting for the client to log in
    TRANSACTION = "TRANSACTION"  # logged in: the client reads and marks messages
    UPDATE = "UPDATE"  # after QUIT: marked messages are removed, then the session ends


# Which commands each state accepts, and the method that handles them. The keywords stay
# exactly as the RFCs spell them.
COMMANDS: dict[State, dict[str, str]] = {
    State.AUTHORIZATION: {
        "USER": "do_user", "PASS": "do_pass", "APOP": "do_apop", "AUTH": "do_auth",
        "STLS": "do_stls", "CAPA": "do_capa", "QUIT": "do_quit", "LANG": "do_lang",
        "UTF8": "do_utf8",
    },
    State.TRANSACTION: {
        "STAT": "do_stat", "LIST": "do_list", "RETR": "do_retr", "DELE": "do_dele",
        "NOOP": "do_noop", "RSET": "do_rset", "TOP": "do_top", "UIDL": "do_uidl",
        "CAPA": "do_capa", "QUIT": "do_quit", "LANG": "do_lang",
    },
    State.UPDATE: {},
}
KNOWN_COMMANDS = {kw for table in COMMANDS.values() for kw in table}

# Learners who typed into the wrong server get told so.
SMTP_COMMANDS = {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "VRFY", "EXPN"}


class Refused(Exception):
    """Raised by a helper deep in a command to answer with this -ERR reply instead."""

    def __init__(self, reply: bytes):
        super().__init__(reply)
        self.reply = reply


@dataclass
class Message:
    """One message of the session's snapshot of INBOX."""

    number: int  # 1, 2, 3 ... fixed for the whole session
    uid: int  # the store's UID (the same the IMAP server shows)
    size: int  # octets as the client counts them (CRLF line ends)
    deleted: bool = False  # marked by DELE; removed only in UPDATE


_timestamp_lock = threading.Lock()
_last_clock = 0


def make_timestamp(host: str) -> str:
    """An RFC 1939 APOP timestamp ``<pid.clock@host>``, different for every greeting."""
    global _last_clock
    with _timestamp_lock:
        _last_clock = max(time.time_ns(), _last_clock + 1)
        clock = _last_clock
    return f"<{os.getpid()}.{clock}@{host}>"


class LoginRequest:
    """A login the session waits for (``defer_logins=True``): ``check()`` runs in a worker
    thread, then ``session.finish_login(result)`` gives the reply."""

    def __init__(self, user: str, check, answer):
        self.user = user  # for LoginGuard.admit: whose login attempts to count
        self.check = check  # () -> result; slow on purpose (scrypt)
        self.answer = answer  # result -> reply bytes, in the session's thread


def byte_stuff(data: bytes) -> bytes:
    """Make message text safe for a multi-line reply (RFC 1939 section 3).

    A line that starts with "." gets one more "." in front, so that a line holding just "."
    can only mean the end of the reply. Linear in the size of the data.
    """
    stuffed = data.replace(b"\n.", b"\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def stuffed_pieces(data: bytes, size: int = OUTPUT_BUDGET):
    """``byte_stuff(data)`` in pieces made from about ``size`` bytes each, so that a big
    message is never copied whole. A "." right after a cut is stuffed when the cut fell at a
    line start."""
    line_start = True
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        stuffed = piece.replace(b"\n.", b"\n..")
        yield b"." + stuffed if line_start and piece.startswith(b".") else stuffed
        line_start = piece.endswith(b"\n")


def top_of(data: bytes, lines: int) -> bytes:
    """The header, the blank line after it, and the first ``lines`` lines of the body."""
    if data.startswith(CRLF):  # a message with no header at all
        end = 2
    else:
        blank = data.find(b"\r\n\r\n")
        if blank < 0:  # no body at all: the whole message is header
            return data
        end = blank + 4
    for _line in range(lines):
        eol = data.find(CRLF, end)
        if eol < 0:
            return data
        end = eol + 2
    return data[:end]


def _number(arg: bytes) -> int | None:
    """A message number or line count: decimal digits only (no sign, no spaces)."""
    if re.fullmatch(rb"[0-9]+", arg):
        return int(arg)
    return None


def _one_line(text: str) -> str:
    """Reply text can never end its line early: control characters become escapes."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: "\\x%02x" % ord(m.group()), text)


def _show(token: bytes, limit: int = 20) -> str:
    """A client's word, safe to quote in a reply: printable ASCII only, and short."""
    text = "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in token[:limit])
    return text + ("..." if len(token) > limit else "")


class Pop3Session:
    """One POP3 session, from the greeting to QUIT or a dropped connection.

    ``ctx`` is the lab's :class:`~maillab.net.ServerContext`: logins are checked with
    ``ctx.authenticate`` (accounts of this host's domain only) and the greeting names
    ``ctx.hostname``.

    With ``apop=False`` the greeting carries no timestamp and APOP is refused. Clients notice:
    curl, for one, always uses APOP when the greeting offers it, and gives up (no USER/PASS
    fallback) if APOP fails, so a server with accounts that have no APOP secret may prefer this.
    """

    def __init__(self, ctx, *, timestamp_banner_host: str | None = None, apop: bool = True,
                 tls_available: bool = False, secure: bool = False, peer: str = "",
                 defer_logins: bool = False, commands_per_turn: int | None = None):
        self.ctx = ctx
        self.peer = peer  # "host:port" of the client, for the login audit
        # STLS (RFC 2595) is offered when the server has a certificate and the session is not
        # encrypted yet; ``secure`` is True on the implicit-TLS port (995) or after STLS.
        self.tls_available = tls_available
        self.secure = secure
        self.starttls_pending = False  # STLS answered: the server must now start TLS
        self.auth_failed = False  # the last batch of commands ended on a refused login
        self.language: str | None = None  # LANG (RFC 6856): None is i-default, never asked
        self._sasl: str | None = None  # AUTH PLAIN sent without data: waiting for it
        self.state = State.AUTHORIZATION
        self.closed = False  # True after QUIT, a fatal error, or once the connection is gone
        self.failed = False  # True if the session ended on an internal error
        self.account = None  # the logged-in account, in TRANSACTION
        # The RFC 1939 APOP timestamp, shown at the end of the greeting (None: no APOP here).
        self.timestamp = make_timestamp(timestamp_banner_host or ctx.hostname) if apop else None
        self.messages: list[Message] = []  # the snapshot taken at login
        self._folder = None
        self._locked_account = None  # whose maildrop_lock we hold, if any
        self._user: str | None = None  # given by USER, waiting for PASS
        self._buffer = b""
        self._discarding = False  # inside an over-long line: drop bytes up to the next newline
        self.defer_logins = defer_logins
        self.login_request: LoginRequest | None = None  # a login waiting for finish_login()
        self._stream = None  # the rest of a long reply (a big message): an iterator of bytes
        self.commands_done = 0  # complete command lines so far (the server's idle timer)
        self.commands_per_turn = commands_per_turn

    # ------------------------------------------------------------------ bytes in, bytes out

    def greeting(self) -> bytes:
        """The first line the server sends. The timestamp at its end is for APOP."""
        text = f"{self.ctx.hostname} {_('POP3 server ready')}"
        return self._ok(f"{text} {self.timestamp}" if self.timestamp else text)

    def receive_data(self, data: bytes = b"") -> bytes:
        """Take bytes from the client (any chunks); return the bytes to send back.

        Several commands in one chunk (RFC 2449 PIPELINING) are answered in order; a partial
        line waits for the rest. If the answers grow past ``OUTPUT_BUDGET``, the remaining
        commands wait: :attr:`pending` is then true, and ``receive_data()`` (with no new
        data) answers the next ones once the caller has sent these.
        """
        if self.closed:
            return b""
        replies: list[bytes] = []
        size = 0
        self.auth_failed = False
        buffer, start = self._buffer + data, 0
        done = 0
        # Stop after STLS (what follows was sent in clear text and must not run inside TLS),
        # while a login is checked, and after a refused login (answered late, see LoginGuard).
        while not self.closed and size < OUTPUT_BUDGET and not self.starttls_pending \
                and not self.auth_failed and self.login_request is None:
            if self._stream is not None:
                piece = next(self._stream, None)
                if piece is None:
                    self._stream = None
                else:
                    replies.append(piece)
                    size += len(piece)
                continue
            if self.commands_per_turn is not None and done >= self.commands_per_turn:
                break  # the next ones in the next call (pending stays true)
            eol = buffer.find(b"\n", start)
            if eol < 0:
                if len(buffer) - start > MAX_LINE:
                    # A line this long is refused anyway: forget it now rather than buffer it.
                    start, self._discarding = len(buffer), True
                break
            line, start = buffer[start:eol], eol + 1
            self.commands_done += 1
            done += 1
            if self._discarding or len(line) + 1 > MAX_LINE:
                self._discarding = False
                with speaking(self.language):
                    reply = self._err(_("line too long") + " (" + _(
                        "a POP3 command line is at most 255 octets, ending with CRLF") + ")")
            elif self._sasl is not None:
                with speaking(self.language):
                    reply = self._sasl_response(line.removesuffix(b"\r"))
            else:
                reply = self.handle_line(line.removesuffix(b"\r"))
            replies.append(reply)
            size += len(reply)
        # After QUIT the rest is ignored; after STLS it is thrown away (RFC 2595 section 4).
        self._buffer = b"" if self.closed or self.starttls_pending else buffer[start:]
        return b"".join(replies)

    def tls_started(self) -> None:
        """The server finished the TLS handshake after STLS: the session is now encrypted."""
        self.starttls_pending = False
        self.secure = True
        self._buffer = b""

    @property
    def pending(self) -> bool:
        """Is there more to answer: the rest of a long reply, or complete commands?"""
        return not self.closed and not self.starttls_pending and self.login_request is None and (
            self._stream is not None or b"\n" in self._buffer)

    def finish_login(self, result, retry_after: float | None = None) -> bytes:
        """The result of ``login_request.check()``: the reply to the login. (Then, as after
        every reply, ``receive_data()`` answers what the client sent behind it.)
        ``retry_after``: the password was not checked (the login guard has too many attempts
        queued): a temporary refusal (RFC 3206 SYS/TEMP)."""
        request, self.login_request = self.login_request, None
        if request is None or self.closed:
            return b""
        with speaking(self.language):
            if retry_after is not None:
                return self._err(busy_login_hint(retry_after), code="SYS/TEMP")
            return request.answer(result)

    def connection_lost(self) -> None:
        """The connection is gone without QUIT: release the maildrop, delete nothing."""
        self.closed = True
        self._buffer = b""
        self._stream = None
        self.login_request = None
        self._release_maildrop()

    on_close = connection_lost

    # ------------------------------------------------------------------ commands

    def handle_line(self, line: bytes) -> bytes:
        """Answer one command line (without its line ending), with the text of the reply in the
        session's language (LANG, RFC 6856)."""
        with speaking(self.language):
            return self._answer_line(line)

    def _answer_line(self, line: bytes) -> bytes:
        words = line.split(maxsplit=1)
        if not words:
            return self._err(_("empty command") + " (" + _(
                "type a command such as CAPA, or QUIT to leave") + ")")
        keyword, rest = words[0], (words[1] if len(words) > 1 else b"")
        name = keyword.upper().decode("ascii") if keyword.isalnum() else None  # (UTF8: a digit)
        if name not in KNOWN_COMMANDS:
            return self._unknown(keyword)
        method = COMMANDS[self.state].get(name)
        if method is None:
            return self._wrong_state()
        try:
            if name == "PASS":
                # The password is the rest of the line: it may contain spaces (RFC 1939).
                return self.do_pass(rest)
            return getattr(self, method)(rest.split())
        except Refused as refusal:
            return refusal.reply
        except Exception:
            # A bug or a broken store: say so and end the session (fatal), keeping the maildrop
            # as it is. The traceback goes to the log, not to the client.
            log.exception("POP3 command %s failed", name)
            self.failed = True
            self.connection_lost()
            return self._err(_("internal server error; this session ends, please reconnect"),
                             code="SYS/TEMP")

    def _unknown(self, keyword: bytes) -> bytes:
        shown = _show(keyword)
        if shown.upper() in SMTP_COMMANDS:
            hint = _("this is a POP3 server; {0} is an SMTP command").format(shown.upper())
        elif self.state is State.AUTHORIZATION:
            hint = _("POP3 commands are three or four letters; log in with USER and PASS, "
                     "or APOP; CAPA lists what this server can do")
        else:
            hint = _("POP3 commands are three or four letters: STAT, LIST, RETR, TOP, DELE, "
                     "RSET, UIDL, NOOP, QUIT")
        return self._err(_("unknown command") + f" '{shown}' ({hint})")

    def _wrong_state(self) -> bytes:
        if self.state is State.AUTHORIZATION:
            hint = _("log in first with USER and PASS")
        else:
            hint = _("you are logged in already")
        return self._err(_("command not valid in this state") + f" ({hint})")

    # ---- AUTHORIZATION

    @property
    def cleartext_refused(self) -> bool:
        """In a strict lab no password may cross an unencrypted connection."""
        return self.ctx.strict and not self.secure

    def _encryption_first(self) -> bytes:
        return self._err(_("encryption required before logging in") + " (" + _(
            "send STLS first, or use the POP3S port (995)") + ")", code="AUTH")

    def do_user(self, args: list[bytes]) -> bytes:
        if self.cleartext_refused:
            return self._encryption_first()
        if len(args) != 1:
            return self._syntax(_("USER takes one name, e.g. USER alice"))
        self._user = args[0].decode("utf-8", "replace")
        # The same answer whether or not the user exists: that is for PASS to tell.
        return self._ok(_("now send your password with PASS"))

    def do_pass(self, password: bytes) -> bytes:
        if self._user is None:
            return self._err(_("give your name with USER first"))
        user, self._user = self._user, None
        if not password:
            return self._syntax(_("PASS takes your password, e.g. PASS secret"))
        return self._check_password(user, password.decode("utf-8", "replace"), "USER/PASS")

    def _check_password(self, user: str, password: str, mechanism: str) -> bytes:
        def check():
            return self.ctx.authenticate(user, password, protocol="pop3", peer=self.peer,
                                         mechanism=mechanism, secure=self.secure)

        def answer(account) -> bytes:
            if account is None:
                self.auth_failed = True
                return self._err(_("invalid user name or password"), code="AUTH")
            return self._log_in(account)
        return self._login(LoginRequest(user, check, answer))

    def _login(self, request: LoginRequest) -> bytes:
        if self.defer_logins:
            self.login_request = request  # the server checks it off its loop: finish_login()
            return b""
        return request.answer(request.check())

    # ---- STLS (RFC 2595) and AUTH PLAIN (RFC 5034, RFC 4616)

    def do_stls(self, args: list[bytes]) -> bytes:
        if args:
            return self._syntax(_("STLS takes no arguments"))
        if self.secure:
            return self._err(_("this session is encrypted already"))
        if not self.tls_available:
            return self._err(_("TLS is not available on this server"))
        self.starttls_pending = True
        return self._ok(_("begin TLS negotiation"))

    def do_auth(self, args: list[bytes]) -> bytes:
        if not args:
            # RFC 5034 leaves bare AUTH undefined; many servers list their mechanisms.
            return self._multiline(_("SASL mechanisms follow"), b"PLAIN\r\n")
        if len(args) > 2:
            return self._syntax(_("AUTH takes a mechanism and, optionally, its first response"))
        if args[0].upper() != b"PLAIN":
            return self._err(_("unsupported authentication mechanism") + " (" + _(
                "this server offers AUTH PLAIN") + ")")
        if self.cleartext_refused:
            return self._encryption_first()
        if len(args) == 2:
            return self._sasl_plain(args[1])
        self._sasl = "PLAIN"
        return b"+ \r\n"  # an empty challenge: send base64 of "\0user\0password"

    def _sasl_response(self, line: bytes) -> bytes:
        self._sasl = None
        if line.strip() == b"*":
            return self._err(_("authentication cancelled"))
        return self._sasl_plain(line.strip())

    def _sasl_plain(self, response: bytes) -> bytes:
        try:
            authzid, user, password = base64.b64decode(response, validate=True).split(b"\0")
        except (binascii.Error, ValueError):
            return self._err(_("malformed AUTH PLAIN data") + " (" + _(
                "send base64 of \\0user\\0password, e.g. base64.b64encode(b'\\0alice\\0secret')")
                + ")")
        user_s = user.decode("utf-8", "replace")
        if authzid and authzid != user:
            self.auth_failed = True
            return self._err(_("cannot act for another user"), code="AUTH")
        return self._check_password(user_s, password.decode("utf-8", "replace"), "AUTH PLAIN")

    def do_apop(self, args: list[bytes]) -> bytes:
        if self.cleartext_refused:  # the digest of a known password is crackable offline
            return self._encryption_first()
        if len(args) != 2:
            return self._syntax(_("APOP takes a name and an MD5 digest, e.g. APOP alice "
                                  "c4c9334bac560ecc979e58001b3e22fb"))
        if self.timestamp is None:
            return self._err(_("APOP is not enabled on this server") + " (" + _(
                "log in with USER and PASS instead") + ")", code="AUTH")
        user = args[0].decode("utf-8", "replace")
        digest = args[1].decode("ascii", "replace").lower()

        def check():
            account = self._find_account(user)
            ok = account is not None and account.apop_secret is not None and hmac.compare_digest(
                digest.encode(), hashlib.md5((self.timestamp + account.apop_secret).encode()).hexdigest().encode())
            self.ctx.guard.record(LoginAttempt(time.time(), self.ctx.service_name("pop3"), user,
                                               self.peer, "APOP", self.secure, ok))
            return account, ok

        def answer(result) -> bytes:
            account, ok = result or (None, False)  # None: the check itself failed
            if not ok:
                self.auth_failed = True
            if account is None:
                return self._err(_("invalid user name or digest"), code="AUTH")
            if account.apop_secret is None:
                return self._err(_("APOP is not enabled for this account") + " (" + _(
                    "log in with USER and PASS instead") + ")", code="AUTH")
            if not ok:
                return self._err(_("invalid user name or digest") + " (" + _(
                    "the digest is MD5 of the greeting's <...> timestamp followed by the password"
                ) + ")", code="AUTH")
            return self._log_in(account)
        return self._login(LoginRequest(user, check, answer))

    def _find_account(self, user: str):
        """The account of this host's domain with that login or address, if any."""
        store = self.ctx.store
        account = store.account(user) or store.find_address(user)
        return account if account is not None and account.domain == self.ctx.domain else None

    def _log_in(self, account) -> bytes:
        """AUTHORIZATION -> TRANSACTION: lock the maildrop and take the snapshot."""
        if not account.maildrop_lock.acquire(blocking=False):
            return self._err(_("maildrop already in use") + " (" + _(
                "another POP3 session of this account is still open: it ends with QUIT or by "
                "closing its connection (in Python: close the makefile() file too, not only "
                "the socket)") + ")",
                code="IN-USE")
        self._locked_account = account
        try:
            folder = account.folder("INBOX")
            infos = folder.messages()
        except Exception:
            self._release_maildrop()
            return self._err(_("cannot open the maildrop"), code="SYS/TEMP")
        self.account, self._folder = account, folder
        self.messages = [Message(n, info.uid, info.size) for n, info in enumerate(infos, 1)]
        self.state = State.TRANSACTION
        count, octets = self._totals()
        return self._ok(_("{login}'s maildrop has {count} messages ({octets} octets)").format(
            login=account.login, count=count, octets=octets))

    # ---- TRANSACTION

    def do_stat(self, args: list[bytes]) -> bytes:
        if args:
            return self._syntax(_("STAT takes no arguments"))
        count, octets = self._totals()
        return self._ok(f"{count} {octets}")  # exactly "+OK count octets" (RFC 1939)

    def do_list(self, args: list[bytes]) -> bytes:
        if len(args) > 1:
            return self._syntax(_("LIST takes at most one message number, e.g. LIST 1"))
        if args:
            msg = self._message(args[0])
            return self._ok(f"{msg.number} {msg.size}")
        count, octets = self._totals()
        listing = b"".join(f"{m.number} {m.size}\r\n".encode() for m in self._visible())
        return self._multiline(_("{count} messages ({octets} octets)").format(
            count=count, octets=octets), listing)

    def do_uidl(self, args: list[bytes]) -> bytes:
        if len(args) > 1:
            return self._syntax(_("UIDL takes at most one message number, e.g. UIDL 1"))
        if args:
            msg = self._message(args[0])
            return self._ok(f"{msg.number} {self._unique_id(msg)}")
        listing = b"".join(f"{m.number} {self._unique_id(m)}\r\n".encode()
                           for m in self._visible())
        return self._multiline(_("unique-id listing follows"), listing)

    def _unique_id(self, msg: Message) -> str:
        # Stable across sessions and never reused: a re-created INBOX gets a new UIDVALIDITY.
        return f"{self._folder.uidvalidity}.{msg.uid}"

    def do_retr(self, args: list[bytes]) -> bytes:
        if len(args) != 1:
            return self._syntax(_("RETR takes one message number, e.g. RETR 1"))
        msg = self._message(args[0])
        data = self._read(msg)
        try:  # reading a message makes it \Seen, as Dovecot does
            self._folder.store_flags(msg.uid, {"\\Seen"}, "add", origin=self)
        except (KeyError, OSError):
            pass
        return self._long_reply(_("{0} octets").format(len(data)), data)

    def do_top(self, args: list[bytes]) -> bytes:
        lines = _number(args[1]) if len(args) == 2 else None
        if lines is None:
            return self._syntax(_("TOP takes a message number and a number of body lines, "
                                  "e.g. TOP 1 10"))
        msg = self._message(args[0])
        data = self._read(msg)
        return self._long_reply(_("top of message follows"), top_of(data, lines))

    def do_dele(self, args: list[bytes]) -> bytes:
        if len(args) != 1:
            return self._syntax(_("DELE takes one message number, e.g. DELE 1"))
        msg = self._message(args[0])
        msg.deleted = True
        return self._ok(_("message {0} deleted (it goes when you QUIT; RSET brings it back)")
                        .format(msg.number))

    def do_rset(self, args: list[bytes]) -> bytes:
        if args:
            return self._syntax(_("RSET takes no arguments"))
        for msg in self.messages:
            msg.deleted = False
        count, octets = self._totals()
        return self._ok(_("maildrop has {count} messages ({octets} octets)").format(
            count=count, octets=octets))

    def do_noop(self, args: list[bytes]) -> bytes:
        if args:
            return self._syntax(_("NOOP takes no arguments"))
        return self._ok("")

    # ---- both states

    def do_capa(self, args: list[bytes]) -> bytes:
        if args:
            return self._syntax(_("CAPA takes no arguments"))
        body = b"".join(line.encode() + CRLF for line in self.capabilities())
        return self._multiline(_("capability list follows"), body)

    def capabilities(self) -> list[str]:
        """The RFC 2449 capability lines, as they stand in this state (RFC 2595 4, RFC 5034 6)."""
        caps = ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "LANG"]
        if self.state is State.AUTHORIZATION:
            caps.append("UTF8 USER")  # RFC 6856 2: UTF-8 names and passwords are taken
        if not self.cleartext_refused:  # USER and SASL are visible in both states (RFC 2449)
            caps += ["USER", "SASL PLAIN"]
        if self.state is State.AUTHORIZATION and self.tls_available and not self.secure:
            caps.append("STLS")  # AUTHORIZATION state only (RFC 2595 4)
        return caps + [f"IMPLEMENTATION maillab-{__version__}"]

    def do_lang(self, args: list[bytes]) -> bytes:
        """RFC 6856 4: list the languages, or answer in the one asked for from now on."""
        if not args:
            listing = b"".join(f"{tag} {serverlang.name(tag)}".encode() + CRLF
                               for tag in serverlang.LANGUAGES)
            return self._multiline(_("language listing follows"), listing)
        wanted = args[0].decode("ascii", "replace")
        if len(args) > 1 or not serverlang.is_range(wanted):
            return self._syntax(_("LANG takes one language tag, e.g. LANG el"))
        current = self.language or serverlang.DEFAULT
        chosen = serverlang.choose([wanted], current)
        if chosen is None:  # (in the language in use until now, which stays)
            return self._err(f"{current} " + _("this server does not speak that language; LANG "
                                               "alone lists the ones it does"))
        self.language = chosen  # this reply is the first in the new language
        return self._ok(f"{chosen} {serverlang.switched(chosen)}")

    def do_utf8(self, args: list[bytes]) -> bytes:
        """RFC 6856 2. This server takes UTF-8 names and passwords and hands out mail as it was
        delivered whether or not UTF8 was sent, so the mode is acknowledged and changes nothing."""
        if args:
            return self._syntax(_("UTF8 takes no arguments"))
        return self._ok(_("UTF-8 mode is on"))

    def do_quit(self, args: list[bytes]) -> bytes:
        if self.state is State.AUTHORIZATION:
            self.closed = True
            return self._ok(_("{0} POP3 server signing off").format(self.ctx.hostname))
        return self._update()

    # ---- UPDATE

    def _update(self) -> bytes:
        """TRANSACTION -> UPDATE: remove the messages marked with DELE, then end the session."""
        self.state = State.UPDATE
        doomed = [m.uid for m in self.messages if m.deleted]
        try:
            if doomed:
                self._folder.expunge(doomed, origin=self)
            reply = self._ok(_("{host} POP3 server signing off ({count} messages deleted)")
                             .format(host=self.ctx.hostname, count=len(doomed)))
        except OSError:
            reply = self._err(_("some deleted messages not removed"), code="SYS/TEMP")
        self._release_maildrop()
        self.closed = True
        return reply

    # ------------------------------------------------------------------ helpers

    def _visible(self) -> list[Message]:
        return [m for m in self.messages if not m.deleted]

    def _totals(self) -> tuple[int, int]:
        visible = self._visible()
        return len(visible), sum(m.size for m in visible)

    def _message(self, arg: bytes) -> Message:
        """The message a client's number names (Refused with the reason if there is none)."""
        number = _number(arg)
        if number is None:
            raise Refused(self._syntax(_("message numbers are whole numbers like 1, as LIST "
                                         "shows them; not '{0}'").format(_show(arg))))
        if not 1 <= number <= len(self.messages):
            raise Refused(self._err(_("no such message, only {0} messages in maildrop").format(
                len(self.messages))))
        msg = self.messages[number - 1]
        if msg.deleted:
            raise Refused(self._err(_("message {0} is deleted (RSET undeletes it)").format(number)))
        return msg

    def _read(self, msg: Message) -> bytes:
        """The message with CRLF line ends (Refused if it cannot be read)."""
        for _attempt in range(3):  # a flag change elsewhere renames the file: try again
            try:
                data = self._folder.read(msg.uid)
            except KeyError:
                if self._folder.get(msg.uid) is None:
                    raise Refused(self._err(_("message {0} was removed by another session "
                                              "(an IMAP client?)").format(msg.number)))
            except OSError:
                break
            else:
                return data
        raise Refused(self._err(_("cannot read message {0}").format(msg.number), code="SYS/TEMP"))

    def _release_maildrop(self) -> None:
        account, self._locked_account = self._locked_account, None
        if account is not None:
            account.maildrop_lock.release()

    def _multiline(self, first: str, body: bytes) -> bytes:
        """A +OK line, the byte-stuffed body, and the "." terminator line."""
        # A message whose last line has no line end gets one, which is not counted in its size
        # (as Dovecot does): the terminator must start a line of its own.
        ending = b"" if body.endswith(CRLF) or not body else CRLF
        return b"".join((self._ok(first), byte_stuff(body), ending, b".\r\n"))

    def _long_reply(self, first: str, body: bytes) -> bytes:
        """Like :meth:`_multiline`, but the body follows in pieces (``self._stream``)."""
        ending = b"" if body.endswith(CRLF) or not body else CRLF

        def pieces():
            yield from stuffed_pieces(body)
            yield ending + b".\r\n"
        self._stream = pieces()
        return self._ok(first)

    @staticmethod
    def _ok(text: str) -> bytes:
        return (f"+OK {_one_line(text)}" if text else "+OK").encode("utf-8") + CRLF

    @staticmethod
    def _err(text: str, code: str | None = None) -> bytes:
        """``-ERR [CODE] text``: the status word first, then an RFC 2449/3206 response code."""
        prefix = f"-ERR [{code}] " if code else "-ERR "
        return (prefix + _one_line(text)).encode("utf-8") + CRLF

    def _syntax(self, hint: str) -> bytes:
        return self._err(_("syntax error") + f" ({hint})")
