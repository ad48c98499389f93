"""The folder index (maillab.index): answers from it are the answers from the messages, and the
folder's files stay the one truth: changes by hand, a lost or damaged index file, an index of
another UIDVALIDITY and a second store on the same files are all seen as they are."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maillab.index as indexmod
from maillab.imap import fetch as fetchmod
from maillab.imap import search as searchmod
from maillab.imap.parser import Cursor
from maillab.imap.testing import SAMPLES
from maillab.net import ServerContext
from maillab.store import Store, to_crlf
from maillab.transcript import Recorder
from test_imap_core import Client, ctx, lines, store  # noqa: F401  (fixtures)

STRUCTURE = "(UID ENVELOPE BODY BODYSTRUCTURE)"


def message(subject: str, body: str = "hello\n", sender: str = "Bob <bob@example.com>") -> bytes:
    return to_crlf(f"From: {sender}\nTo: alice@example.com\nSubject: {subject}\n\n{body}".encode())


def expected(raw_messages: list[bytes], uids: list[int]) -> list[bytes]:
    """What FETCH 1:* STRUCTURE must answer, worked out from the messages themselves."""
    out = []
    for seq, (uid, raw) in enumerate(zip(uids, raw_messages), 1):
        root = fetchmod.parse_message(to_crlf(raw))
        out.append(b"* %d FETCH (UID %d ENVELOPE %s BODY %s BODYSTRUCTURE %s)" % (
            seq, uid, fetchmod.envelope(root), fetchmod.bodystructure(root, False),
            fetchmod.bodystructure(root, True)))
    return out


def selected_client(ctx, folder="INBOX", password="alice-pw") -> Client:  # noqa: F811
    c = Client(ctx).login("alice", password)
    assert b"s OK" in c.cmd(f"s SELECT {folder}")
    return c


def fetched(c: Client, what: str = STRUCTURE, which: str = "1:*") -> list[bytes]:
    out = lines(c.cmd(f"f FETCH {which} {what}"))
    assert out[-1].startswith(b"f OK"), out[-1]
    return [line for line in out[:-1] if b" FETCH (" in line]


def index_file(store, folder="INBOX") -> Path:  # noqa: F811
    return store.account("alice").folder(folder).path / indexmod.INDEX_FILE


def rows_of(path: Path, columns: str) -> dict[int, tuple]:
    with sqlite3.connect(path) as db:
        return {r[0]: r[1:] for r in db.execute(f"SELECT uid, {columns} FROM messages")}


def rows(path: Path) -> dict[int, tuple]:
    with sqlite3.connect(path) as db:
        return {r[0]: r[1:] for r in db.execute("SELECT uid, base, envelope FROM messages")}


@pytest.fixture
def filled(store):  # noqa: F811
    inbox = store.account("alice").folder("INBOX")
    for raw in SAMPLES:
        inbox.deliver(raw, {"\\Seen"})
    return inbox


# ----------------------------------------------------------------------------- answers

def test_structure_is_answered_from_the_index_once_described(ctx, store, filled, monkeypatch):  # noqa: F811
    c = selected_client(ctx)
    uids = [i.uid for i in filled.messages()]
    assert fetched(c) == expected(SAMPLES, uids)  # the first FETCH describes and records them
    recorded = rows(index_file(store))
    assert sorted(recorded) == uids and all(env is not None for _base, env in recorded.values())
    assert [base for base, _env in recorded.values()] == [i.base for i in filled.messages()]

    def no_parsing(raw):
        raise AssertionError("a described message was parsed again")
    monkeypatch.setattr(indexmod, "describe", no_parsing)
    assert fetched(c) == expected(SAMPLES, uids)
    # after a restart too: the rows are on disk
    store.close()
    again = Store(store.root, hash_n=2**10)
    try:
        c2 = selected_client(ServerContext(again, Recorder(), "mail.example.com", "example.com"))
        assert fetched(c2) == expected(SAMPLES, uids)
        assert lines(c2.cmd('s UID SEARCH FROM "alice"'))[0] == lines(c.cmd('s UID SEARCH FROM "alice"'))[0]
    finally:
        again.close()


def test_search_from_the_index_finds_what_the_messages_hold(ctx, filled):  # noqa: F811
    c = selected_client(ctx)
    keys = ['FROM "alice"', 'TO "bob"', 'SUBJECT "hello"', 'CC "x"', 'BCC "y"', "SENTSINCE 1-Jan-2000",
            'SENTBEFORE 1-Jan-2000', 'TEXT "hello"', 'BODY "world"', 'HEADER Message-ID "<"',
            'OR FROM "bob" SUBJECT "Grüße"', 'NOT TEXT "the"']
    before = {k: lines(c.cmd(f"s SEARCH CHARSET UTF-8 {k}"))[0] for k in keys}  # describes them
    assert rows(index_file(c.s.account.store)), "the first search filled the index"
    after = {k: lines(c.cmd(f"s SEARCH CHARSET UTF-8 {k}"))[0] for k in keys}
    assert after == before
    reference = {}
    for k in keys:  # every message tested on its own bytes, without the index
        tree = searchmod.parse_search(Cursor(f"CHARSET UTF-8 {k}".encode()))
        found = []
        for seq, info in enumerate(filled.messages(), 1):
            ctx_ = searchmod.SearchContext(seq, info.uid, info.flags, info.size, info.internaldate,
                                           False, lambda u=info.uid: filled.read(u), 5, 5)
            if searchmod.matches(tree, ctx_):
                found.append(seq)
        reference[k] = b"* SEARCH" + b"".join(b" %d" % n for n in found)
    assert after == reference


def test_a_search_does_without_the_index_when_describing_fails(ctx, filled, monkeypatch):  # noqa: F811
    c = selected_client(ctx)
    keys = ['FROM "bob"', 'SUBJECT "report"', 'TEXT "the"']
    right = [lines(c.cmd(f"s SEARCH {k}"))[0] for k in keys]
    fresh = Store(filled.account.store.root, hash_n=2**10)  # a store whose index is not filled yet
    try:
        (filled.path / indexmod.INDEX_FILE).unlink()

        def broken(raw):
            raise ValueError("a bug met on some message")
        monkeypatch.setattr(indexmod, "describe", broken)
        c2 = selected_client(ServerContext(fresh, Recorder(), "mail.example.com", "example.com"))
        assert [lines(c2.cmd(f"s SEARCH {k}"))[0] for k in keys] == right
    finally:
        fresh.close()


# ----------------------------------------------------------------------------- changes

def test_delivered_flagged_and_expunged_messages_show_at_the_next_command(ctx, store, filled):  # noqa: F811
    c = selected_client(ctx)
    fetched(c)
    new = filled.deliver(message("just delivered"))
    out = c.cmd("n NOOP")
    assert b"* 6 EXISTS" in out
    assert b'"just delivered"' in fetched(c, "ENVELOPE", "6")[0]
    filled.store_flags(new.uid, {"\\Flagged"}, "add")
    assert b"* 6 FETCH (FLAGS (\\Flagged \\Recent))" in c.cmd("n NOOP")
    assert lines(c.cmd("s SEARCH FLAGGED"))[0] == b"* SEARCH 6"
    gone = filled.messages()[0].uid
    filled.expunge([gone])
    assert b"* 1 EXPUNGE" in c.cmd("n NOOP")
    assert len(fetched(c)) == 5
    assert gone not in rows(index_file(store)), "an expunged message's row goes"


def test_files_added_removed_and_renamed_by_hand_show_at_the_next_command(ctx, store, filled):  # noqa: F811
    c = selected_client(ctx)
    fetched(c)
    infos = filled.messages()
    # added: a learner copies a message file into new/ (no UID in its name)
    (filled.path / "new" / "by-hand.eml").write_bytes(message("copied by hand").replace(b"\r\n", b"\n"))
    out = c.cmd("n NOOP")
    assert b"* 6 EXISTS" in out
    assert b'"copied by hand"' in fetched(c, "ENVELOPE", "6")[0]
    # removed
    os.unlink(infos[1].file)
    assert b"* 2 EXPUNGE" in c.cmd("n NOOP")
    # renamed: flags changed by hand
    os.rename(infos[0].file, infos[0].file.replace(":2,S", ":2,FS"))
    assert b"* 1 FETCH (FLAGS (\\Flagged \\Seen \\Recent))" in c.cmd("n NOOP")
    # replaced: another message under the UID of message 3 (another file name): its row is not used
    third = infos[2]
    os.unlink(third.file)
    replacement = message("a different message under an old UID")
    (filled.path / "cur" / third.name.replace(third.name.split(",")[0], "1.learner")).write_bytes(replacement)
    c.cmd("n NOOP")
    assert b'"a different message under an old UID"' in lines(c.cmd(f"u UID FETCH {third.uid} ENVELOPE"))[0]
    # a copy of a message file under its own name: the copy is a new message with a new UID
    first = filled.get(infos[0].uid)
    dup = os.path.join(filled.path, "new", first.name.split(":")[0])
    Path(dup).write_bytes(Path(first.file).read_bytes())
    out = c.cmd("n NOOP")
    assert b"EXISTS" in out
    uids = [i.uid for i in filled.messages()]
    assert len(uids) == len(set(uids)) == 6 and first.uid in uids
    assert lines(c.cmd('s SEARCH SUBJECT "copied by hand"'))[0] == b"* SEARCH 5"


def test_a_folder_removed_by_hand_is_empty_at_the_next_command(ctx, store):  # noqa: F811
    import shutil
    acct = store.account("alice")
    folder = acct.create_folder("Old")
    for raw in SAMPLES[:2]:
        folder.deliver(raw)
    c = selected_client(ctx, "Old")
    shutil.rmtree(folder.path)
    out = lines(c.cmd("n NOOP"))
    assert out == [b"* 2 EXPUNGE", b"* 1 EXPUNGE", b"n OK NOOP completed"]
    assert lines(c.cmd("s SEARCH ALL")) == [b"* SEARCH", b"s OK SEARCH completed"]


def test_a_second_store_on_the_same_files_agrees(tmp_path):
    """Two processes on one store (a notebook and `maillab serve`, say): each sees the other's
    changes, and their index rows never mislead the other."""
    a, b = Store(tmp_path / "s", hash_n=2**10), None
    try:
        a.add_account("alice", "pw", "example.com")
        b = Store(tmp_path / "s", hash_n=2**10)
        ca = selected_client(ServerContext(a, Recorder(), "mail.example.com", "example.com"), password="pw")
        cb = Client(ServerContext(b, Recorder(), "mail.example.com", "example.com")).login("alice", "pw")
        assert b"s OK" in cb.cmd("s SELECT INBOX")
        inbox_a = a.account("alice").folder("INBOX")
        for i in range(5):
            inbox_a.deliver(message(f"number {i}"))
        assert b"* 5 EXISTS" in cb.cmd("n NOOP") and b"* 5 EXISTS" in ca.cmd("n NOOP")
        assert fetched(ca, "(UID ENVELOPE BODYSTRUCTURE)") == fetched(cb, "(UID ENVELOPE BODYSTRUCTURE)")
        assert b"OK" in cb.cmd("x STORE 2 +FLAGS (\\Deleted)") and b"OK" in cb.cmd("x EXPUNGE")
        assert b"* 2 EXPUNGE" in ca.cmd("n NOOP")
        assert [f.replace(b" \\Recent", b"").replace(b"\\Recent", b"") for f in fetched(ca, "(UID FLAGS ENVELOPE)")] \
            == [f.replace(b" \\Recent", b"").replace(b"\\Recent", b"") for f in fetched(cb, "(UID FLAGS ENVELOPE)")]
        assert lines(ca.cmd('s SEARCH SUBJECT "number 3"')) == lines(cb.cmd('s SEARCH SUBJECT "number 3"'))
    finally:
        a.close()
        if b is not None:
            b.close()


def test_two_sessions_on_one_folder_agree(ctx, filled):  # noqa: F811
    one, two = selected_client(ctx), selected_client(ctx)
    assert b"OK" in one.cmd("a APPEND INBOX {%d+}\r\n%s" % (len(message("appended")),
                                                            message("appended").decode()))
    assert b"OK" in one.cmd("c COPY 1:2 INBOX")
    assert b"OK" in one.cmd("x STORE 3 +FLAGS (\\Deleted)") and b"OK" in one.cmd("x EXPUNGE")
    two.cmd("n NOOP")
    assert fetched(one) == fetched(two)
    assert lines(one.cmd('s SEARCH TEXT "appended"')) == lines(two.cmd('s SEARCH TEXT "appended"'))


def test_copy_and_move_take_the_description_along(ctx, store, filled, monkeypatch):  # noqa: F811
    c = selected_client(ctx)
    first = fetched(c, "(ENVELOPE BODYSTRUCTURE)")
    store.account("alice").create_folder("Archive")
    assert b"OK" in c.cmd("c COPY 1:2 Archive") and b"OK" in c.cmd("m MOVE 3 Archive")
    assert len(rows(index_file(store, "Archive"))) == 3
    monkeypatch.setattr(indexmod, "describe", lambda raw: pytest.fail("described again"))
    assert b"s OK" in c.cmd("s SELECT Archive")
    assert fetched(c, "(ENVELOPE BODYSTRUCTURE)") == first[:3]


# ----------------------------------------------------------------------------- a damaged index

@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage", "emptied"])
def test_a_damaged_index_is_made_again(tmp_path, damage):
    root = tmp_path / "s"
    store = Store(root, hash_n=2**10)
    store.add_account("alice", "pw", "example.com")
    inbox = store.account("alice").folder("INBOX")
    for raw in SAMPLES:
        inbox.deliver(raw, {"\\Seen"})
    c = selected_client(ServerContext(store, Recorder(), "mail.example.com", "example.com"), password="pw")
    good = fetched(c)
    store.close()
    path = root / "alice" / indexmod.INDEX_FILE
    assert path.stat().st_size > 4096
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif damage == "garbage":
        path.write_bytes(b"not a database at all " * 500)
    else:
        path.write_bytes(b"")
    store = Store(root, hash_n=2**10)
    try:
        c = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com")).login("alice", "pw")
        assert b"s OK" in c.cmd("s SELECT INBOX")
        assert fetched(c) == good
        assert len(rows(path)) == len(SAMPLES), "the index was filled again"
        assert lines(c.cmd('s SEARCH TEXT "the"'))[0] == lines(c.cmd('s SEARCH TEXT "the"'))[0]
    finally:
        store.close()


def test_an_index_of_another_uidvalidity_is_not_used(tmp_path):
    root = tmp_path / "s"
    store = Store(root, hash_n=2**10)
    store.add_account("alice", "pw", "example.com")
    inbox = store.account("alice").folder("INBOX")
    inbox.deliver(message("the real subject"))
    c = selected_client(ServerContext(store, Recorder(), "mail.example.com", "example.com"), password="pw")
    fetched(c, "ENVELOPE")
    store.close()
    path = root / "alice" / indexmod.INDEX_FILE

    def tamper(uidvalidity=None):
        with sqlite3.connect(path) as db:
            db.execute("UPDATE messages SET envelope = ?", (b'("tampered")',))
            if uidvalidity is not None:
                db.execute("UPDATE meta SET value = ? WHERE key = 'uidvalidity'", (str(uidvalidity),))

    def envelope_now() -> bytes:
        s = Store(root, hash_n=2**10)
        try:
            cl = selected_client(ServerContext(s, Recorder(), "mail.example.com", "example.com"), password="pw")
            return fetched(cl, "ENVELOPE")[0]
        finally:
            s.close()
    tamper()
    assert b'"tampered"' in envelope_now()  # the same UIDVALIDITY: its rows are used (a cache)
    tamper(uidvalidity=inbox.uidvalidity - 1)
    assert b'"the real subject"' in envelope_now()
    # an index made by an older maillab (its rows may describe messages differently) too
    tamper()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'version'",
                   (str(int(indexmod.SCHEMA_VERSION) - 1),))
    assert b'"the real subject"' in envelope_now()


def test_the_index_file_is_private_and_ignored_as_a_folder(ctx, store, filled):  # noqa: F811
    c = selected_client(ctx)
    fetched(c)
    acct = store.account("alice")
    for p in acct.path.iterdir():
        if p.name.startswith(indexmod.INDEX_FILE):
            assert p.stat().st_mode & 0o777 == 0o600, p
    assert "maillab-index.sqlite" not in " ".join(acct.folder_names())
    import mailbox
    assert len(mailbox.Maildir(acct.path, factory=None, create=False)) == len(SAMPLES)


# ----------------------------------------------------------------------------- the saved listing

SELECT_LINES = (b"EXISTS", b"RECENT", b"UNSEEN", b"UIDVALIDITY", b"UIDNEXT", b"FLAGS")


def select_answer(store, folder="INBOX") -> list[bytes]:  # noqa: F811
    """What a new session's SELECT of ``folder`` says (its tag line and [CLOSED] left out)."""
    c = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com")).login("alice", "pw")
    return [line for line in lines(c.cmd(f"s SELECT {folder}")) if any(w in line for w in SELECT_LINES)]


