"""The IMAP command reader rule by rule: what an atom may hold, how the framer cuts a stream into
commands and literals, and the hints a refused folder name carries. Each test was shown to fail
on a planted bug (bench/mutation.py, docs/mutation.md) that the rest of the suite let through."""

from __future__ import annotations

import time

import pytest

from maillab.imap.parser import (MAX_APPEND, MAX_COMMAND, MAX_LINE, Cursor, Framer, Line,
                                 LiteralAnnounced, NotModifiedUtf7, ParseError, TooLong, astring,
                                 encode_mailbox, format_datetime, parse_datetime, quote)
from maillab.net import ServerContext
from maillab.store import Store
from maillab.transcript import Recorder
from test_imap_core import Client, fill


def events(framer: Framer) -> list:
    out = []
    while (event := framer.next_event()) is not None:
        out.append(event)
        if isinstance(event, LiteralAnnounced):
            break
    return out


# ----------------------------------------------------------------------------- atoms

@pytest.mark.parametrize("control", [b"\x00", b"\x1f", b"\x7f"])
def test_control_characters_end_an_atom_and_are_never_sent_as_one(control):
    cur = Cursor(b"ab" + control + b"cd\r\n")
    assert cur.atom() == "ab"
    assert astring(b"x" + control) != b"x" + control  # quoted or a literal instead
    assert astring(b"x\x20y") == b'"x y"' and astring(b"x~y") == b"x~y"


# ----------------------------------------------------------------------------- folder names

def refused_name(raw: bytes, quoted: bool) -> NotModifiedUtf7:
    cur = Cursor((b'"' + raw + b'"' if quoted else raw) + b"\r\n")
    with pytest.raises(NotModifiedUtf7) as e:
        cur.mailbox()
    return e.value


def test_a_raw_utf8_folder_name_is_refused_with_the_name_to_send_instead():
    e = refused_name("Φίλοι".encode(), quoted=True)
    assert e.status == "NO" and "send &A6YDrwO7A78DuQ-" in e.hint  # Dovecot: NO when quoted
    assert refused_name("Φίλοι".encode(), quoted=False).status == "BAD"  # and BAD for an atom


def test_the_name_to_send_is_shown_up_to_200_characters():
    shown = refused_name(b"a" * 195 + "é".encode(), quoted=True).hint  # 200 characters
    assert ("send " + "a" * 195 + "&AOk-") in shown
    hint = refused_name(b"a" * 196 + "é".encode(), quoted=True).hint  # 201: too long to show
    assert "RFC 3501" in hint and "send" not in hint


def test_a_folder_name_that_is_not_even_utf8_is_refused_without_a_suggestion():
    e = refused_name(b"caf\xe9", quoted=True)
    assert isinstance(e, ParseError) and "modified UTF-7" in e.hint and "send" not in e.hint


# ----------------------------------------------------------------------------- framing

def test_a_fresh_framer_waits_for_nothing_and_reads_the_first_byte_as_text():
    framer = Framer()
    assert not framer.in_command
    framer.feed(b"\na1 NOOP\r\n")  # a stray line feed first: a line of its own
    assert events(framer) == [Line(b"\n"), Line(b"a1 NOOP\r\n")]
    assert not framer.in_command


def test_the_framer_is_in_a_command_while_a_literal_is_announced_or_read():
    framer = Framer()
    framer.feed(b"a1 LOGIN {5}\r\n")
    [announced] = events(framer)
    assert announced == LiteralAnnounced(b"a1 LOGIN ", 5, True) and framer.in_command
    assert framer.waiting == announced and framer.next_event() is None  # until it is answered
    framer.accept_literal()
    assert framer.waiting is None
    framer.feed(b"ali")
    assert events(framer) == [] and framer.in_command
    framer.feed(b"ce pw\r\n")
    assert events(framer) == [Line(b"a1 LOGIN {5}\r\nalice pw\r\n")]
    assert not framer.in_command


def test_a_refused_literal_plus_takes_the_rest_of_its_command_with_it():
    framer = Framer()
    framer.feed(b"a1 APPEND INBOX {5+}\r\nhello (\\Seen) {12+}\r\nq\r\nb1 LOGOUT\r\na2 NOOP\r\n")
    assert events(framer) == [LiteralAnnounced(b"a1 APPEND INBOX ", 5, False)]
    framer.reject_literal()  # its bytes are on their way: read and dropped, with the rest
    # (the rest has a literal of its own, which holds a line break: no command starts there)
    assert events(framer) == [Line(b"a2 NOOP\r\n")]


