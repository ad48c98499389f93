"""The Maildir store: UIDs, flags, atomic delivery, persistence."""

import hashlib
import json
import mailbox
import os
import shutil

import pytest

from maillab.store import FolderError, Store, crlf_size, verify_password


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store", hash_n=2**10)
    yield s
    s.close()


def test_account_has_special_folders_and_hashed_password(store):
    acct = store.add_account("alice", "s3cret-pw", "example.com")
    assert acct.addresses == ["alice@example.com"]
    assert acct.folder_names() == ["INBOX", "Drafts", "Junk", "Sent", "Trash"]
    text = (store.root / "accounts.json").read_text()
    assert "s3cret-pw" not in text
    stored = json.loads(text)["accounts"][0]["password_hash"]
    assert stored.startswith("scrypt$") and verify_password("s3cret-pw", stored)
    assert not verify_password("wrong", stored)
    # Same password, new salt: a different hash.
    other = store.add_account("bob", "s3cret-pw", "example.com")
    assert other.password_hash != acct.password_hash


def test_authenticate_by_login_or_address(store):
    store.add_account("alice", "pw", "example.com")
    assert store.authenticate("alice", "pw").login == "alice"
    assert store.authenticate("ALICE@example.COM", "pw").login == "alice"
    assert store.authenticate("alice", "nope") is None
    assert store.authenticate("nobody", "pw") is None


def test_uids_grow_and_never_repeat_even_after_restart(store, tmp_path):
    inbox = store.add_account("alice", "pw", "example.com").folder()
    uids = [inbox.deliver(b"Subject: %d\n\nx\n" % i).uid for i in range(5)]
    assert uids == [1, 2, 3, 4, 5]
    validity = inbox.uidvalidity
    inbox.expunge([4, 5])
    store.close()
    again = Store(tmp_path / "store", hash_n=2**10).account("alice").folder()
    assert again.uidvalidity == validity
    assert [m.uid for m in again.messages()] == [1, 2, 3]
    assert again.deliver(b"Subject: new\n\nx\n").uid == 6


def test_uidnext_survives_lost_state_file(store):
    inbox = store.add_account("alice", "pw", "example.com").folder()
    for i in range(3):
        inbox.deliver(b"x\n")
    (inbox.path / "maillab-uidvalidity").write_text("garbage")
    fresh = Store(store.root, hash_n=2**10).account("alice").folder()
    assert fresh.deliver(b"y\n").uid == 4  # recovered from the file names


def test_size_counts_crlf_and_read_gives_crlf(store):
    inbox = store.add_account("alice", "pw", "example.com").folder()
    info = inbox.deliver(b"Subject: a\r\n\r\nline1\nline2\r\n")
    raw = inbox.read(info.uid)
    assert raw == b"Subject: a\r\n\r\nline1\r\nline2\r\n"
    assert info.size == len(raw) == crlf_size(b"Subject: a\n\nline1\nline2\n")
    assert b"\r" not in info.path.read_bytes()  # Maildir files keep Unix line ends


def test_flags_live_in_the_file_name(store):
    inbox = store.add_account("alice", "pw", "example.com").folder()
    uid = inbox.deliver(b"x\n").uid
    inbox.store_flags(uid, {"\\Seen", "\\Flagged"}, "add")
    info = inbox.get(uid)
    assert info.path.parent.name == "cur" and info.path.name.endswith(":2,FS")
    inbox.store_flags(uid, {"\\Flagged"}, "remove")
    assert inbox.flags_of(uid) == {"\\Seen"}
    # stdlib mailbox reads the same flags
    md = mailbox.Maildir(inbox.path, factory=None)
    assert [m.get_flags() for m in md] == ["S"]


def test_delivery_is_atomic_tmp_files_are_invisible(store):
    inbox = store.add_account("alice", "pw", "example.com").folder()
    (inbox.path / "tmp" / "123.half-written").write_bytes(b"Subject: half")
    inbox.deliver(b"Subject: whole\n\nx\n")
    assert len(Store(store.root, hash_n=2**10).account("alice").folder().messages()) == 1
    assert not [n for n in os.listdir(inbox.path / "tmp") if "U=" in n]


def test_foreign_file_gets_a_uid(store):
    acct = store.add_account("alice", "pw", "example.com")
    inbox = acct.folder()
    inbox.deliver(b"first\n")
    (inbox.path / "new" / "1700000000.learner.host").write_bytes(b"Subject: dropped in\n\nhi\n")
    fresh = Store(store.root, hash_n=2**10).account("alice").folder()
    assert [m.uid for m in fresh.messages()] == [1, 2]
    assert b"dropped in" in fresh.read(2)


def test_copy_keeps_flags_and_date_and_listeners_hear_changes(store):
    acct = store.add_account("alice", "pw", "example.com")
    inbox, sent = acct.folder(), acct.folder("Sent")
    heard = []
    inbox.subscribe(heard.append)
    info = inbox.deliver(b"x\n", flags={"\\Seen"}, internaldate=1_000_000_000)
    copy = inbox.copy_to(info.uid, sent)
    assert copy.flags == {"\\Seen"} and int(copy.internaldate) == 1_000_000_000
    inbox.store_flags(info.uid, {"\\Deleted"}, "add")
    inbox.expunge([info.uid])
    assert [c.kind for c in heard] == ["exists", "flags", "expunge"]


