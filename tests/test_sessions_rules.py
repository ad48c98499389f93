"""The session cells' protocol rules, without a lab: the drivers' decisions (which answer to wait
for, which state follows, which remark) and the readers' (when is an answer whole), fed typed
lines and reply bytes; the evidence's text and HTML forms; and the socket side (run.py) against
scripted loopback peers. Each test here is quick (no lab is started); tests/test_magics.py runs
the same rules against real servers."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time

import pytest

import maillab.lab as labmodule
from maillab.sessions import run as runmodule
from maillab.sessions.drivers import (LOGIN_ANSWER, Driver, HttpDriver, ImapDriver, Pop3Driver,
                                      SmtpDriver)
from maillab.sessions.replies import HttpReply, ImapReply, Pop3Reply, Reply, SmtpReply
from maillab.sessions.result import MAX_SHOWN, Event, Exchange, SessionResult


def fed(reply, data: bytes):
    reply.feed(data)
    return reply


def notes(driver, line: str) -> str:
    return " ".join(driver.step(line).notes)


# =========================================================================== SMTP driver
def greeted_smtp() -> SmtpDriver:
    s = SmtpDriver()
    s.answered(None, fed(s.greeting(), b"220 mail.example.com ESMTP\r\n"))
    return s


def answer(driver, line: str, reply_bytes: bytes):
    """Type ``line``, let the server answer ``reply_bytes``; the step."""
    step = driver.step(line)
    reply = step.reply
    assert reply is not None, f"{line!r} waits for no answer"
    driver.answered(step, fed(reply, reply_bytes))
    return step


def hello_smtp() -> SmtpDriver:
    s = greeted_smtp()
    answer(s, "EHLO me", b"250-mail.example.com\r\n250 8BITMIME\r\n")
    return s


def test_smtp_every_command_word_is_known():
    for word in ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN",
                 "HELP", "STARTTLS", "AUTH", "BDAT", "ETRN"):
        for typed in (word, word.lower()):
            assert "not an SMTP command" not in notes(hello_smtp(), f"{typed} x"), typed
    assert notes(hello_smtp(), "SEND x") == "SEND is not an SMTP command."
    assert notes(hello_smtp(), "") .startswith("An empty line is not a command")


def test_smtp_before_ehlo_only_the_envelope_and_auth_are_remarked():
    for word in ("MAIL FROM:<a@b>", "RCPT TO:<a@b>", "DATA", "AUTH PLAIN x"):
        assert notes(greeted_smtp(), word).startswith("Say EHLO (or HELO) first"), word
    for word in ("NOOP", "RSET", "VRFY x", "HELP", "STARTTLS", "QUIT"):
        assert notes(greeted_smtp(), word) == "", word


def test_smtp_a_fresh_driver_reads_its_first_line_as_a_command():
    s = SmtpDriver()  # no greeting fed: nothing makes the first line a login answer
    step = s.step("EHLO me")
    assert step.command == "EHLO" and isinstance(step.reply, SmtpReply)


def test_smtp_helo_counts_like_ehlo():
    s = greeted_smtp()
    answer(s, "HELO me", b"250 mail.example.com\r\n")
    assert notes(s, "MAIL FROM:<a@b>") == ""
    refused = greeted_smtp()
    answer(refused, "HELO", b"501 Syntax: HELO hostname\r\n")
    assert notes(refused, "MAIL FROM:<a@b>").startswith("Say EHLO")


def test_smtp_envelope_order_remarks():
    s = hello_smtp()
    assert notes(s, "MAIL FROM:<a@b>") == ""
    assert notes(s, "NOOP") == "" and notes(s, "VRFY x") == ""  # no message under way: fine
    assert notes(s, "RCPT TO:<a@b>") == "RCPT TO comes after MAIL FROM."
    assert notes(s, "DATA") == "DATA comes after at least one accepted RCPT TO."
    answer(s, "MAIL FROM:<a@b>", b"250 OK\r\n")
    assert notes(s, "RCPT TO:<c@d>") == ""
    assert notes(s, "MAIL FROM:<x@y>").startswith("A message is already under way")
    assert notes(s, "DATA") == "DATA comes after at least one accepted RCPT TO."
    assert notes(s, "NOOP") == ""
    answer(s, "RCPT TO:<c@d>", b"550 no such user\r\n")  # refused: still no recipient
    assert notes(s, "DATA") == "DATA comes after at least one accepted RCPT TO."
    answer(s, "RCPT TO:<e@f>", b"250 OK\r\n")
    assert notes(s, "DATA") == ""


def test_smtp_refused_mail_starts_no_message_and_is_named_as_the_cause():
    s = hello_smtp()
    answer(s, "MAIL FROM:<a@b>", b"553 not allowed\r\n")
    assert not s.mail
    assert notes(s, "RCPT TO:<c@d>") == ("The MAIL FROM above was refused (553): fix that first. "
                                          "RCPT TO and DATA need an accepted MAIL FROM.")
    assert notes(s, "DATA").startswith("The MAIL FROM above was refused (553)")
    answer(s, "MAIL FROM:<a@b>", b"530 5.7.0 Authentication required\r\n")
    assert notes(s, "RCPT TO:<c@d>").startswith("The MAIL FROM above was refused (530): fix that "
                                                 "first. This server wants you to log in")
    answer(s, "MAIL FROM:<a@b>", b"250 OK\r\n")  # fixed: the earlier refusal is forgotten
    assert notes(s, "RCPT TO:<c@d>") == ""
    answer(s, "RSET", b"250 OK\r\n")
    assert notes(s, "RCPT TO:<c@d>") == "RCPT TO comes after MAIL FROM."
    again = hello_smtp()
    answer(again, "MAIL FROM:<a@b>", b"530 log in\r\n")
    answer(again, "EHLO me", b"250 hi\r\n")  # a new greeting starts afresh
    assert notes(again, "RCPT TO:<c@d>") == "RCPT TO comes after MAIL FROM."


def test_smtp_the_final_dot_and_rset_end_the_envelope():
    s = hello_smtp()
    answer(s, "MAIL FROM:<a@b>", b"250 OK\r\n")
    answer(s, "RCPT TO:<c@d>", b"250 OK\r\n")
    answer(s, "DATA", b"354 go ahead\r\n")
    assert s.in_data
    assert s.step("Subject: x").reply is None
    answer(s, ".", b"250 queued\r\n")
    assert not s.in_data and s.unfinished() == []
    assert notes(s, "MAIL FROM:<a@b>") == ""  # a new message may start
    assert notes(s, "DATA") == "DATA comes after at least one accepted RCPT TO."
    answer(s, "MAIL FROM:<a@b>", b"250 OK\r\n")
    answer(s, "RCPT TO:<c@d>", b"250 OK\r\n")
    answer(s, "RSET", b"250 OK\r\n")
    assert notes(s, "RCPT TO:<c@d>") == "RCPT TO comes after MAIL FROM."
    assert notes(s, "DATA") == "DATA comes after at least one accepted RCPT TO."
    answer(s, "MAIL FROM:<a@b>", b"250 OK\r\n")
    answer(s, "RSET", b"500 no\r\n")  # a refused RSET changes nothing
    assert notes(s, "MAIL FROM:<x@y>").startswith("A message is already under way")


def test_smtp_a_refused_message_still_ends_with_its_dot():
    s = hello_smtp()
    answer(s, "MAIL FROM:<a@b>", b"250 OK\r\n")
    answer(s, "RCPT TO:<c@d>", b"250 OK\r\n")
    answer(s, "DATA", b"354 go ahead\r\n")
    answer(s, ".", b"554 rejected\r\n")
    assert notes(s, "MAIL FROM:<a@b>") == ""


def test_smtp_lines_of_the_message_and_their_remarks():
    s = hello_smtp()
    answer(s, "MAIL FROM:<a@b>", b"250 OK\r\n")
    answer(s, "RCPT TO:<c@d>", b"250 OK\r\n")
    answer(s, "DATA", b"354 go ahead\r\n")
    plain = s.step("Hello")
    assert plain.reply is None and plain.notes == [] and plain.data == b"Hello\r\n"
    dotted = s.step(".hidden dot")
    assert dotted.reply is None and dotted.data == b".hidden dot\r\n"
    assert "dot-stuffing" in " ".join(dotted.notes)
    assert s.step("").notes == [] and s.step("MAIL FROM:<x@y>").notes == []
    assert "never ended" in s.unfinished()[0]


def test_smtp_data_refused_is_no_message():
    s = hello_smtp()
    answer(s, "MAIL FROM:<a@b>", b"250 OK\r\n")
    answer(s, "RCPT TO:<c@d>", b"250 OK\r\n")
    answer(s, "DATA", b"451 try later\r\n")
    assert not s.in_data and isinstance(s.step("Subject: x").reply, SmtpReply)


def test_smtp_auth_questions_are_answered_by_the_next_line():
    s = hello_smtp()
    auth = answer(s, "AUTH LOGIN", b"334 VXNlcm5hbWU6\r\n")
    assert auth.command == "AUTH"
    user = s.step("YWxpY2U=")
    assert user.command == LOGIN_ANSWER and user.notes == [] and isinstance(user.reply, SmtpReply)
    s.answered(user, fed(user.reply, b"334 UGFzc3dvcmQ6\r\n"))
    password = s.step("d29uZGVybGFuZA==")
    assert password.command == LOGIN_ANSWER and password.notes == []
    s.answered(password, fed(password.reply, b"235 2.7.0 Authentication successful\r\n"))
    after = s.step("MAIL FROM:<alice@example.com>")
    assert after.command == "MAIL" and after.notes == []


def test_smtp_421_and_quit_end_the_session():
    s = hello_smtp()
    assert not s.closing
    answer(s, "NOOP", b"250 OK\r\n")
    assert not s.closing
    answer(s, "NOOP", b"421 4.3.2 shutting down\r\n")
    assert s.closing
    q = hello_smtp()
    answer(q, "QUIT", b"221 bye\r\n")
    assert q.closing


def test_smtp_starttls_and_what_it_forgets():
    s = hello_smtp()
    answer(s, "STARTTLS", b"454 TLS not available\r\n")
    assert not s.start_tls
    answer(s, "STARTTLS", b"220 Ready to start TLS\r\n")
    assert s.start_tls
    assert "EHLO again" in s.tls_started()[0] and not s.start_tls
    assert notes(s, "MAIL FROM:<a@b>").startswith("Say EHLO")


def test_smtp_a_lenient_server_may_take_the_envelope_before_ehlo():
    s = greeted_smtp()  # some servers accept MAIL and RCPT without a greeting from the client
    answer(s, "MAIL FROM:<a@b>", b"250 OK\r\n")
    answer(s, "RCPT TO:<c@d>", b"250 OK\r\n")
    answer(s, "RSET", b"250 OK\r\n")
    answer(s, "EHLO me", b"250 ok\r\n")
    assert notes(s, "DATA") == "DATA comes after at least one accepted RCPT TO."


def test_smtp_code_is_that_of_the_last_line():
    reply = fed(SmtpReply(), b"250-mail.example.com\r\n554 go away\r\n")
    assert reply.code == "554" and SmtpReply().code == ""


# =========================================================================== POP3 driver
def greeted_pop3() -> Pop3Driver:
    p = Pop3Driver()
    p.answered(None, fed(p.greeting(), b"+OK POP3 ready\r\n"))
    return p


def logged_in_pop3() -> Pop3Driver:
    p = greeted_pop3()
    answer(p, "USER alice", b"+OK\r\n")
    answer(p, "PASS wonderland", b"+OK logged in\r\n")
    return p


def test_pop3_commands_by_state():
    for word in ("STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"):
        assert notes(greeted_pop3(), word.lower()) == \
            f"{word} works only after logging in (USER, then PASS).", word
        assert notes(logged_in_pop3(), word) == "", word
    for word in ("USER", "PASS", "APOP", "AUTH", "STLS", "UTF8"):
        assert notes(logged_in_pop3(), word) == \
            f"You are logged in already: {word} belongs to the login.", word
    for word in ("USER", "APOP", "AUTH", "STLS", "UTF8"):
        assert notes(greeted_pop3(), word) == "", word
    for word in ("QUIT", "CAPA", "LANG"):
        assert notes(greeted_pop3(), word) == "" and notes(logged_in_pop3(), word) == "", word
    assert notes(greeted_pop3(), "") == "An empty line is not a POP3 command."
    assert notes(logged_in_pop3(), "HELO x") == "HELO is not a POP3 command."


def test_pop3_pass_comes_right_after_an_accepted_user():
    p = greeted_pop3()
    assert notes(p, "PASS x") == "PASS comes right after USER."
    answer(p, "USER alice", b"+OK\r\n")
    assert notes(p, "PASS x") == ""
    answer(p, "PASS wrong", b"-ERR [AUTH] wrong\r\n")
    assert p.state == "AUTHORIZATION"
    assert notes(p, "PASS x") == "PASS comes right after USER."  # USER again after a refusal
    answer(p, "USER bob", b"-ERR no\r\n")
    assert notes(p, "PASS x") == "PASS comes right after USER."


def test_pop3_a_mailbox_in_use_names_the_session_that_holds_it():
    p = greeted_pop3()
    answer(p, "USER john", b"+OK\r\n")
    step = p.step("PASS postman")
    reply = fed(step.reply, b"-ERR [IN-USE] maildrop already in use\r\n")
    remark = " ".join(p.remarks_on(step, reply))
    assert remark.startswith("Another session is still logged in to this mailbox, perhaps the "
                             "console above: type QUIT there"), remark
    other = fed(p.step("PASS x").reply, b"-ERR [AUTH] wrong password\r\n")
    assert p.remarks_on(step, other) == []
    assert SmtpDriver().remarks_on(None, fed(SmtpReply(), b"554 [IN-USE]\r\n")) == []


def test_pop3_a_refused_other_command_keeps_the_user():
    p = greeted_pop3()
    answer(p, "USER alice", b"+OK\r\n")
    answer(p, "RETR 1", b"-ERR not logged in\r\n")
    assert notes(p, "PASS x") == ""
    answer(p, "PASS wonderland", b"+OK\r\n")
    assert p.state == "TRANSACTION"


def test_pop3_logins_that_reach_the_transaction_state():
    apop = greeted_pop3()
    answer(apop, "APOP alice 0123456789abcdef", b"+OK\r\n")
    assert apop.state == "TRANSACTION"
    refused = greeted_pop3()
    answer(refused, "APOP alice 0123", b"-ERR\r\n")
    assert refused.state == "AUTHORIZATION"
    at_once = greeted_pop3()
    answer(at_once, "AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=", b"+OK welcome\r\n")
    assert at_once.state == "TRANSACTION"
    listing = greeted_pop3()
    step = answer(listing, "AUTH", b"+OK\r\nPLAIN\r\n.\r\n")
    assert step.reply.multi_line and listing.state == "AUTHORIZATION"
    asked = greeted_pop3()
    answer(asked, "AUTH PLAIN", b"+ \r\n")
    assert asked.login_prompt
    reply = asked.step("AGFsaWNlAHdvbmRlcmxhbmQ=")
    assert reply.command == LOGIN_ANSWER and reply.notes == [] and not reply.reply.multi_line
    asked.answered(reply, fed(reply.reply, b"+OK welcome\r\n"))
    assert asked.state == "TRANSACTION" and not asked.login_prompt
    assert notes(asked, "STAT") == ""


def test_pop3_quit_closes_and_enters_update_only_after_login():
    p = logged_in_pop3()
    answer(p, "NOOP", b"+OK\r\n")
    assert not p.closing and p.state == "TRANSACTION"
    answer(p, "QUIT", b"+OK bye\r\n")
    assert p.closing and p.state == "UPDATE"
    early = greeted_pop3()
    answer(early, "QUIT", b"+OK bye\r\n")
    assert early.closing and early.state == "AUTHORIZATION"


def test_pop3_stls_and_the_answers_over_several_lines():
    p = greeted_pop3()
    answer(p, "STLS", b"-ERR not now\r\n")
    assert not p.start_tls
    answer(p, "STLS", b"+OK Begin TLS\r\n")
    assert p.start_tls and p.tls_started() == [] and not p.start_tls
    assert p.unfinished() == []
    multi = {"RETR 1": True, "TOP 1 0": True, "CAPA": True, "LIST": True, "UIDL": True,
             "AUTH": True, "LIST 1": False, "UIDL 1": False, "AUTH PLAIN": False, "STAT": False,
             "retr 1": True, "LANG": True, "LANG fr": False}
    for line, expected in multi.items():
        assert logged_in_pop3().step(line).reply.multi_line is expected, line


def test_pop3_the_deciding_line_is_the_first():
    reply = fed(Pop3Reply(True), b"+OK 2 messages\r\n1 10\r\n2 20\r\n.\r\n")
    assert Pop3Driver.deciding_line(reply) == "+OK 2 messages"
    assert Pop3Driver.deciding_line(Pop3Reply()) == ""
    assert SmtpDriver.deciding_line(fed(SmtpReply(), b"250-a\r\n250 b\r\n")) == "250 b"
    assert SmtpDriver.deciding_line(SmtpReply()) == ""


def test_pop3_reply_status():
    assert fed(Pop3Reply(), b"+OK\r\n").status == "+OK"
    assert fed(Pop3Reply(), b"-ERR no\r\n").status == "-ERR"
    assert fed(Pop3Reply(), b"+ \r\n").status == "+"
    assert fed(Pop3Reply(), b"hello\r\n").status == ""
    assert Pop3Reply().status == ""
    garbled = fed(Pop3Reply(multi_line=True), b"+Oops\r\n")  # not positive: no list follows
    assert garbled.done


# =========================================================================== IMAP driver
def imap_in(state: str) -> ImapDriver:
    d = ImapDriver()
    d.answered(None, fed(d.greeting(), b"* OK IMAP ready\r\n"))
    if state != "not authenticated":
        answer(d, "a1 LOGIN alice wonderland", b"a1 OK logged in\r\n")
    if state == "selected":
        answer(d, "a2 SELECT INBOX", b"* 2 EXISTS\r\na2 OK [READ-WRITE] done\r\n")
    assert d.state == state
    return d


ANY_STATE = ("CAPABILITY", "NOOP", "LOGOUT", "ID", "ENABLE", "LANGUAGE")
NOT_AUTHENTICATED = ("STARTTLS", "AUTHENTICATE", "LOGIN")
AUTHENTICATED = ("SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
                 "LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE", "IDLE", "GETQUOTA",
                 "GETQUOTAROOT", "GETACL", "MYRIGHTS", "XLIST")
SELECTED = ("CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID",
            "UNSELECT", "SORT", "THREAD")


def test_imap_commands_by_state():
    login_first = "Log in first, for example: a1 LOGIN alice wonderland"
    for word in ANY_STATE:
        for state in ("not authenticated", "authenticated", "selected"):
            assert notes(imap_in(state), f"t1 {word.lower()}") == "", (word, state)
    for word in NOT_AUTHENTICATED:
        assert notes(imap_in("not authenticated"), f"t1 {word}") == "", word
        for state in ("authenticated", "selected"):
            assert notes(imap_in(state), f"t1 {word}") == "You are logged in already.", word
    for word in AUTHENTICATED:
        assert notes(imap_in("not authenticated"), f"t1 {word}") == login_first, word
        for state in ("authenticated", "selected"):
            assert notes(imap_in(state), f"t1 {word}") == "", (word, state)
    for word in SELECTED:
        assert notes(imap_in("not authenticated"), f"t1 {word}") == login_first, word
        assert notes(imap_in("authenticated"), f"t1 {word}") == (
            f"{word} needs a selected folder: SELECT one first, for example: a2 SELECT INBOX")
        assert notes(imap_in("selected"), f"t1 {word}") == "", word


def test_imap_lines_that_are_no_command():
    d = imap_in("authenticated")
    assert notes(d, "").startswith("An empty line is not an IMAP command")
    assert notes(d, "NOOP") == ("IMAP commands start with a tag of your choice (a1, a2, ...): the "
                                "server reads NOOP as the tag.")
    assert notes(d, "a7") == "After the tag comes a command, for example: a7 NOOP"
    assert notes(d, "a7 NOOP") == "" and notes(d, "a7 NOOP extra words") == ""
    assert notes(d, "a7 FROB x") == "FROB is not an IMAP command."


def test_imap_answers_move_the_state():
    d = imap_in("not authenticated")
    answer(d, "a1 LOGIN alice wrong", b"a1 NO [AUTHENTICATIONFAILED] wrong\r\n")
    assert d.state == "not authenticated"
    answer(d, "a2 AUTHENTICATE PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=", b"a2 OK\r\n")
    assert d.state == "authenticated"
    answer(d, "a3 EXAMINE INBOX", b"a3 OK [READ-ONLY]\r\n")
    assert d.state == "selected"
    answer(d, "a4 CLOSE", b"a4 OK\r\n")
    assert d.state == "authenticated"
    answer(d, "a5 SELECT INBOX", b"a5 OK\r\n")
    answer(d, "a6 UNSELECT", b"a6 OK\r\n")
    assert d.state == "authenticated"
    answer(d, "a7 SELECT INBOX", b"a7 OK\r\n")
    answer(d, "a8 SELECT Nowhere", b"a8 NO no such folder\r\n")
    assert d.state == "authenticated"  # a failed SELECT leaves no folder selected
    answer(d, "a9 EXAMINE INBOX", b"a9 OK\r\n")
    answer(d, "b1 EXAMINE Nowhere", b"b1 NO no such folder\r\n")
    assert d.state == "authenticated"
    answer(d, "b2 SELECT INBOX", b"b2 OK\r\n")
    answer(d, "b3 FETCH 1 FLAGS", b"b3 NO no such message\r\n")
    answer(d, "b4 CLOSE", b"b4 BAD not now\r\n")
    assert d.state == "selected" and not d.closing
    answer(d, "b5 LIST \"\" *", b"* LIST () \"/\" INBOX\r\nb5 OK\r\n")
    assert d.state == "selected" and not d.start_tls


def test_imap_starttls_logout_and_bye():
    d = imap_in("not authenticated")
    answer(d, "a1 STARTTLS", b"a1 NO not now\r\n")
    assert not d.start_tls
    answer(d, "a2 STARTTLS", b"a2 OK Begin TLS\r\n")
    assert d.start_tls and d.tls_started() == [] and not d.start_tls
    answer(d, "a3 NOOP", b"a3 OK\r\n")
    assert not d.closing
    answer(d, "a4 LOGOUT", b"* BYE logging out\r\na4 OK\r\n")
    assert d.closing
    bye = imap_in("authenticated")
    answer(bye, "a5 NOOP", b"* bye idle too long\r\na5 OK\r\n")
    assert bye.closing
    word = imap_in("authenticated")
    answer(word, "a6 logout", b"a6 OK\r\n")
    assert word.closing


def test_imap_greetings():
    preauth = ImapDriver()
    preauth.answered(None, fed(preauth.greeting(), b"* PREAUTH welcome, alice\r\n"))
    assert preauth.state == "authenticated" and not preauth.closing
    ok = ImapDriver()
    ok.answered(None, fed(ok.greeting(), b"* OK ready\r\n"))
    assert ok.state == "not authenticated" and not ok.closing
    bye = ImapDriver()
    bye.answered(None, fed(bye.greeting(), b"* BYE too many connections\r\n"))
    assert bye.closing and bye.state == "not authenticated"
    greeting = ImapDriver().greeting()
    assert isinstance(greeting, ImapReply) and fed(greeting, b"* OK ready\r\n").done


def test_imap_a_literal_that_ends_inside_a_line():
    d = imap_in("not authenticated")
    first = d.step("a1 LOGIN {5}")
    d.answered(first, fed(first.reply, b"+ ready\r\n"))
    rest = d.step("alice wonderland")  # 5 bytes of literal, then the rest of the command
    assert rest.reply.tag == b"a1" and d.literal_left == 0 and not d.command_open
    assert d.unfinished() == []
    d.answered(rest, fed(rest.reply, b"a1 OK\r\n"))
    nxt = d.step("a2 NOOP")
    assert nxt.reply.tag == b"a2" and nxt.command == "NOOP"


def test_imap_a_password_that_looks_like_a_literal_is_data():
    d = imap_in("not authenticated")
    first = d.step("a1 LOGIN alice {3}")
    d.answered(first, fed(first.reply, b"+ ready\r\n"))
    secret = d.step("{8}")  # the literal is "{8}"; the CRLF after it ends the command
    assert secret.reply.tag == b"a1" and d.literal_left == 0 and not d.command_open


def test_imap_unfinished_commands():
    d = imap_in("authenticated")
    step = d.step("a3 APPEND INBOX {30}")
    d.answered(step, fed(step.reply, b"+ go\r\n"))
    d.step("Subject: x")
    assert d.unfinished() == ["The literal is not complete: the server still waits for 18 more "
                              "bytes."]
    idle = imap_in("selected")
    answer(idle, "a4 IDLE", b"+ idling\r\n")
    assert idle.unfinished()[0].startswith("The command is not finished")
    done = idle.step("DONE")
    assert done.reply.tag == b"a4" and done.command == "IDLE"
    idle.answered(done, fed(done.reply, b"a4 OK IDLE done\r\n"))
    assert idle.unfinished() == [] and not idle.command_open


def test_imap_deciding_line():
    reply = fed(ImapReply(b"a1"), b"* 1 EXISTS\r\na1 OK done\r\n")
    assert ImapDriver.deciding_line(reply) == "a1 OK done"
    assert ImapDriver.deciding_line(ImapReply(b"a1")) == ""
    assert ImapDriver.deciding_line(fed(SmtpReply(), b"250 x\r\n")) == "250 x"


# =========================================================================== IMAP reader
def test_imap_reply_last_line_and_status():
    reply = ImapReply(b"a1")
    rest = reply.feed(b"* 1 EXISTS\r\na1 OK done\r\n* 2 EXISTS\r\n")
    assert reply.last_line == b"a1 OK done" and reply.status == "OK"
    assert rest == b"* 2 EXISTS\r\n"
    first = ImapReply(b"a1")
    assert first.feed(b"a1 NO nope\r\n") == b"" and first.last_line == b"a1 NO nope"
    assert first.status == "NO"
    assert fed(ImapReply(b"a1"), b"a1 bad\r\n").status == "BAD"
    assert fed(ImapReply(b"a1"), b"+Ready\r\n").status == "+"
    assert fed(ImapReply(b"a1"), b"+ Ready\r\n").status == "+"
    untagged_bad = fed(ImapReply(b"a1"), b"* BAD line too long\r\n")
    assert untagged_bad.done and untagged_bad.status == ""
    assert fed(ImapReply(b"a1"), b"a1 \r\n").status == ""  # the tag and nothing after it
    assert fed(ImapReply(None), b"* OK hi\r\n").status == ""
    assert fed(ImapReply(None), b"\n").done  # a bare line end is a whole (empty) line


# =========================================================================== SMTP/POP3 readers
def test_line_readers_hand_back_what_follows():
    reply = SmtpReply()
    assert reply.feed(b"250-a\r\n250 b") == b"" and not reply.done
    assert reply.feed(b"\r\n354 next\r\n") == b"354 next\r\n" and reply.done
    assert reply.feed(b"more") == b"more" and reply.raw == b"250-a\r\n250 b\r\n"
    assert fed(SmtpReply(), b"\n").done  # an empty line is no "250-": the answer ends
    pop = Pop3Reply(True)
    assert pop.feed(b"+OK\r\nline\r\n.\r\n+OK next\r\n") == b"+OK next\r\n"


def test_abstract_parts_say_so():
    with pytest.raises(NotImplementedError):
        Driver().step("x")
    with pytest.raises(NotImplementedError):
        Reply().feed(b"x\r\n")
    from maillab.sessions.replies import _LineReply
    with pytest.raises(NotImplementedError):
        _LineReply().feed(b"x\r\n")
    assert Driver().greeting() is None and Driver().unfinished() == []
    assert Driver.deciding_line(fed(SmtpReply(), b"250 x\r\n")) == "250 x"


# =========================================================================== HTTP driver and reader
def test_http_methods_and_request_line_remarks():
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"):
        assert HttpDriver().request([f"{method.lower()} / HTTP/1.1", "Host: x", ""]).notes == []
    assert HttpDriver().request(["FETCH / HTTP/1.1", "Host: x", ""]).notes == [
        "FETCH is not an HTTP method (GET, POST, HEAD, ...)."]
    three = ("The request line has three parts: method, path and version, for example: "
             "GET / HTTP/1.1")
    assert HttpDriver().request(["GET /", ""]).notes == [three]
    assert HttpDriver().request(["GET / HTTP/1.1 extra", "Host: x", ""]).notes == [three]
    assert HttpDriver().request(["GET / FTP/1.1", ""]).notes == [three]
    assert HttpDriver().request(["GET / HTTP/1.0", ""]).notes == []  # 1.0 needs no Host
    assert HttpDriver().request(["GET / HTTP/1.1", ""]).notes == [
        "HTTP/1.1 needs a Host: header line (the name of the web site)."]
    assert HttpDriver().request(["", "body"]).notes[0] == (
        "A request starts with a line such as: GET / HTTP/1.1")
    assert list(HttpDriver().steps([])) == []


def test_http_body_lines_are_joined_by_crlf():
    step = HttpDriver().request(["POST /f HTTP/1.1", "Host: x", "", "a=1", "b=2"])
    assert step.data == (b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\na=1\r\nb=2")
    assert step.command == "POST" and not step.reply.head_only
    chunked = HttpDriver().request(["POST /f HTTP/1.1", "Host: x", "Transfer-Encoding: chunked",
                                    "", "3", "abc", "0", ""])
    assert b"Content-Length" not in chunked.data and chunked.added == set()


def test_http_the_request_line_is_no_header():
    step = HttpDriver().request(["Content-Length: 3", "", "abc"])  # the request line forgotten
    assert step.shown[step.added.pop()] == "Content-Length: 3"


def test_http_driver_closes_with_the_server():
    d = HttpDriver()
    keep = fed(HttpReply(), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    d.answered(None, keep)
    assert not d.closing
    d.answered(None, fed(HttpReply(), b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                                      b"Content-Length: 0\r\n\r\n"))
    assert d.closing
    assert HttpDriver.deciding_line(keep) == "HTTP/1.1 200 OK"
    assert HttpDriver.deciding_line(fed(SmtpReply(), b"250 x\r\n")) == "250 x"


def test_http_reply_status_head_and_closing():
    reply = fed(HttpReply(), b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                             b"Content-Length: 3\r\n\r\nabc")
    assert reply.done and reply.status == 201  # the whole answer arrived in one piece
    assert reply.head == b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\n"
    assert not reply.closes and not reply.whole_at_close()
    assert fed(HttpReply(), b"SMTP?\r\n\r\n").status == 0
    assert HttpReply().status == 0 and not HttpReply().whole_at_close()
    old = fed(HttpReply(), b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert old.done and old.closes
    kept = fed(HttpReply(), b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                            b"Content-Length: 0\r\n\r\n")
    assert kept.done and not kept.closes


def test_http_answers_without_a_body():
    for status in (b"101 Switching Protocols", b"204 No Content", b"304 Not Modified"):
        reply = HttpReply()
        rest = reply.feed(b"HTTP/1.1 " + status + b"\r\nX: y\r\n\r\nNEXT")
        assert reply.done and rest == b"NEXT", status
    assert fed(HttpReply(), b"\r\n\r\n").done  # no status line at all: do not wait for a body


def test_http_chunks():
    sixteen = b"0123456789abcdef"
    body = b"10\r\n" + sixteen + b"\r\n0\r\n\r\n"
    reply = HttpReply()
    rest = reply.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"NEXT")
    assert reply.done and rest == b"NEXT"
    inside = b"13\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"  # a chunk that holds a header-like line
    reply = HttpReply()
    rest = reply.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + inside + b"NEXT")
    assert reply.done and rest == b"NEXT"
    bad = HttpReply()
    rest = bad.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello")
    assert bad.done and rest == b"hello"  # not chunked after all: stop rather than wait


# =========================================================================== the evidence
def test_result_fresh_and_reading():
    result = SessionResult("pop3", "box")
    assert (result.protocol, result.name, result.open, result.seconds) == ("pop3", "box", False, 0.0)
    assert repr(result) == "<pop3 session: nothing was said>" and result.ok
    result.items.append(Exchange(sent=["USER alice"], reply=["+OK"]))
    assert result.reply_to("user") == ["+OK"] and result.reply_to("PASS") == []
    assert result.text == "C: USER alice\nS: +OK"
    result.fail("first")
    result.fail("second")
    assert result.error == "first" and result.events == ["first", "second"] and not result.ok
    assert "!! second" in result.text


def test_result_long_answers_show_their_start_and_end():
    exactly = [f"line {i}" for i in range(MAX_SHOWN)]
    result = SessionResult("pop3")
    result.items.append(Exchange(sent=["RETR 1"], reply=exactly))
    assert result.text.count("S: ") == MAX_SHOWN and "more lines" not in result.text
    longer = [f"line {i}" for i in range(100)]
    result = SessionResult("pop3")
    result.items.append(Exchange(sent=["RETR 1"], reply=longer, line_meanings={0: "first"}))
    shown = [line[3:] for line in result.text.splitlines() if line.startswith("S: ")]
    assert len(shown) == MAX_SHOWN
    assert shown[:54] == longer[:54] and shown[54] == "... 41 more lines ..."
    assert shown[55:] == longer[-5:]
    html = result._repr_html_()
    assert "line 53<" in html and "line 54<" not in html and "line 99<" in html
    assert 'title="first"' not in html  # the meanings' indexes are those of the whole answer


def test_result_html_marks_sides_tls_added_lines_and_notes():
    result = SessionResult("http")
    result.event("connected", "info")
    result.event("TLS started", "tls")
    result.items.append(Exchange(sent=["GET / HTTP/1.1", ""], reply=['say "hi" <b>'],
                                 explanation='OK: "fine"', notes=["a remark"], added={1},
                                 encrypted=True, line_meanings={0: "meaning"}))
    result.items.append(Exchange(sent=["plain"], reply=["x"]))
    result.fail("gone")
    html = result._repr_html_()
    events = html.split("<div")
    assert sum("TLS</span>" in part for part in events) == 4  # the event and each row of x
    assert html.count("encrypted (TLS)") == 4
    assert "color:#b00020" in html.split("gone")[0].rsplit("<div", 1)[1]
    assert "color:#b00020" not in html.split("connected")[0].rsplit("<div", 1)[1]
    assert "GET / HTTP/1.1</div>" in html and html.count("(added by maillab)") == 1
    assert "\u23ce</span> <span" in html  # the empty line shown as a mark, and it was added
    assert "say &quot;hi&quot; &lt;b&gt;" in html and 'title="meaning"' in html
    assert "OK: &quot;fine&quot;</div>" in html and ">a remark</div>" in html
    assert ">plain</div>" in html and html.index(">plain</div>") < html.index(">x</div>")
    tls_free = SessionResult("smtp")
    tls_free.items.append(Exchange(sent=["NOOP"], reply=["250 OK"]))
    assert "TLS" not in tls_free._repr_html_()


# =========================================================================== run.py: where to connect
class FakeService:
    def __init__(self, port, standard_port, hostname):
        self.port, self.standard_port, self.hostname = port, standard_port, hostname


class FakeLab:
    """What resolve_target reads of a lab: its host, domains and services."""

    def __init__(self, running=True, started_at=1.0):
        self.running, self.started_at = running, started_at
        self.host = "127.0.0.9"
        self.domains = ["example.com", "example.net"]
        self.ca = None

    def service(self, name, domain):
        ports = {"smtp": (2525, 25), "smtps": (4465, 465), "submission": (2587, 587),
                 "pop3": (2110, 110), "imap": (2143, 143), "imaps": (2993, 993),
                 "webmail": (8080, 80)}
        if name not in ports:
            raise KeyError(name)
        return FakeService(*ports[name], f"mail.{domain}")

    def hostname(self, domain):
        return f"mail.{domain}"


@pytest.fixture
def no_lab(monkeypatch):
    monkeypatch.setattr(labmodule, "_current", None)
    monkeypatch.setattr(labmodule, "_all_labs", type(labmodule._all_labs)())


def test_find_lab_prefers_the_current_then_the_newest_running(no_lab, monkeypatch):
    with pytest.raises(runmodule.SessionProblem, match="No mail lab is running"):
        runmodule.find_lab()
    current, older, newer, stopped = FakeLab(), FakeLab(started_at=0.5), FakeLab(started_at=9), \
        FakeLab(running=False)
    assert runmodule.find_lab(current) is current
    with pytest.raises(runmodule.SessionProblem, match="The lab is stopped"):
        runmodule.find_lab(stopped)
    monkeypatch.setattr(labmodule, "_current", current)
    assert runmodule.find_lab() is current
    labs = labmodule._all_labs
    for one in (older, newer, stopped):
        labs.add(one)
    monkeypatch.setattr(labmodule, "_current", stopped)
    assert runmodule.find_lab() is newer
    unknown_start = FakeLab(started_at=None)
    labs.discard(newer)
    labs.add(unknown_start)
    assert runmodule.find_lab() is older  # a lab that never said when it started comes last
    for one in (older, unknown_start):
        labs.discard(one)
    with pytest.raises(runmodule.SessionProblem, match="The lab is stopped"):
        runmodule.find_lab()


def test_standard_ports_of_any_server(no_lab):
    expected = {("smtp", False): 25, ("smtp", True): 465, ("pop3", False): 110,
                ("pop3", True): 995, ("imap", False): 143, ("imap", True): 993,
                ("http", False): 80, ("http", True): 443}
    for (protocol, tls), port in expected.items():
        target = runmodule.resolve_target(protocol, host="127.0.0.1", tls=tls)
        assert (target.host, target.port, target.implicit_tls) == ("127.0.0.1", port, tls)
        assert target.label == f"127.0.0.1 port {port}" and target.lab is None
        assert not target.lab_gone()
    assert runmodule.resolve_target("pop3", host="127.0.0.1", port=7).port == 7


def test_any_server_still_trusts_the_running_lab(monkeypatch):
    lab = FakeLab()
    monkeypatch.setattr(labmodule, "_current", lab)
    assert runmodule.resolve_target("imap", host="127.0.0.1").lab is lab
    bare_port = runmodule.resolve_target("imap", port=2144)  # a port of the running lab's host
    assert (bare_port.host, bare_port.port, bare_port.lab) == ("127.0.0.9", 2144, lab)
    lab.running = False
    assert runmodule.resolve_target("imap", host="127.0.0.1").lab is None


def test_targets_of_the_lab():
    lab = FakeLab()
    t = runmodule.resolve_target("smtp", None, lab=lab)
    assert (t.host, t.port, t.server_hostname, t.label) == (
        "127.0.0.9", 2525, "mail.example.com", "mail.example.com port 2525 (stands for 25)")
    assert t.lab is lab and not t.lab_gone()
    net = runmodule.resolve_target("imap", "mail.example.net", tls=True, lab=lab)
    assert (net.port, net.server_hostname, net.implicit_tls) == (2993, "mail.example.net", True)
    assert runmodule.resolve_target("http", "webmail.example.net", lab=lab).server_hostname == \
        "mail.example.net"
    assert runmodule.resolve_target("smtp", "Example.NET.", lab=lab).server_hostname == \
        "mail.example.net"
    assert runmodule.resolve_target("smtp", "example.com", submission=True, lab=lab).port == 2587
    chosen = runmodule.resolve_target("smtp", "example.com", port=2600, lab=lab)
    assert chosen.port == 2600 and chosen.label == "mail.example.com port 2600"
    bare_port = runmodule.resolve_target("pop3", port=2111, lab=lab)
    assert (bare_port.host, bare_port.port, bare_port.lab) == ("127.0.0.9", 2111, lab)
    with pytest.raises(runmodule.SessionProblem, match="mail.example.org is not a domain"):
        runmodule.resolve_target("smtp", "mail.example.org", lab=lab)
    with pytest.raises(runmodule.SessionProblem, match="smtp.example.com is not a domain"):
        runmodule.resolve_target("smtp", "smtp.example.com", lab=lab)
    with pytest.raises(runmodule.SessionProblem, match="example.com.evil is not a domain"):
        runmodule.resolve_target("smtp", "mail.example.com.evil", lab=lab)
    with pytest.raises(runmodule.SessionProblem, match="no HTTP server over TLS"):
        runmodule.resolve_target("http", None, tls=True, lab=lab)
    with pytest.raises(runmodule.SessionProblem, match="no pop3s service"):
        runmodule.resolve_target("pop3", None, tls=True, lab=lab)
    same = FakeLab()
    same.service = lambda name, domain: FakeService(2525, 2525, "mail.example.com")
    assert runmodule.resolve_target("smtp", None, lab=same).label == "mail.example.com port 2525"
    lab.running = False
    assert t.lab_gone()


def test_cell_lines():
    lines = runmodule._cell_lines
    assert lines("\n \nEHLO me\r\n\r\nQUIT\r\n\n  \n") == ["EHLO me", "", "QUIT"]
    assert lines("a\rb") == ["a", "b"]
    assert lines("GET / HTTP/1.1\nHost: x\n\n", keep_final_blank=True) == [
        "GET / HTTP/1.1", "Host: x", ""]
    assert lines("GET / HTTP/1.1\nHost: x\n", keep_final_blank=True) == [
        "GET / HTTP/1.1", "Host: x"]
    assert lines("\n\n", keep_final_blank=True) == [] and lines("") == []


# =========================================================================== run.py: scripted peers
@contextlib.contextmanager
def scripted_peer(greeting: bytes, answers=(), then=None, wrap=None, implicit=False):
    """A loopback server that says ``greeting``, then for each ``(awaited, answer[, "tls"])``
    waits until the client's bytes hold ``awaited`` and sends ``answer`` (None: hangs up; "tls":
    then ``wrap(conn)`` starts TLS), then runs ``then(conn)`` if given, and keeps what the client
    sends until it hangs up. ``implicit``: TLS from the first byte. Yields the port and the
    client's bytes."""
    listener = socket.create_server(("127.0.0.1", 0))
    got = bytearray()

    def serve():
        conn, _addr = listener.accept()
        try:
            conn.settimeout(5)
            if implicit:
                conn = wrap(conn)
            conn.sendall(greeting)
            seen = 0
            for awaited, reply, *tls in answers:
                while got.find(awaited, seen) < 0:
                    data = conn.recv(65536)
                    if not data:
                        return
                    got.extend(data)
                seen = got.find(awaited, seen) + len(awaited)
                if reply is None:
                    return
                conn.sendall(reply)
                if tls:
                    conn = wrap(conn)
                    seen = len(got)
            if then is not None:
                then(conn)
            while data := conn.recv(65536):
                got.extend(data)
        except OSError:
            pass
        finally:
            conn.close()

    with serving(listener, serve, got) as served:
        yield served


