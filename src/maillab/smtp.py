"""SMTP for the lab: an aiosmtpd handler that delivers to the store and relays between domains.

Each simulated mail domain (``example.com``, ``example.net``, ...) gets its own SMTP server with
its own host name (``mail.example.com``). A server:

* accepts mail for its own users from anyone, as an MX does (port 25's job);
* accepts mail for other domains only from a user who logged in with AUTH (no open relay);
* relays such mail to the other domain's server over real SMTP, looking the server up in the
  lab's routing table, which plays the part of DNS MX records (the lecture's journey, S11);
* adds a ``Received:`` header at every hop, and ``Message-ID``/``Date`` on submission;
* answers every mistake with the RFC 5321 reply code followed by a hint for learners.

aiosmtpd does the protocol; we subclass its ``SMTP`` class to record transcripts, add hints and
close the gaps a hostile or clumsy client finds (see :class:`LabSMTP`), and keep the mail logic
in :class:`DeliveryHandler`, its documented extension point. Relayed mail goes through the queue
on disk of :mod:`maillab.relay` before the client gets its ``250``.
"""

from __future__ import annotations

import asyncio
import binascii
import email.utils
import functools
import logging
import re
import secrets
import socket
import time
import warnings
from base64 import b64decode, b64encode
from email._header_value_parser import get_addr_spec, get_angle_addr  # (aiosmtpd's parser)

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session, TLSSetupException, syntax

from .i18n import N_, _
from .net import ServerContext, busy_login_hint, set_nodelay
from .relay import QueuedMessage, Router
from .tls import describe, serve

log = logging.getLogger("maillab.smtp")

MAX_RECIPIENTS = 100
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024
DEFAULT_TIMEOUT = 300  # seconds without progress before the server hangs up (RFC 5321 4.5.3.2.7)
DEFAULT_SESSION_LIMIT = 3600  # seconds a session may last at most, whatever it does
MAX_BAD_COMMANDS_IN_A_ROW = 10  # unrecognised commands in a row before the server hangs up
# Commands that keep a session open without moving mail: they do not reset the idle timer.
_NO_PROGRESS = {"NOOP", "RSET", "HELP", "VRFY", "EXPN"}
AUTH_LINE_LIMIT = 12288  # octets of one AUTH exchange line (RFC 4954 4)


class _DropAiosmtpdNoise(logging.Filter):
    """aiosmtpd logs a warning on every successful AUTH (a deprecation) and on every connection
    to port 465 (AUTH without STARTTLS: there the whole connection is TLS). Noise for learners."""

    NOISE = ("login_data is deprecated", "auth_required == True but auth_require_tls == False")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.NOISE)


logging.getLogger("mail.log").addFilter(_DropAiosmtpdNoise())


