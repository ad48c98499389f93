"""The IMAP server as a sans-IO state machine (RFC 3501 and the extensions real clients use).

    not authenticated --LOGIN/AUTHENTICATE--> authenticated --SELECT/EXAMINE--> selected
            \\                                    \\   <--CLOSE/UNSELECT--          /
             `------------------------ LOGOUT ----`--------------------------------'

Bytes go in with :meth:`ImapSession.receive_data`; bytes to send come out of
:meth:`ImapSession.data_to_send`. Nothing here touches a socket, so tests feed bytes and read
replies, and the server in ``server.py`` stays a few lines long.

Changes that other sessions (IMAP, POP3, SMTP delivery) make to the selected folder arrive as
store ``Change`` events, possibly in other threads. They wait in a queue and are announced
(``* n EXISTS``, ``* n EXPUNGE``, ``* n FETCH (FLAGS ...)``) when RFC 3501 allows: at the end
of a command (no EXPUNGE during FETCH, STORE or SEARCH, section 7.4.1) and at once during IDLE.

Two things a server may do outside the loop it runs on, so the core hands them over:

* A FETCH answer can be large, a SEARCH can read every message. Both are made piece by piece
  while :meth:`ImapSession.data_to_send` is called with a ``limit``; the commands after them
  wait until they are done. With ``commands_per_turn`` the session also runs only that many
  pipelined commands per call, so one client's burst cannot keep a server from its others.
* Checking a password is slow on purpose (scrypt). With ``defer_logins=True`` a LOGIN or
  AUTHENTICATE leaves a :class:`LoginRequest` in :attr:`ImapSession.login_request` and the
  session waits: the server runs ``request.check()`` in a worker thread and gives the result
  to :meth:`ImapSession.finish_login`. Without it (tests, benchmarks) the check runs at once.
"""

from __future__ import annotations

import base64
import binascii
import collections
import enum
import logging
import re

from .. import __version__
from .. import serverlang
from ..i18n import _
from ..net import busy_login_hint
from ..serverlang import speaking
from ..store import FLAG_TO_LETTER, HIERARCHY_DELIMITER, FolderError
from .parser import (MAX_APPEND, MAX_LITERAL, Cursor, Framer, LiteralAnnounced, ParseError, SeqSet,
                     TooLong, astring, encode_mailbox, format_datetime, parse_datetime)


class _OnFirstUse:
    """A module of this package imported when first used, then put in its own place here:
    FETCH and SEARCH bring the email package (about 7 ms of CPU), which a server that starts,
    and a session that only logs in or lists folders, do without."""

    def __init__(self, name: str, alias: str):
        self._name, self._alias = name, alias

    def __getattr__(self, attr: str):
        import importlib
        module = importlib.import_module(self._name, __package__)
        globals()[self._alias] = module
        return getattr(module, attr)


fetchmod = _OnFirstUse(".fetch", "fetchmod")
searchmod = _OnFirstUse(".search", "searchmod")

__all__ = ["ImapSession", "State", "LoginRequest", "SYSTEM_FLAGS", "CAPABILITIES", "list_pattern",
           "MAX_MAILBOX_NAME", "MAX_FETCH_OUTPUT"]

log = logging.getLogger(__name__)

SYSTEM_FLAGS = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]
CAPABILITIES = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS",
                "MOVE", "UNSELECT", "SPECIAL-USE", "CHILDREN", "LANGUAGE"]
DELIM = HIERARCHY_DELIMITER
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
_TAG_RE = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+")  # RFC 3501: ASTRING-CHAR but "+", ASCII only
# A folder is a directory named "." + its name (Maildir++), and a directory name has at most
# 255 bytes on Linux file systems.
MAX_MAILBOX_NAME = 254
# One FETCH answers at most this many bytes: refused beforehand when the sizes say so (a 7 KB
# FETCH naming BODY[]<n.m> 600 times must not make hundreds of megabytes), and cut short with
# NO [LIMIT] if the structure items grow past it while they are sent.
MAX_FETCH_OUTPUT = 256 * 1024 * 1024
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# Pieces of a long answer made in one data_to_send(limit) call (a SEARCH makes one per slice of
# its work, see search.SLICE).
PIECES_PER_TURN = 256
COPY_CHUNK = 64  # messages COPY or MOVE copies in one turn of the server
FETCH_BATCH = 256  # messages to a piece in a FETCH answered without reading messages


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class No(Exception):
    """A command that was understood but cannot be done: tagged NO with an optional code."""

    def __init__(self, text: str, code: str | None = None):
        super().__init__(text)
        self.text = text
        self.code = code


class Bad(ParseError):
    pass


# The usual text of a tagged OK: a command name (or two: "UID FETCH") and "completed".
_COMPLETED = re.compile(r"([A-Z][A-Z ]*[A-Z]) completed")


def _printable(text: str) -> str:
    """Response text without control characters: a CR or LF from a client's folder name must
    not end the line early (the rest would read as a response of its own)."""
    return _CONTROL_CHARS.sub(lambda m: "\\x%02x" % ord(m.group()), text)


def _shown(name: str, limit: int = 60) -> str:
    """A client's folder name as quoted in a reply: printable and short."""
    return _printable(name[:limit]) + ("..." if len(name) > limit else "")


class LoginRequest:
    """A login the session waits for (``defer_logins=True``): the server calls :meth:`check`
    in a worker thread, then ``session.finish_login(account)`` in its own."""

    def __init__(self, session: "ImapSession", tag: bytes, user: bytes, password: bytes, mechanism: str):
        self.session, self.tag, self.mechanism = session, tag, mechanism
        try:
            self._credentials = (user.decode("utf-8"), password.decode("utf-8"))
        except UnicodeDecodeError:
            self._credentials = None  # no account has such a name or password
        # for LoginGuard.delay: whose failed logins to count
        self.user = user.decode("utf-8", "replace")

    def check(self):
        """The account if the password is right, else None. Slow on purpose (scrypt)."""
        if self._credentials is None:
            return None
        s = self.session
        user, password = self._credentials
        return s.ctx.authenticate(user, password, protocol="imap", peer=s.peer,
                                  mechanism=self.mechanism, secure=s.tls)


def _hint_example(state: State) -> str:
    if state is State.NOT_AUTHENTICATED:
        return "a1 LOGIN alice password"
    if state is State.AUTHENTICATED:
        return "a2 SELECT INBOX"
    return "a3 FETCH 1 (FLAGS ENVELOPE)"


class Selected:
    """A session's view of its selected folder: sequence numbers, \\Recent, pending changes."""

    def __init__(self, session: "ImapSession", folder, readonly: bool):
        self.folder = folder
        self.readonly = readonly
        self.pending: collections.deque = collections.deque()
        self.deferred_expunges: list[int] = []
        self.recent: set[int] = set()
        self.announced_keywords: list[str] = []
        self._session = session
        with folder.account.store.lock:
            folder.subscribe(self.listener)
            self.uids = folder.uids()
        self._uid_set: set[int] | None = None

    @property
    def uid_set(self) -> set[int]:
        """The UIDs as a set, made when first needed (a SELECT of 40,000 messages does without)."""
        if self._uid_set is None:
            self._uid_set = set(self.uids)
        return self._uid_set

    def listener(self, change) -> None:
        # Called in whatever thread changed the folder: only queue it and wake the server up.
        self.pending.append(change)
        self._session._wakeup()

    def close(self) -> None:
        self.folder.unsubscribe(self.listener)

    def seq_of(self, uid: int) -> int:
        import bisect
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else 0