@contextlib.contextmanager
def serving(listener: socket.socket, serve, kept, stop: threading.Event | None = None):
    """Runs ``serve`` in a thread for the with block, which gets the listener's port and
    ``kept`` (what the server records); then sets ``stop`` (if given), closes the listener and
    waits for the thread."""
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], kept
    finally:
        if stop is not None:
            stop.set()
        listener.close()
        thread.join(5)


def run_against(greeting: bytes, answers, protocol: str, text: str, **options):
    with scripted_peer(greeting, answers) as (port, got):
        result = runmodule.run_session(protocol, None, text, host="127.0.0.1", port=port,
                                       timeout=options.pop("timeout", 2), **options)
    return result, bytes(got)


def test_what_follows_an_answer_belongs_to_the_next():
    result, sent = run_against(b"* OK hi\r\n", [(b"a1 NOOP\r\n", b"a1 OK done\r\n* 3 EXISTS\r\n"),
                                                (b"a2 NOOP\r\n", b"a2 OK\r\n")],
                               "imap", "a1 NOOP\na2 NOOP")
    assert result.ok, result.text
    assert result.replies == [([], ["* OK hi"]), (["a1 NOOP"], ["a1 OK done"]),
                              (["a2 NOOP"], ["* 3 EXISTS", "a2 OK"])]
    assert sent == b"a1 NOOP\r\na2 NOOP\r\n"
    assert 0 < result.seconds < 2
    assert result.events[-1] == ("the cell ended, so maillab closed the connection (the server "
                                 "saw no LOGOUT)")