def test_after_an_overlong_line_the_next_command_is_read_whole():
    framer = Framer()
    framer.feed(b"a1 " + b"x" * MAX_LINE)
    assert events(framer) == [TooLong()]
    framer.feed(b"x" * 100)  # still the same line: dropped
    assert events(framer) == [] and framer.buffered == 0  # not kept in memory meanwhile
    framer.feed(b"\na2 NOOP\r\n")  # its end comes first in a packet
    assert events(framer) == [Line(b"a2 NOOP\r\n")]


def test_a_line_of_max_line_bytes_is_read_and_one_more_byte_is_too_long():
    framer = Framer()
    longest = b"a1 NOOP " + b"x" * (MAX_LINE - 10) + b"\r\n"
    assert len(longest) == MAX_LINE
    framer.feed(longest + b"a2 " + b"y" * (MAX_LINE - 4) + b"\r\n" + b"a3 NOOP\r\n")
    assert events(framer) == [Line(longest), TooLong(), Line(b"a3 NOOP\r\n")]


def test_an_overlong_line_after_a_literal_drops_the_whole_command():
    framer = Framer()
    framer.feed(b"a1 LOGIN {5}\r\n")
    events(framer)
    framer.accept_literal()
    framer.feed(b"alice " + b"x" * MAX_LINE + b"\r\na2 NOOP\r\n")
    assert events(framer) == [TooLong(), Line(b"a2 NOOP\r\n")]  # not glued to a1's start


def literal_command(framer: Framer, size: int, count: int) -> bytes:
    """Feed (and accept) ``count`` literals of ``size`` bytes of one command; its bytes so far."""
    sent = b"a1 X"
    framer.feed(sent)
    for _ in range(count):
        line = b" {%d}\r\n" % size
        framer.feed(line)
        [event] = events(framer)
        assert isinstance(event, LiteralAnnounced)
        framer.accept_literal()
        framer.feed(b"z" * size)
        sent += line + b"z" * size
    return sent


def test_a_command_may_grow_to_max_command_bytes_before_its_next_literal():
    framer = Framer()
    sent = literal_command(framer, 60_000, 17)
    last = b" " + b"p" * (MAX_COMMAND - len(sent) - 7) + b" {2}\r\n"  # exactly MAX_COMMAND now
    framer.feed(last)
    assert len(sent + last) == MAX_COMMAND
    assert isinstance(events(framer)[0], LiteralAnnounced)
    framer.accept_literal()
    framer.feed(b"ok\r\n")
    assert events(framer) == [Line(sent + last + b"ok\r\n")]


def test_a_command_over_max_command_bytes_is_dropped_with_its_literals():
    framer = Framer()
    literal_command(framer, 60_000, 18)  # 1,080,000 bytes > MAX_COMMAND
    framer.feed(b" {12}\r\nq\r\nb1 LOGOUT {3}\r\nefg)\r\na2 NOOP\r\n")  # (a literal holds \r\n)
    assert events(framer) == [TooLong("command"), Line(b"a2 NOOP\r\n")]
    assert not framer.in_command


@pytest.mark.parametrize("over", [0, 1])
def test_a_whole_command_may_be_as_long_as_the_append_limit(over):
    framer = Framer()
    start = b"a1 APPEND INBOX {%d}\r\n" % (MAX_COMMAND + MAX_APPEND)  # (the same digits as below)
    size = MAX_COMMAND + MAX_APPEND - len(start) - 2 + over
    framer.feed(b"a1 APPEND INBOX {%d}\r\n" % size)
    events(framer)
    framer.accept_literal()
    framer.feed(bytes(size))
    framer.feed(b"\r\na2 NOOP\r\n")
    got = events(framer)
    assert got[1:] == [Line(b"a2 NOOP\r\n")]
    if over:
        assert got[0] == TooLong("command")
    else:
        assert isinstance(got[0], Line) and len(got[0].raw) == MAX_COMMAND + MAX_APPEND


# ----------------------------------------------------------------------------- what a client sees

@pytest.fixture
def client(tmp_path):
    store = Store(tmp_path / "store", hash_n=2**10)
    store.add_account("alice", "alice-pw", "example.com")
    fill(store)
    c = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com")).login()
    assert b"a OK" in c.cmd("a SELECT INBOX")
    yield c
    store.close()


def test_text_after_the_last_argument_is_quoted_back_from_where_it_starts(client):
    reply = client.cmd("a NOOP junk")
    assert reply == b"a BAD NOOP: unexpected text at the end of the command:  junk\r\n"
    reply = client.cmd("a CHECK " + "x" * 39 + "y" * 20)  # at most 40 characters of it
    assert reply.endswith(b"end of the command:  " + b"x" * 39 + b"\r\n")


def test_a_missing_space_between_arguments_is_refused_not_skipped(client):
    reply = client.cmd("a STORE 1 +FLAGS(\\Flagged)")
    assert reply == b"a BAD STORE: expected one space between arguments\r\n"
    assert b"\\Flagged" not in client.cmd("a FETCH 1 FLAGS")  # nothing was stored


