"""IMAP sessions rule by rule, as a client sees them: the capabilities announced, logins, how a
folder name is quoted back, and the replies of the commands. Each test was shown to fail on a
planted bug (bench/mutation.py, docs/mutation.md) that the rest of the suite let through."""

from __future__ import annotations

import time

import pytest

from maillab.imap import core
from maillab.imap import fetch as fetchmod
from maillab.imap.testing import ACCOUNTS, ImapTestServer
from maillab.net import ServerContext
from rawclient import Raw
from maillab.transcript import Recorder
from test_imap_core import Client, ctx, fill, store  # noqa: F401  (ctx, store: fixtures)

CAPABILITIES = (b"IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT "
                b"SPECIAL-USE CHILDREN LANGUAGE")


@pytest.fixture
def alice(ctx):
    return Client(ctx).login()


def test_the_capabilities_announced_before_and_after_login(ctx):
    c = Client(ctx)
    assert c.greeting.startswith(b"* OK [CAPABILITY " + CAPABILITIES + b" AUTH=PLAIN] ")
    assert c.cmd("a CAPABILITY") == (b"* CAPABILITY " + CAPABILITIES + b" AUTH=PLAIN\r\n"
                                     b"a OK CAPABILITY completed\r\n")
    assert c.cmd("b LOGIN alice alice-pw").startswith(b"b OK [CAPABILITY " + CAPABILITIES + b"] ")


def test_a_password_that_is_not_utf8_is_a_failed_login_not_an_error():
    with ImapTestServer() as srv, Raw(srv.port) as r:
        r.line()
        r.send(b"a LOGIN alice {4+}\r\n\xff\xfe\xfd\xfc\r\n")
        assert r.line().startswith("a NO [AUTHENTICATIONFAILED] ")
        r.send(f"b LOGIN alice {ACCOUNTS['alice']}\r\n")
        assert r.line().startswith("b OK ")


def test_a_folder_name_is_quoted_back_up_to_60_characters(alice):
    assert b" no folder named " + b"n" * 60 + b"; " in alice.cmd("a SELECT " + "n" * 60)
    assert b" no folder named " + b"n" * 60 + b"...; " in alice.cmd("a SELECT " + "n" * 61)


def session_that_missed_an_expunge(ctx, store):
    """Two sessions on a filled INBOX; the second deletes and expunges message 1. The first
    session (returned, with the second's EXPUNGE answer) has not been told yet."""
    fill(store)
    a, b = Client(ctx).login(), Client(ctx).login()
    a.cmd("a SELECT INBOX")
    b.cmd("b SELECT INBOX")
    b.cmd("b STORE 1 +FLAGS (\\Deleted)")
    return a, b.cmd("b EXPUNGE")


def test_a_refused_search_sends_no_expunge_but_a_refused_uid_search_does(ctx, store):
    a, expunged = session_that_missed_an_expunge(ctx, store)
    assert expunged.startswith(b"* 1 EXPUNGE\r\n")
    # RFC 3501 7.4.1: no EXPUNGE during a SEARCH by sequence numbers, refused or not
    assert a.cmd("a SEARCH CHARSET KOI8 ALL").startswith(b"a NO [BADCHARSET (UTF-8 US-ASCII)]")
    assert a.cmd("a UID SEARCH CHARSET KOI8 ALL").startswith(b"* 1 EXPUNGE\r\na NO [BADCHARSET")


def test_a_line_that_is_no_command_gets_an_example_for_the_state(alice):
    assert alice.cmd("a ((") == (b"a BAD after the tag comes a command name, for example: "
                                 b"a1 SELECT INBOX\r\n")
    assert alice.cmd("a " + "X" * 41 + "YYY") == (
        b"a BAD unknown command " + b"X" * 40 + b"; CAPABILITY lists what this server "
        b"understands\r\n")  # the first 40 characters of it


def test_a_literal_too_large_without_a_usable_tag_gets_an_untagged_bad(alice):
    assert alice.cmd(b"(x LOGIN {100000}") == (
        b"* BAD [TOOBIG] that literal is too large (100000 bytes; at most 65536)\r\n")