def test_what_the_server_says_before_being_asked_is_shown_apart():
    result, _ = run_against(b"220 hi\r\n250 unasked\r\n", [(b"NOOP\r\n", b"250 asked\r\n")],
                            "smtp", "NOOP")
    assert result.ok, result.text
    assert result.replies == [([], ["220 hi"]), ([], ["250 unasked"]), (["NOOP"], ["250 asked"])]
    assert result.exchanges[1].notes == ["The server said this on its own since the last cell."]


def test_a_remark_about_an_answer_is_shown_below_it():
    answers = [(b"USER john\r\n", b"+OK\r\n"),
               (b"PASS postman\r\n", b"-ERR [IN-USE] maildrop already in use\r\n"),
               (b"STAT\r\n", b"-ERR not logged in\r\n")]
    result, _ = run_against(b"+OK hi\r\n", answers, "pop3", "USER john\nPASS postman\nSTAT")
    assert result.ok, result.text
    refused = result.exchanges[2]
    assert refused.sent == ["PASS postman"] and refused.notes[0].startswith(
        "Another session is still logged in to this mailbox"), refused.notes
    assert "! Another session is still logged in" in result.text


def test_nbgraders_placeholder_lines_are_not_sent():
    # a lab's session cell as released: the learner writes the session below the placeholder
    # and may keep it; "# YOUR CODE HERE" must not become the request line or a command
    kept = "# YOUR CODE HERE\nraise NotImplementedError()\nGET / HTTP/1.1\nHost: x\n"
    result, sent = run_against(b"", [(b"\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")],
                               "http", kept)
    assert result.ok, result.text
    assert sent == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert result.events[0].startswith('maillab did not send the lines "# YOUR CODE HERE"')
    assert runmodule._cell_lines("  # YOUR CODE HERE\nNOOP\n raise NotImplementedError()") == ["NOOP"]
    with socket.socket() as closed:  # nothing listens: the cell must not even connect
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    template = runmodule.run_session("smtp", None, "# YOUR CODE HERE\nraise NotImplementedError()",
                                     host="127.0.0.1", port=port)
    assert not template.ok and template.error.startswith("Write your session here: replace the "
                                                         'lines "# YOUR CODE HERE"'), template.text


