"""The webmail's pieces without a network: the sanitizer on the hostile corpus, file names,
folder-name encoding, IMAP response parsing, throttling, and building messages."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest

from maillab.webmail import message as m
from maillab.webmail.imapclient import _fetch_dicts, decode_mailbox, encode_mailbox, parse_values
from maillab.webmail.security import Busy, LoginThrottle, device_cookie, device_of

CORPUS = Path(__file__).resolve().parent / "webmail_corpus"
HOSTILE_FILES = sorted(p for p in CORPUS.iterdir() if p.suffix in (".html", ".eml"))

# What must never survive sanitizing (checked on the lower-cased output).
FORBIDDEN = [
    r"<script", r"<style", r"<iframe", r"<frame", r"<object", r"<embed", r"<applet", r"<svg",
    r"<math", r"<form", r"<input", r"<button", r"<meta", r"<base", r"<link", r"<video",
    r"<audio", r"<source", r"<template", r"<portal", r"<isindex", r"<marquee", r"<picture",
    r"\son[a-z]+\s*=", r"javascript:", r"data:text", r"data:image/svg", r"attacker",
    r"expression\(", r"url\(", r"\ssrcset\s*=", r"\sbackground\s*=", r"formaction", r"\sping\s*=",
    r"xlink",
]


def hostile_html(path: Path) -> str:
    text = path.read_text().replace("ATTACKER", "attacker.example:8000")
    if path.suffix == ".html":
        return text
    msg = email.message_from_string(text, policy=email.policy.default)
    body = msg.get_body(("html",))
    return body.get_content() if body is not None else ""


@pytest.mark.parametrize("path", HOSTILE_FILES, ids=[p.stem for p in HOSTILE_FILES])
def test_sanitizer_removes_everything_active_from_the_hostile_corpus(path):
    for allow in (False, True):
        out = m.sanitize_html(hostile_html(path), allow_remote_images=allow, cid_url=lambda c: None)
        low = out.html.lower()
        for pattern in FORBIDDEN:
            if allow and pattern == r"attacker" and "<img" in low:
                continue  # allowed remote images may name their server (checked below)
            assert not re.search(pattern, low), (path.name, pattern, out.html)
        for src in re.findall(r'<img[^>]*\ssrc="([^"]*)"', low):
            assert allow and src.startswith(("http://", "https://")), (path.name, src)


def test_sanitizer_keeps_ordinary_formatting():
    html = ('<div style="color:#333;font-size:14px"><h2>News</h2><p align="center">Hello <b>you</b>'
            '<br><a href="https://example.org/a?b=1&amp;c=2">link</a></p>'
            '<table border="1"><tr><td colspan="2" bgcolor="#eee">cell</td></tr></table>'
            '<blockquote>quoted</blockquote><ul><li>one</li></ul><img src="cid:x" alt="inline"></div>')
    out = m.sanitize_html(html, cid_url=lambda cid: "data:image/png;base64,AAAA")
    for kept in ('style="color:#333;font-size:14px"', "<h2>News</h2>", 'align="center"',
                 "<b>you</b>", 'href="https://example.org/a?b=1&amp;c=2"', 'target="_blank"',
                 'rel="noopener noreferrer nofollow"', 'colspan="2"', "<blockquote>",
                 "<li>one</li>", 'src="data:image/png;base64,AAAA"'):
        assert kept in out.html, kept
    assert out.remote_images == 0


def test_remote_images_are_counted_and_dropped_until_allowed():
    html = '<img src="http://t.example/a.gif"><img src="https://t.example/b.gif"><img src="//t.example/c">'
    blocked = m.sanitize_html(html)
    assert blocked.remote_images == 3 and "t.example" not in blocked.html
    allowed = m.sanitize_html(html, allow_remote_images=True)
    assert 'src="http://t.example/a.gif"' in allowed.html
    assert 'src="https://t.example/b.gif"' in allowed.html
    assert "//t.example/c" not in allowed.html  # protocol-relative: ambiguous, dropped


@pytest.mark.parametrize("name, safe", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Windows\\system32\\evil.dll", "evil.dll"),
    ("invoice\u202egpj.exe", "invoicegpj.exe"),
    ('a"b<c>d|e?f*g:h.txt', "a_b_c_d_e_f_g_h.txt"),
    ("...", "attachment"),
    ("", "attachment"),
    (None, "attachment"),
    ("CON.txt", "_CON.txt"),
    (" .hidden ", "hidden"),
    ("line\r\nbreak.txt", "linebreak.txt"),
    ("Ελληνικά.pdf", "Ελληνικά.pdf"),
])
def test_safe_filename(name, safe):
    assert m.safe_filename(name) == safe


def test_long_filenames_keep_their_extension():
    out = m.safe_filename("x" * 300 + ".pdf")
    assert len(out) <= 120 and out.endswith(".pdf")


def test_content_disposition_has_an_ascii_fallback_and_the_utf8_name():
    value = m.content_disposition("Ελληνικά.pdf")
    assert value.startswith('attachment; filename="________.pdf"')
    assert "filename*=UTF-8''%CE%95" in value


@pytest.mark.parametrize("name, wire", [
    ("INBOX", "INBOX"), ("Sent", "Sent"), ("a&b", "a&-b"),
    ("Entwürfe", "Entw&APw-rfe"), ("Ελληνικά", "&A5UDuwO7A7cDvQO5A7oDrA-"),
    ("日本語", "&ZeVnLIqe-"),
])
def test_modified_utf7_folder_names(name, wire):
    assert encode_mailbox(name) == wire
    assert decode_mailbox(wire) == name


def test_imap_response_parsing_with_literals_and_brackets():
    data = [(b'1 (UID 7 FLAGS (\\Seen $Forwarded) BODY[HEADER.FIELDS (SUBJECT FROM)] {22}',
             b"Subject: hi (there)\r\n\r\n"), b" RFC822.SIZE 120)",
            b'2 (FLAGS (\\Deleted))',  # an unsolicited update without UID
            (b'3 (UID 9 BODY[] {3}', b"abc"), b")"]
    got = _fetch_dicts(data)
    assert got[0]["UID"] == "7" and got[0]["FLAGS"] == ["\\Seen", "$Forwarded"]
    assert got[0]["BODY[HEADER.FIELDS (SUBJECT FROM)]"] == b"Subject: hi (there)\r\n\r\n"
    assert got[0]["RFC822.SIZE"] == "120"
    assert "UID" not in got[1]
    assert got[2]["BODY[]"] == b"abc"
    assert parse_values(b'(\\HasNoChildren) "." "My \\"quoted\\" folder"') == [
        ["\\HasNoChildren"], ".", 'My "quoted" folder']
    assert parse_values(b"(\\Noselect) NIL INBOX") == [["\\Noselect"], None, "INBOX"]


def test_throttle_delays_grow_decay_and_never_overflow(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("maillab.webmail.security.time.monotonic", lambda: now[0])
    t = LoginThrottle(free=2, base=1.0, cap=8.0, half_life=60)
    keys = ["acct:a@x", "client:browser:one"]
    for _ in range(2):
        t.failed(keys)
    assert t.delay(keys) == 1.0  # two failures are free; then 1 s, doubling
    t.failed(keys)
    assert t.delay(keys) == 2.0
    assert t.delay(["acct:b@x", "client:browser:two"]) == 0  # others are not slowed down
    for _ in range(5000):  # far past any lockout: still a capped wait, no OverflowError
        t.failed(keys)
    assert t.delay(keys) == 8.0
    now[0] += 60 * 20  # twenty half-lives later the score has faded
    assert t.delay(keys) == 0
    t.failed(["acct:c@x"])
    t.succeeded(["acct:c@x"])
    assert t.score("acct:c@x") == 0


def test_throttle_forgets_keys_beyond_its_size():
    t = LoginThrottle(max_keys=100)
    for i in range(1000):
        t.failed([f"client:browser:{i}"])
    assert len(t._scores) <= 100


def test_attempts_on_one_key_take_turns_and_a_flood_is_told_to_wait():
    import asyncio

    async def scenario():
        t = LoginThrottle(max_waiting=2)
        inside, most = 0, 0

        async def attempt():
            nonlocal inside, most
            async with t.turn("acct:a@x"):
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        results = await asyncio.gather(*(attempt() for _ in range(6)), return_exceptions=True)
        return most, [r for r in results if isinstance(r, Busy)], t

    most, busy, t = asyncio.run(scenario())
    assert most == 1  # one at a time: parallel connections do not multiply the guessing rate
    assert len(busy) == 3 and all(b.retry_after > 0 for b in busy)  # 1 inside + 2 waiting
    assert t._turns == {}  # nothing left behind


def test_device_cookies_are_bound_to_the_secret_and_the_address():
    secret = b"s" * 32
    value = device_cookie(secret, "Alice@example.com")
    assert device_of(secret, value, "alice@example.com")
    assert device_of(secret, value, "bob@example.com") is None
    assert device_of(b"t" * 32, value, "alice@example.com") is None
    for forged in ("", "x", "a.b", value + "x", "\udcff.\udcff", "a.b.c", None):
        assert device_of(secret, forged, "alice@example.com") is None


def test_reply_fields_quote_and_thread():
    raw = (b"From: Bob <bob@example.com>\r\nTo: alice@example.com, carol@example.org\r\n"
           b"Cc: Alice <ALICE@example.com>\r\nSubject: Re: plans\r\nMessage-ID: <m2@x>\r\n"
           b"References: <m1@x>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nline 1\r\nline 2\r\n")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    r = m.reply_fields(msg, "alice@example.com", reply_all=True)
    assert r["to"] == "Bob <bob@example.com>" and r["cc"] == "carol@example.org"
    assert r["subject"] == "Re: plans"  # not "Re: Re: plans"
    assert r["in_reply_to"] == "<m2@x>" and r["references"] == "<m1@x> <m2@x>"
    assert "> line 1\n> line 2" in r["body"]
    f = m.forward_fields(msg)
    assert f["subject"] == "Fwd: Re: plans" and "Forwarded message" in f["body"]


GREEK_NAME = "Αλέξανδρος Παπαδόπουλος-Κωνσταντινίδης του Γεωργίου"


def test_a_reply_to_a_greek_name_shows_the_name_not_its_encoded_word():
    raw = ("From: =?utf-8?b?" + __import__("base64").b64encode(GREEK_NAME.encode()).decode() +
           "?= <bob@example.com>\r\nTo: Μαρία <maria@example.com>\r\nSubject: x\r\n\r\nhi\r\n")
    msg = email.message_from_bytes(raw.encode(), policy=email.policy.default)
    r = m.reply_fields(msg, "alice@example.com", reply_all=True)
    assert r["to"] == f'"{GREEK_NAME}" <bob@example.com>'
    assert r["cc"] == '"Μαρία" <maria@example.com>'
    assert "=?" not in r["to"] + r["cc"]


def test_greek_names_within_the_typed_limit_are_sent_whole():
    """30 recipients with Greek names are 2,178 characters as typed; as encoded words they were
    4,908, and build_message refused them: "longer than 4000 characters"."""
    pairs = [(GREEK_NAME, f"u{i}@example.com") for i in range(30)]
    to = [m.format_address(p) for p in pairs]
    msg = m.build_message(sender="alice@example.com", to=to, cc=[], bcc=[], subject="s",
                          body="x", attachments=[])
    back = email.message_from_bytes(msg.as_bytes(), policy=m.POLICY)
    assert m._addresses(back, "To") == pairs
    assert max(len(line) for line in msg.as_bytes().split(b"\r\n")) <= 78


def test_a_long_name_folded_into_several_encoded_words_reads_whole():
    """The email package folds a long non-ASCII name into adjacent encoded words and, reading
    them back, keeps a space between them (RFC 2047 6.2: none belongs there): the webmail
    showed "Παπαδόπουλος -Κωνσταντινίδης του Γεωργ ίου"."""
    sent = m.build_message(sender=m.format_address((GREEK_NAME, "bob@example.com")),
                           to=['"Κάποιος, <x@y>" <maria@example.com>'], cc=[], bcc=[],
                           subject="s", body="x", attachments=[])
    assert sent.as_bytes().count(b"=?utf-8?") > 2  # folded into several words
    back = email.message_from_bytes(sent.as_bytes(), policy=m.POLICY)
    assert m._addresses(back, "From") == [(GREEK_NAME, "bob@example.com")]
    # a comma or bracket inside the encoded text stays part of the name
    assert m._addresses(back, "To") == [("Κάποιος, <x@y>", "maria@example.com")]


def test_built_messages_are_complete_and_safe():
    msg = m.build_message(sender="alice@example.com", to=["Bob <bob@example.com>"], cc=[],
                          bcc=["carol@example.com"], subject="Hi", body="Hello\r\nthere",
                          attachments=[m.Upload("../x.html", "text/html", b"<b>x</b>"),
                                       m.Upload("a.bin", "multipart/mixed", b"\x00\x01")],
                          domain="example.com")
    assert msg["Message-ID"].endswith("@example.com>") and msg["Date"]
    names = {p.get_filename(): p.get_content_type() for p in msg.iter_attachments()}
    assert names == {"x.html": "text/html", "a.bin": "application/octet-stream"}
    assert msg["Bcc"] == "carol@example.com"


@pytest.mark.parametrize("answer, error", [
    (b"NO [UNAVAILABLE] too many login attempts", "MailServerError"),
    (b"NO [AUTHENTICATIONFAILED] wrong password", "LoginFailed"),
])
def test_a_login_the_server_did_not_check_is_not_called_a_wrong_password(answer, error):
    """A throttled login (RFC 5530 UNAVAILABLE) says "try again", not "wrong password"."""
    import socket
    import threading

    from maillab.webmail.imapclient import ImapAccess, LoginFailed, MailServerError

    listener = socket.create_server(("127.0.0.1", 0))

    def server():
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK ready\r\n")
            for line in lines:
                tag, command = (line.split() + [b""])[:2]
                if command.upper() == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
                elif command.upper() == b"LOGIN":
                    conn.sendall(tag + b" " + answer + b"\r\n")
                else:  # LOGOUT
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    expected = {"LoginFailed": LoginFailed, "MailServerError": MailServerError}[error]
    with pytest.raises(expected) as raised:
        with ImapAccess("127.0.0.1", listener.getsockname()[1], "alice", "pw", timeout=5):
            pass
    assert type(raised.value) is expected
    if expected is MailServerError:
        assert "try again" in str(raised.value)
    listener.close()
    thread.join(5)