def test_an_append_literal_may_be_larger_than_other_literals(alice):
    assert alice.cmd(b"a APPEND INBOX {100000}") == b"+ Ready for literal data\r\n"
    reply = alice.send(b"Subject: big\r\n\r\n" + b"x" * (100000 - 16) + b"\r\n")
    assert reply.startswith(b"a OK [APPENDUID ")


def test_after_idle_literals_are_literals_again(alice):
    alice.cmd("a SELECT INBOX")
    assert alice.cmd("b IDLE") == b"+ idling\r\n"
    assert alice.cmd("DONE") == b"b OK IDLE terminated\r\n"
    assert alice.cmd(b"c APPEND INBOX {5}") == b"+ Ready for literal data\r\n"


def test_language_takes_ranges_and_answers_in_the_one_chosen(alice):
    assert alice.cmd("a LANGUAGE EL").startswith(b"* LANGUAGE (el)\r\na OK ")
    assert alice.cmd("b LANGUAGE XX EN").startswith(b"* LANGUAGE (en)\r\nb OK ")


def test_commands_keep_a_session_alive_and_silence_ends_it():
    with ImapTestServer(options={"imap_timeout": 0.6}) as srv, Raw(srv.port) as r:
        r.line()
        r.send(f"a LOGIN alice {ACCOUNTS['alice']}\r\n")
        assert r.line().startswith("a OK ")
        start = time.monotonic()
        while time.monotonic() - start < 1.5:  # 2.5 times the idle timeout, busy all along
            r.send("n NOOP\r\n")
            assert r.line() == "n OK NOOP completed"
            time.sleep(0.1)
        assert r.line() == "* BYE Autologout; idle for 0.6 seconds"


def test_select_accepts_an_empty_parameter_list(alice):
    assert alice.cmd("a SELECT INBOX ()").endswith(b"a OK [READ-WRITE] SELECT completed\r\n")


def test_folder_commands_refuse_what_exists_and_text_after_them(alice):
    assert alice.cmd("a CREATE INBOX") == b"a NO [ALREADYEXISTS] INBOX always exists\r\n"
    assert alice.cmd("a CREATE Work") == b"a OK CREATE completed\r\n"
    assert alice.cmd("a RENAME Work Sent").startswith(b"a NO [ALREADYEXISTS] folder Sent exists")
    assert alice.cmd("a DELETE Work extra").startswith(b"a BAD DELETE: unexpected text")
    assert alice.cmd("a LIST \"\" Work").startswith(b"* LIST ")  # still there


def test_a_renamed_folder_must_leave_room_for_its_subfolders_names(alice):
    longest = max(n for n in range(1, 300) if core._fits("x" * n))
    alice.cmd("a CREATE a")
    alice.cmd("a CREATE a.b")
    # "a.b" becomes new + ".b": that fits exactly (the whole old name would not)
    assert alice.cmd("a RENAME a " + "x" * (longest - 2)) == b"a OK RENAME completed\r\n"
    alice.cmd("a CREATE c")
    alice.cmd("a CREATE c.bb")
    assert alice.cmd("a RENAME c " + "y" * (longest - 2)).startswith(b"a NO [CANNOT] ")


def test_list_shows_inbox_first_then_the_rest_in_order(alice):
    names = [line.rsplit(b" ", 1)[1] for line in alice.cmd('a LIST "" "*"').split(b"\r\n")
             if line.startswith(b"* LIST ")]
    assert names == [b"INBOX", b"Drafts", b"Junk", b"Sent", b"Trash"]


def test_namespace_takes_no_arguments(alice):
    assert alice.cmd("a NAMESPACE") == (b'* NAMESPACE (("" ".")) NIL NIL\r\n'
                                        b"a OK NAMESPACE completed\r\n")
    assert alice.cmd("a NAMESPACE x").startswith(b"a BAD NAMESPACE: unexpected text")


