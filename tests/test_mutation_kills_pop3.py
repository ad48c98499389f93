"""POP3 core rules that no other test pinned down: STLS and AUTH PLAIN in the core, CAPA's
STLS line, the APOP audit, a refused login stopping a pipelined packet, hints for SMTP words,
how a client's word is quoted back, timestamps that stay unique on a stuck clock, TOP's edges,
and what happens when the store fails under a command. Each test was shown to fail on a
planted bug (bench/mutation.py) that the rest of the suite let through."""

from __future__ import annotations

import base64
import hashlib
import re
import time

import pytest

from maillab.pop3 import core
from maillab.pop3.core import OUTPUT_BUDGET, Pop3Session, State, make_timestamp, top_of
from test_pop3_core import PASSWORD, alice, ctx, inbox, new_session, say, store  # noqa: F401


def plain(authzid: str, user: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


# ----------------------------------------------------------------------------- STLS, CAPA

def test_stls_refused_when_encrypted_already_or_without_a_certificate(ctx):
    secure = Pop3Session(ctx, tls_available=True, secure=True)
    assert say(secure, "STLS") == "-ERR this session is encrypted already\r\n"
    no_tls = Pop3Session(ctx, tls_available=False)
    assert say(no_tls, "STLS") == "-ERR TLS is not available on this server\r\n"
    for session in (secure, no_tls):  # both carry on in clear text (or in their TLS)
        assert not session.starttls_pending and say(session, "NOOP").startswith("-ERR")


def test_stls_stops_the_packet_and_drops_what_followed(ctx):
    session = Pop3Session(ctx, tls_available=True)
    out = session.receive_data(b"STLS\r\nUSER alice\r\nPASS " + PASSWORD.encode() + b"\r\n")
    assert out == b"+OK begin TLS negotiation\r\n"
    assert session.starttls_pending and not session.pending
    assert session.receive_data() == b""  # the clear-text commands are gone (RFC 2595 4)
    session.tls_started()
    assert session.secure and not session.starttls_pending
    assert say(session, "STAT").startswith("-ERR command not valid in this state")


def capa(session) -> list[str]:
    reply = say(session, "CAPA").split("\r\n")
    assert reply[0].startswith("+OK") and reply[-2:] == [".", ""]
    return reply[1:-2]


def test_capa_offers_stls_only_before_login_in_clear_text_with_a_certificate(ctx):
    session = Pop3Session(ctx, tls_available=True)
    assert "STLS" in capa(session)
    assert "STLS" not in capa(Pop3Session(ctx, tls_available=False))
    assert "STLS" not in capa(Pop3Session(ctx, tls_available=True, secure=True))
    say(session, "USER alice")
    say(session, f"PASS {PASSWORD}")
    assert session.state is State.TRANSACTION
    assert "STLS" not in capa(session)  # RFC 2595 4: AUTHORIZATION state only
    assert "UIDL" in capa(session)


# ----------------------------------------------------------------------------- AUTH PLAIN

def test_bare_auth_lists_plain(ctx):
    session = new_session(ctx)
    assert say(session, "AUTH") == "+OK SASL mechanisms follow\r\nPLAIN\r\n.\r\n"


def test_auth_plain_with_an_initial_response(ctx):
    session = new_session(ctx)
    assert say(session, f"AUTH PLAIN {plain('', 'alice', PASSWORD)}").startswith(
        "+OK alice's maildrop has 3")
    session.connection_lost()
    # the authorization identity may name the user itself
    same = new_session(ctx)
    assert say(same, f"auth plain {plain('alice', 'alice', PASSWORD)}").startswith("+OK")
    assert ctx.guard.attempts[-1].mechanism == "AUTH PLAIN"


def test_auth_plain_in_two_steps_and_cancelled(ctx):
    session = new_session(ctx)
    assert say(session, "AUTH PLAIN") == "+ \r\n"
    assert say(session, "*") == "-ERR authentication cancelled\r\n"
    assert session.state is State.AUTHORIZATION
    assert say(session, "AUTH PLAIN") == "+ \r\n"
    assert say(session, plain("", "alice", PASSWORD)).startswith("+OK alice's maildrop")


def test_auth_with_too_many_words_is_a_syntax_error(ctx):
    session = new_session(ctx)
    reply = say(session, f"AUTH PLAIN {plain('', 'alice', PASSWORD)} extra")
    assert reply.startswith("-ERR syntax error")
    assert session.state is State.AUTHORIZATION


@pytest.mark.parametrize("data", [
    base64.b64encode(b"alice\0" + PASSWORD.encode()).decode(),  # two parts, not three
    base64.b64encode(b"\0alice\0pw\0more").decode(),  # four parts
    "not-base64!",
    plain("", "alice", PASSWORD) + "!!",  # base64 with stray characters: not accepted
])
def test_malformed_auth_plain_data(ctx, data):
    session = new_session(ctx)
    assert say(session, f"AUTH PLAIN {data}").startswith("-ERR malformed AUTH PLAIN data")
    assert session.state is State.AUTHORIZATION and not session.closed


def test_auth_plain_for_another_user_is_refused_and_stops_the_packet(ctx):
    session = new_session(ctx)
    out = session.receive_data(f"AUTH PLAIN {plain('bob', 'alice', PASSWORD)}\r\nCAPA\r\n"
                               .encode())
    assert out == b"-ERR [AUTH] cannot act for another user\r\n"
    assert session.auth_failed and session.state is State.AUTHORIZATION
    assert session.receive_data().startswith(b"+OK capability list follows")


def test_strict_lab_wants_tls_before_auth_plain(ctx):
    ctx.strict = True
    session = Pop3Session(ctx, tls_available=True)
    assert say(session, f"AUTH PLAIN {plain('', 'alice', PASSWORD)}").startswith(
        "-ERR [AUTH] encryption required before logging in")
    assert not ctx.guard.attempts  # the password was not even checked


# ----------------------------------------------------------------------------- APOP

def test_a_refused_apop_stops_the_packet_and_is_audited(ctx):
    session = new_session(ctx)
    wrong = hashlib.md5((session.timestamp + "nope").encode()).hexdigest()
    out = session.receive_data(f"APOP alice {wrong}\r\nCAPA\r\n".encode())
    assert out.startswith(b"-ERR [AUTH] invalid user name or digest") and b"CAPA" not in out
    assert session.auth_failed
    assert session.receive_data().startswith(b"+OK capability list follows")
    attempt = ctx.guard.attempts[-1]
    assert (attempt.user, attempt.mechanism, attempt.success) == ("alice", "APOP", False)
    assert attempt.service.startswith("pop3")


def test_a_right_apop_lets_the_packet_go_on_and_is_audited(ctx):
    session = new_session(ctx)
    digest = hashlib.md5((session.timestamp + PASSWORD).encode()).hexdigest()
    out = session.receive_data(f"APOP alice {digest}\r\nSTAT\r\n".encode())
    assert re.fullmatch(rb"\+OK alice's maildrop[^\r]*\r\n\+OK 3 \d+\r\n", out)
    assert not session.auth_failed
    attempt = ctx.guard.attempts[-1]
    assert (attempt.user, attempt.mechanism, attempt.success) == ("alice", "APOP", True)


def test_an_apop_check_that_broke_counts_as_refused(ctx):
    session = Pop3Session(ctx, defer_logins=True)
    digest = hashlib.md5((session.timestamp + PASSWORD).encode()).hexdigest()
    assert session.receive_data(f"APOP alice {digest}\r\n".encode()) == b""
    reply = session.finish_login(None)  # the server's check raised: no result
    assert reply.startswith(b"-ERR [AUTH] invalid user name or digest")
    assert session.auth_failed and session.state is State.AUTHORIZATION


# ----------------------------------------------------------------------------- words and hints

@pytest.mark.parametrize("word", ["HELO", "EHLO", "MAIL", "RCPT", "DATA", "VRFY", "EXPN"])
def test_smtp_words_get_the_wrong_server_hint(ctx, word):
    assert f"{word} is an SMTP command" in say(new_session(ctx), f"{word.lower()} x")


def test_a_clients_word_is_quoted_short_and_printable(ctx):
    session = new_session(ctx)
    twenty = "A" * 20
    assert f"unknown command '{twenty}' (" in say(session, twenty)
    assert f"unknown command '{twenty}...' (" in say(session, twenty + "BCDE")
    assert "unknown command 'AB\\x7fC\\x80\\x1f' (" in say(session, b"AB\x7fC\x80\x1f")
    assert "unknown command '~~' (" in say(session, "~~")  # 0x7E is printable


def test_timestamps_follow_the_clock_and_stay_unique_when_it_stands_still(monkeypatch):
    before = time.time_ns()
    first = make_timestamp("h")
    clock = int(re.fullmatch(r"<\d+\.(\d+)@h>", first).group(1))
    assert clock >= before  # the wall clock, so a restarted server does not repeat old ones
    monkeypatch.setattr(core.time, "time_ns", lambda: clock)  # a clock that stands still
    stamps = [make_timestamp("h") for _ in range(3)]
    assert len(set(stamps + [first])) == 4


def test_top_of_a_message_with_no_header():
    data = b"\r\nbody one\r\nbody two\r\n"
    assert top_of(data, 0) == b"\r\n"
    assert top_of(data, 1) == b"\r\nbody one\r\n"
    assert top_of(data, 5) == data


# ----------------------------------------------------------------------------- a failing store

def test_uidl_with_two_numbers_is_a_syntax_error(alice):
    assert say(alice, "UIDL 1 2").startswith("-ERR syntax error")
    assert say(alice, "UIDL 1").startswith("+OK 1 ")


def test_a_maildrop_that_cannot_be_opened_is_a_temporary_error(ctx, store, monkeypatch):
    folder_class = type(inbox(store))

    def broken(self):
        raise OSError("disk gone")
    monkeypatch.setattr(folder_class, "messages", broken)
    session = new_session(ctx)
    say(session, "USER alice")
    assert say(session, f"PASS {PASSWORD}") == "-ERR [SYS/TEMP] cannot open the maildrop\r\n"
    assert session.state is State.AUTHORIZATION and not session.closed
    monkeypatch.undo()
    say(session, "USER alice")  # the maildrop lock was given back: a new login works
    assert say(session, f"PASS {PASSWORD}").startswith("+OK alice's maildrop")


@pytest.mark.parametrize("error", [KeyError, OSError])
def test_retr_answers_even_if_the_seen_flag_cannot_be_set(alice, store, monkeypatch, error):
    def broken(*args, **kwargs):
        raise error("flag")
    monkeypatch.setattr(inbox(store), "store_flags", broken)
    assert say(alice, "RETR 2").startswith("+OK")
    assert not alice.closed


def test_a_message_that_cannot_be_read_is_a_temporary_error_once(alice, store, monkeypatch):
    reads = []

    def broken(uid, crlf=True):
        reads.append(uid)
        raise OSError("bad sector")
    monkeypatch.setattr(inbox(store), "read", broken)
    assert say(alice, "RETR 2") == "-ERR [SYS/TEMP] cannot read message 2\r\n"
    assert len(reads) == 1  # an I/O error is not retried (a renamed file is: KeyError)
    assert not alice.closed and say(alice, "STAT").startswith("+OK 3 ")


def test_quit_that_cannot_delete_says_so_and_ends(alice, store, monkeypatch):
    def broken(uids, origin=None):
        raise OSError("read-only")
    monkeypatch.setattr(inbox(store), "expunge", broken)
    say(alice, "DELE 1")
    assert say(alice, "QUIT") == "-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    assert alice.closed and alice.state is State.UPDATE
    assert store.account("alice").maildrop_lock.acquire(blocking=False)  # released


def test_a_dropped_connection_frees_what_the_session_held(ctx, store):
    session = Pop3Session(ctx, defer_logins=True)
    session.receive_data(b"USER alice\r\nPASS " + PASSWORD.encode() + b"\r\nSTAT")
    assert session.login_request is not None  # holds the password until it is checked
    session.connection_lost()
    assert session.login_request is None and session._buffer == b""
    inbox(store).deliver(b"Subject: big\n\n" + b"x" * 1_500_000 + b"\n")
    reader = new_session(ctx)
    say(reader, "USER alice")
    say(reader, f"PASS {PASSWORD}")
    reader.receive_data(b"RETR 4\r\n")
    assert reader._stream is not None  # the rest of the message waits to be sent
    reader.connection_lost()
    assert reader._stream is None and not reader.pending


def test_a_message_file_that_keeps_vanishing_is_tried_three_times(alice, store, monkeypatch):
    folder, reads = inbox(store), []

    def renamed(uid, crlf=True):  # the file moved (a flag change elsewhere) every time
        reads.append(uid)
        raise KeyError(uid)
    monkeypatch.setattr(folder, "read", renamed)
    assert say(alice, "RETR 2") == "-ERR [SYS/TEMP] cannot read message 2\r\n"
    assert len(reads) == 3
    monkeypatch.undo()
    assert say(alice, "RETR 2").startswith("+OK")


def test_commands_per_turn_answers_that_many_per_call(ctx):
    session = Pop3Session(ctx, commands_per_turn=1)
    assert session.commands_done == 0
    out = session.receive_data(b"CAPA\r\nCAPA\r\nQUIT\r\n")
    assert out.count(b"+OK") == 1 and session.pending and session.commands_done == 1
    assert session.receive_data().startswith(b"+OK capability list follows")
    assert session.receive_data().startswith(b"+OK") and session.closed
    assert session.commands_done == 3
    two = Pop3Session(ctx, commands_per_turn=2)
    assert two.receive_data(b"CAPA\r\nCAPA\r\nCAPA\r\n").count(b"+OK capability") == 2
    assert two.receive_data(b"CA").startswith(b"+OK capability")  # the third, at last
    assert two.receive_data(b"P") == b"" and two.commands_done == 3  # a partial line counts not


def test_a_plain_session_offers_no_stls(ctx):
    assert "STLS" not in capa(new_session(ctx))  # no certificate unless the server says so


def test_a_bare_line_feed_first_is_an_empty_command(ctx):
    session = new_session(ctx)
    out = session.receive_data(b"\nCAPA\r\n")
    assert out.startswith(b"-ERR empty command") and b"+OK capability list follows" in out


def test_many_small_replies_also_wait_for_the_output_budget(ctx):
    session = new_session(ctx)
    count = 2 * OUTPUT_BUDGET // len(say(new_session(ctx), "CAPA")) + 10
    out = session.receive_data(b"CAPA\r\n" * count)
    assert len(out) < OUTPUT_BUDGET + 1000 and session.pending
    while session.pending:
        out += session.receive_data()
    assert out.count(b"+OK capability list follows") == count


# ----------------------------------------------------------------------------- LANG, UTF8

def test_lang_lists_switches_and_refuses_in_the_language_in_use(ctx):
    """RFC 6856 4: LANG alone lists the languages, each named in itself; LANG with a tag
    answers in the new language from that reply on; a tag the server lacks is refused in
    the language in use, which stays."""
    s = new_session(ctx)
    assert say(s, "LANG") == ("+OK language listing follows\r\ni-default English\r\n"
                              "en English\r\nel Ελληνικά\r\n.\r\n")
    assert say(s, "LANG el") == "+OK el η γλώσσα άλλαξε: Ελληνικά\r\n"
    refused = say(s, "LANG xx")
    assert refused.startswith("-ERR el ") and "LANG" in refused and "language" not in refused
    assert say(s, "LANG *").startswith("+OK el ")  # * keeps the language in use
    for bad in ("LANG el en", "LANG e!"):
        assert say(s, bad).startswith("-ERR συντακτικό λάθος")
    assert say(s, "LANG en-GB") == "+OK en language changed: English\r\n"  # lookup: en-GB -> en
    say(s, "USER alice")
    assert say(s, f"PASS {PASSWORD}").startswith("+OK")
    assert say(s, "LANG el").startswith("+OK el ")  # in TRANSACTION too
    assert say(s, "LANG i-default") == "+OK i-default language changed: English\r\n"


def test_utf8_is_taken_before_login_only_and_capa_says_so(ctx):
    s = new_session(ctx)
    capa = say(s, "CAPA").split("\r\n")
    assert "UTF8 USER" in capa and "LANG" in capa
    assert say(s, "UTF8 x") == "-ERR syntax error (UTF8 takes no arguments)\r\n"
    assert say(s, "UTF8") == "+OK UTF-8 mode is on\r\n"
    say(s, "USER alice")
    assert say(s, f"PASS {PASSWORD}").startswith("+OK")
    capa = say(s, "CAPA").split("\r\n")
    assert "UTF8 USER" not in capa and "LANG" in capa
    assert say(s, "UTF8").startswith("-ERR command not valid in this state")
