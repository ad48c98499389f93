"""SMTP for the lab: an aiosmtpd handler that delivers to the store and relays between domains.

Each simulated mail domain (``example.com``, ``example.net``, ...) gets its own SMTP server with
its own host name (``mail.example.com``). A server:

* accepts mail for its own users from anyone, as an MX does (port 25's job);
* accepts mail for other domains only from a user who logged in with AUTH (no open relay);
* relays such mail to the other domain's server over real SMTP, looking the server up in the
  lab's routing table, which plays the part of DNS MX records (the lecture's journey, S11);
* adds a ``Received:`` header at every hop, and ``Message-ID``/``Date`` on submission;
* answers every mistake with the RFC 5321 reply code followed by a hint for learners.

aiosmtpd does the protocol; we subclass its ``SMTP`` class only to record transcripts and add
hints, and keep the mail logic in :class:`DeliveryHandler`, its documented extension point.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import secrets
import smtplib
import socket
import time
import warnings
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email import policy

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .i18n import _
from .net import ServerContext, set_nodelay
from .tls import describe, serve

log = logging.getLogger("maillab.smtp")

MAX_RECIPIENTS = 100
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024


class _DropAiosmtpdNoise(logging.Filter):
    """aiosmtpd logs a warning on every successful AUTH (a deprecation) and on every connection
    to port 465 (AUTH without STARTTLS: there the whole connection is TLS). Noise for learners."""

    NOISE = ("login_data is deprecated", "auth_required == True but auth_require_tls == False")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.NOISE)


logging.getLogger("mail.log").addFilter(_DropAiosmtpdNoise())


# Hints for aiosmtpd's own replies, matched on the start of the reply text.
_HINTS: list[tuple[str, str]] = [
    ("503 Error: send HELO first", "say hello first, for example: EHLO laptop.example.com"),
    ("503 Error: send EHLO first", "say hello first, for example: EHLO laptop.example.com"),
    ("503 Error: need MAIL command", "first say who sends: MAIL FROM:<you@example.com>"),
    ("503 Error: need RCPT command", "name at least one recipient first: RCPT TO:<friend@example.com>"),
    ("503 Error: nested MAIL command", "one MAIL FROM per message; send RSET to start again"),
    ("503 Already authenticated", "you are logged in already"),
    ("501 Syntax: MAIL", "write it as MAIL FROM:<you@example.com>"),
    ("501 Syntax: RCPT", "write it as RCPT TO:<friend@example.com>"),
    ("501 Syntax: EHLO", "give your computer's name: EHLO laptop.example.com"),
    ("501 Syntax: HELO", "give your computer's name: HELO laptop.example.com"),
    ("501 Syntax: DATA", "DATA takes no argument; the message follows after the 354 reply"),
    ("501 Syntax: QUIT", "QUIT takes no argument"),
    ("501 Syntax: RSET", "RSET takes no argument"),
    ("553 5.1.3 Error: malformed address", "an address looks like <name@example.com>"),
    ('500 Error: command "', "SMTP commands are HELO, EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, AUTH, VRFY, HELP"),
    ("500 Error: bad syntax", "type a command such as EHLO laptop.example.com (an empty line or non-text bytes is not a command)"),
    ("500 Error: strict ASCII mode", "commands must be plain ASCII text"),
    ("500 Command line too long", "a command line may be at most 512 bytes (RFC 5321 4.5.3.1.4)"),
    ("500 Line too long", "a line of the message may be at most 1000 bytes (RFC 5321 4.5.3.1.6); the message was not accepted"),
    ("552 Error: Too much mail data", "the message is bigger than the SIZE the server announced after EHLO; it was not accepted"),
    ("552 Error: message size exceeds", "the SIZE you declared is bigger than the server accepts"),
    ("535 5.7.8 Authentication credentials invalid", "wrong user name or password"),
    ("501 5.5.2 Can't decode base64", "AUTH data must be base64, e.g. base64.b64encode(b'\\0alice\\0password')"),
    ("501 5.5.2 Can't split auth value", "AUTH PLAIN data is base64 of \\0user\\0password"),
    ("504 5.5.4 Unrecognized authentication type", "this server offers AUTH PLAIN and AUTH LOGIN"),
    ("530 5.7.0 Authentication required", "log in first with AUTH PLAIN or AUTH LOGIN"),
    ("530 5.7.0 Must issue a STARTTLS command first", "this port wants encryption first: send STARTTLS, then EHLO again"),
    ("538 5.7.11 Encryption required", "send STARTTLS first, so that your password travels encrypted"),
    ("554 Command refused due to lack of security", "the TLS handshake failed; connect again"),
    ("502 EXPN not implemented", "mailing lists are not expanded here"),
]


# aiosmtpd replies that lack the enhanced status code RFC 3207/6409 give them.
_REWRITES = {"530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first"}


def add_hint(reply: str) -> str:
    """Append a learner's hint to one of aiosmtpd's replies (our own replies carry theirs)."""
    reply = _REWRITES.get(reply, reply)
    for prefix, hint in _HINTS:
        if reply.startswith(prefix):
            return f"{reply} ({_('hint')}: {_(hint)})"
    return reply


@dataclass
class QueuedMessage:
    """A message waiting to be relayed to another domain's server."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    queue_id: str
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class Router:
    """The lab's routing table (our stand-in for DNS MX records) and its outgoing queue.

    ``mx`` maps a mail domain to the ``(host, port)`` of its SMTP server. Relaying runs as
    tasks on the lab's loop; :meth:`settle` waits until nothing is in flight.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, retry_delays=(0.2, 1.0, 3.0)):
        self.loop = loop
        self.mx: dict[str, tuple[str, int]] = {}
        self.retry_delays = retry_delays
        self._in_flight: set[asyncio.Task] = set()
        self.delivered: list[QueuedMessage] = []
        self.failed: list[QueuedMessage] = []
        self.bounce = None  # set by the lab: callable(QueuedMessage, error) delivering a DSN
        self.tls_context = None  # a client context trusting the lab's CA: relay over STARTTLS

    def knows(self, domain: str) -> bool:
        return domain.lower() in self.mx

    def enqueue(self, helo_name: str, msg: QueuedMessage) -> None:
        task = self.loop.create_task(self._relay(helo_name, msg))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _relay(self, helo_name: str, msg: QueuedMessage) -> None:
        by_domain: dict[str, list[str]] = {}
        for rcpt in msg.rcpt_tos:
            by_domain.setdefault(rcpt.rsplit("@", 1)[-1].lower(), []).append(rcpt)
        for domain, rcpts in by_domain.items():
            part = QueuedMessage(msg.mail_from, rcpts, msg.content, msg.queue_id)
            for delay in (0.0, *self.retry_delays):
                if delay:
                    await asyncio.sleep(delay)
                part.attempts += 1
                try:
                    await asyncio.to_thread(self._send, helo_name, domain, part)
                except smtplib.SMTPResponseException as e:
                    part.errors.append(f"{e.smtp_code} {e.smtp_error.decode(errors='replace')}")
                    if 400 <= e.smtp_code < 500:
                        continue  # temporary: try again later, as a real MTA would
                    break
                except smtplib.SMTPRecipientsRefused as e:
                    part.errors.extend(f"{r}: {c} {m.decode(errors='replace')}"
                                       for r, (c, m) in e.recipients.items())
                    break
                except (OSError, smtplib.SMTPException) as e:
                    part.errors.append(f"{type(e).__name__}: {e}")
                    continue
                else:
                    self.delivered.append(part)
                    break
            else:
                pass
            if part not in self.delivered:
                self.failed.append(part)
                if self.bounce is not None:
                    self.bounce(part, part.errors[-1] if part.errors else "unknown error")

    def _send(self, helo_name: str, domain: str, msg: QueuedMessage) -> None:
        host, port = self.mx[domain]
        with smtplib.SMTP(host, port, local_hostname=helo_name, timeout=10) as client:
            client.ehlo()
            if self.tls_context is not None and client.has_extn("starttls"):
                # Server-to-server TLS as real MTAs do it (RFC 3207), checked against the
                # lab's CA: an impostor on the MX's port would fail here.
                client.starttls(context=self.tls_context)
                client.ehlo()
            refused = client.sendmail(msg.mail_from, msg.rcpt_tos, msg.content)
            if refused:
                msg.errors.extend(f"{r}: {c} {m.decode(errors='replace')}" for r, (c, m) in refused.items())

    async def settle(self) -> None:
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)


def _received_header(server, session: Session, ctx: ServerContext, queue_id: str,
                     rcpt: str | None) -> bytes:
    peer_ip = session.peer[0] if session.peer else "unknown"
    helo = session.host_name or "unknown"
    protocol = "ESMTP" if session.extended_smtp else "SMTP"  # names from RFC 3848
    if server.is_encrypted:
        protocol += "S"
    if session.authenticated:
        protocol += "A"
    for_part = f"\r\n\tfor <{rcpt}>" if rcpt else ""
    date = email.utils.formatdate(localtime=True)
    return (f"Received: from {helo} ([{peer_ip}])\r\n\tby {ctx.hostname} (maillab) with {protocol} "
            f"id {queue_id}{for_part};\r\n\t{date}\r\n").encode()


# A mailbox as RFC 5321 4.1.2 allows it, less quoted local parts (dot-atom@domain); UTF-8
# letters are allowed because the server offers SMTPUTF8 (RFC 6531).
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\\\"]+@(?:[^\s@<>()\[\],;:\\\".]+\.)*[^\s@<>()\[\],;:\\\".]+$")


def malformed(address: str) -> str | None:
    """The 553 reply for an address that is not local@domain, or None if it is fine."""
    if _ADDRESS.match(address):
        return None
    return (f"553 5.1.3 <{address}>: " + _("malformed address") + f" ({_('hint')}: " +
            _("an address looks like <name@example.com>") + ")")


class DeliveryHandler:
    """The aiosmtpd handler of one domain's SMTP server."""

    def __init__(self, ctx: ServerContext, router: Router):
        self.ctx = ctx
        self.router = router
        self.store = ctx.store

    # ---- authentication (aiosmtpd's authenticator callable)
    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        conn = getattr(server, "transcript", None)
        server.last_auth_user = user
        acct = self.ctx.authenticate(user, auth_data.password.decode("utf-8", "replace"),
                                     protocol=server.mode, peer=conn.peer if conn else "",
                                     mechanism=f"AUTH {mechanism}", secure=server.is_encrypted)
        if acct is None:
            return AuthResult(success=False, handled=False)
        if conn is not None:
            conn.user = acct.login
        return AuthResult(success=True, auth_data=acct.login)

    # ---- envelope
    async def handle_MAIL(self, server, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if address and malformed(address):  # "" is the null sender of bounces (RFC 5321 4.5.5)
            return malformed(address)
        if session.authenticated and address:
            acct = self.store.account(session.auth_data)
            if acct is not None and address.lower() not in acct.addresses:
                return (f"553 5.7.1 <{address}>: " + _("sender address not owned by user") +
                        f" {acct.login} ({_('hint')}: " +
                        _("logged-in users send from their own address, here {0}").format(acct.address) + ")")
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
            if self.store.find_address(address) is None:
                return (f"550 5.1.1 <{address}>: " + _("no such user here") + f" ({_('hint')}: " +
                        _("check the spelling; lab.accounts lists every address") + ")")
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
        content = envelope.original_content or b""
        added = b""
        if session.authenticated:  # submission (RFC 6409 8.2, 8.3): complete the message
            head = re.split(rb"\r?\n\r?\n", content, maxsplit=1)[0]
            headers = BytesHeaderParser(policy=policy.compat32).parsebytes(head + b"\r\n\r\n")
            if headers.get("Date") is None:
                added += f"Date: {email.utils.formatdate(localtime=True)}\r\n".encode()
            if headers.get("Message-ID") is None:
                added += f"Message-ID: <{queue_id}.{int(time.time())}@{self.ctx.hostname}>\r\n".encode()
        local = [r for r in envelope.rcpt_tos if r.rpartition("@")[2].lower() == self.ctx.domain]
        remote = [r for r in envelope.rcpt_tos if r not in local]
        body = added + content
        delivered_to = set()
        for rcpt in local:
            acct = self.store.find_address(rcpt)
            if acct is None or acct.login in delivered_to:
                continue
            delivered_to.add(acct.login)
            trace = (f"Return-Path: <{envelope.mail_from or ''}>\r\n"
                     f"Delivered-To: {rcpt}\r\n").encode()
            acct.folder("INBOX").deliver(trace + _received_header(server, session, self.ctx,
                                                                  queue_id, rcpt) + body)
        if remote:
            self.router.enqueue(self.ctx.hostname, QueuedMessage(
                envelope.mail_from or "", remote,
                _received_header(server, session, self.ctx, queue_id,
                                 remote[0] if len(remote) == 1 else None) + body, queue_id))
        return f"250 2.0.0 OK: queued as {queue_id}"


class LabSMTP(SMTP):
    """aiosmtpd's SMTP session, plus a transcript, learners' hints and slowed-down failures.

    ``mode`` says which job the port has: ``"smtp"`` (25, the MX: mail from anyone for local
    users, STARTTLS offered), ``"submission"`` (587, RFC 6409: STARTTLS before AUTH, AUTH
    before MAIL) or ``"smtps"`` (465, RFC 8314: TLS from the first byte, AUTH before MAIL).
    """

    def __init__(self, handler: DeliveryHandler, ctx: ServerContext, mode: str = "smtp", **kwargs):
        super().__init__(handler, **kwargs)
        self.ctx = ctx
        self.mode = mode
        self.transcript = None
        self.implicit_tls = False
        self.last_auth_user = ""

    @property
    def is_encrypted(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transcript is None:  # not the second call after STARTTLS
            peer = transport.get_extra_info("peername")
            self.transcript = self.ctx.recorder.open(self.ctx.service_name(self.mode),
                                                     f"{peer[0]}:{peer[1]}" if peer else "")
            set_nodelay(transport)
            self.ctx.connections.add(transport)
            self.implicit_tls = transport.get_extra_info("ssl_object") is not None
        tls = describe(transport)
        if tls:  # implicit TLS (465) at once, or the end of a STARTTLS handshake
            self.transcript.event(tls)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.transcript.client(data)
        super().data_received(data)

    def connection_lost(self, error) -> None:
        if self.transcript is not None:
            self.transcript.close()
        if self._original_transport is not None:
            self.ctx.connections.discard(self._original_transport)
        self.ctx.connections.discard(self.transport)
        super().connection_lost(error)

    async def push(self, status) -> None:
        if isinstance(status, bytes):
            status = status.decode("utf-8", "replace")
        if status.startswith("535"):  # a failed login: answer later, the more failures the later
            delay = self.ctx.guard.delay(self.transcript.peer, self.last_auth_user)
            if delay:
                await asyncio.sleep(delay)
        line = (add_hint(status) + "\r\n").encode("utf-8")
        self.transcript.server(line)
        if self.transport is None or self.transport.is_closing():
            return
        self._writer.write(line)
        await self._writer.drain()


async def start_smtp(ctx: ServerContext, sock: socket.socket, router: Router, *,
                     mode: str = "smtp", size_limit: int = DEFAULT_SIZE_LIMIT
                     ) -> asyncio.base_events.Server:
    """Serve SMTP for ``ctx.domain`` on an already listening socket.

    ``mode``: ``"smtp"`` (port 25's job), ``"submission"`` (587) or ``"smtps"`` (465); the TLS
    modes need ``ctx.tls``.
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
                           authenticator=handler.authenticate,
                           timeout=ctx.options.get("smtp_timeout", 300), loop=loop, **settings)

    return await serve(ctx, sock, factory, implicit_tls=mode == "smtps")
