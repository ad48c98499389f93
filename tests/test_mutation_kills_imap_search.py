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
from maillab.imap.search import SearchContext, cached_fields, matches, parse_search

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
    lambda t: f"(ALL {t})",
], ids=["parentheses", "not", "or-first", "or-second", "parentheses-second"])
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
    b"Content-Type: plaintext\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"hello wonderland\r\n"),  # no "/": the email package reads text/plain
    b"Content-Type: application/octet-stream/x\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"hello wonderland\r\n"),  # two "/": text/plain to the email package
], ids=["base64", "quoted-printable", "other-charset", "type-without-slash", "type-with-two-slashes"])
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


# ----------------------------------------------------------------------------- the folder index's shortcuts
# Messages stored with LF line ends (as the store keeps them), searched over IMAP or through
# search_folder; the index row ("plain") is made at the first search, as in a server.

TRANSPARENT = (b"From: a@example.com\r\nSubject: plain\r\nX-Note: hi there\r\n\r\n"
               b"Meet me in wonderland.\r\n")


@pytest.fixture
def inbox(tmp_path):
    from maillab.store import Store
    store = Store(str(tmp_path / "store"), hash_n=2**10)
    store.add_account("alice", "alice-pw", "example.com")
    yield store, store.account("alice").folder("INBOX")
    store.close()


def imap(store):
    from maillab.net import ServerContext
    from maillab.transcript import Recorder
    from test_imap_core import Client
    client = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com")).login()
    assert b"a OK" in client.cmd("a SELECT INBOX")
    return client


def search_answer(client, keys: bytes) -> bytes:
    out = client.cmd(b"a SEARCH " + keys)
    assert out.endswith(b"a OK SEARCH completed\r\n"), out
    return out.split(b"\r\n")[0]


def run_search(folder, keys: str, uids: list[int]) -> list:
    """search_folder to its end (a server's session would send its yields on)."""
    from maillab.imap.search import search_folder
    steps = search_folder(parse(keys), folder, uids, set())
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def test_a_search_text_with_a_bare_cr_is_looked_for_in_the_crlf_text(inbox):
    # The message's text has CRLF line ends; its file has LF. A literal search text ending in CR
    # ("wonderland.\r") is in the text, so the raw-bytes pre-filter must not answer for it.
    store, folder = inbox
    folder.deliver(TRANSPARENT)
    client = imap(store)
    assert client.cmd(b"a SEARCH BODY {12}").startswith(b"+ ")
    assert client.send(b"wonderland.\r\r\n") == b"* SEARCH 1\r\na OK SEARCH completed\r\n"
    assert client.cmd(b"a SEARCH TEXT {13}").startswith(b"+ ")
    assert client.send(b"wonderland.\rx\r\n") == b"* SEARCH\r\na OK SEARCH completed\r\n"


def test_body_after_an_unindexed_header_key_still_finds_the_word(inbox):
    # X-Note is not in the folder index: the first key reads the message, and the BODY key then
    # pre-filters on the bytes already read. Twice: the second search has the learned ranges.
    store, folder = inbox
    folder.deliver(TRANSPARENT)
    folder.deliver(TRANSPARENT.replace(b"wonderland", b"elsewhere"))
    client = imap(store)
    for _ in range(2):
        assert search_answer(client, b"HEADER X-Note hi BODY wonderland") == b"* SEARCH 1"
        assert search_answer(client, b"HEADER X-Note hi TEXT WONDERLAND") == b"* SEARCH 1"
        assert search_answer(client, b"HEADER X-Note hi BODY nowhere") == b"* SEARCH"


def test_body_finds_a_word_inside_a_message_nested_past_max_depth(inbox):
    # Past MAX_DEPTH nested message/rfc822 parts (and with more than FEW_PARTS "message/" in it,
    # so that the search cuts the message itself), the innermost part is one entity whose body
    # is searched as written: the word in it is still found.
    from maillab.imap.fetch import MAX_DEPTH
    from maillab.imap.search import FEW_PARTS
    store, folder = inbox
    inner = b"From: c@example.com\r\nSubject: deep\r\n\r\nhidden treasure\r\n"
    for _ in range(MAX_DEPTH + 10):
        inner = (b"From: b@example.com\r\nContent-Type: message/rfc822\r\n\r\n" + inner)
    pad = b"X-Pad: " + b"message/ " * FEW_PARTS + b"\r\n"
    folder.deliver(pad + inner)
    client = imap(store)
    assert search_answer(client, b"BODY treasure") == b"* SEARCH 1"
    assert search_answer(client, b"BODY nowhere") == b"* SEARCH"