def test_the_goodbye_word_of_each_protocol():
    smtp, _ = run_against(b"220 hi\r\n", [], "smtp", "")
    assert smtp.events[-1].endswith("(the server saw no QUIT)")
    pop3, _ = run_against(b"+OK hi\r\n", [], "POP3", "")
    assert pop3.events[-1].endswith("(the server saw no QUIT)") and pop3.protocol == "pop3"
    http, _ = run_against(b"", [(b"\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")],
                          "http", "GET / HTTP/1.1\nHost: x\n")
    assert http.ok and http.events[-1] == "the cell ended, so maillab closed the connection"
    with pytest.raises(ValueError, match="no session driver"):
        runmodule.run_session("gopher", None, "x")


def test_quit_waits_briefly_to_see_the_hang_up_and_shows_late_words():
    def late_words(conn):
        time.sleep(0.05)
        conn.sendall(b"a late line\r\n")
        conn.shutdown(socket.SHUT_WR)

    with scripted_peer(b"220 hi\r\n", [(b"QUIT\r\n", b"221 bye\r\n")], late_words) as (port, _):
        result = runmodule.run_session("smtp", None, "QUIT", host="127.0.0.1", port=port)
    assert result.ok
    assert result.replies[-1] == ([], ["a late line"])
    assert result.events[-1] == "the server closed the connection"


