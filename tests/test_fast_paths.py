"""SMTP's per-message work made cheaper (issue 15, part 3), with the behaviour it had.

* A transcript keeps a message after DATA (and an accepted command with its answer) in one
  step instead of checking each line; the lines kept are the same as those of the line-by-line
  path, whatever the chunks, limits and runs of refused commands.
* LabSMTP parses MAIL FROM/RCPT TO addresses as aiosmtpd does, without the class aiosmtpd
  defines on every call.
* Delivery reads the internal date from the open file: it is the file's mtime, as a rescan of
  the folder sees it.
"""

from __future__ import annotations

import os

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maillab.smtp import NULL_PATH, LabSMTP
from maillab.store import Store
from maillab.transcript import MAX_LINE, REFUSED_KEPT, Connection, Recorder

# ----------------------------------------------------------------------------- transcripts

def kept(feeds, service="smtp:example.com", **limits) -> list[tuple]:
    """The lines a recorder keeps of ``feeds`` ((side, bytes) pairs), without their times."""
    rec = Recorder(**limits)
    conn = rec.open(service, "127.0.0.1:1")
    for who, data in feeds:
        (conn.client if who == "C" else conn.server)(data)
    conn.close()
    return [(l.who, l.raw) for l in rec.lines()]


def line_by_line(monkeypatch, feeds, **kwargs) -> list[tuple]:
    """The same, with every chunk taken through the line-by-line path."""
    with monkeypatch.context() as m:
        m.setattr(Connection, "_keeps_all", lambda *args: False)
        return kept(feeds, **kwargs)


MESSAGE = (b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\n"
           + b"A line of a small message body.\r\n" * 18 + b".\r\n")
SESSION = [("S", b"220 mail.example.com ESMTP\r\n"), ("C", b"EHLO me\r\n"),
           ("S", b"250-mail.example.com\r\n250 SMTPUTF8\r\n"),
           ("C", b"MAIL FROM:<a@b.example>\r\n"), ("S", b"250 2.1.0 OK\r\n"),
           ("C", b"RCPT TO:<bob@example.com>\r\n"), ("S", b"250 2.1.5 OK\r\n"),
           ("C", b"DATA\r\n"), ("S", b"354 End data with <CR><LF>.<CR><LF>\r\n"),
           ("C", MESSAGE), ("S", b"250 2.0.0 OK: queued as 1A2B\r\n")]


def test_a_message_after_data_is_kept_line_by_line_byte_for_byte():
    lines = kept(SESSION)
    client = [raw for who, raw in lines if who == "C"]
    assert client[-MESSAGE.count(b"\n"):] == [l + b"\n" for l in MESSAGE.split(b"\n")[:-1]]
    assert b"".join(client).endswith(MESSAGE)


def test_a_cut_at_the_end_of_a_chunk_belongs_to_the_line_it_was_cut_from():
    # Before: the cut of the unfinished long line was reported after "short", and lost.
    lines = kept([("C", b"short\n" + b"x" * (MAX_LINE + 808)), ("C", b"\n")])
    assert [(who, raw[:5], len(raw)) for who, raw in lines[1:4]] == [
        ("C", b"short", 6), ("C", b"xxxxx", MAX_LINE + 1), ("*", b"808 m", 36)]


# Chunks of SMTP-ish traffic: accepted and refused replies, long lines, lines cut anywhere.
_pieces = st.sampled_from([b"MAIL FROM:<a@b>\r\n", b"garbage\r\n", b"250 OK\r\n",
                           b"500 5.5.2 Error: bad\r\n", b"354 go on\r\n", b"x" * (MAX_LINE + 5),
                           b"\r\n", b"line of text\r\n", b".\r\n", b"abc", b"\n"])
_feeds = st.lists(st.tuples(st.sampled_from("CS"), st.lists(_pieces, min_size=1, max_size=30)
                            .map(b"".join)), max_size=60)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(feeds=_feeds, per_connection=st.sampled_from([5, 40, 20_000]),
       service=st.sampled_from(["smtp:example.com", "http:example.com"]))
def test_the_quick_path_keeps_what_the_line_by_line_path_keeps(monkeypatch, feeds, per_connection,
                                                                service):
    limits = dict(per_connection=per_connection, per_connection_bytes=4 * MAX_LINE)
    assert kept(feeds, service, **limits) == line_by_line(monkeypatch, feeds, service=service,
                                                         **limits)


def test_a_run_of_refused_commands_is_still_counted_not_kept(monkeypatch):
    feeds = [("C", b"garbage\r\n"), ("S", b"500 5.5.2 Error: bad\r\n")] * (REFUSED_KEPT + 10)
    feeds += SESSION[3:]
    assert kept(feeds) == line_by_line(monkeypatch, feeds)
    assert sum(1 for who, raw in kept(feeds) if raw == b"garbage\r\n") == REFUSED_KEPT


# ----------------------------------------------------------------------------- addresses

ADDRESSES = ["<a@b.example>", "a@b.example", "<a@b.example> SIZE=100 BODY=8BITMIME",
             " <x@y.example>", "<\"q u\"@x.example>", "<@a.example:", "<foo>", "foo", "",
             "  ", "<a@[192.0.2.1]>", "<a@b.example", "a@b c=d", "<άλφα@παράδειγμα.ελ>",
             "<a(comment)@b.example>", "<a..b@c.example>", "<@route:a@b.example>", "<a@>",
             "<a@b.example>>", "\x00<a@b>"]


def aiosmtpd_getaddr(arg: str, local_part_limit: int = 0):
    server = SMTP.__new__(SMTP)
    server.local_part_limit = local_part_limit
    try:
        return server._getaddr(arg)
    except Exception:  # LabSMTP always answered these with (None, None)
        return None, None


def lab_getaddr(arg: str, local_part_limit: int = 0):
    server = LabSMTP.__new__(LabSMTP)
    server.local_part_limit = local_part_limit
    return server._getaddr(arg)


@pytest.mark.parametrize("arg", ADDRESSES)
@pytest.mark.parametrize("limit", [0, 3])
def test_addresses_parse_as_aiosmtpd_parses_them(arg, limit):
    assert lab_getaddr(arg, limit) == aiosmtpd_getaddr(arg, limit)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from('<>@."() :[]\\ab\x00é,;'), max_size=20))
def test_any_text_parses_as_aiosmtpd_parses_it(arg):
    if not arg.lstrip().startswith("<>"):
        assert lab_getaddr(arg) == aiosmtpd_getaddr(arg)


def test_the_null_path_is_accepted():
    assert lab_getaddr("<> SIZE=10") == (NULL_PATH, " SIZE=10")


# ----------------------------------------------------------------------------- delivery

@pytest.mark.parametrize("internaldate", [None, 1_700_000_000.25])
def test_the_internal_date_is_the_files_mtime_as_a_rescan_sees_it(tmp_path, internaldate):
    store = Store(tmp_path / "store", hash_n=2**4)
    inbox = store.add_account("alice", "pw", "example.com").folder()
    info = inbox.deliver(b"Subject: hi\r\n\r\nbody\r\n", internaldate=internaldate)
    assert info.internaldate == os.stat(info.path).st_mtime
    if internaldate is not None:
        assert info.internaldate == internaldate
    assert info.path.parent.name == "new" and info.path.read_bytes() == b"Subject: hi\n\nbody\n"
    store.close()
    again = Store(tmp_path / "store", hash_n=2**4).account("alice").folder()
    assert again.get(info.uid).internaldate == info.internaldate