def test_a_message_expunged_while_searched_is_left_out(inbox, monkeypatch):
    # Another session expunges message 1 after the search looked the batch up, before it reads
    # the file: the search goes on and answers for the rest.
    _store, folder = inbox
    uids = [folder.deliver(TRANSPARENT).uid for _ in range(3)]
    real_lookup = folder.lookup

    def lookup_then_expunge(chunk):
        got = real_lookup(chunk)
        folder.expunge([uids[0]])
        return got
    monkeypatch.setattr(folder, "lookup", lookup_then_expunge)
    assert run_search(folder, "BODY wonderland", uids) == [(2, uids[1]), (3, uids[2])]


def test_a_file_renamed_while_searched_is_read_under_its_new_name(inbox, monkeypatch):
    # Another session flags the message between the search taking the file's name and opening
    # it (the file moves from new/ to cur/): the search reads it from the folder instead.
    from maillab.imap import search
    _store, folder = inbox
    uids = [folder.deliver(TRANSPARENT).uid, folder.deliver(TRANSPARENT).uid]
    moved = []

    def open_as_the_flags_change(path, *args, **kw):
        if not moved:
            moved.append(path)
            folder.store_flags(uids[0], {"\\Flagged"}, "add")
        return open(path, *args, **kw)
    monkeypatch.setattr(search, "open", open_as_the_flags_change, raising=False)
    assert run_search(folder, "BODY wonderland", uids) == [(1, uids[0]), (2, uids[1])]
    assert moved, "the search did not open the message's file"


def test_a_search_answers_when_the_index_cannot_record_what_it_learned(inbox, monkeypatch):
    import sqlite3
    _store, folder = inbox
    uids = [folder.deliver(TRANSPARENT).uid]
    calls = []

    def failing_note(rows):
        calls.append(rows)
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(folder, "note_plain", failing_note)
    assert run_search(folder, "BODY wonderland", uids) == [(1, uids[0])]
    assert calls, "the search learned nothing to record"



def test_a_search_text_with_a_nul_is_not_found_across_two_fields(inbox):
    # The index keeps a field's values joined by NUL; a search text holding a NUL (a literal may)
    # must not match the end of one Subject: and the start of the next.
    store, folder = inbox
    folder.deliver(b"From: a@example.com\r\nSubject: xa\r\nSubject: by\r\n\r\nbody\r\n")
    client = imap(store)
    assert search_answer(client, b"SUBJECT xa") == b"* SEARCH 1"
    assert client.cmd(b"a SEARCH SUBJECT {3}").startswith(b"+ ")
    assert client.send(b"a\x00b\r\n") == b"* SEARCH\r\na OK SEARCH completed\r\n"


def test_a_search_answers_when_the_index_cannot_describe_the_messages(inbox, monkeypatch):
    import sqlite3
    _store, folder = inbox
    uids = [folder.deliver(TRANSPARENT).uid, folder.deliver(MESSAGE).uid]

    def failing_described(uids, fields):
        raise sqlite3.OperationalError("database disk image is malformed")
    monkeypatch.setattr(folder, "described", failing_described)
    assert run_search(folder, "SUBJECT caf\u00e9", uids) == [(2, uids[1])]
    assert run_search(folder, "BODY wonderland", uids) == [(1, uids[0])]


@pytest.mark.parametrize("raw, key", [
    (b"From: a@example.com\r\nSubject: =?utf-8?B?d29uZGVybGFuZA==?=\r\n\r\nbody\r\n",
     "TEXT wonderland"),  # an encoded word: the letters are in no raw byte
    (b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
     b"Stra\xc3\x9fe 5\r\n", "BODY strasse"),  # case folding: "Straße" holds "strasse"
])
def test_the_pre_filter_leaves_encoded_and_non_ascii_messages_to_decoding(inbox, raw, key):
    store, folder = inbox
    folder.deliver(raw)
    client = imap(store)
    for _ in range(2):
        assert search_answer(client, key.encode()) == b"* SEARCH 1"