def test_a_server_that_stays_after_quit_is_waited_for_at_most_a_second():
    answers = [(b"QUIT\r\n", b"221 bye\r\n250 extra\r\n"), (b"NOOP\r\n", b"250 real\r\n")]
    with scripted_peer(b"220 hi\r\n", answers, lambda conn: time.sleep(1.5)) as (port, _):
        started = time.monotonic()
        result = runmodule.run_session("smtp", None, "QUIT\nNOOP", host="127.0.0.1", port=port,
                                       timeout=10)
        waited = time.monotonic() - started
    assert waited < 8, waited  # two waits of one second (after QUIT, after the next line), not 10
    assert result.replies[2:] == [([], ["250 extra"]), (["NOOP"], ["250 real"])]
    assert "the server closed the connection" not in result.events
    assert result.events[-1].startswith("the cell ended, so maillab closed the connection")


def test_a_server_that_answers_in_pieces_is_waited_for_between_them():
    def trickle(conn):
        for piece in (b"250-b\r\n", b"250-c\r\n", b"250-d\r\n", b"250 e\r\n"):
            time.sleep(0.3)
            conn.sendall(piece)

    with scripted_peer(b"220 hi\r\n", [(b"EHLO me\r\n", b"250-a\r\n")], trickle) as (port, _):
        result = runmodule.run_session("smtp", None, "EHLO me", host="127.0.0.1", port=port,
                                       timeout=0.8)
    assert result.ok, result.text  # each piece came within 0.8 s of the one before
    assert result.reply_to("EHLO") == ["250-a", "250-b", "250-c", "250-d", "250 e"]


