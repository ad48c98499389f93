"""IMAP sessions rule by rule, as a client sees them: the capabilities announced, logins, how a
folder name is quoted back, the replies of the commands, what other sessions' changes look like,
and the output pump a server drives (commands per turn, answers made as they are sent,
autologout). Each test was shown to fail on a planted bug (bench/mutation.py, docs/mutation.md)
that the rest of the suite let through."""

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


def disk_on_fire(*args, **kwargs):
    """Stands in for a store or parser function that fails (an internal error)."""
    raise RuntimeError("disk on fire")


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


def select_filled_inbox(session, store):
    """Fills alice's INBOX with the sample messages and selects it in ``session`` (tag a)."""
    fill(store)
    session.cmd("a SELECT INBOX")


def two_sessions_in_a_filled_inbox(ctx, store, first_opens="SELECT"):
    """Two of alice's sessions on a filled INBOX: the first opened it with ``first_opens``
    (SELECT or EXAMINE), the second with SELECT (tags a and b)."""
    fill(store)
    a, b = Client(ctx).login(), Client(ctx).login()
    a.cmd(f"a {first_opens} INBOX")
    b.cmd("b SELECT INBOX")
    return a, b


def session_that_missed_an_expunge(ctx, store):
    """Two sessions on a filled INBOX; the second deletes and expunges message 1. The first
    session (returned, with the second's EXPUNGE answer) has not been told yet."""
    a, b = two_sessions_in_a_filled_inbox(ctx, store)
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
    select_filled_inbox(alice, store)

    monkeypatch.setattr(fetchmod, "section_bytes", disk_on_fire)
    reply = alice.cmd("e FETCH 1 (UID BODY.PEEK[1])")
    assert reply.startswith(b"* 1 FETCH (UID 1 )\r\ne NO ")  # the line ends before the NO
    assert b"disk on fire" not in reply


