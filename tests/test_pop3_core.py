"""The POP3 protocol core without sockets: bytes in, bytes out (RFC 1939, RFC 2449)."""

from __future__ import annotations

import hashlib
import re

import pytest

from maillab.net import ServerContext
from maillab.pop3.core import (MAX_LINE, OUTPUT_BUDGET, Pop3Session, State, byte_stuff,
                               top_of)
from maillab.store import Store
from maillab.transcript import Recorder

PASSWORD = "s3cret pass"  # with a space: RFC 1939 lets PASS carry one

MESSAGES = [
    b"From: bob@example.com\nSubject: one\n\nfirst body line\n.starts with a dot\n.\nlast\n",
    b"From: carol@example.com\nSubject: two\n\nhello\n",
    b"From: dave@example.com\nSubject: three\n\nbye\n",
]


@pytest.fixture
def store():
    store = Store(hash_n=2**10)
    alice = store.add_account("alice", PASSWORD, "example.com", apop=True)
    store.add_account("bob", "bobpw", "example.com", apop=False)
    store.add_account("zoe", "zoepw", "other.example", apop=True)  # another domain
    for data in MESSAGES:
        alice.folder("INBOX").deliver(data)
    yield store
    store.close()


@pytest.fixture
def ctx(store):
    return ServerContext(store, Recorder(), "mail.example.com", "example.com")


def new_session(ctx) -> Pop3Session:
    session = Pop3Session(ctx)
    assert session.greeting().startswith(b"+OK ")
    return session


def say(session: Pop3Session, line: str | bytes) -> str:
    """Send one command line; return the reply as text."""
    data = line.encode() if isinstance(line, str) else line
    return session.receive_data(data + b"\r\n").decode()


@pytest.fixture
def alice(ctx):
    """A session logged in as alice, in TRANSACTION."""
    session = new_session(ctx)
    say(session, "USER alice")
    assert say(session, f"PASS {PASSWORD}").startswith("+OK")
    return session


def inbox(store):
    return store.account("alice").folder("INBOX")


def crlf_len(data: bytes) -> int:
    return len(data.replace(b"\n", b"\r\n"))


# ----------------------------------------------------------------------------- greeting, states

def test_greeting_has_an_apop_timestamp(ctx):
    session = Pop3Session(ctx)
    greeting = session.greeting().decode()
    assert greeting.endswith("\r\n")
    stamp = re.search(r"<\d+\.\d+@mail\.example\.com>", greeting)
    assert stamp and stamp.group(0) == session.timestamp
    assert Pop3Session(ctx).timestamp != session.timestamp  # different for every greeting


def test_timestamp_host_can_be_chosen(ctx):
    session = Pop3Session(ctx, timestamp_banner_host="pop.example.com")
    assert session.timestamp.endswith("@pop.example.com>")


def test_states_authorization_transaction_update(ctx, store):
    session = new_session(ctx)
    assert session.state is State.AUTHORIZATION
    say(session, "USER alice")
    say(session, f"PASS {PASSWORD}")
    assert session.state is State.TRANSACTION
    assert say(session, "QUIT").startswith("+OK")
    assert session.state is State.UPDATE
    assert session.closed
    assert session.receive_data(b"NOOP\r\n") == b""  # nothing after QUIT


def test_quit_in_authorization_just_closes(ctx):
    session = new_session(ctx)
    assert say(session, "QUIT").startswith("+OK")
    assert session.closed and session.state is State.AUTHORIZATION


@pytest.mark.parametrize("command", ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET",
                                     "TOP 1 0", "UIDL"])
def test_transaction_commands_need_login(ctx, command):
    reply = say(new_session(ctx), command)
    assert reply == "-ERR command not valid in this state (log in first with USER and PASS)\r\n"


@pytest.mark.parametrize("command", ["USER alice", f"PASS {PASSWORD}", "APOP alice 0123"])
def test_login_commands_after_login(alice, command):
    assert say(alice, command).startswith("-ERR command not valid in this state")