@pytest.fixture
def saved(tmp_path, monkeypatch):
    """A store whose INBOX (7 messages, the first 3 seen, 2 with a keyword) was listed and
    saved by a store that stopped; returns (root, the SELECT answer that store gave)."""
    import maillab.store as storemod
    monkeypatch.setattr(storemod, "LISTING_WORTH", 1)  # (the listing of a small folder is saved too)
    root = tmp_path / "s"
    store = Store(root, hash_n=2**10)
    store.add_account("alice", "pw", "example.com")
    inbox = store.account("alice").folder("INBOX")
    for i in range(7):
        inbox.deliver(message(f"number {i}"), {"\\Seen"} if i < 3 else {"$Work"} if i in (4, 5) else ())
    inbox.claim_recent()
    inbox.deliver(message("still new"))
    answer = select_answer(store)  # (it moves the new message to cur/)
    time.sleep(0.05)  # a listing is saved only once its directories have not changed for a tick
    store.close()
    assert (root / "alice" / indexmod.LISTING_FILE).stat().st_mode & 0o777 == 0o600
    return root, answer


def test_the_first_select_after_a_restart_answers_from_the_listing(saved, monkeypatch):
    root, answer = saved
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda d: listed.append(d) or real_listdir(d))
    store = Store(root, hash_n=2**10)
    try:
        assert select_answer(store) == [line.replace(b"1 RECENT", b"0 RECENT") for line in answer]
        assert not [d for d in listed if str(d).endswith(("cur", "new"))], "the directories were listed"
        assert b"$Work" in b"".join(answer)
        # the messages themselves are made when a command needs them, from the saved names
        c = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com")).login("alice", "pw")
        c.cmd("s SELECT INBOX")
        flags = fetched(c, "FLAGS")
        assert len(flags) == 8 and b"$Work" in flags[4] and b"\\Seen" in flags[0]
        assert not [d for d in listed if str(d).endswith(("cur", "new"))]
    finally:
        store.close()


