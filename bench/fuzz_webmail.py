"""Fuzz targets for the webmail, for the long runs of bench/fuzz.py (issue 10).

``TARGETS`` maps a name to ``fn(data: bytes) -> str | None``: None when the webmail handled the
input properly, a short text when the input alone made it fail (an HTTP 500, a header the user
did not ask for, active HTML after sanitizing). Exceptions are the harness's to count.
``SEEDS`` gives each target a few inputs worth mutating.

* ``webmail-render``: the bytes as a stored message, through everything the pages do with one
  (list entry, read view, HTML frame, attachments, reply, reply all, forward), called directly.
* ``webmail-sanitize``: the bytes as an HTML body, through the sanitizer.
* ``webmail-headers``: the bytes as the header fields of the compose form, through
  ``build_message``: refused (HeaderInjection) or a message with exactly the expected headers.
* ``webmail-http``: the bytes as a request of a logged-in user (a query, a form, a multipart
  form, cookies, a path or raw bytes: see ``maillab.webmail.testing.fuzz_request``), sent to a
  real lab's webmail on loopback.

Run on its own for a quick look: ``python bench/fuzz_webmail.py [inputs per target]``.
"""

from __future__ import annotations

import atexit
import random
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from maillab.webmail import message as m  # noqa: E402
from maillab.webmail import testing as t  # noqa: E402

CORPUS = ROOT / "tests" / "webmail_corpus"


def render(data: bytes) -> str | None:
    t.render_everything(data)
    return None


def sanitize(data: bytes) -> str | None:
    html = data.decode("utf-8", "replace")
    for allow in (False, True):
        out = m.sanitize_html(html, allow_remote_images=allow, cid_url=lambda cid: "data:,")
        found = t.active_html(out.html)
        if found:
            return f"active HTML survived the sanitizer: {found!r}"
    return None


_EXPECTED = {"from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references",
             "user-agent", "content-type", "content-transfer-encoding", "mime-version"}


def headers(data: bytes) -> str | None:
    subject, name, in_reply_to, references, filename = (
        data.split(b"\x00") + [b""] * 5)[:5]
    text = [v.decode("utf-8", "replace") for v in (subject, name, in_reply_to, references, filename)]
    try:
        msg = m.build_message(
            sender="alice@example.com", to=[m.format_address((text[1], "bob@example.com"))],
            cc=[], bcc=[], subject=text[0], body="x", in_reply_to=text[2], references=text[3],
            attachments=[m.Upload(text[4] or "a.txt", "text/plain", b"x")] if text[4] else [],
            domain="example.com")
    except m.HeaderInjection:
        return None
    extra = t.injected_headers(msg, _EXPECTED)
    return f"headers nobody asked for: {extra}" if extra else None


class _LiveWebmail:
    """One lab for the whole run, and a logged-in session of a user with some mail."""

    def __init__(self):
        import maillab
        self.lab = maillab.MailLab(ports="any").start()
        atexit.register(self.lab.stop)
        self.lab.store.add_account("fuzz", "fuzz-password", "example.com")
        inbox = self.lab.store.find_address("fuzz@example.com").folder("INBOX")
        for raw in _seed_messages():
            inbox.deliver(raw)
        self.port = self.lab.webmail_port
        self.cookie, self.csrf = t.session_for(self.lab.webmail_url, "fuzz@example.com",
                                               "fuzz-password")


_live: _LiveWebmail | None = None


def http(data: bytes) -> str | None:
    global _live
    if _live is None:
        _live = _LiveWebmail()
    request = t.fuzz_request(data, port=_live.port, cookie=_live.cookie, csrf=_live.csrf)
    try:
        # A complete request: 2 s for its one response (no wait for more on a kept-alive
        # connection); an incomplete one: 0.25 s for an early answer, the EOF, 2 s more.
        answer = t.http_exchange(_live.port, request, timeout=2)
    except socket.timeout:
        return "no answer, not even after the client's EOF"
    return t.http_failure(answer)


TARGETS = {"webmail-render": render, "webmail-sanitize": sanitize, "webmail-headers": headers,
           "webmail-http": http}


def _seed_messages() -> list[bytes]:
    seeds = [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))]
    seeds += [t.make_message(subject="hello", html="<p>hi <b>there</b></p>",
                             attachments=[("a.pdf", "application/pdf", b"%PDF")]),
              t.folded_subject_message(20), t.nested_multipart_message(40)]
    return seeds


SEEDS = {
    "webmail-render": _seed_messages(),
    "webmail-sanitize": [p.read_bytes() for p in sorted(CORPUS.glob("*.html"))],
    "webmail-headers": [b"hello\x00Bob\x00<a@b>\x00<a@b> <c@d>\x00notes.txt",
                        b"=?utf-8?q?hi=0D=0AX:_y?=\x00=?utf-8?b?Qm9iDQo=?=\x00<a@b>\r\n\x00\x00"],
    "webmail-http": [bytes([0, 2]) + b"\x01INBOX", bytes([1, 7]) + b"\x0bdelete\x00\x02x",
                     bytes([2, 7]) + b"\x13a.txt\x01hello\x00\x0dsubject",
                     bytes([3, 2]) + b"maillab=\xed\xa0\x80", bytes([4, 0]) + b"static/../x",
                     bytes([5, 0]) + b"GET /mail HTTP/1.1\r\nHost: x"],
}


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        i = rng.randrange(len(data) + 1)
        if op < 0.4 and data:
            data[min(i, len(data) - 1)] = rng.randrange(256)
        elif op < 0.7:
            data[i:i] = rng.choice([b"\r\n", b"\x00", b"(", b")", b"=?utf-8?q?=0D=0A?=", b"\"",
                                    b"<", b">", b"--", b"\xed\xa0\x80", bytes([rng.randrange(256)])])
        elif data:
            del data[i:i + rng.randint(1, 16)]
    return bytes(data)


def main(n: int) -> None:
    """A quick run: n mutated inputs per target, with failures, exceptions and the slowest."""
    rng = random.Random(10)
    for name, fn in TARGETS.items():
        failures, errors, slowest = {}, {}, (0.0, b"")
        start = time.perf_counter()
        for i in range(n):
            data = _mutate(rng, rng.choice(SEEDS[name]))
            t0 = time.perf_counter()
            try:
                result = fn(data)
            except Exception as e:  # noqa: BLE001 - counted, as the harness does
                result = None
                errors.setdefault(type(e).__name__, data)
            took = time.perf_counter() - t0
            slowest = max(slowest, (took, data))
            if result:
                failures.setdefault(result, data)
        total = time.perf_counter() - start
        print(f"{name}: {n} inputs in {total:.1f} s ({n / total:.0f}/s), slowest {slowest[0] * 1000:.0f} ms, "
              f"{len(failures)} kinds of failure, {len(errors)} kinds of exception", flush=True)
        for text, data in list(failures.items())[:5]:
            print(f"  FAIL {text}: {data[:120]!r}")
        for kind, data in list(errors.items())[:5]:
            print(f"  EXCEPTION {kind}: {data[:120]!r}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
