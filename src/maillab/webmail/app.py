"""The webmail's web side: aiohttp handlers and Jinja2 pages, served on the lab's loop.

The browser speaks HTTP to this application; the application speaks IMAP and SMTP to the lab's
servers with the user's own credentials, one short session per click (as Roundcube does). Those
sessions run in worker threads (``imaplib``/``smtplib``) so the loop, which also runs the mail
servers, never waits on them; parsing and showing a message (mail from strangers: any size, any
shape) runs there too. Each HTTP request is recorded in the lab's transcript as well
(service ``http:<domain>``: request line and status line only, never a body), so a notebook can
show both halves: what the browser asked, and what the webmail then said to the mail servers.

Every link and redirect is relative and every page lives at the application's root, so the
webmail works at ``http://127.0.0.1:8025/`` and behind jupyter-server-proxy at
``/proxy/8025/`` (or any other prefix) alike.

Bad input of any kind (a damaged form, odd bytes in a cookie, a hostile message) gets a page
with a 4xx status and a hint; connections are limited and time out (``connections.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import email.utils
import functools
import logging
import re
import secrets
import smtplib
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .. import i18n
from ..i18n import _, ngettext
from . import message as msgmod
from .connections import ConnectionGuard
from ..net import throttled_elsewhere
from .imapclient import ImapAccess as _ImapAccess
from .imapclient import LoginFailed, MailServerError, NoSuchFolder
from .security import (Busy, LoginThrottle, SessionStore, device_cookie, device_of, download_csp,
                       frame_csp, is_token, login_token, new_token, page_csp, tokens_equal)

__all__ = ["Backend", "Webmail", "WebmailServer", "start_webmail"]

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 25
MAX_UPLOAD = 25 * 1024 * 1024  # the form's total size; SMTP's SIZE limit still applies to mail
_FOLDER_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
# A local part without spaces or specials, at a domain of letters, digits, - and _ (so that a
# misparsed piece such as "x@example.net?=", which Python < 3.11.10's getaddresses can make of
# an encoded word, is not taken for an address: CVE-2023-27043).
_ADDRESS_RE = re.compile(r'[^@\s<>,;:"()\[\]\\]+@[\w-]+(?:\.[\w-]+)*')
_SECTION_RE = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,4}){0,20}$")
# What a login form may carry: no spaces or control characters in the address (it goes into an
# IMAP command line), none in the password either, and no lone surrogates anywhere.
_LOGIN_ADDRESS_RE = re.compile(r"[^\s\x00-\x1f\x7f@\ud800-\udfff]{1,64}@[^\s\x00-\x1f\x7f@\ud800-\udfff]{1,189}")
_BAD_PASSWORD_RE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
MAX_RECIPIENTS = 100  # RCPT commands a server must accept per message (RFC 5321 4.5.3.1.8)
# Characters a compose form's header fields may have: far above honest use.
FIELD_LIMITS = {"to": 10_000, "cc": 10_000, "bcc": 10_000, "subject": 2_000,
                "in_reply_to": 2_000, "references": 20_000}
MAX_UIDS = 500  # messages one action may name (a page shows far fewer)
STATIC_FILES = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}
log = logging.getLogger("maillab.webmail")
# Inline images up to this size go into the frame as data: URLs (the frame has no cookies to
# fetch them with: it is a sandboxed, opaque origin).
MAX_INLINE_IMAGE = 2 * 1024 * 1024


@dataclass(frozen=True)
class Backend:
    """Where the mail servers of one domain are."""

    imap_host: str
    imap_port: int
    smtp_host: str
    smtp_port: int
    # Trusts the servers' certificates; used when a server takes passwords only over TLS
    # (IMAP LOGINDISABLED, SMTP without AUTH before STARTTLS). Plain text otherwise, so that
    # the transcripts stay readable for learners.
    tls_context: ssl.SSLContext | None = None


class ImapAccess(_ImapAccess):
    """The webmail's IMAP sessions. The webmail throttles logins itself, per browser
    (``LoginThrottle``), so the lab's servers check these passwords without their own queue:
    an attacker's guesses elsewhere do not slow the owner's pages (``net.LoginGuard``)."""

    def _login(self):
        with throttled_elsewhere(self.conn.sock):
            super()._login()


class HttpError(Exception):
    """An error page: status, the hint for the reader, and whether to hang up afterwards."""

    def __init__(self, status: int, text: str, *, close: bool = False):
        super().__init__(text)
        self.status, self.text, self.close = status, text, close


def _folder_label(name: str, special: str | None) -> str:
    if name == "INBOX":
        return _("Inbox")
    labels = {"\\Sent": _("Sent"), "\\Trash": _("Trash"), "\\Drafts": _("Drafts"),
              "\\Junk": _("Junk")}
    return labels.get(special, name)


class Webmail:
    """One webmail application. ``backend(domain)`` says where that domain's servers are."""

    def __init__(self, backend: Callable[[str], Backend | None], *, domains=(),
                 recorder=None, service_name: str = "http", page_size: int = PAGE_SIZE,
                 throttle: LoginThrottle | dict | None = None,
                 sessions: SessionStore | dict | None = None, max_upload: int = MAX_UPLOAD,
                 workers: int = 8, imap_timeout: float = 15, title: str | None = None,
                 max_connections: int = 64, idle_timeout: float = 30.0,
                 body_grace: float = 20.0, body_rate: float = 32 * 1024,
                 lang: str | None = None, mail_settings: Callable | None = None):
        self.backend = backend
        # mail_settings(domain): that domain's servers for mail programs' autoconfig (or None)
        self.mail_settings = mail_settings
        # The pages' language: ``lang``, else the learner's at each request (maillab.start(
        # lang="el") makes a Greek lab's webmail Greek). It runs on the lab's protocol thread,
        # where _() speaks English, so every request asks for the learner's language itself.
        self.lang = lang
        self.domains = list(domains)
        self.recorder = recorder
        self.service_name = service_name
        self.page_size = page_size
        # Both may be given as keyword dicts (from ``MailLab(options={"webmail": {...}})``).
        self.throttle = (LoginThrottle(**throttle) if isinstance(throttle, dict)
                         else throttle or LoginThrottle())
        self.sessions = (SessionStore(**sessions) if isinstance(sessions, dict)
                         else sessions or SessionStore())
        self.max_upload = max_upload
        # A request body must arrive within body_grace seconds plus one second per body_rate
        # bytes (a slow upload is fine, a stalled one is not).
        self.body_grace, self.body_rate = body_grace, body_rate
        self.connections = ConnectionGuard(limit=max_connections, idle_timeout=idle_timeout,
                                           recorder=recorder, service_name=service_name)
        self.imap_timeout = imap_timeout
        self.title = title
        self.secret = secrets.token_bytes(32)
        self.cookie = "maillab_webmail"
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="maillab-webmail")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True, trim_blocks=True, lstrip_blocks=True,
            undefined=jinja2.StrictUndefined)
        # Looked up at each call, so that a translation plugged in later is used by the pages.
        self.env.globals.update(_=lambda text: _(text), folder_label=_folder_label,
                                urlencode=urlencode)
        self.app = self._make_app()

    # ------------------------------------------------------------------ application
    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_upload,
                              middlewares=[self._connection_mw, self._transcript_mw,
                                           self._headers_mw, self._language_mw,
                                           self._errors_mw])
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/login", self.login_form)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/mail", self.mailbox)
        r.add_get("/read", self.read)
        r.add_get("/body", self.body)
        r.add_get("/part", self.part)
        r.add_get("/compose", self.compose)
        r.add_post("/send", self.send)
        r.add_post("/action", self.action)
        r.add_get("/static/{name}", self.static)
        if self.mail_settings is not None:
            from . import autoconfig
            autoconfig.add_routes(r, self.mail_settings)
        return app

    def set_port(self, port: int) -> None:
        # Cookies ignore ports: two labs on one machine must not share (or clobber) a session.
        self.cookie = f"maillab_webmail_{port}"

    async def run(self, fn, *args):
        # In the request's context: a worker thread's messages and pages speak its language.
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, contextvars.copy_context().run, fn, *args)

    async def render_off_loop(self, template: str, request: web.Request, session, **context):
        """``render`` in a worker thread: for pages as big as the message they show."""
        return await self.run(functools.partial(self.render, template, request, session,
                                                **context))

    @staticmethod
    def _fetched(imap: ImapAccess, folder: str, uid: int, mark_seen: bool = False):
        """(raw message, flags) of one message, or HTTP 404 if it has gone."""
        try:
            return imap.fetch(folder, uid, mark_seen=mark_seen)
        except KeyError:
            raise HttpError(404, _("This message is not there any more.")) from None

    async def _fetch_view(self, s, folder: str, uid: int, then):
        """Fetch one message, parse it and return ``then(view, parsed)``, all in a worker
        thread: mail from strangers can take long to parse."""
        def work():
            with self._imap(s) as imap:
                raw, flags = self._fetched(imap, folder, uid)
            return then(*msgmod.read_view(raw, flags))

        return await self.run(work)

    # ------------------------------------------------------------------ middlewares
    @web.middleware
    async def _connection_mw(self, request: web.Request, handler):
        """Tell the connection guard when a connection is busy (not idle)."""
        transport = request.transport
        self.connections.request_started(transport)
        try:
            return await handler(request)
        finally:
            self.connections.request_finished(transport)

    @web.middleware
    async def _transcript_mw(self, request: web.Request, handler):
        if self.recorder is None or request.path.startswith("/static/"):
            return await handler(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        conn = self.recorder.open(self.service_name, f"{peer[0]}:{peer[1]}" if peer else "")
        # The request line only: never a body (the login form carries a password).
        conn.client(f"{request.method} {request.rel_url} HTTP/{request.version.major}."
                    f"{request.version.minor}\r\n".encode("utf-8", "replace"))
        status, reason, location = 500, "Internal Server Error", None
        try:
            response = await handler(request)
            status, reason = response.status, response.reason
            location = response.headers.get("Location")
            return response
        except web.HTTPException as e:
            status, reason, location = e.status, e.reason, e.headers.get("Location")
            raise
        finally:
            where = f" (Location: {location})" if location else ""
            conn.server(f"HTTP/1.1 {status} {reason}{where}\r\n".encode("utf-8", "replace"))
            conn.close("request done")

    @web.middleware
    async def _headers_mw(self, request: web.Request, handler):
        try:
            response = await handler(request)
        except web.HTTPException as e:
            self._secure(e, request)
            raise
        self._secure(response, request)
        return response

    def _secure(self, response, request) -> None:
        h = response.headers
        h.setdefault("Content-Security-Policy", page_csp())
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
        if not request.path.startswith("/static/"):
            h.setdefault("Cache-Control", "no-store")

    @web.middleware
    async def _language_mw(self, request: web.Request, handler):
        """Pages, notices and error pages in the learner's language (the HTTP status line and
        the transcript's notes stay English: protocol text)."""
        with i18n.language(self.lang) if self.lang else i18n.for_learner():
            return await handler(request)

    @web.middleware
    async def _errors_mw(self, request: web.Request, handler):
        try:
            return await handler(request)
        except HttpError as e:
            resp = self.render("error.html", request, self._session(request), status=e.status,
                               message=e.text)
            if e.close:
                resp.force_close()
            return resp
        except web.HTTPNotFound:
            return self.render("error.html", request, self._session(request), status=404,
                               message=_("There is no page at this address. Use the links of "
                                         "the webmail's pages."))
        except web.HTTPMethodNotAllowed as e:
            resp = self.render("error.html", request, self._session(request), status=405,
                               message=_("This address does not take {0} requests.").format(
                                   request.method))
            resp.headers["Allow"] = e.headers.get("Allow", "")
            return resp
        except msgmod.Unreadable as e:
            return self.render("error.html", request, self._session(request), status=422,
                               message=str(e))
        except web.HTTPRequestEntityTooLarge:
            return self.render("error.html", request, self._session(request), status=413,
                               message=_("That was too much to send at once: at most {0} in all, "
                                         "in at most {1} form fields. Go back and attach fewer "
                                         "or smaller files, or select fewer messages.").format(
                                   msgmod.human_size(self.max_upload), request.client_max_fields))
        except NoSuchFolder as e:
            return self.render("error.html", request, self._session(request), status=404,
                               message=str(e))
        except LoginFailed:
            # The password changed, or the server forgot us: the session is of no use any more.
            self.sessions.end(request.cookies.get(self.cookie))
            raise web.HTTPSeeOther("login")
        except MailServerError as e:
            return self.render("error.html", request, self._session(request), status=502,
                               message=str(e))
        except web.HTTPException:
            raise  # redirects and aiohttp's own answers
        except Exception:  # a bug: say so plainly, keep the traceback in the lab's log
            log.exception("webmail: %s %s failed", request.method, request.path)
            return self.render("error.html", request, None, status=500, message=_(
                "The webmail failed on this request: a bug, not your mistake. Go back and "
                "try something else; the lab's log has the details."))

    # ------------------------------------------------------------------ helpers
    def render(self, template: str, request: web.Request, session, *, status: int = 200,
               **context) -> web.Response:
        # Pages live at the root; an error page for a deeper address links back up.
        ctx = {"session": session, "title_suffix": self.title or _("maillab Webmail"),
               "page_lang": i18n.current_language(),
               "root": "../" * max(0, request.path.count("/") - 1),
               "notices": session.take_notices() if session is not None else [],
               "csrf": session.csrf if session is not None else "", "folders": [],
               "current_folder": None}
        ctx.update(context)
        text = self.env.get_template(template).render(**ctx)
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    def _session(self, request: web.Request):
        return self.sessions.get(request.cookies.get(self.cookie))

    def _require(self, request: web.Request):
        s = self._session(request)
        if s is None:
            raise web.HTTPSeeOther("login")
        return s

    async def read_form(self, request: web.Request):
        """The request's form, read with a deadline; a damaged one is a 400 page."""
        expected = request.content_length or self.max_upload
        deadline = self.body_grace + expected / self.body_rate
        try:
            async with asyncio.timeout(deadline):
                return await request.post()
        except TimeoutError:
            self.connections.record(self._peer(request), _(
                "closed: the body of {0} {1} did not arrive within {2:g} s").format(
                request.method, request.path, round(deadline, 1)))
            raise HttpError(408, _("The form took too long to arrive, so the webmail stopped "
                                   "waiting. Send it again."), close=True) from None
        except web.HTTPException:
            raise  # 413: too large
        except Exception:  # bad multipart, bytes that are not UTF-8, ...
            raise HttpError(400, _("The form arrived damaged (it is not valid form data). "
                                   "Reload the page and send it again."), close=True) from None

    async def _form(self, request: web.Request, session) -> dict:
        form = await self.read_form(request)
        if session is None or not tokens_equal(form.get("csrf"), session.csrf):
            raise HttpError(403, _("This form has expired or did not come from this webmail. "
                                   "Go back, reload the page and try again."))
        return form

    def _imap(self, s) -> ImapAccess:
        b = self.backend(s.domain)
        if b is None:
            raise MailServerError(_("No mail server is known for {0}.").format(s.domain))
        return ImapAccess(b.imap_host, b.imap_port, s.address, s.password,
                          timeout=self.imap_timeout, tls_context=b.tls_context)

    @staticmethod
    def _folder_arg(value) -> str:
        value = str(value or "INBOX")
        if not _FOLDER_RE.match(value):
            raise HttpError(400, _("That is not a folder name."))
        return value

    @staticmethod
    def _int_arg(value, default: int | None = None, minimum: int = 1) -> int:
        try:
            n = int(str(value))
        except (TypeError, ValueError):
            if default is None:
                raise HttpError(400, _("A number was expected in the address.")) from None
            return default
        if n < minimum or n > 2**32:
            if default is None:
                raise HttpError(400, _("A number was expected in the address."))
            return default
        return n

    @staticmethod
    def _list_url(folder: str, page: int = 1, sort: str = "date-desc") -> str:
        args = {"f": folder}
        if page > 1:
            args["page"] = page
        if sort != "date-desc":
            args["sort"] = sort
        return "mail?" + urlencode(args)

    @staticmethod
    def _set_cookie(request: web.Request, response, cookie: str) -> None:
        """Cookies script cannot read, that no other site's request carries, and that stay on
        HTTPS where the page came over HTTPS (Binder: the hub's proxy says so in
        X-Forwarded-Proto, and jupyter-server-proxy passes it on)."""
        https = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        response.headers.add("Set-Cookie", cookie + "; HttpOnly; SameSite=Strict"
                             + ("; Secure" if https else ""))

    @staticmethod
    def _peer(request: web.Request) -> str:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return f"{peer[0]}:{peer[1]}" if peer else ""

    def _pre_cookie(self, request: web.Request) -> str | None:
        pre = request.cookies.get(self.cookie + "_pre")
        return pre if is_token(pre) else None

    def _client_key(self, request: web.Request) -> str:
        """Who is trying: the address, or behind a loopback proxy, where every browser is
        127.0.0.1, the browser itself (its pre-session cookie)."""
        address = self._peer(request).rpartition(":")[0]
        if address and not address.startswith("127.") and address != "::1":
            return f"client:{address}"
        return f"client:browser:{self._pre_cookie(request)}"

    # ------------------------------------------------------------------ login and out
    async def index(self, request: web.Request):
        raise web.HTTPSeeOther("mail" if self._session(request) else "login")

    def _login_page(self, request, *, status=200, error=None, address="", info=None,
                    retry_after: float = 0):
        pre = self._pre_cookie(request) or new_token()
        resp = self.render("login.html", request, None, status=status, error=error, info=info,
                           address=address[:254], login_csrf=login_token(self.secret, pre),
                           domains=self.domains)
        # A pre-session cookie ties the login form's token to this browser (login CSRF).
        self._set_cookie(request, resp, f"{self.cookie}_pre={pre}; Max-Age=3600")
        if retry_after:
            resp.headers["Retry-After"] = str(int(retry_after) + 1)
        return resp

    async def login_form(self, request: web.Request):
        if self._session(request) is not None:
            raise web.HTTPSeeOther("mail")
        info = _("You have logged out.") if request.query.get("bye") else None
        return self._login_page(request, info=info)

    def _login_form_slip(self, pre: str | None, token) -> str | None:
        """Why a login form is refused (403), in words that say what to do; None if it is fine.
        A pupil trying the webmail with curl meets the first two."""
        if not pre:
            return _("Your browser did not send back this page's cookie, and logging in needs "
                     "it. Allow cookies for this site (with curl: -c and -b with a cookie file), "
                     "open the login page again and send its form.")
        if not token:
            return _("The form arrived without its hidden field \"csrf\". Send the login "
                     "page's own form (with curl: copy the csrf value from the page you got).")
        if not tokens_equal(token, login_token(self.secret, pre)):
            return _("The login form had expired. Please try again.")
        return None

    async def login(self, request: web.Request):
        form = await self.read_form(request)
        pre = self._pre_cookie(request)
        slip = self._login_form_slip(pre, form.get("csrf"))
        if slip:
            return self._login_page(request, status=403, error=slip)
        address = str(form.get("address", "")).strip()
        password = str(form.get("password", ""))
        if not _LOGIN_ADDRESS_RE.fullmatch(address) or not password or len(password) > 1024 \
                or _BAD_PASSWORD_RE.search(password):
            return self._login_page(request, status=400, address=address, error=_(
                "Type your whole e-mail address (such as alice@example.com) and your password, "
                "without spaces or control characters in the address."))
        domain = address.rpartition("@")[2].lower()
        backend = self.backend(domain)
        # Attempts take turns per account, or per browser where this browser logged in to the
        # account before (then an attacker's failures do not slow it down).
        device = device_of(self.secret, request.cookies.get(self.cookie + "_device"), address)
        key = f"device:{device}" if device else f"acct:{address.lower()}"
        keys = [key, self._client_key(request)]

        def check():
            with ImapAccess(backend.imap_host, backend.imap_port, address, password,
                            timeout=self.imap_timeout, tls_context=backend.tls_context):
                pass

        try:
            async with self.throttle.turn(key):
                wait = self.throttle.delay(keys)
                if wait:
                    await asyncio.sleep(wait)
                if backend is None:
                    self.throttle.failed(keys)
                    return self._login_page(request, status=401, address=address, error=_(
                        "This webmail serves {0} only.").format(", ".join(self.domains) or "-"))
                try:
                    await self.run(check)
                except LoginFailed:
                    self.throttle.failed(keys)
                    return self._login_page(request, status=401, address=address, error=_(
                        "Wrong e-mail address or password."))
        except Busy as e:
            return self._login_page(request, status=429, address=address,
                                    retry_after=e.retry_after, error=_(
                                        "Many logins to this account are being tried at this "
                                        "moment. Please wait {0} seconds and try again.").format(
                                        int(e.retry_after) + 1))
        except MailServerError as e:
            return self._login_page(request, status=502, address=address, error=str(e))
        self.throttle.succeeded(keys[1:] + ([key] if device else []))
        self.sessions.end(request.cookies.get(self.cookie))  # a new login replaces the old one
        s = self.sessions.create(address, password, domain)
        resp = web.HTTPSeeOther("mail")
        # No Path attribute: the browser scopes the cookie to the folder of this URL, which is
        # the application's root wherever a proxy put it (/proxy/8025/login -> /proxy/8025).
        self._set_cookie(request, resp, f"{self.cookie}={s.id}")
        self._set_cookie(request, resp, f"{self.cookie}_pre=; Max-Age=0")
        if not device:
            self._set_cookie(request, resp, f"{self.cookie}_device="
                             f"{device_cookie(self.secret, address)}; Max-Age={30 * 24 * 3600}")
        raise resp

    async def logout(self, request: web.Request):
        s = self._session(request)
        if s is not None:
            await self._form(request, s)
            self.sessions.end(s.id)
            s.password = ""
        resp = web.HTTPSeeOther("login?bye=1")
        self._set_cookie(request, resp, f"{self.cookie}=; Max-Age=0")
        raise resp

    # ------------------------------------------------------------------ folders and lists
    def _folders_view(self, imap: ImapAccess):
        return imap.folders(with_counts=True)

    async def mailbox(self, request: web.Request):
        s = self._require(request)
        folder = self._folder_arg(request.query.get("f"))
        page = self._int_arg(request.query.get("page"), 1)
        sort = "date-asc" if request.query.get("sort") == "date-asc" else "date-desc"

        def work():
            with self._imap(s) as imap:
                folders = self._folders_view(imap)
                if not any(f.name == folder for f in folders):
                    raise HttpError(404, _("There is no folder named {0}.").format(folder))
                listing = imap.message_page(folder, page, self.page_size,
                                            newest_first=(sort == "date-desc"),
                                            sort_key=msgmod.date_sort_key)
            current = next(f for f in folders if f.name == folder)
            show_to = current.special in ("\\Sent", "\\Drafts")
            entries = [msgmod.list_entry(r.uid, r.flags, r.size, r.header, r.internaldate,
                                         show_to) for r in listing.rows]
            return folders, current, show_to, listing.total, entries

        folders, current, show_to, total, entries = await self.run(work)
        pages = max(1, -(-total // self.page_size))
        first = (page - 1) * self.page_size + 1 if total else 0
        return self.render(
            "mailbox.html", request, s, folders=folders, current_folder=current, entries=entries,
            page=page, pages=pages, total=total, first=first,
            last=min(total, page * self.page_size), sort=sort, show_to=show_to,
            list_url=self._list_url)

    # ------------------------------------------------------------------ one message
    async def read(self, request: web.Request):
        s = self._require(request)
        folder = self._folder_arg(request.query.get("f"))
        uid = self._int_arg(request.query.get("uid"))
        images = request.query.get("images") == "1"
        prefer_text = request.query.get("view") == "text"

        def work():
            with self._imap(s) as imap:
                raw, flags = self._fetched(imap, folder, uid, mark_seen=True)
                folders = imap.folders(with_counts=True)
            view, parsed = msgmod.read_view(raw, flags, prefer_text=prefer_text)
            if view.has_html:
                view.remote_images = msgmod.html_body(parsed, allow_remote_images=False,
                                                      cid_url=None).remote_images
            return folders, view

        folders, view = await self.run(work)
        current = next((f for f in folders if f.name == folder), None)
        base = {"f": folder, "uid": uid}
        return await self.render_off_loop(
            "message.html", request, s, folders=folders, current_folder=current, view=view,
            folder=folder, uid=uid, images=images, prefer_text=prefer_text,
            body_url="body?" + urlencode({**base, **({"images": 1} if images else {})}),
            images_url="read?" + urlencode({**base, "images": 1}),
            text_url="read?" + urlencode({**base, "view": "text"}),
            html_url="read?" + urlencode(base),
            part_url=lambda section: "part?" + urlencode({**base, "part": section}),
            compose_url=lambda mode: "compose?" + urlencode({**base, "mode": mode}),
            back_url=self._list_url(folder),
            in_trash=current is not None and current.special == "\\Trash",
            display=msgmod.display_name, formataddr=msgmod.format_address)

    async def body(self, request: web.Request):
        """The sanitized HTML of a message, as its own document for a sandboxed frame."""
        s = self._require(request)
        folder = self._folder_arg(request.query.get("f"))
        uid = self._int_arg(request.query.get("uid"))
        images = request.query.get("images") == "1"

        def document(view, parsed):
            inline = msgmod.cid_sections(parsed)

            def cid_url(cid: str):
                section = inline.get(cid.strip("<>"))
                part = msgmod.find_part(parsed, section) if section else None
                if part is None:
                    return None
                data = msgmod.part_payload(part)
                if len(data) > MAX_INLINE_IMAGE:
                    return None
                return f"data:{part.get_content_type()};base64,{base64.b64encode(data).decode()}"

            cleaned = msgmod.html_body(parsed, allow_remote_images=images, cid_url=cid_url)
            return msgmod.html_document(cleaned.html, view.subject)

        resp = web.Response(text=await self._fetch_view(s, folder, uid, document),
                            content_type="text/html", charset="utf-8")
        resp.headers["Content-Security-Policy"] = frame_csp(images)
        return resp

    async def part(self, request: web.Request):
        """An attachment, always as a download (never shown on the webmail's origin)."""
        s = self._require(request)
        folder = self._folder_arg(request.query.get("f"))
        uid = self._int_arg(request.query.get("uid"))
        section = str(request.query.get("part", ""))
        if not _SECTION_RE.match(section):
            raise HttpError(400, _("That is not a part of a message."))

        def download(view, parsed):
            part = msgmod.find_part(parsed, section)
            if part is None:
                raise HttpError(404, _("This message has no such part."))
            name = next((a.filename for a in view.attachments if a.section == section),
                        msgmod.safe_filename(part.get_filename(), f"part-{section}.bin"))
            return name, msgmod.part_payload(part)

        name, data = await self._fetch_view(s, folder, uid, download)
        resp = web.Response(body=data, content_type="application/octet-stream")
        resp.headers["Content-Disposition"] = msgmod.content_disposition(name)
        resp.headers["Content-Security-Policy"] = download_csp()
        return resp

    async def static(self, request: web.Request):
        """The style sheet and the icon: a fixed list of files, nothing else on disk."""
        path = STATIC_FILES.get(request.match_info["name"])
        if path is None:
            raise HttpError(404, _("There is no such file here."))
        return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    # ------------------------------------------------------------------ writing
    async def compose(self, request: web.Request):
        s = self._require(request)
        mode = request.query.get("mode", "")
        fields = {"to": request.query.get("to", ""), "cc": "", "bcc": "", "subject": "",
                  "body": "", "in_reply_to": "", "references": ""}
        origin = {}
        if mode in ("reply", "replyall", "forward"):
            folder = self._folder_arg(request.query.get("f"))
            uid = self._int_arg(request.query.get("uid"))

            def prefilled(view, parsed):
                if mode == "forward":
                    return msgmod.forward_fields(parsed), {"attachments": view.attachments}
                return msgmod.reply_fields(parsed, s.address, mode == "replyall"), {}

            more, origin = await self._fetch_view(s, folder, uid, prefilled)
            fields.update(more)
            origin.update({"f": folder, "uid": uid, "mode": mode})
        return await self.render_off_loop("compose.html", request, s, fields=fields, origin=origin,
                                          error=None, max_upload=msgmod.human_size(self.max_upload))

    async def send(self, request: web.Request):
        s = self._require(request)
        form = await self._form(request, s)
        fields = {k: str(form.get(k, "")) for k in
                  ("to", "cc", "bcc", "subject", "body", "in_reply_to", "references")}
        mode = str(form.get("mode", ""))
        origin = {}
        if mode in ("reply", "replyall", "forward"):
            origin = {"f": self._folder_arg(form.get("f")), "uid": self._int_arg(form.get("uid")),
                      "mode": mode}

        async def again(error: str, status: int = 400):
            return await self.render_off_loop(
                "compose.html", request, s, status=status, fields=fields, origin=origin,
                error=error, max_upload=msgmod.human_size(self.max_upload))

        uploads = []
        for f in form.getall("attachment", []):
            if isinstance(f, web.FileField) and f.filename:
                data = f.file.read()
                uploads.append(msgmod.Upload(f.filename, f.content_type or "application/octet-stream", data))

        def prepare():
            """Check the fields and build the message (in a worker: parsing headers costs)."""
            labels = {"to": _("To"), "cc": _("Cc"), "bcc": _("Bcc"), "subject": _("Subject"),
                      "in_reply_to": "In-Reply-To", "references": "References"}
            too_long = [labels[k] for k, limit in FIELD_LIMITS.items() if len(fields[k]) > limit]
            if too_long:
                raise FormError(_("The {0} field is too long.").format(too_long[0]))
            recipients = {}
            for key in ("to", "cc", "bcc"):
                label = labels[key]
                typed = fields[key]
                msgmod.check_typed_text(label, typed)  # an injection, said as such
                try:
                    pairs = email.utils.getaddresses([typed]) if typed.strip() else []
                except Exception:  # RecursionError: comments nested hundreds deep
                    pairs = [(typed, "")]
                bad = [a or n for n, a in pairs if not _ADDRESS_RE.fullmatch(a or "")]
                if bad:
                    raise FormError(_("This is not an e-mail address: {0}").format(", ".join(bad)))
                # The field as the email package reads it, too: what the parser above made of
                # it may hide an injection. (Checked last: the email package takes seconds to
                # fold 4,000 characters of non-ASCII text that are no list of addresses.)
                msgmod.check_header_text(label, typed, "To")
                wide = [a for _n, a in pairs if not a.isascii()]
                if wide:
                    raise FormError(_(
                        "This webmail sends to plain ASCII addresses only (an address with other "
                        "letters needs the SMTPUTF8 extension, RFC 6531): {0}").format(
                        ", ".join(wide)))
                recipients[key] = [msgmod.format_address((n, a)) for n, a in pairs]
            count = sum(len(r) for r in recipients.values())
            if not count:
                raise FormError(_("Say who gets the message: type at least one address in To."))
            if count > MAX_RECIPIENTS:
                raise FormError(_("That is {0} recipients; one message may go to at most {1}.")
                                .format(count, MAX_RECIPIENTS))
            msg = msgmod.build_message(
                sender=s.address, to=recipients["to"], cc=recipients["cc"],
                bcc=recipients["bcc"], subject=fields["subject"], body=fields["body"],
                attachments=uploads, in_reply_to=fields["in_reply_to"],
                references=fields["references"], domain=s.domain)
            envelope_to = [a for _n, a in email.utils.getaddresses(
                recipients["to"] + recipients["cc"] + recipients["bcc"])]
            return msg, envelope_to

        try:
            msg, envelope_to = await self.run(prepare)
        except (FormError, msgmod.HeaderInjection) as e:
            return await again(str(e))
        backend = self.backend(s.domain)
        if backend is None:
            return await again(_("No mail server is known for {0}.").format(s.domain), 502)
        not_kept = []  # why the Sent folder took no copy (it is full), if it did not

        def work():
            if origin.get("mode") == "forward":
                with self._imap(s) as imap:
                    try:
                        raw, flags = imap.fetch(origin["f"], origin["uid"])
                    except KeyError:
                        raw = None
                if raw is not None:
                    view, parsed = msgmod.read_view(raw, flags)
                    for a in view.attachments:
                        part = msgmod.find_part(parsed, a.section)
                        if part is not None:
                            ctype = part.get_content_type()
                            maintype, _s, subtype = ctype.partition("/")
                            if ctype == "message/rfc822" and part.get_payload():
                                msg.add_attachment(part.get_payload()[0], filename=a.filename)
                            else:
                                msg.add_attachment(msgmod.part_payload(part), maintype=maintype,
                                                   subtype=subtype or "octet-stream",
                                                   filename=a.filename)
            try:
                outgoing = msg.as_bytes()  # the Sent copy keeps Bcc: only the user sees it
                del msg["Bcc"]
                sent = msg.as_bytes()
            except RecursionError:
                raise SendError(_("The forwarded message nests its parts too deeply to be sent "
                                  "along. Forward it from an IMAP client, or send it without "
                                  "its attachments."), 422) from None
            try:
                with smtplib.SMTP(backend.smtp_host, backend.smtp_port,
                                  local_hostname=f"webmail.{s.domain}", timeout=30) as smtp:
                    smtp.ehlo()
                    if smtp.has_extn("starttls") and backend.tls_context is not None:
                        # submission: STARTTLS before AUTH (RFC 6409, RFC 8314 3.3)
                        smtp.starttls(context=backend.tls_context)
                        smtp.ehlo()
                    with throttled_elsewhere(smtp.sock):  # (as ImapAccess)
                        smtp.login(s.address, s.password)
                    refused = smtp.sendmail(s.address, envelope_to, sent)
            except smtplib.SMTPAuthenticationError as e:
                raise SendError(_("The mail server did not accept your login: {0}").format(_reply(e)))
            except smtplib.SMTPRecipientsRefused as e:
                raise SendError(_("The mail server refused every recipient: {0}").format(
                    "; ".join(f"{r}: {c} {m.decode('utf-8', 'replace')}"
                              for r, (c, m) in e.recipients.items())))
            except smtplib.SMTPResponseException as e:
                raise SendError(_("The mail server refused the message: {0}").format(_reply(e)))
            except (smtplib.SMTPException, OSError) as e:
                raise SendError(_("The SMTP server is not reachable ({0}).").format(e))
            with self._imap(s) as imap:
                sent_folder = imap.special_folder("\\Sent")
                try:
                    imap.append(sent_folder, outgoing, ("\\Seen",))
                except MailServerError as e:  # NO [OVERQUOTA]: the mail went all the same
                    not_kept.append(_("no copy was kept in {0}: {1}").format(sent_folder, e))
                if origin.get("mode") in ("reply", "replyall", "forward"):
                    flag = "$Forwarded" if origin["mode"] == "forward" else "\\Answered"
                    try:
                        imap.store(origin["f"], [origin["uid"]], "+FLAGS.SILENT", [flag])
                    except MailServerError:
                        pass  # the original may have been deleted meanwhile
            return refused

        try:
            refused = await self.run(work)
        except SendError as e:
            return await again(str(e), e.status)
        if refused:
            s.notify(_("Sent, but these recipients were refused: {0}").format(
                "; ".join(f"{r}: {c} {m.decode('utf-8', 'replace')}" for r, (c, m) in refused.items())),
                "warn")
        else:
            s.notify(_("Message sent to {0}.").format(", ".join(envelope_to)))
        for reason in not_kept:
            s.notify(reason, "warn")
        back = self._list_url(origin["f"]) if origin else self._list_url("INBOX")
        raise web.HTTPSeeOther(back)

    # ------------------------------------------------------------------ actions
    async def action(self, request: web.Request):
        s = self._require(request)
        form = await self._form(request, s)
        folder = self._folder_arg(form.get("f"))
        op = str(form.get("op", ""))
        named = form.getall("uid", [])
        if len(named) > MAX_UIDS:
            raise HttpError(400, _("Choose at most {0} messages at a time.").format(MAX_UIDS))
        uids = sorted({self._int_arg(u) for u in named})
        page = self._int_arg(form.get("page"), 1)
        sort = "date-asc" if form.get("sort") == "date-asc" else "date-desc"
        back = self._list_url(folder, page, sort)
        if op not in ("delete", "read", "unread"):
            raise HttpError(400, _("Unknown action."))
        if not uids:
            s.notify(_("Select one or more messages first."), "warn")
            raise web.HTTPSeeOther(back)

        def work():
            with self._imap(s) as imap:
                if op == "read":
                    imap.store(folder, uids, "+FLAGS.SILENT", ["\\Seen"])
                    return None
                if op == "unread":
                    imap.store(folder, uids, "-FLAGS.SILENT", ["\\Seen"])
                    return None
                trash = imap.special_folder("\\Trash")
                if folder == trash:
                    imap.delete(folder, uids)
                    return "deleted"
                imap.move(folder, uids, trash)
                return "moved"

        result = await self.run(work)
        n = len(uids)
        if result == "moved":
            s.notify(ngettext("{0} message moved to Trash.", "{0} messages moved to Trash.",
                              n).format(n))
        elif result == "deleted":
            s.notify(ngettext("{0} message deleted for good.", "{0} messages deleted for good.",
                              n).format(n))
        elif op == "read":
            s.notify(ngettext("{0} message marked as read.", "{0} messages marked as read.",
                              n).format(n))
        else:
            s.notify(ngettext("{0} message marked as unread.", "{0} messages marked as unread.",
                              n).format(n))
        raise web.HTTPSeeOther(back)

    # ------------------------------------------------------------------ serving
    async def serve(self, sock: socket.socket) -> "WebmailServer":
        self.set_port(sock.getsockname()[1])
        # aiohttp's own keep-alive timer is the backstop; the guard closes idle connections
        # first, and says so in the transcript.
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None,
                               logger=_http_log, shutdown_timeout=2.0,
                               keepalive_timeout=self.connections.idle_timeout + 5)
        await runner.setup()
        server = await asyncio.get_running_loop().create_server(
            self.connections.protocol_factory(runner.server), sock=sock)
        self.connections.start()
        return WebmailServer(self, runner, sock, server)


class _BadRequests(logging.Filter):
    """aiohttp answers a request it cannot parse with 400 and logs an ERROR with its traceback;
    in the lab's log that is a client's mistake: one INFO line, saying what was wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and error.code == 400:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "bad HTTP request, refused with 400: %s", (
                " ".join(str(error.message).split())[:300],)
            record.exc_info = record.exc_text = None
        return True


_http_log = logging.getLogger("maillab.webmail.http")
_http_log.addFilter(_BadRequests())


class FormError(Exception):
    """A compose form that cannot be sent as it is; the text says why."""


class SendError(Exception):
    def __init__(self, text: str, status: int = 502):
        super().__init__(text)
        self.status = status


def _reply(e: smtplib.SMTPResponseException) -> str:
    text = e.smtp_error.decode("utf-8", "replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
    return f"{e.smtp_code} {text}"


class WebmailServer:
    """The running webmail, with the ``close()``/``wait_closed()`` the lab expects of a server."""

    def __init__(self, webmail: Webmail, runner: web.AppRunner, sock: socket.socket,
                 server: asyncio.AbstractServer):
        self.webmail = webmail
        self.runner = runner
        self.server = server
        self.sockets = [sock]
        self._closed = False

    def close(self) -> None:
        self._closed = True
        self.server.close()  # no new connections

    async def wait_closed(self) -> None:
        self.server.close()
        self.webmail.connections.stop()
        await self.runner.cleanup()  # closes the open connections (aiohttp's shutdown)
        self.webmail.sessions.clear()
        executor = self.webmail.executor
        executor.shutdown(wait=False, cancel_futures=True)
        # Let the worker threads finish (the lab closed their IMAP/SMTP connections already),
        # waiting on the loop so that the servers they talk to can still answer.
        threads = list(getattr(executor, "_threads", ()))
        for _i in range(100):
            if not any(t.is_alive() for t in threads):
                break
            await asyncio.sleep(0.05)


async def start_webmail(sock: socket.socket, backend: Callable[[str], Backend | None],
                        **kwargs) -> WebmailServer:
    """Serve a webmail on an already listening socket, on the running loop."""
    return await Webmail(backend, **kwargs).serve(sock)