def test_http_until_close_and_lines_not_sent():
    with scripted_peer(b"", [(b"\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nall of it")],
                       lambda conn: conn.shutdown(socket.SHUT_RDWR)) as (port, _):
        result = runmodule.run_session("http", None, "GET / HTTP/1.0\n\n", host="127.0.0.1",
                                       port=port, timeout=2)
    assert result.ok, result.text
    assert result.server_lines == ["HTTP/1.0 200 OK", "", "all of it"]
    assert "the cell ended, so maillab closed the connection" not in result.events
    closed, _ = run_against(b"220 hi\r\n", [(b"NOOP\r\n", None)], "smtp", "NOOP\nNOOP\nNOOP")
    assert closed.error == "2 more lines of the cell were not sent: the connection is closed."
    assert "the server closed the connection" in closed.events


def test_imap_untagged_lines_explain_themselves():
    result, _ = run_against(b"* OK hi\r\n", [(b"a1 NOOP\r\n", b"* 3 EXISTS\r\na1 OK done\r\n")],
                            "imap", "a1 NOOP")
    noop = result.exchanges[1]
    assert set(noop.line_meanings) == {0} and noop.line_meanings[0]  # the tagged line is
    assert noop.explanation                                           # the whole answer's
    smtp, _ = run_against(b"220 hi\r\n", [(b"NOOP\r\n", b"* 3 EXISTS\r\n")],
                          "smtp", "NOOP")
    assert smtp.exchanges[1].line_meanings == {}


