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


def literal_search(client, keys: bytes, text: bytes) -> bytes:
    """The SEARCH answer for ``keys`` and then ``text`` sent as a literal (it may hold CR, LF or
    NUL), to the end of the command's status line."""
    assert client.cmd(b"a SEARCH %s {%d}" % (keys, len(text))).startswith(b"+ ")
    return client.send(text + b"\r\n")


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
    assert literal_search(client, b"BODY", b"wonderland.\r") == b"* SEARCH 1\r\na OK SEARCH completed\r\n"
    assert literal_search(client, b"TEXT", b"wonderland.\rx") == b"* SEARCH\r\na OK SEARCH completed\r\n"


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
    assert literal_search(client, b"SUBJECT", b"a\x00b") == b"* SEARCH\r\na OK SEARCH completed\r\n"


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
    assert literal_search(client, b"BODY", b"me: here.\r\nbye") == b"* SEARCH 1\r\na OK SEARCH completed\r\n"


def test_body_does_not_search_an_attachment(inbox):
    # Only text/* and message/* bodies are searched, not an application part's bytes.
    store, folder = inbox
    folder.deliver(_mixed(b"Content-Type: application/octet-stream\r\n\r\nhello wonderland\r\n"))
    client = imap(store)
    assert search_answer(client, b"BODY nothing") == b"* SEARCH 1"
    assert search_answer(client, b"BODY wonderland") == b"* SEARCH"


# ----------------------------------------------------------------------------- bugs the pre-filter had
# Found while judging the survivors (2026-11-28), fixed since. Each answer is what decoding the
# message gives (matches() on a context without the folder index).

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


# ----------------------------------------------------------------------------- header decoding

def test_a_field_is_decoded_one_run_of_encoded_words_at_a_time_as_dovecot_does(inbox):
    # The email package given a whole value decoded nothing when it also held raw UTF-8, and put
    # a space between an encoded word and the text touching it (only values over 1,000
    # characters were decoded run by run): Dovecot finds "café" and "wonderland" in these.
    from maillab.imap.search import decode_header_value
    assert decode_header_value("Grüße =?utf-8?q?caf=C3=A9?=".encode()) == "Grüße café"
    assert decode_header_value(b"=?utf-8?q?wonder?=land") == "wonderland"
    assert decode_header_value(b"x=?utf-8?q?wonder?= =?utf-8?q?land?=") == "xwonderland"
    store, folder = inbox
    folder.deliver("Subject: Grüße =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\r\n".encode())
    folder.deliver(b"Subject: =?utf-8?q?wonder?=land\r\n\r\nbody\r\n")
    client = imap(store)
    assert literal_search(client, b"CHARSET UTF-8 SUBJECT", "café".encode()) == \
        b"* SEARCH 1\r\na OK SEARCH completed\r\n"
    assert search_answer(client, b"SUBJECT wonderland") == b"* SEARCH 2"
    assert search_answer(client, b'SUBJECT "wonder land"') == b"* SEARCH"


# ----------------------------------------------------------------------------- the pre-filter against decoding
# Each message is searched three ways: decoded, with the index's "plain" as described, and with
# the byte ranges a first search learned. The fast ways must give the decoded answer.

B64_WONDERLAND = base64.b64encode(b"hello wonderland\r\n")


def three_answers(raw: bytes, key: str) -> list[bool]:
    from maillab import index as indexmod

    def ctx(plain=None):
        return SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw,
                             cached=None if plain is None else {"plain": plain})
    described = indexmod.describe(raw)[indexmod.FIELDS.index("plain")]
    first = ctx(described)
    first.full_text()
    learned = first.learned_ranges() or described
    return [matches(parse(key), ctx(plain)) for plain in (None, described, learned)]