@pytest.mark.parametrize("partial, reply", [
    (b"<0,10>", b"a BAD FETCH: expected .\r\n"),
    (b"<0:10>", b"a BAD FETCH: expected .\r\n"),  # a colon is no digit
    (b"<x.10>", b"a BAD FETCH: expected a start offset here\r\n"),
    (b"<4294967296.1>", b"a BAD FETCH: start offset is too large\r\n"),  # over 2**32 - 1
    (b"<0.10>", b"* 1 FETCH (BODY[]<0> {10}\r\n"),
    (b"<4294967295.1>", b"* 1 FETCH (BODY[]<4294967295> {0}\r\n)\r\n"),  # the largest number
])
def test_a_partial_fetch_is_two_numbers_with_a_dot(client, partial, reply):
    assert client.cmd(b"a FETCH 1 BODY.PEEK[]" + partial).startswith(reply)


def test_a_missing_argument_is_named(client):
    assert client.cmd("b SELECT (INBOX") == b"b BAD SELECT: expected a folder name here\r\n"


@pytest.mark.parametrize("line", ["a SEARCH RETURN (ALL) ALL", "a SEARCH RETURN "])
def test_search_return_is_recognised_and_refused(client, line):
    assert client.cmd(line) == b"a BAD SEARCH: SEARCH RETURN (...) is not supported here\r\n"


@pytest.mark.parametrize("argument, reply", [
    (b'"IN\\BOX"', b'BAD SELECT: inside quotes, a backslash may only come before " or \\'),
    (b'"IN\\\\BOX"', b"NO [NONEXISTENT] no folder named IN\\BOX;"),  # an escaped backslash
    (b'"IN\\"BOX"', b'NO [NONEXISTENT] no folder named IN"BOX;'),  # an escaped quote
    (b'"IN\rBOX"', b"BAD SELECT: a quoted string cannot contain a line break; use a literal {n}"),
    (b"{abc}", b"BAD SELECT: a literal looks like {5} followed by a line break and 5 bytes"),
])
def test_quoted_strings_and_literals_follow_the_grammar(client, argument, reply):
    assert (b"\r\nb " + reply) in b"\r\n" + client.cmd(b"b SELECT " + argument)


@pytest.mark.parametrize("argument", [b'"IN\x0bBOX"', b'"IN\x0eBOX"'])
def test_a_quoted_string_may_hold_any_text_character_but_cr_and_lf(client, argument):
    assert client.cmd(b"b SELECT " + argument).endswith(b" shows the folders\r\n")  # NO, not BAD


@pytest.mark.parametrize("line, reply", [
    ("b ID NIL", b"b OK ID completed"),
    ('b ID ("os" NIL)', b"b OK ID completed"),  # NIL before a closing parenthesis
    ('b ID ("name" "x" "os" NIL)', b"b OK ID completed"),
    ('b ID ("name" NILX)', b"b BAD ID: expected a string in double quotes (or a literal) here"),
    ("b ID NILX", b"b BAD ID: expected a list in parentheses here"),
    ("b ID (name x)", b"b BAD ID: expected a string in double quotes (or a literal) here"),
])
def test_nil_is_a_word_of_its_own(client, line, reply):
    assert client.cmd(line).endswith(reply + b"\r\n")


def test_nil_may_end_the_text_read():
    cur = Cursor(b"NIL")  # no line ending: the cursor's end is the end of the data
    assert cur.try_nil() and cur.at_end()


@pytest.mark.parametrize("line", [b"b SELECT &Jjo", b'b LIST "" &Jjo', b"b SELECT &AOk",
                                  b"b SELECT &AOkx",  # unterminated, though "AOk" is base64
                                  b"b SELECT &AOkA6Q!!!!-"])  # (base64 with stray characters)
def test_a_folder_name_that_is_not_modified_utf7_is_refused_with_a_hint(client, line):
    reply = client.cmd(line)
    assert reply.startswith(b"b BAD ") and reply.endswith(
        b": folder names use modified UTF-7 (RFC 3501 section 5.1.3)\r\n")


def test_a_missing_last_argument_is_named(tmp_path):
    store = Store(tmp_path / "store", hash_n=2**10)
    store.add_account("alice", "alice-pw", "example.com")
    c = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com"))
    assert c.cmd("a LOGIN alice ") == (
        b"a BAD LOGIN: this command needs more arguments (password missing)\r\n")
    store.close()


def test_a_literal_is_read_to_its_announced_length():
    assert Cursor(b"{3}\r\nabc").literal() == b"abc"  # up to the very end of the data
    with pytest.raises(ParseError, match="shorter than announced"):
        Cursor(b"{5}\r\nabc").literal()