# Hints for aiosmtpd's own replies, matched on the start of the reply text.
_HINTS: list[tuple[str, str]] = [
    ("503 Error: send HELO first", N_("say hello first, for example: EHLO laptop.example.com")),
    ("503 Error: send EHLO first", N_("say hello first, for example: EHLO laptop.example.com")),
    ("503 Error: need MAIL command", N_("first say who sends: MAIL FROM:<you@example.com>")),
    ("503 Error: need RCPT command", N_("name at least one recipient first: RCPT TO:<friend@example.com>")),
    ("503 Error: nested MAIL command", N_("one MAIL FROM per message; send RSET to start again")),
    ("503 Already authenticated", N_("you are logged in already")),
    ("501 Syntax: MAIL", N_("write it as MAIL FROM:<you@example.com>")),
    ("501 Syntax: RCPT", N_("write it as RCPT TO:<friend@example.com>")),
    ("501 Syntax: EHLO", N_("give your computer's name: EHLO laptop.example.com")),
    ("501 Syntax: HELO", N_("give your computer's name: HELO laptop.example.com")),
    ("501 Syntax: DATA", N_("DATA takes no argument; the message follows after the 354 reply")),
    ("501 Syntax: QUIT", N_("QUIT takes no argument")),
    ("501 Syntax: RSET", N_("RSET takes no argument")),
    ("553 5.1.3 Error: malformed address", N_("an address looks like <name@example.com>")),
    ('500 Error: command "', N_("SMTP commands are HELO, EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, AUTH, VRFY, HELP")),
    ("500 Error: bad syntax", N_("type a command such as EHLO laptop.example.com (an empty line or non-text bytes is not a command)")),
    ("500 Error: strict ASCII mode", N_("commands must be plain ASCII text")),
    ("500 Command line too long", N_("a command line may be at most 512 bytes (RFC 5321 4.5.3.1.4)")),
    ("500 Line too long", N_("a line of the message may be at most 1000 bytes (RFC 5321 4.5.3.1.6); the message was not accepted")),
    ("552 Error: Too much mail data", N_("the message is bigger than the SIZE the server announced after EHLO; it was not accepted")),
    ("552 Error: message size exceeds", N_("the SIZE you declared is bigger than the server accepts")),
    ("535 5.7.8 Authentication credentials invalid", N_("wrong user name or password")),
    ("501 5.5.2 Can't decode base64", N_("AUTH data must be base64, e.g. base64.b64encode(b'\\0alice\\0password')")),
    ("501 5.5.2 Can't split auth value", N_("AUTH PLAIN data is base64 of \\0user\\0password")),
    ("504 5.5.4 Unrecognized authentication type", N_("this server offers AUTH PLAIN and AUTH LOGIN")),
    ("530 5.7.0 Authentication required", N_("log in first with AUTH PLAIN or AUTH LOGIN")),
    ("530 5.7.0 Must issue a STARTTLS command first", N_("this port wants encryption first: send STARTTLS, then EHLO again")),
    ("538 5.7.11 Encryption required", N_("send STARTTLS first, so that your password travels encrypted")),
    ("554 Command refused due to lack of security", N_("the TLS handshake failed; connect again")),
    ("502 EXPN not implemented", N_("mailing lists are not expanded here")),
    ("501 Not enough value", N_("name a mechanism: AUTH PLAIN or AUTH LOGIN")),
    ("501 Too many values", N_("AUTH takes a mechanism and at most one base64 answer")),
    ("500 Error: command 'AUTH' not recognized", N_("AUTH works after EHLO, not after HELO")),
    ("501 5.7.0 Auth aborted", N_("you answered * : the login was cancelled")),
    ("555 MAIL FROM parameters", N_("after the address this server knows SIZE=, BODY= and SMTPUTF8")),
    ("555 RCPT TO parameters", N_("RCPT TO takes no parameters here")),
    ("501 Error: BODY can only be", N_("write BODY=7BIT or BODY=8BITMIME")),
    ("501 Error: SMTPUTF8 takes no arguments", N_("write just SMTPUTF8 after the address")),
    ("501 Syntax: STARTTLS", N_("STARTTLS takes no argument")),
    ("501 Syntax: VRFY", N_("write it as VRFY <name@example.com>")),
    ("502 Could not VRFY", N_("write it as VRFY <name@example.com>")),
    ("501 Supported commands", N_("HELP alone lists the commands; HELP MAIL explains one of them")),
    ("454 TLS not available", N_("this port has no TLS; the lab's other ports do (lab.services)")),
    ("500 5.5.6 Authentication Exchange line is too long",
     N_("the answer to a 334 challenge is one base64 line of at most 12,286 characters")),
]


# aiosmtpd replies that lack the enhanced status code RFC 3207/6409 give them.
_REWRITES = {"530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first"}