@pytest.mark.parametrize("change", ["added", "removed", "renamed", "moved-to-new"])
def test_a_listing_is_not_used_once_the_files_changed_by_hand(saved, change, tmp_path):
    root, _answer = saved
    inbox_path = root / "alice"
    names = sorted(os.listdir(inbox_path / "cur"))
    if change == "added":
        (inbox_path / "new" / "by-hand.eml").write_bytes(b"Subject: by hand\n\nhello\n")
    elif change == "removed":
        os.unlink(inbox_path / "cur" / names[0])
    elif change == "renamed":  # the first message's \\Seen taken away by hand
        os.rename(inbox_path / "cur" / names[0], inbox_path / "cur" / names[0].replace(":2,S", ":2,"))
    else:  # the last message put back into new/, as if no client had seen it
        os.rename(inbox_path / "cur" / names[-1], inbox_path / "new" / names[-1].split(":")[0])
    truth = tmp_path / "truth"  # the same files without a listing
    shutil.copytree(root, truth)
    os.unlink(truth / "alice" / indexmod.LISTING_FILE)
    answers = []
    for where in (root, truth):
        store = Store(where, hash_n=2**10)
        try:
            answers.append(select_answer(store))
        finally:
            store.close()
    got = answers[0]
    assert got == answers[1]
    exists = {"added": b"* 9 EXISTS", "removed": b"* 7 EXISTS"}.get(change, b"* 8 EXISTS")
    assert exists in got
    if change == "renamed":
        assert b"* OK [UNSEEN 1]" in b"\n".join(got)
    if change in ("added", "moved-to-new"):
        assert b"* 1 RECENT" in got