def test_append_and_idle_refuse_what_they_do_not_take(alice):
    assert alice.cmd("a APPEND INBOX hello") == (
        b"a BAD APPEND: APPEND sends the message as a literal: a1 APPEND INBOX {size} then the "
        b"message\r\n")
    assert alice.cmd("b IDLE x") == b"b BAD IDLE: unexpected text at the end of the command:  x\r\n"
    alice.cmd("c SELECT INBOX")
    assert alice.cmd("d CHECK x") == (
        b"d BAD CHECK: unexpected text at the end of the command:  x\r\n")


def test_append_takes_the_recent_flag_and_leaves_it_to_the_server(ctx, alice):
    alice.cmd("a SELECT INBOX")
    assert alice.cmd("c APPEND INBOX (\\Recent \\Seen) {10}") == b"+ Ready for literal data\r\n"
    assert alice.send(b"Subject: r\r\n").endswith(b"APPEND completed\r\n")
    assert alice.cmd("d FETCH 1 FLAGS") == (b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n"
                                            b"d OK FETCH completed\r\n")
    other = Client(ctx).login()  # for another session it is not recent: nothing was stored
    other.cmd("a SELECT INBOX")
    assert other.cmd("d FETCH 1 FLAGS") == b"* 1 FETCH (FLAGS (\\Seen))\r\nd OK FETCH completed\r\n"


def test_an_internal_error_in_the_middle_of_a_fetch_closes_the_line_first(alice, store,
                                                                           monkeypatch):
    fill(store)
    alice.cmd("a SELECT INBOX")

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(fetchmod, "section_bytes", broken)
    reply = alice.cmd("e FETCH 1 (UID BODY.PEEK[1])")
    assert reply.startswith(b"* 1 FETCH (UID 1 )\r\ne NO ")  # the line ends before the NO
    assert b"disk on fire" not in reply


def test_the_fetch_output_limit_holds_at_its_boundaries(alice, store, monkeypatch):
    fill(store)
    alice.cmd("a SELECT INBOX")
    size = int(alice.cmd("a FETCH 1 RFC822.SIZE").split(b"RFC822.SIZE ")[1].split(b")")[0])
    item = len(b"BODY[] {%d}\r\n" % size) + size  # what the answer counts of the message
    monkeypatch.setattr(core, "MAX_FETCH_OUTPUT", item)
    assert alice.cmd("b FETCH 1 BODY.PEEK[]").endswith(b"\r\nb OK FETCH completed\r\n")
    monkeypatch.setattr(core, "MAX_FETCH_OUTPUT", item - 1)  # estimated in time, sent too much
    assert b"b NO [LIMIT] FETCH stopped after" in alice.cmd("b FETCH 1 BODY.PEEK[]")
    monkeypatch.setattr(core, "MAX_FETCH_OUTPUT", size - 1)  # over the estimate: not even begun
    assert alice.cmd("b FETCH 1 BODY.PEEK[]").startswith(b"b NO [LIMIT] that FETCH would answer")
    monkeypatch.setattr(core, "MAX_FETCH_OUTPUT", size)
    assert b"b NO [LIMIT] FETCH stopped after" in alice.cmd("b FETCH 1 BODY.PEEK[]")


def test_flags_come_with_a_body_only_when_they_change(alice, store):
    fill(store)
    alice.cmd("a SELECT INBOX")
    done = b"a OK FETCH completed\r\n"
    assert alice.cmd("a FETCH 1 BODY[]").endswith(b" FLAGS (\\Seen \\Recent))\r\n" + done)
    assert alice.cmd("a FETCH 1 BODY[]").endswith(b"\r\nBob\r\n)\r\n" + done)  # seen already


def test_store_and_copy_of_a_message_deleted_meanwhile(ctx, store):
    a, _ = session_that_missed_an_expunge(ctx, store)  # a still sees message 1: STORE may not
    # tell it (RFC 3501 7.4.1)
    assert a.cmd("a STORE 1 +FLAGS (\\Flagged)") == (
        b"a NO [EXPUNGEISSUED] some of those messages were deleted meanwhile\r\n")
    assert a.cmd("a COPY 1:2 Sent").startswith(b"* 1 EXPUNGE\r\na OK [COPYUID ")  # one copied
    assert a.cmd("a STATUS Sent (MESSAGES)").startswith(b"* STATUS Sent (MESSAGES 1)\r\n")
    assert a.cmd("a COPY 1 Sent extra") == (
        b"a BAD COPY: unexpected text at the end of the command:  extra\r\n")