def test_lines_sent_without_an_answer_join_the_next_answer():
    result, sent = run_against(b"220 hi\r\n", [(b"DATA\r\n", b"354 go\r\n"),
                                               (b"\r\n.\r\n", b"250 kept\r\n")],
                               "smtp", "DATA\nSubject: x\n\nbody\n.")
    assert result.replies[-1] == (["Subject: x", "", "body", "."], ["250 kept"])
    assert sent == b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
    http, _ = run_against(b"", [(b"\r\n\r\nab", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")],
                          "http", "POST / HTTP/1.1\nHost: x\n\nab")
    (exchange,) = http.exchanges
    assert exchange.sent[exchange.added.pop()] == "Content-Length: 2" and not exchange.added


def test_named_sessions_without_a_lab(no_lab):
    with scripted_peer(b"220 hi\r\n", [(b"NOOP\r\n", b"250 one\r\n"),
                                       (b"NOOP\r\n", b"250 two\r\n")]) as (port, _):
        first = runmodule.run_session("smtp", None, "NOOP", host="127.0.0.1", port=port,
                                      session="s1", timeout=2)
        assert first.open and first.name == "s1" and "s1" in runmodule.open_sessions()
        second = runmodule.run_session("smtp", None, "NOOP", session="s1", timeout=0.5)
        assert second.open and second.events[0].startswith("session s1 goes on (127.0.0.1 port")
        assert second.reply_to("NOOP") == ["250 two"]
        kept = runmodule.open_sessions()["s1"]
        assert kept.timeout == 0.5
        assert runmodule.close_session("s1") and not runmodule.close_session("s1")
        assert not kept.connected
        assert "s1" not in runmodule.open_sessions()
    nothing = runmodule.run_session("smtp", None, "", session="s2")
    assert nothing.events == ["There is no open session s2: nothing to show or close."]
    assert not nothing.open and nothing.ok


def test_a_named_session_closed_by_the_server_between_cells(no_lab):
    def bye_soon(conn):
        time.sleep(0.2)
        conn.sendall(b"421 closing\r\n")
        conn.shutdown(socket.SHUT_RDWR)

    with scripted_peer(b"220 hi\r\n", [(b"NOOP\r\n", b"250 ok\r\n")], bye_soon) as (port, _):
        runmodule.run_session("smtp", None, "NOOP", host="127.0.0.1", port=port, session="s3",
                              timeout=2)
        time.sleep(0.5)
        later = runmodule.run_session("smtp", None, "NOOP", session="s3", timeout=2)
    assert later.replies[0] == ([], ["421 closing"])
    assert later.error == "The server closed this session since the last cell: start it again."
    assert not later.open and "s3" not in runmodule.open_sessions()
    assert later.client_lines == []  # nothing is sent on a connection the server closed


def test_a_named_session_run_again_after_logout_says_it_starts_afresh(no_lab):
    # 03-imap's second session cell ends with LOGOUT; run again, it reconnects: the server has
    # forgotten the login and the folder, and the cell says so instead of a silent new start
    # (a name of this test alone: the module remembers which names closed, across tests)
    bye = [(b"a1 LOGIN a b\r\n", b"a1 OK in\r\n"), (b"a2 LOGOUT\r\n", b"* BYE\r\na2 OK bye\r\n")]
    with scripted_peer(b"* OK hi\r\n", bye, lambda conn: conn.shutdown(socket.SHUT_RDWR)) as (
            port, _):
        first = runmodule.run_session("imap", None, "a1 LOGIN a b\na2 LOGOUT", host="127.0.0.1",
                                      port=port, session="logout-box", timeout=2)
    assert not first.open and not any("earlier cell" in e for e in first.events)
    with scripted_peer(b"* OK hi\r\n", [(b"a3 NOOP\r\n", b"a3 OK\r\n"),
                                         (b"a4 NOOP\r\n", b"a4 OK\r\n")]) as (port, _):
        again = runmodule.run_session("imap", None, "a3 NOOP", host="127.0.0.1", port=port,
                                      session="logout-box", timeout=2)
        assert again.events[0] == ("Session logout-box was closed in an earlier cell (LOGOUT, QUIT or "
                                   "the server hung up), so this cell starts a new connection: the "
                                   "server does not remember the earlier login or selected folder.")
        third = runmodule.run_session("imap", None, "a4 NOOP", session="logout-box", timeout=2)
        runmodule.close_session("logout-box")
    assert third.events[0].startswith("session logout-box goes on")  # said once, not at every cell
    with scripted_peer(b"* OK hi\r\n") as (port, _):  # a name never used before: no remark
        fresh = runmodule.run_session("imap", None, "", host="127.0.0.1", port=port,
                                      session="new-box", timeout=2)
        runmodule.close_session("new-box")
    assert not any("earlier cell" in e for e in fresh.events)


def test_a_session_whose_socket_is_gone_is_forgotten(no_lab):
    with scripted_peer(b"220 hi\r\n") as (port, _):
        runmodule.run_session("smtp", None, "", host="127.0.0.1", port=port, session="s4",
                              timeout=2)
        runmodule._open["s4"].close()
        assert "s4" not in runmodule.open_sessions()


def test_no_whole_answer_in_time_stops_the_cell():
    with scripted_peer(b"220 hi\r\n") as (port, got):
        result = runmodule.run_session("smtp", None, "NOOP\nQUIT", host="127.0.0.1", port=port,
                                       timeout=0.2)
    assert result.error.startswith("No whole answer within 0.2 s")
    assert bytes(got) == b"NOOP\r\n"  # the rest of the cell was not sent


def test_a_server_trickling_for_ever_is_cut_off():
    def trickle(conn):
        for _ in range(3000):  # a piece every 10 ms for 30 s: never 0.1 s of silence
            time.sleep(0.01)
            conn.sendall(b"250-more\r\n")

    with scripted_peer(b"220 hi\r\n", [(b"EHLO me\r\n", b"250-a\r\n")], trickle) as (port, _):
        started = time.monotonic()
        result = runmodule.run_session("smtp", None, "EHLO me", host="127.0.0.1", port=port,
                                       timeout=0.1)
        waited = time.monotonic() - started
    assert result.error.startswith("No whole answer within 0.1 s")
    assert waited < 10, waited  # ten timeouts at most (1 s), not the server's 30 s


def test_a_timeout_of_zero_gives_up_at_once():
    with scripted_peer(b"220 hi\r\n", [(b"NOOP\r\n", b"250 late\r\n")]) as (port, _):
        session = runmodule.Session("smtp", runmodule.Target("127.0.0.1", port, "x", False, "x"),
                                    timeout=2)
        result = SessionResult("smtp")
        session.open(result)
        session.timeout = 0
        session.run(["NOOP"], result)
        session.close()
    assert result.error.startswith("No whole answer within 0 s")


def test_one_line_left_unsent_is_counted():
    result, _ = run_against(b"220 hi\r\n", [(b"NOOP\r\n", None)], "smtp", "NOOP\nQUIT")
    assert result.error == "1 more lines of the cell were not sent: the connection is closed."


def test_a_reset_connection_is_a_hang_up():
    def reset(conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    with scripted_peer(b"220 hi\r\n", [(b"NOOP\r\n", b"")], reset) as (port, _):
        result = runmodule.run_session("smtp", None, "NOOP", host="127.0.0.1", port=port,
                                       timeout=2)
    assert "the server closed the connection" in result.events and result.ok


class NoSending:
    """A socket whose sending fails (the server went away) and whose close may fail too."""

    def __init__(self, sock, close_fails=False):
        self._sock, self._close_fails = sock, close_fails

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def sendall(self, data):
        raise BrokenPipeError(32, "Broken pipe")

    def close(self):
        self._sock.close()
        if self._close_fails:
            raise OSError(9, "Bad file descriptor")


def test_a_line_that_cannot_be_sent_ends_the_session():
    ours, theirs = socket.socketpair()
    with theirs:
        session = runmodule.Session("smtp", runmodule.Target("127.0.0.1", 25, "x", False, "x"))
        session.sock = NoSending(ours)
        result = SessionResult("smtp")
        session.run(["NOOP", "QUIT"], result)
        assert result.error == "The connection is gone ([Errno 32] Broken pipe): the server closed it."
        assert session.sock is None and ours.fileno() == -1
        assert result.client_lines == ["NOOP"]
    failing, other = socket.socketpair()
    with other:
        session.sock = NoSending(failing, close_fails=True)
        session.close()
        assert session.sock is None and not session.connected


def test_connecting_fails_in_one_line(monkeypatch):
    target = runmodule.Target("127.0.0.1", 2525, "x", False, "the server")
    failures = {socket.timeout("timed out"): "No answer from the server within 0.5 s.",
                TimeoutError("timed out"): "No answer from the server within 0.5 s.",
                OSError(113, "No route to host"): "Could not connect to the server: No route to host",
                OSError("odd"): "Could not connect to the server: odd"}
    for error, hint in failures.items():
        def fail(*args, error=error, **kwargs):
            raise error
        monkeypatch.setattr(socket, "create_connection", fail)
        result = SessionResult("smtp")
        runmodule.Session("smtp", target, timeout=0.5).open(result)
        assert result.error == hint


def test_refused_by_the_lab_says_which_port(no_lab):
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = bound.getsockname()[1]
        lab = FakeLab()
        lab.host = "127.0.0.1"
        result = runmodule.run_session("pop3", None, "USER x", port=port, lab=lab)
        assert result.error == (f"Nothing listens on port {port} of the lab: check the port in the "
                                "lab's table (run lab).")
        target = runmodule.resolve_target("pop3", port=port, lab=lab)
        lab.running = False
        stopped = SessionResult("pop3")
        runmodule.Session("pop3", target).open(stopped)
        assert stopped.error.startswith("The lab is stopped")


def test_a_named_session_whose_lab_stopped_starts_anew(no_lab):
    lab = FakeLab()
    lab.host = "127.0.0.1"
    with scripted_peer(b"220 hi\r\n") as (port, _):
        runmodule.run_session("smtp", None, "", port=port, lab=lab, session="s5", timeout=2)
        old = runmodule._open["s5"]
        lab.running = False
        later = runmodule.run_session("smtp", None, "NOOP", session="s5", timeout=2)
    assert later.events[0] == "The lab of session s5 was stopped: a new connection is opened."
    assert not old.connected and not any("goes on" in e for e in later.events)
    assert later.error == "No mail lab is running: run lab = maillab.start() first."
    assert "s5" not in runmodule.open_sessions()


def test_the_stop_button_closes_the_connection(no_lab, monkeypatch):
    def interrupted(self, lines, result):
        raise KeyboardInterrupt

    monkeypatch.setattr(runmodule.Session, "run", interrupted)
    with scripted_peer(b"220 hi\r\n") as (port, _):
        result = runmodule.run_session("smtp", None, "NOOP", host="127.0.0.1", port=port,
                                       session="s6", timeout=2)
    assert result.error == "Interrupted: maillab closed the connection."
    assert not result.open and "s6" not in runmodule.open_sessions()


# =========================================================================== run.py: TLS
@pytest.fixture(scope="module")
def tls_lab():
    """A stand-in lab whose certificate authority signed mail.example.com's certificate."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("mail.example.com")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    lab = FakeLab()
    lab.host = "127.0.0.1"
    with ca.cert_pem.tempfile() as ca_file:
        lab.ca, lab.ca_file = ca, ca_file
        yield lab, server


def tls_peer(server_context, greeting, answers, implicit=False):
    """A scripted peer that speaks TLS from the first byte, or after the answer to STARTTLS."""
    def serve_tls(conn):
        return server_context.wrap_socket(conn, server_side=True)

    return scripted_peer(greeting, answers, wrap=serve_tls, implicit=implicit)


def test_starttls_with_bytes_injected_before_the_handshake(tls_lab, no_lab):
    lab, server = tls_lab
    answers = [(b"STARTTLS\r\n", b"220 go ahead\r\n250 injected\r\n", "tls"),
               (b"EHLO me\r\n", b"250 welcome\r\n")]
    with tls_peer(server, b"220 hi\r\n", answers) as (port, got):
        target = runmodule.Target("127.0.0.1", port, "mail.example.com", False, "lab", lab)
        session = runmodule.Session("smtp", target, timeout=3)
        result = SessionResult("smtp")
        session.open(result)
        session.run(["STARTTLS", "EHLO me"], result)
        session.close()
    assert result.ok, result.text
    assert "14 bytes the server sent before TLS started were thrown away." in result.events
    started = [e for e in result.events if e.startswith("TLS started: ")]
    assert len(started) == 1 and not started[0].startswith("TLS started: TLSv1.3, TLSv1.3")
    assert started[0].split(", ")[1] != "?" and "TLS_" in started[0]
    notes_only = [x for x in result.exchanges if not x.sent and not x.reply]
    assert [x.notes[0][:14] for x in notes_only] == ["Say EHLO again"] and notes_only[0].encrypted
    assert result.reply_to("EHLO") == ["250 welcome"]  # not the injected line
    assert [x.encrypted for x in result.exchanges if x.sent] == [False, True]


def test_implicit_tls_and_a_failed_handshake(tls_lab, no_lab):
    lab, server = tls_lab
    with tls_peer(server, b"+OK hi\r\n", [(b"QUIT\r\n", b"+OK bye\r\n"), (b"", None)],
                  implicit=True) as (port, _):
        target = runmodule.Target("127.0.0.1", port, "mail.example.com", True, "lab", lab)
        session = runmodule.Session("pop3", target, timeout=3)
        result = SessionResult("pop3")
        session.open(result)
        session.run(["QUIT"], result)
    assert result.ok, result.text
    assert result.events[1].startswith("TLS from the first byte: TLSv1.")
    assert all(x.encrypted for x in result.exchanges if x.reply)
    with scripted_peer(b"+OK plain text\r\n") as (port, got):
        failed = runmodule.run_session("pop3", None, "USER alice", host="127.0.0.1", port=port,
                                       tls=True, timeout=2)
    assert failed.error == "TLS failed: WRONG_VERSION_NUMBER" and failed.replies == []
    assert b"USER" not in bytes(got) and not failed.open
    with scripted_peer(b"220 hi\r\n", [(b"STARTTLS\r\n", b"220 go ahead\r\n"),
                                       (b"\x16", None)]) as (port, got):  # a TLS record: hang up
        plain = runmodule.run_session("smtp", None, "STARTTLS\nEHLO me", host="127.0.0.1",
                                      port=port, timeout=2)
    assert plain.error.startswith("TLS failed") and "EHLO again" not in plain.text
    assert b"EHLO" not in bytes(got)

    def reset_on_hello(conn):
        conn.recv(5)  # the start of the client's first TLS record
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    with scripted_peer(b"220 hi\r\n", [(b"STARTTLS\r\n", b"220 go ahead\r\n")],
                       reset_on_hello) as (port, _):
        reset = runmodule.run_session("smtp", None, "STARTTLS\nEHLO me", host="127.0.0.1",
                                      port=port, timeout=2)
    assert reset.error.startswith("TLS failed: ") and not reset.open, reset.text


def test_a_name_tls_cannot_check_fails_in_one_line():
    with scripted_peer(b"") as (port, _):
        target = runmodule.Target("127.0.0.1", port, ".example.com", True, "the server")
        result = SessionResult("imap")
        session = runmodule.Session("imap", target, timeout=2)
        session.open(result)
    assert result.error.startswith("TLS failed: ")  # a ValueError (UnicodeError) from ssl
    assert not session.connected


# =========================================================================== magics.py: the magic line
@pytest.fixture
def shown_outputs(monkeypatch):
    """What session_cell displays, instead of showing it."""
    import IPython.display
    outputs = []
    monkeypatch.setattr(IPython.display, "display", outputs.append)
    return outputs


@pytest.fixture
def sessions_asked(monkeypatch):
    """The sessions session_cell asks for (protocol, where, text, options), each answered with
    an empty result."""
    from maillab import magics
    asked = []

    def fake_run_session(protocol, where, text, **options):
        asked.append((protocol, where, text, options))
        return SessionResult(protocol)

    monkeypatch.setattr(magics, "run_session", fake_run_session)
    return asked


def test_the_magic_line_becomes_the_session_options(shown_outputs, sessions_asked):
    from maillab.magics import session_cell
    session_cell("smtp", "example.net --submission --host 127.0.0.1 --port 2525 --session s "
                         "--close --timeout 2.5", "EHLO me\nQUIT")
    session_cell("imap", "--imaps", "a1 NOOP")
    session_cell("pop3", "--tls", None)  # one %: no lines, so no session
    session_cell("pop3", "--session box", None)  # one % and a named session: what it said
    assert sessions_asked == [
        ("smtp", "example.net", "EHLO me\nQUIT",
         {"host": "127.0.0.1", "port": 2525, "tls": False, "submission": True, "session": "s",
          "close": True, "timeout": 2.5}),
        ("imap", None, "a1 NOOP",
         {"host": None, "port": None, "tls": True, "submission": False, "session": None,
          "close": False, "timeout": 5.0}),
        ("pop3", None, "",
         {"host": None, "port": None, "tls": False, "submission": False, "session": "box",
          "close": False, "timeout": 5.0})]
    assert [type(o) for o in shown_outputs] == [SessionResult] * 4
    assert shown_outputs[2].error == ("A session is a cell: %%pop3 (two %) on its first line, "
                                      "the lines to send below it.")
    assert [o.ok for o in shown_outputs] == [True, True, False, True]


def test_a_mistyped_magic_line_is_one_line(shown_outputs, sessions_asked, capsys):
    from maillab.magics import session_cell
    session_cell("smtp", "--bogus", "EHLO me")
    session_cell("imap", "--submission", "a1 NOOP")  # SMTP's option only
    session_cell("smtp", '--host "127.0.0.1', "EHLO me")
    session_cell("http", "--help", "GET / HTTP/1.1")
    assert sessions_asked == []
    assert [o.error for o in shown_outputs] == [
        "%%smtp: unrecognized arguments: --bogus (%%smtp --help lists the options)",
        "%%imap: unrecognized arguments: --submission (%%imap --help lists the options)",
        "%%smtp: No closing quotation"]
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: %%http [-h] [--tls] [--host HOST] [--port PORT]")
    for part in ("[--session NAME]", "[--timeout SECONDS]", "[DOMAIN]", "--https"):
        assert part in help_text


def test_the_magics_parser():
    from maillab.magics import parser
    smtp = parser("smtp").parse_args(["example.com", "--smtps"])
    assert (smtp.where, smtp.tls, smtp.submission, smtp.timeout) == ("example.com", True, False,
                                                                      5.0)
    assert "--submission" in parser("smtp").format_help()
    assert "--submission" not in parser("pop3").format_help()


def test_a_bug_of_ours_is_one_line_too(shown_outputs, monkeypatch):
    from maillab import magics

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(magics, "run_session", broken)
    magics.session_cell("smtp", "", "EHLO me")
    (result,) = shown_outputs
    assert result.error == "maillab could not run this session (RuntimeError: boom)."
    assert result.text == "!! maillab could not run this session (RuntimeError: boom)."


def test_nbgrader_solution_markers_in_a_master_are_not_sent():
    from maillab.sessions.run import _cell_lines
    master = "### BEGIN SOLUTION\nEHLO me\n\nQUIT\n### END SOLUTION\n"
    assert _cell_lines(master) == ["EHLO me", "", "QUIT"]
    assert _cell_lines("EHLO me\n#### BEGIN SOLUTION-ish\n") == ["EHLO me", "#### BEGIN SOLUTION-ish"]
