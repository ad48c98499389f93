"""SMTP rules that the rest of the suite let through when broken: the trace headers of each hop,
the postmaster address, which commands keep a session alive, the hints a refusal carries and
the log lines a learner is spared. Each test was shown to fail on a planted bug
(bench/mutation.py, docs/mutation.md)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import itertools
import logging
import smtplib
import socket
import time

import pytest

import maillab
from maillab import smtp
from maillab.net import ServerContext
from maillab.store import Store
from maillab.transcript import Recorder
from rawclient import Raw
from test_login_guard import GUARD, heat, smtp_client
from test_smtp import lab, raw  # noqa: F401  (fixtures: a lab for this file, a fresh session)


def plain(user: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def send(raw: Raw, sender: str, rcpts: list[str], text: str) -> None:
    assert raw.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    for rcpt in rcpts:
        assert raw.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
    assert raw.cmd("DATA")[0] == 354
    raw.send(text.replace("\n", "\r\n") + "\r\n.\r\n")
    assert raw.smtp_reply()[0] == 250


def newest(lab, user: str, subject: str):
    return [m for m in lab.mailbox(user) if m.subject == subject][-1].message


def last_session_once_closed(lab):
    """The newest SMTP transcript of example.com, once its closing event is in it."""
    deadline = time.monotonic() + 5
    while lab.transcript("smtp:example.com").last().lines[-1].who != "*":  # its closing event
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return lab.transcript("smtp:example.com").last()


# ------------------------------------------------------------------------- trace headers

def test_received_after_helo_says_smtp_and_names_the_client_address(lab, raw):
    raw.cmd("HELO old-client.example")  # HELO, not EHLO: plain SMTP (RFC 3848)
    send(raw, "x@elsewhere.example", ["bob@example.com"], "Subject: helo trace\n\nx")
    received = " ".join(newest(lab, "bob", "helo trace")["Received"].split())
    assert received.startswith("from old-client.example ([127.0.0.1]) by mail.example.com")
    assert " with SMTP id " in received


def test_a_relayed_message_for_one_recipient_names_it_at_the_first_hop(lab, raw):
    raw.cmd("EHLO me")
    assert raw.cmd(plain("alice", "wonderland"))[0] == 235
    send(raw, "alice@example.com", ["john@example.net"], "Subject: one remote\n\nx")
    assert raw.cmd("RSET")[0] == 250
    send(raw, "alice@example.com", ["john@example.net", "maria@example.net"],
         "Subject: two remote\n\nx")
    lab.settle()
    first_hop = [h for h in newest(lab, "john", "one remote").get_all("Received")
                 if "by mail.example.com" in h]
    assert len(first_hop) == 1 and "for <john@example.net>;" in " ".join(first_hop[0].split())
    # one copy travels for both: the header cannot name one of them (RFC 5321 4.4)
    for user in ("john", "maria"):
        first_hop = [h for h in newest(lab, user, "two remote").get_all("Received")
                     if "by mail.example.com" in h]
        assert len(first_hop) == 1 and "for <" not in first_hop[0]


def local_time(monkeypatch, zone: str) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    monkeypatch.setattr(smtp, "_date_of_second", (0, ""))  # no date made in the old zone


def test_the_date_of_a_header_is_now_in_local_time(monkeypatch):
    local_time(monkeypatch, "LAB-5:30")  # a POSIX zone 5.5 hours east of UTC (no tzdata needed)
    try:
        date = smtp._header_date()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert date.endswith(" +0530")
    assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 5


def test_submission_adds_a_date_and_message_id_only_where_missing(lab, raw):
    raw.cmd("EHLO me")
    assert raw.cmd(plain("alice", "wonderland"))[0] == 235
    send(raw, "alice@example.com", ["bob@example.com"], "Subject: bare\n\nno date here")
    msg = newest(lab, "bob", "bare")
    assert abs(email.utils.parsedate_to_datetime(msg["Date"]).timestamp() - time.time()) < 60
    assert msg["Message-ID"].endswith("@mail.example.com>")
    send(raw, "alice@example.com", ["bob@example.com"],
         "Subject: dated\nDate: Mon, 01 Jan 2024 10:00:00 +0000\nMessage-ID: <mine@laptop>\n\n"
         "a body that mentions nothing\n\nand has a second paragraph")
    msg = newest(lab, "bob", "dated")
    assert msg.get_all("Date") == ["Mon, 01 Jan 2024 10:00:00 +0000"]
    assert msg.get_all("Message-ID") == ["<mine@laptop>"]
    send(raw, "alice@example.com", ["bob@example.com"], "Subject: headers only")  # no body
    assert newest(lab, "bob", "headers only")["Date"]


def test_a_queue_that_cannot_be_written_is_a_451_and_nothing_is_delivered(lab, raw, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(lab.router, "enqueue", disk_full)
    raw.cmd("EHLO me")
    assert raw.cmd(plain("alice", "wonderland"))[0] == 235
    raw.cmd("MAIL FROM:<alice@example.com>")
    raw.cmd("RCPT TO:<john@example.net>")
    raw.cmd("RCPT TO:<bob@example.com>")
    raw.cmd("DATA")
    raw.send("Subject: never queued\r\n\r\nx\r\n.\r\n")
    code, lines = raw.smtp_reply()
    assert code == 451 and lines[0].startswith("451 4.3.0") and "try again" in lines[0]
    assert raw.cmd("NOOP")[0] == 250  # the session goes on
    assert [m for m in lab.mailbox("bob") if m.subject == "never queued"] == []


@pytest.mark.parametrize("reply, hint", [
    ("503 Error: need MAIL command", "first say who sends"),
    ("501 Syntax: RSET", "RSET takes no argument"),
    ("530 Must issue a STARTTLS command first", "this port wants encryption first"),
])
def test_each_refusal_of_aiosmtpd_gets_its_own_hint(reply, hint):
    text = smtp.add_hint(reply)
    assert text.startswith(reply.replace("530 ", "530 5.7.0 ") + f" (hint: {hint}")
    assert smtp.add_hint("250 OK") == "250 OK"  # replies of mail going through stay as they are


# ------------------------------------------------------------------------- addresses

def test_postmaster_without_a_domain_is_this_domains_postmaster(lab, raw):
    lab.store.add_account("pm", "pw", "example.com", ["postmaster@example.com"])
    raw.cmd("EHLO me")
    raw.cmd("MAIL FROM:<x@elsewhere.example>")
    assert raw.cmd("RCPT TO:<PostMaster>")[0] == 250  # case-insensitive (RFC 5321 4.5.1)
    code, lines = raw.cmd("RCPT TO:<bob>")  # any other bare name is no address
    assert code == 553 and "<bob>" in lines[0]
    assert raw.cmd("DATA")[0] == 354
    raw.send("Subject: to the postmaster\r\n\r\nx\r\n.\r\n")
    assert raw.smtp_reply()[0] == 250
    msg = newest(lab, "pm", "to the postmaster")
    assert msg["Delivered-To"] == "PostMaster@example.com"
    assert [m for m in lab.mailbox("bob") if m.subject == "to the postmaster"] == []


def test_postmaster_is_taken_for_every_domain_even_with_no_such_address():
    """RFC 5321 4.5.1: every domain takes mail for postmaster. With no account holding that
    address it goes to the domain's first account (alice: the lab's administrator of
    example.com); before, 'RCPT TO:<postmaster@example.com>' was 550 no such user."""
    import smtplib

    import maillab

    with maillab.MailLab(ports="any") as own:  # its own lab: the file's lab has a postmaster
        assert own.store.find_address("postmaster@example.com") is None
        with smtplib.SMTP("127.0.0.1", own.smtp_port, timeout=10) as client:
            client.ehlo("me")
            client.mail("x@elsewhere.example")
            assert client.rcpt("postmaster@EXAMPLE.com")[0] == 250
            assert client.rcpt("Postmaster")[0] == 250
            assert client.rcpt("postmaster@example.net")[0] == 554  # another domain: a relay
            assert client.data(b"Subject: for whoever runs example.com\r\n\r\nx\r\n")[0] == 250
        got = [m for m in own.mailbox("alice") if m.subject == "for whoever runs example.com"]
        assert len(got) == 1  # two names of one mailbox: one copy
        assert own.store.authenticate("postmaster@example.com", "wonderland") is None  # no login


def test_the_last_message_an_inbox_has_room_for_is_taken(lab, raw, monkeypatch):
    lab.store.add_account("dora", "pw", "example.com", ["dora@example.com"])
    monkeypatch.setattr(lab.store, "max_messages", 1)  # room for exactly one more
    raw.cmd("EHLO me")
    send(raw, "x@elsewhere.example", ["dora@example.com"], "Subject: the last one\n\nx")
    raw.cmd("MAIL FROM:<x@elsewhere.example>")
    code, lines = raw.cmd("RCPT TO:<dora@example.com>")  # full now: a temporary refusal
    assert code == 452 and lines[0].startswith("452 4.2.2 <dora@example.com>: ")


@pytest.mark.parametrize("address, hint", [
    ("a\x01b@example.org", "without control characters"),  # looks like an address but is not text
    ("a b@example.org", "an address looks like <name@example.com>"),
    ("no-at-sign.example.org", "an address looks like <name@example.com>"),
])
def test_a_malformed_address_gets_the_hint_for_its_mistake(raw, address, hint):
    raw.cmd("EHLO me")
    raw.send(b"MAIL FROM:" + address.encode() + b"\r\n")
    code, lines = raw.smtp_reply()
    assert code in (501, 553) and hint in lines[0]
    other = ("an address looks like" if "control" in hint else "without control characters")
    assert other not in lines[0]


# ------------------------------------------------------------------------- AUTH

def b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


@pytest.mark.parametrize("exchange", [
    [("AUTH PLAIN", 334), ("*", 501)],  # cancelled (RFC 4954 4)
    [("AUTH PLAIN " + b64(b"alice\0wonderland"), 501)],  # two parts, not three (RFC 4616)
    [("AUTH PLAIN", 334), (b64(b"alice\0wonderland"), 501)],
    [("AUTH PLAIN not-base64!", 501)],
    [("AUTH PLAIN " + b64(b"\0alice\0wonderland")[:8] + "!" + b64(b"\0alice\0wonderland")[8:],
      501)],  # base64 with a stray character: refused, not read without it
    [("AUTH LOGIN", 334), ("YWxp!Y2U=", 501)],
    [("AUTH LOGIN", 334), ("*", 501)],  # cancelled at the user name
    [("AUTH LOGIN", 334), (b64(b"alice"), 334), ("*", 501)],  # cancelled at the password
    [("AUTH LOGIN", 334), (b64(b"alice"), 334), ("A" * 20_000, 500)],  # over-long (RFC 4954 4)
    [("AUTH LOGIN", 334), (b64(b"alice"), 334), ("d29u!ZGVy", 501)],  # a password not base64
], ids=["plain-cancel", "plain-split", "plain-split-asked", "plain-bad-base64", "plain-stray",
        "login-stray", "login-cancel-user", "login-cancel-password", "login-long-password",
        "login-stray-password"])
def test_an_auth_that_goes_wrong_gets_one_reply_and_logs_nobody_in(raw, exchange):
    raw.cmd("EHLO me")
    for line, code in exchange:
        assert raw.cmd(line)[0] == code
    assert raw.cmd("NOOP")[0] == 250  # no second reply was waiting (no 535 after the 501)
    assert raw.cmd("MAIL FROM:<alice@example.com>")[0] == 250
    assert raw.cmd("RCPT TO:<john@example.net>")[0] == 554  # still a stranger: no relay


def test_auth_login_asks_in_base64(raw):
    raw.cmd("EHLO me")
    assert raw.cmd("AUTH LOGIN") == (334, ["334 " + b64(b"User Name\0")])
    assert raw.cmd(b64(b"alice")) == (334, ["334 " + b64(b"Password\0")])
    assert raw.cmd(b64(b"wonderland"))[0] == 235


@pytest.mark.parametrize("answers, last_words", [
    ([], b""), ([], b"A" * 100_000), ([b64(b"alice")], b"")],
    ids=["at-user-name", "mid-long-line", "at-password"])
def test_a_client_that_hangs_up_at_a_challenge_is_no_error(lab, answers, last_words):
    with Raw(lab.smtp_port) as r:
        r.smtp_reply()
        r.cmd("EHLO me")
        for line in ["AUTH LOGIN", *answers]:
            assert r.cmd(line)[0] == 334
        r.send(last_words)  # (over the reader's limit, without its line end)
        r.sock.shutdown(socket.SHUT_WR)  # half-closed: the server reads the end, then closes
        assert b"451" not in r.file.read()  # (no internal error on the way out)
    session = last_session_once_closed(lab)
    assert "SMTP session error" not in str(lab.log())
    assert session.lines[-1].text == "connection closed"


def test_a_login_refused_unchecked_logs_nobody_in():
    with maillab.MailLab(ports="any", options={"login_guard": GUARD}) as lab:
        heat(lab)  # bob's account is being guessed at: further guesses queue, then get 454
        waiting = [smtp_client(lab) for _ in range(6)]
        for r in waiting:
            r.send(plain("bob", "guess") + "\r\n")
        replies = [(r, r.smtp_reply()[0]) for r in waiting]
        told_later = [r for r, code in replies if code == 454]
        assert told_later
        r = told_later[0]
        assert r.cmd("MAIL FROM:<bob@example.com>")[0] == 250
        assert r.cmd("RCPT TO:<john@example.net>")[0] == 554  # a stranger still: no relay
        for r in waiting:
            r.close()


def test_the_audit_view_names_the_mechanism_of_each_login(lab, raw):
    raw.cmd("EHLO me")
    assert raw.cmd("AUTH LOGIN")[0] == 334
    assert raw.cmd(b64(b"alice"))[0] == 334
    assert raw.cmd(b64(b"wonderland"))[0] == 235
    with Raw(lab.smtp_port) as other:
        other.smtp_reply()
        other.cmd("EHLO me")
        assert other.cmd(plain("bob", "builder-wrong"))[0] == 535
    mine = [a for a in lab.logins() if a.service == "smtp:example.com"][-2:]
    assert [(a.user, a.mechanism, a.success) for a in mine] == [
        ("alice", "AUTH LOGIN", True), ("bob", "AUTH PLAIN", False)]


# ------------------------------------------------------------------------- sessions

@pytest.mark.parametrize("mode", ["submission", "smtps"])
def test_the_tls_ports_will_not_start_without_a_certificate(tmp_path, mode):
    store = Store(tmp_path / "store", hash_n=2**10)
    ctx = ServerContext(store, Recorder(), "mail.example.com", "example.com")  # no ctx.tls
    with socket.create_server(("127.0.0.1", 0)) as sock:
        with pytest.raises(ValueError, match=f"{mode} needs TLS"):
            asyncio.run(smtp.start_smtp(ctx, sock, router=None, mode=mode))
    store.close()


def send_until_hung_up(lab, commands: list[str], most: int) -> float:
    """A new session sends ``commands`` in turn, 0.1 s apart, at most ``most`` of them; the
    server must hang up meanwhile. Returns how long that took."""
    with Raw(lab.smtp_port) as r:
        r.smtp_reply()
        r.cmd("EHLO me")
        r.cmd("MAIL FROM:<x@elsewhere.example>")  # a command that moves mail: the timer restarts
        start = time.monotonic()
        with pytest.raises(ConnectionError):
            for command in itertools.islice(itertools.cycle(commands), most):
                assert r.cmd(command)[0] in (250, 252, 500, 502, 421)
                time.sleep(0.1)
        return time.monotonic() - start


def test_vrfy_expn_and_unrecognised_commands_do_not_keep_a_session_open():
    with maillab.MailLab(ports="any", options={"smtp_timeout": 0.6}) as lab:
        assert send_until_hung_up(lab, ["VRFY bob", "EXPN staff"], 50) < 2
        assert lab.transcript("smtp:example.com").last().lines[-1].text.startswith("idle for")
        send_until_hung_up(lab, ["BOGUS"], 9)  # (the tenth in a row would end it anyway)
        assert lab.transcript("smtp:example.com").last().lines[-1].text.startswith("idle for")


def test_unrecognised_commands_in_a_row_end_with_a_421_and_its_status_code(raw):
    raw.cmd("EHLO me")
    for _ in range(smtp.MAX_BAD_COMMANDS_IN_A_ROW - 1):
        assert raw.cmd("BOGUS")[0] == 500
    code, lines = raw.cmd("BOGUS")
    assert code == 421 and lines[0].startswith("421 4.7.0 mail.example.com ")  # RFC 3463


def test_a_failed_starttls_handshake_is_closed_and_the_transcript_says_why(lab):
    with Raw(lab.smtp_port) as r:
        r.smtp_reply()
        r.cmd("EHLO me")
        assert r.cmd("STARTTLS")[0] == 220
        r.send(b"this is not a TLS handshake\r\n" * 3)
        assert r.file.readline() == b""  # closed, no reply in clear text
    reason = last_session_once_closed(lab).lines[-1].text
    assert reason.startswith("TLS handshake failed (") and "SSL" in reason  # the cause, named


def test_a_session_that_used_starttls_leaves_no_connection_behind(lab):
    for _ in range(3):
        with smtplib.SMTP(lab.host, lab.smtp_port) as s:
            s.starttls(context=lab.ca.client_context())
            assert s.noop()[0] == 250
    deadline = time.monotonic() + 5
    while any(ctx.connections for ctx in lab._contexts):  # (what stopping the lab closes)
        assert time.monotonic() < deadline, [ctx.connections for ctx in lab._contexts]
        time.sleep(0.05)


def test_text_stuck_to_the_null_sender_is_a_parameter_and_refused(raw):
    raw.cmd("EHLO me")
    code, lines = raw.cmd("MAIL FROM:<>x")
    assert code == 555 and "hint" in lines[0]
    assert raw.cmd("MAIL FROM:<> SIZE=10")[0] == 250


def test_aiosmtpd_noise_is_left_out_of_the_log_and_the_rest_kept(lab, raw, caplog):
    with caplog.at_level(logging.INFO, logger="mail.log"):
        raw.cmd("EHLO me")
        assert raw.cmd(plain("alice", "wonderland"))[0] == 235  # aiosmtpd warns "deprecated"
        raw.cmd("MAIL FROM:<alice@example.com>")
        assert raw.cmd("RCPT TO:<bob@example.com>")[0] == 250  # aiosmtpd logs "recip"
        raw.cmd("QUIT")
    texts = [r.getMessage() for r in caplog.records if r.name == "mail.log"]
    assert any("recip: bob@example.com" in t for t in texts)
    assert not any("login_data is deprecated" in t for t in texts)


# ----------------------------------------------------------------------------- AUTH lines

def read_auth_line(chunks: list[bytes], eof: bool = False, limit: int = 1001):
    """smtp.LabSMTP._read_auth_line over a stream reader fed ``chunks`` (aiosmtpd's reader
    stops at ``limit`` octets a line); its result and the peak of memory allocated meanwhile."""
    import tracemalloc
    import types

    async def run():
        reader = asyncio.StreamReader(limit=limit)
        session = types.SimpleNamespace(_reader=reader)
        session._discard_line = lambda consumed: smtp.LabSMTP._discard_line(session, consumed)
        task = asyncio.ensure_future(smtp.LabSMTP._read_auth_line(session))
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        if eof:
            reader.feed_eof()
        return await asyncio.wait_for(task, 10)
    tracemalloc.start()
    try:
        result = asyncio.run(run())
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_auth_line_of_exactly_the_limit_is_read_and_one_octet_more_is_not():
    line = b"A" * (smtp.AUTH_LINE_LIMIT - 2) + b"\r\n"
    pieces = [line[i:i + 700] for i in range(0, len(line), 700)]
    assert read_auth_line(pieces)[0] == line
    longer = b"A" + line
    assert read_auth_line([longer[i:i + 700] for i in range(0, len(longer), 700)])[0] is None


def test_an_overlong_auth_line_is_dropped_as_it_comes_not_kept():
    """A 4 MB line is refused (None) holding little memory: the pieces past the limit are read
    and dropped, not collected until its line end."""
    chunk = b"A" * 65_536
    result, peak = read_auth_line([chunk] * 64 + [b"\r\n"])
    assert result is None and peak < 1_000_000


@pytest.mark.parametrize("chunks", [[b"A" * 500], [b"A" * 20_000]], ids=["short", "overlong"])
def test_a_client_that_hangs_up_mid_auth_line_is_missing_not_an_error(chunks):
    result, _peak = read_auth_line(chunks, eof=True)
    assert result is (smtp.MISSING if len(chunks[0]) < smtp.AUTH_LINE_LIMIT else None)


# ------------------------------------------------------------------- timers and hanging up

def test_a_session_begins_with_no_unrecognised_commands_counted(raw):
    for _ in range(smtp.MAX_BAD_COMMANDS_IN_A_ROW - 1):  # before any command SMTP knows
        assert raw.cmd("BOGUS")[0] == 500
    assert raw.cmd("EHLO me")[0] == 250  # still open: nine in a row is not yet too many


def test_rset_does_not_keep_a_session_open():
    with maillab.MailLab(ports="any", options={"smtp_timeout": 0.6}) as lab:
        send_until_hung_up(lab, ["RSET"], 50)
        assert lab.transcript("smtp:example.com").last().lines[-1].text.startswith("idle for")


def test_a_session_is_ended_at_its_time_limit_with_421_4_4_2():
    with maillab.MailLab(ports="any", options={"smtp_session_limit": 0.5}) as lab:
        with Raw(lab.smtp_port, timeout=10) as r:
            r.send("EHLO me\r\n")  # (the idle timer has its default: 300 s)
            said = r.file.read().decode().splitlines()  # until the server hangs up
        assert said[-1].startswith("421 4.4.2 mail.example.com session too long")
        assert last_session_once_closed(lab).lines[-1].text.startswith("session too long")


def test_a_server_hangs_up_once_whatever_the_client_sends_after_its_421(lab, raw):
    raw.cmd("EHLO me")
    raw.send("BOGUS\r\n" * (smtp.MAX_BAD_COMMANDS_IN_A_ROW + 10))  # read in one go, most likely
    replies = raw.file.read().decode().splitlines()
    assert [line[:3] for line in replies] == ["500"] * (smtp.MAX_BAD_COMMANDS_IN_A_ROW - 1) + ["421"]
    session = last_session_once_closed(lab)
    said = [line.text for line in session.lines if line.who == "S"]
    assert [t[:3] for t in said].count("421") == 1  # one goodbye, and its reason stays
    assert session.lines[-1].text.endswith(f"({smtp.MAX_BAD_COMMANDS_IN_A_ROW}); closing connection")


def test_a_closed_session_is_not_kept_until_its_time_limit():
    """Its whole-session timer is cancelled when the client goes: a timer left running holds
    the session (and its transcript) in memory for an hour after every connection."""
    import gc
    with maillab.MailLab(ports="any") as lab:
        for _ in range(3):
            with smtplib.SMTP(lab.host, lab.smtp_port) as s:
                assert s.noop()[0] == 250
        deadline = time.monotonic() + 5
        while True:
            gc.collect()
            alive = sum(isinstance(o, smtp.LabSMTP) and o.ctx in lab._contexts
                        for o in gc.get_objects())  # (a count: a list would hold them)
            if not alive:
                break
            assert time.monotonic() < deadline, f"{alive} closed sessions still in memory"
            time.sleep(0.05)


def slow_client(lab) -> socket.socket:
    """A client on a slow link: little room for replies on their way (its receive buffer and
    the server's send buffer are small), so the server soon has to wait before it writes."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect((lab.host, lab.smtp_port))
    assert client.recv(100).startswith(b"220 ")  # (connected: the server's side exists)
    for transport in server_sides(lab):
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return client


def server_sides(lab) -> list:
    """The transports of the lab's open SMTP sessions (found as the sessions themselves)."""
    import gc
    return [o.transport for o in gc.get_objects()
            if isinstance(o, smtp.LabSMTP) and o.ctx in lab._contexts and o.transport is not None]


def client_reading_nothing(lab) -> socket.socket:
    """A slow client that pipelines EHLO after EHLO and reads none of the replies, until its
    sends have been held back for half a second or 3 s have passed."""
    client = slow_client(lab)
    client.setblocking(False)
    start, stuck_since = time.monotonic(), None
    while ((stuck_since is None or time.monotonic() - stuck_since < 0.5)
           and time.monotonic() - start < 3):
        try:
            client.send(b"EHLO me\r\n" * 100)  # each reply is some 12 times longer
            stuck_since = None
        except BlockingIOError:
            stuck_since = stuck_since or time.monotonic()
            time.sleep(0.05)
    client.settimeout(10)
    return client


def everything_said_to(client: socket.socket) -> bytes:
    got = []
    try:
        while data := client.recv(1 << 16):
            got.append(data)
    except ConnectionResetError:
        pass  # (a server that closes without reading all it was sent: a reset)
    finally:
        client.close()
    return b"".join(got)


def test_stopping_the_lab_closes_a_session_whose_client_reads_nothing():
    """Such a session waits to write: stopping the lab must still close it, not leave the
    client hanging."""
    lab = maillab.MailLab(ports="any")
    lab.start()
    try:
        client = client_reading_nothing(lab)
    finally:
        lab.stop()
    everything_said_to(client)  # (the end comes, not a time-out)


def test_replies_to_a_client_that_reads_nothing_wait_in_little_memory():
    with maillab.MailLab(ports="any") as lab:
        client = client_reading_nothing(lab)
        waiting = [t.get_write_buffer_size() for t in server_sides(lab)]
        # asyncio's high-water mark (64 KiB) and a reply: not every reply, kept until read
        assert waiting and max(waiting) < 256 * 1024
        client.close()


def test_nothing_is_sent_after_the_goodbye_of_a_session_at_its_limit():
    """Replies to commands read before the 421 but answered after it stay unsent."""
    with maillab.MailLab(ports="any", options={"smtp_session_limit": 1}) as lab:
        client = slow_client(lab)
        # Few bytes, read by the server at once, whose replies are more than it can send
        # while they are not read: it is still answering them at its limit.
        client.sendall(b"EHLO me\r\n" * 2000)
        deadline = time.monotonic() + 10
        while not all(t.is_closing() for t in server_sides(lab)):
            assert time.monotonic() < deadline  # (the server said 421 and waits to send it)
            time.sleep(0.05)
        client.settimeout(10)
        said = everything_said_to(client).decode().splitlines()
        assert said[-1].startswith("421 4.4.2 ") and said.count("250 HELP") < 2000