def test_a_change_after_a_select_from_the_listing_shows_at_the_next_command(saved):
    root, _answer = saved
    store = Store(root, hash_n=2**10)
    try:
        c = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com")).login("alice", "pw")
        assert b"* 8 EXISTS" in c.cmd("s SELECT INBOX")
        cur = root / "alice" / "cur"
        first = sorted(os.listdir(cur))[0]
        os.unlink(cur / first)
        (root / "alice" / "new" / "by-hand.eml").write_bytes(b"Subject: by hand\n\nhello\n")
        out = lines(c.cmd("n NOOP"))
        assert b"* 1 EXPUNGE" in out and b"* 8 EXISTS" in out, out
        assert len(fetched(c, "FLAGS")) == 8
        assert lines(c.cmd('s SEARCH SUBJECT "by hand"'))[0] == b"* SEARCH 8"
        # and a delivery to a folder answered from its listing: the session hears of it
        c2 = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com")).login("alice", "pw")
        store2 = Store(root, hash_n=2**10)
        try:
            c2 = Client(ServerContext(store2, Recorder(), "mail.example.com", "example.com")).login("alice", "pw")
            c2.cmd("s SELECT INBOX")
            store2.account("alice").folder("INBOX").deliver(message("delivered"))
            assert b"* 9 EXISTS" in c2.cmd("n NOOP")
        finally:
            store2.close()
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage", "emptied", "other-uidvalidity",
                                    "fewer-names"])