class ImapSession:
    """One client connection's IMAP conversation.

    ``ctx`` is a :class:`maillab.net.ServerContext`; ``wakeup`` is called (in any thread) when
    the selected folder changes, so that the server can call :meth:`changes_arrived` in its own.
    """

    def __init__(self, ctx, peer: str = "", *, tls: bool = False, wakeup=None, defer_logins: bool = False,
                 commands_per_turn: int | None = None):
        self.ctx = ctx
        self.peer = peer
        self.tls = tls
        self._wakeup = wakeup or (lambda: None)
        self.state = State.NOT_AUTHENTICATED
        self.account = None
        self.user: str | None = None
        self.selected: Selected | None = None
        self.framer = Framer()
        self._out: list[bytes] = []
        self._waiting = None  # ("auth", tag) or ("idle", tag) while a command takes lines
        self.quickack_wanted = False  # a "+" went out: the server should ACK at once (facts.md)
        self.starttls_wanted = False  # the server must now start TLS, then call tls_started()
        self.closing = False
        self.options = getattr(ctx, "options", {}) or {}
        self._flags_reported: set[int] = set()  # UIDs whose FLAGS this command already sent
        self.defer_logins = defer_logins
        self.login_request: LoginRequest | None = None  # a login waiting for finish_login()
        self._stream = None  # a long answer (FETCH, SEARCH) still being made: an iterator of bytes
        self.commands_per_turn = commands_per_turn
        self._more = False  # commands may be waiting in the framer for the next turn
        # For the server's timers: complete commands (and continuation lines) so far, and
        # login attempts so far.
        self.commands_done = 0
        self.login_attempts = 0
        self.language: str | None = None  # LANGUAGE (RFC 5255): None is i-default, never asked

    # ------------------------------------------------------------------ I/O surface
    def greeting(self) -> None:
        self._untagged(f"OK [CAPABILITY {' '.join(self.capabilities())}] "
                       f"{self.ctx.hostname} IMAP4rev1 server (maillab) ready")

    def data_to_send(self, limit: int | None = None) -> bytes:
        """The bytes to send now. A long answer is made as it is asked for: with a ``limit``,
        one call makes about that many bytes (or PIECES_PER_TURN pieces, or one turn of
        commands) at most; call again while :attr:`has_more`. Without one, everything: the
        answer and the commands that waited behind it."""
        out = self._out
        size = sum(len(x) for x in out)
        pieces = 0
        while limit is None or (size < limit and pieces < PIECES_PER_TURN):
            if self._stream is not None:
                try:
                    piece = next(self._stream)
                except StopIteration:
                    self._stream = None
                    self._more = True  # the commands behind it run next
                    continue
                if piece is None:  # the stream did a turn's work (COPY): other sessions' turn
                    if limit is not None:
                        break
                    continue
                out.append(piece)  # after what the stream itself wrote to _out before this piece
                size += len(piece)
                pieces += 1
            elif self._more:
                self._process()
                size = sum(len(x) for x in out)
                if limit is not None:
                    break  # one turn of commands per call
            else:
                break
        data = b"".join(out)
        out.clear()
        return data

    @property
    def has_more(self) -> bool:
        """An answer is not finished, or commands wait: call data_to_send() again (when the
        client reads)."""
        return self._stream is not None or bool(self._out) or (self._more and not self.busy)

    @property
    def busy(self) -> bool:
        """The session reads no further commands now (a login or a long answer is under way,
        TLS is starting, or the session is over): a server should stop reading meanwhile."""
        return (self.closing or self.starttls_wanted or self.login_request is not None
                or self._stream is not None)

    @property
    def command_in_progress(self) -> bool:
        """Part of a command has arrived, but not all of it (for the server's timers)."""
        return (self.framer.buffered > 0 or self.framer.in_command
                or (self._waiting is not None and self._waiting[0] == "auth"))

    def receive_data(self, data: bytes) -> None:
        if self.closing or self.starttls_wanted:
            return
        self.framer.feed(data)
        self._process()

    def _process(self) -> None:
        """Run the complete commands that have arrived, until one makes the session wait (or
        ``commands_per_turn`` of them ran: data_to_send runs the next ones). Their replies'
        text is in the session's language (LANGUAGE, RFC 5255)."""
        with speaking(self.language):
            self._run_commands()

    def _run_commands(self) -> None:
        self._more = False
        done = 0
        while not self.busy:
            if self.commands_per_turn is not None and done >= self.commands_per_turn:
                self._more = True
                return
            ev = self.framer.next_event()
            if ev is None:
                return
            if isinstance(ev, TooLong):
                self._send(b"* BAD " + _("that {what} is too long for this server; "
                                         "send long text as a literal {{n}}").format(what=ev.what).encode() + b"\r\n")
                continue
            if isinstance(ev, LiteralAnnounced):
                self._literal_announced(ev)
                continue
            self.commands_done += 1
            done += 1
            if self._waiting is not None:
                self._continuation_line(ev.raw)
            else:
                self._command(ev.raw)
        if self.starttls_wanted:
            self.framer = Framer()  # bytes sent before the handshake must not count (CVE-2011-0411)

    def finish_login(self, account, retry_after: float | None = None) -> None:
        """The result of ``login_request.check()`` (an account, or None): answer the login, then
        go on with the commands that came after it. ``retry_after``: the password was not
        checked (the login guard has too many attempts queued): a temporary refusal."""
        request, self.login_request = self.login_request, None
        if request is None or self.closing:
            return
        with speaking(self.language):
            if retry_after is not None:
                self._tagged(request.tag, "NO", busy_login_hint(retry_after), "UNAVAILABLE")
            else:
                self._login_answer(request, account)
        self._process()

    def changes_arrived(self) -> None:
        """Call in the server's thread after ``wakeup``: announces changes during IDLE."""
        if self._waiting is not None and self._waiting[0] == "idle" and self.selected is not None:
            self._sync(allow_expunge=True)

    def connection_lost(self) -> None:
        if self.selected is not None:
            self.selected.close()
            self.selected = None
        self.state = State.LOGOUT
        self._stream = None
        self.login_request = None

    def autologout(self, text: str | None = None) -> None:
        """The server ends an idle connection (RFC 3501 5.4): BYE, then close."""
        self._out.clear()  # what was not sent yet never will be (a FETCH cut short, say)
        self._untagged("BYE " + _printable(text or _("Autologout; idle for too long")))
        self.connection_lost()
        self.closing = True

    def tls_started(self) -> None:
        self.starttls_wanted = False
        self.tls = True

    # ------------------------------------------------------------------ output helpers
    def _send(self, data: bytes) -> None:
        self._out.append(data)

    def _untagged(self, text: str | bytes) -> None:
        self._out.append(b"* " + (text.encode("utf-8") if isinstance(text, str) else text) + b"\r\n")

    def _tagged(self, tag: bytes, status: str, text: str, code: str | None = None) -> None:
        done = _COMPLETED.fullmatch(text) if status == "OK" else None
        if done:  # "SELECT completed": English on the wire unless LANGUAGE chose another
            text = _("{command} completed").format(command=done.group(1))
        code_part = f"[{code}] " if code else ""
        self._out.append(tag + f" {status} {code_part}{_printable(text)}\r\n".encode("utf-8"))

    def _continue(self, text: str = "") -> None:
        self._out.append(b"+ " + text.encode() + b"\r\n")
        self.quickack_wanted = True

    # ------------------------------------------------------------------ capabilities
    @property
    def tls_possible(self) -> bool:
        return getattr(self.ctx, "tls", None) is not None or self.options.get("tls_context") is not None

    @property
    def login_disabled(self) -> bool:
        """RFC 3501 LOGINDISABLED: in strict mode no password may cross before TLS."""
        strict = bool(getattr(self.ctx, "strict", False) or self.options.get("strict"))
        return strict and not self.tls

    def capabilities(self) -> list[str]:
        caps = list(CAPABILITIES)
        if self.state is State.NOT_AUTHENTICATED:
            if self.tls_possible and not self.tls:
                caps.append("STARTTLS")
            if self.login_disabled:
                caps.append("LOGINDISABLED")
            else:
                caps.append("AUTH=PLAIN")
        return caps

    # ------------------------------------------------------------------ framing
    def _literal_announced(self, ev: LiteralAnnounced) -> None:
        m = re.match(rb"([^ ]+) +(UID +)?([A-Za-z]+)", ev.prefix)
        tag = m.group(1) if m else b"*"
        name = m.group(3).upper() if m else b""
        limit = MAX_APPEND if name == b"APPEND" else MAX_LITERAL
        problem = None
        code = None
        if name == b"APPEND" and self.state not in (State.AUTHENTICATED, State.SELECTED):
            problem, status = _("log in before you APPEND, e.g. a1 LOGIN alice password"), "BAD"
        elif ev.size > limit:
            problem, status, code = _("that literal is too large ({size} bytes; at most {limit})").format(
                size=ev.size, limit=limit), "NO", "TOOBIG"
        if problem is None:
            self.framer.accept_literal()
            if ev.synchronizing:
                self._continue(_("Ready for literal data"))
            return
        self.framer.reject_literal()
        if not _TAG_RE.fullmatch(tag):
            tag = b"*"
        self._tagged(tag, status if tag != b"*" else "BAD", problem, code)

    def _continuation_line(self, raw: bytes) -> None:
        kind, tag = self._waiting[0], self._waiting[1]
        self._waiting = None
        self.framer.line_mode = False
        line = raw.rstrip(b"\r\n")
        if kind == "idle":
            if line.upper() == b"DONE":
                self._sync(allow_expunge=True)
                self._tagged(tag, "OK", _("IDLE terminated"))
            else:
                self._tagged(tag, "BAD", _("IDLE ends with the word DONE on a line by itself"))
        elif kind == "auth":
            if line == b"*":
                self._tagged(tag, "BAD", _("authentication cancelled"))
                return
            self._auth_plain(tag, line)

    # ------------------------------------------------------------------ commands
    def _command(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            self._untagged("BAD " + _("empty line: type a tag and a command, for example: a1 CAPABILITY"))
            return
        cur = Cursor(raw)
        m = _TAG_RE.match(line)
        if not m or m.end() >= len(line) or line[m.end():m.end() + 1] != b" ":
            self._missing_tag(line)
            return
        tag = m.group()
        cur.pos = m.end() + 1
        try:
            word = cur.atom(what="command name").upper()
        except ParseError:
            self._tagged(tag, "BAD", _("after the tag comes a command name, for example: ")
                         + "a1 " + _hint_example(self.state).split(" ", 1)[1])
            return
        uid = False
        if word == "UID":
            try:
                cur.sp()
                word = cur.atom(what="command name").upper()
            except ParseError:
                self._tagged(tag, "BAD", _("UID comes before FETCH, SEARCH, STORE, COPY, MOVE or EXPUNGE"))
                return
            if word not in UID_COMMANDS:
                self._tagged(tag, "BAD", _("UID comes before FETCH, SEARCH, STORE, COPY, MOVE or EXPUNGE, "
                                           "not {word}").format(word=word))
                return
            uid = True
        spec = COMMANDS.get(word)
        if spec is None:
            if tag.upper().decode("ascii", "replace") in COMMANDS:
                self._missing_tag(line)
                return
            self._tagged(tag, "BAD", _("unknown command {word}; CAPABILITY lists what this server "
                                       "understands").format(word=word[:40]))
            return
        method, states = spec
        if self.state not in states:
            self._wrong_state(tag, word)
            return
        try:
            if self.selected is not None:
                # Files added, removed or renamed by hand show from the next command on.
                self.selected.folder.refresh()
            getattr(self, method)(tag, cur, uid)
        except No as e:
            self._sync(allow_expunge=word not in ("FETCH", "STORE", "SEARCH") or uid)
            self._tagged(tag, "NO", e.text, e.code)
        except ParseError as e:
            self._tagged(tag, getattr(e, "status", "BAD"), f"{word}: {e.hint}", e.code)
        except Exception as e:  # a bug here must not end the learner's session
            self._internal_error(tag, word, e)

    def _internal_error(self, tag: bytes, word: str, error: Exception) -> None:
        # The details (which may hold paths of the store) go to the lab's log, not to the client.
        log.error("IMAP %s failed", word, exc_info=error)
        self._tagged(tag, "NO", _("internal server error ({error}); this is a bug in maillab, "
                                  "the lab's log has the details").format(error=type(error).__name__),
                     "SERVERBUG")

    def _missing_tag(self, line: bytes) -> None:
        first = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
        if first == "LOGIN" or first not in COMMANDS:
            example = "a1 LOGIN alice password"
        else:
            example = "a1 " + first
        self._untagged("BAD " + _("every command starts with a tag, for example: {example}").format(
            example=example))

    def _wrong_state(self, tag: bytes, word: str) -> None:
        if self.state is State.NOT_AUTHENTICATED:
            hint = _("log in first, for example: a1 LOGIN alice password")
        elif word in SELECTED_ONLY:
            hint = _("select a folder first, for example: a2 SELECT INBOX")
        else:
            hint = _("you are logged in already")
        self._tagged(tag, "BAD", f"{word}: {hint}")

    def _done(self, tag: bytes, text: str, code: str | None = None, *, allow_expunge: bool = True) -> None:
        self._sync(allow_expunge=allow_expunge)
        self._tagged(tag, "OK", text, code)

    # ---- any state
    def cmd_capability(self, tag, cur, uid):
        cur.expect_end()
        self._untagged("CAPABILITY " + " ".join(self.capabilities()))
        self._done(tag, "CAPABILITY completed")

    def cmd_noop(self, tag, cur, uid):
        cur.expect_end()
        self._done(tag, "NOOP completed")

    def cmd_logout(self, tag, cur, uid):
        cur.expect_end()
        self._untagged("BYE " + _("Logging out, goodbye"))
        self._tagged(tag, "OK", "LOGOUT completed")
        self.connection_lost()
        self.closing = True

    def cmd_id(self, tag, cur, uid):
        cur.sp()
        if not cur.try_nil():
            cur.paren_list(lambda: cur.nstring_or_nil())
        cur.expect_end()
        self._untagged(f'ID ("name" "maillab" "version" "{__version__}")')
        self._done(tag, "ID completed")

    def cmd_language(self, tag, cur, uid):
        """RFC 5255 3: list the languages, or speak the first one asked for that is offered."""
        ranges = []
        while cur.maybe_sp():
            ranges.append(cur.astring("language range").decode("ascii", "replace"))
        cur.expect_end()
        if not all(serverlang.is_range(r) for r in ranges):
            raise ParseError(_("a language is a tag such as el or en, e.g. a1 LANGUAGE el"))
        if not ranges:
            self._untagged("LANGUAGE (" + " ".join(serverlang.LANGUAGES) + ")")
            self._done(tag, _("Supported languages have been enumerated"))
            return
        chosen = serverlang.choose(ranges, self.language or serverlang.DEFAULT)
        if chosen is None:  # (the refusal in the language in use until now)
            raise No(_("this server does not speak that language; LANGUAGE alone lists the ones "
                       "it does"))
        self._untagged(f"LANGUAGE ({chosen})")
        self.language = chosen  # from right after the LANGUAGE response on
        self._tagged(tag, "OK", serverlang.switched(chosen))

    def cmd_enable(self, tag, cur, uid):
        """RFC 5161. None of the extensions ENABLE can turn on (CONDSTORE, QRESYNC, UTF8=ACCEPT)
        is offered, so nothing is enabled; the answer says so, as the RFC asks."""
        cur.sp()
        cur.atom(what="capability")
        while cur.maybe_sp():
            cur.atom(what="capability")
        cur.expect_end()
        self._untagged("ENABLED")
        self._done(tag, "ENABLE completed")

    def cmd_starttls(self, tag, cur, uid):
        cur.expect_end()
        if self.tls:
            self._tagged(tag, "BAD", _("TLS is already on for this connection"))
        elif not self.tls_possible:
            self._tagged(tag, "BAD", _("this server does not offer STARTTLS here "
                                       "(see CAPABILITY)"))
        else:
            self._tagged(tag, "OK", _("Begin TLS negotiation now"))
            self.starttls_wanted = True

    # ---- not authenticated
    def cmd_login(self, tag, cur, uid):
        cur.sp()
        user = cur.astring("user name")
        cur.sp()
        password = cur.astring("password")
        cur.expect_end()
        if self.login_disabled:
            raise No(_("LOGIN is disabled until the connection is encrypted: use STARTTLS first"),
                     "PRIVACYREQUIRED")
        self._login(tag, user, password, "LOGIN")

    def _login(self, tag, user: bytes, password: bytes, mechanism: str) -> None:
        self.login_attempts += 1
        request = LoginRequest(self, tag, user, password, mechanism)
        if self.defer_logins:
            self.login_request = request  # the server checks it off its loop: finish_login()
        else:
            self._login_answer(request, request.check())

    def _login_answer(self, request: LoginRequest, acct) -> None:
        tag = request.tag
        if acct is None:
            self._tagged(tag, "NO", _("Authentication failed: check the user name (or address) "
                                      "and password"), "AUTHENTICATIONFAILED")
            return
        self.account = acct
        self.user = acct.login
        self.state = State.AUTHENTICATED
        self._tagged(tag, "OK", _("Logged in"), "CAPABILITY " + " ".join(self.capabilities()))

    def cmd_authenticate(self, tag, cur, uid):
        cur.sp()
        mech = cur.atom(what="mechanism").upper()
        initial = None
        if cur.maybe_sp():
            initial = cur.atom(what="initial response").encode()
        cur.expect_end()
        if mech != "PLAIN":
            raise No(_("unsupported mechanism {mech}; this server offers AUTHENTICATE PLAIN").format(
                mech=mech[:20]))
        if self.login_disabled:
            raise No(_("logging in is disabled until the connection is encrypted: use STARTTLS first"),
                     "PRIVACYREQUIRED")
        if initial is None:
            self._waiting = ("auth", tag)
            self.framer.line_mode = True
            self._continue()
            return
        self._auth_plain(tag, b"" if initial == b"=" else initial)

    def _auth_plain(self, tag, b64: bytes) -> None:
        try:
            data = base64.b64decode(b64, validate=True)
            authzid, authcid, password = data.split(b"\x00")
        except (binascii.Error, ValueError):
            self._tagged(tag, "BAD", _("AUTHENTICATE PLAIN wants base64 of "
                                       "\\0user\\0password (or user\\0user\\0password)"))
            return
        if authzid and authzid != authcid:
            self._tagged(tag, "NO", _("logging in as someone else is not allowed"), "AUTHORIZATIONFAILED")
            return
        self._login(tag, authcid, password, "AUTHENTICATE PLAIN")

    # ---- authenticated
    def _folder(self, name: str, *, trycreate: bool = False):
        if not self._has_folder(name):
            raise No(_("no folder named {name}; LIST \"\" \"*\" shows the folders").format(
                name=_shown(name)), "TRYCREATE" if trycreate else "NONEXISTENT")
        try:
            return self.account.folder(name)
        except FolderError:  # deleted meanwhile
            raise No(_("no folder named {name}; LIST \"\" \"*\" shows the folders").format(
                name=_shown(name)), "TRYCREATE" if trycreate else "NONEXISTENT") from None

    def _has_folder(self, name: str) -> bool:
        # A name too long for a directory cannot exist: do not even ask the file system.
        return _fits(name) and self.account.has_folder(name)

    def cmd_select(self, tag, cur, uid, readonly=False):
        cur.sp()
        name = cur.mailbox()
        if cur.maybe_sp():  # RFC 4466 select parameters: none supported, but accept "()"
            cur.paren_list(lambda: cur.atom())
        cur.expect_end()
        if self.selected is not None:
            self.selected.close()
            self.selected = None
            self.state = State.AUTHENTICATED
            self._untagged("OK [CLOSED] " + _("Previous folder closed"))
        folder = self._folder(name)
        sel = Selected(self, folder, readonly)
        if not readonly:
            claimed = folder.claim_recent()
            sel.recent = set(claimed) & sel.uid_set if claimed else set()
        self.selected = sel
        self.state = State.SELECTED
        keywords = self._keywords(sel)
        sel.announced_keywords = keywords
        self._untagged("FLAGS (" + " ".join(SYSTEM_FLAGS + keywords) + ")")
        if readonly:
            self._untagged("OK [PERMANENTFLAGS ()] " + _("Read-only folder"))
        else:
            self._untagged("OK [PERMANENTFLAGS (" + " ".join(SYSTEM_FLAGS + keywords + ["\\*"]) + ")] "
                           + _("Flags permitted"))
        self._untagged(f"{len(sel.uids)} EXISTS")
        self._untagged(f"{len(sel.recent)} RECENT")
        first_unseen = sel.seq_of(folder.first_unseen() or 0)
        if first_unseen:
            self._untagged(f"OK [UNSEEN {first_unseen}] " + _("First unseen"))
        self._untagged(f"OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid")
        self._untagged(f"OK [UIDNEXT {folder.uidnext}] " + _("Predicted next UID"))
        cmd = "EXAMINE" if readonly else "SELECT"
        self._tagged(tag, "OK", f"{cmd} completed", "READ-ONLY" if readonly else "READ-WRITE")

    def cmd_examine(self, tag, cur, uid):
        self.cmd_select(tag, cur, uid, readonly=True)

    def _keywords(self, sel: Selected) -> list[str]:
        kws = list(sel.folder.defined_keywords())
        return kws

    @staticmethod
    def _check_new_name(name: str) -> None:
        if not name or any(c in name for c in "*%") or name.startswith(DELIM) or (DELIM * 2) in name \
                or "/" in name or _CONTROL_CHARS.search(name):
            raise No(_("a folder name cannot be empty, contain * % / or two dots in a row, "
                       "or start with a dot"), "CANNOT")
        if not _fits(name):
            raise No(_("that folder name is too long: at most {limit} bytes (in UTF-8)").format(
                limit=MAX_MAILBOX_NAME), "CANNOT")

    def cmd_create(self, tag, cur, uid):
        cur.sp()
        name = cur.mailbox()
        cur.expect_end()
        if name.endswith(DELIM):
            name = name.rstrip(DELIM)
        if name.upper() == "INBOX":
            raise No(_("INBOX always exists"), "ALREADYEXISTS")
        self._check_new_name(name)
        if self.account.has_folder(name):
            raise No(_("folder {name} exists already").format(name=_shown(name)), "ALREADYEXISTS")
        try:
            self.account.create_folder(name)
        except FolderError as e:
            raise No(str(e), "CANNOT") from None
        self._done(tag, "CREATE completed")

    def cmd_delete(self, tag, cur, uid):
        cur.sp()
        name = cur.mailbox()
        cur.expect_end()
        if name == "INBOX":
            raise No(_("INBOX cannot be deleted"), "CANNOT")
        if not self._has_folder(name):
            raise No(_("no folder named {name}").format(name=_shown(name)), "NONEXISTENT")
        if self.selected is not None and self.selected.folder.name == name:
            self.selected.close()
            self.selected = None
            self.state = State.AUTHENTICATED
        try:
            self.account.delete_folder(name)
        except FolderError as e:
            raise No(str(e), "CANNOT") from None
        self._done(tag, "DELETE completed")

    def cmd_rename(self, tag, cur, uid):
        cur.sp()
        old = cur.mailbox()
        cur.sp()
        new = cur.mailbox()
        cur.expect_end()
        if not self._has_folder(old):
            raise No(_("no folder named {name}").format(name=_shown(old)), "NONEXISTENT")
        self._check_new_name(new)
        if new.upper() == "INBOX" or self.account.has_folder(new):
            raise No(_("folder {name} exists already").format(name=_shown(new)), "ALREADYEXISTS")
        if new.startswith(old + DELIM):
            raise No(_("a folder cannot move inside itself"), "CANNOT")
        longest = max((n for n in self.account.folder_names() if n.startswith(old + DELIM)),
                      key=len, default=old)
        if not _fits(new + longest[len(old):]):  # its sub-folders move along
            raise No(_("that folder name is too long for the folders inside it: at most {limit} "
                       "bytes (in UTF-8)").format(limit=MAX_MAILBOX_NAME), "CANNOT")
        try:
            self.account.rename_folder(old, new)
        except FolderError as e:
            raise No(str(e), "CANNOT") from None
        if self.selected is not None and old != "INBOX" and self.selected.folder.name == old:
            self.selected.close()
            self.selected = None
            self.state = State.AUTHENTICATED
        self._done(tag, "RENAME completed")

    def cmd_subscribe(self, tag, cur, uid, subscribed=True):
        cur.sp()
        name = cur.mailbox()
        cur.expect_end()
        if subscribed and not self._has_folder(name):
            raise No(_("no folder named {name}").format(name=_shown(name)), "NONEXISTENT")
        self.account.set_subscribed(name, subscribed)
        self._done(tag, ("SUBSCRIBE" if subscribed else "UNSUBSCRIBE") + " completed")

    def cmd_unsubscribe(self, tag, cur, uid):
        self.cmd_subscribe(tag, cur, uid, subscribed=False)

    def cmd_namespace(self, tag, cur, uid):
        cur.expect_end()
        self._untagged(f'NAMESPACE (("" "{DELIM}")) NIL NIL')
        self._done(tag, "NAMESPACE completed")

    # ---- LIST / LSUB
    def cmd_list(self, tag, cur, uid, lsub=False):
        """LIST and LSUB (RFC 3501), with the LIST-EXTENDED syntax (RFC 5258) that SPECIAL-USE
        clients send: ``LIST (SPECIAL-USE) "" "*"``, ``LIST "" "*" RETURN (SUBSCRIBED CHILDREN)``.

        A folder's parents need not exist ("Projects.Alpha" without "Projects"): such names are
        listed with \\Noselect (\\NonExistent in the extended form), as Dovecot does."""
        cur.sp()
        select_opts: list[str] = []
        return_opts: list[str] = []
        extended = False
        if not lsub and cur.peek() == b"(":
            select_opts = [o.upper() for o in cur.paren_list(lambda: cur.atom())]
            extended = True
            cur.sp()
        ref = cur.mailbox()
        cur.sp()
        if not lsub and cur.peek() == b"(":
            patterns = cur.paren_list(cur.list_mailbox)
            extended = True
        else:
            patterns = [cur.list_mailbox()]
        if not lsub and cur.maybe_sp():
            cur.expect(b"RETURN")
            cur.sp()
            return_opts = [o.upper() for o in cur.paren_list(lambda: cur.atom())]
            extended = True
        cur.expect_end()
        cmdname = "LSUB" if lsub else "LIST"
        if not lsub and patterns == [""]:
            self._untagged(f'LIST (\\Noselect) "{DELIM}" ""')
            self._done(tag, "LIST completed")
            return
        real = set(self.account.folder_names())
        subscribed = set(self.account.subscriptions())
        only_subscribed = lsub or "SUBSCRIBED" in select_opts
        base = subscribed if only_subscribed else real
        # name -> True if listed for itself, False if only as the parent of something listed
        candidates: dict[str, bool] = {}
        for n in base:
            candidates[n] = True
            parts = n.split(DELIM)
            for i in range(1, len(parts)):
                candidates.setdefault(DELIM.join(parts[:i]), False)
        matchers = [list_pattern(ref + p) for p in patterns]
        inbox_matchers = [list_pattern(ref + p, ignore_case=True) for p in patterns]
        show_children = not extended or "CHILDREN" in return_opts
        show_special = not extended or "SPECIAL-USE" in select_opts + return_opts
        for n in sorted(candidates, key=lambda x: (x != "INBOX", x)):
            if not any(match(n) for match in (inbox_matchers if n == "INBOX" else matchers)):
                continue
            itself = candidates[n]
            exists = n in real
            if only_subscribed and not itself and (not lsub or not any("%" in p for p in patterns)):
                continue  # a parent of subscribed names shows only for "%" (RFC 3501 LSUB)
            attrs = []
            if lsub:
                if not itself or not exists:
                    attrs.append("\\Noselect")
                special = self.account.special_use(n) if exists else None
                if special:
                    attrs.append(special)
            else:
                if not exists:
                    attrs.append("\\NonExistent" if extended else "\\Noselect")
                if n in subscribed and (only_subscribed or "SUBSCRIBED" in return_opts):
                    attrs.append("\\Subscribed")
                if show_children:
                    has = any(x.startswith(n + DELIM) for x in real)
                    attrs.append("\\HasChildren" if has else "\\HasNoChildren")
                special = self.account.special_use(n) if exists else None
                if special and show_special:
                    attrs.append(special)
                elif not special and "SPECIAL-USE" in select_opts:
                    continue
            self._untagged(f"{cmdname} ({' '.join(attrs)}) \"{DELIM}\" ".encode()
                           + astring(encode_mailbox(n)))
        self._done(tag, f"{cmdname} completed")

    def cmd_lsub(self, tag, cur, uid):
        self.cmd_list(tag, cur, uid, lsub=True)

    def cmd_status(self, tag, cur, uid):
        cur.sp()
        name = cur.mailbox()
        cur.sp()
        items = [i.upper() for i in cur.paren_list(lambda: cur.atom(what="status item"))]
        cur.expect_end()
        for i in items:
            if i not in STATUS_ITEMS:
                raise ParseError(_("STATUS items are MESSAGES, RECENT, UIDNEXT, UIDVALIDITY and UNSEEN"))
        folder = self._folder(name)
        msgs = folder.messages()
        values = {"MESSAGES": len(msgs),
                  "RECENT": sum(1 for m in msgs if m.recent),
                  "UIDNEXT": folder.uidnext,
                  "UIDVALIDITY": folder.uidvalidity,
                  "UNSEEN": sum(1 for m in msgs if "\\Seen" not in m.flags)}
        if self.selected is not None and self.selected.folder is folder:
            values["RECENT"] += len(self.selected.recent & {m.uid for m in msgs})
        body = " ".join(f"{i} {values[i]}" for i in items)
        self._untagged(b"STATUS " + astring(encode_mailbox(name)) + f" ({body})".encode())
        self._done(tag, "STATUS completed")

    def cmd_append(self, tag, cur, uid):
        cur.sp()
        name = cur.mailbox()
        cur.sp()
        flags: list[str] = []
        date = None
        if cur.peek() == b"(":
            flags = cur.flag_list()
            cur.sp()
        if cur.peek() == b'"':
            date = parse_datetime(cur.quoted().decode("ascii", "replace"))
            cur.sp()
        if cur.peek() != b"{":
            raise ParseError(_("APPEND sends the message as a literal: a1 APPEND INBOX {size} "
                               "then the message"))
        data = cur.literal()
        cur.expect_end()
        flags = self._check_flags(flags)
        folder = self._folder(name, trycreate=True)
        if not data:
            raise No(_("an empty message cannot be appended"))
        self._check_room(folder, name, 1)
        info = folder.deliver(data, flags, date, origin=self)
        self._done(tag, "APPEND completed", f"APPENDUID {folder.uidvalidity} {info.uid}")

    @staticmethod
    def _check_flags(flags: list[str]) -> list[str]:
        out = []
        for f in flags:
            if f.startswith("\\"):
                canon = {x.upper(): x for x in SYSTEM_FLAGS + ["\\Recent"]}.get(f.upper())
                if canon is None:
                    raise ParseError(_("unknown system flag {flag}; the flags are \\Seen \\Answered "
                                       "\\Flagged \\Deleted \\Draft (or your own keywords)").format(flag=f))
                if canon != "\\Recent":
                    out.append(canon)
            else:
                out.append(f)
        return out

    def cmd_idle(self, tag, cur, uid):
        cur.expect_end()
        self._waiting = ("idle", tag)
        self.framer.line_mode = True
        self._continue("idling")
        if self.selected is not None:
            self._sync(allow_expunge=True)

    # ---- selected
    def cmd_check(self, tag, cur, uid):
        cur.expect_end()
        self._done(tag, "CHECK completed")

    def cmd_close(self, tag, cur, uid, expunge=True):
        cur.expect_end()
        sel = self.selected
        if expunge and not sel.readonly:
            doomed = [u for u in sel.uids if "\\Deleted" in self._flags_or_none(u)]
            sel.folder.expunge(doomed, origin=self)
        sel.close()
        self.selected = None
        self.state = State.AUTHENTICATED
        self._tagged(tag, "OK", ("CLOSE" if expunge else "UNSELECT") + " completed")

    def cmd_unselect(self, tag, cur, uid):
        self.cmd_close(tag, cur, uid, expunge=False)

    def _flags_or_none(self, u: int) -> frozenset:
        try:
            return self.selected.folder.flags_of(u)
        except KeyError:
            return frozenset()

    def cmd_expunge(self, tag, cur, uid):
        sel = self.selected
        chosen = None
        if uid:
            cur.sp()
            chosen = set(self._targets(cur.seqset(), True))
        cur.expect_end()
        if sel.readonly:
            raise No(_("this folder was opened read-only (EXAMINE); SELECT it to change it"), "READ-ONLY")
        doomed = [u for u in sel.uids if (chosen is None or u in chosen)
                  and "\\Deleted" in self._flags_or_none(u)]
        sel.folder.expunge(doomed, origin=self)
        self._done(tag, "EXPUNGE completed")

    def _targets(self, seqset: SeqSet, uid: bool) -> list[int]:
        """UIDs of the messages a sequence set names, in order. BAD for message numbers past the end."""
        sel = self.selected
        if uid:
            if not sel.uids:
                return []
            return seqset.select(sel.uids, sel.uids[-1])
        n = len(sel.uids)
        if n == 0:  # (1:* too: RFC 3501 has no empty message set; Dovecot answers BAD as well)
            raise ParseError(_("this folder is empty (* 0 EXISTS), so no message number is "
                               "valid, not even 1:*; SELECT a folder with mail in it (the UID "
                               "form, such as UID STORE 1:* ..., accepts an empty folder)"))
        if seqset.max_number() > n:
            raise ParseError(_("there is no message {num} here: this folder has {n} messages "
                               "(use 1:* for all)").format(num=seqset.max_number(), n=n))
        picked = seqset.select(range(1, n + 1), n)
        if isinstance(picked, range):  # one run of numbers (1:*, 5:10): a slice of the UIDs
            return sel.uids[picked.start - 1:picked.stop - 1]
        return [sel.uids[i - 1] for i in picked]

    def _flags_text(self, u: int, flags) -> str:
        flags = set(flags)
        ordered = [f for f in SYSTEM_FLAGS if f in flags] + sorted(f for f in flags if f not in SYSTEM_FLAGS)
        if u in self.selected.recent:
            ordered.append("\\Recent")
        return "(" + " ".join(ordered) + ")"

    def cmd_fetch(self, tag, cur, uid):
        cur.sp()
        seqset = cur.seqset()
        cur.sp()
        items = fetchmod.parse_fetch_items(cur)
        if cur.maybe_sp():  # RFC 4466 modifiers (CHANGEDSINCE ...): not supported
            raise ParseError(_("FETCH modifiers are not supported here"))
        cur.expect_end()
        sel = self.selected
        uids = self._targets(seqset, uid)
        if uid and not any(i.name == "UID" for i in items):
            items.insert(0, fetchmod.FetchItem("UID"))
        items = fetchmod.distinct_items(items)
        if fetchmod.from_index(items):
            self._stream = self._fetch_from_index(tag, uid, items, uids)
            return
        folder = sel.folder
        current = {info.uid: (info, flags) for info, flags in folder.snapshot()} if len(uids) > 20 else None
        sizes = [(current[u][0] if u in current else None) if current is not None else folder.get(u)
                 for u in uids]
        estimate = sum(fetchmod.answer_size(items, info.size) for info in sizes if info is not None)
        if estimate > MAX_FETCH_OUTPUT:
            raise No(_("that FETCH would answer about {mb} MB, more than this server sends for one "
                       "command ({limit} MB): ask for fewer messages or items at a time, e.g. "
                       "1:100 then 101:200").format(mb=estimate >> 20, limit=MAX_FETCH_OUTPUT >> 20),
                     "LIMIT")
        # The answer is made as the server sends it (data_to_send), one item at a time.
        self._stream = self._fetch_answers(tag, uid, items, uids, current)

    def _fetch_answers(self, tag, uid, items, uids, current):
        """The untagged FETCH responses, piece by piece, then the tagged reply."""
        sel = self.selected
        folder = sel.folder
        sets_seen = not sel.readonly and any(i.sets_seen for i in items)
        has_flags = any(i.name == "FLAGS" for i in items)
        needs_raw = any(i.needs_message for i in items)
        needs_tree = any(i.name in ("ENVELOPE", "BODY", "BODYSTRUCTURE") or
                         (i.section is not None and (i.section.parts or i.section.spec not in ("", "HEADER", "TEXT")))
                         for i in items)
        missing = False
        line_open = False
        sent = 0
        try:
            for u in uids:
                seq = sel.seq_of(u)
                if current is not None:
                    info, flags = current.get(u, (None, None))
                else:
                    info = folder.get(u)
                if info is None or seq == 0:
                    missing = True
                    continue
                raw = root = None
                if needs_raw:
                    try:
                        raw = _read(folder, info)
                    except KeyError:
                        missing = True
                        continue
                    if needs_tree:
                        root = fetchmod.parse_message(raw)
                try:
                    if current is None:
                        flags = folder.flags_of(u)
                    if sets_seen and "\\Seen" not in flags:
                        flags = folder.store_flags(u, {"\\Seen"}, "add", origin=self)
                        add_flags = not has_flags
                    else:
                        add_flags = False
                except KeyError:
                    missing = True
                    continue
                line_open = True
                yield b"* %d FETCH (" % seq
                for i, item in enumerate(items):
                    if i:
                        yield b" "
                    for piece in self._fetch_item(item, u, info, flags, raw, root):
                        sent += len(piece)
                        yield piece
                if add_flags:
                    yield b" FLAGS " + self._flags_text(u, flags).encode()
                if add_flags or has_flags:
                    self._flags_reported.add(u)
                line_open = False
                yield b")\r\n"
                if sent > MAX_FETCH_OUTPUT:  # the structure items grew beyond the estimate
                    self._sync(allow_expunge=uid)
                    self._tagged(tag, "NO", _("FETCH stopped after {limit} MB; ask for fewer messages "
                                              "at a time").format(limit=MAX_FETCH_OUTPUT >> 20), "LIMIT")
                    return
        except Exception as e:  # a bug must not leave the client waiting for the rest of a line
            if line_open:
                yield b")\r\n"
            self._internal_error(tag, "FETCH", e)
            return
        self._fetch_done(tag, uid, missing)

    def _fetch_done(self, tag, uid, missing: bool) -> None:
        self._sync(allow_expunge=uid)
        if missing:
            self._tagged(tag, "NO", _("some of those messages were deleted meanwhile"), "EXPUNGEISSUED")
        else:
            self._tagged(tag, "OK", ("UID FETCH" if uid else "FETCH") + " completed")

    def _fetch_from_index(self, tag, uid, items, uids):
        """FETCH of items that need no message read (``fetchmod.from_index``): FLAGS, UID,
        sizes and dates from the store, ENVELOPE, BODY and BODYSTRUCTURE from the folder's
        index. Made FETCH_BATCH messages to a piece (a piece per item and message cost more
        than Dovecot's whole answer)."""
        sel = self.selected
        folder = sel.folder
        fields = tuple(fetchmod.INDEX_FIELDS[i.name] for i in items if i.name in fetchmod.INDEX_FIELDS)
        has_flags = any(i.name == "FLAGS" for i in items)
        only_field = items[0].name.encode() + b" " if len(items) == 1 and fields else None
        flags_texts: dict = {}  # (flags, recent) -> the FLAGS text: few kinds in a folder
        recent = sel.recent

        plain_texts: dict = {}  # flags -> the FLAGS text of a message without \Recent

        def flags_part(u, flags) -> bytes:
            key = (flags, u in recent)
            text = flags_texts.get(key)
            if text is None:
                text = flags_texts[key] = b"FLAGS " + self._flags_text(u, flags).encode()
                if not key[1]:
                    plain_texts[flags] = text
            return text
        # message numbers: counted when the UIDs are all the folder's (1:*), else looked up in a
        # table when there are many (bisecting is slower)
        every = len(uids) == len(sel.uids) and uids == sel.uids
        seq_of = ({u: n for n, u in enumerate(sel.uids, 1)}.get if len(uids) > FETCH_BATCH and not every
                  else lambda u, _default=0: sel.seq_of(u))
        only_flags = len(items) == 1 and has_flags  # FETCH 1:* FLAGS
        missing = False
        sent = 0
        try:
            for start in range(0, len(uids), FETCH_BATCH):
                chunk = uids[start:start + FETCH_BATCH]
                seqs = range(start + 1, start + 1 + len(chunk)) if every else [seq_of(u, 0) for u in chunk]
                flag_sets = folder.flags_of_each(chunk) if only_flags else None
                if flag_sets is not None and None not in flag_sets and 0 not in seqs:
                    # FETCH 1:* FLAGS, every message still here: the lines in one go
                    texts = (map(flags_part, chunk, flag_sets) if recent else
                             [plain_texts.get(f) or flags_part(0, f) for f in flag_sets])
                    lines = [b"* %d FETCH (%s)\r\n" % line for line in zip(seqs, texts)]
                    sent += sum(map(len, lines))
                    known, todo = (), ()
                else:
                    known = folder.lookup(chunk)
                    lines, todo = [], zip(chunk, seqs, known)
                described = folder.described([u for u, k in zip(chunk, known) if k], fields) if fields else {}
                for u, seq, got in todo:
                    if got is None or seq == 0 or (fields and u not in described):
                        missing = True
                        continue
                    info, flags = got
                    if only_field is not None:  # FETCH 1:* BODYSTRUCTURE and the like
                        line = b"* %d FETCH (%s%s)\r\n" % (seq, only_field, described[u][0])
                    elif only_flags:
                        line = b"* %d FETCH (%s)\r\n" % (seq, flags_part(u, flags))
                    else:
                        values = iter(described[u]) if fields else None
                        parts = []
                        for item in items:
                            name = item.name
                            if name == "FLAGS":
                                parts.append(flags_part(u, flags))
                            elif name in fetchmod.INDEX_FIELDS:
                                parts.append(name.encode() + b" " + next(values))
                            else:
                                parts += self._fetch_item(item, u, info, flags, None, None)
                        line = b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts))
                    lines.append(line)
                    sent += len(line)
                    if sent > MAX_FETCH_OUTPUT:  # (a BODYSTRUCTURE may be long: up to MAX_PARTS parts)
                        break
                if has_flags:
                    self._flags_reported.update(chunk)
                yield b"".join(lines)
                if sent > MAX_FETCH_OUTPUT:
                    self._sync(allow_expunge=uid)
                    self._tagged(tag, "NO", _("FETCH stopped after {limit} MB; ask for fewer messages "
                                              "at a time").format(limit=MAX_FETCH_OUTPUT >> 20), "LIMIT")
                    return
        except Exception as e:
            self._internal_error(tag, "FETCH", e)
            return
        self._fetch_done(tag, uid, missing)

    def _fetch_item(self, item, u, info, flags, raw, root) -> tuple[bytes, ...]:
        """One data item of a FETCH response, as pieces (a message's bytes are not copied)."""
        name = item.name
        if name == "UID":
            return (b"UID %d" % u,)
        if name == "FLAGS":
            return (b"FLAGS " + self._flags_text(u, flags).encode(),)
        if name == "INTERNALDATE":
            return (b'INTERNALDATE "' + format_datetime(info.internaldate).encode() + b'"',)
        if name == "RFC822.SIZE":
            return (b"RFC822.SIZE %d" % (len(raw) if raw is not None else info.size),)
        if name == "RFC822":
            return b"RFC822 {%d}\r\n" % len(raw), raw
        if name == "RFC822.HEADER":
            h = fetchmod.split_header(raw)[0]
            return b"RFC822.HEADER {%d}\r\n" % len(h), h
        if name == "RFC822.TEXT":
            b = fetchmod.split_header(raw)[1]
            return b"RFC822.TEXT {%d}\r\n" % len(b), b
        if name == "ENVELOPE":
            return b"ENVELOPE ", fetchmod.envelope(root)
        if name == "BODY":
            return b"BODY ", fetchmod.bodystructure(root, False)
        if name == "BODYSTRUCTURE":
            return b"BODYSTRUCTURE ", fetchmod.bodystructure(root, True)
        # BODY[section]<partial>
        sec = item.section
        if root is None:  # whole message, HEADER or TEXT: no need to parse the MIME tree
            header, body = fetchmod.split_header(raw)
            data = {"": raw, "HEADER": header, "TEXT": body}[sec.spec]
        else:
            data = fetchmod.section_bytes(root, raw, sec)
        label = b"BODY[" + sec.text().encode() + b"]"
        if item.partial is not None:
            start, length = item.partial
            label += b"<%d>" % start
            if data is not None:
                data = data[start:start + length]
        if data is None:
            return (label + b" NIL",)
        return label + b" {%d}\r\n" % len(data), data

    def cmd_store(self, tag, cur, uid):
        cur.sp()
        seqset = cur.seqset()
        cur.sp()
        what = cur.atom(what="FLAGS, +FLAGS or -FLAGS").upper()
        m = re.fullmatch(r"([+-]?)FLAGS(\.SILENT)?", what)
        if not m:
            raise ParseError(_("STORE wants FLAGS, +FLAGS or -FLAGS (optionally .SILENT), "
                               "e.g. a4 STORE 1 +FLAGS (\\Seen)"))
        cur.sp()
        if cur.peek() == b"(":
            flags = cur.flag_list()
        else:
            flags = [cur.flag()]
            while cur.maybe_sp():
                flags.append(cur.flag())
        cur.expect_end()
        if any(f.upper() == "\\RECENT" for f in flags):
            raise ParseError(_("\\Recent is set by the server only; a client cannot STORE it"))
        flags = self._check_flags(flags)
        sel = self.selected
        uids = self._targets(seqset, uid)
        if sel.readonly:
            raise No(_("this folder was opened read-only (EXAMINE); SELECT it to change flags"), "READ-ONLY")
        mode = {"": "set", "+": "add", "-": "remove"}[m.group(1)]
        silent = bool(m.group(2))
        missing = False
        for u in uids:
            try:
                before = sel.folder.flags_of(u)
                new = sel.folder.store_flags(u, flags, mode, origin=self)
            except KeyError:
                missing = True
                continue
            if not silent and new != before:  # unchanged messages are not reported (as Dovecot)
                self._flags_reported.add(u)
                seq = sel.seq_of(u)
                extra = b" UID %d" % u if uid else b""
                self._send(b"* %d FETCH (FLAGS " % seq + self._flags_text(u, new).encode() + extra + b")\r\n")
        self._sync(allow_expunge=uid)
        if missing:
            self._tagged(tag, "NO", _("some of those messages were deleted meanwhile"), "EXPUNGEISSUED")
        else:
            self._tagged(tag, "OK", ("UID STORE" if uid else "STORE") + " completed")

    def _copy(self, tag, cur, uid, move: bool):
        cur.sp()
        seqset = cur.seqset()
        cur.sp()
        name = cur.mailbox()
        cur.expect_end()
        sel = self.selected
        uids = self._targets(seqset, uid)
        dest = self._folder(name, trycreate=True)
        if move and sel.readonly:
            raise No(_("this folder was opened read-only (EXAMINE); SELECT it to move mail out"), "READ-ONLY")
        if not (move and dest is sel.folder):  # (a move within a folder adds nothing)
            self._check_room(dest, name, len(uids))
        # Copied a chunk per turn as the server asks for the answer (data_to_send): a copy of
        # thousands of messages does not hold up the server's other sessions.
        self._stream = self._copy_answer(tag, uid, move, sel, uids, dest)

    def _check_room(self, folder, name: str, adding: int) -> None:
        if adding > folder.room():  # RFC 9208 4.3: nothing is stored, the client is told why
            raise No(_("folder {name} would hold more than {limit} messages, the lab's quota; "
                       "delete (and EXPUNGE) messages you do not need first").format(
                name=_shown(name), limit=self.account.store.max_messages), "OVERQUOTA")

    def _copy_answer(self, tag, uid, move, sel, uids, dest):
        src_uids, dst_uids = [], []
        finished = False
        try:
            for u in uids:
                try:
                    info = sel.folder.copy_to(u, dest, origin=self)
                except KeyError:
                    continue
                src_uids.append(u)
                dst_uids.append(info.uid)
                if len(dst_uids) % COPY_CHUNK == 0:
                    if dest is sel.folder and not sel.readonly:
                        # \Recent goes to this session (as _sync would), a chunk at a time too:
                        # claiming 16,000 copies at the end took 0.9 s in one turn.
                        sel.recent.update(dest.claim_recent())
                    yield None
            finished = True
        except Exception as e:
            self._internal_error(tag, "MOVE" if move else "COPY", e)
            return
        finally:
            if not finished:  # RFC 3501 6.4.7: a COPY that fails leaves the destination as it was
                dest.expunge(dst_uids, origin=self)
        code = (f"COPYUID {dest.uidvalidity} {_compress(src_uids)} {_compress(dst_uids)}"
                if src_uids else None)
        if move:
            if code:
                self._untagged(f"OK [{code}] " + _("Moved"))
            sel.folder.expunge(src_uids, origin=self)
            self._done(tag, ("UID MOVE" if uid else "MOVE") + " completed")
        else:
            self._done(tag, ("UID COPY" if uid else "COPY") + " completed", code)

    def cmd_copy(self, tag, cur, uid):
        self._copy(tag, cur, uid, move=False)

    def cmd_move(self, tag, cur, uid):
        self._copy(tag, cur, uid, move=True)

    def cmd_search(self, tag, cur, uid):
        cur.sp()
        if cur.try_token(b"RETURN "):  # ESEARCH is not offered
            raise ParseError(_("SEARCH RETURN (...) is not supported here"))
        try:
            tree = searchmod.parse_search(cur)
        except ParseError as e:
            if e.code and e.code.startswith("BADCHARSET"):
                raise No(e.hint, e.code) from None
            raise
        cur.expect_end()
        # Messages are tested one at a time as the server asks for the answer (data_to_send):
        # a search that reads every message does not hold up the server's other sessions.
        self._stream = self._search_answer(tag, uid, tree)

    def _search_answer(self, tag, uid, tree):
        sel = self.selected
        try:
            found = yield from searchmod.search_folder(tree, sel.folder, list(sel.uids), sel.recent)
        except Exception as e:
            self._internal_error(tag, "SEARCH", e)
            return
        self._untagged("SEARCH" + "".join(f" {u if uid else seq}" for seq, u in found))
        self._done(tag, ("UID SEARCH" if uid else "SEARCH") + " completed", allow_expunge=uid)

    # ------------------------------------------------------------------ announcing changes
    def _sync(self, allow_expunge: bool) -> None:
        sel = self.selected
        if sel is None:
            return
        out_exists = False
        flag_updates: dict[int, None] = {}
        new_keywords = False
        while sel.pending:
            ch = sel.pending.popleft()
            if ch.kind == "exists":
                if ch.uid not in sel.uid_set:
                    if sel.uids and ch.uid < sel.uids[-1]:
                        import bisect
                        bisect.insort(sel.uids, ch.uid)
                    else:
                        sel.uids.append(ch.uid)
                    sel.uid_set.add(ch.uid)
                    out_exists = True
                    if any(f not in FLAG_TO_LETTER for f in ch.flags):
                        new_keywords = True
            elif ch.kind == "expunge":
                sel.deferred_expunges.append(ch.uid)
            elif ch.kind == "flags":
                if ch.uid in sel.uid_set:
                    if any(f not in FLAG_TO_LETTER and f not in sel.announced_keywords for f in ch.flags):
                        new_keywords = True
                    if ch.origin is not self:
                        flag_updates[ch.uid] = None
        if new_keywords or any(k not in sel.announced_keywords for k in sel.folder.defined_keywords()):
            kws = self._keywords(sel)
            if kws != sel.announced_keywords:
                sel.announced_keywords = kws
                self._untagged("FLAGS (" + " ".join(SYSTEM_FLAGS + kws) + ")")
                if not sel.readonly:
                    self._untagged("OK [PERMANENTFLAGS (" + " ".join(SYSTEM_FLAGS + kws + ["\\*"]) + ")] "
                                   + _("Flags permitted"))
        if allow_expunge and sel.deferred_expunges:
            # Highest first, as Dovecot does: the numbers of the ones still to come do not shift.
            for u in sorted(set(sel.deferred_expunges), reverse=True):
                seq = sel.seq_of(u)
                if seq:
                    self._untagged(f"{seq} EXPUNGE")
                    del sel.uids[seq - 1]
                    sel.uid_set.discard(u)
                    sel.recent.discard(u)
                    flag_updates.pop(u, None)
            sel.deferred_expunges.clear()
        if out_exists:
            if not sel.readonly:
                sel.recent |= set(sel.folder.claim_recent()) & sel.uid_set
            self._untagged(f"{len(sel.uids)} EXISTS")
            self._untagged(f"{len(sel.recent)} RECENT")
        reported, self._flags_reported = self._flags_reported, set()
        for u in flag_updates:
            seq = sel.seq_of(u)
            if not seq or u in reported:
                continue
            try:
                flags = sel.folder.flags_of(u)
            except KeyError:
                continue
            self._untagged(f"{seq} FETCH (FLAGS {self._flags_text(u, flags)})")


