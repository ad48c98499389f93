"""The webmail over HTTP: every page and action, and the security rules a webmail must keep.

A real lab runs (ports="any"); requests plays the browser. What the webmail did is checked where
it shows: in the mail store, and in the IMAP/SMTP transcripts the lab's servers recorded.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import html
import itertools
import re
import socket
import time

import pytest

import maillab
from maillab.webmail.testing import (WebClient, csrf_of, fresh_account, links_of, make_message,
                                     tags_of)

PAGE_SIZE = 3
_counter = itertools.count(1)


@pytest.fixture(scope="module")
def lab():
    lab = maillab.MailLab(ports="any", options={"webmail": {"page_size": PAGE_SIZE}}).start()
    yield lab
    lab.stop()


@pytest.fixture
def user(lab):
    """A fresh account of example.com for one test: (address, password)."""
    return fresh_account(lab)


@pytest.fixture
def web(lab):
    return WebClient(lab.webmail_url)


@pytest.fixture
def logged_in(lab, web, user):
    r = web.login(*user)
    assert r.status_code == 303, r.text
    return web


def deliver(lab, address: str, raw: bytes, folder: str = "INBOX", flags=()):
    return lab.store.find_address(address).folder(folder).deliver(raw, flags)


def folder_of(lab, address: str, folder: str = "INBOX"):
    return lab.store.find_address(address).folder(folder)


def parsed(lab, address: str, folder: str = "INBOX"):
    f = folder_of(lab, address, folder)
    return [(info.uid, f.flags_of(info.uid),
             email.message_from_bytes(f.read(info.uid), policy=email.policy.default))
            for info in f.messages()]


def set_cookies(r) -> list[str]:
    return [v for k, v in r.raw.headers.items() if k.lower() == "set-cookie"]


# ----------------------------------------------------------------------------- login and out

def test_root_redirects_to_the_login_page_with_its_three_labelled_parts(lab, web):
    r = web.get("")
    assert r.status_code == 303 and r.headers["Location"] == "login"
    page = web.get("login")
    assert page.status_code == 200
    for text in ("Email Address", "Password", "Log In"):
        assert text in page.text
    assert '<label for="address">' in page.text and 'id="address"' in page.text
    assert '<label for="password">' in page.text and 'type="password"' in page.text
    assert "<script" not in page.text.lower()
    pre = set_cookies(page)
    assert pre and all("HttpOnly" in c and "SameSite=Strict" in c for c in pre)


def test_login_with_the_right_password_makes_a_server_side_session(lab, web, user):
    address, password = user
    since = time.time()
    r = web.login(address, password)
    assert r.status_code == 303 and r.headers["Location"] == "mail"
    cookies = set_cookies(r)
    session = [c for c in cookies if c.startswith(f"maillab_webmail_{lab.webmail_port}=")]
    assert len(session) == 1
    c = session[0]
    assert "HttpOnly" in c and "SameSite=Strict" in c
    assert "Path=" not in c  # scoped by the browser to the app's folder, under any proxy prefix
    value = c.split(";")[0].split("=", 1)[1]
    assert len(value) >= 40 and password not in value and address not in value
    page = web.follow(r)
    assert page.status_code == 200 and address in page.text
    assert password not in page.text and password not in page.url
    # The login was checked by logging in over IMAP, with the user's own credentials.
    imap = lab.transcript("imap", since=since)
    assert any(re.search(rf'LOGIN {address} "?{password}"?$', line) for line in imap.client_lines())
    http = lab.transcript("http", since=since)
    assert "POST /login HTTP/1.1" in http.client_lines()
    assert password not in str(http)


def test_cookies_are_marked_secure_when_the_page_came_over_https(lab, web):
    # On Binder the hub's proxy terminates HTTPS and says so; jupyter-server-proxy passes it on.
    r = web.get("login", headers={"X-Forwarded-Proto": "https"})
    assert set_cookies(r) and all(c.endswith("; Secure") for c in set_cookies(r))
    assert not any("Secure" in c for c in set_cookies(web.get("login")))


def test_wrong_password_is_refused_and_gives_no_session(lab, web, user):
    address, _pw = user
    r = web.login(address, "not-the-password")
    assert r.status_code == 401
    assert "Wrong e-mail address or password" in r.text
    assert not any(c.startswith(f"maillab_webmail_{lab.webmail_port}=") for c in set_cookies(r))
    assert web.get("mail").status_code == 303


def test_login_needs_a_whole_address_and_a_domain_of_the_lab(lab, web):
    r = web.login("alice", "wonderland")
    assert r.status_code == 400 and "whole e-mail address" in r.text
    r = web.login("alice@elsewhere.org", "wonderland")
    assert r.status_code == 401 and "example.com" in r.text


def test_login_form_without_its_token_is_refused(lab, web, user):
    web.get("login")
    r = web.post("login", {"address": user[0], "password": user[1]})
    assert r.status_code == 403 and 'hidden field "csrf"' in html.unescape(r.text)
    r = web.post("login", {"csrf": "forged", "address": user[0], "password": user[1]})
    assert r.status_code == 403 and "had expired" in r.text
    # no cookie at all (curl without a cookie jar): the page says cookies are the slip
    bare = WebClient(lab.webmail_url)
    token = csrf_of(bare.get("login").text)
    bare.http.cookies.clear()
    r = bare.post("login", {"csrf": token, "address": user[0], "password": user[1]})
    assert r.status_code == 403 and "cookie" in r.text and "had expired" not in r.text
    # a token from another browser's pre-session does not fit this browser's cookie
    other = WebClient(lab.webmail_url)
    token = csrf_of(other.get("login").text)
    r = web.post("login", {"csrf": token, "address": user[0], "password": user[1]})
    assert r.status_code == 403


def test_users_of_the_second_domain_log_in_to_their_own_servers(lab, web):
    since = time.time()
    r = web.login("john@example.net", "postman")
    assert r.status_code == 303
    assert lab.transcript("imap:example.net", since=since).client_lines()
    assert not lab.transcript("imap:example.com", since=since).client_lines()


def test_logout_ends_the_session_on_the_server(lab, logged_in):
    web = logged_in
    old_cookies = web.http.cookies.copy()
    token = web.csrf()
    r = web.post("logout", {"csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == "login?bye=1"
    assert "You have logged out" in web.follow(r).text
    # The old cookie is worthless now, even if a browser kept it.
    thief = WebClient(web.base)
    thief.http.cookies.update(old_cookies)
    assert thief.get("mail").status_code == 303


def test_logout_needs_the_csrf_token(lab, logged_in):
    r = logged_in.post("logout", {})
    assert r.status_code == 403
    assert logged_in.get("mail").status_code == 200


# ----------------------------------------------------------------------------- folders and lists

def test_folder_list_shows_unread_counts(lab, logged_in, user):
    address = user[0]
    for i in range(3):
        deliver(lab, address, make_message(to=address, subject=f"unread {i}",
                                           date=f"Tue, 0{i + 2} Jan 2024 10:00:00 +0000"))
    deliver(lab, address, make_message(to=address, subject="read one",
                                       date="Mon, 01 Jan 2024 10:00:00 +0000"), flags=["\\Seen"])
    deliver(lab, address, make_message(to=address, subject="in trash"), folder="Trash")
    page = logged_in.get("mail").text
    assert re.search(r'<span class="fname">Inbox</span>\s*<span class="badge">3<span class="sr"> unread', page)
    assert re.search(r'<span class="fname">Trash</span>\s*<span class="badge">1<', page)
    assert "<title>(3) Inbox" in page
    for name in ("Sent", "Drafts", "Junk", "Trash"):
        assert f'href="mail?f={name}"' in page
    assert page.count('<tr class="unread">') == 3  # the newest three: one page (page_size 3)


def test_message_list_pages_and_sorts_by_date(lab, logged_in, user):
    address = user[0]
    # delivered out of order; the Date header decides
    for day in (3, 1, 7, 5, 2, 6, 4):
        deliver(lab, address, make_message(to=address, subject=f"day {day}",
                                           date=f"Mon, {day:02d} Jan 2024 10:00:00 +0000"))
    def subjects(page):
        return re.findall(r"day (\d)</a>", page)
    p1 = logged_in.get("mail?f=INBOX").text
    assert subjects(p1) == ["7", "6", "5"] and "1–3 of 7" in p1 and "Page 1 of 3" in p1
    assert 'href="mail?f=INBOX&amp;page=2"' in p1
    assert subjects(logged_in.get("mail?f=INBOX&page=2").text) == ["4", "3", "2"]
    p3 = logged_in.get("mail?f=INBOX&page=3").text
    assert subjects(p3) == ["1"] and "7–7 of 7" in p3
    asc = logged_in.get("mail?f=INBOX&sort=date-asc").text
    assert subjects(asc) == ["1", "2", "3"]
    assert subjects(logged_in.get("mail?f=INBOX&sort=date-asc&page=3").text) == ["7"]
    # past the end: an empty page, not an error
    assert subjects(logged_in.get("mail?f=INBOX&page=9").text) == []


def test_unknown_folder_is_a_404_page(lab, logged_in):
    r = logged_in.get("mail?f=NoSuchFolder")
    assert r.status_code == 404 and "NoSuchFolder" in r.text


def test_pages_need_a_session(lab, web):
    for path in ("mail", "read?f=INBOX&uid=1", "body?f=INBOX&uid=1", "part?f=INBOX&uid=1&part=1",
                 "compose"):
        r = web.get(path)
        assert r.status_code == 303 and r.headers["Location"] == "login", path


# ----------------------------------------------------------------------------- reading

def test_reading_a_text_message_shows_it_and_marks_it_read(lab, logged_in, user):
    address = user[0]
    info = deliver(lab, address, make_message(to=address, subject="Plain <news>",
                                              text="Line one\n<b>not bold</b>\n"))
    page = logged_in.get(f"read?f=INBOX&uid={info.uid}")
    assert page.status_code == 200
    assert "Plain &lt;news&gt;" in page.text
    assert '<pre class="text-body">Line one\n&lt;b&gt;not bold&lt;/b&gt;' in page.text
    assert "bob@example.com" in page.text
    assert "\\Seen" in folder_of(lab, address).flags_of(info.uid)
    assert "<iframe" not in page.text


def test_missing_message_is_a_404(lab, logged_in):
    assert logged_in.get("read?f=INBOX&uid=999").status_code == 404
    assert logged_in.get("read?f=INBOX&uid=abc").status_code == 400
    r = logged_in.get("read?f=Gone&uid=1")
    assert r.status_code == 404 and "There is no folder named Gone" in r.text


def test_html_message_is_sanitized_in_a_sandboxed_frame_with_its_own_csp(lab, logged_in, user):
    address = user[0]
    html = ('<p onclick="alert(1)">Hi <b>there</b><script>alert(2)</script>'
            '<img src="http://tracker.example/pixel.gif" alt="pixel">'
            '<a href="javascript:alert(3)">bad</a> <a href="https://example.org/">good</a></p>')
    info = deliver(lab, address, make_message(to=address, subject="html", text="plain version",
                                              html=html))
    page = logged_in.get(f"read?f=INBOX&uid={info.uid}").text
    frame = re.search(r'<iframe class="body-frame" src="([^"]+)"[^>]*'
                      r'sandbox="allow-popups allow-popups-to-escape-sandbox"', page, re.S)
    assert frame, page
    assert "Remote images in this message were blocked" in page
    assert "Show as plain text" in page
    body_url = frame.group(1).replace("&amp;", "&")
    body = logged_in.get(body_url)
    csp = body.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "img-src 'self' data:;" in csp
    assert "script-src" not in csp  # nothing allowed: default-src 'none' covers it
    text = body.text
    assert "<b>there</b>" in text and 'href="https://example.org/"' in text
    for bad in ("<script", "onclick", "javascript:", "tracker.example"):
        assert bad not in text
    # Allowed for this message: the remote image comes back, and the CSP lets it load.
    shown = logged_in.get(f"body?f=INBOX&uid={info.uid}&images=1")
    assert "http://tracker.example/pixel.gif" in shown.text
    assert "img-src 'self' data: http: https:" in shown.headers["Content-Security-Policy"]
    assert "<script" not in shown.text
    # The plain-text view of the same message
    plain = logged_in.get(f"read?f=INBOX&uid={info.uid}&view=text").text
    assert "plain version" in plain and "<iframe" not in plain


def test_attachments_are_listed_and_downloaded_with_safe_names(lab, logged_in, user):
    address = user[0]
    pdf = b"%PDF-1.4 pretend\x00\x01\x02"
    html_att = b"<script>alert(document.cookie)</script>"
    raw = make_message(to=address, subject="files", attachments=[
        ("report.pdf", "application/pdf", pdf),
        ("../../etc/passwd", "text/plain", b"root:x:0:0\n"),
        ("invoice\u202egpj.exe", "application/octet-stream", b"MZ"),
        ("page.html", "text/html", html_att),
    ])
    info = deliver(lab, address, raw)
    page = logged_in.get(f"read?f=INBOX&uid={info.uid}").text
    parts = dict((name, href.replace("&amp;", "&")) for href, name in
                 re.findall(r'<a href="(part\?[^"]+)" download="[^"]*">([^<]+)</a>', page))
    assert set(parts) == {"report.pdf", "passwd", "invoicegpj.exe", "page.html"}, parts
    r = logged_in.get(parts["report.pdf"])
    assert r.status_code == 200 and r.content == pdf
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Content-Disposition"].startswith('attachment; filename="report.pdf"')
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in r.headers["Content-Security-Policy"]
    r = logged_in.get(parts["passwd"])
    assert 'filename="passwd"' in r.headers["Content-Disposition"] and r.content == b"root:x:0:0\n"
    r = logged_in.get(parts["invoicegpj.exe"])
    assert "\u202e" not in r.headers["Content-Disposition"]
    # An HTML attachment is a download, never a page of the webmail's origin.
    r = logged_in.get(parts["page.html"])
    assert r.headers["Content-Type"] == "application/octet-stream" and r.content == html_att
    assert logged_in.get(f"part?f=INBOX&uid={info.uid}&part=9").status_code == 404
    assert logged_in.get(f"part?f=INBOX&uid={info.uid}&part=../1").status_code == 400


def test_inline_cid_image_is_embedded_as_data_url(lab, logged_in, user):
    address = user[0]
    from email.message import EmailMessage
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360000002000100ffff03000006000557bfabd4"
                        "0000000049454e44ae426082")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "bob@example.com", address, "inline"
    msg.set_content("text")
    msg.add_alternative('<p>logo: <img src="cid:logo@x" alt="logo"></p>', subtype="html")
    msg.get_payload()[1].add_related(png, "image", "png", cid="<logo@x>")
    info = deliver(lab, address, msg.as_bytes())
    page = logged_in.get(f"read?f=INBOX&uid={info.uid}").text
    assert "Attachments" not in page  # the inline image is part of the text, not an attachment
    body = logged_in.get(f"body?f=INBOX&uid={info.uid}").text
    assert 'src="data:image/png;base64,' in body


# ----------------------------------------------------------------------------- actions

def test_mark_unread_and_read_from_the_list(lab, logged_in, user):
    address = user[0]
    a = deliver(lab, address, make_message(to=address, subject="a"), flags=["\\Seen"])
    b = deliver(lab, address, make_message(to=address, subject="b"), flags=["\\Seen"])
    token = logged_in.csrf()
    r = logged_in.post("action", {"csrf": token, "f": "INBOX", "op": "unread",
                                  "uid": [a.uid, b.uid]})
    assert r.status_code == 303 and r.headers["Location"] == "mail?f=INBOX"
    assert "2 messages marked as unread" in logged_in.follow(r).text
    f = folder_of(lab, address)
    assert "\\Seen" not in f.flags_of(a.uid) and "\\Seen" not in f.flags_of(b.uid)
    r = logged_in.post("action", {"csrf": token, "f": "INBOX", "op": "read", "uid": [b.uid]})
    assert "\\Seen" in f.flags_of(b.uid) and "\\Seen" not in f.flags_of(a.uid)


def test_delete_moves_to_trash_and_deleting_there_is_for_good(lab, logged_in, user):
    address = user[0]
    info = deliver(lab, address, make_message(to=address, subject="goodbye"))
    token = logged_in.csrf()
    r = logged_in.post("action", {"csrf": token, "f": "INBOX", "op": "delete", "uid": info.uid,
                                  "from": "read"})
    assert r.status_code == 303
    assert "moved to Trash" in logged_in.follow(r).text
    assert [m.subject for m in lab.mailbox(address)] == []
    trash = lab.mailbox(address, "Trash")
    assert [m.subject for m in trash] == ["goodbye"]
    page = logged_in.get("mail?f=Trash").text
    assert "Delete for good" in page
    r = logged_in.post("action", {"csrf": token, "f": "Trash", "op": "delete",
                                  "uid": trash[0].uid})
    assert "deleted for good" in logged_in.follow(r).text
    assert lab.mailbox(address, "Trash") == []


def test_actions_need_selected_messages_and_a_known_operation(lab, logged_in):
    token = logged_in.csrf()
    r = logged_in.post("action", {"csrf": token, "f": "INBOX", "op": "delete"})
    assert "Select one or more messages first" in logged_in.follow(r).text
    r = logged_in.post("action", {"csrf": token, "f": "INBOX", "op": "format-disk", "uid": 1})
    assert r.status_code == 400


# ----------------------------------------------------------------------------- writing

def test_compose_page_has_labelled_fields_and_a_file_input(lab, logged_in, user):
    page = logged_in.get("compose").text
    for field in ("to", "cc", "bcc", "subject", "body", "attachment"):
        assert f'<label for="{field}">' in page and f'id="{field}"' in page
    assert 'enctype="multipart/form-data"' in page and 'type="file"' in page
    assert user[0] in page


def test_send_to_another_domain_with_attachment_and_keep_a_copy_in_sent(lab, logged_in, user):
    address = user[0]
    since = time.time()
    subject = f"Hello John {time.time()}"
    token = logged_in.csrf("compose")
    r = logged_in.post("send", {"csrf": token, "to": "John <john@example.net>", "cc": "",
                                "bcc": "maria@example.net", "subject": subject,
                                "body": "See the attached notes.\nAlice"},
                       files=[("attachment", ("notes.txt", b"1. SMTP\n2. IMAP\n", "text/plain"))])
    assert r.status_code == 303, r.text
    assert "Message sent to john@example.net, maria@example.net" in logged_in.follow(r).text
    lab.settle()
    got = [m for _u, _f, m in parsed(lab, "john@example.net") if m["Subject"] == subject]
    assert len(got) == 1
    msg = got[0]
    assert msg["From"] == address and msg["Bcc"] is None
    assert "See the attached notes." in msg.get_body(("plain",)).get_content()
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "notes.txt"
    assert att.get_content().replace("\r\n", "\n") == "1. SMTP\n2. IMAP\n"
    assert any(m["Subject"] == subject for _u, _f, m in parsed(lab, "maria@example.net"))
    sent = [(flags, m) for _u, flags, m in parsed(lab, address, "Sent") if m["Subject"] == subject]
    assert len(sent) == 1 and "\\Seen" in sent[0][0]
    assert sent[0][1]["Bcc"] == "maria@example.net"  # only the sender's copy shows Bcc
    assert sent[0][1]["Message-ID"] == msg["Message-ID"]
    # Both halves are in the transcript: SMTP submission with AUTH, then IMAP APPEND.
    smtp = lab.transcript("submission:example.com", since=since)  # 587, after STARTTLS
    lines = [l.upper() for l in smtp.client_lines()]  # smtplib writes "ehlo", "mail FROM:"
    assert "EHLO WEBMAIL.EXAMPLE.COM" in lines and any(l.startswith("AUTH ") for l in lines)
    assert f"MAIL FROM:<{address.upper()}>" in " ".join(lines)
    imap = lab.transcript("imap:example.com", since=since).client_lines()
    assert any(re.search(r'APPEND "Sent" \(\\Seen\)', l) for l in imap)


def test_greek_names_in_to_arrive_as_every_mail_reader_reads_them(lab, logged_in):
    """Sent to three Greek names, the To header lost the second one for Python's own parser
    (the email package had folded the comma into an encoded word) and a long name lost its
    spaces for RFC 2047 readers; the reply form showed =?utf-8?b?...?= to the pupil."""
    names = ["Μαρία Παπαδοπούλου", "Γιώργος Νικολάου",
             "Αλέξανδρος Παπαδόπουλος-Κωνσταντινίδης του Γεωργίου"]
    to = ", ".join(f'"{n}" <{a}>' for n, a in zip(names, ["maria@example.net", "john@example.net",
                                                          "bob@example.com"]))
    subject = f"Καλημέρα {time.time()}"
    r = logged_in.post("send", {"csrf": logged_in.csrf("compose"), "to": to, "subject": subject,
                                "body": "Γεια!"})
    assert r.status_code == 303, r.text
    lab.settle()
    [raw] = [f.read(i.uid) for f in [folder_of(lab, "maria@example.net", "INBOX")]
             for i in f.messages() if subject.encode() in f.read(i.uid) or
             email.message_from_bytes(f.read(i.uid), policy=email.policy.default)["Subject"] == subject]
    header = email.message_from_bytes(raw, policy=email.policy.compat32)["To"]
    decoded = str(email.header.make_header(email.header.decode_header(header)))  # RFC 2047
    assert [n for n, _a in email.utils.getaddresses([decoded])] == names
    python = email.message_from_bytes(raw, policy=email.policy.default)["To"].addresses
    assert [a.addr_spec for a in python] == ["maria@example.net", "john@example.net",
                                            "bob@example.com"]
    # the webmail shows them whole, and a reply to all starts with the names as typed
    [uid] = [i.uid for i in folder_of(lab, "maria@example.net", "INBOX").messages()
             if folder_of(lab, "maria@example.net", "INBOX").read(i.uid) == raw]
    maria = WebClient(lab.webmail_url)
    [account] = [a for a in lab.accounts if a.login == "maria"]
    assert maria.login(account.address, account.password).status_code == 303
    assert names[2] in html.unescape(maria.get(f"read?f=INBOX&uid={uid}").text)
    page = html.unescape(maria.get(f"compose?f=INBOX&uid={uid}&mode=replyall").text)
    assert "=?utf-8?" not in page and f'"{names[2]}" <bob@example.com>' in page


def test_too_big_an_upload_gets_a_clear_answer(lab, logged_in):
    limit = lab.size_limit * 3 // 4
    token = logged_in.csrf("compose")
    r = logged_in.post("send", {"csrf": token, "to": "bob@example.com", "subject": "big"},
                       files=[("attachment", ("big.bin", b"x" * (limit + 1), "application/octet-stream"))])
    assert r.status_code == 413 and "too much to send at once" in r.text
    assert f"{limit / 1024 / 1024:.1f} MB" in r.text
    assert logged_in.get("mail").status_code == 200  # the session is fine


def test_send_with_a_bad_address_shows_the_form_again(lab, logged_in):
    token = logged_in.csrf("compose")
    r = logged_in.post("send", {"csrf": token, "to": "not an address", "subject": "x",
                                "body": "kept text"})
    assert r.status_code == 400
    assert "This is not an e-mail address" in r.text and "kept text" in r.text
    r = logged_in.post("send", {"csrf": token, "to": "", "subject": "x", "body": ""})
    assert r.status_code == 400 and "at least one address" in r.text


def test_a_long_field_that_is_no_address_list_is_refused_as_such(lab, logged_in):
    # (bench/fuzz.py: 3,600 characters of non-ASCII text in Cc kept the webmail folding them,
    # as a header, for 1.6 s of CPU before the address check refused them)
    token = logged_in.csrf("compose")
    for cc in ("de=lete" + "te\ufffd" * 1200, " ".join(["αβγδ"] * 800),
               "x@example.net (" + "(" * 2000):
        r = logged_in.post("send", {"csrf": token, "to": "bob@example.com", "cc": cc,
                                    "subject": "x", "body": "kept text"})
        assert r.status_code == 400
        assert "This is not an e-mail address" in r.text and "kept text" in r.text
    r = logged_in.post("send", {"csrf": token, "to": "bob@example.com",
                                "cc": "Γιώργος Παπαδόπουλος <g@example.net>", "subject": "x"})
    assert "This is not an e-mail address" not in r.text  # a name in Greek is fine


def test_send_to_an_unknown_local_user_reports_the_servers_reply(lab, logged_in):
    token = logged_in.csrf("compose")
    r = logged_in.post("send", {"csrf": token, "to": "nobody@example.com", "subject": "x",
                                "body": "x"})
    assert r.status_code == 502
    assert "550" in r.text and "nobody@example.com" in r.text


def test_reply_quotes_threads_and_marks_answered(lab, logged_in, user):
    address = user[0]
    original = deliver(lab, address, make_message(
        sender="Bob <bob@example.com>", to=f"{address}, maria@example.net", subject="Lunch?",
        text="Shall we have lunch?\nBob", message_id="<lunch@example.com>"))
    page = logged_in.get(f"compose?f=INBOX&uid={original.uid}&mode=reply").text
    assert 'value="Re: Lunch?"' in page and 'value="Bob &lt;bob@example.com&gt;"' in page
    assert "&gt; Shall we have lunch?" in page and "Bob wrote:" in page
    assert 'name="in_reply_to" value="&lt;lunch@example.com&gt;"' in page
    all_page = logged_in.get(f"compose?f=INBOX&uid={original.uid}&mode=replyall").text
    assert 'id="cc" name="cc" value="maria@example.net"' in all_page
    token = csrf_of(page)
    r = logged_in.post("send", {"csrf": token, "to": "bob@example.com", "subject": "Re: Lunch?",
                                "body": "Yes!", "in_reply_to": "<lunch@example.com>",
                                "references": "<lunch@example.com>", "mode": "reply",
                                "f": "INBOX", "uid": original.uid})
    assert r.status_code == 303
    assert "\\Answered" in folder_of(lab, address).flags_of(original.uid)
    reply = [m for _u, _f, m in parsed(lab, "bob@example.com") if m["Subject"] == "Re: Lunch?"][-1]
    assert reply["In-Reply-To"] == "<lunch@example.com>"
    assert reply["References"] == "<lunch@example.com>"


def test_forward_sends_the_original_attachments_along(lab, logged_in, user):
    address = user[0]
    original = deliver(lab, address, make_message(
        subject="Slides", text="Here they are.", attachments=[("slides.pdf", "application/pdf", b"%PDF-slides")]))
    page = logged_in.get(f"compose?f=INBOX&uid={original.uid}&mode=forward").text
    assert 'value="Fwd: Slides"' in page and "Forwarded message" in page and "slides.pdf" in page
    r = logged_in.post("send", {"csrf": csrf_of(page), "to": "maria@example.net",
                                "subject": "Fwd: Slides", "body": "FYI\n", "mode": "forward",
                                "f": "INBOX", "uid": original.uid})
    assert r.status_code == 303
    lab.settle()
    fwd = [m for _u, _f, m in parsed(lab, "maria@example.net") if m["Subject"] == "Fwd: Slides"][-1]
    atts = {a.get_filename(): a.get_content() for a in fwd.iter_attachments()}
    assert atts == {"slides.pdf": b"%PDF-slides"}
    assert "$Forwarded" in folder_of(lab, address).flags_of(original.uid)


# ----------------------------------------------------------------------------- security rules

def test_every_form_post_needs_the_sessions_csrf_token(lab, logged_in, user):
    address = user[0]
    info = deliver(lab, address, make_message(to=address, subject="keep me"))
    for path, data in [("action", {"f": "INBOX", "op": "delete", "uid": info.uid}),
                       ("send", {"to": "bob@example.com", "subject": "x", "body": "x"}),
                       ("logout", {})]:
        assert logged_in.post(path, data).status_code == 403, path
        assert logged_in.post(path, {**data, "csrf": "x" * 43}).status_code == 403, path
    # another user's valid token does not work in this session
    other = WebClient(lab.webmail_url)
    assert other.login("bob@example.com", "builder").status_code == 303
    foreign = other.csrf()
    assert logged_in.post("action", {"csrf": foreign, "f": "INBOX", "op": "delete",
                                     "uid": info.uid}).status_code == 403
    assert [m.subject for m in lab.mailbox(address)] == ["keep me"]
    assert logged_in.get("mail").status_code == 200  # still logged in


def test_every_page_sends_a_restrictive_csp_and_uses_only_relative_links(lab, logged_in, user):
    address = user[0]
    info = deliver(lab, address, make_message(to=address, subject="links", html="<p>x</p>",
                                              attachments=[("a.txt", "text/plain", b"a")]))
    pages = ["mail", "mail?f=Sent", f"read?f=INBOX&uid={info.uid}", "compose",
             f"compose?f=INBOX&uid={info.uid}&mode=reply"]
    for path in pages:
        r = logged_in.get(path)
        assert r.status_code == 200, path
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert "form-action 'self'" in csp and "base-uri 'none'" in csp
        assert "frame-ancestors" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
        assert "script" not in tags_of(r.text), path
        for tag, attr, value in links_of(r.text):
            # relative, so that the pages work under jupyter-server-proxy's /proxy/<port>/
            assert not value.startswith(("/", "http:", "https:")), (path, tag, attr, value)
    anonymous = WebClient(lab.webmail_url).get("login")
    for tag, attr, value in links_of(anonymous.text):
        assert not value.startswith(("/", "http:", "https:")), (tag, attr, value)


def test_password_never_leaves_the_server(lab, web, user):
    address, password = user
    r = web.login(address, password)
    seen = []
    page = web.follow(r)
    seen += [page.url, page.text, *set_cookies(r)]
    info = deliver(lab, address, make_message(to=address, subject="p"))
    for path in (f"read?f=INBOX&uid={info.uid}", "compose", f"compose?f=INBOX&uid={info.uid}&mode=reply"):
        p = web.get(path)
        seen += [p.url, p.text, *p.headers.values()]
    assert not any(password in s for s in seen)


def test_static_files_are_served_and_cannot_escape_their_folder(lab, web):
    r = web.get("static/style.css")
    assert r.status_code == 200 and "text/css" in r.headers["Content-Type"]
    assert web.get("static/../app.py").status_code in (403, 404)
    assert web.get("static/%2e%2e/app.py").status_code in (403, 404)


def test_failed_logins_slow_down_but_never_lock_the_right_password_out():
    # (the IMAP server's own slowdown of failures is off: it is not what this test is about)
    lab = maillab.MailLab(ports="any", options={"login_guard": {"base": 0, "cap": 0}, "webmail": {
        "throttle": {"free": 2, "base": 0.3, "cap": 0.3}}}).start()
    try:
        attacker = WebClient(lab.webmail_url)
        for _ in range(2):
            assert attacker.login("alice@example.com", "guess").status_code == 401
        t = time.perf_counter()
        assert attacker.login("alice@example.com", "guess").status_code == 401
        assert time.perf_counter() - t >= 0.3  # the third failure waited before its answer
        # Five failures used to lock alice out for 5 minutes; now her password is only slower.
        for _ in range(3):
            attacker.login("alice@example.com", "guess")
        owner = WebClient(lab.webmail_url)
        t = time.perf_counter()
        r = owner.login("alice@example.com", "wonderland")
        assert r.status_code == 303 and time.perf_counter() - t >= 0.3
        assert "Retry-After" not in r.headers
    finally:
        lab.stop()


def test_the_owners_own_browser_is_not_slowed_by_an_attackers_failures():
    lab = maillab.MailLab(ports="any", options={"webmail": {
        "throttle": {"free": 1, "base": 30, "cap": 30}}}).start()
    try:
        owner = WebClient(lab.webmail_url)
        r = owner.login("bob@example.com", "builder")
        assert r.status_code == 303
        device = [c for c in set_cookies(r) if "_device=" in c]
        assert device and "HttpOnly" in device[0] and "SameSite=Strict" in device[0]
        owner.post("logout", {"csrf": owner.csrf()})
        # A guess from another browser: now bob's account makes unknown browsers wait 30 s.
        assert WebClient(lab.webmail_url).login("bob@example.com", "guess").status_code == 401
        t = time.perf_counter()
        assert owner.login("bob@example.com", "builder").status_code == 303
        assert time.perf_counter() - t < 10  # (generous) no 30-second wait for the owner
    finally:
        lab.stop()


def test_many_failures_from_127_0_0_1_do_not_lock_out_other_browsers(lab):
    # Behind jupyter-server-proxy every browser is 127.0.0.1: twenty failures from one address
    # used to answer 429 to everyone, for five minutes. (Failures for another domain: the lab's
    # IMAP server, which slows failures from one address down too, is not asked.)
    for i in range(21):
        assert WebClient(lab.webmail_url).login(f"nobody{i}@elsewhere.org", "x").status_code == 401
    r = WebClient(lab.webmail_url).login("maria@example.net", "sunflower")
    assert r.status_code == 303


def test_parallel_guesses_on_one_account_take_turns():
    import concurrent.futures
    lab = maillab.MailLab(ports="any", options={"webmail": {
        "throttle": {"free": 1, "base": 0.2, "cap": 0.2, "max_waiting": 10}}}).start()
    try:
        clients = [WebClient(lab.webmail_url) for _ in range(6)]
        for c in clients:
            c.get("login")
        clients[0].login("john@elsewhere.org", "guess")  # the first failure is free
        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda c: c.login("john@elsewhere.org", "guess").status_code,
                                  clients))
        assert codes == [401] * 6
        # one at a time, each after its 0.2 s wait: parallel connections gain nothing
        assert time.perf_counter() - t >= 6 * 0.2
    finally:
        lab.stop()


def test_sessions_expire_when_idle(lab):
    from maillab.webmail.security import SessionStore
    store = SessionStore(idle=0.05)
    s = store.create("a@example.com", "pw", "example.com")
    assert store.get(s.id) is s
    time.sleep(0.1)
    assert store.get(s.id) is None


def test_every_visible_string_goes_through_the_translation_function(lab, user, monkeypatch):
    """A pseudo-translation marks every string that passes through _(); nothing else may show."""
    from html.parser import HTMLParser

    from maillab.webmail import app, message
    def pseudo(text):
        return "\u27e6" + text + "\u27e7"
    for module in (app, message):
        monkeypatch.setattr(module, "_", pseudo)
    address = user[0]
    info = deliver(lab, address, make_message(to=address, subject="S1", sender="B <b@example.com>",
                                              attachments=[("f.txt", "text/plain", b"x")]))
    web = WebClient(lab.webmail_url)
    pages = [web.get("login").text]
    web.login(*user)
    pages += [web.get(p).text for p in ("mail", f"read?f=INBOX&uid={info.uid}", "compose",
                                        f"compose?f=INBOX&uid={info.uid}&mode=forward",
                                        "mail?f=Nope")]

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.out = [], []

        def handle_starttag(self, tag, attrs):
            if tag not in ("input", "br", "meta", "link"):
                self.stack.append(tag)
            for name, value in attrs:
                if name in ("title", "aria-label", "placeholder") and value:
                    self.out.append(value)

        def handle_endtag(self, tag):
            if self.stack and self.stack[-1] == tag:
                self.stack.pop()

        def handle_data(self, data):
            if "textarea" not in self.stack and "pre" not in self.stack and data.strip():
                self.out.append(data.strip())

    data = {address, "S1", "B", "b@example.com", "B <b@example.com>", "f.txt", "text/plain",
            "Nope", "INBOX"}
    untranslated = set()
    for page in pages:
        parser = Text()
        parser.feed(page)
        for text in parser.out:
            rest = text
            for d in sorted(data, key=len, reverse=True):
                rest = rest.replace(d, " ")
            while True:  # translations can nest: _("{0} of {1}").format(_("Inbox"), ...)
                shorter = re.sub("\u27e6[^\u27e6\u27e7]*\u27e7", " ", rest)
                if shorter == rest:
                    break
                rest = shorter
            rest = re.sub(r"[\d:.,\-–()/<>@ ]+|✉|▼|▲|●|📎|‹|›", " ", rest)
            for word in rest.split():
                if re.search("[A-Za-z]", word):
                    untranslated.add((word, text))
    assert untranslated == set()


# ----------------------------------------------------------------------------- the lab's side

def test_webmail_url_and_show_webmail_outside_jupyter(lab):
    assert lab.webmail_url == f"http://127.0.0.1:{lab.webmail_port}/"
    view = lab.show_webmail()
    assert f'<iframe src="http://127.0.0.1:{lab.webmail_port}/"' in view._repr_html_()
    assert "webmail" in repr(lab).lower() and str(lab.webmail_port) in repr(lab)
    assert "Webmail" in lab._repr_html_()


def test_proxy_path_inside_a_jupyter_kernel():
    from maillab.webmail.location import jupyter_base_url, webmail_url
    hub = {"JUPYTERHUB_SERVICE_PREFIX": "/user/ana/"}
    assert jupyter_base_url(environ=hub) == "/user/ana/"
    assert webmail_url(8025, kernel=True, environ=hub) == "/user/ana/proxy/8025/"
    servers = [{"pid": 11, "base_url": "/a/"}, {"pid": 22, "base_url": "/"}]
    assert jupyter_base_url(environ={}, servers=servers, parent_pid=22) == "/"
    assert jupyter_base_url(environ={}, servers=servers, parent_pid=33) is None
    assert jupyter_base_url(environ={}, servers=servers[:1], parent_pid=33) == "/a/"
    assert webmail_url(8025, kernel=True, environ={}, servers=[], parent_pid=1) == \
        "http://127.0.0.1:8025/"
    assert webmail_url(8025, kernel=False) == "http://127.0.0.1:8025/"


def test_stopping_the_lab_closes_the_webmail():
    lab = maillab.MailLab(ports="any").start()
    port = lab.webmail_port
    web = WebClient(lab.webmail_url)
    assert web.login("alice@example.com", "wonderland").status_code == 303
    t = time.perf_counter()
    lab.stop()
    assert time.perf_counter() - t < 5
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_strict_lab_gets_tls_from_the_webmail_before_any_password():
    lab = maillab.MailLab(ports="any", strict=True).start()
    try:
        web = WebClient(lab.webmail_url)
        assert web.login("alice@example.com", "wonderland").status_code == 303
        r = web.post("send", {"csrf": web.csrf("compose"), "to": "bob@example.com",
                              "subject": "over TLS", "body": "hi"})
        assert r.status_code == 303, r.text
        assert [m.subject for m in lab.mailbox("bob@example.com")] == ["over TLS"]
        for service, login in (("imap", " LOGIN "), ("smtp", "AUTH ")):
            for session in lab.transcript(service).sessions():
                text = [(l.who, l.text) for l in session]
                logins = [i for i, (who, t) in enumerate(text) if who == "C" and login in t]
                tls = [i for i, (who, t) in enumerate(text) if t.startswith("TLS established")]
                assert logins and tls and tls[0] < logins[0], (service, text)
    finally:
        lab.stop()


def test_python_m_maillab_serve_serves_the_webmail():
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "maillab", "serve", "--ports", "any"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out = []
        while "ready" not in (line := proc.stdout.readline()):
            assert line, proc.stderr.read()
            out.append(line)
        line = next(l for l in out if l.strip().startswith("WEBMAIL"))
        port = int(line.split("port")[1].split()[0])
        web = WebClient(f"http://127.0.0.1:{port}/")
        assert web.login("john@example.net", "postman").status_code == 303
        assert "john@example.net" in web.get("mail").text
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0


def test_webmail_port_is_8025_by_default_and_any_when_taken():
    assert maillab.MailLab()._wanted_port("webmail", 0) == 8025
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with maillab.MailLab(ports={"webmail": busy}) as lab:
            assert lab.webmail_port != busy
            with socket.create_connection(("127.0.0.1", lab.webmail_port), timeout=5):
                pass