def test_a_damaged_listing_is_not_used(saved, damage):
    root, answer = saved
    path = root / "alice" / indexmod.LISTING_FILE
    data = path.read_bytes()
    head, rest = data.split(b"\n", 1)
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(data[:len(head) + 9])
    elif damage == "garbage":
        path.write_bytes(b"maillab-listing 1 x y z\n" + os.urandom(200))
    elif damage == "emptied":
        path.write_bytes(b"")
    elif damage == "other-uidvalidity":
        fields = head.split()
        fields[2] = b"%d" % (int(fields[2]) - 1)
        path.write_bytes(b" ".join(fields) + b"\n" + rest)
    else:  # the names cut short (the UIDs are whole): the messages are listed from the directories
        path.write_bytes(data[:data.rindex(b"\n")])
    store = Store(root, hash_n=2**10)
    try:
        assert select_answer(store) == [line.replace(b"1 RECENT", b"0 RECENT") for line in answer]
        c = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com")).login("alice", "pw")
        c.cmd("s SELECT INBOX")
        assert len(fetched(c, "FLAGS")) == 8
    finally:
        store.close()


def test_a_listing_made_within_a_clock_tick_of_a_change_is_not_saved(tmp_path, monkeypatch):
    import maillab.store as storemod
    monkeypatch.setattr(storemod, "LISTING_WORTH", 1)
    monkeypatch.setattr(storemod, "CLOCK_TICK_NS", 3_600 * 10**9)  # every change is "just now"
    store = Store(tmp_path / "s", hash_n=2**10)
    store.add_account("alice", "pw", "example.com")
    store.account("alice").folder("INBOX").deliver(message("one"))
    select_answer(store)
    store.close()
    assert not (tmp_path / "s" / "alice" / indexmod.LISTING_FILE).exists()