def test_body_and_bodystructure_come_with_a_section_read_from_the_message(alice, store):
    fill(store)
    alice.cmd("a SELECT INBOX")
    reply = alice.cmd("a FETCH 2 (BODY BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert reply.startswith(b'* 2 FETCH (BODY (("text" "plain" ("charset" "utf-8") NIL NIL '
                            b'"quoted-printable" 55 1)')
    assert b' "alternative") BODY[HEADER.FIELDS (SUBJECT)] {49}\r\n' in reply  # no extension data
    reply = alice.cmd("a FETCH 2 (BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b' "alternative" ("boundary" ' in reply  # with its extension data


def test_what_another_session_changed_is_told_once(ctx, store):
    fill(store)
    a, b = Client(ctx).login(), Client(ctx).login()
    a.cmd("a SELECT INBOX")
    b.cmd("b SELECT INBOX")
    b.cmd("b STORE 2 +FLAGS ($Important)")  # a keyword a's session has not seen yet
    assert a.cmd("a NOOP") == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important \\*)] "
        b"Flags permitted\r\n* 2 FETCH (FLAGS ($Important \\Recent))\r\na OK NOOP completed\r\n")
    assert a.cmd("a NOOP") == b"a OK NOOP completed\r\n"
    assert a.cmd("a STORE 3 +FLAGS (\\Flagged)").startswith(b"* 3 FETCH (FLAGS (\\Flagged ")
    assert a.cmd("a NOOP") == b"a OK NOOP completed\r\n"  # its own change: told by STORE
    b.cmd("b STORE 4 +FLAGS (\\Answered)")  # then a changes the same message: one report
    assert a.cmd("a STORE 4 +FLAGS (\\Flagged)") == (
        b"* 4 FETCH (FLAGS (\\Answered \\Flagged \\Recent))\r\na OK STORE completed\r\n")
    b.cmd("b STORE 1 +FLAGS (\\Deleted)")
    b.cmd("b EXPUNGE")
    assert a.cmd("a SEARCH ALL") == b"* SEARCH 2 3 4 5\r\na OK SEARCH completed\r\n"
    assert a.cmd("a NOOP") == b"* 1 EXPUNGE\r\na OK NOOP completed\r\n"
    assert a.cmd("a NOOP") == b"a OK NOOP completed\r\n"  # and only once


@pytest.mark.parametrize("pattern, names", [
    ("*ent", [b"Sent"]), ("%ent", [b"Sent"]), ("S*", [b"Sent"]),
    ("*Sent", [b"Sent"]), ("%Trash", [b"Trash"]),  # a wildcard may match nothing
    ("%", [b"INBOX", b"Drafts", b"Junk", b"Sent", b"Trash"]),
])
def test_list_patterns(alice, pattern, names):
    lines = alice.cmd(f'a LIST "" "{pattern}"').split(b"\r\n")
    assert [line.rsplit(b" ", 1)[1] for line in lines if line.startswith(b"* LIST ")] == names


def test_a_fetch_stopped_at_the_limit_says_how_many_megabytes(alice, store, monkeypatch):
    store.account("alice").folder("INBOX").deliver(b"Subject: big\r\n\r\n" + b"x" * (3 << 19))
    alice.cmd("a SELECT INBOX")
    monkeypatch.setattr(core, "MAX_FETCH_OUTPUT", (3 << 19) + 16)  # the message: estimated in
    assert alice.cmd("b FETCH 1 BODY.PEEK[]").endswith(
        b"b NO [LIMIT] FETCH stopped after 1 MB; ask for fewer messages at a time\r\n")


