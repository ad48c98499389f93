"""The webmail is a plain IMAP client: the same pages and actions work in front of Dovecot.

A private Dovecot (the reference IMAP server, see facts.md) holds the mailbox; the lab's SMTP
server takes the mail the webmail sends. What the webmail did is checked on Dovecot with imaplib.
"""

from __future__ import annotations

import email
import email.policy
import os
import re

import pytest

import maillab
from conftest import require_root, require_tool
from maillab.imap.testing import Dovecot
from maillab.webmail import Backend
from maillab.webmail.testing import StandaloneWebmail, WebClient, make_message


@pytest.fixture(scope="module")
def setup():
    require_tool("dovecot")
    require_root("the reference Dovecot must start as root (it then runs as nobody)")
    lab = maillab.MailLab(ports="any", accounts=[
        maillab.LabAccount("alice", "alice-pw", "alice@example.com", "example.com")]).start()
    dovecot = Dovecot()
    backend = Backend(dovecot.host, dovecot.port, "127.0.0.1", lab.smtp_port)
    webmail = StandaloneWebmail(backend, domains=["example.com"], page_size=2)
    try:
        yield dovecot, lab, webmail
    finally:
        webmail.close()
        dovecot.close()
        lab.stop()


def imap(dovecot):
    m = dovecot.connect()
    m.login("alice@example.com", "alice-pw")  # the mailbox the webmail's login opens
    return m


def flags_of(dovecot, folder: str) -> dict[str, set]:
    """Subject -> flags of every message in a Dovecot folder."""
    m = imap(dovecot)
    try:
        m.select(f'"{folder}"', readonly=True)
        typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        out = {}
        if data and data[0] is None:
            return out
        for i in range(0, len(data), 2):
            head, hdr = data[i]
            flags = set(re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split())
            subject = email.message_from_bytes(hdr, policy=email.policy.default)["Subject"]
            out[str(subject)] = flags
        return out
    finally:
        m.logout()


def test_the_webmail_in_front_of_dovecot(setup):
    dovecot, lab, webmail = setup
    m = imap(dovecot)
    for day, subject in ((1, "oldest"), (2, "middle"), (3, "newest")):
        raw = make_message(to="alice@example.com", subject=subject,
                           date=f"Mon, 0{day} Jan 2024 10:00:00 +0000",
                           attachments=[("a.txt", "text/plain", b"hello")] if day == 2 else ())
        assert m.append("INBOX", None, None, raw)[0] == "OK"
    m.logout()
    web = WebClient(webmail.url)
    assert web.login("alice@example.com", "alice-pw").status_code == 303
    page = web.get("mail").text
    assert re.search(r'Inbox</span>\s*<span class="badge">3<', page)
    assert re.findall(r"</span>(\w+)</a>", page) == ["newest", "middle"]  # page 1 of 2, by date
    assert "oldest" in web.get("mail?f=INBOX&page=2").text
    # read (marks \Seen on Dovecot), attachment download
    uid = re.search(r'read\?f=INBOX&amp;uid=(\d+)">[^<]*<span[^>]*>[^<]*</span><span class="sr">'
                    r'[^<]*</span>middle', page).group(1)
    msg = web.get(f"read?f=INBOX&uid={uid}").text
    assert "a.txt" in msg and "\\Seen" in flags_of(dovecot, "INBOX")["middle"]
    part = re.search(r'href="(part\?[^"]+)"', msg).group(1).replace("&amp;", "&")
    assert web.get(part).content == b"hello"
    # mark unread, delete to Trash (Dovecot's MOVE), send (lab SMTP) with the copy in Dovecot's Sent
    token = web.csrf()
    web.post("action", {"csrf": token, "f": "INBOX", "op": "unread", "uid": uid})
    assert "\\Seen" not in flags_of(dovecot, "INBOX")["middle"]
    web.post("action", {"csrf": token, "f": "INBOX", "op": "delete", "uid": uid})
    assert "middle" not in flags_of(dovecot, "INBOX") and "middle" in flags_of(dovecot, "Trash")
    r = web.post("send", {"csrf": token, "to": "alice@example.com", "subject": "via lab SMTP",
                          "body": "hello"})
    assert r.status_code == 303, r.text
    assert flags_of(dovecot, "Sent")["via lab SMTP"] >= {"\\Seen"}
    assert [s.subject for s in lab.mailbox("alice")] == ["via lab SMTP"]
    # last (Dovecot slows down logins from an address after a failure)
    assert WebClient(webmail.url).login("alice@example.com", "wrong").status_code == 401