def add_hint(reply: str) -> str:
    """Append a learner's hint to one of aiosmtpd's replies (our own replies carry theirs).
    Only refusals (4xx, 5xx) get one: the replies of a mail going through are left as they are."""
    if reply[:1] not in ("4", "5"):
        return reply
    reply = _REWRITES.get(reply, reply)
    for prefix, hint in _HINTS:
        if reply.startswith(prefix):
            return f"{reply} ({_('hint')}: {_(hint)})"
    return reply


def printable(text: str) -> str:
    """``text`` safe to echo in a reply or a header: control characters, other characters that
    are not printable (line separators, ...) and bytes that were not UTF-8 (kept as surrogates
    by aiosmtpd) become ``?``, so a reply stays one clean line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


_date_of_second: tuple[int, str] = (0, "")


def _header_date() -> str:
    """Now as a header's date (RFC 5322 3.3, local time), made once a second: the text has
    whole seconds, so the messages of one second share it."""
    global _date_of_second
    second = int(time.time())
    if _date_of_second[0] != second:
        _date_of_second = (second, email.utils.formatdate(second, localtime=True))
    return _date_of_second[1]


def _received_header(server, session: Session, ctx: ServerContext, queue_id: str,
                     rcpt: str | None) -> bytes:
    peer_ip = session.peer[0] if session.peer else "unknown"
    helo = printable(session.host_name or "unknown")
    protocol = "ESMTP" if session.extended_smtp else "SMTP"  # names from RFC 3848
    if server.is_encrypted:
        protocol += "S"
    if session.authenticated:
        protocol += "A"
    for_part = f"\r\n\tfor <{rcpt}>" if rcpt else ""
    date = _header_date()
    return (f"Received: from {helo} ([{peer_ip}])\r\n\tby {ctx.hostname} (maillab) with {protocol} "
            f"id {queue_id}{for_part};\r\n\t{date}\r\n").encode()


# A mailbox as RFC 5321 4.1.2 allows it, less quoted local parts (dot-atom@domain); UTF-8
# letters are allowed because the server offers SMTPUTF8 (RFC 6531).
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\\\"]+@(?:[^\s@<>()\[\],;:\\\".]+\.)*[^\s@<>()\[\],;:\\\".]+$")


# <local@domain> of dot-atoms in ASCII (RFC 5322 3.2.3), then the end or spaces and a parameter:
# the parser's answer for these is the text between the brackets and what follows the spaces.
# (A pattern string: re compiles it at the first MAIL command, not at ``import maillab``.)
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_PLAIN_ANGLE_ADDR = rf"<({_DOT_ATOM}@{_DOT_ATOM})>(?:\Z| +(?=[^\s(]))"


def malformed(address: str) -> str | None:
    """The 553 reply for an address that is not local@domain, or None if it is fine."""
    if _ADDRESS.match(address) and address.isprintable():
        return None
    if not address.isprintable():
        hint = _("an address is text in ASCII or UTF-8, without control characters")
    else:
        hint = _("an address looks like <name@example.com>")
    return f"553 5.1.3 <{printable(address)}>: " + _("malformed address") + f" ({_('hint')}: {hint})"


class NullPath(str):
    """The null reverse-path ``<>`` (RFC 5321 4.5.5): the sender of bounces, which every server
    must accept. It equals ``""`` but is true, because aiosmtpd takes a false ``mail_from`` to
    mean "no MAIL command yet"."""

    def __bool__(self) -> bool:
        return True


NULL_PATH = NullPath("")


class DeliveryHandler:
    """The aiosmtpd handler of one domain's SMTP server."""

    def __init__(self, ctx: ServerContext, router: Router):
        self.ctx = ctx
        self.router = router
        self.store = ctx.store

    def sender_refusal(self, session: Session, address: str) -> str | None:
        """The 553 reply when a logged-in user names a sender address that is not theirs."""
        if not session.authenticated or address == "":
            return None
        acct = self.store.account(session.auth_data)
        if acct is None or address.lower() in acct.addresses:
            return None
        return (f"553 5.7.1 <{printable(address)}>: " + _("sender address not owned by user") +
                f" {acct.login} ({_('hint')}: " +
                _("logged-in users send from their own address, here {0}").format(acct.address) + ")")

    # ---- envelope
    async def handle_MAIL(self, server, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if address != "" and malformed(address):  # "" is the null sender <> (RFC 5321 4.5.5)
            return malformed(address)
        refusal = self.sender_refusal(session, address)
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return f"452 4.5.3 " + _("too many recipients") + f" ({_('hint')}: " + \
                _("at most {0} per message").format(MAX_RECIPIENTS) + ")"
        local, _at, domain = address.rpartition("@")
        if not _at and address.lower() == "postmaster":  # RFC 5321 4.5.1
            domain, address = self.ctx.domain, f"{address}@{self.ctx.domain}"
        elif malformed(address):
            return malformed(address)
        domain = domain.lower()
        if domain == self.ctx.domain:
            account = self.store.find_recipient(address)
            if account is None:
                return (f"550 5.1.1 <{address}>: " + _("no such user here") + f" ({_('hint')}: " +
                        _("check the spelling; lab.accounts lists every address") + ")")
            if account.folder("INBOX").room() < 1:  # RFC 5321 4.5.3.1.10: a temporary refusal
                return (f"452 4.2.2 <{address}>: " + _("mailbox full") + f" ({_('hint')}: " +
                        _("its INBOX holds {0} messages, the lab's quota; the mail can come once "
                          "some are deleted").format(self.store.max_messages) + ")")
        elif not session.authenticated:
            return (f"554 5.7.1 <{address}>: " + _("relay access denied") + f" ({_('hint')}: " +
                    _("this server takes mail from strangers only for {0}; log in with AUTH "
                      "to send to other domains").format(self.ctx.domain) + ")")
        elif not self.router.knows(domain):
            known = ", ".join(sorted(self.router.mx)) or "-"
            return (f"550 5.1.2 <{address}>: " + _("no mail server known for domain") + f" {domain} "
                    f"({_('hint')}: " + _("the lab's MX table knows {0}").format(known) + ")")
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    # ---- the message
    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        queue_id = secrets.token_hex(6).upper()
        sender = str(envelope.mail_from)  # a plain "" for the null sender
        content = envelope.original_content or b""
        added = b""
        if session.authenticated:  # submission (RFC 6409 8.2, 8.3): complete the message
            from email import policy  # (here: mail from strangers, most of it, needs no parser)
            from email.parser import BytesHeaderParser
            head = re.split(rb"\r?\n\r?\n", content, maxsplit=1)[0]
            headers = BytesHeaderParser(policy=policy.compat32).parsebytes(head + b"\r\n\r\n")
            if headers.get("Date") is None:
                added += f"Date: {_header_date()}\r\n".encode()
            if headers.get("Message-ID") is None:
                added += f"Message-ID: <{queue_id}.{int(time.time())}@{self.ctx.hostname}>\r\n".encode()
        local = [r for r in envelope.rcpt_tos if r.rpartition("@")[2].lower() == self.ctx.domain]
        remote = [r for r in envelope.rcpt_tos if r not in local]
        body = added + content
        if remote:
            # On disk before anything else happens: the 250 below is a promise (RFC 5321 6.1).
            try:
                self.router.enqueue(self.ctx.hostname, QueuedMessage(
                    sender, remote, _received_header(server, session, self.ctx, queue_id,
                                                     remote[0] if len(remote) == 1 else None) + body,
                    queue_id))
            except OSError as e:
                log.error("could not queue %s: %s", queue_id, e)
                return ("451 4.3.0 " + _("could not queue the message; nothing was delivered") +
                        f" ({_('hint')}: " + _("try again in a moment") + ")")
        delivered_to = set()
        for rcpt in local:
            acct = self.store.find_recipient(rcpt)
            if acct is None or acct.login in delivered_to:
                continue
            delivered_to.add(acct.login)
            trace = (f"Return-Path: <{sender}>\r\n"
                     f"Delivered-To: {rcpt}\r\n").encode()
            acct.folder("INBOX").deliver(trace + _received_header(server, session, self.ctx,
                                                                  queue_id, rcpt) + body)
        return f"250 2.0.0 OK: queued as {queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        """A bug of ours, not the client's fault: logged (in the lab's log), and a 451."""
        log.error("SMTP session error", exc_info=error)
        return ("451 4.3.0 " + _("internal error; the command was not carried out") +
                f" ({_('hint')}: " + _("lab.log() shows the details") + ")")


class _Commands(dict):
    """aiosmtpd's table of SMTP commands, consulted once per command line. Through it
    :class:`LabSMTP` learns each command's name and answers the unrecognised ones itself."""

    def __init__(self, methods: dict, session: "LabSMTP"):
        super().__init__(methods)
        self.session = session

    def get(self, command, default=None):
        method = super().get(command)
        if method is None:
            self.session.current_command = None
            return functools.partial(self.session.unrecognised, command)
        self.session.current_command = command
        self.session.bad_commands_in_a_row = 0
        return method


