"""The folder quota (Store.max_messages) and COPY in chunks (issue 10, after the load campaign).

``COPY 1:* INBOX`` with INBOX selected doubles the folder: fourteen such commands made 16,384
messages, and each COPY was done in one turn of the server's loop (13 s for the last one on a
busy machine) while every other session waited.
"""

import base64
import socket

import pytest

import maillab
from maillab.imap.core import COPY_CHUNK
from rawclient import Raw
from test_imap_core import Client, ctx, store  # noqa: F401  (fixtures)

LIMIT = 256 * 1024  # what the server asks data_to_send for at a time (imap.server.OUTPUT_CHUNK)


def fill(folder, n):
    for i in range(n):
        folder.deliver(b"Subject: message %d\r\n\r\nhello\r\n" % i)


def test_copying_the_selected_folder_into_itself_stops_at_the_quota(ctx, store):
    store.max_messages = 20
    inbox = store.account("alice").folder("INBOX")
    fill(inbox, 1)
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    answers = [c.cmd(f"k{i} COPY 1:* INBOX") for i in range(6)]
    assert all(f"k{i} OK [COPYUID".encode() in answers[i] for i in range(4))  # 2, 4, 8, 16
    refusal = answers[4].split(b"\r\n")[-2]
    assert refusal.startswith(b"k4 NO [OVERQUOTA] folder INBOX would hold more than 20 messages")
    assert b"k5 NO [OVERQUOTA]" in answers[5]
    assert len(inbox) == 16  # nothing of a refused COPY was stored


def test_append_to_a_full_folder_is_refused_and_other_folders_take_it(ctx, store):
    store.max_messages = 3
    account = store.account("alice")
    fill(account.folder("INBOX"), 3)
    account.create_folder("Notes")
    c = Client(ctx).login()
    message = b"Subject: one more\r\n\r\nhi\r\n"
    out = c.send(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (len(message), message))
    assert out.startswith(b"a NO [OVERQUOTA] folder INBOX would hold more than 3 messages")
    assert len(account.folder("INBOX")) == 3
    out = c.send(b"b APPEND Notes {%d+}\r\n%s\r\n" % (len(message), message))
    assert out.startswith(b"b OK [APPENDUID")


def test_a_big_copy_is_made_a_chunk_per_turn(ctx, store):
    """Each data_to_send() call (one turn of the server for this session) copies COPY_CHUNK
    messages, so the loop serves the other sessions in between."""
    account = store.account("alice")
    fill(account.folder("INBOX"), 3 * COPY_CHUNK + 5)
    archive = account.create_folder("Archive")
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    c.s.receive_data(b"k COPY 1:* Archive\r\n")
    first = c.s.data_to_send(LIMIT)
    assert b"k OK" not in first and len(archive) == COPY_CHUNK
    rest = []
    while c.s.has_more:
        rest.append(c.s.data_to_send(LIMIT))
    assert len(rest) >= 3 and len(archive) == 3 * COPY_CHUNK + 5
    assert b"k OK [COPYUID %d 1:%d 1:%d] COPY completed" % (
        archive.uidvalidity, 3 * COPY_CHUNK + 5, 3 * COPY_CHUNK + 5) in b"".join(rest)


def test_a_copy_cut_short_by_a_hang_up_leaves_the_destination_as_it_was(ctx, store):
    """RFC 3501 6.4.7: a COPY that does not complete restores the destination."""
    account = store.account("alice")
    fill(account.folder("INBOX"), 2 * COPY_CHUNK)
    archive = account.create_folder("Archive")
    fill(archive, 2)
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    c.s.receive_data(b"k COPY 1:* Archive\r\n")
    c.s.data_to_send(LIMIT)
    assert len(archive) == 2 + COPY_CHUNK
    c.s.connection_lost()
    assert len(archive) == 2 and len(account.folder("INBOX")) == 2 * COPY_CHUNK


def auth_plain(user, password):
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.fixture
def lab():
    with maillab.MailLab(ports="any") as lab:
        yield lab