# ----------------------------------------------------------------------------- SEARCH TEXT's raw look

def test_search_text_learns_where_a_message_keeps_its_text(ctx, store, monkeypatch):  # noqa: F811
    """The first TEXT search that decodes a plain message records the byte ranges of its
    searched texts in the index; the next finds the word there without decoding."""
    folder = store.account("alice").create_folder("Reports")
    alternative = to_crlf(b"Subject: two forms\nMIME-Version: 1.0\nContent-Type: multipart/alternative; "
                          b"boundary=alt\n\n--alt\nContent-Type: text/plain\n\nthe quarterly report\n--alt\n"
                          b"Content-Type: text/html\n\n<p>the quarterly report</p>\n--alt--\n")
    attached = to_crlf(b"Subject: attached\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
                       b"--b\n\nsee the file\n--b\nContent-Type: application/pdf\n\nquarterly\n--b--\n")
    for raw in (alternative, message("no"), attached, message("yes", "a quarterly note\n")):
        folder.deliver(raw)
    c = selected_client(ctx, "Reports")
    first = lines(c.cmd('s SEARCH TEXT "quarterly"'))
    assert first[0] == b"* SEARCH 1 4"
    plain = {uid: row[0] for uid, row in rows_of(index_file(store, "Reports"), "plain").items()}
    assert plain[1].startswith("r") and plain[4].startswith("r") and plain[3].startswith("r"), plain
    decoded = []
    real_parse = searchmod._parse
    monkeypatch.setattr(searchmod, "_parse", lambda data: decoded.append(data) or real_parse(data))
    assert lines(c.cmd('s SEARCH TEXT "quarterly"')) == first
    assert lines(c.cmd('s SEARCH BODY "quarterly"')) == first
    assert len(decoded) == 2, "only the attachment's message is decoded (its word is not in a text)"