class LabSMTP(SMTP):
    """aiosmtpd's SMTP session, plus a transcript, learners' hints and slowed-down failures.

    ``mode`` says which job the port has: ``"smtp"`` (25, the MX: mail from anyone for local
    users, STARTTLS offered), ``"submission"`` (587, RFC 6409: STARTTLS before AUTH, AUTH
    before MAIL) or ``"smtps"`` (465, RFC 8314: TLS from the first byte, AUTH before MAIL).

    What it changes in aiosmtpd's behaviour, and why:

    * ``MAIL FROM:<>`` is accepted (the null sender of bounces, RFC 5321 4.5.5);
    * ``AUTH`` inside a mail transaction is refused (RFC 4954 4), so the sender check of
      ``MAIL`` always sees the login that sends;
    * password checks run in a worker thread (scrypt must not stall every other server), and a
      refused login is answered late (:class:`maillab.net.LoginGuard`);
    * unrecognised commands end the session only when ``MAX_BAD_COMMANDS_IN_A_ROW`` come in a
      row (aiosmtpd counts five in a whole session), with a hint for header lines typed too early;
    * every reply is one printable line, whatever bytes the client sent; an internal error is a
      ``451`` and a record in the lab's log, never a traceback in a reply;
    * the idle timer runs from the last command that moved mail along (NOOP and RSET do not
      count), a session lasts at most ``smtp_session_limit`` seconds, and the transcript says
      why the server hung up.
    """

    def __init__(self, handler: DeliveryHandler, ctx: ServerContext, mode: str = "smtp", **kwargs):
        super().__init__(handler, **kwargs)
        self.ctx = ctx
        self.mode = mode
        self.transcript = None
        self.implicit_tls = False
        self.current_command: str | None = ""  # None while an unrecognised one is answered
        self.bad_commands_in_a_row = 0
        self.close_reason: str | None = None
        self._session_timer: asyncio.TimerHandle | None = None
        self._smtp_methods = _Commands(self._smtp_methods, self)

    @property
    def is_encrypted(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    # ---- connection and transcript
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transcript is None:  # not the second call after STARTTLS
            peer = transport.get_extra_info("peername")
            self.transcript = self.ctx.recorder.open(self.ctx.service_name(self.mode),
                                                     f"{peer[0]}:{peer[1]}" if peer else "")
            set_nodelay(transport)
            self.ctx.connections.add(transport)
            self.implicit_tls = transport.get_extra_info("ssl_object") is not None
            limit = float(self.ctx.options.get("smtp_session_limit", DEFAULT_SESSION_LIMIT))
            self._session_timer = self.loop.call_later(limit, self._hang_up, "4.4.2", _(
                "session too long (at most {0:g} s); closing connection").format(limit))
        tls = describe(transport)
        if tls:  # implicit TLS (465) at once, or the end of a STARTTLS handshake
            self.transcript.event(tls)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.transcript.client(data)
        super().data_received(data)

    def connection_lost(self, error) -> None:
        if self.transcript is not None:
            self.transcript.close(self.close_reason or "connection closed")
        if self._session_timer is not None:
            self._session_timer.cancel()
        if self._original_transport is not None:
            self.ctx.connections.discard(self._original_transport)
        self.ctx.connections.discard(self.transport)
        super().connection_lost(error)

    # ---- timeouts
    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd restarts the idle timer for every recognised command; a client sending NOOP
        # every few minutes would hold its connection for ever.
        if self._timeout_handle is not None and (self.current_command is None
                                                 or self.current_command in _NO_PROGRESS):
            return
        super()._reset_timeout(duration)

    def _timeout_cb(self) -> None:
        self._hang_up("4.4.2", _("idle for {0:g} s; closing connection").format(self._timeout_duration))

    def _hang_up(self, status: str, why: str) -> None:
        """Say goodbye with a 421 (RFC 5321 3.8) and close; the transcript says why."""
        if self.transport is None or self.transport.is_closing():
            return
        self.close_reason = why
        line = f"421 {status} {self.hostname} {why}\r\n".encode()
        self.transcript.server(line)
        self.transport.write(line)
        self.transport.close()

    # ---- replies
    async def push(self, status) -> None:
        if isinstance(status, bytes):
            status = status.decode("utf-8", "replace")
        line = (printable(add_hint(status)) + "\r\n").encode("utf-8")
        self.transcript.server(line)
        if self.transport is None or self.transport.is_closing():
            return
        self._writer.write(line)
        await self._writer.drain()

    async def unrecognised(self, command: str, arg: str | None) -> None:
        """Answer a command SMTP does not have; hang up only after many in a row."""
        self.bad_commands_in_a_row += 1
        if self.bad_commands_in_a_row >= MAX_BAD_COMMANDS_IN_A_ROW:
            self._hang_up("4.7.0", _("too many unrecognised commands in a row ({0}); closing "
                                     "connection").format(self.bad_commands_in_a_row))
            return
        reply = f'500 5.5.2 Error: command "{command}" not recognized'
        if command.endswith(":"):  # "Subject: hi" typed before DATA
            reply += f" ({_('hint')}: " + _("header lines such as {0} go after DATA, in the "
                                            "message itself").format(command.title()) + ")"
        else:
            reply += f" ({_('hint')}: " + _("SMTP commands are HELO, EHLO, MAIL, RCPT, DATA, RSET, "
                                            "NOOP, QUIT, AUTH, VRFY, HELP") + ")"
        await self.push(reply)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):  # the client's doing, not a bug of ours
            self.close_reason = _("TLS handshake failed ({0})").format(error.__cause__ or error)
            log.info("STARTTLS handshake with %s failed: %r", self.transcript.peer, error.__cause__)
            return "554 5.7.0 TLS handshake failed"  # not sent: aiosmtpd closes the connection
        return await super().handle_exception(error)

    # ---- addresses
    def _getaddr(self, arg: str):
        """The address of MAIL FROM/RCPT TO and what follows it, parsed as aiosmtpd does (with
        the email package's RFC 5322 parser), or (None, None). Written out here because
        aiosmtpd 1.4.6 defines a class (a typing.Protocol) on every call, which cost about as
        much as the rest of a MAIL command; here the null path ``<>`` is accepted too."""
        stripped = arg.lstrip()
        if stripped.startswith("<>"):  # the null reverse-path, which aiosmtpd refuses
            return NULL_PATH, stripped[2:]
        if not arg:
            return "", ""
        start = arg.lstrip(" \t")  # (the parser skips these; other spaces it refuses)
        plain = re.match(_PLAIN_ANGLE_ADDR, start)
        if plain:  # what nearly every client sends: the parser would give the same, slowly
            addr, rest = plain.group(1), start[plain.end():]
        else:
            addr, rest = self._parsed_address(arg, stripped)
            if addr is None:
                return None, None
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    @staticmethod
    def _parsed_address(arg: str, stripped: str):
        """The address and the rest of ``arg`` by the email package's parser, or (None, None)."""
        try:
            address, rest = (get_angle_addr if stripped.startswith("<") else get_addr_spec)(arg)
            return address.addr_spec, rest
        except Exception:  # HeaderParseError, and others on some inputs, e.g. "<@a.example:"
            return None, None

    # ---- AUTH
    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if self.envelope.mail_from:
            # RFC 4954 4: no AUTH during a mail transaction. Otherwise MAIL FROM:<someone>
            # followed by AUTH as yourself would skip the check that you own the sender.
            await self.push("503 5.5.1 " + _("AUTH not permitted during a mail transaction") +
                            f" ({_('hint')}: " + _("log in before MAIL FROM, or send RSET first") + ")")
            return
        if arg and not arg.split():
            # Only characters str.split() counts as spaces (\x1c-\x1f, \x85, ...): aiosmtpd
            # would look for a mechanism in an empty list and raise IndexError; as nothing,
            # it answers "501 Not enough value" after its own checks (EHLO first, ...).
            arg = ""
        await super().smtp_AUTH(arg)

    async def auth_PLAIN(self, _server, args: list[str]) -> AuthResult:
        blob = await self._auth_argument(args, b"")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:  # [authorisation id] NUL login NUL password (RFC 4616)
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check_login("PLAIN", parts[1], parts[2])

    async def auth_LOGIN(self, _server, args: list[str]) -> AuthResult:
        login = await self._auth_argument(args, b"User Name\0")
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(b"Password\0")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._check_login("LOGIN", login, password)

    async def _auth_argument(self, args: list[str], challenge: bytes) -> bytes | None:
        """The base64 answer given with the AUTH command, or asked for with a 334 challenge."""
        if len(args) == 1:
            answer = await self.challenge_auth(challenge)
            return None if answer is MISSING else answer
        try:
            return b64decode(args[1].encode("ascii", "strict"), validate=True)
        except (binascii.Error, UnicodeError, ValueError):
            await self.push("501 5.5.2 Can't decode base64")
            return None

    async def challenge_auth(self, challenge, encode_to_b64: bool = True,
                             log_client_response: bool = False):
        """A 334 challenge and the client's base64 answer (MISSING if there is none). Unlike
        aiosmtpd's, an over-long answer line is read to its end and refused (RFC 4954 4)."""
        if isinstance(challenge, str):
            challenge = challenge.encode()
        await self.push(b"334 " + (b64encode(challenge) if encode_to_b64 else challenge))
        line = await self._read_auth_line()
        if line is MISSING:  # the client hung up
            return MISSING
        if line is None:
            await self.push("500 5.5.6 Authentication Exchange line is too long")
            return MISSING
        blob = line.strip()
        if blob == b"*":  # the client cancels (RFC 4954 4)
            await self.push("501 5.7.0 Auth aborted")
            return MISSING
        try:
            return b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            await self.push("501 5.5.2 Can't decode base64")
            return MISSING

    async def _read_auth_line(self):
        """One line of an AUTH exchange: up to AUTH_LINE_LIMIT octets, although the reader's
        own limit (aiosmtpd's line_length_limit, 1,001) is smaller: a longer line comes in
        pieces. None for a line over the limit (read to its end), MISSING if the client hung up."""
        pieces, size = [], 0
        while True:
            try:
                pieces.append(await self._reader.readuntil(b"\n"))
                line = b"".join(pieces)
                return line if len(line) <= AUTH_LINE_LIMIT else None
            except asyncio.IncompleteReadError:
                return MISSING
            except asyncio.LimitOverrunError as e:
                size += e.consumed
                if size > AUTH_LINE_LIMIT:
                    await self._discard_line(e.consumed)
                    return None
                pieces.append(await self._reader.readexactly(e.consumed))

    async def _discard_line(self, consumed: int) -> None:
        """Skip the rest of a line longer than the reader's limit."""
        while True:
            await self._reader.read(consumed)
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as e:
                consumed = e.consumed
            except asyncio.IncompleteReadError:
                return

    async def _check_login(self, mechanism: str, login: bytes, password: bytes) -> AuthResult:
        user = login.decode("utf-8", "replace")
        # While the account or address is being guessed, the check waits its turn, so the right
        # password is answered as late as a wrong one (see LoginGuard.admit).
        turn = self.ctx.guard.admit(self.transcript.peer, user)
        if turn.refused:  # RFC 4954 6: a temporary failure; the password was not checked
            return AuthResult(success=False, handled=False, message=(
                "454 4.7.0 Temporary authentication failure (" + _("hint") + ": "
                + busy_login_hint(turn.retry_after) + ")"))
        if turn.wait:
            await asyncio.sleep(turn.wait)
        # scrypt takes milliseconds: in a worker thread, so the loop serves everyone meanwhile.
        acct = await asyncio.to_thread(
            self.ctx.authenticate, user, password.decode("utf-8", "replace"), protocol=self.mode,
            peer=self.transcript.peer, mechanism=f"AUTH {mechanism}", secure=self.is_encrypted)
        if acct is None:
            return AuthResult(success=False, handled=False)  # aiosmtpd answers 535
        self.transcript.user = acct.login
        return AuthResult(success=True, auth_data=acct.login)