@pytest.mark.parametrize("raw, key", [
    (b"From: a@example.com\r\nX-A: b\rContent-Transfer-Encoding: base64\r\n\r\n" + B64_WONDERLAND
     + b"\r\n", "BODY wonderland"),  # the email package ends a line at a lone CR
    (b"From: a@example.com\r\nSubject: \twonder\r\n\r\nbody\r\n", 'TEXT " wonder"'),
    (b"From: a@example.com\r\nContent-Type: multipart/report; boundary=b\r\n\r\n--b\r\n\r\nfailed\r\n"
     b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA:wonder\r\n--b--\r\n",
     'TEXT " wonder"'),  # a block of fields the email package writes back as "Name: value"
    (b"From: a@example.com\r\nContent-Type: message/global\r\n\r\nSubject:wonder\r\n\r\nbody\r\n",
     'TEXT " wonder"'),  # a message inside, which fetch.parse_message leaves whole
    (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b=c\r\n\r\n--b=c\r\n"
     b"Subject:wonder\r\n\r\nx\r\n--b=c--\r\n", 'TEXT " wonder"'),  # the email package's boundary
    (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary*0=b; boundary*1=c\r\n\r\n"
     b"--bc\r\nSubject:wonder\r\n\r\nx\r\n--bc--\r\n", 'TEXT " wonder"'),
    (b"From: a@example.com\r\nContent-Type: text/plain; charset\r\n =utf-7\r\n\r\n+AGgAZQBsAGwAbw- world\r\n",
     "BODY hello"),  # a folded charset parameter: UTF-7 for "hello"
], ids=["lone-cr", "tab-after-colon", "delivery-status", "message-global", "boundary-with-equals",
        "boundary-rfc2231", "folded-charset"])
def test_the_pre_filter_gives_the_decoded_answer(raw, key):
    assert three_answers(raw, key) == [True, True, True]


def test_a_message_nested_past_max_depth_is_searched_alike_with_the_pre_filter():
    from maillab.imap.fetch import MAX_DEPTH
    raw = (b"From: b@example.com\r\nContent-Type: message/rfc822\r\n\r\n" * (MAX_DEPTH + 5)
           + b"Subject:wonder\r\n\r\nx\r\n")
    assert three_answers(raw, 'TEXT " wonder"') == [True, True, True]


# ----------------------------------------------------------------------------- what the fast paths say

ATTACHED = _mixed(b'Content-Transfer-Encoding: base64\r\nContent-Type: application/pdf; name="q1/report.pdf"'
                  b"\r\n\r\n" + B64_WONDERLAND + b"\r\n--b\r\nContent-Type: text/plain\r\n"
                  b"Content-Transfer-Encoding: 7bit\r\n\r\nlast words")


def test_a_message_whose_only_encoded_part_is_an_attachment_is_transparent():
    # Its text parts are 7bit US-ASCII: the raw bytes answer for them, whatever the attachment
    # holds (its Content-Transfer-Encoding field is the first line of its header, and a "/" in
    # its name does not make its type text/plain as a "/" in the type would).
    from maillab.imap.fetch import parse_message
    from maillab.imap.search import transparent
    assert transparent(ATTACHED, parse_message(ATTACHED))
    assert three_answers(ATTACHED, "BODY wonderland") == [False, False, False]
    assert three_answers(ATTACHED, "BODY last") == [True, True, True]


def test_the_ranges_of_a_transparent_message_are_its_text_parts_bodies():
    from maillab.imap.search import searched_ranges
    first, last = b"nothing to see", b"last words"
    a, b = ATTACHED.find(first), ATTACHED.find(last)
    assert searched_ranges(ATTACHED, ["nothing to see", "last words"]) == \
        f"r{a}-{a + len(first)},{b}-{b + len(last)}"


@pytest.mark.parametrize("texts", [["nothing to see"], ["nothing to see", "last words", "more"],
                                   ["nothing to hear", "last word"], ["nothing to see", "last wordz"]],
                         ids=["fewer", "more", "all-differ", "one-differs"])
def test_no_ranges_when_the_decoded_texts_are_not_the_bodies(texts):
    # (as when the email package sees other parts than fetch.parse_message): a range that is no
    # searched text would let a word in it match without being in the message's text
    from maillab.imap.search import searched_ranges
    assert searched_ranges(ATTACHED, texts) == 2