def _read(folder, info) -> bytes:
    """A message's bytes with CRLF line ends; straight from its file when it has not moved."""
    try:
        with open(info.file, "rb") as f:
            data = f.read()
    except OSError:  # renamed by a flag change meanwhile, or expunged: ask the store
        return folder.read(info.uid)
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _fits(name: str) -> bool:
    """Whether a folder name fits the store (see MAX_MAILBOX_NAME)."""
    return len(name.encode("utf-8", "surrogatepass")) <= MAX_MAILBOX_NAME


def list_pattern(pattern: str, ignore_case: bool = False):
    """A test ``name -> bool`` for a LIST/LSUB pattern (RFC 3501 6.3.8): ``*`` matches any
    text, ``%`` any text without the hierarchy delimiter; ``ignore_case`` folds ASCII letters.

    The pattern runs as a little automaton over the name, all its states at once in the bits
    of one integer (bit k: "the first k pattern elements matched so far"), so the time grows
    with the name's length times the pattern's length, never exponentially. (A regular
    expression with ``.*`` for each ``*`` backtracked: 80 stars froze the lab for 66 s.)
    """
    fold = (lambda ch: ch.upper() if ch.isascii() else ch) if ignore_case else (lambda ch: ch)
    elements: list[str] = []
    for ch in pattern:
        if ch in "*%" and elements and elements[-1] in "*%":
            if ch == "*":
                elements[-1] = "*"  # a run of wildcards is one wildcard, "*" if it holds one
            continue
        elements.append(ch if ch in "*%" else fold(ch))
    literal: dict[str, int] = {}
    star = percent = 0
    for k, el in enumerate(elements):
        if el == "*":
            star |= 1 << k
        elif el == "%":
            percent |= 1 << k
        else:
            literal[el] = literal.get(el, 0) | 1 << k
    wild = star | percent
    accept = 1 << len(elements)

    def matches(name: str) -> bool:
        states = 1 | (1 & wild) << 1  # a wildcard may match nothing: step over it at once
        for ch in name:
            nxt = (states & literal.get(fold(ch), 0)) << 1 | states & star
            if ch != DELIM:
                nxt |= states & percent
            if not nxt:
                return False
            states = nxt | (nxt & wild) << 1  # no two wildcards are adjacent: one step is enough
        return bool(states & accept)
    return matches