def test_body_of_a_message_part_in_a_long_message_is_its_decoded_text(inbox):
    # With more than FEW_PARTS "message/" in it the search cuts the message itself; a
    # message/rfc822 part is a container there, and BODY searches its inner message's decoded
    # text, not the base64 letters it is written in.
    from maillab.imap.search import FEW_PARTS
    store, folder = inbox
    folder.deliver(b"X-Pad: " + b"message/ " * FEW_PARTS + b"\r\nContent-Type: message/rfc822\r\n\r\n"
                   b"Subject: inner\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   + base64.b64encode(b"hello wonderland\r\n") + b"\r\n")
    client = imap(store)
    assert search_answer(client, b"BODY wonderland") == b"* SEARCH 1"
    assert search_answer(client, b"BODY aGVsbG8gd29uZGVy") == b"* SEARCH"



def test_a_search_over_several_batches_tests_every_message(inbox):
    # search_folder reads the index 256 messages at a time: none at a batch's edge is skipped.
    _store, folder = inbox
    uids = [folder.deliver(b"Subject: n%d\r\n\r\nx\r\n" % i).uid for i in range(300)]
    assert run_search(folder, "ALL", uids) == list(zip(range(1, 301), uids))
    assert run_search(folder, "SUBJECT n256", uids) == [(257, uids[256])]



def test_a_search_text_with_a_line_end_and_a_colon_is_decoded_for(inbox):
    # The text has CRLF line ends, the file LF: a search text holding both (a literal) must not be
    # looked for in the file's bytes.
    store, folder = inbox
    folder.deliver(b"From: a@example.com\r\nSubject: s\r\n\r\nMeet me: here.\r\nBye\r\n")
    client = imap(store)
    assert client.cmd(b"a SEARCH BODY {14}").startswith(b"+ ")
    assert client.send(b"me: here.\r\nbye\r\n") == b"* SEARCH 1\r\na OK SEARCH completed\r\n"


def test_body_does_not_search_an_attachment(inbox):
    # Only text/* and message/* bodies are searched, not an application part's bytes.
    store, folder = inbox
    folder.deliver(_mixed(b"Content-Type: application/octet-stream\r\n\r\nhello wonderland\r\n"))
    client = imap(store)
    assert search_answer(client, b"BODY nothing") == b"* SEARCH 1"
    assert search_answer(client, b"BODY wonderland") == b"* SEARCH"


# ----------------------------------------------------------------------------- known bugs of the pre-filter
# Found while judging the survivors (2026-11-28); the source is not changed here. Each answer is
# what decoding the message gives (matches() on a context without the folder index).

def decoded_answer(raw: bytes, key: str) -> bool:
    return matches(parse(key), SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw))


def test_text_starting_with_a_space_finds_a_field_written_without_one(inbox):
    store, folder = inbox
    raw = b"From: a@example.com\r\nSubject:wonder\r\n\r\nplain body\r\n"
    assert decoded_answer(raw, 'TEXT " wonder"')
    folder.deliver(raw)
    assert search_answer(imap(store), b'TEXT " wonder"') == b"* SEARCH 1"


@pytest.mark.parametrize("content_type", [b"text/plain; charset*=''utf-7",
                                          b"text/plain; charset*0=utf-; charset*1=7"])
def test_body_decodes_a_charset_given_as_an_rfc2231_parameter(inbox, content_type):
    store, folder = inbox
    raw = (b"From: a@example.com\r\nSubject: utf-7\r\nMIME-Version: 1.0\r\nContent-Type: "
           + content_type + b"\r\n\r\n+AGgAZQBsAGwAbw- world\r\n")  # UTF-7 for "hello world"
    assert decoded_answer(raw, "BODY hello")
    folder.deliver(raw)
    assert search_answer(imap(store), b"BODY hello") == b"* SEARCH 1"


def test_body_decodes_a_part_whose_header_ends_early_for_the_email_package(inbox):
    store, folder = inbox
    raw = (b"From: a@example.com\r\nSubject: x\r\nContent-Transfer-Encoding: base64\r\n"
           b"AAOops\r\nContent-Type: application/pdf\r\n\r\n"  # 24 base64 letters before the text
           + base64.b64encode(b"hello wonderland world\r\n") + b"\r\n")
    assert decoded_answer(raw, "BODY wonderland")
    folder.deliver(raw)
    assert search_answer(imap(store), b"BODY wonderland") == b"* SEARCH 1"


def test_the_index_fields_a_search_reads_come_from_every_branch():
    """The folder's index loads these fields before a search; a branch left out would search
    a field the index did not load."""
    assert cached_fields(parse("OR SUBJECT a FROM b")) == {"h_subject", "h_from"}
    assert cached_fields(parse("OR ALL FROM b")) == {"h_from"}
    assert cached_fields(parse("NOT SUBJECT a")) == {"h_subject"}
    assert cached_fields(parse("(SEEN SUBJECT a) BODY c")) == {"h_subject", "plain"}
    assert cached_fields(parse("SENTBEFORE 1-Jan-2024")) == {"h_date"}
    assert cached_fields(parse("HEADER X-Spam yes")) == set()  # not an indexed field


def test_a_part_in_a_charset_python_does_not_know_is_searched_as_utf8():
    message = (b"Content-Type: text/plain; charset=x-klingon\r\n\r\ncaf\xc3\xa9 at noon\r\n")
    ctx = SearchContext(1, 1, frozenset(), len(message), INTERNAL, False, lambda: message, 1, 1)
    assert matches(parse("BODY caf\xc3\xa9".encode("latin-1")), ctx)
    assert not matches(parse("BODY midnight"), ctx)