async def start_smtp(ctx: ServerContext, sock: socket.socket, router: Router, *,
                     mode: str = "smtp", size_limit: int = DEFAULT_SIZE_LIMIT
                     ) -> asyncio.base_events.Server:
    """Serve SMTP for ``ctx.domain`` on an already listening socket.

    ``mode``: ``"smtp"`` (port 25's job), ``"submission"`` (587) or ``"smtps"`` (465); the TLS
    modes need ``ctx.tls``. Options read from ``ctx.options``: ``smtp_timeout`` (seconds without
    progress, default 300), ``smtp_session_limit`` (default 3600), ``max_connections``.
    """
    handler = DeliveryHandler(ctx, router)
    loop = asyncio.get_running_loop()
    tls = ctx.server_tls_context()
    if mode != "smtp" and tls is None:
        raise ValueError(f"{mode} needs TLS (ctx.tls)")
    settings = {
        # Port 25 in this lab lets learners AUTH by hand in clear text, unless the lab is
        # strict; STARTTLS is offered as real MX servers do.
        "smtp": dict(tls_context=tls, auth_require_tls=ctx.strict),
        "submission": dict(tls_context=tls, require_starttls=True, auth_required=True,
                           auth_require_tls=True),
        # aiosmtpd does not count implicit TLS as TLS and would hide AUTH (facts.md): the
        # connection is encrypted from its first byte, so AUTH needs no further TLS here.
        "smtps": dict(auth_required=True, auth_require_tls=False),
    }[mode]

    def factory() -> LabSMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without TLS; on 465 the whole connection is TLS.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return LabSMTP(handler, ctx, mode, hostname=ctx.hostname, ident="ESMTP maillab",
                           data_size_limit=size_limit, enable_SMTPUTF8=True,
                           timeout=float(ctx.options.get("smtp_timeout", DEFAULT_TIMEOUT)),
                           loop=loop, **settings)

    busy = (f"421 4.7.0 {ctx.hostname} " + _("too many connections; try again later") +
            f" ({_('hint')}: " + _("close connections you no longer use") + ")")
    return await serve(ctx, sock, factory, implicit_tls=mode == "smtps", busy_reply=busy,
                       service=ctx.service_name(mode))