def _compress(uids: list[int]) -> str:
    """1,2,3,5 -> "1:3,5" (the order of the list is kept, as UIDPLUS pairs the two sets)."""
    out = []
    i = 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else f"{uids[i]}:{uids[j]}")
        i = j + 1
    return ",".join(out)


ANY = (State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED)
NOT_AUTH = (State.NOT_AUTHENTICATED,)
AUTH = (State.AUTHENTICATED, State.SELECTED)
SEL = (State.SELECTED,)

COMMANDS = {
    "CAPABILITY": ("cmd_capability", ANY), "NOOP": ("cmd_noop", ANY), "LOGOUT": ("cmd_logout", ANY),
    "ID": ("cmd_id", ANY), "LANGUAGE": ("cmd_language", ANY), "STARTTLS": ("cmd_starttls", NOT_AUTH),
    "LOGIN": ("cmd_login", NOT_AUTH), "AUTHENTICATE": ("cmd_authenticate", NOT_AUTH),
    "SELECT": ("cmd_select", AUTH), "EXAMINE": ("cmd_examine", AUTH), "CREATE": ("cmd_create", AUTH),
    "DELETE": ("cmd_delete", AUTH), "RENAME": ("cmd_rename", AUTH),
    "SUBSCRIBE": ("cmd_subscribe", AUTH), "UNSUBSCRIBE": ("cmd_unsubscribe", AUTH),
    "LIST": ("cmd_list", AUTH), "LSUB": ("cmd_lsub", AUTH), "STATUS": ("cmd_status", AUTH),
    "APPEND": ("cmd_append", AUTH), "NAMESPACE": ("cmd_namespace", AUTH), "IDLE": ("cmd_idle", AUTH),
    "ENABLE": ("cmd_enable", AUTH),
    "CHECK": ("cmd_check", SEL), "CLOSE": ("cmd_close", SEL), "UNSELECT": ("cmd_unselect", SEL),
    "EXPUNGE": ("cmd_expunge", SEL), "SEARCH": ("cmd_search", SEL), "FETCH": ("cmd_fetch", SEL),
    "STORE": ("cmd_store", SEL), "COPY": ("cmd_copy", SEL), "MOVE": ("cmd_move", SEL),
}
UID_COMMANDS = {"FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE"}
SELECTED_ONLY = {name for name, (_m, states) in COMMANDS.items() if states == SEL}
