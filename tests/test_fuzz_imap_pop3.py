"""Bounded fuzzing of the IMAP and POP3 cores and of the MIME parsers behind FETCH and SEARCH.

Each test feeds generated input to a target of ``maillab.imap.fuzzing`` / ``maillab.pop3.fuzzing``
(the same targets ``bench/fuzz.py`` runs for hundreds of thousands of inputs) and requires: no
exception escapes, the answer is well-formed and shows no internal error (SERVERBUG, POP3's
"internal server error"), and every input is answered (the generous time bound catches a
parser that loops, not a slow machine). Hypothesis runs derandomized, so CI sees the same inputs
every time; the whole file takes a few seconds.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maillab.imap import search as searchmod
from maillab.imap.parser import Cursor
from maillab.imap.fuzzing import HEAVY_MESSAGES, HOSTILE_MESSAGES, IMAP_SEEDS, ImapTarget, mime_target
from maillab.pop3.fuzzing import POP3_SEEDS, Pop3Target

BOUNDED = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ANSWERED_WITHIN = 10.0  # seconds: far above any input's cost here (a busy CI machine included)


def run(target, data: bytes):
    t0 = time.monotonic()
    problem = target(data)
    elapsed = time.monotonic() - t0
    assert problem is None, f"{problem} for input {data[:300]!r}"
    assert elapsed < ANSWERED_WITHIN, f"{elapsed:.1f} s for input {data[:300]!r}"


@pytest.fixture(scope="module")
def imap():
    target = ImapTarget(turn_limit=ANSWERED_WITHIN)
    yield target
    target.close()


@pytest.fixture(scope="module")
def pop3():
    target = Pop3Target(turn_limit=ANSWERED_WITHIN)
    yield target
    target.close()


def sessions(prefixes, commands, words, seeds, most_words: int, most_lines: int):
    """Inputs for a session target: two bytes (the state the session starts in, where the
    input is cut), then command lines built from the words, seeds and random bytes."""
    lines = st.builds(lambda prefix, command, args, end: prefix + command + b"".join(b" " + a for a in args) + end,
                      st.sampled_from(prefixes), st.sampled_from(commands),
                      st.lists(st.sampled_from(words), max_size=most_words), st.sampled_from([b"\r\n", b"\n", b""]))
    pieces = st.one_of(lines, lines, st.sampled_from(seeds), st.binary(max_size=80))
    return st.builds(lambda head, chunks: head + b"".join(chunks), st.binary(min_size=2, max_size=2),
                     st.lists(pieces, max_size=most_lines))


# ----------------------------------------------------------------------------- IMAP

IMAP_COMMANDS = [b"CAPABILITY", b"NOOP", b"LOGOUT", b"ID", b"STARTTLS", b"LOGIN", b"AUTHENTICATE", b"SELECT",
                 b"EXAMINE", b"CREATE", b"DELETE", b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE", b"LIST", b"LSUB",
                 b"STATUS", b"APPEND", b"NAMESPACE", b"IDLE", b"ENABLE", b"CHECK", b"CLOSE", b"UNSELECT",
                 b"EXPUNGE", b"SEARCH", b"FETCH", b"STORE", b"COPY", b"MOVE", b"UID", b"DONE", b"XYZZY"]
IMAP_WORDS = [b"INBOX", b"Trash", b"Projects.Alpha", b"alice", b"alice-pw", b"PLAIN", b"AGFsaWNlAGFsaWNlLXB3",
              b"1", b"0", b"1:*", b"*", b"2,4:5", b"4294967296", b"(FLAGS UID)", b"(\\Seen \\Deleted kw)",
              b"+FLAGS.SILENT", b"FLAGS", b'""', b'"a b"', b'"\\"', b"{3+}\r\nabc", b"{0}\r\n", b"NIL", b"x" * 300,
              b"\xc3\xa9", b"\xff", b"%", b"*" * 40, b"&AOk-", b"&Jjo", b"(", b")", b"[", b"]", b"BODY.PEEK[1.MIME]",
              b"BODY[HEADER.FIELDS (FROM)]<0.5>", b"BODY.PEEK[2.1.TEXT]", b"BODYSTRUCTURE", b"ENVELOPE",
              b"RFC822", b"ALL", b"FULL", b"CHARSET", b"UTF-8", b"OR", b"NOT", b"TEXT", b"BODY", b"HEADER", b"FROM",
              b"LARGER", b"SINCE", b"1-Jan-2024", b'"01-Jan-2024 10:00:00 +0000"', b"RETURN", b"(CHILDREN)",
              b"(SPECIAL-USE)", b"(MESSAGES UIDNEXT)"]

imap_inputs = sessions([b"a1 ", b"a1 UID ", b"* ", b"", b"t\xc3\xa9 ", b"a{1} "], IMAP_COMMANDS, IMAP_WORDS,
                       IMAP_SEEDS, most_words=6, most_lines=8)


@BOUNDED
@given(imap_inputs)
def test_imap_core_answers_any_command_sequence(imap, data):
    run(imap, data)


@pytest.mark.parametrize("protocol,state", [("imap", s) for s in range(len(ImapTarget.STATES))]
                         + [("pop3", s) for s in range(len(Pop3Target.STATES))])
def test_seeds_in_every_state(request, protocol, state):
    target = request.getfixturevalue(protocol)
    for seed in {"imap": IMAP_SEEDS, "pop3": POP3_SEEDS}[protocol]:
        run(target, bytes([state, 128]) + seed)


# ----------------------------------------------------------------------------- POP3

POP3_COMMANDS = [b"USER", b"PASS", b"APOP", b"AUTH", b"STLS", b"CAPA", b"QUIT", b"STAT", b"LIST", b"RETR",
                 b"DELE", b"NOOP", b"RSET", b"TOP", b"UIDL", b"HELO", b"retr", b"X"]
POP3_WORDS = [b"alice", b"alice-pw", b"1", b"2", b"0", b"-1", b"99999999999999999999", b"PLAIN", b"*",
              b"AGFsaWNlAGFsaWNlLXB3", b"=", b"\xc3\xa9", b"\xff", b"\x00", b"x" * 300, b"0123456789abcdef" * 2]
pop3_inputs = sessions([b"", b" "], POP3_COMMANDS, POP3_WORDS, POP3_SEEDS, most_words=3, most_lines=10)


@BOUNDED
@given(pop3_inputs)
def test_pop3_core_answers_any_command_sequence(pop3, data):
    run(pop3, data)


# ----------------------------------------------------------------------------- MIME (FETCH, SEARCH)

MIME_PIECES = [b"\r\n", b"\n", b"\r\n\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n", b"--b\r\n",
               b"--b--\r\n", b"Content-Type: multipart/alternative; boundary=\"c d\"\r\n", b"--c d\r\n",
               b"Content-Type: message/rfc822\r\n", b"Content-Type: multipart/digest; boundary=b\r\n",
               b"Content-Type: text/plain; charset=utf-8; name*=utf-8''%E2%82%AC)\r\n",
               b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
               b"Content-Disposition: attachment; filename=\"a\\\"b\"\r\n", b"Content-Language: en, (x) de\r\n",
               b"From: \"Smith, J\" <j@x.org>, Group: a@b, (c) <@r:d@e>;\r\n", b"To: <<>>@@,,;;::\r\n",
               b"Subject: =?utf-8?q?Caf=C3=A9?= =?x?b?!!?=\r\n", b"Date: Mon, 1 Jan 2024 10:00:00 +0100\r\n",
               b" folded\r\n", b"Q2Fmw6k=\r\n", b"=E9=\r\n", b"body text\r\n", b"(", b")", b'"', b"\\", b":",
               b";", b"=", b"\xff\xfe", b"\xc3\xa9"]
mime_messages = st.lists(st.one_of(st.sampled_from(MIME_PIECES), st.sampled_from(MIME_PIECES),
                                   st.binary(max_size=40)), max_size=40).map(b"".join)


@BOUNDED
@given(mime_messages)
def test_mime_parsers_take_any_message(data):
    run(mime_target, data)


@pytest.mark.parametrize("index", range(len(HOSTILE_MESSAGES + HEAVY_MESSAGES)))
def test_mime_parsers_take_each_hostile_message(index):
    run(mime_target, (HOSTILE_MESSAGES + HEAVY_MESSAGES)[index])


@pytest.mark.parametrize("nesting", [
    b"Content-Type: message/rfc822\r\n\r\n" * 1_000,
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" * 1_000,
    b"Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" * 500,
])
def test_search_reads_a_message_nested_a_thousand_levels_deep(nesting):
    # bench/fuzz.py: 1,000 nested message/rfc822 parts made SEARCH TEXT raise RecursionError:
    # the part fetch.parse_message leaves whole at MAX_DEPTH went to the email package, which
    # follows the nesting one Python frame per level. Text above the limit is still found.
    raw = b"Subject: top\r\n" + nesting + b"Subject: deep\r\n\r\nbottom\r\n"
    ctx = searchmod.SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw)
    assert searchmod.matches(searchmod.parse_search(Cursor(b"TEXT top")), ctx)
    assert not searchmod.matches(searchmod.parse_search(Cursor(b"TEXT elsewhere")), ctx)
    run(mime_target, raw)