# ----------------------------------------------------------------------------- logging in

def test_user_pass_reply_names_the_maildrop(ctx):
    session = new_session(ctx)
    assert say(session, "USER alice").startswith("+OK")
    total = sum(crlf_len(m) for m in MESSAGES)
    assert say(session, f"PASS {PASSWORD}") == (
        f"+OK alice's maildrop has 3 messages ({total} octets)\r\n")
    assert session.account.login == "alice"


def test_login_with_address(ctx):
    session = new_session(ctx)
    say(session, "USER alice@example.com")
    assert say(session, f"PASS {PASSWORD}").startswith("+OK alice's maildrop")


def test_wrong_password_unknown_user_and_other_domain(ctx):
    session = new_session(ctx)
    for user, password in [("alice", "wrong"), ("nobody", "x"), ("zoe", "zoepw")]:
        say(session, f"USER {user}")
        assert say(session, f"PASS {password}").startswith("-ERR [AUTH] ")
        assert session.state is State.AUTHORIZATION
    # the session survives and a right login still works
    say(session, "USER alice")
    assert say(session, f"PASS {PASSWORD}").startswith("+OK")


def test_unknown_user_gets_the_same_answer_as_a_wrong_password(ctx):
    session = new_session(ctx)
    assert say(session, "USER nobody") == say(session, "USER alice")
    say(session, "USER nobody")
    unknown = say(session, "PASS x")
    say(session, "USER alice")
    assert say(session, "PASS x") == unknown


def test_pass_needs_user_first(ctx):
    session = new_session(ctx)
    assert say(session, f"PASS {PASSWORD}").startswith("-ERR give your name with USER first")
    say(session, "USER alice")
    say(session, "PASS wrong")
    # a failed PASS uses up the USER: the client starts again
    assert say(session, f"PASS {PASSWORD}").startswith("-ERR give your name with USER")


def test_user_and_pass_syntax(ctx):
    session = new_session(ctx)
    assert say(session, "USER").startswith("-ERR syntax error")
    assert say(session, "USER a b").startswith("-ERR syntax error")
    say(session, "USER alice")
    assert say(session, "PASS").startswith("-ERR syntax error")


def test_apop(ctx):
    session = new_session(ctx)
    digest = hashlib.md5((session.timestamp + PASSWORD).encode()).hexdigest()
    assert say(session, f"APOP alice {digest}").startswith("+OK alice's maildrop has 3")
    assert session.state is State.TRANSACTION


def test_apop_digest_is_case_insensitive_hex(ctx):
    session = new_session(ctx)
    digest = hashlib.md5((session.timestamp + PASSWORD).encode()).hexdigest().upper()
    assert say(session, f"APOP alice {digest}").startswith("+OK")


def test_apop_failures(ctx):
    session = new_session(ctx)
    stale = hashlib.md5(("<1.2@elsewhere>" + PASSWORD).encode()).hexdigest()
    for user in ("alice", "nobody"):
        assert say(session, f"APOP {user} {stale}").startswith(
            "-ERR [AUTH] invalid user name or digest")
    other = hashlib.md5((session.timestamp + "zoepw").encode()).hexdigest()
    assert say(session, f"APOP zoe {other}").startswith("-ERR [AUTH] invalid user name")
    bob = hashlib.md5((session.timestamp + "bobpw").encode()).hexdigest()
    reply = say(session, f"APOP bob {bob}")
    assert reply.startswith("-ERR [AUTH] APOP is not enabled for this account")
    assert "USER and PASS" in reply
    assert say(session, "APOP alice").startswith("-ERR syntax error")
    assert session.state is State.AUTHORIZATION


def test_second_session_is_refused_in_use(ctx, alice):
    other = new_session(ctx)
    say(other, "USER alice")
    reply = say(other, f"PASS {PASSWORD}")
    assert reply.startswith("-ERR [IN-USE] ")
    assert other.state is State.AUTHORIZATION
    # once the first session ends, the maildrop is free again
    say(alice, "QUIT")
    say(other, "USER alice")
    assert say(other, f"PASS {PASSWORD}").startswith("+OK")