def test_the_fetch_output_limit_holds_at_its_boundaries(alice, store, monkeypatch):
    select_filled_inbox(alice, store)
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
    select_filled_inbox(alice, store)
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
    select_filled_inbox(alice, store)
    reply = alice.cmd("a FETCH 2 (BODY BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert reply.startswith(b'* 2 FETCH (BODY (("text" "plain" ("charset" "utf-8") NIL NIL '
                            b'"quoted-printable" 55 1)')
    assert b' "alternative") BODY[HEADER.FIELDS (SUBJECT)] {49}\r\n' in reply  # no extension data
    reply = alice.cmd("a FETCH 2 (BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b' "alternative" ("boundary" ' in reply  # with its extension data


def test_what_another_session_changed_is_told_once(ctx, store):
    a, b = two_sessions_in_a_filled_inbox(ctx, store)
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
    select_filled_inbox(alice, store)
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
    select_filled_inbox(alice, store)
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


# ----------------------------------------------------------------------------- the output pump

def test_commands_per_turn_answers_that_many_pipelined_commands_per_call(ctx):
    """A server that asks for one command per turn (commands_per_turn=1) gets one more command
    run per data_to_send(limit) (receive_data ran the first), the rest at the next calls: none
    is lost, none runs early."""
    c = Client(ctx, commands_per_turn=1)
    c.s.receive_data(b"a NOOP\r\nb NOOP\r\nc NOOP\r\n")
    replies = []
    while c.s.has_more:
        replies.append(c.s.data_to_send(1 << 16))
    assert replies[0] == b"a OK NOOP completed\r\nb OK NOOP completed\r\n"
    assert b"".join(replies[1:]) == b"c OK NOOP completed\r\n"  # (then maybe an empty turn)
    c.s.receive_data(b"d NOOP\r\ne NOOP\r\n")  # without a limit: all of them at once
    assert c.s.data_to_send() == b"d OK NOOP completed\r\ne OK NOOP completed\r\n"


def test_a_login_answered_after_the_client_hung_up_is_dropped(ctx):
    """The password check runs off the server's loop (defer_logins): its result may come back
    after the connection is gone, and then nothing is answered and nobody logs in."""
    c = Client(ctx, defer_logins=True)
    assert c.cmd("a LOGIN alice alice-pw") == b""
    request = c.s.login_request
    assert request is not None and c.s.busy
    c.s.connection_lost()
    assert c.s.state is core.State.LOGOUT
    c.s.finish_login(request.check())
    assert c.s.data_to_send() == b"" and c.s.user is None
    assert c.s.state is core.State.LOGOUT


def test_a_session_logged_out_is_in_the_logout_state_and_reads_nothing(alice):
    alice.cmd("a SELECT INBOX")
    assert alice.cmd("b LOGOUT") == b"* BYE Logging out, goodbye\r\nb OK LOGOUT completed\r\n"
    assert alice.s.state is core.State.LOGOUT and alice.s.selected is None
    assert alice.cmd("c NOOP") == b""


def test_autologout_drops_what_was_not_sent_and_ends_the_session(alice, store):
    store.account("alice").folder("INBOX").deliver(b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n")
    alice.cmd("a SELECT INBOX")
    s = alice.s
    s.receive_data(b"b FETCH 1 BODY.PEEK[]\r\n")
    first = s.data_to_send(100)  # the answer is made as it is sent: cut short here
    assert first.startswith(b"* 1 FETCH (BODY[] {") and s.has_more
    s.autologout()
    assert s.data_to_send() == b"* BYE Autologout; idle for too long\r\n"  # not the rest
    assert s.closing and s.busy and not s.has_more and s.state is core.State.LOGOUT
    assert alice.cmd("c NOOP") == b""


def test_autologout_drops_answers_not_sent_yet(alice):
    alice.s.receive_data(b"a NOOP\r\n")  # answered, but the server has not sent it yet
    alice.s.autologout("Autologout; bye\r\n* OK fake")
    assert alice.s.data_to_send() == b"* BYE Autologout; bye\\x0d\\x0a* OK fake\r\n"


def test_a_reselect_stops_waking_the_server_for_the_folder_left(ctx, store):
    wakeups = []
    c = Client(ctx, wakeup=lambda: wakeups.append(1)).login()
    c.cmd("a SELECT INBOX")
    assert c.cmd("b SELECT Sent").startswith(b"* OK [CLOSED] Previous folder closed\r\n")
    store.account("alice").folder("INBOX").deliver(b"Subject: elsewhere\r\n\r\nx\r\n")
    assert wakeups == []  # INBOX is no longer watched
    store.account("alice").folder("Sent").deliver(b"Subject: here\r\n\r\nx\r\n")
    assert wakeups == [1]
    assert c.cmd("c NOOP") == b"* 1 EXISTS\r\n* 1 RECENT\r\nc OK NOOP completed\r\n"


def test_a_message_dropped_into_the_folder_by_hand_shows_at_the_next_command(alice, store):
    alice.cmd("a SELECT INBOX")
    inbox = store.account("alice").folder("INBOX")
    (inbox.path / "new" / "dropped.eml").write_bytes(b"Subject: by hand\n\nhi\n")
    assert alice.cmd("b NOOP") == b"* 1 EXISTS\r\n* 1 RECENT\r\nb OK NOOP completed\r\n"


# ----------------------------------------------------------------------------- commands

def test_a_literal_of_exactly_the_limit_is_taken(ctx):
    c = Client(ctx)
    assert c.cmd(b"a LOGIN alice {%d}" % core.MAX_LITERAL) == b"+ Ready for literal data\r\n"
    assert c.send(b"x" * core.MAX_LITERAL + b"\r\n").startswith(b"a NO [AUTHENTICATIONFAILED] ")
    assert c.cmd(b"b LOGIN alice {%d}" % (core.MAX_LITERAL + 1)).startswith(b"b NO [TOOBIG] ")


def test_a_refused_fetch_or_store_sends_no_expunge_but_a_refused_create_does(ctx, store,
                                                                          monkeypatch):
    a, expunged = session_that_missed_an_expunge(ctx, store)
    assert expunged.startswith(b"* 1 EXPUNGE\r\n")
    monkeypatch.setattr(core, "MAX_FETCH_OUTPUT", 10)  # RFC 3501 7.4.1: not during FETCH...
    assert a.cmd("a FETCH 1:* BODY[]").startswith(b"a NO [LIMIT] that FETCH would answer")
    assert a.cmd("a STORE 1 +FLAGS (\\Flagged)").startswith(b"a NO [EXPUNGEISSUED] ")  # ...STORE
    assert a.cmd("a CREATE INBOX").startswith(b"* 1 EXPUNGE\r\na NO [ALREADYEXISTS] ")


def test_a_refused_store_in_a_read_only_folder_sends_no_expunge(ctx, store):
    a, b = two_sessions_in_a_filled_inbox(ctx, store, "EXAMINE")
    b.cmd("b STORE 1 +FLAGS (\\Deleted)")
    b.cmd("b EXPUNGE")
    assert a.cmd("a STORE 1 +FLAGS (\\Flagged)").startswith(b"a NO [READ-ONLY] ")
    assert a.cmd("a UID STORE 1 +FLAGS (\\Flagged)").startswith(b"* 1 EXPUNGE\r\na NO [READ-ONLY] ")


def test_a_command_name_without_a_tag_gets_its_own_example(alice):
    assert alice.cmd("SELECT INBOX") == (b"* BAD every command starts with a tag, for example: "
                                         b"a1 SELECT\r\n")


def test_logout_and_starttls_take_no_arguments(ctx):
    ctx.options["tls_context"] = object()
    c = Client(ctx)
    assert c.cmd("a LOGOUT now") == b"a BAD LOGOUT: unexpected text at the end of the command:  now\r\n"
    assert c.cmd("b STARTTLS x") == b"b BAD STARTTLS: unexpected text at the end of the command:  x\r\n"
    assert not c.s.closing and not c.s.starttls_wanted
    assert c.cmd("c NOOP") == b"c OK NOOP completed\r\n"


def test_starttls_once_tls_is_on_is_refused(ctx):
    ctx.options["tls_context"] = object()
    c = Client(ctx, tls=True)
    assert c.cmd("a STARTTLS") == b"a BAD TLS is already on for this connection\r\n"
    assert not c.s.starttls_wanted


def test_language_alone_lists_the_languages_and_star_keeps_the_one_in_use(ctx):
    c = Client(ctx)
    assert c.cmd("a LANGUAGE") == (b"* LANGUAGE (i-default en el)\r\n"
                                   b"a OK Supported languages have been enumerated\r\n")
    assert c.cmd('b LANGUAGE "*"').startswith(b"* LANGUAGE (i-default)\r\nb OK ")
    c.cmd("c LANGUAGE el")
    assert c.cmd('d LANGUAGE "*"').startswith(b"* LANGUAGE (el)\r\nd OK ")


def test_logins_are_refused_before_tls_in_strict_mode_with_privacyrequired(ctx):
    ctx.options["strict"] = True
    c = Client(ctx)
    assert c.cmd("a LOGIN alice alice-pw") == (
        b"a NO [PRIVACYREQUIRED] LOGIN is disabled until the connection is encrypted: use "
        b"STARTTLS first\r\n")
    assert c.cmd("b AUTHENTICATE PLAIN") == (
        b"b NO [PRIVACYREQUIRED] logging in is disabled until the connection is encrypted: use "
        b"STARTTLS first\r\n")


def test_authenticate_as_someone_else_is_refused(ctx):
    import base64
    c = Client(ctx)
    as_bob = base64.b64encode(b"bob\0alice\0alice-pw")
    assert c.cmd(b"a AUTHENTICATE PLAIN " + as_bob) == (
        b"a NO [AUTHORIZATIONFAILED] logging in as someone else is not allowed\r\n")
    assert c.s.state is core.State.NOT_AUTHENTICATED
    as_herself = base64.b64encode(b"alice\0alice\0alice-pw")
    assert c.cmd(b"b AUTHENTICATE PLAIN " + as_herself).startswith(b"b OK ")


def test_a_folder_name_too_long_to_exist_is_no_such_folder(alice):
    name = "n" * 300  # longer than a directory name may be: never asked of the file system
    assert alice.cmd("a SELECT " + name).startswith(b"a NO [NONEXISTENT] no folder named ")
    assert alice.cmd("b APPEND " + name + " {1+}\r\nx").startswith(b"b NO [TRYCREATE] ")
    assert alice.cmd("c STATUS " + name + " (MESSAGES)").startswith(b"c NO [NONEXISTENT] ")


def test_a_folder_deleted_between_the_look_and_the_open_is_no_such_folder(alice, monkeypatch):
    """Another session may delete the folder just after this one saw it (the look said yes):
    the answer is the same NO as for a folder that never was, not an internal error."""
    monkeypatch.setattr(core.ImapSession, "_has_folder", lambda self, name: True)
    assert alice.cmd("a SELECT Gone").startswith(b"a NO [NONEXISTENT] no folder named Gone; ")
    assert alice.cmd("b APPEND Gone {1+}\r\nx").startswith(b"b NO [TRYCREATE] no folder named Gone")


def test_capability_and_enable_take_nothing_after_their_arguments(alice):
    assert alice.cmd("a CAPABILITY x") == (
        b"a BAD CAPABILITY: unexpected text at the end of the command:  x\r\n")
    assert alice.cmd("b ENABLE CONDSTORE(x)") == (
        b"b BAD ENABLE: unexpected text at the end of the command: (x)\r\n")
    assert alice.cmd("c ENABLE CONDSTORE QRESYNC") == b"* ENABLED\r\nc OK ENABLE completed\r\n"


# ----------------------------------------------------------------------------- folders

def test_folder_names_refused_by_create_say_why(alice):
    rule = (b"a NO [CANNOT] a folder name cannot be empty, contain * % / or two dots in a row, "
            b"or start with a dot\r\n")
    assert alice.cmd("a CREATE a..b") == rule
    assert alice.cmd("a CREATE " + "n" * 300) == (
        b"a NO [CANNOT] that folder name is too long: at most 254 bytes (in UTF-8)\r\n")


def test_deleting_another_folder_keeps_the_selected_one(alice, store):
    fill(store)
    alice.cmd("a CREATE Work")
    alice.cmd("a SELECT INBOX")
    assert alice.cmd("b DELETE Work") == b"b OK DELETE completed\r\n"
    assert alice.cmd("c FETCH 1 FLAGS").endswith(b"c OK FETCH completed\r\n")


def test_deleting_the_selected_folder_leaves_no_folder_selected(alice):
    alice.cmd("a CREATE Work")
    alice.cmd("a SELECT Work")
    assert alice.cmd("b DELETE Work") == b"b OK DELETE completed\r\n"
    assert alice.cmd("c CHECK") == (b"c BAD CHECK: select a folder first, for example: "
                                    b"a2 SELECT INBOX\r\n")
    assert not alice.cmd("d SELECT INBOX").startswith(b"* OK [CLOSED]")  # nothing was open


def test_renaming_the_selected_folder_leaves_no_folder_selected(ctx, store):
    wakeups = []
    c = Client(ctx, wakeup=lambda: wakeups.append(1)).login()
    c.cmd("a CREATE Work")
    store.account("alice").folder("Work").deliver(b"Subject: x\r\n\r\nx\r\n")
    other = Client(ctx).login()
    other.cmd("a SELECT Work")
    c.cmd("a SELECT Work")
    assert c.cmd("b RENAME Work Play") == b"b OK RENAME completed\r\n"
    assert c.cmd("c CHECK").startswith(b"c BAD CHECK: select a folder first")
    # the other session still looks at the old folder, and finds its message gone
    assert other.cmd("b NOOP") == b"* 1 EXPUNGE\r\nb OK NOOP completed\r\n"
    assert wakeups == []  # the renamed folder is no longer watched by the first session
    assert not c.cmd("d SELECT INBOX").startswith(b"* OK [CLOSED]")


def test_rename_refuses_a_move_inside_itself_and_a_subfolder_that_would_clash(alice):
    for name in ("a", "a.x", "b.x"):  # b.x without b
        alice.cmd("a CREATE " + name)
    assert alice.cmd("b RENAME a a.c") == b"b NO [CANNOT] a folder cannot move inside itself\r\n"
    assert alice.cmd("c RENAME a b") == b"c NO [CANNOT] folder 'b.x' exists already\r\n"
    names = alice.cmd('d LIST "" "*"')
    assert b'"." a.x\r\n' in names and b'"." b.x\r\n' in names  # nothing moved


def test_unsubscribe_says_so(alice):
    assert alice.cmd("a UNSUBSCRIBE Sent") == b"a OK UNSUBSCRIBE completed\r\n"
    assert b" Sent\r\n" not in alice.cmd('b LSUB "" "*"')


def test_list_return_options_make_the_extended_form(alice):
    # RETURN alone makes it extended: no \HasChildren unless CHILDREN is asked for
    assert alice.cmd('a LIST "" "Sent" RETURN (SUBSCRIBED)') == (
        b'* LIST (\\Subscribed) "." Sent\r\na OK LIST completed\r\n')


def test_list_finds_inbox_in_any_case(alice):
    assert alice.cmd('a LIST "" "inbox"') == (b'* LIST (\\HasNoChildren) "." INBOX\r\n'
                                              b"a OK LIST completed\r\n")


def test_lsub_shows_the_parent_of_a_subscribed_folder_only_for_percent(alice):
    alice.cmd("a CREATE a")
    alice.cmd("a CREATE a.b")
    alice.cmd("a SUBSCRIBE a.b")
    star = alice.cmd('b LSUB "" "a*"')
    assert star == b'* LSUB () "." a.b\r\nb OK LSUB completed\r\n'
    assert alice.cmd('c LSUB "" "a%"') == b'* LSUB (\\Noselect) "." a\r\nc OK LSUB completed\r\n'


def test_status_answers_each_item_asked_for(alice, store):
    inbox = store.account("alice").folder("INBOX")
    assert alice.cmd("a STATUS INBOX (UIDVALIDITY UIDNEXT)") == (
        b"* STATUS INBOX (UIDVALIDITY %d UIDNEXT 1)\r\na OK STATUS completed\r\n" % inbox.uidvalidity)


def test_append_refuses_an_empty_message_and_a_full_folder(alice, store, monkeypatch):
    assert alice.cmd(b"a APPEND INBOX {0+}\r\n") == b"a NO an empty message cannot be appended\r\n"
    monkeypatch.setattr(store, "max_messages", 1)
    assert alice.cmd(b"b APPEND INBOX {1+}\r\nx").startswith(b"b OK [APPENDUID ")
    assert alice.cmd(b"c APPEND INBOX {1+}\r\nx").startswith(b"c NO [OVERQUOTA] folder INBOX ")
    assert len(store.account("alice").folder("INBOX")) == 1


# ----------------------------------------------------------------------------- IDLE, CLOSE

def test_idle_tells_what_changed_at_once_and_takes_no_literal(ctx, store):
    a, _ = session_that_missed_an_expunge(ctx, store)
    assert a.cmd("a IDLE") == b"+ idling\r\n* 1 EXPUNGE\r\n"  # waiting changes go out at once
    assert a.cmd("DONE {3}") == b"a BAD IDLE ends with the word DONE on a line by itself\r\n"
    assert a.cmd("b NOOP") == b"b OK NOOP completed\r\n"


def test_close_stops_waking_the_server_for_the_folder(ctx, store):
    wakeups = []
    c = Client(ctx, wakeup=lambda: wakeups.append(1)).login()
    c.cmd("a SELECT INBOX")
    assert c.cmd("b CLOSE") == b"b OK CLOSE completed\r\n"
    store.account("alice").folder("INBOX").deliver(b"Subject: later\r\n\r\nx\r\n")
    assert wakeups == []


# ----------------------------------------------------------------------------- FETCH

def test_fetch_takes_nothing_after_its_items(alice, store):
    select_filled_inbox(alice, store)
    assert alice.cmd("b FETCH 1 FLAGS)") == (
        b"b BAD FETCH: unexpected text at the end of the command: )\r\n")


def test_uid_fetch_keeps_the_items_in_the_order_asked(alice, store):
    select_filled_inbox(alice, store)
    assert alice.cmd("b UID FETCH 1 (FLAGS UID)") == (b"* 1 FETCH (FLAGS (\\Recent) UID 1)\r\n"
                                                      b"b OK UID FETCH completed\r\n")
    assert alice.cmd("c UID FETCH 1 FLAGS") == (b"* 1 FETCH (UID 1 FLAGS (\\Recent))\r\n"
                                                b"c OK UID FETCH completed\r\n")


def test_a_fetch_refused_beforehand_says_how_many_megabytes(alice, store, monkeypatch):
    store.account("alice").folder("INBOX").deliver(b"Subject: big\r\n\r\n" + b"x" * (3 << 20))
    alice.cmd("a SELECT INBOX")
    monkeypatch.setattr(core, "MAX_FETCH_OUTPUT", 2 << 20)
    assert alice.cmd("b FETCH 1 BODY.PEEK[]") == (
        b"b NO [LIMIT] that FETCH would answer about 3 MB, more than this server sends for one "
        b"command (2 MB): ask for fewer messages or items at a time, e.g. 1:100 then 101:200\r\n")


def test_bodystructure_with_a_section_that_needs_no_mime_tree(alice, store):
    select_filled_inbox(alice, store)
    assert alice.cmd("b FETCH 1 (BODYSTRUCTURE BODY.PEEK[TEXT])").startswith(
        b'* 1 FETCH (BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 52 5 '
        b'NIL NIL NIL NIL) BODY[TEXT] {52}\r\nHi Alice,')


def test_a_message_expunged_while_its_fetch_is_sent_is_reported(ctx, store):
    """The answer is made as it is sent: a message another session expunges meanwhile is left
    out, and the FETCH ends with NO [EXPUNGEISSUED] (with more than 20 messages the sizes come
    from one snapshot taken when the command came)."""
    inbox = store.account("alice").folder("INBOX")
    for i in range(25):
        inbox.deliver(b"Subject: %d\r\n\r\n" % i + b"x" * 200 + b"\r\n")
    a, b = Client(ctx).login(), Client(ctx).login()
    a.cmd("a SELECT INBOX")
    b.cmd("b SELECT INBOX")
    a.s.receive_data(b"a FETCH 1:* BODY.PEEK[]\r\n")
    first = a.s.data_to_send(1000)
    assert first.startswith(b"* 1 FETCH (BODY[] ") and a.s.has_more
    b.cmd("b STORE 25 +FLAGS (\\Deleted)")
    b.cmd("b EXPUNGE")
    rest = first + a.s.data_to_send()
    assert rest.count(b" FETCH (BODY[] ") == 24
    assert b"Subject: 23\r\n" in rest and b"Subject: 24\r\n" not in rest
    assert rest.endswith(b"x" * 200 + b"\r\n)\r\na NO [EXPUNGEISSUED] some of those messages "
                         b"were deleted meanwhile\r\n")


def test_an_internal_error_between_lines_adds_no_stray_parenthesis(alice, store, monkeypatch,
                                                                    caplog):
    select_filled_inbox(alice, store)
    parse_message, calls = fetchmod.parse_message, []

    def broken_the_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return parse_message(*args, **kwargs)
    monkeypatch.setattr(fetchmod, "parse_message", broken_the_second_time)
    reply = alice.cmd("e FETCH 1:2 (UID BODY.PEEK[1])")
    assert reply.count(b")\r\n") == 1  # line 1 whole; line 2 never begun
    assert b"\r\n)\r\ne NO [SERVERBUG] " in reply
    assert [r.getMessage() for r in caplog.records if r.name == "maillab.imap.core"] == [
        "IMAP FETCH failed"]  # the details go to the lab's log


def test_a_message_expunged_between_its_read_and_its_flags_is_left_out(alice, store, monkeypatch):
    select_filled_inbox(alice, store)
    inbox = store.account("alice").folder("INBOX")
    read = core._read

    def read_then_expunged(folder, info):
        data = read(folder, info)
        if info.uid == 2:  # another session's EXPUNGE lands just after the read
            folder.store_flags(2, {"\\Deleted"}, "add")
            folder.expunge([2])
        return data
    monkeypatch.setattr(core, "_read", read_then_expunged)
    reply = alice.cmd("e FETCH 1:3 BODY[TEXT]")
    assert reply.count(b" FETCH (BODY[TEXT] ") == 2 and b"* 2 FETCH (BODY" not in reply
    assert reply.endswith(b"e NO [EXPUNGEISSUED] some of those messages were deleted meanwhile\r\n")
    assert [i.uid for i in inbox.messages()] == [1, 3, 4, 5]


def test_a_uid_fetch_stopped_at_the_limit_tells_the_expunges_first(ctx, store, monkeypatch):
    a, _ = session_that_missed_an_expunge(ctx, store)  # a still has message 1 (UID 1)
    c = Client(ctx).login()
    c.cmd("c SELECT INBOX")
    size = int(c.cmd("c UID FETCH 2 RFC822.SIZE").split(b"RFC822.SIZE ")[1].split(b")")[0])
    monkeypatch.setattr(core, "MAX_FETCH_OUTPUT", len(b"BODY[] {%d}\r\n" % size) + size - 1)
    reply = a.cmd("b UID FETCH 2 BODY.PEEK[]")
    assert reply.endswith(b"\r\n)\r\n* 1 EXPUNGE\r\nb NO [LIMIT] FETCH stopped after 0 MB; ask "
                          b"for fewer messages at a time\r\n")


def test_flags_fetched_are_not_told_again_after_the_fetch(ctx, store):
    a, b = two_sessions_in_a_filled_inbox(ctx, store)
    b.cmd("b STORE 2 +FLAGS (\\Flagged)")
    assert a.cmd("a FETCH 2 FLAGS") == (b"* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
                                        b"a OK FETCH completed\r\n")  # from the index
    b.cmd("b STORE 3 +FLAGS (\\Flagged)")
    assert a.cmd("a FETCH 3 (FLAGS BODY.PEEK[HEADER.FIELDS (X)])") == (  # with the message read
        b"* 3 FETCH (FLAGS (\\Flagged \\Recent) BODY[HEADER.FIELDS (X)] {2}\r\n\r\n)\r\n"
        b"a OK FETCH completed\r\n")
    assert a.cmd("a NOOP") == b"a OK NOOP completed\r\n"


def test_a_fetch_of_many_messages_but_not_all_numbers_them_right(alice, store):
    inbox = store.account("alice").folder("INBOX")
    for i in range(core.FETCH_BATCH + 10):  # past one batch: the numbers come from a table
        inbox.deliver(b"Subject: %d\r\n\r\nx\r\n" % i)
    alice.cmd("a SELECT INBOX")
    reply = alice.cmd("b FETCH 2:%d FLAGS" % (core.FETCH_BATCH + 10))
    assert reply.startswith(b"* 2 FETCH (FLAGS (\\Recent))\r\n* 3 FETCH ")
    assert reply.endswith(b"* %d FETCH (FLAGS (\\Recent))\r\nb OK FETCH completed\r\n"
                          % (core.FETCH_BATCH + 10))
    assert alice.cmd("c UID FETCH 3:* UID").startswith(b"* 3 FETCH (UID 3)\r\n")


def test_what_another_session_changed_is_told_after_a_fetch_without_flags(ctx, store):
    a, b = two_sessions_in_a_filled_inbox(ctx, store)
    b.cmd("b STORE 2 +FLAGS (\\Flagged)")
    assert a.cmd("a FETCH 2 UID") == (b"* 2 FETCH (UID 2)\r\n* 2 FETCH (FLAGS (\\Flagged "
                                      b"\\Recent))\r\na OK FETCH completed\r\n")


def test_an_internal_error_in_a_fetch_from_the_index_is_a_no(alice, store, monkeypatch, caplog):
    select_filled_inbox(alice, store)
    inbox = store.account("alice").folder("INBOX")

    monkeypatch.setattr(type(inbox), "described", disk_on_fire)
    reply = alice.cmd("b FETCH 1 ENVELOPE")
    assert reply.startswith(b"b NO [SERVERBUG] internal server error (RuntimeError)")
    assert b"disk on fire" not in reply
    assert alice.cmd("c NOOP") == b"c OK NOOP completed\r\n"


def test_envelope_beside_a_section_is_made_from_the_message(alice, store):
    select_filled_inbox(alice, store)
    from_index = alice.cmd("b FETCH 1 ENVELOPE").split(b"ENVELOPE ", 1)[1].rsplit(b")\r\n", 2)[0]
    reply = alice.cmd("c FETCH 1 (ENVELOPE BODY.PEEK[TEXT])")
    assert reply.startswith(b"* 1 FETCH (ENVELOPE " + from_index + b" BODY[TEXT] {")


def test_store_takes_flags_without_parentheses(alice, store):
    select_filled_inbox(alice, store)
    assert alice.cmd("b STORE 1 +FLAGS \\Seen \\Flagged") == (
        b"* 1 FETCH (FLAGS (\\Flagged \\Seen \\Recent))\r\nb OK STORE completed\r\n")


def test_a_big_copy_leaves_recent_to_the_sessions_of_the_destination(ctx, store):
    inbox = store.account("alice").folder("INBOX")
    for i in range(core.COPY_CHUNK):  # a whole chunk: the copy yields its turn after it
        inbox.deliver(b"Subject: %d\r\n\r\nx\r\n" % i)
    a = Client(ctx).login()
    a.cmd("a SELECT INBOX")
    assert a.cmd("b COPY 1:* Trash").startswith(b"b OK [COPYUID ")
    other = Client(ctx).login()
    assert b"* %d RECENT\r\n" % core.COPY_CHUNK in other.cmd("c SELECT Trash")


def test_a_move_that_fails_is_logged_as_a_move(alice, store, monkeypatch, caplog):
    select_filled_inbox(alice, store)
    inbox = store.account("alice").folder("INBOX")

    monkeypatch.setattr(type(inbox), "copy_to", disk_on_fire)
    assert alice.cmd("b MOVE 1 Trash").startswith(b"b NO [SERVERBUG] ")
    assert [r.getMessage() for r in caplog.records if r.name == "maillab.imap.core"] == [
        "IMAP MOVE failed"]
    assert len(inbox) == 5


def test_a_message_with_crlf_line_ends_on_disk_is_sent_with_crlf(alice, store):
    inbox = store.account("alice").folder("INBOX")
    (inbox.path / "new" / "dropped.eml").write_bytes(b"Subject: crlf\r\n\r\nhi\r\n")
    alice.cmd("a SELECT INBOX")
    assert alice.cmd("b FETCH 1 BODY.PEEK[]") == (
        b"* 1 FETCH (BODY[] {21}\r\nSubject: crlf\r\n\r\nhi\r\n)\r\nb OK FETCH completed\r\n")


def test_copies_into_the_selected_folder_are_recent_for_the_copying_session(ctx, store):
    """A long COPY yields its turn after each chunk; the chunk's copies are already this
    session's \\Recent then, not the first other session's that looks."""
    inbox = store.account("alice").folder("INBOX")
    for i in range(core.COPY_CHUNK + 1):
        inbox.deliver(b"Subject: %d\r\n\r\nx\r\n" % i)
    a, b = Client(ctx).login(), Client(ctx).login()
    a.cmd("a SELECT INBOX")
    a.s.receive_data(b"a COPY 1:* INBOX\r\n")
    assert a.s.data_to_send(1 << 16) == b"" and a.s.has_more  # one chunk copied
    assert b"* 0 RECENT\r\n" in b.cmd("b SELECT INBOX")  # b looks in the middle of the copy
    done = a.s.data_to_send()
    assert done.startswith(b"* %d EXISTS\r\n* %d RECENT\r\na OK [COPYUID " % (
        2 * core.COPY_CHUNK + 2, 2 * core.COPY_CHUNK + 2))


def test_new_messages_told_out_of_uid_order_are_numbered_in_uid_order(alice, store, monkeypatch):
    """Deliveries in other threads may reach a session in another order than their UIDs'."""
    inbox = store.account("alice").folder("INBOX")
    alice.cmd("a SELECT INBOX")
    notify, held = type(inbox)._notify, []

    def first_one_late(self, change):
        if change.kind == "exists" and change.uid == 1:
            held.append(change)
            return
        notify(self, change)
        while held:
            notify(self, held.pop())
    monkeypatch.setattr(type(inbox), "_notify", first_one_late)
    inbox.deliver(b"Subject: 1\r\n\r\nx\r\n")
    inbox.deliver(b"Subject: 2\r\n\r\nx\r\n")
    assert alice.cmd("b NOOP") == b"* 2 EXISTS\r\n* 2 RECENT\r\nb OK NOOP completed\r\n"
    assert alice.cmd("c FETCH 1:* UID") == (b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n"
                                            b"c OK FETCH completed\r\n")
