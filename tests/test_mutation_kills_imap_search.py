"""IMAP SEARCH's parser and its keys, one rule at a time, without a server: the tree a key line
gives, the nesting limit, charsets, and what each key matches on a message made up here. Each
test was shown to fail on a planted bug (bench/mutation.py) that the rest of the suite let
through."""

from __future__ import annotations

import base64
import calendar
import tempfile

import pytest

from maillab.imap.parser import Cursor, ParseError
from maillab.imap.search import SearchContext, matches, parse_search

MESSAGE = (b"From: Bob <bob@example.com>\r\nSubject: Caf\xc3\xa9 tonight\r\n"
           b"Date: Tue, 02 Jan 2024 10:00:00 +0000\r\n\r\nSee you there.\r\n")
INTERNAL = calendar.timegm((2024, 1, 5, 12, 0, 0))


def parse(text: str | bytes):
    return parse_search(Cursor(text.encode() if isinstance(text, str) else text))


def context(*, uid=7, flags=(), size=100, recent=False, star_seq=3, star_uid=9):
    return SearchContext(2, uid, frozenset(flags), size, INTERNAL, recent, lambda: MESSAGE,
                         star_seq, star_uid)


def found(key: str, **kw) -> bool:
    return matches(parse(key), context(**kw))


# ----------------------------------------------------------------------------- the parser

def test_one_key_is_its_own_tree_and_keys_in_a_row_are_anded():
    assert parse("ALL") == ("all",)
    assert parse("SEEN") == ("flag", "\\Seen", True)
    assert parse("(SEEN FLAGGED)") == ("and", [("flag", "\\Seen", True),
                                               ("flag", "\\Flagged", True)])
    assert parse("SEEN UNDRAFT") == ("and", [("flag", "\\Seen", True), ("flag", "\\Draft", False)])


def test_us_ascii_is_read_as_utf8_as_learners_type_it():
    assert parse('CHARSET US-ASCII SUBJECT "caf\xc3\xa9"'.encode("latin-1")) == (
        "header", "subject", "café")


@pytest.mark.parametrize("text, says", [
    ("", "SEARCH wants keys such as ALL"), ("(", "SEARCH wants keys such as ALL"),
    ("(SEEN", None), ("OR SEEN", None), ("NOT", None)])
def test_a_missing_key_is_a_parse_error(text, says):
    with pytest.raises(ParseError, match=says):
        parse(text)


def nested(depth: int, wrap) -> str:
    text = "ALL"
    for _ in range(depth):
        text = wrap(text)
    return text


@pytest.mark.parametrize("wrap", [
    lambda t: f"({t})",
    lambda t: f"NOT {t}",
    lambda t: f"OR {t} ALL",
    lambda t: f"OR ALL {t}",
], ids=["parentheses", "not", "or-first", "or-second"])
def test_keys_nest_a_hundred_deep_and_no_deeper(wrap):
    parse(nested(100, wrap))
    with pytest.raises(ParseError, match="nested too deeply"):
        parse(nested(101, wrap))


# ----------------------------------------------------------------------------- what keys match

def test_size_keys_are_strict():
    assert found("LARGER 99") and not found("LARGER 100")
    assert found("SMALLER 101") and not found("SMALLER 100")


def test_recent_new_and_old():
    assert found("RECENT", recent=True) and not found("RECENT")
    assert found("OLD") and not found("OLD", recent=True)
    assert found("NEW", recent=True) and not found("NEW", recent=True, flags={"\\Seen"})
    assert not found("NEW")


def test_keywords():
    assert found("KEYWORD $Work", flags={"$Work"}) and not found("KEYWORD $Work")
    assert found("UNKEYWORD $Work") and not found("UNKEYWORD $Work", flags={"$Work"})


def test_star_is_the_last_sequence_number_and_the_last_uid():
    assert not found("*", star_seq=3)  # the message is number 2
    assert found("*", star_seq=2)
    assert found("UID *", uid=9, star_uid=9) and not found("UID *", uid=7, star_uid=9)
    assert found("UID 5:*", uid=7, star_uid=9)


def test_dates_internal_and_sent():
    assert found("ON 5-Jan-2024") and found("SINCE 5-Jan-2024") and found("BEFORE 6-Jan-2024")
    assert not found("BEFORE 5-Jan-2024") and not found("SINCE 6-Jan-2024")
    assert found("SENTON 2-Jan-2024") and not found("SENTON 5-Jan-2024")
    assert found("SENTBEFORE 3-Jan-2024") and found("SENTSINCE 2-Jan-2024")


def test_header_and_body_keys_decode_and_fold_case():
    assert found('SUBJECT "CAFÉ"') and found("FROM BOB") and found('BODY "you THERE"')
    assert not found('BODY "tonight"')  # the subject is not the body
    assert found('TEXT "tonight"') and found('HEADER Date "2024"')


def test_an_unknown_node_is_a_bug_not_a_match():
    with pytest.raises(ValueError):
        matches(("nonsense",), context())


# ----------------------------------------------------------------------------- the raw-bytes shortcut

def _mixed(second_part: bytes) -> bytes:
    return (b"From: a@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nnothing to see\r\n"
            b"--b\r\n" + second_part + b"\r\n--b--\r\n")


@pytest.mark.parametrize("second_part", [
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"hello wonderland\r\n"),  # base64 text: decoded first
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
    b"\r\n\r\nhello wonder=\r\nland\r\n",  # a soft line break inside the word
    b"Content-Type: TEXT/PLAIN; charset=koi8-r\r\n\r\nhello wonderland\r\n",
], ids=["base64", "quoted-printable", "other-charset"])
def test_body_search_finds_words_that_only_decoding_shows(second_part):
    from maillab.net import ServerContext
    from maillab.store import Store
    from maillab.transcript import Recorder
    from test_imap_core import Client
    with tempfile.TemporaryDirectory() as root:
        store = Store(root + "/store", hash_n=2**10)
        store.add_account("alice", "alice-pw", "example.com")
        store.account("alice").folder("INBOX").deliver(_mixed(second_part))
        client = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com"))
        client.login()
        client.cmd("a SELECT INBOX")
        assert client.cmd("a SEARCH BODY wonderland") == (b"* SEARCH 1\r\n"
                                                          b"a OK SEARCH completed\r\n")
        assert client.cmd("a SEARCH BODY elsewhere") == b"* SEARCH\r\na OK SEARCH completed\r\n"
        store.close()
