"""The store's accounts, passwords, folders, subscriptions, UIDVALIDITY and file modes, rule by
rule. Each test was shown to fail on a planted bug (bench/mutation.py) that the rest of the
suite let through."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import time

import pytest

from maillab.store import (LAST_VALIDITY_FILE, SPECIAL_USE, SUBSCRIPTIONFILE, UIDFILE,
                           FolderError, Store, hash_password, verify_password)

N = 2**10  # a cheap scrypt work factor for tests


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store", hash_n=N)
    yield s
    s.close()


@pytest.fixture
def alice(store):
    return store.add_account("alice", "pw", "example.com")


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def reopened(store: Store) -> Store:
    return Store(store.root, hash_n=N)


# ----------------------------------------------------------------------------- passwords

def test_password_hashes_are_scrypt_with_a_16_byte_salt_and_64_byte_digest():
    scheme, n, r, p, salt, digest = hash_password("pw", n=N).split("$")
    assert (scheme, n, r, p) == ("scrypt", str(N), "8", "1")  # RFC 7914's r and p
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 64


def test_the_default_work_factor_is_two_to_the_14th():
    assert hash_password("pw").split("$")[1:4] == ["16384", "8", "1"]


@pytest.mark.parametrize("stored", [
    "", "scrypt", "a$b$c", "scrypt$x$8$1$AAAA$AAAA", "scrypt$1023$8$1$AAAA$AAAA",
    "scrypt$1024$8$1$!!$AAAA", b"scrypt$1024$8$1$AAAA$AAAA"])
def test_a_damaged_stored_hash_matches_no_password(stored):
    assert verify_password("pw", stored) is False


def test_only_the_scrypt_scheme_is_accepted():
    good = hash_password("pw", n=N)
    assert verify_password("pw", good) is True
    assert verify_password("pw", "bcrypt" + good.removeprefix("scrypt")) is False


def test_the_dummy_hash_has_the_cost_most_accounts_have(store):
    assert store._dummy_hash().split("$")[1:4] == [str(N), "8", "1"]  # no account yet
    store.add_account("a", "pw", "example.com")
    store.add_account("b", "pw", "example.com", password_hash=hash_password("pw", n=2**11))
    store.add_account("c", "pw", "example.com", password_hash=hash_password("pw", n=2**11))
    dummy = store._dummy_hash()
    scheme, n, r, p, salt, digest = dummy.split("$")
    assert (scheme, n, r, p) == ("scrypt", "2048", "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 64
    assert store._dummy_hash() is dummy  # made once per cost
    assert not verify_password("pw", dummy) and not verify_password("", dummy)


def test_the_dummy_hash_ignores_accounts_with_foreign_hashes(store):
    store.add_account("a", "pw", "example.com", password_hash="{SSHA}not-ours")
    store.add_account("b", "pw", "example.com", password_hash="{SSHA}not-ours-either")
    store.add_account("c", "pw", "example.com")
    assert store._dummy_hash().split("$")[1:4] == [str(N), "8", "1"]
    assert store.authenticate("nobody", "pw") is None


# ----------------------------------------------------------------------------- accounts

def test_accounts_are_saved_and_come_back(store):
    store.add_account("alice", "pw", "Example.COM", ["Alice@Example.com", "a.l@example.com"],
                      apop=True)
    again = reopened(store)
    acct = again.account("alice")
    assert acct.domain == "example.com"
    assert acct.addresses == ["alice@example.com", "a.l@example.com"]
    assert acct.check_password("pw") and not acct.check_password("PW")
    assert acct.apop_secret is None  # never written
    assert again.domains() == {"example.com"}
    assert mode(store.root / "accounts.json") == 0o600


def test_accounts_added_without_saving_wait_for_save(store):
    store.add_account("alice", "pw", "example.com")
    store.add_account("bob", "pw", "example.org", save=False)
    assert reopened(store).account("bob") is None
    store.save()
    assert reopened(store).account("bob").domain == "example.org"
    assert store.domains() == {"example.com", "example.org"}


@pytest.mark.parametrize("login", ["", ".alice", "a/b", "a b", "x" * 65, "ä"])
def test_invalid_logins_are_refused(store, login):
    with pytest.raises(ValueError):
        store.add_account(login, "pw", "example.com")


def test_addresses_are_found_case_insensitively_in_angle_brackets(store):
    store.add_account("alice", "pw", "example.com", ["alice@example.com", "boss@example.com"])
    assert store.find_address(" <BOSS@Example.com> ").login == "alice"
    assert store.find_address("nobody@example.com") is None
    assert store.authenticate("boss@example.com", "pw").login == "alice"


def test_special_folders_are_made_on_first_look_and_remembered(store):
    store.add_account("alice", "pw", "example.com")
    saved = json.loads((store.root / "accounts.json").read_text())["accounts"][0]
    assert sorted(saved["folders_to_make"]) == sorted(SPECIAL_USE)
    acct = reopened(store).account("alice")
    assert acct.folders_to_make and acct.has_folder("Sent")  # made by this first look
    saved = json.loads((store.root / "accounts.json").read_text())["accounts"][0]
    assert "folders_to_make" not in saved
    assert reopened(store).account("alice").folder_names() == [
        "INBOX", "Drafts", "Junk", "Sent", "Trash"]


def test_special_use_attributes(alice):
    assert [alice.special_use(n) for n in ("Sent", "Drafts", "Trash", "Junk", "INBOX")] == [
        "\\Sent", "\\Drafts", "\\Trash", "\\Junk", None]


def test_close_removes_a_temporary_store_once():
    s = Store(hash_n=N)
    root = s.root
    assert root.is_dir() and mode(root) == 0o700
    s.close()
    assert not root.exists()
    s.close()  # twice is fine


# ----------------------------------------------------------------------------- folders

def test_folder_names_are_case_insensitive_only_for_inbox(alice):
    assert alice.folder("inbox") is alice.folder("INBOX") is alice.folder("InBox")
    assert alice.folder("Sent") is alice.folder("Sent")
    with pytest.raises(FolderError):
        alice.folder("sent")
    with pytest.raises(FolderError):
        alice.folder("Nowhere")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "a\x00b", "a..b"])
def test_invalid_folder_names(alice, name):
    with pytest.raises(FolderError):
        alice.create_folder(name)
    assert not alice.has_folder(name)
    alice.create_folder("Fine")
    with pytest.raises(FolderError):
        alice.rename_folder("Fine", name)
    assert alice.has_folder("Fine")


def test_a_new_folder_is_private_and_marked_as_a_maildir_subfolder(alice):
    folder = alice.create_folder("Projects")
    assert mode(folder.path) == 0o700
    assert mode(folder.path / "maildirfolder") == 0o600
    assert mode(folder.path / UIDFILE) == 0o600
    assert alice.folder("Projects") is folder


def test_a_deleted_folder_is_gone_for_good(alice):
    folder = alice.create_folder("Projects")
    folder.deliver(b"Subject: x\n\nx\n")
    alice.delete_folder("Projects")
    assert not folder.path.exists() and not alice.has_folder("Projects")
    with pytest.raises(FolderError):
        alice.folder("Projects")
    again = alice.create_folder("Projects")
    assert again is not folder and len(again) == 0


def test_rename_refuses_an_existing_name(alice):
    alice.create_folder("A")
    alice.create_folder("B")
    with pytest.raises(FolderError, match="exists already"):
        alice.rename_folder("A", "B")
    assert alice.has_folder("A") and alice.has_folder("B")


def test_rename_moves_children_and_forgets_the_old_names(alice):
    parent = alice.create_folder("Work")
    parent.deliver(b"Subject: p\n\np\n")
    child = alice.create_folder("Work.2024")
    child.deliver(b"Subject: c\n\nc\n")
    alice.rename_folder("Work", "Job")
    names = alice.folder_names()
    assert "Job" in names and "Job.2024" in names
    assert "Work" not in names and "Work.2024" not in names
    for old in ("Work", "Work.2024"):
        with pytest.raises(FolderError):
            alice.folder(old)  # not a stale object of the old directory
    assert [len(alice.folder(n)) for n in ("Job", "Job.2024")] == [1, 1]


def test_rename_refuses_when_a_child_would_land_on_an_existing_folder(alice):
    alice.create_folder("Work")
    alice.create_folder("Work.2024")
    alice.create_folder("Job.2024")
    with pytest.raises(FolderError, match="Job.2024"):
        alice.rename_folder("Work", "Job")
    assert alice.has_folder("Work") and alice.has_folder("Work.2024")


def test_renaming_inbox_moves_its_messages(alice):
    inbox = alice.folder()
    for i in range(2):
        inbox.deliver(b"Subject: %d\n\nx\n" % i)
    alice.rename_folder("INBOX", "Old")
    assert len(alice.folder("Old")) == 2 and len(alice.folder("INBOX")) == 0


# ----------------------------------------------------------------------------- subscriptions

def test_subscriptions_default_to_inbox_and_the_special_folders(alice):
    assert alice.subscriptions() == ["INBOX", "Sent", "Drafts", "Trash", "Junk"]


def test_subscribe_and_unsubscribe(alice):
    alice.set_subscribed("News")  # subscribing is the default
    alice.set_subscribed("News", True)  # no duplicate
    alice.set_subscribed("inbox", False)  # INBOX in any case
    assert alice.subscriptions() == ["Sent", "Drafts", "Trash", "Junk", "News"]
    alice.set_subscribed("Inbox")
    alice.set_subscribed("Junk", False)
    alice.set_subscribed("Junk", False)
    assert alice.subscriptions() == ["Sent", "Drafts", "Trash", "News", "INBOX"]
    assert mode(alice.path / SUBSCRIPTIONFILE) == 0o600


# ----------------------------------------------------------------------------- UIDVALIDITY

def test_uidvalidity_comes_back_after_a_restart(store, alice):
    validity = alice.create_folder("Projects").uidvalidity
    assert reopened(store).account("alice").folder("Projects").uidvalidity == validity
    assert mode(store.root / LAST_VALIDITY_FILE) == 0o600


def test_uidvalidity_follows_the_clock_even_if_the_counter_file_is_lost(store, alice):
    import time
    before = int(time.time())
    alice.create_folder("Projects")
    (store.root / LAST_VALIDITY_FILE).unlink()
    assert reopened(store).account("alice").create_folder("Other").uidvalidity >= before


def test_a_store_that_lost_its_counter_learns_from_its_folders(store, alice, monkeypatch):
    monkeypatch.setattr("maillab.store.time.time", lambda: 1_700_000_000.0)  # a frozen clock
    old = alice.create_folder("Projects").uidvalidity
    (store.root / LAST_VALIDITY_FILE).unlink()
    again = reopened(store).account("alice")
    assert again.folder("Projects").uidvalidity == old  # seen here ...
    assert again.create_folder("Other").uidvalidity > old  # ... so never given again


@pytest.mark.parametrize("damage", ["", "garbage\n", "\n\n"])
def test_a_damaged_counter_file_counts_as_none(store, alice, monkeypatch, damage):
    monkeypatch.setattr("maillab.store.time.time", lambda: 1_700_000_000.0)
    (store.root / LAST_VALIDITY_FILE).write_text(damage)
    again = reopened(store).account("alice")
    assert again.create_folder("A").uidvalidity == 1_700_000_000
    assert again.create_folder("B").uidvalidity == 1_700_000_001


def test_a_damaged_uid_file_gives_the_folder_a_new_uidvalidity(store, alice):
    folder = alice.create_folder("Projects")
    (folder.path / UIDFILE).write_text("not numbers\n")
    again = reopened(store).account("alice").folder("Projects")
    assert again.uidvalidity > folder.uidvalidity


def test_an_unwritable_counter_file_still_gives_growing_uidvalidities(store, alice,
                                                                       monkeypatch):
    monkeypatch.setattr("maillab.store.time.time", lambda: 1_700_000_000.0)
    (store.root / (LAST_VALIDITY_FILE + ".tmp")).mkdir()  # writing the counter fails
    validities = [alice.create_folder(name).uidvalidity for name in ("A", "B", "C")]
    assert validities == sorted(set(validities))


# ----------------------------------------------------------------------------- files on disk

def test_message_files_are_private_and_carry_the_host_name(alice):
    info = alice.folder().deliver(b"Subject: x\n\nx\n")
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    assert f".{host}," in info.path.name
    assert mode(info.path) == 0o600


def test_draft_and_deleted_flags_are_maildir_letters(store, alice):
    info = alice.folder().deliver(b"Subject: x\n\nx\n", flags={"\\Draft", "\\Deleted"})
    assert info.path.name.endswith(":2,DT")
    again = reopened(store).account("alice").folder()
    assert again.flags_of(info.uid) == {"\\Draft", "\\Deleted"}


def test_keywords_survive_a_restart_in_a_private_file(store, alice):
    inbox = alice.folder()
    first = inbox.deliver(b"Subject: 1\n\nx\n").uid
    second = inbox.deliver(b"Subject: 2\n\nx\n").uid
    inbox.store_flags(first, {"$Work", "\\Seen"}, "add")
    inbox.store_flags(second, {"$Later"}, "add")
    inbox.expunge([second])
    again = reopened(store).account("alice").folder()
    assert again.flags_of(first) == {"$Work", "\\Seen"}
    assert again.defined_keywords() == ["$Work", "$Later"]  # in first-use order, kept
    assert mode(inbox.path / "maillab-keywords.json") == 0o600


@pytest.mark.parametrize("damage", ["{", "[1, 2]", '{"uids": [1, 2]}', '{"uids": {"x": []}}',
                                    '{"uids": {"1": 5}}'])
def test_a_damaged_keyword_file_is_ignored(store, alice, damage):
    inbox = alice.folder()
    uid = inbox.deliver(b"Subject: 1\n\nx\n", flags={"\\Seen"}).uid
    (inbox.path / "maillab-keywords.json").write_text(damage)
    again = reopened(store).account("alice").folder()
    assert again.flags_of(uid) == {"\\Seen"} and again.defined_keywords() == []


def test_maildirs_are_private_and_only_subfolders_are_marked(store, alice):
    for d in (alice.path, alice.path / "cur", alice.path / "new", alice.path / "tmp"):
        assert mode(d) == 0o700
    assert not (alice.path / "maildirfolder").exists()  # INBOX is the Maildir itself
    sent = alice.folder("Sent").path  # made on first look, as a Maildir++ subfolder
    assert mode(sent) == mode(sent / "cur") == 0o700
    assert mode(sent / "maildirfolder") == 0o600
    store.add_account("alice", "new", "example.com")  # its folders exist already: fine
    assert store.authenticate("alice", "new") is alice


def test_a_new_folders_first_uid_is_one(alice):
    folder = alice.create_folder("Projects")
    assert folder.uidnext == 1
    assert folder.deliver(b"Subject: x\n\nx\n").uid == 1 and folder.uidnext == 2


# ----------------------------------------------------------------------------- flags and reading

def test_store_flags_modes_return_the_flags_and_never_keep_recent(alice):
    inbox = alice.folder()
    uid = inbox.deliver(b"Subject: x\n\nx\n", flags={"\\Recent"}).uid
    assert inbox.flags_of(uid) == frozenset()  # \Recent is the session's, never stored
    other = inbox.deliver(b"Subject: y\n\ny\n", flags={"\\Recent", "$X"}).uid
    assert inbox.flags_of(other) == {"$X"}
    assert inbox.store_flags(uid, {"\\Seen", "$A", "\\Recent"}, "add") == {"\\Seen", "$A"}
    assert inbox.store_flags(uid, {"\\Seen"}, "add") == {"\\Seen", "$A"}  # nothing to change
    assert inbox.store_flags(uid, {"$A"}, "remove") == {"\\Seen"}
    assert inbox.store_flags(uid, {"\\Flagged", "\\Recent"}, "set") == {"\\Flagged"}
    assert inbox.flags_of(uid) == {"\\Flagged"} and "\\Recent" not in inbox.defined_keywords()
    with pytest.raises(ValueError):
        inbox.store_flags(uid, {"\\Seen"}, "toggle")
    with pytest.raises(KeyError):
        inbox.store_flags(999, {"\\Seen"}, "add")


def test_reading_an_unknown_or_vanished_message_is_a_key_error(alice):
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: x\n\nx\n")
    with pytest.raises(KeyError):
        inbox.read(info.uid + 1)
    os.unlink(info.path)  # removed behind the store's back
    with pytest.raises(KeyError):
        inbox.read(info.uid)


def test_deleting_a_folder_tells_its_listeners_each_message_went(alice):
    folder = alice.create_folder("Projects")
    uids = [folder.deliver(b"Subject: %d\n\nx\n" % i).uid for i in range(2)]
    heard = []
    folder.subscribe(heard.append)
    alice.delete_folder("Projects")
    assert [(c.kind, c.uid) for c in heard] == [("expunge", u) for u in uids]


def test_rename_moves_children_that_were_never_opened(store, alice):
    alice.create_folder("Work")
    alice.create_folder("Work.2024").deliver(b"Subject: c\n\nc\n")
    again = reopened(store).account("alice")
    again.folder("Work")  # the parent is open, its child is not
    again.rename_folder("Work", "Job")
    assert len(again.folder("Job.2024")) == 1 and not again.has_folder("Work.2024")


def test_expunged_messages_leave_the_keyword_file(alice):
    inbox = alice.folder()
    plain = inbox.deliver(b"Subject: 0\n\nx\n").uid
    inbox.expunge([plain])
    assert not (inbox.path / "maillab-keywords.json").exists()  # no keywords, no file
    keep = inbox.deliver(b"Subject: 1\n\nx\n").uid
    gone = inbox.deliver(b"Subject: 2\n\nx\n").uid
    inbox.store_flags(keep, {"$Keep"}, "add")
    inbox.store_flags(gone, {"$Gone"}, "add")
    inbox.expunge([gone])
    saved = json.loads((inbox.path / "maillab-keywords.json").read_text())
    assert saved["uids"] == {str(keep): ["$Keep"]}


# ----------------------------------------------------------------------------- files changed by hand

def test_files_changed_by_hand_show_in_a_selected_session(store, alice):
    """A learner renames, deletes and copies message files in a terminal; a client that has
    the folder selected hears of each at its next command, as of any other change."""
    from maillab.imap.testing import SAMPLES
    from maillab.net import ServerContext
    from maillab.transcript import Recorder
    from test_imap_core import Client
    inbox = alice.folder("INBOX")
    for sample in SAMPLES[:4]:
        inbox.deliver(sample)
    session = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com"))
    session.cmd("a LOGIN alice pw")
    session.cmd("a SELECT INBOX")
    first, second, third, _ = inbox.messages()
    os.rename(first.path, str(first.path).rsplit(":2,", 1)[0] + ":2,F")  # flagged by hand
    assert session.cmd("a NOOP") == (b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
                                     b"a OK NOOP completed\r\n")
    os.remove(second.path)
    assert session.cmd("a NOOP") == b"* 2 EXPUNGE\r\na OK NOOP completed\r\n"
    name = third.name.replace(third.name.split(".", 1)[0], "9" * 17, 1)  # same UID, later name
    with open(os.path.join(inbox.path, "cur", name), "wb") as copy:
        copy.write(third.path.read_bytes())
    assert session.cmd("a NOOP") == b"* 4 EXISTS\r\n* 3 RECENT\r\na OK NOOP completed\r\n"
    uids = session.cmd("a FETCH 1:* UID")
    assert b"* 2 FETCH (UID 3)\r\n" in uids  # the first file keeps its UID; the copy got a new one
    assert b"* 4 FETCH (UID 5)\r\n" in uids
    assert session.cmd("a NOOP") == b"a OK NOOP completed\r\n"  # and nothing more to tell


# ----------------------------------------------------------------------------- the saved listing

def aged(folder) -> None:
    """Make cur/ and new/ look unchanged for ten seconds (a listing of them is then trusted)."""
    import time
    then = time.time_ns() - 10_000_000_000 + 123_456  # not a whole second: the fine clock tick
    for d in ("cur", "new"):
        os.utime(folder.path / d, ns=(then, then))


def session_on(store):
    from maillab.net import ServerContext
    from maillab.transcript import Recorder
    from test_imap_core import Client
    session = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com"))
    assert b"a OK" in session.cmd("a LOGIN alice pw")
    return session


@pytest.fixture
def listed(store, alice, monkeypatch):
    """INBOX with three messages, all in cur/, the first \\Seen with the keyword $Work, saved
    as a listing when the store closed; (paths of the files, the store reopened)."""
    monkeypatch.setattr("maillab.store.LISTING_WORTH", 1)  # (a listing is saved from 1000 on)
    inbox = alice.folder()
    for i in range(3):
        inbox.deliver(b"Subject: %d\n\nx\n" % i)
    inbox.claim_recent()
    inbox.store_flags(1, {"\\Seen", "$Work"}, "add")
    paths = [m.path for m in inbox.messages()]
    aged(inbox)
    store.close()
    assert (inbox.path / "maillab-listing").exists()
    again = reopened(store)
    yield paths, again
    again.close()


def test_the_first_select_after_a_restart_is_answered_from_the_saved_listing(listed):
    paths, again = listed
    inbox = again.account("alice").folder()
    # UIDNEXT is past the UIDs listed (the UID file still says 1: deliveries do not save it)
    assert inbox.uidnext == 4
    assert inbox.defined_keywords() == ["$Work"]
    assert inbox.uids() == [1, 2, 3] and inbox.first_unseen() == 2
    session = session_on(again)
    out = session.cmd("a SELECT INBOX")
    assert b"* 3 EXISTS\r\n" in out and b"[UNSEEN 2]" in out and b"[UIDNEXT 4]" in out
    assert b"$Work" in out.split(b"FLAGS (", 1)[1].split(b")", 1)[0]
    os.remove(paths[1])  # the second message deleted in a terminal
    assert session.cmd("a NOOP") == b"* 2 EXPUNGE\r\na OK NOOP completed\r\n"
    assert session.cmd("a UID FETCH 1:* FLAGS") == (
        b"* 1 FETCH (UID 1 FLAGS (\\Seen $Work))\r\n* 2 FETCH (UID 3 FLAGS ())\r\n"
        b"a OK UID FETCH completed\r\n")


def test_a_listing_saved_before_a_change_by_hand_is_not_believed(listed):
    paths, again = listed
    os.remove(paths[1])
    inbox = again.account("alice").folder()
    assert inbox.uids() == [1, 3]
    assert [m.uid for m in inbox.messages()] == [1, 3]


def test_without_a_listing_uidnext_and_keywords_come_from_the_files(listed):
    paths, again = listed
    again.close()
    listing = paths[0].parent.parent / "maillab-listing"
    os.remove(listing)
    assert reopened(again).account("alice").folder().uidnext == 4  # (the UID file says 1)
    os.remove(listing)  # (saved again by that first look)
    assert reopened(again).account("alice").folder().defined_keywords() == ["$Work"]


def test_the_first_unseen_of_an_all_seen_listing_is_none(store, alice, monkeypatch):
    monkeypatch.setattr("maillab.store.LISTING_WORTH", 1)
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n", flags={"\\Seen"})
    inbox.claim_recent()
    aged(inbox)
    store.close()
    assert (inbox.path / "maillab-listing").exists()  # (UID 1 is a UID like any other)
    again = reopened(store)
    assert again.account("alice").folder().first_unseen() is None
    out = session_on(again).cmd("a SELECT INBOX")
    assert b"* 1 EXISTS\r\n" in out and b"UNSEEN" not in out
    again.close()


# ----------------------------------------------------------------------------- more changes by hand

def test_files_added_to_and_removed_from_new_by_hand_are_noticed(alice):
    inbox = alice.folder()
    first, second = (inbox.deliver(b"Subject: %d\n\nx\n" % i) for i in range(2))
    assert first.recent and second.recent
    os.remove(first.path)  # from new/
    assert [m.uid for m in inbox.messages()] == [2]
    (inbox.path / "new" / "dropped.eml").write_bytes(b"Subject: by hand\n\nhi\n")
    got = inbox.messages()
    assert [(m.uid, m.recent) for m in got] == [(2, True), (3, True)]
    assert inbox.read(3) == b"Subject: by hand\r\n\r\nhi\r\n"


def test_a_file_of_ours_with_a_new_uid_put_back_by_hand_is_announced(store, alice):
    inbox = alice.folder()
    for i in range(2):
        inbox.deliver(b"Subject: %d\n\nx\n" % i)
    session = session_on(store)
    session.cmd("a SELECT INBOX")
    name = "1700000000.M1P1.example,U=7,W=14:2,S"
    (inbox.path / "cur" / name).write_bytes(b"Subject: 7\n\nx\n")
    assert session.cmd("a NOOP") == b"* 3 EXISTS\r\n* 2 RECENT\r\na OK NOOP completed\r\n"
    assert session.cmd("a FETCH 3 (UID FLAGS)") == (b"* 3 FETCH (UID 7 FLAGS (\\Seen))\r\n"
                                                    b"a OK FETCH completed\r\n")


def test_a_name_of_ours_with_its_parts_in_another_order_keeps_its_uid(store, alice):
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n")
    (inbox.path / "cur" / "1700000000.M1P1.example,W=14,U=5:2,S").write_bytes(b"Subject: 5\n\nx\n")
    inbox = reopened(store).account("alice").folder()
    assert [(m.uid, m.flags) for m in inbox.messages()] == [(1, frozenset()),
                                                            (5, {"\\Seen"})]


def test_a_file_name_with_a_line_end_is_read_whole(store, alice):
    inbox = alice.folder()
    (inbox.path / "cur" / "junk\n1700000000.M1P1.example,U=7,W=3:2,").write_bytes(b"hi\n")
    inbox = reopened(store).account("alice").folder()
    [only] = inbox.messages()
    assert only.uid == 7 and inbox.read(7) == b"hi\r\n"  # the file as it is named


def test_of_two_files_with_one_uid_the_earlier_name_keeps_it(store, alice):
    """A copy of a message file (a learner's backup) carries the original's UID: the file whose
    name sorts first (names start with the delivery time) keeps it, wherever each lies."""
    inbox = alice.folder()
    (inbox.path / "cur" / "1700000009.M1P1.example,U=1,W=7:2,").write_bytes(b"later\n\n")
    (inbox.path / "new" / "1700000001.M1P1.example,U=1,W=9").write_bytes(b"earlier\n\n")
    inbox = reopened(store).account("alice").folder()
    assert [m.uid for m in inbox.messages()] == [1, 2]
    assert inbox.read(1) == b"earlier\r\n\r\n" and inbox.read(2) == b"later\r\n\r\n"


def test_another_file_under_the_same_uid_brings_its_own_date(alice):
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: 1\n\nx\n", internaldate=1_600_000_000)
    assert inbox.get(1).internaldate == 1_600_000_000
    other = inbox.path / "cur" / "1700000000.M9P9.example,U=1,W=14:2,S"
    os.rename(info.path, other)
    os.utime(other, (1_700_000_000, 1_700_000_000))
    assert [(m.uid, m.flags) for m in inbox.messages()] == [(1, {"\\Seen"})]
    assert inbox.get(1).internaldate == 1_700_000_000


def test_a_folder_whose_directories_were_removed_by_hand_is_empty(store, alice):
    import shutil
    folder = alice.create_folder("Projects")
    folder.deliver(b"Subject: 1\n\nx\n")
    shutil.rmtree(folder.path / "new")
    assert folder.messages() == []
    other = alice.create_folder("Other")
    other.deliver(b"Subject: 1\n\nx\n")
    session = session_on(store)
    assert b"* 1 EXISTS" in session.cmd("a SELECT Other")
    shutil.rmtree(other.path)
    assert session.cmd("a NOOP") == b"* 1 EXPUNGE\r\na OK NOOP completed\r\n"


# ----------------------------------------------------------------------------- quota and recipients

def test_room_counts_down_to_zero_and_never_below(store, alice):
    store.max_messages = 3
    inbox = alice.folder()
    assert inbox.room() == 3
    for i in range(2):
        inbox.deliver(b"Subject: %d\n\nx\n" % i)
    assert inbox.room() == 1
    for i in range(3):  # deliver() itself does not refuse: SMTP and APPEND ask room() first
        inbox.deliver(b"Subject: %d\n\nx\n" % i)
    assert inbox.room() == 0


def test_postmaster_goes_to_its_own_holder_else_the_domains_first_account(store, alice):
    bob = store.add_account("bob", "pw", "example.org")
    store.add_account("bert", "pw", "example.org")
    carol = store.add_account("carol", "pw", "example.com", ["carol@example.com",
                                                             "postmaster@example.com"])
    assert store.find_recipient(" <Bob@Example.ORG> ") is bob
    assert store.find_recipient("postmaster@example.com") is carol  # the address's own holder
    assert store.find_recipient("<PostMaster@Example.org>") is bob  # the domain's first account
    assert store.find_recipient("postmaster@example.net") is None  # no such domain here
    assert store.find_recipient("nobody@example.org") is None  # only postmaster is an alias
    assert store.authenticate("postmaster@example.org", "pw") is None  # never a login


# ----------------------------------------------------------------------------- dates, the index file, listeners

def test_internal_dates_come_back_after_restarts_from_the_files_then_the_index(store, alice):
    inbox = alice.folder()
    for i, when in enumerate((1_600_000_000, 1_650_000_000)):
        inbox.deliver(b"Subject: %d\n\nx\n" % i, internaldate=when)
    first = reopened(store).account("alice").folder()  # dates not known: looked up
    assert [m.internaldate for m in first.messages()] == [1_600_000_000, 1_650_000_000]
    first.close_index()
    assert (inbox.path / "maillab-index.sqlite").exists()  # what was learned is kept
    again = reopened(store).account("alice").folder()
    assert [m.internaldate for m in again.messages()] == [1_600_000_000, 1_650_000_000]
    again.close_index()


def test_the_date_of_a_file_removed_meanwhile_is_zero_until_the_next_look(store, alice):
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: 1\n\nx\n", internaldate=1_600_000_000)
    again = reopened(store).account("alice").folder()
    assert len(again) == 1
    os.remove(info.path)
    assert again.get(1).internaldate == 0.0  # (no error: the next look tells it is gone)
    assert len(again) == 0


def test_flags_stored_on_a_file_removed_by_hand_are_a_key_error(alice):
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: 1\n\nx\n")
    assert len(inbox) == 1
    os.remove(info.path)
    with pytest.raises(KeyError):
        inbox.store_flags(1, {"\\Seen"}, "add")
    assert len(inbox) == 0


def test_a_copy_takes_the_originals_description_along(alice):
    from maillab.index import FIELDS
    inbox, sent = alice.folder(), alice.folder("Sent")
    uid = inbox.deliver(b"Subject: hello\n\nx\n").uid  # (no From: its field is None)
    wanted = ("envelope", "h_subject", "h_date")
    described = inbox.described([uid], wanted)[uid]
    inbox.note_plain([(1, uid, inbox.get(uid).base)])  # (a row is copied once a search saw it)
    copy = inbox.copy_to(uid, sent)
    sent.close_index()
    os.remove(copy.path)  # (behind the store's back) the copy is not read: its row came along
    assert sent.described([copy.uid], wanted)[copy.uid] == described
    assert sent.described([copy.uid], FIELDS)[copy.uid][FIELDS.index("plain")] == 1
    inbox.close_index()


def test_unsubscribing_a_listener_twice_or_never_subscribed_is_harmless(alice):
    inbox = alice.folder()
    heard = []
    inbox.subscribe(heard.append)
    inbox.unsubscribe(heard.append)
    inbox.unsubscribe(heard.append)
    inbox.unsubscribe(print)
    inbox.deliver(b"Subject: 1\n\nx\n")
    assert heard == []


def test_a_listing_that_cannot_be_written_does_not_stop_the_store_closing(store, alice,
                                                                           monkeypatch):
    monkeypatch.setattr("maillab.store.LISTING_WORTH", 1)
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n")
    (inbox.path / "maillab-listing.tmp").mkdir()  # writing the listing fails
    aged(inbox)
    store.close()
    assert not (inbox.path / "maillab-listing").exists()
    (inbox.path / "maillab-listing.tmp").rmdir()
    assert [m.uid for m in reopened(store).account("alice").folder().messages()] == [1]


def test_without_sqlite3_descriptions_are_worked_out_from_the_files(alice, monkeypatch):
    def no_sqlite(*args):
        raise ImportError("a Python built without sqlite3")
    monkeypatch.setattr("maillab.index.FolderIndex", no_sqlite)
    inbox = alice.folder()
    uid = inbox.deliver(b"Subject: hello\n\nx\n").uid
    assert inbox.described([uid], ("h_subject",)) == {uid: ("hello",)}
    assert inbox.described([uid], ("h_subject",)) == {uid: ("hello",)}


def test_a_message_removed_by_hand_has_no_description(alice):
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: hello\n\nx\n")
    assert len(inbox) == 1
    os.remove(info.path)
    assert inbox.described([info.uid], ("h_subject",)) == {}
    inbox.close_index()


def test_keywords_stored_in_a_folder_removed_by_hand_are_no_error(alice):
    import shutil
    folder = alice.create_folder("Projects")
    uid = folder.deliver(b"Subject: 1\n\nx\n").uid
    assert len(folder) == 1
    shutil.rmtree(folder.path)
    assert folder.store_flags(uid, {"$Later"}, "add") == {"$Later"}  # (not saved: nowhere to)
    assert len(folder) == 0


def test_a_broken_listener_loses_no_mail_and_others_still_hear(alice):
    inbox = alice.folder()
    heard = []

    def broken(change):
        raise RuntimeError("a session that went away badly")
    inbox.subscribe(broken)
    inbox.subscribe(heard.append)
    info = inbox.deliver(b"Subject: 1\n\nx\n")
    assert [(c.kind, c.uid) for c in heard] == [("exists", info.uid)]
    assert inbox.read(info.uid) == b"Subject: 1\r\n\r\nx\r\n"


def test_files_of_other_programs_are_taken_in_with_the_flags_their_names_say(alice):
    inbox = alice.folder()
    assert len(inbox) == 0
    (inbox.path / "cur" / "read.eml:2,FS").write_bytes(b"Subject: a\n\nx\n")
    (inbox.path / "new" / "odd:name").write_bytes(b"Subject: b\n\nx\n")  # not a Maildir name
    (inbox.path / "new" / "far,U=1000001,W=14").write_bytes(b"Subject: c\n\nx\n")  # UID absurd
    got = {inbox.read(m.uid): m.flags for m in inbox.messages()}
    assert got == {b"Subject: a\r\n\r\nx\r\n": {"\\Flagged", "\\Seen"},
                   b"Subject: b\r\n\r\nx\r\n": frozenset(), b"Subject: c\r\n\r\nx\r\n": frozenset()}
    assert sorted(m.uid for m in inbox.messages()) == [1, 2, 3]


def test_a_change_by_hand_after_a_trusted_listing_is_seen(store, alice):
    inbox = alice.folder()
    infos = [inbox.deliver(b"Subject: %d\n\nx\n" % i) for i in range(2)]
    aged(inbox)
    again = reopened(store).account("alice").folder()
    assert len(again) == 2  # listed long after the last change: the listing is trusted
    os.remove(infos[0].path)
    assert [m.uid for m in again.messages()] == [2]


def test_another_file_under_the_same_uid_is_described_and_dated_anew(store, alice):
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: old\n\nx\n", internaldate=1_600_000_000)
    again = reopened(store).account("alice").folder()
    assert again.get(1).internaldate == 1_600_000_000  # (now a row of the index file)
    assert again.described([1], ("h_subject",)) == {1: ("old",)}
    other = inbox.path / "cur" / "1700000000.M9P9.example,U=1,W=14:2,S"
    os.remove(info.path)
    other.write_bytes(b"Subject: new\n\nx\n")
    os.utime(other, (1_700_000_000, 1_700_000_000))
    assert [(m.uid, m.flags) for m in again.messages()] == [(1, {"\\Seen"})]
    assert again.get(1).internaldate == 1_700_000_000  # (not the old file's row)
    assert again.described([1], ("h_subject",)) == {1: ("new",)}
    again.close_index()


def test_a_uid_seen_at_a_start_is_never_given_again(store, alice):
    inbox = alice.folder()
    infos = [inbox.deliver(b"Subject: %d\n\nx\n" % i) for i in range(3)]
    assert reopened(store).account("alice").folder().uidnext == 4  # (deliveries do not save it)
    os.remove(infos[2].path)  # while no store runs
    assert reopened(store).account("alice").folder().deliver(b"Subject: 4\n\nx\n").uid == 4


@pytest.mark.parametrize("messages, saved", [(1, False), (2, True)])
def test_a_listing_is_saved_for_folders_from_a_size_on(store, alice, monkeypatch, messages, saved):
    monkeypatch.setattr("maillab.store.LISTING_WORTH", 2)
    inbox = alice.folder()
    for i in range(messages):
        inbox.deliver(b"Subject: %d\n\nx\n" % i)
    aged(inbox)
    store.close()
    assert (inbox.path / "maillab-listing").exists() == saved


def test_a_small_folder_with_an_index_file_keeps_a_listing(store, alice):
    inbox, sent = alice.folder(), alice.folder("Sent")
    for folder in (inbox, sent):
        folder.deliver(b"Subject: 1\n\nx\n")
        aged(folder)
    assert inbox.described([1], ("h_subject",)) == {1: ("1",)}  # (the index file is made)
    aged(inbox)
    store.close()
    assert (inbox.path / "maillab-listing").exists()
    assert not (sent.path / "maillab-listing").exists()


def test_recent_messages_are_claimed_at_the_first_select_after_a_restart(store, alice,
                                                                         monkeypatch):
    monkeypatch.setattr("maillab.store.LISTING_WORTH", 1)
    inbox = alice.folder()
    for i in range(2):
        inbox.deliver(b"Subject: %d\n\nx\n" % i)  # into new/: no client saw them yet
    aged(inbox)
    store.close()
    assert (inbox.path / "maillab-listing").exists()
    again = reopened(store)
    out = session_on(again).cmd("a SELECT INBOX")
    assert b"* 2 EXISTS\r\n* 2 RECENT\r\n" in out
    again.close()


def test_a_snapshot_gives_each_message_with_its_keywords(alice):
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n", flags={"\\Seen", "$Later"})
    inbox.deliver(b"Subject: 2\n\nx\n")
    assert inbox.defined_keywords() == ["$Later"]  # a delivery defines its keywords
    assert [(info.uid, flags) for info, flags in inbox.snapshot()] == [
        (1, {"\\Seen", "$Later"}), (2, frozenset())]


def test_nothing_is_recent_at_a_select_from_a_listing_with_nothing_in_new(listed):
    _, again = listed
    assert again.account("alice").folder().claim_recent() == []


def test_a_recent_message_removed_by_hand_is_not_claimed(alice):
    inbox = alice.folder()
    infos = [inbox.deliver(b"Subject: %d\n\nx\n" % i) for i in range(2)]
    os.remove(infos[0].path)
    assert inbox.claim_recent() == [2]
    assert os.listdir(inbox.path / "new") == []


def test_re_adding_an_account_sets_or_clears_its_apop_secret(store, alice):
    assert alice.apop_secret is None
    assert store.add_account("alice", "new", "example.com", apop=True).apop_secret == "new"
    assert store.add_account("alice", "new", "example.com").apop_secret is None


def test_deleting_the_selected_folder_leaves_no_folder_selected(store, alice):
    alice.create_folder("Projects").deliver(b"Subject: 1\n\nx\n")
    session = session_on(store)
    assert b"* 1 EXISTS" in session.cmd("a SELECT Projects")
    assert session.cmd("a DELETE Projects") == b"a OK DELETE completed\r\n"
    assert session.cmd("a FETCH 1 UID").startswith(b"a BAD")


def test_keywords_given_at_delivery_survive_a_restart_and_expunge_says_what_went(store, alice):
    inbox = alice.folder()
    uid = inbox.deliver(b"Subject: 1\n\nx\n", flags={"$Later"}).uid
    other = inbox.deliver(b"Subject: 2\n\nx\n").uid
    assert reopened(store).account("alice").folder().flags_of(uid) == {"$Later"}
    assert inbox.expunge([other, 99]) == [other]


def test_a_file_put_back_after_its_expunge_gets_a_new_uid(alice):
    """A learner restores a message file (from a backup, say) whose UID was expunged: it is a new
    message with a new UID at the end, never the old UID again (RFC 3501 2.3.1.1). Before: it
    took UID 2 back, between 1 and 3, while a selected client was told it came last."""
    import shutil
    inbox = alice.folder("INBOX")
    for i in range(3):
        inbox.deliver(b"Subject: m%d\n\nbody\n" % i)
    [second] = [m for m in inbox.messages() if m.uid == 2]
    backup = alice.store.root / "backup"
    shutil.copy(second.file, backup)
    inbox.expunge([2])
    assert inbox.uids() == [1, 3]
    shutil.copy(backup, second.file)  # back under its old name
    inbox.refresh()
    assert inbox.uids() == [1, 3, 4]
    assert inbox.read(4, crlf=False) == b"Subject: m1\n\nbody\n"


def test_a_listing_that_cannot_be_written_does_not_stop_reading_the_folder(alice, monkeypatch):
    """The saved listing is only a shortcut: a full disk or a read-only folder when it is written
    (on the first listing of a big folder) must not make SELECT or delivery fail. Before: the
    OSError came out of the folder's first load."""
    monkeypatch.setattr("maillab.store.LISTING_WORTH", 1)
    inbox = alice.folder("INBOX")
    inbox.deliver(b"Subject: one\n\nbody\n")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("maillab.index.write_listing", disk_full)
    time.sleep(0.05)  # past a clock tick: the listing is trusted and would be saved
    fresh = type(inbox)(alice, "INBOX", inbox.path)  # a new look at the same folder
    assert fresh.uids() == [1]
    fresh.deliver(b"Subject: two\n\nbody\n")
    assert fresh.uids() == [1, 2]


# ----------------------------------------------------------------------------- more kills (issue 16)

def index_file(folder):
    """The folder's index file, opened on its own (what it holds on disk)."""
    from maillab.index import FolderIndex
    return FolderIndex(folder.path, folder.uidvalidity)


@pytest.mark.parametrize("error", [OSError, AttributeError, TypeError])
def test_passwords_hash_where_the_c_library_has_no_malloc_tuning(monkeypatch, error):
    """Not glibc (musl, macOS, Windows): mallopt() is missing or CDLL(None) is refused."""
    import ctypes

    def no_glibc(*args, **kwargs):
        raise error("no mallopt here")
    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    monkeypatch.setattr("maillab.store._mmap_threshold_fixed", False)
    stored = hash_password("pw", n=N)
    assert verify_password("pw", stored) and not verify_password("PW", stored)


def test_names_whose_uid_or_size_is_not_a_number_are_taken_in_as_new(alice):
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n")
    for name in ("1700000000.M1P1.example,U=x7,W=14:2,S", "1700000000.M2P1.example,W=1e3,U=9"):
        (inbox.path / "cur" / name).write_bytes(b"Subject: hand\n\nx\n")
    got = [(m.uid, m.flags) for m in inbox.messages()]
    assert got == [(1, frozenset()), (2, {"\\Seen"}), (3, frozenset())]


def test_files_of_other_programs_get_uids_in_the_order_they_were_written(alice):
    inbox = alice.folder()
    assert len(inbox) == 0
    for name, when in (("b-first.eml", 1_600_000_000), ("a-second.eml", 1_600_000_100),
                       ("c-third.eml", 1_600_000_050)):
        path = inbox.path / "new" / name
        path.write_bytes(name.encode() + b"\n")
        os.utime(path, (when, when))
    assert [inbox.read(m.uid, crlf=False) for m in inbox.messages()] == [
        b"b-first.eml\n", b"c-third.eml\n", b"a-second.eml\n"]


def test_a_dangling_link_in_new_is_no_message_and_no_error(alice):
    inbox = alice.folder()
    assert len(inbox) == 0
    os.symlink(inbox.path / "nowhere", inbox.path / "new" / "broken-link")
    (inbox.path / "new" / "real.eml").write_bytes(b"Subject: real\n\nx\n")
    [only] = inbox.messages()
    assert inbox.read(only.uid) == b"Subject: real\r\n\r\nx\r\n"


def test_a_file_that_cannot_be_renamed_is_taken_in_at_a_later_look(alice, monkeypatch):
    """A directory a learner made read-only (or a file removed while being taken in): the file
    stays out of the folder, without an error, until it can be given its name."""
    inbox = alice.folder()
    assert len(inbox) == 0
    (inbox.path / "new" / "by-hand.eml").write_bytes(b"Subject: hand\n\nx\n")
    rename = os.rename

    def read_only(src, dst, *args, **kwargs):
        if str(src).endswith("by-hand.eml"):
            raise PermissionError(13, "Permission denied", src)
        return rename(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "rename", read_only)
    assert inbox.messages() == []
    monkeypatch.setattr(os, "rename", rename)
    [only] = inbox.messages()
    assert inbox.read(only.uid) == b"Subject: hand\r\n\r\nx\r\n"


def test_another_file_under_a_described_uid_is_described_anew_after_a_restart(store, alice):
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: old\n\nx\n")
    assert inbox.described([1], ("h_subject",)) == {1: ("old",)}  # (a row in the index file)
    store.close()
    os.remove(info.path)
    (inbox.path / "cur" / "1700000000.M9P9.example,U=1,W=16:2,S").write_bytes(b"Subject: new\n\nx\n")
    again = reopened(store)
    assert again.account("alice").folder().described([1], ("h_subject",)) == {1: ("new",)}
    again.close()


def test_descriptions_are_kept_in_the_index_file(store, alice):
    inbox = alice.folder()
    uid = inbox.deliver(b"Subject: kept\n\nx\n").uid
    assert inbox.described([uid], ("h_subject",)) == {uid: ("kept",)}
    store.close()
    db = index_file(inbox)
    assert db.fields([uid], ("h_subject",)) == {uid: (inbox.get(uid).base, "kept")}
    db.close()


def test_a_corrupt_index_file_is_made_again(store, alice):
    inbox = alice.folder()
    uid = inbox.deliver(b"Subject: hello\n\nx\n").uid
    store.close()
    (inbox.path / "maillab-index.sqlite").write_bytes(b"not a database, a learner's file\n" * 200)
    again = reopened(store)
    assert again.account("alice").folder().described([uid], ("h_subject",)) == {uid: ("hello",)}
    again.close()
    db = index_file(inbox)
    assert db.fields([uid], ("h_subject",)) == {uid: (inbox.get(uid).base, "hello")}
    db.close()


@pytest.mark.parametrize("damage", ["a directory", "connect fails"])
def test_without_a_usable_index_file_every_answer_comes_from_the_files(store, alice, monkeypatch,
                                                                        damage):
    inbox = alice.folder()
    first = inbox.deliver(b"Subject: one\n\nx\n", internaldate=1_600_000_000).uid
    if damage == "a directory":
        (inbox.path / "maillab-index.sqlite").mkdir()  # SQLite cannot open it, nor can it go
    else:
        import sqlite3

        def refused(*args, **kwargs):
            raise sqlite3.OperationalError("unable to open database file")
        monkeypatch.setattr(sqlite3, "connect", refused)
    again = reopened(store).account("alice").folder()
    assert again.get(first).internaldate == 1_600_000_000
    assert again.described([first], ("h_subject",)) == {first: ("one",)}
    second = again.deliver(b"Subject: two\n\nx\n").uid
    assert again.described([first, second], ("h_subject",)) == {first: ("one",),
                                                                 second: ("two",)}
    again.note_plain([(1, first, again.get(first).base)])
    assert again.expunge([first]) == [first]
    assert again.uids() == [second]


def test_a_select_from_a_listing_hears_of_files_added_by_hand(listed):
    paths, again = listed
    session = session_on(again)
    assert b"* 3 EXISTS\r\n" in session.cmd("a SELECT INBOX")  # told from the listing
    (paths[0].parent.parent / "new" / "by-hand.eml").write_bytes(b"Subject: 4\n\nx\n")
    assert session.cmd("a NOOP") == b"* 4 EXISTS\r\n* 1 RECENT\r\na OK NOOP completed\r\n"


def test_keywords_of_messages_removed_while_stopped_leave_the_keyword_file(listed):
    paths, again = listed
    os.remove(paths[0])  # UID 1, the one with $Work
    inbox = again.account("alice").folder()
    assert inbox.uids() == [2, 3]
    inbox.store_flags(2, {"$Later"}, "add")
    saved = json.loads((inbox.path / "maillab-keywords.json").read_text())
    assert saved["uids"] == {"2": ["$Later"]}


def test_one_recent_message_is_claimed_at_the_first_select_after_a_restart(store, alice,
                                                                          monkeypatch):
    monkeypatch.setattr("maillab.store.LISTING_WORTH", 1)
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n")
    inbox.claim_recent()
    inbox.deliver(b"Subject: 2\n\nx\n")  # the only one in new/
    aged(inbox)
    store.close()
    assert (inbox.path / "maillab-listing").exists()
    again = reopened(store)
    assert again.account("alice").folder().claim_recent() == [2]
    again.close()


def test_flags_stored_on_a_file_removed_by_hand_tell_it_went_at_once(alice):
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: 1\n\nx\n")
    heard = []
    inbox.subscribe(heard.append)
    os.remove(info.path)
    with pytest.raises(KeyError):
        inbox.store_flags(info.uid, {"\\Seen"}, "add")
    assert [(c.kind, c.uid) for c in heard] == [("expunge", info.uid)]
    assert inbox.get(info.uid) is None


def test_expunging_a_message_removed_by_hand_is_no_error(alice):
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: 1\n\nx\n")
    assert len(inbox) == 1
    os.remove(info.path)
    assert inbox.expunge([info.uid]) == [info.uid]
    assert inbox.uids() == []


def test_an_account_whose_maildir_was_removed_by_hand_gets_an_empty_one(store, alice):
    import shutil
    alice.folder_names()  # (the special folders made)
    alice.folder().deliver(b"Subject: 1\n\nx\n")
    store.close()
    shutil.rmtree(alice.path)
    again = reopened(store).account("alice")
    assert again.folder_names() == ["INBOX"]
    assert again.folder().deliver(b"Subject: 2\n\nx\n").uid == 1
    assert again.create_folder("Projects").uidnext == 1


def test_mail_to_inbox_makes_no_special_folders(store, alice):
    assert alice.has_folder("inbox")
    alice.folder("Inbox").deliver(b"Subject: 1\n\nx\n")
    assert not (alice.path / ".Sent").exists()
    saved = json.loads((store.root / "accounts.json").read_text())["accounts"][0]
    assert sorted(saved["folders_to_make"]) == sorted(SPECIAL_USE)


def open_index_files(root) -> list[str]:
    """The folders (names) whose index file this process holds open, under ``root``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)) and target.endswith("/maillab-index.sqlite"):
            found.append(os.path.basename(os.path.dirname(target)))
    return sorted(found)


def test_only_the_most_recently_used_index_files_stay_open(store, alice, monkeypatch):
    monkeypatch.setattr("maillab.store.OPEN_INDEXES", 2)
    folders = {name: alice.create_folder(name) for name in ("A", "B", "C")}
    for folder in folders.values():
        folder.deliver(b"Subject: x\n\nx\n")

    def use(name):
        assert folders[name].described([1], ("h_subject",)) == {1: ("x",)}
    use("A")
    use("B")
    assert open_index_files(store.root) == [".A", ".B"]
    use("A")
    use("C")  # B is the least recently used
    assert open_index_files(store.root) == [".A", ".C"]
    store.close()
    assert open_index_files(store.root) == []


# ----------------------------------------------------------------------------- bugs the survivors showed

def test_a_folder_that_could_not_be_listed_keeps_its_uids_once_it_can(store, alice, monkeypatch):
    """cur/ made unreadable for a moment (a learner's chmod) when the folder is first loaded: once
    it can be listed, every message has its UID still. Before: the failed load left an empty
    folder in memory, the next look took each file (its UID below UIDNEXT) for one put back
    after its EXPUNGE, and UIDs 1, 2, 3 became 4, 5, 6."""
    inbox = alice.folder()
    for i in range(3):
        inbox.deliver(b"Subject: %d\n\nx\n" % i)
    inbox.claim_recent()
    assert reopened(store).account("alice").folder().uidnext == 4  # (now in the UID file)
    folder = reopened(store).account("alice").folder()
    listdir = os.listdir

    def unreadable(path):
        if str(path).endswith("/cur"):
            raise PermissionError(13, "Permission denied", path)
        return listdir(path)
    monkeypatch.setattr(os, "listdir", unreadable)
    with pytest.raises(PermissionError):
        folder.uids()
    monkeypatch.setattr(os, "listdir", listdir)
    assert folder.uids() == [1, 2, 3]
    assert folder.read(1) == b"Subject: 0\r\n\r\nx\r\n"


def test_a_date_looked_up_while_its_file_was_renamed_by_hand_is_found_at_the_next_look(store,
                                                                                       alice):
    """A learner flags a message in a terminal (renames its file) just before a client asks for
    its date: the next look at the folder finds the file, and the date. Before: the date stayed
    0 (1970) for the rest of the run."""
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: 1\n\nx\n", internaldate=1_600_000_000)
    again = reopened(store).account("alice").folder()
    assert len(again) == 1  # (loaded; no date looked up yet)
    os.rename(info.path, inbox.path / "cur" / (info.base + ":2,S"))
    again.get(1).internaldate  # looked up under the old name: not found (0.0 for now)
    assert [(m.flags, m.internaldate) for m in again.messages()] == [({"\\Seen"}, 1_600_000_000)]
    again.close_index()
    assert reopened(store).account("alice").folder().get(1).internaldate == 1_600_000_000


def test_an_expunged_message_leaves_the_index_file(store, alice):
    """EXPUNGE removes a message for good: its description (subject, addresses) leaves the
    folder's index file too, also when nothing opened that file since the start (a POP3 DELE).
    Before: the second case kept the row."""
    inbox = alice.folder()
    uids = [inbox.deliver(b"Subject: secret %d\n\nx\n" % i).uid for i in range(2)]
    assert inbox.described(uids, ("h_subject",)) == {1: ("secret 0",), 2: ("secret 1",)}
    assert inbox.expunge([1]) == [1]
    store.close()
    again = reopened(store)
    assert again.account("alice").folder().expunge([2]) == [2]
    again.close()
    db = index_file(inbox)
    assert db.uids() == set()
    db.close()
    sent = alice.folder("Sent")  # never described: an expunge makes it no index file
    assert sent.expunge([sent.deliver(b"Subject: 1\n\nx\n").uid]) == [1]
    assert not (sent.path / "maillab-index.sqlite").exists()


def test_a_file_named_with_uid_zero_is_given_a_real_uid(store, alice):
    """UIDs start at 1 (RFC 3501 2.3.1.1): a file a learner names ...,U=0,... is a new message.
    Before: it was listed with UID 0."""
    inbox = alice.folder()
    (inbox.path / "cur" / "1700000000.M1P1.example,U=0,W=4:2,S").write_bytes(b"hi\n\n")
    inbox = reopened(store).account("alice").folder()
    assert [(m.uid, m.flags) for m in inbox.messages()] == [(1, {"\\Seen"})]
    assert inbox.read(1) == b"hi\r\n\r\n"


def test_hidden_files_in_cur_and_new_are_no_messages(alice):
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n")
    (inbox.path / "new" / ".1.eml.swp").write_bytes(b"an editor's swap file\n")
    (inbox.path / "cur" / ".hidden").write_bytes(b"x\n")
    assert [m.uid for m in inbox.messages()] == [1]
    assert (inbox.path / "new" / ".1.eml.swp").exists()  # left as it is


def test_on_a_whole_second_clock_a_listing_is_trusted_only_two_seconds_on(alice):
    """A file system that stamps whole seconds: a change within the same second leaves the
    directory's mtime as it was, so a listing less than two seconds after its last change is
    made again at the next look (a fine clock: 20 ms)."""
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n")
    second = (time.time_ns() // 1_000_000_000 - 1) * 1_000_000_000  # a second or so ago
    for d in ("cur", "new"):
        os.utime(inbox.path / d, ns=(second, second))
    assert len(inbox) == 1  # listed now
    (inbox.path / "new" / "by-hand.eml").write_bytes(b"Subject: 2\n\nx\n")
    os.utime(inbox.path / "new", ns=(second, second))  # in that same second
    assert len(inbox) == 2


def test_another_file_under_a_described_uid_is_described_anew(alice):
    inbox = alice.folder()
    info = inbox.deliver(b"Subject: old\n\nx\n")
    assert inbox.described([1], ("h_subject",)) == {1: ("old",)}
    os.remove(info.path)
    (inbox.path / "cur" / "1700000000.M9P9.example,U=1,W=16:2,S").write_bytes(b"Subject: new\n\nx\n")
    assert [m.uid for m in inbox.messages()] == [1]
    assert inbox.described([1], ("h_subject",)) == {1: ("new",)}
    inbox.close_index()


def test_a_file_of_ours_with_the_next_uid_keeps_its_name(alice):
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n")
    assert inbox.uidnext == 2
    name = "1700000000.M1P1.example,U=2,W=15:2,S"
    (inbox.path / "cur" / name).write_bytes(b"Subject: 2\n\nx\n")
    assert [(m.uid, m.name) for m in inbox.messages()][1] == (2, name)


def test_keywords_of_a_file_removed_by_hand_leave_the_keyword_file(alice):
    inbox = alice.folder()
    infos = [inbox.deliver(b"Subject: %d\n\nx\n" % i, flags={"$K%d" % i}) for i in range(2)]
    os.remove(infos[0].path)
    assert inbox.uids() == [2]
    inbox.store_flags(2, {"$More"}, "add")
    saved = json.loads((inbox.path / "maillab-keywords.json").read_text())
    assert saved["uids"] == {"2": ["$K1", "$More"]}


def test_files_of_other_programs_written_in_one_tick_get_uids_in_name_order(alice):
    inbox = alice.folder()
    assert len(inbox) == 0
    for folder, name in (("cur", "b.eml"), ("new", "a.eml")):
        path = inbox.path / folder / name
        path.write_bytes(name.encode() + b"\n")
        os.utime(path, (1_600_000_000, 1_600_000_000))
    assert [inbox.read(m.uid, crlf=False) for m in inbox.messages()] == [b"a.eml\n", b"b.eml\n"]


def test_no_listing_is_saved_of_directories_changed_within_a_tick(store, alice, monkeypatch):
    monkeypatch.setattr("maillab.store.LISTING_WORTH", 1)
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n")  # (now: a change in this tick may not show in mtimes)
    store.close()
    assert not (inbox.path / "maillab-listing").exists()


@pytest.mark.parametrize("where", ["cur", "new"])
def test_no_listing_is_saved_of_a_file_name_with_a_line_end(store, alice, monkeypatch, where):
    monkeypatch.setattr("maillab.store.LISTING_WORTH", 1)
    inbox = alice.folder()
    inbox.deliver(b"Subject: 1\n\nx\n")
    (inbox.path / where / "junk\n1700000000.M1P1.example,U=7,W=3:2,").write_bytes(b"hi\n")
    assert inbox.uids() == [1, 7]
    aged(inbox)
    store.close()
    assert not (inbox.path / "maillab-listing").exists()
    assert reopened(store).account("alice").folder().uids() == [1, 7]


def test_a_copy_of_a_message_whose_file_was_replaced_is_described_from_the_new_file(alice):
    inbox, sent = alice.folder(), alice.folder("Sent")
    info = inbox.deliver(b"Subject: old\n\nx\n")
    assert inbox.described([1], ("h_subject",)) == {1: ("old",)}  # (a row for the old file)
    os.remove(info.path)
    (inbox.path / "cur" / "1700000000.M9P9.example,U=1,W=16:2,S").write_bytes(b"Subject: new\n\nx\n")
    assert [m.uid for m in inbox.messages()] == [1]
    copy = inbox.copy_to(1, sent)
    assert sent.described([copy.uid], ("h_subject",)) == {copy.uid: ("new",)}
    inbox.close_index()
    sent.close_index()


def test_a_store_is_made_private_in_a_folder_of_folders_not_there_yet(tmp_path):
    s = Store(tmp_path / "course" / "lab1" / "store", hash_n=N)
    assert mode(s.root) == 0o700  # (mkdir's mode passes through the umask: 0755 as a rule)
    s.close()
    os.chmod(s.root, 0o755)
    again = Store(s.root, hash_n=N)
    assert mode(again.root) == 0o700
    again.close()


@pytest.mark.parametrize("damage", ["{", "not json at all\n", "\xff"])
def test_a_damaged_accounts_file_starts_a_store_without_accounts(store, alice, damage):
    (store.root / "accounts.json").write_text(damage, "latin-1")
    again = reopened(store)
    assert again.accounts == [] and again.authenticate("alice", "pw") is None


def test_a_folder_name_too_long_for_a_file_name_is_no_folder(alice):
    """Python 3.11's Path.is_dir() raises for a name over 255 bytes: lab.mailbox(user, folder)
    with such a name ended in OSError instead of "no folder named"."""
    assert alice.has_folder("x" * 300) is False
    with pytest.raises(FolderError, match="no folder named"):
        alice.folder("x" * 300)