# ----------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("text, ranges", [
    (b"4294967295", [(4294967295, 4294967295)]),  # 2**32 - 1: the largest number
    (b"1:4294967295", [(1, 4294967295)]),
    (b"*:4294967295", [(None, 4294967295)]),
])
def test_message_numbers_go_up_to_2_to_the_32_minus_1(text, ranges):
    assert Cursor(text).seqset().ranges == ranges


@pytest.mark.parametrize("text", [b"4294967296", b"1:4294967296", b"4294967296:1",
                                  b"4294967296:*"])
def test_a_message_number_over_2_to_the_32_minus_1_is_refused(text):
    with pytest.raises(ParseError, match="message number too large"):
        Cursor(text).seqset()


def test_flag_lists_may_be_empty_and_hold_the_wildcard_flag():
    cur = Cursor(b"() (\\* \\Seen $Junk)")
    assert cur.flag_list() == []
    cur.sp()
    assert cur.flag_list() == ["\\*", "\\Seen", "$Junk"] and cur.at_end()


def test_storing_an_empty_flag_list_clears_the_flags(client):
    client.cmd("a STORE 1 +FLAGS (\\Flagged)")
    assert client.cmd("a STORE 1 FLAGS ()").startswith(b"* 1 FETCH (FLAGS (\\Recent))\r\n")


@pytest.mark.parametrize("value, sent", [
    ("a" * 999, b'"' + b"a" * 999 + b'"'),  # quoted up to 999 characters
    ("a" * 1000, b"{1000}\r\n" + b"a" * 1000),  # a literal from 1000 on
    ("tab\there", b"{8}\r\ntab\there"),  # control characters only in a literal
    ("del\x7f", b"{4}\r\ndel\x7f"),
    ("tilde~", b'"tilde~"'),
    ("caf\u00e9", b"{5}\r\ncaf\xc3\xa9"),  # 8-bit text too
])
def test_a_string_is_quoted_when_it_can_be_and_a_literal_otherwise(value, sent):
    assert quote(value) == sent


@pytest.mark.parametrize("value, sent", [
    ("INBOX", b"INBOX"),
    ("", b'""'),  # an atom cannot be empty
    ("nil", b'"nil"'),  # nor be NIL
    ("caf\u00e9", b"{5}\r\ncaf\xc3\xa9"),
    (b"a\x80", b"{2}\r\na\x80"),
])
def test_an_astring_is_an_atom_only_when_it_can_be(value, sent):
    assert astring(value) == sent


@pytest.mark.parametrize("zone, offset", [("LAB-5:30", "+0530"), ("LAB+2", "-0200")])
def test_an_internal_date_is_written_in_the_servers_zone(monkeypatch, zone, offset):
    monkeypatch.setenv("TZ", zone)  # POSIX zones: no tzdata needed
    time.tzset()
    try:
        text = format_datetime(0)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert text.endswith(" " + offset) and parse_datetime(text) == 0


@pytest.mark.parametrize("text, when", [
    ("17-Jul-1996 02:44:25 -0700", 837596665.0),
    ("31-Dec-1998 23:59:60 +0000", 915148800.0),  # a leap second
    ("1-Jan-2000 00:00:00 +0059", 946681260.0),  # the largest minute of a zone
])
def test_a_date_time_is_read_with_its_zone(text, when):
    assert parse_datetime(text) == when


@pytest.mark.parametrize("text", [
    "yesterday", "17-Foo-1996 02:44:25 -0700",  # not the shape; no such month
    "31-Dec-1998 23:59:61 +0000", "1-Jan-2000 00:00:00 +0060",  # no such second, zone minute
])
def test_a_date_time_that_does_not_exist_is_refused(text):
    with pytest.raises(ParseError, match="date-time looks like|no such date or time"):
        parse_datetime(text)


@pytest.mark.parametrize("name, sent", [
    ("a~b", b"a~b"),  # printable ASCII as it is, up to ~
    ("a\x7fb", b"a&AH8-b"),  # DEL is no printable character
    ("Φίλοι & co", b"&A6YDrwO7A78DuQ- &- co"),
])
def test_folder_names_are_sent_in_modified_utf7(name, sent):
    assert encode_mailbox(name) == sent


def test_a_backslash_may_not_end_the_text_read():
    with pytest.raises(ParseError, match="a backslash may only come before"):
        Cursor(b'"abc\\').quoted()  # no line ending: the cursor's end is the end of the data


@pytest.mark.parametrize("written", [b"inbox", b"InBox", b'"INBOX"'])
def test_inbox_is_one_name_whatever_its_case(written):
    assert Cursor(written).mailbox() == "INBOX"  # RFC 3501 5.1
    assert Cursor(b"inboxes").mailbox() == "inboxes"
