"""MailLab: the whole mail system of a lesson, started with one call.

One asyncio loop in one background thread runs every server of the lab; the notebook's own code
(blocking sockets, smtplib, ...) runs in the kernel's main thread and talks to them over loopback.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Iterable, NamedTuple

from .i18n import N_, _, set_language, speak_protocol_in_this_thread
from .logs import LabLog, bind_thread, exception_handler
from .logs import install as route_server_logs
from .net import (LOOPBACK, LoginGuard, ServerContext, bind_listener, connection_limit_for,
                  raise_open_file_limit)
from .relay import HISTORY, QUEUE_DIR, Router
from .privacy import OwnerOnly, guard
from .smtp import DEFAULT_SIZE_LIMIT, start_smtp
from .store import SCRYPT_N, Store, hash_password
from .tls import LabCA
from .transcript import Recorder, Transcript

__all__ = ["MailLab", "LabAccount", "Service", "start", "DEFAULT_ACCOUNTS"]


class LabAccount(NamedTuple):
    """A ready-made account: what a learner types to log in."""

    login: str
    password: str
    address: str
    domain: str


# Two simulated providers (RFC 2606 reserved names) for the lecture's journey (S11):
# you are alice at example.com; john reads his mail at example.net.
DEFAULT_ACCOUNTS = (
    LabAccount("alice", "wonderland", "alice@example.com", "example.com"),
    LabAccount("bob", "builder", "bob@example.com", "example.com"),
    LabAccount("john", "postman", "john@example.net", "example.net"),
    LabAccount("maria", "sunflower", "maria@example.net", "example.net"),
)

# The ready-made accounts' passwords are printed on screen for learners to type, so a hash
# cannot protect them; a low scrypt work factor keeps start-up quick (2**8: about 0.5 ms a hash
# here, 2**10 took 4 ms, and every start hashes each account anew). Accounts added through the
# Store keep the full default (SCRYPT_N).
LAB_SCRYPT_N = 2**8

# protocol -> (standard port, mnemonic port for the first domain, what it is for)
# How often (seconds) the lab looks whether it went quiet after traffic, to give memory back.
QUIET_CHECK = 10.0


def release_free_memory() -> bool:
    """Hand the C allocator's free pages back to the system (glibc's malloc_trim). After a burst
    of sessions glibc keeps what they freed (tens of MB after 200 concurrent sessions) and the
    kernel's RSS stays at the peak. A full garbage collection first: sessions cut short leave
    cycles (a transport, its protocol, an exception's traceback) that only it frees. False
    where there is no glibc."""
    import gc
    gc.collect()
    try:
        import ctypes
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError, TypeError):
        return False


PROTOCOLS = {
    "smtp": (25, 2525, N_("SMTP between mail servers: mail for this provider's users arrives here")),
    "submission": (587, 2587, N_("SMTP submission: your mail program sends here (STARTTLS, then AUTH)")),
    "smtps": (465, 2465, N_("SMTP submission, TLS from the first byte: your mail program sends here")),
    "pop3": (110, 1110, N_("POP3: download mail to your computer")),
    "pop3s": (995, 1995, N_("POP3, TLS from the first byte")),
    "imap": (143, 1143, N_("IMAP: read and keep mail on the server")),
    "imaps": (993, 1993, N_("IMAP, TLS from the first byte")),
    # One webmail for the whole lab (it serves every domain: the address typed picks the servers).
    "webmail": (80, 8025, N_("Webmail: mail in the browser over HTTP; it speaks IMAP and SMTP")),
}


class Service:
    """One listening server of the lab."""

    def __init__(self, protocol: str, domain: str, hostname: str, port: int, standard_port: int,
                 description: str, server: object = None, login_policy: str = ""):
        self.protocol = protocol  # "smtp", "pop3", "imap", ...
        self.domain = domain
        self.hostname = hostname
        self.port = port
        self.standard_port = standard_port
        self.description = description
        self.server = server
        self.login_policy = login_policy  # how passwords may travel on this port

    def __repr__(self) -> str:
        return (f"Service(protocol={self.protocol!r}, domain={self.domain!r}, "
                f"hostname={self.hostname!r}, port={self.port!r}, "
                f"standard_port={self.standard_port!r}, description={self.description!r}, "
                f"login_policy={self.login_policy!r})")

    @property
    def name(self) -> str:
        return f"{self.protocol}:{self.domain}"


def login_policy(protocol: str, strict: bool) -> str:
    """In words: when this port lets a password through (shown in the lab's table)."""
    if protocol in ("smtps", "pop3s", "imaps"):
        return _("encrypted from the first byte")
    if protocol == "submission":
        return _("STARTTLS first, then AUTH, then MAIL")
    if protocol == "webmail":
        return _("the webmail logs in for you over IMAP and SMTP")
    upgrade = {"smtp": "STARTTLS", "pop3": "STLS", "imap": "STARTTLS"}[protocol]
    if strict:
        return _("login only after {0}").format(upgrade)
    return _("clear-text login allowed (to learn by hand); {0} offered").format(upgrade)


class StoredMessage:
    """A message as the server stored it, for notebooks and graders to inspect."""

    def __init__(self, uid: int, flags: frozenset, size: int, internaldate: float, path: Path,
                 raw: bytes):
        self.uid = uid
        self.flags = flags
        self.size = size
        self.internaldate = internaldate
        self.path = path
        self.raw = raw  # as clients receive it (CRLF line ends)

    def _fields(self) -> tuple:
        return self.uid, self.flags, self.size, self.internaldate, self.path, self.raw

    def __eq__(self, other: object) -> bool:
        if type(other) is not StoredMessage:
            return NotImplemented
        return self._fields() == other._fields()

    @property
    def message(self) -> email.message.EmailMessage:
        import email.policy  # only when a notebook looks inside a message
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def sender(self) -> str:
        return str(self.message.get("From", ""))

    def __repr__(self) -> str:
        return f"<StoredMessage uid={self.uid} {self.size} bytes {sorted(self.flags)} {self.subject!r}>"


_current: "MailLab | None" = None
_current_lock = threading.Lock()
_all_labs: "weakref.WeakSet[MailLab]" = weakref.WeakSet()


class MailLab:
    """A running (or stopped) lab: servers, store, accounts and transcripts.

    Usually made by :func:`maillab.start`. Ports: ``ports="mnemonic"`` tries 2525, 1110, 1143
    (and +1 for the second domain, ...) and falls back to any free port; ``ports="any"`` takes
    free ports; a dict such as ``{"smtp": 25}`` asks for particular ports for the first domain.
    """

    def __init__(self, *, accounts: Iterable[LabAccount] = DEFAULT_ACCOUNTS,
                 root: str | os.PathLike | None = None, ports: str | dict = "mnemonic",
                 size_limit: int = DEFAULT_SIZE_LIMIT, hash_n: int = LAB_SCRYPT_N,
                 tls: bool = True, strict: bool = False, options: dict | None = None,
                 private: bool = True, allow_users: Iterable[int | str] = (),
                 lang: str | None = None):
        if lang is not None:  # "el": everything the package shows is in Greek (maillab.i18n)
            set_language(lang)
        self.accounts = list(accounts)
        self.domains = list(dict.fromkeys(a.domain for a in self.accounts))
        if not self.domains:
            raise ValueError("a lab needs at least one account")
        self.root = root
        self.ports_policy = ports
        self.size_limit = size_limit
        self.hash_n = hash_n
        self.options = dict(options or {})
        self.tls_enabled = tls
        # strict: no password may cross an unencrypted connection, on any port (a real
        # provider's policy); the default lets learners log in by hand on 25, 110 and 143.
        self.strict = strict
        # private: on a shared computer only this user's programs (and root's) may connect to
        # any port of the lab; allow_users adds others, e.g. a sandboxed grader's account.
        self.privacy = OwnerOnly(allow=allow_users) if private else None
        self.ca: LabCA | None = None
        # options={"login_guard": {"base": ..., "cap": ...}} tunes the slowdown of failed logins.
        self.guard = LoginGuard(**self.options.get("login_guard", {}))
        self.lab_log = LabLog()  # what the servers' threads report (lab.log() shows it)
        self.host = LOOPBACK
        self.services: list[Service] = []
        self.store: Store | None = None
        self.recorder = Recorder()
        self.started_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._contexts: list[ServerContext] = []
        self.router: Router | None = None
        self.took_over: list[dict] = []  # older labs this one took the ports from (handover.py)
        self.replaced_by: dict | None = None  # the newer lab that took this one's ports
        self._control: handover.ControlSocket | None = None

    # ------------------------------------------------------------------ start / stop
    def start(self) -> "MailLab":
        if self._thread is not None:
            return self
        # What only a running lab needs is imported here, not with the module, so that
        # ``import maillab`` stays light: the hand-over of ports between notebooks' labs, the
        # wire copies.
        from . import handover
        from .wire import TappingEventLoop
        if self.ports_policy == "mnemonic":  # an older lab in another notebook gives them back
            self.took_over = handover.stop_older_labs()
        self.store = Store(self.root, hash_n=self.hash_n)
        route_server_logs()
        self._limit_connections()
        if self.tls_enabled:
            # A store on disk keeps its CA too (ROOT/tls), so a mail program told once to
            # trust it keeps trusting it after a restart.
            self.ca = LabCA([self.hostname(d) for d in self.domains],
                            directory=Path(self.root) / "tls" if self.root else None)
        # Wire copies of the last 500 connections (each keeps up to 64 KiB a direction).
        self._loop = TappingEventLoop(keep=500)
        self._thread = threading.Thread(target=self._run_loop, name="maillab-loop", daemon=True)
        self._thread.start()
        try:
            # Accounts (password hashes, folders on disk) are made here while the servers start
            # in the loop's thread (a few milliseconds: no worker threads for them).
            fut = asyncio.run_coroutine_threadsafe(self._start_services(), self._loop)
            for acct in self.accounts:
                self._make_account(acct)
            fut.result(timeout=30)
            self.store.save()
        except BaseException:
            self.stop()
            raise
        self.started_at = time.time()
        _all_labs.add(self)
        return self

    def _make_account(self, acct: LabAccount) -> None:
        existing = self.store.account(acct.login)
        if existing is not None and existing.check_password(acct.password):
            existing.apop_secret = acct.password  # a persistent store that has it already
            return
        self.store.add_account(acct.login, acct.password, acct.domain, [acct.address],
                               password_hash=hash_password(acct.password, n=self.hash_n),
                               apop=True, save=False)

    def _run_loop(self) -> None:
        from concurrent.futures import ThreadPoolExecutor
        asyncio.set_event_loop(self._loop)
        speak_protocol_in_this_thread()  # what servers say goes on the wire: English (i18n)
        # Whatever this thread, its tasks and its worker threads log goes to the lab's log,
        # never into the notebook cell that happens to be running (see maillab.logs).
        bind_thread(self.lab_log)
        self._loop.set_exception_handler(exception_handler(self.lab_log))
        # Few worker threads (password hashing, parsing): each thread that allocates gets a
        # malloc arena of its own, which keeps freed memory (10 threads: ~10 MiB more RSS).
        self._loop.set_default_executor(ThreadPoolExecutor(
            max_workers=3, thread_name_prefix="maillab-worker", initializer=bind_thread,
            initargs=(self.lab_log,)))
        try:
            self._loop.run_forever()
        finally:
            bind_thread(None)

    def _limit_connections(self) -> None:
        """Every connection is an open file: keep all services together under the limit."""
        open_files = raise_open_file_limit()
        services = len(self.domains) * (7 if self.tls_enabled else 3) + 1
        self.options.setdefault("max_connections", connection_limit_for(services, open_files))

    def _wanted_port(self, protocol: str, index: int) -> int | None:
        if self.ports_policy == "any":
            return None
        if isinstance(self.ports_policy, dict):
            if index == 0 and protocol in self.ports_policy:
                return self.ports_policy[protocol]
            if (protocol, index) in self.ports_policy:
                return self.ports_policy[(protocol, index)]
        return PROTOCOLS[protocol][1] + index

    async def _start_services(self) -> None:
        self.router = Router(asyncio.get_running_loop(), self.store.root / QUEUE_DIR,
                             store=self.store, history=self.options.get("relay_history", HISTORY))
        if self.ca is not None:
            self.router.tls_context = self.ca.client_context()
        for index, domain in enumerate(self.domains):
            host = self.hostname(domain)
            options = dict(self.options, strict=self.strict,
                           tls_context=self.ca.server_context(host) if self.ca else None)
            ctx = ServerContext(self.store, self.recorder, host, domain, options,
                                guard=self.guard, tls=self.ca, strict=self.strict)
            self._contexts.append(ctx)
            for protocol, starter in self._starters().items():
                sock = guard(bind_listener(self._wanted_port(protocol, index)), self.privacy,
                             self.recorder, ctx.service_name(protocol))
                port = sock.getsockname()[1]
                server = await starter(ctx, sock)
                std, _m, desc = PROTOCOLS[protocol]
                self.services.append(Service(protocol, domain, ctx.hostname, port, std, desc, server,
                                             login_policy(protocol, self.strict)))
                if protocol == "smtp":
                    self.router.mx[domain] = (LOOPBACK, port)
        await self.router.start()  # now that every domain has its MX: what an earlier run left queued
        await self._start_webmail()
        self._watch_quiet(None, False)
        if self.ports_policy == "mnemonic":
            from . import handover
            self._control = await handover.serve(id(self), self._give_ports_back,
                                                 self._finish_handover)

    def _watch_quiet(self, seen: tuple | None, busy: bool) -> None:
        """Every QUIET_CHECK seconds: had the servers traffic (the transcript changed) since the
        last look? Once they have been quiet for a whole period after it, free memory goes back
        to the system, once (an idle lab costs nothing)."""
        now = (self.recorder.memory, self.recorder.dropped)
        if seen is not None and now != seen:
            busy = True
        elif busy:
            release_free_memory()
            busy = False
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_later(QUIET_CHECK, self._watch_quiet, now, busy)

    async def _start_webmail(self) -> None:
        """The webmail (one for all domains), after the servers it talks to. Its port listens
        at once; its application loads when a browser first connects (maillab.webmail)."""
        from .webmail import missing_dependencies, serve_lazily
        missing = missing_dependencies()
        if missing:  # an install without aiohttp/jinja2/nh3: mail still works
            import warnings
            warnings.warn(f"maillab: no webmail (no module {', '.join(missing)}); pip install "
                          "maillab's dependencies")
            return
        domain = self.domains[0]
        self._webmail_tls = None  # made from this start's CA when first needed
        sock = guard(bind_listener(self._wanted_port("webmail", 0)), self.privacy, self.recorder,
                     f"http:{domain}")
        # Files travel base64-encoded (4/3 larger): uploads beyond 3/4 of SMTP's SIZE cannot pass.
        settings = {"max_upload": self.size_limit * 3 // 4, **self.options.get("webmail", {})}
        server = await serve_lazily(sock, self._webmail_backend, domains=self.domains,
                                    recorder=self.recorder, service_name=f"http:{domain}",
                                    mail_settings=self._mail_settings, **settings)
        std, _m, desc = PROTOCOLS["webmail"]
        self.services.append(Service("webmail", domain, f"webmail.{domain}",
                                     sock.getsockname()[1], std, desc, server,
                                     login_policy("webmail", self.strict)))

    def _webmail_backend(self, domain: str):
        """Where the webmail finds a domain's IMAP and SMTP servers (None: not a lab domain)."""
        from .webmail import Backend
        if getattr(self, "_webmail_tls", None) is None and self.ca is not None:
            self._webmail_tls = self.ca.client_context()
        try:
            # As a real webmail on its own host: IMAP with STARTTLS, and mail sent through the
            # submission port (587) with STARTTLS and the user's login.
            smtp = "submission" if self.ca is not None else "smtp"
            return Backend(LOOPBACK, self.port("imap", domain), LOOPBACK, self.port(smtp, domain),
                           getattr(self, "_webmail_tls", None))
        except KeyError:
            return None

    def _mail_settings(self, domain: str):
        """A domain's servers as a mail program's autoconfig names them (None: not a lab
        domain): with TLS, IMAP and POP3 each from the first byte and with STARTTLS, sending on
        the ports standing for 465 and 587; without, the plain ports. The host is ``localhost``:
        the name the lab's certificates carry that mail programs here can resolve."""
        from .webmail.autoconfig import MailServer
        if domain not in self.domains:
            return None
        kinds = ([("imaps", "imap", "SSL"), ("imap", "imap", "STARTTLS"),
                  ("pop3s", "pop3", "SSL"), ("pop3", "pop3", "STARTTLS"),
                  ("smtps", "smtp", "SSL"), ("submission", "smtp", "STARTTLS")]
                 if self.ca is not None else
                 [("imap", "imap", "plain"), ("pop3", "pop3", "plain"), ("smtp", "smtp", "plain")])
        return [MailServer(protocol, "localhost", self.port(service, domain), socket_type)
                for service, protocol, socket_type in kinds]

    def _starters(self) -> dict:
        """protocol -> coroutine function(ctx, sock) that starts that server."""
        from .imap.server import start_imap
        from .pop3.server import start_pop3

        def smtp(mode):
            return lambda ctx, sock: start_smtp(ctx, sock, self.router, mode=mode,
                                                size_limit=self.size_limit)

        starters = {"smtp": smtp("smtp"), "pop3": start_pop3, "imap": start_imap}
        if self.ca is not None:
            starters.update({
                "submission": smtp("submission"), "smtps": smtp("smtps"),
                "pop3s": lambda ctx, sock: start_pop3(ctx, sock, implicit_tls=True),
                "imaps": lambda ctx, sock: start_imap(ctx, sock, implicit_tls=True),
            })
        return starters

    def stop(self, drain: float = 10.0) -> None:
        """Stop every server, close every connection, end the thread, remove a temporary store.

        Relayed mail still queued is first given up to ``drain`` seconds to reach its next hop.
        What is left then stays in the queue on disk: a lab started again with the same
        ``root=`` delivers it. A temporary store (no ``root=``) goes away with the lab, and with
        it any message still queued: ``lab.log()`` names each one.
        """
        global _current
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._stop_services(drain), loop).result(
                    timeout=drain + 20)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        if loop is not None and not loop.is_running():
            loop.close()
        self._last_loop = loop  # its wire copies stay readable after the lab stops
        self._loop = self._thread = None
        self.services = []
        self._contexts = []
        if self.store is not None:
            self.store.close()
        if self.ca is not None:
            self.ca.close()
            self.ca = None
        with _current_lock:
            if _current is self:
                _current = None

    async def _stop_services(self, drain: float = 10.0) -> None:
        if self._control is not None:
            self._control.close()
        if self.router is not None:
            # The servers still run meanwhile: the next hops are this lab's own servers.
            await self.router.drain(drain)
            await self.router.close()
            self._note_undelivered()
        for service in self.services:
            service.server.close()
        for ctx in self._contexts:
            for transport in list(ctx.connections):
                transport.abort()
        for service in self.services:
            await service.server.wait_closed()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def private(self) -> bool:
        """True when other users of this computer cannot connect to the lab (see ``privacy``)."""
        return self.privacy is not None and self.privacy.private

    @property
    def privacy_note(self) -> str:
        """One sentence for the lab's table: who may connect to its ports."""
        if self.privacy is None:
            return _("shared: every user of this computer may connect (started with private=False)")
        return self.privacy.describe()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "MailLab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        try:
            if self.running:
                self.stop()
        except Exception:
            pass

    # ------------------------------------------------------------------ replaced labs
    async def _give_ports_back(self, request: dict) -> dict:
        """A newer lab of this Jupyter server wants the ports (see handover.py): close them."""
        ports = [s.port for s in self.services]
        self.replaced_by = request
        await self._stop_services(drain=2.0)  # the newer lab is waiting for the ports
        self.services = []  # closed already: stop() need not close them again
        self.router = None  # closed too; what is still queued stays on disk
        from . import handover
        return {**handover.me(), "ports": ports}

    def _finish_handover(self) -> None:
        def finish():
            self.stop()
            self.forget()
        threading.Thread(target=finish, name="maillab-handover", daemon=True).start()

    def forget(self) -> None:
        """Drop what a stopped lab still keeps: transcript lines, wire copies, store, routes.

        A replaced lab calls it, so that an old ``lab`` in IPython's output cache holds almost
        nothing (before, every re-run of ``lab = maillab.start()`` kept megabytes of evidence).
        """
        if self.running:
            return
        self.recorder = Recorder()
        self._last_loop = None
        self.router = None
        self.store = None
        self.guard = LoginGuard()

    # ------------------------------------------------------------------ ports and names
    def service(self, protocol: str, domain: str | None = None) -> Service:
        domain = domain or self.domains[0]
        for s in self.services:
            if s.protocol == protocol and s.domain == domain:
                return s
        raise KeyError(f"no {protocol} service for {domain} (is the lab running?)")

    def port(self, protocol: str, domain: str | None = None) -> int:
        return self.service(protocol, domain).port

    @property
    def smtp_port(self) -> int:
        """SMTP of your own provider (the first domain); stands for port 25."""
        return self.port("smtp")

    @property
    def pop3_port(self) -> int:
        return self.port("pop3")

    @property
    def imap_port(self) -> int:
        return self.port("imap")

    @property
    def submission_port(self) -> int:
        """SMTP submission with STARTTLS; stands for port 587."""
        return self.port("submission")

    @property
    def smtps_port(self) -> int:
        """SMTP over implicit TLS; stands for port 465."""
        return self.port("smtps")

    @property
    def pop3s_port(self) -> int:
        return self.port("pop3s")

    @property
    def imaps_port(self) -> int:
        return self.port("imaps")

    @property
    def ca_file(self) -> str:
        """The lab CA's certificate (PEM), for external clients: curl --cacert, swaks, openssl."""
        if self.ca is None:
            raise RuntimeError("this lab runs without TLS (tls=False)")
        return str(self.ca.ca_file)

    def client_context(self):
        """An ``ssl.SSLContext`` that trusts this lab's CA (for smtplib, poplib, imaplib)."""
        if self.ca is None:
            raise RuntimeError("this lab runs without TLS (tls=False)")
        return self.ca.client_context()

    def observed(self, service: str | None = None, conn: int | None = None) -> Observed:
        """What a network observer saw of these connections: the bytes before decryption.

        On 25, 110 and 143 that is the conversation itself, passwords included; on the TLS
        ports (and after STARTTLS) it is the TLS handshake and then unreadable records.
        """
        from .wire import Observed, ObservedConnection
        found = []
        for session in self.transcript(service, conn).sessions():
            first = session.lines[0]
            loop = self._loop or self._last_loop
            wire = loop.wire_for(first.peer, first.time) if loop is not None else None
            if wire is not None:
                found.append(ObservedConnection(first.service, first.conn, wire))
        return Observed(found)

    def logins(self) -> list:
        """Every login attempt on any server: time, service, user, client, mechanism, TLS, success."""
        return list(self.guard.attempts)

    @property
    def webmail_port(self) -> int:
        return self.port("webmail")

    @property
    def webmail_url(self) -> str:
        """The webmail's address where this code runs: ``/…/proxy/8025/`` in a Jupyter kernel
        (through jupyter-server-proxy, so it works on Binder too), else ``http://127.0.0.1:8025/``."""
        from .webmail.location import webmail_url
        return webmail_url(self.webmail_port, self.host)

    def show_webmail(self, height: int = 640):
        """Embed the webmail in the notebook (with a link to open it in its own tab)."""
        import html
        url = self.webmail_url
        self.service("webmail").server.load_threadsafe()  # the browser will ask in a moment

        class WebmailView:
            def __repr__(self) -> str:
                return f"Webmail: {url}"

            def _repr_html_(self) -> str:
                u = html.escape(url, quote=True)
                return (f'<iframe src="{u}" title="{html.escape(_("Webmail"))}" width="100%" '
                        f'height="{int(height)}" style="border:1px solid #ccc;border-radius:6px">'
                        f'</iframe><p><a href="{u}" target="_blank" rel="noopener">'
                        f'{html.escape(_("Open the webmail in a new tab"))}</a></p>')

        return WebmailView()

    def hostname(self, domain: str | None = None) -> str:
        return f"mail.{domain or self.domains[0]}"

    @property
    def mx(self) -> dict[str, tuple[str, int]]:
        """The routing table: mail domain -> (host, port) of its SMTP server (like DNS MX)."""
        return self.router.mx if self.router else {}

    def account(self, who: str) -> LabAccount:
        """A ready-made account by login or address."""
        for a in self.accounts:
            if who in (a.login, a.address):
                return a
        raise KeyError(who)

    # ------------------------------------------------------------------ evidence
    def transcript(self, service: str | None = None, conn: int | None = None,
                   since: float | None = None) -> Transcript:
        """Every line clients and servers said, optionally of one service ("smtp", "pop3:example.net")."""
        return Transcript(self.recorder.lines()).filter(service=service, conn=conn, since=since)

    def mailbox(self, user: str, folder: str = "INBOX") -> list[StoredMessage]:
        """The messages stored for a user (login or address), safe to call from the notebook."""
        acct = self.store.account(user) or self.store.find_address(user)
        if acct is None:
            raise KeyError(f"no account {user!r}")
        f = acct.folder(folder)
        out = []
        for info in f.messages():
            try:
                raw = f.read(info.uid)
            except KeyError:
                continue  # expunged meanwhile
            out.append(StoredMessage(info.uid, f.flags_of(info.uid), info.size, info.internaldate,
                                     info.path, raw))
        return out

    def settle(self, timeout: float = 10) -> None:
        """Wait until every relayed message has been handed on (or bounced)."""
        if self.running and self.router is not None:
            asyncio.run_coroutine_threadsafe(self.router.settle(), self._loop).result(timeout)

    def _note_undelivered(self) -> None:
        """Say in the lab's log what the queue still holds as the lab stops, and its fate."""
        left = self.router.pending()
        if not left:
            return
        temporary = self.root is None
        fate = ("lost: the temporary store goes with the lab (start with root=... to keep a queue)"
                if temporary else f"kept in {self.router.queue.directory} for the next start")
        self.lab_log.add("WARNING" if temporary else "INFO", "maillab.relay",
                         f"{len(left)} relayed message(s) not delivered when the lab stopped, {fate}: " +
                         "; ".join(f"{m.queue_id} from <{m.mail_from}> to {', '.join(m.rcpt_tos)}"
                                   for m in left[:200]))

    def log(self) -> LabLog:
        """The lab's own log: warnings and errors of its servers (never shown in cells)."""
        return self.lab_log

    # ------------------------------------------------------------------ display
    def status_note(self) -> str:
        """Why the lab is stopped, or why its ports are what they are, in a learner's words."""
        if not self.running:
            if self.replaced_by:
                when = time.strftime("%H:%M", time.localtime(self.replaced_by.get("time", 0)))
                where = self.replaced_by.get("notebook") or _("another notebook")
                return _("The mail lab is stopped: a lab started in {0} took over its ports at "
                         "{1}. Run the first cell again to start a lab here.").format(where, when)
            return _("The mail lab is stopped. Run the first cell again to start it.")
        notes = []
        if self.took_over:
            names = sorted({t.get("notebook") or _("another notebook") for t in self.took_over})
            notes.append(_("This lab took the usual ports over from the lab of {0}, which has "
                           "stopped.").format(", ".join(names)))
        moved = [f"{wanted} \u2192 {s.port} ({s.protocol.upper()} {s.hostname})"
                 for s, wanted in self._wanted_ports() if wanted and wanted != s.port]
        if moved:
            notes.append(_("Another program on this computer uses some of the usual ports, so this "
                           "lab listens elsewhere: {0}. Always use the port in the table."
                           ).format(", ".join(moved)))
        return " ".join(notes)

    def _wanted_ports(self) -> list[tuple[Service, int | None]]:
        return [(s, self._wanted_port(s.protocol, self.domains.index(s.domain)))
                for s in self.services if s.domain in self.domains]

    def __repr__(self) -> str:
        if not self.running:
            return "<MailLab stopped> " + self.status_note()
        lines = [f"MailLab running on {self.host}"]
        for s in self.services:
            lines.append(f"  {s.protocol.upper():10} {s.hostname:20} port {s.port:5}  "
                         f"(stands for {s.standard_port})")
        if any(s.protocol == "webmail" for s in self.services):
            lines.append(f"  webmail: http://{self.host}:{self.webmail_port}/")
        lines.append("  accounts: " + ", ".join(f"{a.address} / {a.password}" for a in self.accounts))
        lines.append("  " + self.privacy_note)
        if self.status_note():
            lines.append("  " + self.status_note())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape as esc
        if not self.running:
            return "<p>" + esc(self.status_note()) + "</p>"
        rows = "".join(
            f"<tr><td>{esc(s.protocol.upper())}</td><td>{esc(s.hostname)}</td>"
            f"<td><b>{s.port}</b></td><td>{s.standard_port}</td><td>{esc(_(s.description))}</td>"
            # In the learner's language, made here: the field was filled on the protocol thread.
            f"<td>{esc(login_policy(s.protocol, self.strict))}</td></tr>"
            for s in self.services)
        accts = "".join(
            f"<tr><td>{esc(a.login)}</td><td><code>{esc(a.password)}</code></td>"
            f"<td>{esc(a.address)}</td><td>mail.{esc(a.domain)}</td></tr>" for a in self.accounts)
        notes = "".join(f"<p>{esc(text)}</p>" for text in (self.status_note(), self.privacy_note)
                        if text)
        return (
            f"<div><b>{esc(_('Mail lab running'))}</b> {esc(_('on'))} {self.host}"
            f"<table><tr><th>{esc(_('Service'))}</th><th>{esc(_('Host'))}</th>"
            f"<th>{esc(_('Port here'))}</th><th>{esc(_('Standard port'))}</th>"
            f"<th>{esc(_('What it is for'))}</th><th>{esc(_('Passwords'))}</th></tr>{rows}</table>"
            f"{notes}"
            f"<table><tr><th>{esc(_('Login'))}</th><th>{esc(_('Password'))}</th>"
            f"<th>{esc(_('Address'))}</th><th>{esc(_('Mail server'))}</th></tr>{accts}</table></div>")


def start(*, lang: str | None = None, **kwargs) -> MailLab:
    """Start the lab. Running it again stops the previous lab of this process first.

    ``lang="el"`` shows everything the package says in Greek (protocol text stays English).
    """
    global _current
    if lang is not None:  # also for a sealed lab below: the grader's feedback is in it too
        set_language(lang)
    # ---- maillab.grader: while `maillab grade` grades this notebook, its servers run in the
    # grader (outside this kernel); the lab returned only connects to them.
    if os.environ.get("MAILLAB_SEALED"):
        from .grader.client import connect
        return connect(os.environ["MAILLAB_SEALED"])
    # ---- end of maillab.grader
    with _current_lock:
        previous, _current = _current, None
    if previous is not None:
        previous.stop()
    for old in list(_all_labs):  # stopped labs, still shown in earlier outputs: free them
        if not old.running:
            old.forget()
    lab = MailLab(**kwargs).start()
    with _current_lock:
        _current = lab
    return lab