def learned(raw: bytes, plain: int):
    """The index's ``plain`` value once a search decoded the message (searched_ranges)."""
    ctx = searchmod.SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw, cached={"plain": plain})
    ctx.full_text()
    return ctx.learned_ranges() or plain


_PIECES = st.sampled_from(["Report", "report", "quarterly", "Grüße", "ﬁle", "file", "r=C3=A9sum=C3=A9",
                           "x", "=?utf-8?q?quarterly?=", "UmVwb3J0", "cXVhcnRlcmx5", "line\n", "Subject: x"])


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(subject=st.lists(_PIECES, max_size=3).map(" ".join),
       body=st.lists(_PIECES, max_size=5).map(" ".join),
       encoding=st.sampled_from([None, "7bit", "base64", "quoted-printable", "8bit", "BASE64"]),
       charset=st.sampled_from([None, "us-ascii", "utf-8", "utf-16", "utf-7", "iso-8859-7"]),
       attachment=st.sampled_from([None, "base64", "7bit"]),
       needle=st.sampled_from(["report", "quarterly", "file", "grüße", "ﬁle", "résumé", "x", "subject: x",
                               "umvwb3j0", "r=c3=a9", "ject", "b--", "report file", "pdf"]))
def test_the_raw_look_of_search_text_never_changes_an_answer(subject, body, encoding, charset, attachment,
                                                             needle):
    """TEXT and BODY look in the raw bytes first only where that cannot miss a match: whatever
    the encodings and charsets, the answer is the one from the decoded text."""
    import base64
    payload = body.encode("utf-8")
    if encoding and encoding.lower() == "base64":
        payload = base64.encodebytes(payload)
    ctype = "text/plain" + (f"; charset={charset}" if charset else "")
    part = f"Content-Type: {ctype}\n" + (f"Content-Transfer-Encoding: {encoding}\n" if encoding else "")
    if attachment:
        data = b"quarterly report file" if attachment == "7bit" else base64.encodebytes(b"quarterly report")
        raw = (f"Subject: {subject}\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
               f"--b\n{part}\n").encode() + payload + (
               f"\n--b\nContent-Type: application/pdf\nContent-Transfer-Encoding: {attachment}\n\n").encode() \
            + data + b"\n--b--\n"
    else:
        raw = f"Subject: {subject}\n{part}\n".encode() + payload
    raw = to_crlf(raw)
    plain = indexmod.describe(raw)[indexmod.FIELDS.index("plain")]
    for key in ("TEXT", "BODY"):
        tree = searchmod.parse_search(Cursor(f'CHARSET UTF-8 {key} "{needle}"'.encode()))
        slow = searchmod.SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw)
        for value in (plain, learned(raw, plain)):  # as described; with the ranges a search learned
            fast = searchmod.SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw,
                                           cached={"plain": value})
            assert searchmod.matches(tree, fast) == searchmod.matches(tree, slow), (key, needle, value, raw)