def test_dropped_connection_releases_the_lock(ctx, store, alice):
    say(alice, "DELE 1")
    alice.connection_lost()
    assert alice.closed
    assert len(inbox(store)) == 3  # nothing deleted
    again = new_session(ctx)
    say(again, "USER alice")
    assert say(again, f"PASS {PASSWORD}").startswith("+OK alice's maildrop has 3")


def test_on_close_is_idempotent_and_safe_before_login(ctx, alice):
    new_session(ctx).on_close()
    alice.on_close()
    alice.on_close()
    assert not store_lock_held(alice)


def store_lock_held(session) -> bool:
    lock = session.ctx.store.account("alice").maildrop_lock
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


# ----------------------------------------------------------------------------- transaction

def test_stat_and_list(alice):
    sizes = [crlf_len(m) for m in MESSAGES]
    assert say(alice, "STAT") == f"+OK 3 {sum(sizes)}\r\n"
    assert say(alice, "LIST") == (f"+OK 3 messages ({sum(sizes)} octets)\r\n"
                                  f"1 {sizes[0]}\r\n2 {sizes[1]}\r\n3 {sizes[2]}\r\n.\r\n")
    assert say(alice, "LIST 2") == f"+OK 2 {sizes[1]}\r\n"


def test_retr_is_crlf_and_byte_stuffed(alice, store):
    reply = alice.receive_data(b"RETR 1\r\n")
    body = MESSAGES[0].replace(b"\n", b"\r\n")
    assert reply == (f"+OK {len(body)} octets\r\n".encode()
                     + body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    assert b"\r\n..starts with a dot\r\n..\r\nlast\r\n.\r\n" in reply
    assert b"\n" not in reply.replace(b"\r\n", b"")  # no bare line feeds


def test_retr_marks_seen_but_top_does_not(alice, store):
    folder = inbox(store)
    uids = [m.uid for m in folder.messages()]
    say(alice, "TOP 2 0")
    assert "\\Seen" not in folder.flags_of(uids[1])
    say(alice, "RETR 1")
    assert "\\Seen" in folder.flags_of(uids[0])


def test_top(alice):
    reply = say(alice, "TOP 1 0")
    assert reply == ("+OK top of message follows\r\nFrom: bob@example.com\r\nSubject: one\r\n"
                     "\r\n.\r\n")
    reply = say(alice, "TOP 1 2")
    assert reply.endswith("\r\n\r\nfirst body line\r\n..starts with a dot\r\n.\r\n")
    whole = say(alice, "TOP 1 999")
    assert whole.endswith("..\r\nlast\r\n.\r\n")


def test_top_of_edge_cases():
    assert top_of(b"Subject: x\r\n", 5) == b"Subject: x\r\n"  # no body
    assert top_of(b"\r\nbody\r\nmore\r\n", 1) == b"\r\nbody\r\n"  # no header
    assert top_of(b"A: b\r\n\r\nno final newline", 3) == b"A: b\r\n\r\nno final newline"


def test_byte_stuff():
    assert byte_stuff(b".\r\n") == b"..\r\n"
    assert byte_stuff(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n"
    assert byte_stuff(b"no dots. here\r\n") == b"no dots. here\r\n"


def test_dele_rset_and_numbers_never_reused(alice, store):
    sizes = [crlf_len(m) for m in MESSAGES]
    assert say(alice, "DELE 2").startswith("+OK message 2 deleted")
    assert say(alice, "STAT") == f"+OK 2 {sizes[0] + sizes[2]}\r\n"
    assert say(alice, "LIST").endswith(f"1 {sizes[0]}\r\n3 {sizes[2]}\r\n.\r\n")
    for command in ["LIST 2", "RETR 2", "TOP 2 0", "UIDL 2", "DELE 2"]:
        assert say(alice, command).startswith("-ERR message 2 is deleted"), command
    assert say(alice, "LIST 3") == f"+OK 3 {sizes[2]}\r\n"  # number 3 stays number 3
    assert say(alice, "RSET") == f"+OK maildrop has 3 messages ({sum(sizes)} octets)\r\n"
    assert say(alice, "LIST 2") == f"+OK 2 {sizes[1]}\r\n"
    assert len(inbox(store)) == 3


def test_deletions_happen_only_on_quit(alice, store):
    gone = inbox(store).messages()[0].uid
    say(alice, "DELE 1")
    say(alice, "DELE 3")
    assert len(inbox(store)) == 3
    assert say(alice, "QUIT") == (
        "+OK mail.example.com POP3 server signing off (2 messages deleted)\r\n")
    left = inbox(store).messages()
    assert len(left) == 1 and gone not in [m.uid for m in left]
    assert not store_lock_held(alice)


def test_uidl_is_stable_and_unique(ctx, alice, store):
    listing = say(alice, "UIDL")
    assert listing.startswith("+OK") and listing.endswith("\r\n.\r\n")
    ids = [line.split(" ")[1] for line in listing.split("\r\n")[1:-2]]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert all(re.fullmatch(r"[\x21-\x7e]{1,70}", i) for i in ids)
    assert say(alice, "UIDL 2") == f"+OK 2 {ids[1]}\r\n"
    say(alice, "DELE 1")
    say(alice, "QUIT")
    later = new_session(ctx)
    say(later, "USER alice")
    say(later, f"PASS {PASSWORD}")
    assert say(later, "UIDL 1") == f"+OK 1 {ids[1]}\r\n"  # same message, same id, new number


def test_snapshot_ignores_mail_that_arrives_later(ctx, alice, store):
    inbox(store).deliver(b"Subject: late\n\nlate\n")
    assert say(alice, "STAT").startswith("+OK 3 ")
    assert say(alice, "RETR 4").startswith("-ERR no such message, only 3 messages in maildrop")
    say(alice, "QUIT")
    later = new_session(ctx)
    say(later, "USER alice")
    assert say(later, f"PASS {PASSWORD}").startswith("+OK alice's maildrop has 4 messages")


def test_message_removed_by_another_session(alice, store):
    folder = inbox(store)
    folder.expunge([folder.messages()[0].uid])  # as an IMAP client would
    assert say(alice, "RETR 1").startswith("-ERR message 1 was removed by another session")
    assert say(alice, "TOP 1 0").startswith("-ERR message 1 was removed by another session")
    assert say(alice, "RETR 2").startswith("+OK")
    say(alice, "DELE 1")
    assert say(alice, "QUIT").startswith("+OK")  # expunging it again is harmless
    assert len(folder) == 2


def test_noop_and_capa(ctx, alice):
    assert say(alice, "NOOP") == "+OK\r\n"
    for session in (new_session(ctx), alice):
        reply = say(session, "CAPA")
        lines = reply.split("\r\n")
        assert lines[0].startswith("+OK") and lines[-2:] == [".", ""]
        for cap in ["TOP", "USER", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"]:
            assert cap in lines
        assert any(line.startswith("IMPLEMENTATION maillab-") for line in lines)


def test_empty_maildrop(ctx, store):
    store.add_account("empty", "pw", "example.com")
    session = new_session(ctx)
    say(session, "USER empty")
    assert say(session, "PASS pw") == "+OK empty's maildrop has 0 messages (0 octets)\r\n"
    assert say(session, "STAT") == "+OK 0 0\r\n"
    assert say(session, "LIST") == "+OK 0 messages (0 octets)\r\n.\r\n"
    assert say(session, "UIDL") == "+OK unique-id listing follows\r\n.\r\n"
    assert say(session, "RETR 1") == "-ERR no such message, only 0 messages in maildrop\r\n"
    assert say(session, "QUIT").startswith("+OK")


# ----------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("command", ["RETR 0", "RETR 4", "LIST 99999999999999", "DELE 4",
                                     "TOP 9 1", "UIDL 4"])
def test_no_such_message(alice, command):
    assert say(alice, command).startswith("-ERR no such message, only 3 messages in maildrop")


@pytest.mark.parametrize("command", ["RETR", "RETR x", "RETR -1", "RETR 1 2", "RETR +1", "LIST a",
                                     "LIST 1 2", "DELE", "TOP 1", "TOP 1 -1", "TOP 1 x", "TOP",
                                     "STAT 1", "RSET 1", "NOOP x", "UIDL x", "CAPA x"])
def test_syntax_errors(alice, command):
    assert say(alice, command).startswith("-ERR syntax error ("), command
    assert alice.state is State.TRANSACTION


def test_unknown_commands_get_hints(ctx, alice):
    reply = say(new_session(ctx), "HELO example.com")
    assert reply == ("-ERR unknown command 'HELO' "
                     "(this is a POP3 server; HELO is an SMTP command)\r\n")
    reply = say(new_session(ctx), "XYZZY")
    assert reply.startswith("-ERR unknown command 'XYZZY' (") and "USER and PASS" in reply
    reply = say(alice, "SELECT INBOX")
    assert reply.startswith("-ERR unknown command 'SELECT' (") and "RETR" in reply


def test_lowercase_and_extra_spaces(alice):
    sizes = [crlf_len(m) for m in MESSAGES]
    assert say(alice, "stat") == f"+OK 3 {sum(sizes)}\r\n"
    assert say(alice, "LiSt   2  ") == f"+OK 2 {sizes[1]}\r\n"
    assert say(alice, "  top 1\t0").startswith("+OK top of message follows")


def test_bare_lf_line_ends_are_accepted(alice):
    assert alice.receive_data(b"NOOP\n") == b"+OK\r\n"


def test_empty_lines_and_binary_garbage(ctx, alice):
    assert say(alice, "").startswith("-ERR empty command")
    assert say(alice, "   ").startswith("-ERR empty command")
    reply = alice.receive_data(b"\x00\xff\x1b[2J\r\r\n")
    assert reply.startswith(b"-ERR unknown command '\\x00\\xff\\x1b")
    assert reply.count(b"\r\n") == 1 and b"\r" not in reply[:-2]  # nothing echoed raw
    assert say(alice, "ST\xc3\xa4T".encode("latin-1")).startswith("-ERR unknown command")
    assert say(alice, "NOOP") == "+OK\r\n"  # the session survives


def test_password_may_contain_spaces_and_utf8(ctx, store):
    store.add_account("greek", "καλημέρα κόσμε", "example.com")
    session = new_session(ctx)
    say(session, "USER greek")
    assert say(session, "PASS καλημέρα κόσμε").startswith("+OK")


def test_binary_garbage_in_password(ctx):
    session = new_session(ctx)
    say(session, "USER alice")
    assert session.receive_data(b"PASS \xff\xfe\x00\r\n").startswith(b"-ERR [AUTH]")


# ----------------------------------------------------------------------------- chunks and lines

def test_commands_split_across_chunks(alice):
    out = b"".join(alice.receive_data(bytes([b])) for b in b"LIST 1\r\nNOOP\r\n")
    assert out == f"+OK 1 {crlf_len(MESSAGES[0])}\r\n+OK\r\n".encode()
    assert alice.receive_data(b"NO") == b""
    assert alice.receive_data(b"OP\r") == b""
    assert alice.receive_data(b"\n") == b"+OK\r\n"


def test_pipelining_answers_in_order(ctx, store):
    session = new_session(ctx)
    out = session.receive_data(f"USER alice\r\nPASS {PASSWORD}\r\nSTAT\r\nDELE 1\r\nRETR 2\r\n"
                               "UIDL 3\r\nQUIT\r\nNOOP\r\n".encode())
    replies = re.findall(rb"^[+-](?:OK|ERR)[^\r]*", out, re.M)
    assert [r.split(b" ")[0] for r in replies] == [b"+OK"] * 7
    assert replies[5].startswith(b"+OK 3 ")
    assert replies[-1].startswith(b"+OK mail.example.com POP3 server signing off (1 ")
    assert session.closed  # the NOOP after QUIT got no answer
    assert len(inbox(store)) == 2


def test_overlong_line_is_refused_and_session_survives(alice):
    reply = alice.receive_data(b"LIST " + b"1" * 600 + b"\r\nNOOP\r\n")
    assert reply == (b"-ERR line too long (a POP3 command line is at most 255 octets, "
                     b"ending with CRLF)\r\n+OK\r\n")


def test_endless_line_does_not_grow_memory(alice):
    for _chunk in range(200):
        assert alice.receive_data(b"A" * 10_000) == b""
        assert len(alice._buffer) <= MAX_LINE
    # one -ERR for the whole over-long line, once its end finally comes
    assert alice.receive_data(b"AAAA\r\nNOOP\r\n").startswith(b"-ERR line too long")
    assert alice.receive_data(b"NOOP\r\n") == b"+OK\r\n"


def test_line_at_the_limit_is_accepted(alice):
    line = b"NOOP" + b" " * (MAX_LINE - 6)  # with CRLF exactly MAX_LINE octets
    assert alice.receive_data(line + b"\r\n") == b"+OK\r\n"
    assert alice.receive_data(line + b" \r\n").startswith(b"-ERR line too long")


def test_many_pipelined_commands_are_not_quadratic(alice):
    import time
    data = b"NOOP\r\n" * 100_000
    start = time.perf_counter()
    out = alice.receive_data(data)
    assert out == b"+OK\r\n" * 100_000
    assert time.perf_counter() - start < 5


def test_without_apop_the_greeting_has_no_timestamp(ctx):
    session = Pop3Session(ctx, apop=False)
    assert session.timestamp is None
    assert session.greeting() == b"+OK mail.example.com POP3 server ready\r\n"
    reply = say(session, "APOP alice 0123456789abcdef0123456789abcdef")
    assert reply.startswith("-ERR [AUTH] APOP is not enabled on this server")
    say(session, "USER alice")
    assert say(session, f"PASS {PASSWORD}").startswith("+OK")


def test_internal_error_ends_the_session_and_deletes_nothing(alice, store, monkeypatch, caplog):
    say(alice, "DELE 1")

    def broken(uid, crlf=True):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(inbox(store), "read", broken)
    reply = say(alice, "RETR 2")
    assert reply.startswith("-ERR [SYS/TEMP] internal server error")
    assert "disk on fire" not in reply  # the details go to the log only
    assert "disk on fire" in caplog.text
    assert alice.closed and alice.failed
    assert not store_lock_held(alice)
    assert len(inbox(store)) == 3


def test_pipelined_retrs_are_answered_in_bounded_steps(ctx, store):
    big = b"Subject: big\n\n" + b"x" * 100 + b"\n" * (OUTPUT_BUDGET // 3)
    inbox(store).deliver(big)
    session = new_session(ctx)
    say(session, "USER alice")
    say(session, f"PASS {PASSWORD}")
    out = session.receive_data(b"RETR 4\r\n" * 6 + b"NOOP\r\n")
    assert out.count(b"+OK ") < 6 and session.pending  # not everything at once
    assert len(out) < 2 * OUTPUT_BUDGET
    while session.pending:
        more = session.receive_data()
        assert more and len(more) < 2 * OUTPUT_BUDGET
        out += more
    replies = re.findall(rb"^\+OK[^\r]*", out, re.M)
    assert len(replies) == 7 and replies[-1] == b"+OK"
    assert session.receive_data() == b""


def test_message_without_final_line_end(ctx, store):
    inbox(store).deliver(b"Subject: x\n\nno line end")
    session = new_session(ctx)
    say(session, "USER alice")
    say(session, f"PASS {PASSWORD}")
    size = len(b"Subject: x\r\n\r\nno line end")
    assert say(session, "LIST 4") == f"+OK 4 {size}\r\n"
    # the size stays that of the message; the line end before "." is the terminator's
    assert say(session, "RETR 4") == (f"+OK {size} octets\r\nSubject: x\r\n\r\n"
                                      "no line end\r\n.\r\n")
    assert say(session, "TOP 4 9").endswith("\r\n\r\nno line end\r\n.\r\n")


# ----------------------------------------------------------------------------- issue 10

def test_strict_mode_refuses_apop_before_stls(ctx, store):
    """An APOP digest of a known password is crackable offline: like USER/PASS, not in clear."""
    ctx.strict = True
    alice = store.account("alice")
    session = Pop3Session(ctx, tls_available=True)
    session.greeting()
    digest = hashlib.md5((session.timestamp + alice.apop_secret).encode()).hexdigest()
    assert say(session, f"APOP alice {digest}").startswith(
        "-ERR [AUTH] encryption required before logging in (send STLS first")
    assert session.state is State.AUTHORIZATION and not ctx.guard.attempts  # not even tried
    assert say(session, "STLS").startswith("+OK")
    session.tls_started()
    assert say(session, f"APOP alice {digest}").startswith("+OK alice's maildrop")


def test_a_big_message_comes_in_pieces(ctx, store):
    """RETR of a big message: bounded pieces, never the whole message copied at once."""
    lines_ = [b".dot at a line start" if i % 7 == 0 else b"line %d" % i for i in range(300_000)]
    big = b"Subject: big\n\n" + b"\n".join(lines_) + b"\n"
    inbox(store).deliver(big)
    session = new_session(ctx)
    say(session, "USER alice")
    say(session, f"PASS {PASSWORD}")
    pieces = [session.receive_data(b"RETR 4\r\nNOOP\r\n")]
    while session.pending:
        pieces.append(session.receive_data())
    assert len(pieces) > 3 and max(len(p) for p in pieces) < 2 * OUTPUT_BUDGET
    answer = b"".join(pieces)
    data = inbox(store).read(4)
    assert answer == b"+OK %d octets\r\n" % len(data) + byte_stuff(data) + b".\r\n+OK\r\n"


@pytest.mark.parametrize("data", [b".a\r\n.b", b"x\r\n.\r\n..\r\n", b"abc.\r\n.", b"...", b"",
                                  b"\r\n.\r\n.\r\n.", b"a\r\n" * 5 + b".end"])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 1000])
