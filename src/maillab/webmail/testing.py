"""Helpers for testing the webmail over HTTP (used by tests/test_webmail*.py; needs ``requests``)."""

from __future__ import annotations

import email.policy
import email.utils
import itertools
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


_accounts = itertools.count(1)


def fresh_account(lab, prefix: str = "user", domain: str = "example.com") -> tuple[str, str]:
    """A new account on a running lab, for one test: (address, password)."""
    login = f"{prefix}{next(_accounts)}"
    lab.store.add_account(login, "pw-" + login, domain)
    return f"{login}@{domain}", "pw-" + login


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

def folded_subject_message(lines: int = 1800, *, words: int = 180,
                           to: str = "alice@example.com") -> bytes:
    """A stranger's message whose Subject folds over ``lines`` lines of ``words`` short words
    (1,800 lines of 180 make 1.6 MB). The stdlib's header parser is quadratic on such a value."""
    subject = "Subject: start\r\n" + "".join(" " + "word " * words + "\r\n" for _ in range(lines))
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


def render_everything(raw: bytes, me: str = "alice@example.com") -> str:
    """Everything the webmail does with a stored message, as its pages do it: the list entry,
    the read view, the HTML frame, every attachment, reply, reply all and forward. Raises what
    a page would raise. Returns the sanitized HTML body (for checks of its own)."""
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
    return cleaned.html


# ----------------------------------------------------------------------------- fuzzing helpers
# Shared by tests/test_webmail_fuzz.py (hypothesis, bounded) and bench/fuzz_webmail.py (long runs).

# Tags and attributes no sanitized HTML may have, and URLs no attribute may hold.
ACTIVE_TAGS = {"script", "style", "iframe", "frame", "frameset", "object", "embed", "applet",
               "svg", "math", "form", "input", "button", "textarea", "select", "meta", "base",
               "link", "video", "audio", "source", "track", "template", "portal", "isindex",
               "picture", "noscript", "xmp", "plaintext"}
ACTIVE_ATTRIBUTES = {"srcset", "formaction", "ping", "background", "action", "poster", "xmlns",
                     "http-equiv", "srcdoc", "data", "codebase", "dynsrc", "lowsrc"}
ACTIVE_VALUE = re.compile(r"^\s*(javascript|vbscript|data:(?!image/(png|jpeg|gif|webp);)|"
                          r"livescript)|expression\(|url\(|@import", re.IGNORECASE)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ACTIVE_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name in ACTIVE_ATTRIBUTES:
                self.found.append(f"{tag} {name}=")
            elif value and ACTIVE_VALUE.search(value):
                self.found.append(f"{tag} {name}={value[:40]!r}")

    handle_startendtag = handle_starttag


def active_html(html: str) -> str | None:
    """What in sanitized HTML could still run or load something (a tag, an event handler, an
    active URL), as a browser's parser would see it; None if nothing. Text is text: an
    "onclick=" that is not inside a tag is harmless."""
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser.found[0] if parser.found else None


def injected_headers(msg, expected: set[str]) -> list[str]:
    """Header names in the serialized message other than ``expected`` (lower case)."""
    head = msg.as_bytes().split(b"\r\n\r\n", 1)[0]
    names = {line.split(b":", 1)[0].decode("ascii", "replace").lower()
             for line in head.split(b"\r\n") if line and line[:1] not in (b" ", b"\t")}
    return sorted(names - expected)


# The pages a fuzzed request is aimed at (logout is left out: it would end the fuzzer's session).
FUZZ_PATHS = ("", "login", "mail", "read", "body", "part", "compose", "send", "action",
              "static/style.css", "static/x", "nowhere")
FUZZ_FIELDS = ("csrf", "f", "uid", "page", "sort", "op", "part", "images", "view", "mode", "to",
               "cc", "bcc", "subject", "body", "in_reply_to", "references", "address", "password",
               "attachment")


def _quote_bytes(data: bytes) -> str:
    from urllib.parse import quote_from_bytes
    return quote_from_bytes(data, safe="")