def test_a_copy_is_a_hard_link_that_outlives_the_original(store):
    acct = store.add_account("alice", "pw", "example.com")
    inbox, trash = acct.folder(), acct.folder("Trash")
    info = inbox.deliver(b"Subject: kept\n\nbody\n", flags={"\\Seen"}, internaldate=1_000_000_000)
    copy = inbox.copy_to(info.uid, trash)
    original, copied = os.stat(info.file), os.stat(copy.file)
    assert copied.st_ino == original.st_ino and copied.st_nlink == 2  # no bytes written again
    assert copy.size == info.size and int(copy.internaldate) == 1_000_000_000
    trash.store_flags(copy.uid, {"\\Flagged"}, "add")  # flags are names: the original keeps its own
    assert inbox.flags_of(info.uid) == {"\\Seen"} and trash.flags_of(copy.uid) == {"\\Seen", "\\Flagged"}
    inbox.store_flags(info.uid, {"\\Deleted"}, "add")
    inbox.expunge([info.uid])
    assert trash.read(copy.uid) == b"Subject: kept\r\n\r\nbody\r\n"


def test_a_copy_where_links_are_refused_writes_the_bytes(store, monkeypatch):
    acct = store.add_account("alice", "pw", "example.com")
    inbox, trash = acct.folder(), acct.folder("Trash")
    info = inbox.deliver(b"Subject: s\n\nx\n", internaldate=1_000_000_000)
    uidnext = trash.uidnext

    def refused(src, dst):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", refused)
    copy = inbox.copy_to(info.uid, trash)
    assert os.stat(copy.file).st_ino != os.stat(info.file).st_ino
    assert trash.read(copy.uid) == inbox.read(info.uid) and int(copy.internaldate) == 1_000_000_000
    assert copy.uid > uidnext  # the UID the link attempt took is skipped, never given twice
    assert [m.uid for m in trash.messages()] == [copy.uid]


def test_folders_create_rename_delete(store):
    acct = store.add_account("alice", "pw", "example.com")
    acct.create_folder("Projects")
    with pytest.raises(FolderError):
        acct.create_folder("Projects")
    acct.folder("Projects").deliver(b"x\n")
    acct.rename_folder("Projects", "Archive")
    assert "Archive" in acct.folder_names() and "Projects" not in acct.folder_names()
    assert len(acct.folder("Archive").messages()) == 1
    acct.delete_folder("Archive")
    assert "Archive" not in acct.folder_names()
    with pytest.raises(FolderError):
        acct.delete_folder("INBOX")
    with pytest.raises(FolderError):
        acct.create_folder("../escape")


def test_apop_secret_is_never_written(store):
    store.add_account("alice", "apop-pw", "example.com", apop=True)
    assert store.account("alice").apop_secret == "apop-pw"
    assert "apop-pw" not in (store.root / "accounts.json").read_text()


def test_changing_a_password_keeps_the_account_object(store):
    first = store.add_account("alice", "old", "example.com")
    again = store.add_account("alice", "new", "example.com")
    assert again is first  # open sessions (and POP3's maildrop lock) stay valid
    assert store.authenticate("alice", "new") and not store.authenticate("alice", "old")


def test_a_recreated_folder_never_reuses_a_uidvalidity(store, tmp_path, monkeypatch):
    monkeypatch.setattr("maillab.store.time.time", lambda: 1_700_000_000.0)  # a frozen clock
    acct = store.add_account("alice", "pw", "example.com")
    first = acct.create_folder("Projects").uidvalidity
    acct.delete_folder("Projects")
    assert acct.create_folder("Projects").uidvalidity > first
    acct.delete_folder("Projects")
    # ... also after a restart within the same second, when only the store remembers
    again = Store(store.root, hash_n=2**10).account("alice")
    validities = {first, again.create_folder("Projects").uidvalidity}
    assert len(validities) == 2 and max(validities) > 1


def test_two_files_with_one_uid_are_not_both_indexed(store, tmp_path, monkeypatch):
    inbox = store.add_account("alice", "pw", "example.com").folder()
    info = inbox.deliver(b"Subject: original\n\nx\n")
    # A learner's copy beside it, under a name that claims the same UID.
    (info.path.parent / ("1." + info.path.name.split(".", 1)[1])).write_bytes(b"Subject: copy\n\nx\n")
    kept = set()
    for i, order in enumerate((sorted, lambda names: sorted(names, reverse=True))):
        root = tmp_path / f"scan{i}"
        shutil.copytree(store.root, root)  # the same files, listed in another order
        real = os.listdir
        monkeypatch.setattr("maillab.store.os.listdir", lambda d: order(real(d)))
        folder = Store(root, hash_n=2**10).account("alice").folder()
        uids = [m.uid for m in folder.messages()]  # the folder is scanned here
        monkeypatch.undo()
        assert uids == [1, 2]  # both kept, each with a UID of its own
        kept.add(folder.read(1))
    assert len(kept) == 1  # the same file keeps UID 1, whatever order the directory lists


def test_an_unknown_user_costs_the_same_hash_as_an_account(store, monkeypatch):
    store.add_account("alice", "pw", "example.com")  # this store's work factor: 2**10
    costs = []
    real = hashlib.scrypt

    def counting(password, **kw):
        costs.append(kw["n"])
        return real(password, **kw)

    monkeypatch.setattr("maillab.store.hashlib.scrypt", counting)
    store.authenticate("alice", "wrong")
    store.authenticate("nobody", "wrong")
    store.authenticate("nobody@example.com", "wrong")
    assert costs == [2**10] * 3  # was 2**14 for unknown users: 36 ms against 1.9 ms