def test_stuffed_pieces_are_byte_stuffing_cut_anywhere(data, size):
    from maillab.pop3.core import stuffed_pieces
    assert b"".join(stuffed_pieces(data, size)) == byte_stuff(data)


def test_deferred_logins_wait_for_their_answer(ctx):
    """With defer_logins the server checks passwords off its loop; what was pipelined behind
    a login waits for its answer."""
    session = Pop3Session(ctx, defer_logins=True)
    session.greeting()
    out = session.receive_data(b"USER alice\r\nPASS wrong\r\nUSER alice\r\nPASS " + PASSWORD.encode()
                               + b"\r\nSTAT\r\n")
    assert out == b"+OK now send your password with PASS\r\n"
    request = session.login_request
    assert request is not None and request.user == "alice" and not session.pending
    assert session.receive_data() == b""  # nothing moves until the check is done
    assert session.finish_login(request.check()).startswith(b"-ERR [AUTH] invalid user name or password")
    assert session.auth_failed and session.pending
    out = session.receive_data()
    assert out == b"+OK now send your password with PASS\r\n"
    assert session.finish_login(session.login_request.check()).startswith(b"+OK alice's maildrop")
    assert session.receive_data().startswith(b"+OK 3 ")
    # APOP goes the same way
    other = Pop3Session(ctx, defer_logins=True)
    digest = hashlib.md5((other.timestamp + "nope").encode()).hexdigest()
    assert other.receive_data(f"APOP alice {digest}\r\n".encode()) == b""
    assert other.finish_login(other.login_request.check()).startswith(b"-ERR [AUTH] invalid user name or digest")
    assert other.finish_login(None) == b""  # no login waiting: nothing to answer