def fuzz_request(data: bytes, *, port: int, cookie: str, csrf: str) -> bytes:
    """An HTTP request for the webmail made from fuzz bytes: the first byte picks its shape
    (a query, a form, a multipart form, cookies, a path, or raw bytes), the next ones a page
    and field names, the rest the values. ``cookie`` and ``csrf`` make it a logged-in user's."""
    shape = data[0] % 6 if data else 0
    path = FUZZ_PATHS[data[1] % len(FUZZ_PATHS)] if len(data) > 1 else ""
    rest = data[2:]
    pieces = rest.split(b"\x00")
    names = [FUZZ_FIELDS[p[0] % len(FUZZ_FIELDS)] if p else "f" for p in pieces]
    values = [p[1:] for p in pieces]
    host = f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n"
    cookies = f"Cookie: {cookie}\r\n"
    if shape == 0:  # GET with a query
        query = "&".join(f"{n}={_quote_bytes(v)}" for n, v in zip(names, values))
        return f"GET /{path}?{query} HTTP/1.1\r\n{host}{cookies}\r\n".encode()
    if shape == 1:  # a urlencoded form, with the session's token first
        body = (f"csrf={csrf}&" + "&".join(f"{n}={_quote_bytes(v)}" for n, v in zip(names, values))
                ).encode()
        return (f"POST /{path} HTTP/1.1\r\n{host}{cookies}Content-Type: "
                f"application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body
    if shape == 2:  # multipart, values as raw bytes (a file when the field is "attachment")
        parts = [b'--fuzz\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n' + csrf.encode()]
        for n, v in zip(names, values):
            head, _sep, value = v.partition(b"\x01")
            if n == "attachment":
                parts.append(b'--fuzz\r\nContent-Disposition: form-data; name="attachment"; '
                             b'filename="' + head.replace(b"\r", b"").replace(b"\n", b"")
                             + b'"\r\nContent-Type: text/plain\r\n\r\n' + value)
            else:
                parts.append(b'--fuzz\r\nContent-Disposition: form-data; name="' + n.encode()
                             + b'"\r\n\r\n' + v)
        body = b"\r\n".join(parts) + (b"\r\n--fuzz--\r\n" if len(rest) % 3 else b"")
        return (f"POST /{path} HTTP/1.1\r\n{host}{cookies}Content-Type: multipart/form-data; "
                f"boundary=fuzz\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    if shape == 3:  # cookies of any bytes (no line breaks: those would end the header)
        jar = rest.replace(b"\r", b"").replace(b"\n", b"")
        return (f"GET /{path} HTTP/1.1\r\n{host}Cookie: ").encode() + jar + b"; " + \
            cookie.encode() + b"\r\n\r\n"
    if shape == 4:  # a path of any bytes
        return b"GET /" + _quote_bytes(rest).encode() + f" HTTP/1.1\r\n{host}{cookies}\r\n".encode()
    return rest + b"\r\n\r\n"  # raw: whatever the bytes say


def http_exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send a request as it is and return the server's answer: one whole response (read by its
    Content-Length or chunks, so a keep-alive connection costs no wait), all the server said
    before it closed, or b"" if it hung up without a word.

    A request that is not complete (fuzz bytes often are not) leaves the server waiting for the
    rest, as it should: after a short look for an early answer (a 400 or 413 before the body),
    the client says it has no more (half-close) and the server has ``timeout`` to finish. A
    complete request gets ``timeout`` for its answer before that. socket.timeout if the
    server stays silent after the half-close too."""
    import socket
    patience = timeout if _request_complete(request) else min(timeout, EARLY_ANSWER)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and hung up before reading it all: read what it said
        s.settimeout(patience)
        received, half_closed = b"", False
        bodiless = request.lstrip(b"\r\n").startswith(b"HEAD ")
        while not _response_complete(received, bodiless):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                if received:  # an answer without a length, on a connection kept open: fine
                    break
                if half_closed:
                    raise
                s.shutdown(socket.SHUT_WR)
                s.settimeout(timeout)
                half_closed = True
                continue
            if not chunk:
                break
            received += chunk
    return received


EARLY_ANSWER = 0.25  # seconds an incomplete request waits for an answer before the half-close


def _request_complete(request: bytes) -> bool:
    """Whether ``request`` is one whole HTTP request (header, then the body its header
    announces), as a server reads it after the empty lines RFC 9112 2.2 lets it skip."""
    request = request.lstrip(b"\r\n")
    head, sep, body = request.partition(b"\r\n\r\n")
    return bool(sep) and _body_complete(head, body)


def _response_complete(data: bytes, bodiless: bool = False) -> bool:
    """Whether ``data`` holds a whole final response (1xx interim ones are skipped); the
    answer to HEAD, a 204 and a 304 end with their header (``bodiless``: the request was HEAD)."""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return False
        if not re.match(rb"HTTP/\d\.\d 1\d\d", head):
            return bodiless or bool(re.match(rb"HTTP/\d\.\d (204|304)", head)) or \
                _body_complete(head, rest, close_delimited=True)
        data = rest


def _body_complete(head: bytes, body: bytes, close_delimited: bool = False) -> bool:
    """Whether ``body`` is all the body ``head`` announces (by Content-Length or chunks). A
    response without either ends when the server closes (``close_delimited``); a request
    without either has none; a malformed length is the server's to refuse: complete."""
    fields = head.lower()
    if re.search(rb"\r\ntransfer-encoding:[^\r]*chunked", fields):
        return body.endswith(b"0\r\n\r\n")
    lengths = re.findall(rb"\r\ncontent-length:[ \t]*([^\r]*)", fields)
    if len(lengths) != 1 or not lengths[0].strip().isdigit():
        return not (close_delimited and not lengths)
    return len(body) >= int(lengths[0].strip())


def http_failure(answer: bytes) -> str | None:
    """A fuzzed request's failure: a 5xx other than 502 (a mail server's refusal, passed on)
    and 503 (busy), a traceback, or a path of the server's disk; None if the answer is fine."""
    status = answer[9:12]
    if answer[:5] == b"HTTP/" and status[:1] == b"5" and status not in (b"502", b"503"):
        return f"HTTP {status.decode('ascii', 'replace')}"
    for leak in (b"Traceback (most recent call last)", b"/site-packages/", b"/maillab/webmail/"):
        if leak in answer:
            return f"the answer shows {leak.decode()!r}"
    return None


def session_for(base_url: str, address: str, password: str) -> tuple[str, str]:
    """(Cookie header, CSRF token) of a fresh logged-in session."""
    web = WebClient(base_url)
    r = web.login(address, password)
    assert r.status_code == 303, r.status_code
    cookie = "; ".join(f"{k}={v}" for k, v in web.http.cookies.items())
    return cookie, web.csrf()
