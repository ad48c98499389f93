"""Session cells (%%smtp, %%pop3, %%imap, %%http): the readers and drivers without sockets, then
real sessions against the lab, a private Dovecot (IMAP, POP3) and a bare aiosmtpd (SMTP), the
failures a learner meets, and the magics inside IPython and a real kernel."""

from __future__ import annotations

import base64
import contextlib
import gc
import http.server
import itertools
import signal
import socket
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import maillab
import maillab.lab as labmodule
from conftest import require_root, require_tool
from maillab.sessions import close_session, open_sessions, run_session
from maillab.sessions.drivers import HttpDriver, ImapDriver, Pop3Driver, SmtpDriver
from maillab.i18n import _ as i18n_gettext, language as i18n_language
from maillab.sessions.replies import HttpReply, ImapReply, Pop3Reply, SmtpReply

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def lab():
    lab = maillab.MailLab(ports="any").start()
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(autouse=True)
def no_session_left_open():
    yield
    for name in list(open_sessions()):
        close_session(name)


def plain(text: str) -> str:
    """Base64 of AUTH PLAIN's answer (no authorization identity)."""
    return base64.b64encode(text.encode()).decode()


# =========================================================================== readers (no sockets)
TWO_ANSWERS = [
    (lambda: SmtpReply(), b"250-mail.example.com\r\n250-SIZE 100\r\n250 HELP\r\n", b"354 go\r\n"),
    (lambda: Pop3Reply(multi_line=True),
     b"+OK 2 messages\r\nSubject: x\r\n\r\n..a dot\r\n.\r\n", b"+OK bye\r\n"),
    (lambda: Pop3Reply(multi_line=True), b"-ERR no such message\r\n", b"+OK\r\n"),
    # A literal may hold anything, even a line that looks like the tagged completion.
    (lambda: ImapReply(b"a5"),
     b"* 1 FETCH (BODY[] {24}\r\na5 OK not the end\r\nxx\r\n)\r\n* 1 EXISTS\r\na5 OK done\r\n",
     b"* 2 EXISTS\r\n"),
    (lambda: ImapReply(b"a1"), b"+ Ready for literal data\r\n", b"a1 OK\r\n"),
    (lambda: HttpReply(), b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nab\r\n\r\nc", b"HTTP/1.1 2"),
    (lambda: HttpReply(),
     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n3;x=y\r\n\r\n0\r\n0\r\nTrailer: t\r\n\r\n", b"next"),
    (lambda: HttpReply(head_only=True), b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", b"X"),
]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from(range(len(TWO_ANSWERS))), st.lists(st.integers(1, 9), min_size=1))
def test_a_reader_ends_the_answer_at_the_same_byte_however_the_bytes_arrive(case, cuts):
    make, answer, following = TWO_ANSWERS[case]
    stream, reply, rest, pos = answer + following, make(), b"", 0
    for size in itertools.cycle(cuts):
        if pos >= len(stream) or reply.done:
            break
        rest = reply.feed(stream[pos:pos + size])
        pos += size
    assert reply.done and reply.raw == answer
    assert rest + stream[pos:] == following


def test_readers_wait_for_the_end():
    assert not _fed(SmtpReply(), b"250-first\r\n250 la").done
    assert not _fed(Pop3Reply(multi_line=True), b"+OK\r\n1 2\r\n").done
    assert _fed(Pop3Reply(multi_line=False), b"+OK 1 2\r\n").done
    assert not _fed(ImapReply(b"a1"), b"* 1 FETCH (BODY[] {10}\r\na1 OK\r\n").done  # inside a literal
    assert not _fed(HttpReply(), b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").done
    until_close = _fed(HttpReply(), b"HTTP/1.0 200 OK\r\n\r\nbody")
    assert not until_close.done and until_close.whole_at_close() and until_close.closes
    assert _fed(SmtpReply(), b"+OK I am POP3\r\n").done  # no SMTP reply at all: do not hang


def test_the_answer_values_come_from_the_final_answer_after_a_100_continue():
    from maillab.sessions.drivers import AnswerValues
    interim = b"HTTP/1.1 100 Continue\r\nX-Padding: " + b"p" * 60 + b"\r\n\r\n"
    final_head = b"HTTP/1.1 200 OK\r\nX-Form: <input name=token value=forged>\r\n" \
                 b"Content-Length: 27\r\n\r\n"
    reply = _fed(HttpReply(), interim + final_head + b"<input name=csrf value=abc>")
    assert reply.done and reply.head == final_head
    values = AnswerValues()
    values.learn(reply)
    assert values.fields == {"csrf": "abc"}  # the body's field, not a header that looks like one
    assert reply.body == b"<input name=csrf value=abc>"


def _fed(reply, data):
    reply.feed(data)
    return reply


# =========================================================================== drivers (no sockets)
def test_imap_driver_counts_literals_in_bytes_of_the_typed_lines():
    d = ImapDriver()
    d.state = "authenticated"
    append = d.step("a3 APPEND INBOX {22}")
    assert isinstance(append.reply, ImapReply) and d.literal_left == 22  # waits for "+"
    plus = _fed(ImapReply(b"a3"), b"+ go ahead\r\n")
    d.answered(append, plus)
    assert [d.step(line).reply for line in ("Subject: hi", "", "Hello")] == [None, None, None]
    end = d.step("")  # the literal ended with "Hello\r\n": this empty line ends the command
    assert end.reply is not None and end.reply.tag == b"a3" and not d.command_open
    # Two literals in one command; the second line holds the end of the first and announces the next.
    login = ImapDriver()
    steps = [login.step(line) for line in ("a1 LOGIN {5}", "alice {10}")]
    assert all(isinstance(s.reply, ImapReply) for s in steps) and login.literal_left == 10
    last = login.step("wonderland")
    assert last.data == b"wonderland\r\n" and last.reply.tag == b"a1"
    # LITERAL+: the data follows at once, no waiting for "+".
    plus_literal = ImapDriver()
    assert plus_literal.step("a4 APPEND INBOX {4+}").reply is None
    assert plus_literal.step("Hi").reply is None  # "Hi\r\n": 4 bytes
    assert plus_literal.step("").reply.tag == b"a4"


def test_imap_driver_forgets_a_refused_literal():
    d = ImapDriver()
    step = d.step("a1 LOGIN {500}")
    d.answered(step, _fed(ImapReply(b"a1"), b"a1 NO too big\r\n"))
    assert d.literal_left == 0 and d.step("a2 NOOP").reply.tag == b"a2"


def test_http_driver_builds_one_request():
    d = HttpDriver()
    step = d.request(["POST /login HTTP/1.1", "Host: webmail.example.com", "",
                      "address=alice%40example.com&password=wonderland"])
    body = b"address=alice%40example.com&password=wonderland"
    assert step.data.endswith(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert step.shown[step.added.pop()] == f"Content-Length: {len(body)}"
    wrong = HttpDriver().request(["POST / HTTP/1.1", "Host: x", "Content-Length: 3", "", "abcd"])
    assert b"Content-Length: 3\r\n\r\nabcd" in wrong.data and "4 bytes" in " ".join(wrong.notes)
    no_blank = HttpDriver().request(["HEAD / HTTP/1.1", "Host: x"])
    assert no_blank.data == b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" and no_blank.added == {2}
    assert no_blank.reply.head_only
    assert "Host" in " ".join(HttpDriver().request(["GET / HTTP/1.1"]).notes)


def test_smtp_and_pop3_drivers_follow_the_state():
    s = SmtpDriver()
    s.answered(None, _fed(SmtpReply(), b"220 hi\r\n"))
    assert "EHLO" in " ".join(s.step("MAIL FROM:<a@b>").notes)
    ehlo = s.step("EHLO me")
    s.answered(ehlo, _fed(SmtpReply(), b"250 ok\r\n"))
    assert "MAIL FROM" in " ".join(s.step("RCPT TO:<a@b>").notes)
    data = s.step("DATA")
    s.answered(data, _fed(SmtpReply(), b"354 go\r\n"))
    assert s.step("QUIT").reply is None  # inside the message: a line of text, no answer yet
    assert s.step(". ").reply is None and "just a dot" in s.step(". ").notes[0]
    assert "dot" in s.unfinished()[0]
    p = Pop3Driver()
    assert "log" in " ".join(p.step("RETR 1").notes)
    assert p.step("RETR 1").reply.multi_line and not p.step("LIST 1").reply.multi_line


# =========================================================================== SMTP against the lab
FIRST_MESSAGE = """\
EHLO laptop.example.com
MAIL FROM:<bob@example.com>
RCPT TO:<alice@example.com>
DATA
Subject: My first message
From: bob@example.com

Hello Alice!

A line after a blank line, and one that starts with a dot:
..and so on
.
QUIT
"""


def test_smtp_session_stores_the_message_with_headers_and_body_apart(lab):
    result = run_session("smtp", "example.com", FIRST_MESSAGE, lab=lab)
    assert result.ok and not result.open
    codes = [reply[-1][:3] for _sent, reply in result.replies]
    assert codes == ["220", "250", "250", "250", "354", "250", "221"]
    assert result.reply_to("EHLO")[0].startswith("250-")  # the whole multi-line reply
    assert result.replies[5][0][-1] == "." and "" in result.replies[5][0]  # the blank lines went too
    assert "the server closed the connection" in result.events
    # each meaning is written out once per cell (five 250 replies, one explanation)
    assert result.text.count("   = OK: the command worked.") == 1
    html = result._repr_html_()
    assert html.count(">OK: the command worked.") == 1 and 'title="OK: the command' in html
    (stored,) = lab.mailbox("alice")
    message = stored.message
    assert message["Subject"] == "My first message"
    assert message.get_content().replace("\r\n", "\n") == (
        "Hello Alice!\n\nA line after a blank line, and one that starts with a dot:\n.and so on\n")
    assert "Hello Alice!" in lab.transcript("smtp").client_lines()  # recorded like any client


def test_a_pop3_meaning_comes_once_and_the_servers_own_words_under_each_answer(lab):
    result = run_session("pop3", "example.com", "USER alice\nPASS wonderland\nSTAT\nQUIT",
                         lab=lab)
    meaning = "Positive answer: the command worked."
    assert result.text.count(meaning) == 1 and result._repr_html_().count(">" + meaning) == 1
    # what each +OK said is still written under it (one kind of answer, new words each time)
    assert "   = The server says: now send your password with PASS" not in result.text  # English
    explanations = [line for line in result.text.splitlines() if line.startswith("   = ")]
    assert len(explanations) == 1  # in English the server's words are the reply itself
    with i18n_language("el"):
        greek = run_session("pop3", "example.com", "USER alice\nPASS wonderland\nQUIT", lab=lab)
    said = [line for line in greek.text.splitlines() if line.startswith("   = ")]
    assert len(said) == 4, greek.text  # the meaning once, then the server's words in Greek
    assert sum(line.count("Θετική απάντηση") for line in said) == 1
    assert all("Ο διακομιστής λέει" in line for line in said[1:])


def test_the_same_server_words_twice_are_written_out_once(lab):
    with i18n_language("el"):
        result = run_session("pop3", "example.com", "USER alice\nUSER alice\nQUIT", lab=lab)
        said = "Ο διακομιστής λέει: " + i18n_gettext("now send your password with PASS")
    assert said.endswith("PASS") and "στείλε" in said
    assert result.text.count(said) == 1 and result._repr_html_().count(">" + said) == 1


def test_smtp_out_of_order_lines_are_sent_and_explained(lab):
    result = run_session("smtp", None, "MAIL FROM:<bob@example.com>\nEHLO me\nRCPT TO:<a@example.com>\n"
                                       "DATA\n\nBOGUS\nQUIT", lab=lab)
    replies = dict((sent[0], reply[-1][:3]) for sent, reply in result.replies if sent)
    assert replies == {"MAIL FROM:<bob@example.com>": "503", "EHLO me": "250",
                       "RCPT TO:<a@example.com>": "503", "DATA": "503", "": "500",
                       "BOGUS": "500", "QUIT": "221"}
    notes = " ".join(result.notes)
    for remark in ("EHLO (or HELO) first", "after MAIL FROM", "RCPT TO", "not a command",
                   "BOGUS is not an SMTP command"):
        assert remark in notes
    explained = [x.explanation for x in result.exchanges if x.sent == ["DATA"]][0]
    assert "wrong moment" in explained


def test_smtp_forgotten_dot_sends_quit_into_the_message(lab):
    result = run_session("smtp", None, "EHLO me\nMAIL FROM:<bob@example.com>\n"
                                       "RCPT TO:<alice@example.com>\nDATA\nSubject: x\n\nhi\nQUIT", lab=lab)
    assert "never ended" in result.text and result.client_lines[-1] == "QUIT"
    assert "the cell ended, so maillab closed the connection (the server saw no QUIT)" in result.events
    lab.settle()
    assert lab.mailbox("alice") == []  # a dropped connection delivers nothing


def test_smtp_starttls_on_submission_then_login_and_relay(lab):
    text = (f"EHLO laptop.example.com\nSTARTTLS\nEHLO laptop.example.com\n"
            f"AUTH PLAIN {plain(chr(0) + 'alice' + chr(0) + 'wonderland')}\n"
            "MAIL FROM:<alice@example.com>\nRCPT TO:<john@example.net>\nDATA\nSubject: secret\n\n"
            "over TLS\n.\nQUIT")
    result = run_session("smtp", "example.com", text, submission=True, lab=lab)
    assert result.ok, result.text
    assert "stands for 587" in result.events[0]
    assert any(e.startswith("TLS started: TLSv1.") for e in result.events)
    assert result.reply_to("AUTH")[-1].startswith("235")
    assert result.reply_to("STARTTLS")[-1].startswith("220")
    encrypted = [x.encrypted for x in result.exchanges if x.sent]
    assert encrypted[:2] == [False, False] and all(encrypted[2:])
    assert "EHLO again" in result.text  # RFC 3207: the server forgets the first EHLO
    wire = lab.observed("submission").client_bytes()
    assert b"STARTTLS" in wire and b"AUTH" not in wire and b"secret" not in wire
    lab.settle()
    assert [m.subject for m in lab.mailbox("john")] == ["secret"]
    assert "The lab" not in result.text


def test_smtps_is_encrypted_from_the_first_byte(lab):
    result = run_session("smtp", "example.net", "EHLO me\nQUIT", tls=True, lab=lab)
    assert result.ok and "stands for 465" in result.events[0]
    assert result.events[1].startswith("TLS from the first byte: TLSv1.")
    assert result.replies[0][1][0].startswith("220 mail.example.net")
    assert all(x.encrypted for x in result.exchanges)


# =========================================================================== POP3 against the lab
def deliver(lab, to="alice", subject="Hello", body="Hi there.\r\n"):
    result = run_session("smtp", lab.account(to).domain,
                         f"HELO me\nMAIL FROM:<bob@example.com>\nRCPT TO:<{lab.account(to).address}>\n"
                         f"DATA\nSubject: {subject}\n\n{body}\n.\nQUIT", lab=lab)
    assert result.ok, result.text


def test_pop3_every_state_and_multi_line_answer(lab):
    deliver(lab, subject="one")
    deliver(lab, subject="two")
    result = run_session("pop3", "example.com", "RETR 1\nPASS wonderland\nUSER alice\nPASS wonderland\n"
                                                 "STAT\nLIST\nLIST 2\nUIDL\nTOP 1 0\nRETR 2\nCAPA\n"
                                                 "USER alice\nDELE 1\nQUIT", lab=lab)
    assert result.ok, result.text
    status = [(sent[0], reply[0].split()[0]) for sent, reply in result.replies if sent]
    assert status == [("RETR 1", "-ERR"), ("PASS wonderland", "-ERR"), ("USER alice", "+OK"),
                      ("PASS wonderland", "+OK"), ("STAT", "+OK"), ("LIST", "+OK"),
                      ("LIST 2", "+OK"), ("UIDL", "+OK"), ("TOP 1 0", "+OK"), ("RETR 2", "+OK"),
                      ("CAPA", "+OK"), ("USER alice", "-ERR"), ("DELE 1", "+OK"), ("QUIT", "+OK")]
    assert result.reply_to("LIST")[-1] == "." and len(result.reply_to("LIST")) == 4
    assert len(result.reply_to("LIST 2")) == 1
    assert "Subject: two" in result.reply_to("RETR 2") and result.reply_to("RETR 2")[-1] == "."
    assert "Hi there." not in result.reply_to("TOP 1 0")
    notes = " ".join(result.notes)
    assert "only after logging in" in notes and "PASS comes right after USER" in notes
    assert "logged in already" in notes
    assert [m.subject for m in lab.mailbox("alice")] == ["two"]  # deleted at QUIT (UPDATE)


def test_pop3_stls_mid_session_and_pop3s(lab):
    result = run_session("pop3", None, "CAPA\nSTLS\nUSER alice\nPASS wonderland\nSTAT\nQUIT", lab=lab)
    assert result.ok, result.text
    assert any(e.startswith("TLS started") for e in result.events)
    assert result.reply_to("PASS")[0].startswith("+OK")
    assert b"wonderland" not in lab.observed("pop3").client_bytes()
    implicit = run_session("pop3", "example.net", "USER john\nPASS postman\nQUIT", tls=True, lab=lab)
    assert implicit.ok and implicit.reply_to("PASS")[0].startswith("+OK")
    assert "stands for 995" in implicit.events[0]


# =========================================================================== IMAP against the lab
IMAP_CELL = """\
a1 LOGIN {5}
alice {10}
wonderland
a2 FETCH 1 FLAGS
a3 SELECT INBOX
a4 APPEND INBOX {65}
Subject: literal
From: me@example.com

a6 OK not the end yet

a5 APPEND INBOX {12+}
Subject: +


a6 FETCH 1:* (FLAGS BODY[])
LOGOUT
a7 LOGOUT
"""


def test_imap_literals_continuations_and_states(lab):
    result = run_session("imap", "example.com", IMAP_CELL, lab=lab)
    assert result.ok, result.text
    tagged = {sent[0]: reply[-1] for sent, reply in result.replies if sent}
    assert tagged["a1 LOGIN {5}"].startswith("+")  # continuation: send the literal
    assert tagged["a2 FETCH 1 FLAGS"].startswith("a2 BAD")
    assert tagged["a4 APPEND INBOX {65}"].startswith("+")
    assert tagged["a6 FETCH 1:* (FLAGS BODY[])"].startswith("a6 OK")
    assert tagged["LOGOUT"].startswith("* BAD") or tagged["LOGOUT"].startswith("LOGOUT BAD")
    literal = [x for x in result.exchanges if x.sent[:1] == ["Subject: literal"]][0]
    assert literal.reply[-1].startswith("a4 OK [APPENDUID")
    fetched = result.reply_to("a6")  # the message holds a line "a6 OK ...": literal data, read past
    assert "a6 OK not the end yet" in fetched and fetched[-1] == "a6 OK FETCH completed"
    notes = " ".join(result.notes)
    assert "SELECT" in notes or "Log in first" in notes
    assert "start with a tag" in notes and "the server reads LOGOUT as the tag" in notes
    assert [m.subject for m in lab.mailbox("alice")] == ["literal", "+"]
    assert result.events[-1] == "the server closed the connection"


def test_imap_starttls_then_login_and_imaps(lab):
    result = run_session("imap", None, "a1 STARTTLS\na2 CAPABILITY\na3 LOGIN alice wonderland\n"
                                       "a4 LOGOUT", lab=lab)
    assert result.ok, result.text
    assert result.reply_to("a3")[-1].startswith("a3 OK")
    assert b"wonderland" not in lab.observed("imap").client_bytes()
    implicit = run_session("imap", None, "a1 LOGIN bob builder\na2 LOGOUT", tls=True, lab=lab)
    assert implicit.ok and implicit.reply_to("a1")[-1].startswith("a1 OK")


# =========================================================================== named sessions
def test_a_named_session_goes_on_in_the_next_cell(lab):
    first = run_session("smtp", "example.com", "EHLO me\nMAIL FROM:<bob@example.com>",
                        session="mine", lab=lab)
    assert first.open and "mine" in open_sessions()
    second = run_session("smtp", None, "RCPT TO:<alice@example.com>\nDATA\nSubject: two cells\n\n"
                                       "hello", session="mine", lab=lab)
    assert second.open and second.events[0].startswith("session mine goes on")
    assert second.reply_to("RCPT")[-1].startswith("250")  # MAIL FROM of the first cell counted
    third = run_session("smtp", None, ".\nQUIT", session="mine", lab=lab)
    assert third.replies[0][1][-1].startswith("250") and not third.open
    assert "mine" not in open_sessions()
    assert [m.subject for m in lab.mailbox("alice")] == ["two cells"]


def test_an_open_session_does_not_keep_a_replaced_lab_alive():
    old = maillab.MailLab(ports="any").start()
    run_session("smtp", None, "EHLO me", session="kept", lab=old)
    gone = weakref.ref(old)
    old.stop()
    del old
    gc.collect()
    assert gone() is None  # issue 11: a replaced lab must free its memory
    later = run_session("smtp", None, "QUIT", session="kept")
    assert "kept" not in open_sessions() and later.error


def test_a_cell_that_names_the_server_starts_the_session_anew(lab):
    run_session("pop3", "example.com", "USER alice\nPASS wonderland", session="box", lab=lab)
    again = run_session("pop3", "example.com", "STAT", session="box", lab=lab)
    assert "starts anew" in again.text and again.reply_to("STAT")[0].startswith("-ERR")
    closed = run_session("pop3", None, "USER alice", session="box", close=True, lab=lab)
    assert "you closed session box" in closed.events and not closed.open
    assert "box" not in open_sessions()
    other = run_session("imap", None, "a1 NOOP", session="pops", lab=lab)
    wrong = run_session("pop3", None, "STAT", session="pops", lab=lab)
    assert other.open and "is a IMAP session" in wrong.error


def test_what_the_server_says_between_cells_is_shown(lab):
    run_session("imap", None, "a1 LOGIN alice wonderland\na2 SELECT INBOX\na3 IDLE",
                session="idle", lab=lab)
    deliver(lab, subject="while idling")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not lab.mailbox("alice"):
        time.sleep(0.02)
    time.sleep(0.3)  # the IDLE notification travels
    later = run_session("imap", None, "DONE\na4 LOGOUT", session="idle", lab=lab)
    assert later.ok, later.text
    unasked = later.exchanges[0]
    assert not unasked.sent and "* 1 EXISTS" in unasked.reply
    assert later.reply_to("DONE")[-1].startswith("a3 OK")


# =========================================================================== HTTP against the webmail
def test_http_get_and_log_in_to_the_webmail_over_raw_http(lab):
    page = run_session("http", None, "GET /login HTTP/1.1\nHost: webmail.example.com\n",
                       session="web", lab=lab)
    assert page.ok and page.open and page.server_lines[0] == "HTTP/1.1 200 OK"
    assert page.server_lines[-1] == "</html>" and "maillab sent the empty line" in page.text
    cookie = [line.split(":", 1)[1].split(";")[0].strip() for line in page.server_lines
              if line.lower().startswith("set-cookie:")][0]
    csrf = [line.split('value="')[1].split('"')[0] for line in page.server_lines
            if 'name="csrf"' in line][0]
    login = run_session("http", None, f"POST /login HTTP/1.1\nHost: webmail.example.com\n"
                                      f"Cookie: {cookie}\nContent-Type: application/x-www-form-urlencoded\n"
                                      f"\naddress=alice%40example.com&password=wonderland&csrf={csrf}",
                        session="web", lab=lab)
    assert login.server_lines[0] == "HTTP/1.1 303 See Other", login.text
    assert "maillab added Content-Length" in login.text
    session_cookie = [line.split(":", 1)[1].split(";")[0].strip() for line in login.server_lines
                      if line.lower().startswith("set-cookie:")][0]
    inbox = run_session("http", None, f"GET /mail HTTP/1.1\nHost: webmail.example.com\n"
                                      f"Cookie: {session_cookie}\nConnection: close\n\n", session="web", lab=lab)
    assert inbox.server_lines[0] == "HTTP/1.1 200 OK" and "alice@example.com" in inbox.text
    assert not inbox.open  # Connection: close
    assert "maillab sent the empty line" not in inbox.text  # the learner's cell ended with it
    requests = lab.transcript("http").client_lines()
    assert requests == ["GET /login HTTP/1.1", "POST /login HTTP/1.1", "GET /mail HTTP/1.1"]


def test_http_head_and_not_found(lab):
    result = run_session("http", None, "HEAD /nowhere HTTP/1.1\nHost: x\n\nGET / HTTP/1.1", lab=lab)
    assert result.server_lines[0] == "HTTP/1.1 404 Not Found"
    assert "Not found" in result.exchanges[0].explanation


class ChunkedOrClose(http.server.BaseHTTPRequestHandler):
    """/chunked answers in chunks on a kept-alive connection; anything else until it closes."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"Hello, ", b"chunked\r\n", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"no length:\r\nthe end is when I close")
            self.close_connection = True

    def log_message(self, *args):
        pass


def test_http_chunked_and_until_close_from_a_plain_http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ChunkedOrClose)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        chunked = run_session("http", None, "GET /chunked HTTP/1.1\nHost: x\n\n", host="127.0.0.1",
                              port=port, session="plain")
        assert chunked.ok and chunked.open and chunked.server_lines[-4:] == ["5", "world", "0", ""]
        assert "maillab sent the empty line" not in chunked.text  # the cell ended with it
        closing = run_session("http", None, "GET /close HTTP/1.1\nHost: x\n\n", session="plain")
        assert closing.ok and not closing.open, closing.text
        assert closing.server_lines[-2:] == ["no length:", "the end is when I close"]
    finally:
        server.shutdown()
        server.server_close()


# =========================================================================== failures: one line, bounded
def test_no_lab_and_a_stopped_lab_give_a_one_line_hint(monkeypatch):
    monkeypatch.setattr(labmodule, "_current", None)
    monkeypatch.setattr(labmodule, "_all_labs", type(labmodule._all_labs)())
    result = run_session("smtp", "example.com", "EHLO me")
    assert result.error == "No mail lab is running: run lab = maillab.start() first."
    assert result.text == "!! " + result.error
    stopped = maillab.MailLab(ports="any").start()
    stopped.stop()
    assert "The lab is stopped: run the first cell again" in run_session("imap", None, "a1 NOOP").error


def test_a_domain_the_lab_does_not_have(lab):
    result = run_session("smtp", "example.org", "EHLO me", lab=lab)
    assert result.error.startswith("example.org is not a domain of this lab (example.com, example.net)")


def test_a_named_session_whose_lab_stopped(lab):
    run_session("smtp", None, "EHLO me", session="old", lab=lab)
    lab.stop()
    result = run_session("smtp", None, "MAIL FROM:<bob@example.com>", session="old", lab=lab)
    assert result.error.startswith("The lab is stopped") and "old" not in open_sessions()


def test_refused_connection():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        result = run_session("pop3", None, "USER alice", host="127.0.0.1", port=port)
    assert result.error == f"127.0.0.1 port {port} refused the connection: no server listens there."


@contextlib.contextmanager
def odd_server(behaviour):
    """A TCP server on a free loopback port whose one connection runs ``behaviour(conn)``."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        conn, _addr = listener.accept()
        with conn:
            behaviour(conn)
            done.wait(15)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        listener.close()
        thread.join(5)


def _greet_then_hang_up(conn):
    conn.sendall(b"220 odd.example ESMTP\r\n")
    conn.recv(1000)
    conn.sendall(b"250-odd.example\r\n")  # half a reply, then gone
    conn.close()


def test_a_server_that_closes_mid_session():
    with odd_server(_greet_then_hang_up) as port:
        result = run_session("smtp", None, "EHLO me\nMAIL FROM:<a@b>\nQUIT", host="127.0.0.1", port=port)
    assert result.reply_to("EHLO") == ["250-odd.example"]
    assert "the server closed the connection" in result.events
    assert result.error == "2 more lines of the cell were not sent: the connection is closed."


def test_a_server_that_never_answers_is_waited_for_a_bounded_time():
    with odd_server(lambda conn: None) as port:
        started = time.monotonic()
        result = run_session("imap", None, "a1 NOOP", host="127.0.0.1", port=port, timeout=0.3)
        waited = time.monotonic() - started
    assert result.error.startswith("No whole answer within 0.3 s")
    assert waited < 5  # bounded by the timeout, not by the server


def test_stop_button_ends_the_session_with_one_line():
    """Jupyter's stop button (and nbgrader's cell timeout) send SIGINT to the kernel."""
    with odd_server(lambda conn: None) as port:
        main = threading.main_thread().ident
        threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT)).start()
        started = time.monotonic()
        result = run_session("smtp", None, "EHLO me", host="127.0.0.1", port=port, timeout=5,
                             session="stopped")
        waited = time.monotonic() - started
    assert result.error == "Interrupted: maillab closed the connection." and waited < 4
    assert "stopped" not in open_sessions()


# =========================================================================== real peers
@pytest.fixture(scope="module")
def dovecot():
    """A private Dovecot (as in test_imap_dovecot.py) that also speaks POP3."""
    require_tool("dovecot")
    import os
    require_root("the reference Dovecot must start as root (it then runs as nobody)")
    from maillab.imap import testing
    pop3_port = testing._free_port()
    # Dovecot's config is a str.format template: braces are doubled.
    pop3 = ("\nservice pop3-login {{\n  inet_listener pop3 {{\n    address = 127.0.0.1\n"
            "    port = POP3_PORT\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n"
            "protocol pop3 {{\n  mail_max_userip_connections = 200\n}}\n"
            ).replace("POP3_PORT", str(pop3_port))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(testing, "_CONFIG",
                      testing._CONFIG.replace("protocols = imap", "protocols = imap pop3") + pop3)
        server = testing.Dovecot()
    server.pop3_port = pop3_port
    try:
        yield server
    finally:
        server.close()


def test_imap_cell_against_dovecot(dovecot):
    cell = IMAP_CELL.replace("{10}\nwonderland", "{8}\nalice-pw")
    result = run_session("imap", None, cell, host=dovecot.host, port=dovecot.port)
    assert result.ok, result.text
    tagged = {sent[0]: reply[-1] for sent, reply in result.replies if sent}
    assert tagged["a1 LOGIN {5}"].startswith("+") and tagged["a3 SELECT INBOX"].startswith("a3 OK")
    assert tagged["a2 FETCH 1 FLAGS"].startswith("a2 BAD")
    assert tagged["LOGOUT"].startswith("LOGOUT BAD")  # Dovecot answers the word it took as a tag
    fetched = result.reply_to("a6")
    assert "a6 OK not the end yet" in fetched and fetched[-1].startswith("a6 OK Fetch completed")
    idle = run_session("imap", None, "a1 LOGIN bob bob-pw\na2 SELECT INBOX\na3 IDLE\nDONE\n"
                                     "a4 LOGOUT", host=dovecot.host, port=dovecot.port)
    assert idle.reply_to("a3 IDLE")[-1].startswith("+") and idle.reply_to("DONE")[-1].startswith("a3 OK")


def test_pop3_cell_against_dovecot(dovecot):
    run_session("imap", None, "a1 LOGIN bob bob-pw\na2 APPEND INBOX {20}\nSubject: one\n\nHi!\n\n"
                              "a3 LOGOUT", host=dovecot.host, port=dovecot.port)
    result = run_session("pop3", None, "RETR 1\nAUTH\nAUTH PLAIN\n" + plain("\0bob\0bob-pw") +
                         "\nSTAT\nLIST\nLIST 1\nUIDL\nTOP 1 0\nRETR 1\nCAPA\nQUIT",
                         host=dovecot.host, port=dovecot.pop3_port)
    assert result.ok, result.text
    assert result.reply_to("AUTH")[-1] == "." and result.reply_to("AUTH PLAIN")[0].startswith("+")
    assert result.reply_to("RETR 1")[0].startswith("-ERR")
    retr = [reply for sent, reply in result.replies if sent == ["RETR 1"]][1]
    assert retr[1:] == ["Subject: one", "", "Hi!", "."]
    assert result.reply_to("LIST")[-1] == "." and len(result.reply_to("LIST 1")) == 1


@pytest.fixture
def bare_aiosmtpd():
    """aiosmtpd with a handler that keeps what it receives (the benchmarks' peer)."""
    from aiosmtpd.smtp import SMTP
    sys.path.insert(0, str(ROOT / "bench"))
    from peers import serve_in_thread

    class Keep:
        messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope)
            return "250 OK kept"

    handler = Keep()
    port, stop = serve_in_thread(lambda loop: lambda: SMTP(handler, hostname="peer.example",
                                                           loop=loop))
    try:
        yield port, handler.messages
    finally:
        stop()


def test_smtp_cell_against_a_bare_aiosmtpd(bare_aiosmtpd):
    port, messages = bare_aiosmtpd
    result = run_session("smtp", None, FIRST_MESSAGE, host="127.0.0.1", port=port)
    assert result.ok, result.text
    assert [reply[-1][:3] for _s, reply in result.replies] == ["220", "250", "250", "250", "354",
                                                                "250", "221"]
    (envelope,) = messages
    assert envelope.rcpt_tos == ["alice@example.com"]
    assert envelope.content.endswith(b"Hello Alice!\r\n\r\nA line after a blank line, and one that "
                                     b"starts with a dot:\r\n.and so on\r\n")


def test_a_named_session_that_never_connected_is_not_called_closed(lab):
    refused = run_session("smtp", "example.com", "EHLO me", lab=lab, port=1, session="never")
    assert not refused.ok
    again = run_session("smtp", "example.com", "QUIT", lab=lab, session="never")
    assert again.ok and not any("was closed in an earlier cell" in e for e in again.events)
    ended = run_session("smtp", "example.com", "QUIT", lab=lab, session="never")
    assert any("was closed in an earlier cell" in e for e in ended.events)  # this one was