def test_uid_needs_a_command_after_it_and_append_a_login_before_it(ctx, alice):
    assert alice.cmd("a UID") == (b"a BAD UID comes before FETCH, SEARCH, STORE, COPY, MOVE or "
                                  b"EXPUNGE\r\n")
    assert alice.cmd("a RENAME Trash Bin extra") == (
        b"a BAD RENAME: unexpected text at the end of the command:  extra\r\n")
    stranger = Client(ctx)
    assert stranger.cmd("a APPEND INBOX {5}") == (
        b"a BAD log in before you APPEND, e.g. a1 LOGIN alice password\r\n")


def test_a_fetch_from_the_index_stopped_at_the_limit_says_how_many_megabytes(alice, store,
                                                                             monkeypatch):
    to = b", ".join(b"user%04d@example.com" % i for i in range(700))  # ~15 KB of ENVELOPE
    inbox = store.account("alice").folder("INBOX")
    for _ in range(80):
        inbox.deliver(b"To: " + to + b"\r\nSubject: many\r\n\r\nx\r\n")
    alice.cmd("a SELECT INBOX")
    monkeypatch.setattr(core, "MAX_FETCH_OUTPUT", 1 << 20)
    assert alice.cmd("b FETCH 1:* ENVELOPE").endswith(
        b"b NO [LIMIT] FETCH stopped after 1 MB; ask for fewer messages at a time\r\n")


def test_a_copy_that_fails_half_way_leaves_the_destination_as_it_was(alice, store, monkeypatch):
    fill(store)
    alice.cmd("a SELECT INBOX")
    inbox = store.account("alice").folder("INBOX")
    copy_to, calls = type(inbox).copy_to, []

    def copy_then_fail(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return copy_to(self, *args, **kwargs)
    monkeypatch.setattr(type(inbox), "copy_to", copy_then_fail)
    reply = alice.cmd("a COPY 1:3 Trash")
    assert reply.startswith(b"a NO ") and b"disk on fire" not in reply  # RFC 3501 6.4.7
    assert len(store.account("alice").folder("Trash")) == 0  # the first copy taken back
    monkeypatch.undo()
    assert alice.cmd("b MOVE 1 Trash").endswith(b"b OK MOVE completed\r\n")


def test_a_fetch_of_flags_alone_stops_at_the_limit_too(alice, store, monkeypatch):
    fill(store)
    alice.cmd("a SELECT INBOX")
    monkeypatch.setattr(core, "MAX_FETCH_OUTPUT", 40)  # less than the five FLAGS lines
    assert alice.cmd("b FETCH 1:* FLAGS").endswith(
        b"b NO [LIMIT] FETCH stopped after 0 MB; ask for fewer messages at a time\r\n")


def test_bytes_that_arrive_before_the_tls_handshake_are_never_run(ctx):
    """After STARTTLS's OK and before the handshake, plain-text bytes are an injection
    (CVE-2011-0411): they are dropped, not kept to run once TLS is up."""
    ctx.options["tls_context"] = object()
    c = Client(ctx)
    assert c.send(b"a1 STARTTLS\r\n") == b"a1 OK Begin TLS negotiation now\r\n"
    assert c.send(b"a2 LOGIN alice alice-pw\r\n") == b""
    c.s.tls_started()
    out = c.cmd("a3 NOOP")
    assert b"a2 " not in out and out.startswith(b"a3 OK")
    assert c.s.state is core.State.NOT_AUTHENTICATED


def test_an_authenticate_left_waiting_for_its_line_is_an_unfinished_command():
    """AUTHENTICATE's "+" waits for the client's line: a command begun and not finished, on
    the command timer (not the login timer, minutes longer)."""
    with ImapTestServer(options={"imap_command_timeout": 0.5, "imap_login_timeout": 60}) as srv, \
            Raw(srv.port) as r:
        r.line()
        r.send(b"a AUTHENTICATE PLAIN\r\n")
        assert r.line().startswith("+")
        assert r.line() == ("* BYE Autologout; a command was begun but not finished within "
                            "0.5 seconds")