_QUARTERLY_B64 = "cXVhcnRlcmx5IHJlcG9ydA=="  # base64 of "quarterly report"


@pytest.mark.parametrize("raw, key, needle, found", [
    ("Subject: x\nContent-Transfer-Encoding: base64\n\n" + _QUARTERLY_B64 + "\n", "BODY", "quarterly", True),
    ("Subject: x\nContent-Transfer-Encoding: BASE64\n\n" + _QUARTERLY_B64 + "\n", "TEXT", "quarterly", True),
    ("Subject: x\nContent-Transfer-Encoding: quoted-printable\n\nquar=\nterly\n", "TEXT", "quarterly", True),
    ("Subject: =?utf-8?q?quarterly?=\n\nhi\n", "TEXT", "quarterly", True),
    ("Subject: =?utf-8?b?cXVhcnRlcmx5?=\n\nhi\n", "TEXT", "quarterly", True),
    ("Subject:quarterly\n\nhi\n", "TEXT", "subject: quarterly", True),
    ("Subject: x\nContent-Type: text/plain; charset=utf-7\n\n+AHEAdQBh-rterly\n", "BODY", "quarterly", True),
    ("Subject: x\nContent-Type: text/plain; charset=utf-8\n\n\uFB01le\n", "BODY", "file", True),
    ("Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\nhi\n--b\n"
     "Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n" + _QUARTERLY_B64 + "\n--b--\n",
     "TEXT", "quarterly", False),  # an attachment's content is not searched, in any encoding
    ("Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\nhi\n--b\n"
     "Content-Type: application/pdf/x\nContent-Transfer-Encoding: base64\n\n" + _QUARTERLY_B64 + "\n--b--\n",
     "TEXT", "quarterly", True),  # "application/pdf/x" is no type: the email package takes it for text
    ("Subject: x\n\nthe quarterly report\n", "TEXT", "quarterly", True),
    ("Subject: x\n\nthe yearly report\n", "TEXT", "quarterly", False),
    ("Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\nhi\n--b\n"
     "Content-Type: application/pdf\n\nthe quarterly report\n--b--\nquarterly epilogue\n",
     "BODY", "quarterly", False),  # neither an attachment's bytes nor an epilogue are searched
    ("Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\nquarterly preamble\n--b\n\nhi"
     "\n--b--\n", "BODY", "quarterly", False),
    ("Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\nhi\n--b--\n",
     "BODY", "b--", False),
    ("Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=b\n\n--b\n\nhi\n--b\n"
     "Content-Type: text/html\n\n<p>the quarterly report</p>\n--b--\n", "BODY", "quarterly", True),
])
def test_the_raw_look_of_search_text_in_cases_where_decoding_matters(raw, key, needle, found):
    raw = to_crlf(raw.encode("utf-8"))
    plain = indexmod.describe(raw)[indexmod.FIELDS.index("plain")]
    tree = searchmod.parse_search(Cursor(f'CHARSET UTF-8 {key} "{needle}"'.encode()))
    fast = searchmod.SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw, cached={"plain": plain})
    slow = searchmod.SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw)
    assert searchmod.matches(tree, slow) == found
    assert searchmod.matches(tree, fast) == found
    with_ranges = learned(raw, plain)
    fast = searchmod.SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw,
                                   cached={"plain": with_ranges})
    assert searchmod.matches(tree, fast) == found, with_ranges
