"""Helpers for testing the webmail over HTTP (used by tests/test_webmail*.py; needs ``requests``)."""

from __future__ import annotations

import email.policy
import email.utils
import re
from email.message import EmailMessage
from html.parser import HTMLParser
from urllib.parse import urljoin

import requests

__all__ = ["WebClient", "make_message", "links_of", "csrf_of"]


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, "no CSRF token in the page"
    return m.group(1)


class _Links(HTMLParser):
    URL_ATTRS = {"href", "src", "action", "formaction", "data", "poster", "srcset"}

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in self.URL_ATTRS and value is not None:
                self.found.append((tag, name, value))


def links_of(page: str) -> list[tuple[str, str, str]]:
    p = _Links()
    p.feed(page)
    return p.found


def tags_of(page: str) -> list[str]:
    p = _Links()
    p.feed(page)
    return p.tags


class WebClient:
    """A browser stand-in: one cookie jar, relative links resolved like a browser does."""

    def __init__(self, base_url: str):
        self.base = base_url
        self.http = requests.Session()
        self.last: requests.Response | None = None

    def url(self, path: str) -> str:
        return urljoin(self.base, path)

    def get(self, path: str = "", **kw) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        kw.setdefault("timeout", 30)
        self.last = self.http.get(self.url(path), **kw)
        return self.last

    def post(self, path: str, data=None, **kw) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        kw.setdefault("timeout", 30)
        self.last = self.http.post(self.url(path), data=data, **kw)
        return self.last

    def follow(self, r: requests.Response) -> requests.Response:
        """Follow one redirect as a browser would (Location is relative to the request URL)."""
        assert r.status_code in (301, 302, 303, 307), r.status_code
        self.last = self.http.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False,
                                  timeout=30)
        return self.last

    def login(self, address: str, password: str) -> requests.Response:
        page = self.get("login")
        return self.post("login", {"csrf": csrf_of(page.text), "address": address,
                                   "password": password})

    def csrf(self, page: str = "mail") -> str:
        return csrf_of(self.get(page).text)

    def cookie_headers(self, r: requests.Response) -> list[str]:
        return r.raw.headers.getlist("Set-Cookie") if hasattr(r.raw.headers, "getlist") else \
            [v for k, v in r.raw.headers.items() if k.lower() == "set-cookie"]


def make_message(*, sender="bob@example.com", to="alice@example.com", subject="Hello",
                 text: str | None = "Hello there.", html: str | None = None, date=None,
                 attachments=(), message_id=None) -> bytes:
    """A test message: text and/or HTML, attachments as (filename, content type, bytes)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date or email.utils.formatdate(localtime=True)
    msg["Message-ID"] = message_id or email.utils.make_msgid(domain="example.com")
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


class StandaloneWebmail:
    """A webmail on its own loop and thread, in front of any IMAP/SMTP servers (Dovecot, say)."""

    def __init__(self, backend, **kwargs):
        import asyncio
        import threading

        from ..net import bind_listener
        from .app import start_webmail

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        sock = bind_listener(None)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server = asyncio.run_coroutine_threadsafe(
            start_webmail(sock, backend if callable(backend) else (lambda _domain: backend), **kwargs),
            self.loop).result(30)

    def close(self) -> None:
        import asyncio
        self.server.close()
        asyncio.run_coroutine_threadsafe(self.server.wait_closed(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- hostile mail

def folded_subject_message(lines: int = 1800, *, to: str = "alice@example.com") -> bytes:
    """A stranger's message whose Subject folds over ``lines`` lines of short words (~900 bytes
    each: 1,800 lines make 1.6 MB). The stdlib's header parser is quadratic on such a value."""
    subject = "Subject: start\r\n" + "".join(" " + "word " * 180 + "\r\n" for _ in range(lines))
    return ("From: Stranger <stranger@example.net>\r\n"
            f"To: {to}\r\n"
            "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
            "Message-ID: <folded@example.net>\r\n"
            f"{subject}\r\nHello.\r\n").encode()


def nested_multipart_message(depth: int) -> bytes:
    """A message whose multiparts nest ``depth`` deep (the stdlib parser recurses per level)."""
    head = b"From: a@example.net\r\nTo: alice@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    opening = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                       for i in range(depth))
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\r\n\r\nthe innermost part" + closing


def render_everything(raw: bytes, me: str = "alice@example.com") -> None:
    """Everything the webmail does with a stored message, as its pages do it: the list entry,
    the read view, the HTML frame, every attachment, reply, reply all and forward. Raises what
    a page would raise (``Unreadable`` is a proper refusal: a 422 page)."""
    from . import message as m

    header = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    m.list_entry(1, ("\\Seen",), len(raw), header, '"01-Jan-2024 10:00:00 +0000"')
    m.list_entry(1, (), len(raw), header, None, show_to=True)
    m.date_sort_key(header, None)
    for prefer_text in (False, True):
        view, parsed = m.read_view(raw, (), prefer_text=prefer_text)
    inline = m.cid_sections(parsed)
    cleaned = m.html_body(parsed, allow_remote_images=False, cid_url=lambda cid: (
        "data:," if cid.strip("<>") in inline else None))
    m.html_document(cleaned.html, view.subject)
    for a in view.attachments:
        part = m.find_part(parsed, a.section)
        if part is not None:
            try:
                m.part_payload(part)
            except m.Unreadable:
                pass
            m.content_disposition(a.filename)
    m.reply_fields(parsed, me, reply_all=False)
    m.reply_fields(parsed, me, reply_all=True)
    m.forward_fields(parsed)