def test_a_word_in_a_learned_range_is_found_without_decoding():
    from maillab.imap.search import searched_ranges
    ranges = searched_ranges(ATTACHED, ["nothing to see", "last words"])
    ctx = SearchContext(1, 1, frozenset(), len(ATTACHED), 0.0, False, lambda: ATTACHED,
                        cached={"plain": ranges})
    assert ctx.surely_has(b"last") and ctx.surely_has(b"nothing")
    assert not ctx.surely_has(b"wonderland") and not ctx.surely_has(b"application")
    assert not ctx.surely_has(None)
    assert ctx._entities is None, "the surely_has look decoded the message"


# ----------------------------------------------------------------------------- a message cut into its parts
# With more than FEW_PARTS "message/" in it (the X-Pad field), the search cuts a message with
# fetch.parse_message and reads each part on its own; the answers are those of the email package
# reading the whole message.

def _cut_and_whole(raw: bytes, keys: list[str]) -> tuple[list[bool], list[bool]]:
    from maillab.imap.search import FEW_PARTS
    pad = b"X-Pad: " + b"message/ " * FEW_PARTS + b"\r\n"
    return [decoded_answer(pad + raw, k) for k in keys], [decoded_answer(raw, k) for k in keys]


def test_a_delivery_status_part_is_read_alike_in_a_long_message():
    raw = _mixed(b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; zebra.example\r\n\r\n"
                 b"Action: failed")
    cut, whole = _cut_and_whole(raw, ["BODY zebra", "TEXT zebra", "BODY nothing"])
    assert cut == whole == [False, True, True]  # its blocks are fields, as the email package reads them


def test_a_part_of_a_long_message_ends_where_the_next_begins():
    raw = _mixed(b"Content-Type: text/plain\r\nX-Tag: zebra\r\n\r\nsecond")
    cut, whole = _cut_and_whole(raw, ["BODY zebra", "TEXT zebra", "BODY second", "BODY see"])
    assert cut == whole == [False, True, True, True]


def test_a_digest_entry_of_a_long_message_adds_no_text_of_its_own():
    # BODY joins the texts of the parts with a line end. An entry of a digest without a header
    # is a message/rfc822 container; read on its own, its empty header said text/plain.
    raw = (b"From: a@example.com\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n"
           b"--d\r\n\r\nSubject: one\r\n\r\nfirst\r\n--d\r\n\r\nSubject: two\r\n\r\nsecond\r\n--d--\r\n")
    cut, whole = _cut_and_whole(raw, ["BODY {12}\r\nfirst\nsecond", "TEXT {9}\r\nfirst\n\nsu"])
    assert cut == whole == [True, False]


# ----------------------------------------------------------------------------- the index, the search, a client

def test_a_nul_in_a_search_text_for_a_field_the_message_lacks(inbox):
    store, folder = inbox
    folder.deliver(b"From: a@example.com\r\n\r\nno subject\r\n")
    client = imap(store)
    assert literal_search(client, b"SUBJECT", b"a\x00b") == b"* SEARCH\r\na OK SEARCH completed\r\n"
    assert literal_search(client, b"NOT SUBJECT", b"a\x00b") == b"* SEARCH 1\r\na OK SEARCH completed\r\n"


def test_a_search_gives_other_sessions_a_turn_before_reading_the_whole_index(inbox, monkeypatch):
    # The index is read 256 messages at a time, so that the server's other sessions are answered
    # between batches (here the search yields after every message).
    from maillab.imap import search
    _store, folder = inbox
    uids = [folder.deliver(b"Subject: n%d\r\n\r\nx\r\n" % i).uid for i in range(300)]
    asked = []
    real_described = folder.described
    monkeypatch.setattr(folder, "described", lambda chunk, fields: asked.append(len(chunk))
                        or real_described(chunk, fields))
    monkeypatch.setattr(search, "SLICE", -1.0)
    steps = search.search_folder(parse("SUBJECT n2"), folder, uids, set())
    assert next(steps) == b""
    assert asked == [256]
    rest = []
    with pytest.raises(StopIteration) as done:
        while True:
            rest.append(next(steps))
    assert asked == [256, 44]
    assert [seq for seq, _uid in done.value.value] == [3] + list(range(21, 31)) + list(range(201, 301))