def smtp(lab, port=None):
    r = Raw.__new__(Raw)
    r.sock = socket.create_connection((lab.host, port or lab.smtp_port), timeout=30)
    r.file = r.sock.makefile("rb")
    r.smtp_reply()
    r.cmd("EHLO sender.example")
    return r


def test_smtp_refuses_a_recipient_whose_inbox_is_full_for_now(lab):
    """RFC 5321: 452 (try later) at RCPT, so the sender keeps the mail; the other recipients
    of the same message get it."""
    lab.store.max_messages = 2
    fill(lab.store.account("bob").folder("INBOX"), 2)
    r = smtp(lab)
    assert r.cmd("MAIL FROM:<stranger@elsewhere.example>")[0] == 250
    code, lines = r.cmd("RCPT TO:<bob@example.com>")
    assert code == 452 and lines[0].startswith("452 4.2.2 <bob@example.com>: mailbox full (hint: ")
    assert r.cmd("RCPT TO:<alice@example.com>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: hello\r\n\r\nhi\r\n.\r\n")
    assert r.smtp_reply()[0] == 250
    r.close()
    assert len(lab.store.account("bob").folder("INBOX")) == 2
    assert len(lab.store.account("alice").folder("INBOX")) == 1


def test_a_big_copy_over_the_wire_completes_in_order(lab):
    """The chunked COPY through the real server: every message, one COPYUID, in order."""
    folder = lab.store.account("alice").folder("INBOX")
    fill(folder, 5 * COPY_CHUNK)
    s = socket.create_connection((lab.host, lab.imap_port), timeout=30)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"a LOGIN alice wonderland\r\nb SELECT INBOX\r\nc COPY 1:* INBOX\r\nd NOOP\r\n")
    answers = []
    while not answers or not answers[-1].startswith(b"d "):
        answers.append(f.readline())
    n = 5 * COPY_CHUNK
    tagged = [a for a in answers if a[:2] in (b"c ", b"d ")]
    assert tagged[0].startswith(b"c OK [COPYUID %d 1:%d %d:%d]" % (folder.uidvalidity, n, n + 1, 2 * n))
    assert tagged[1] == b"d OK NOOP completed\r\n" and len(folder) == 2 * n
    s.close()


def test_copies_into_the_selected_folder_are_recent_for_this_session(ctx, store):
    """The copies' \\Recent is claimed a chunk at a time: the count must come out the same."""
    inbox = store.account("alice").folder("INBOX")
    fill(inbox, 2 * COPY_CHUNK + 1)
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")  # claims the first 2 * COPY_CHUNK + 1
    out = c.cmd("k COPY 1:* INBOX")
    n = 2 * (2 * COPY_CHUNK + 1)
    assert b"* %d EXISTS\r\n* %d RECENT\r\nk OK [COPYUID" % (n, n) in out
    assert b"* SEARCH " + b" ".join(b"%d" % i for i in range(1, n + 1)) in c.cmd("r SEARCH RECENT")
    other = Client(ctx).login()
    assert b"* 0 RECENT" in other.cmd("s SELECT INBOX")  # this session had them


def test_the_webmail_says_when_a_full_sent_folder_kept_no_copy(lab):
    """The mail goes out; the APPEND to Sent is refused (NO [OVERQUOTA]): the page said the
    send failed (502), and a learner sent the mail again."""
    from maillab.webmail.testing import WebClient, fresh_account
    address, password = fresh_account(lab)
    lab.store.max_messages = 1
    sent = lab.store.find_address(address).folder("Sent")
    fill(sent, 1)
    web = WebClient(lab.webmail_url)
    assert web.login(address, password).status_code == 303
    r = web.post("send", {"csrf": web.csrf("compose"), "to": "bob@example.com",
                          "subject": "quota", "body": "hello"})
    assert r.status_code == 303, r.text
    page = web.follow(r).text
    assert "Message sent to bob@example.com" in page and "no copy was kept in Sent" in page
    assert "OVERQUOTA" in page and len(sent) == 1
    lab.settle()
    assert any(b"Subject: quota" in lab.store.account("bob").folder("INBOX").read(m.uid)
               for m in lab.store.account("bob").folder("INBOX").messages())
