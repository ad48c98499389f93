"""The mail store: accounts and their folders, kept as Maildir on disk.

This is the one source of truth shared by SMTP delivery, POP3 and IMAP.

Layout under the store's root folder::

    accounts.json                 accounts (login, domain, addresses, salted password hash)
    <login>/                      the account's Maildir (this is INBOX)
    <login>/.Sent/ .Trash/ ...    other folders, Maildir++ style (as stdlib ``mailbox`` does);
                                  a new account's special folders are made on first use
    <folder>/maillab-uidvalidity  "UIDVALIDITY UIDNEXT" for the folder
    <folder>/maillab-index.sqlite what IMAP asks about each message, parsed once (a cache:
                                  ``maillab.index``; made again whenever it is lost)

Every message file is named ``<unique>,U=<uid>,W=<size>:2,<flags>``:

* ``U=`` is the IMAP UID, given once at delivery and never reused in the folder;
* ``W=`` is the size as clients count it (lines ending in CRLF), as Dovecot does;
* the ``:2,`` suffix carries the standard Maildir flags (D F P R S T);
* the file's modification time is the internal date (the stdlib ``mailbox`` convention).

Delivery writes to ``tmp/`` and then renames into ``new/``: a crash never leaves half a message
visible. A message's UID is in its file name; UIDNEXT is saved before any message is removed,
so a crash can leave a gap in the UIDs but never a repeated one.

The files are the truth: a folder lists ``cur/`` and ``new/`` again when their modification
times say something else changed them (a learner in a terminal), and tells its listeners.

All methods are safe to call from any thread: one re-entrant lock guards every change.
Listeners registered on a folder are told of every change (IMAP uses this to announce
``EXISTS``/``EXPUNGE``/flag updates to other sessions).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import operator
import os
import re
import secrets
import socket
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

__all__ = ["Store", "Account", "Folder", "MessageInfo", "FolderError", "SPECIAL_USE"]

# IMAP system flags <-> Maildir info letters (the letters must stay in ASCII order on disk).
FLAG_TO_LETTER = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "$Forwarded": "P",  # "passed"
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",  # "trashed"
}
LETTER_TO_FLAG = {v: k for k, v in FLAG_TO_LETTER.items()}

# Folders every account gets, with their RFC 6154 special-use attribute.
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}

UIDFILE = "maillab-uidvalidity"
INDEX_FILE = "maillab-index.sqlite"  # each folder's index file (maillab.index)
LAST_VALIDITY_FILE = "maillab-last-uidvalidity"  # at the store's root: the largest ever given
KEYWORDFILE = "maillab-keywords.json"  # custom IMAP keywords per UID (Maildir has no place for them)
SUBSCRIPTIONFILE = "maillab-subscriptions"  # IMAP SUBSCRIBE state, one folder name a line
HIERARCHY_DELIMITER = "."  # Maildir++: folder "Archive.2024" lives in ".Archive.2024/"
_NAME_RE = re.compile(r"^(?P<base>[^:,]+)(?P<extra>(?:,[A-Za-z]=[^,:]*)*)(?::2,(?P<flags>[A-Za-z]*))?$")
_OWN_NAMES_RE = re.compile(r"^([^:,\n]+,U=(\d+),W=(\d+)(?::2,([A-Za-z]*))?)$", re.M)
# A file system stamps a directory's change with a clock that moves in ticks (a few ms on
# Linux; whole seconds on some): a change made in the tick of the last listing may leave the
# modification time as it was. A listing is trusted only for directories that had not changed
# for this long before it (else the next look lists again, as Dovecot does).
CLOCK_TICK_NS = 20_000_000
CLOCK_TICK_COARSE_NS = 2_000_000_000  # when both times are whole seconds
# A folder's listing is saved (maillab.index.write_listing) from this many messages on, or when
# the folder has an index file already: see Folder.keep_listing.
LISTING_WORTH = 1000
OPEN_INDEXES = 32  # folder index files open at once per store (each holds three descriptors)
# Messages per folder (Store.max_messages): past it IMAP refuses COPY and APPEND (NO [OVERQUOTA])
# and SMTP a recipient (452 4.2.2). Far above a class's needs and the 40,000 of bench_imap; it
# stops a runaway loop, like COPY 1:* into the selected folder, which doubles it each time.
MAX_MESSAGES_PER_FOLDER = 50_000
_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "maillab"


# On a shared computer the store is its owner's alone: folders 0700, files 0600, whatever the
# umask (explicit modes, not a umask change: that would be process-wide and race with threads).
def private_opener(path, flags):
    return os.open(path, flags, 0o600)


def _write_private(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", opener=private_opener) as f:
        f.write(text)


def make_maildir(path: Path, *, subfolder: bool = False) -> None:
    """A Maildir folder at ``path`` (nothing changes if it is there already); a Maildir++
    sub-folder (``subfolder=True``: ``.Sent``, ...) also gets its ``maildirfolder`` mark."""
    for folder in (path, path / "tmp", path / "new", path / "cur"):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
    if subfolder:
        (path / "maildirfolder").touch(mode=0o600)


class FolderError(Exception):
    """A folder operation that cannot be done (no such folder, already exists, ...)."""


def crlf_size(data: bytes) -> int:
    """Size of a message as a client will count it: every line ending as CRLF."""
    lf = data.count(b"\n")
    crlf = data.count(b"\r\n")
    return len(data) + (lf - crlf)


def to_lf(data: bytes) -> bytes:
    """Maildir files keep Unix line endings."""
    return data.replace(b"\r\n", b"\n")


def to_crlf(data: bytes) -> bytes:
    return to_lf(data).replace(b"\n", b"\r\n")


# ----------------------------------------------------------------------------- passwords

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter (malloc.h)
_mmap_threshold_fixed = False


def _return_big_buffers_at_once() -> None:
    """scrypt takes 128 * r * n bytes (16 MiB) for each check, in whichever worker thread runs
    it. glibc serves the first such buffer by mmap, then raises its mmap threshold past that size,
    so later ones come from the thread's own heap and stay there when freed: six worker threads
    kept 96 MiB after 180 checks. A fixed threshold (1 MiB; glibc then stops adjusting it) keeps
    such buffers mapped apart and returned to the system at once (the lab's RSS after a burst of
    logins: see bench/bench_load.py)."""
    global _mmap_threshold_fixed
    if _mmap_threshold_fixed:
        return
    _mmap_threshold_fixed = True
    try:
        import ctypes
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError, TypeError):  # not glibc: its own malloc, its own rules
        pass


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """A salted scrypt hash in the form ``scrypt$n$r$p$salt$hash`` (base64)."""
    _return_big_buffers_at_once()
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, maxmem=2**27)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    _return_big_buffers_at_once()
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=2**27)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


# ----------------------------------------------------------------------------- messages

class MessageInfo:
    """What the store knows about one message without reading it.

    A folder keeps one of these per message, so it holds only what the file name says (plus
    the internal date, looked up when first asked for: a SELECT does not need it).
    """

    __slots__ = ("uid", "size", "flags", "name", "recent", "_date", "_folder", "described")

    def __init__(self, uid: int, size: int, flags: frozenset[str], internaldate: float | None,
                 name: str, recent: bool = False, folder: "Folder | None" = None):
        self.uid = uid
        self.size = size  # as clients count it (CRLF line ends)
        self.flags = flags  # the system flags, from the file name
        self.name = name  # the file's name (changes when flags change)
        self.recent = recent  # still in new/: no IMAP session has seen it yet
        self._date = internaldate
        self._folder = folder
        self.described = False  # the folder's index has a row for this very file

    @property
    def internaldate(self) -> float:
        """Seconds since the epoch: the file's modification time."""
        if self._date is None:
            self._folder._load_dates()
        return self._date

    @property
    def file(self) -> str:
        """The file's path (a string: cheaper than a Path for 10,000 messages)."""
        return os.path.join(self._folder._dirs[self.recent], self.name)

    @property
    def path(self) -> Path:
        return Path(self.file)

    @property
    def base(self) -> str:
        """The name without its flags: what the folder's index knows the message by."""
        return self.name.split(":", 1)[0]

    def __repr__(self) -> str:
        return f"<MessageInfo uid={self.uid} size={self.size} flags={sorted(self.flags)} {self.name}>"


class Change(NamedTuple):
    """One change to a folder, as given to listeners."""

    kind: str  # "exists" | "expunge" | "flags"
    uid: int
    flags: frozenset[str] = frozenset()
    origin: object = None  # who made the change (a session object), so it is not told twice


def _parse_name(name: str):
    m = _NAME_RE.match(name)
    if not m:
        return None
    extra = dict(part.split("=", 1) for part in m.group("extra").split(",")[1:])
    flags = frozenset(LETTER_TO_FLAG[c] for c in (m.group("flags") or "") if c in LETTER_TO_FLAG)
    return m.group("base"), extra, flags


@functools.lru_cache(maxsize=256)
def _flag_set(letters: str) -> frozenset[str]:
    """The flags of a name's info letters (one shared set per spelling: 40,000 messages with
    the same flags hold one set)."""
    return frozenset(LETTER_TO_FLAG[c] for c in letters if c in LETTER_TO_FLAG)


def _parse_names(names: set[str]) -> tuple[list[tuple[str, int, int, frozenset[str]]], list[str]]:
    """(name, uid, size, flags) of the message file names that have a U= and a W= part, and
    the other names."""
    # The names this store gives, all at once: one regular expression over all of them
    # (per name, the calls cost more than listing the directory).
    joined = "\n".join(names)
    if joined.count("\n") >= len(names):  # a name with a line end in it: each on its own
        joined = "\n".join(n for n in names if "\n" not in n)
    found = [(name, int(uid), int(size), _flag_set(letters))
             for name, uid, size, letters in _OWN_NAMES_RE.findall(joined)]
    others = []
    if len(found) < len(names):  # names in another form: U= and W= in another order, say
        ours = {f[0] for f in found}
        for name in names - ours:
            parsed = _parse_name(name)
            try:
                found.append((name, int(parsed[1]["U"]), int(parsed[1]["W"]), parsed[2]))
            except (TypeError, KeyError, ValueError):  # no such parts (parsed None: no name of ours)
                others.append(name)
    return found, others


_PLAIN = 3  # where the index's "plain" field is among maillab.index.FIELDS (set once a row is described)


_first = operator.itemgetter(0)


def _flag_suffix(flags: Iterable[str]) -> str:
    return ":2," + "".join(sorted(FLAG_TO_LETTER[f] for f in flags if f in FLAG_TO_LETTER))


class Folder:
    """One Maildir folder with its UIDs and flags."""

    def __init__(self, account: "Account", name: str, path: Path):
        self.account = account
        self.name = name
        self.path = path
        self._lock = account.store.lock
        self._listeners: list[Callable[[Change], None]] = []
        self._index: dict[int, MessageInfo] | None = None
        self._dirs = (os.path.join(path, "cur"), os.path.join(path, "new"))  # [recent]
        self._listed_at: tuple[int, int] | None = None  # the directories' mtimes when last listed
        self._listed_trusted = False  # whether that listing is known to hold every change since
        self._disk_index = None  # the folder's index file (maillab.index.FolderIndex), once used
        self._disk_index_failed = False
        # While no message is in memory (self._index is None): the directories as last listed
        # (maillab.index.Listing), read by the first SELECT after a restart; False once it was
        # looked for and is not there.
        self._listing = None
        self._listing_told: list[int] | None = None  # the UIDs sessions were given from it
        self._listing_saved_at: tuple[int, int] | None = None  # the stamp of the listing saved last
        self.keywords: dict[int, set[str]] = {}  # custom IMAP keywords, saved in KEYWORDFILE
        self._defined_keywords: list[str] = []  # every keyword ever used here, in first-use order
        self._load_uid_state()

    # ---- UID state
    def _load_uid_state(self):
        uidfile = self.path / UIDFILE
        try:
            validity, nxt = uidfile.read_text().split()
            self.uidvalidity, self._uidnext = int(validity), int(nxt)
            self._saved_uidnext = self._uidnext
        except (OSError, ValueError):
            # A new folder (or a re-created one): a UIDVALIDITY larger than any this store gave
            # before, so a client never mistakes the new folder's UIDs for the old one's.
            self.uidvalidity = self.account.store._next_validity()
            self._uidnext = 1
            self._save_uid_state()
        self.account.store._saw_validity(self.uidvalidity)

    def _save_uid_state(self):
        tmp = self.path / (UIDFILE + ".tmp")
        _write_private(tmp, f"{self.uidvalidity} {self._uidnext}\n")
        os.replace(tmp, self.path / UIDFILE)
        self._saved_uidnext = self._uidnext

    @property
    def uidnext(self) -> int:
        with self._lock:
            if self._saved_listing() is None:
                self._ensure_index()
            return self._uidnext

    def _allocate_uid(self) -> int:
        # Not saved here: the new message's file name carries its UID, and loading takes
        # UIDNEXT past the highest UID on disk. Only removing files can hide a used UID, so
        # expunge() saves UIDNEXT first. (Saving on every delivery would cost a rename over an
        # existing file, which ext4 turns into a flush: about 1 ms per message.)
        uid = self._uidnext
        self._uidnext += 1
        return uid

    # ---- the messages in memory: what the directories hold
    def _ensure_index(self) -> dict[int, MessageInfo]:
        if self._index is None:
            self._index = {}
            stamp = self._stamp()
            listing = self._listing
            names = None
            if listing and listing.stamp == stamp:  # the directories hold what was saved: no listdir
                from .index import read_listing_names
                names = read_listing_names(self.path, listing)
            try:
                self._sync_with_disk(initial=True, saved=None if names is None else (stamp, names))
            except BaseException:
                # (cur/ made unreadable by a learner's chmod, say) Nothing is loaded: the next
                # look loads all again. An empty folder left in memory would take every file
                # for one put back after its EXPUNGE and give it a new UID.
                self._index = None
                raise
            self._load_keywords()
            self.keywords = {uid: kws for uid, kws in self.keywords.items() if uid in self._index}
            told, self._listing, self._listing_told = self._listing_told, None, None
            if told is not None:  # sessions were told of these UIDs: tell them what changed since
                self._tell_changes_since(told)
        return self._index

    def _saved_listing(self):
        """While no message is in memory: the directories as last listed (maillab.index.Listing),
        if their modification times are still the ones it was saved with (else None)."""
        if self._index is not None:
            return None
        if self._listing is None:
            from .index import read_listing
            listing = read_listing(self.path, self.uidvalidity)
            if listing is not None:
                if listing.uids:
                    self._uidnext = max(self._uidnext, listing.uids[-1] + 1)
                self._load_keywords()  # (FLAGS and PERMANENTFLAGS name the keywords)
            self._listing = listing or False
        if self._listing and self._listing.stamp == self._stamp():
            if self._listing_told is None:
                self._listing_told = self._listing.uids
            return self._listing
        return None

    def _tell_changes_since(self, told: list[int]) -> None:
        """Listeners heard of ``told`` (from the saved listing); the messages now are those in
        memory: an EXISTS for each one more, an EXPUNGE for each one gone."""
        index = self._index
        before = set(told)
        gone = [uid for uid in told if uid not in index]
        if gone:
            self._keep_uid_state()  # before these UIDs are forgotten: they are never given again
        for uid in gone:
            self._notify(Change("expunge", uid))
        for uid, info in index.items():
            if uid not in before:
                self._notify(Change("exists", uid, info.flags | frozenset(self.keywords.get(uid, ()))))

    def _current_index(self) -> dict[int, MessageInfo]:
        """The messages, after a look at whether the directories changed (two stat calls)."""
        if self._index is None:
            return self._ensure_index()
        self.refresh()
        return self._index

    def refresh(self) -> None:
        """Notice messages added, removed or renamed in ``cur/`` and ``new/`` by anything else
        (another program, a learner in a terminal): listeners hear of them as of any change.

        A directory whose modification time is what it was when it was last listed holds the
        same files, unless it changed within the same tick of the file system's clock: one
        changed less than a second ago is listed again each time."""
        with self._lock:
            if self._index is None:
                if self._listing_told is not None and self._saved_listing() is None:
                    self._ensure_index()  # changed since sessions were told: they hear what did
                return
            if self._listed_trusted and self._stamp() == self._listed_at:
                return
            self._sync_with_disk()

    def _stamp(self) -> tuple[int, int]:
        stamp = []
        for d in self._dirs:
            try:
                stamp.append(os.stat(d).st_mtime_ns)
            except OSError:
                stamp.append(-1)
        return stamp[0], stamp[1]

    def _sync_with_disk(self, initial: bool = False, saved: tuple | None = None) -> None:
        """Bring the messages in memory in line with the files (all of them when ``initial``),
        or with the names in cur/ and new/ of a ``saved`` listing (stamp, names) still valid."""
        if saved is None:
            now = time.time_ns()
            stamp = self._stamp()  # before listing: a change while listing shows at the next look
            listed: list[set[str]] = []
            for d in self._dirs:
                try:
                    names = set(os.listdir(d))
                except FileNotFoundError:
                    names = set()
                names.difference_update([n for n in names if n[0] == "."])
                listed.append(names)
            tick = CLOCK_TICK_COARSE_NS if all(t % 1_000_000_000 == 0 for t in stamp) else CLOCK_TICK_NS
            self._listed_at, self._listed_trusted = stamp, max(stamp) < now - tick
        else:
            stamp, listed = saved[0], [set(names) for names in saved[1]]
            self._listed_at, self._listed_trusted, self._listing_saved_at = stamp, True, stamp
        index = self._index
        gone: dict[int, MessageInfo] = {}
        if initial:
            added = listed
        else:
            known: list[set[str]] = [set(), set()]
            for info in index.values():
                known[info.recent].add(info.name)
            if known == listed:
                return
            added = [listed[recent] - known[recent] for recent in (False, True)]
            lost = [known[recent] - listed[recent] for recent in (False, True)]
            gone = {info.uid: info for info in index.values() if info.name in lost[info.recent]}
        changes: list[Change] = []
        foreign: list[tuple[str, bool]] = []
        fresh: set[int] = set()  # UIDs first seen in this look
        parsed = []
        for recent in (False, True):
            ours, others = _parse_names(added[recent])
            foreign += [(name, recent) for name in others]
            parsed += [(uid, name, size, flags, recent) for name, uid, size, flags in ours]
        parsed.sort(key=_first)  # in UID order: the folder's dict needs no sorting afterwards
        for uid, name, size, flags, recent in parsed:
            old = index.get(uid)
            if old is not None and uid in gone:  # the same message renamed: its flags changed
                del gone[uid]
                if old.flags != flags:
                    changes.append(Change("flags", uid, flags | frozenset(self.keywords.get(uid, ()))))
                if name.split(":", 1)[0] != old.base:
                    old._date, old.described = None, False  # another file under that UID
                elif old._date == 0.0:  # looked up while the file was being renamed: again
                    old._date = None
                old.name, old.size, old.flags, old.recent = name, size, flags, recent
                continue
            if old is not None and uid in fresh and (name, recent) < (old.name, old.recent):
                # Two files claim one UID (a learner's copy, say): the one first in name
                # order (a name starts with its delivery time) keeps it on every look,
                # whatever order the directory lists them in; the other is taken as new.
                foreign.append((old.name, old.recent))
                old = None
            if old is not None or not 0 < uid < self._uidnext + 1_000_000 or \
                    (not initial and uid < self._uidnext and uid not in gone):
                # a UID in use (a copied file), 0 (no UID, RFC 3501 2.3.1.1) or absurdly large,
                # or given before and gone (a file put back by hand after its EXPUNGE: a UID is
                # never given twice, RFC 3501 2.3.1.1): such a file is taken as new
                foreign.append((name, recent))
                continue
            index[uid] = MessageInfo(uid, size, flags, None, name, recent, self)
            fresh.add(uid)
        if not initial:
            changes += [Change("exists", uid, index[uid].flags) for uid in sorted(fresh)]
        if gone:
            self._keep_uid_state()  # before these UIDs are forgotten: they are never given again
            for uid in sorted(gone):
                del index[uid]
                self.keywords.pop(uid, None)
                changes.append(Change("expunge", uid))
        if index:
            self._uidnext = max(self._uidnext, max(index) + 1)
        # Files put here by something else (a learner copying a file into new/, say) get a UID.
        for name, recent in sorted(foreign, key=lambda f: (self._mtime(f), f[0])):
            info = self._adopt(name, recent)
            if info is not None:
                index[info.uid] = info  # (from UIDNEXT: after every UID in memory, in order)
                changes.append(Change("exists", info.uid, info.flags))
        if self._uidnext != self._saved_uidnext:
            self._keep_uid_state()
        if initial and not foreign and saved is None:
            self.keep_listing(listed=True)
        if not initial:
            for change in changes:
                self._notify(change)

    def keep_listing(self, listed: bool = False) -> None:
        """Save the messages in memory as the index file's listing of the directories, if they
        are what the directories hold (``listed``: they were just listed) and have not changed
        for a clock tick (see ``maillab.index``)."""
        with self._lock:
            if self._index is None:
                return
            if not listed:
                self.refresh()
                if self._stamp() != self._listed_at:
                    return
            stamp = self._listed_at
            if not self._listed_trusted or stamp == self._listing_saved_at or -1 in stamp:
                return
            index = self._index
            if len(index) < LISTING_WORTH and not os.path.exists(os.path.join(self.path, INDEX_FILE)):
                return  # a small folder is listed again quickly
            uids = list(index)
            if uids and not 0 < uids[-1] < 2**32:
                return
            names: list[list[str]] = [[], []]
            for info in index.values():
                names[info.recent].append(info.name)
            if any("\n" in name for name in names[0] + names[1]):
                return  # (a file name with a line end: the listing file has no place for it)
            from .index import Listing, write_listing
            unseen = next((uid for uid, info in index.items() if "\\Seen" not in info.flags), 0)
            try:
                write_listing(self.path, self.uidvalidity, Listing(stamp, uids, unseen,
                                                                   len(names[1])), names)
            except OSError:  # a full disk, a read-only folder: the listing is only a shortcut
                return
            self._listing_saved_at = stamp

    def _keep_uid_state(self) -> None:
        try:
            self._save_uid_state()
        except OSError:  # the whole folder was removed by hand: there is nothing to keep
            pass

    def _mtime(self, entry: tuple[str, bool]) -> float:
        try:
            return os.stat(os.path.join(self._dirs[entry[1]], entry[0])).st_mtime
        except OSError:
            return 0.0

    def _adopt(self, name: str, recent: bool) -> MessageInfo | None:
        """Give a file that some other program put here a UID and this store's kind of name."""
        path = os.path.join(self._dirs[recent], name)
        try:
            with open(path, "rb") as f:
                size = crlf_size(f.read())
                mtime = os.fstat(f.fileno()).st_mtime
        except OSError:
            return None
        parsed = _parse_name(name)
        flags = parsed[2] if parsed else frozenset()
        uid = self._allocate_uid()
        newname = self._filename(uid, size, flags)
        try:
            os.rename(path, os.path.join(self._dirs[recent], newname))
        except OSError:
            return None
        return MessageInfo(uid, size, flags, mtime, newname, recent, self)

    def _load_dates(self) -> None:
        """Fill in the internal dates not known yet: from the index file, else from the files."""
        with self._lock:
            missing = [info for info in self._ensure_index().values() if info._date is None]
            if not missing:
                return
            ask = None if len(missing) > 100 else [info.uid for info in missing]
            rows = self._indexed(lambda db: db.dates(ask)) or {}
            learned = []
            for info in missing:
                row = rows.get(info.uid)
                if row is not None and row[0] == info.base:
                    info._date = row[1]
                    continue
                try:
                    info._date = os.stat(info.file).st_mtime
                except OSError:  # removed meanwhile: the next look at the folder tells
                    info._date = 0.0
                    continue
                learned.append((info.uid, info.base, info._date))
            if learned:
                self._indexed(lambda db: db.put_dates(learned))

    # ---- the folder's index file (maillab.index): a cache, used when it can be
    def _indexed(self, use: Callable):
        """``use(index)`` on this folder's index file; None if it cannot be had. A file that
        SQLite cannot read (corrupt, cut short, not a database) is made again, once."""
        if self._disk_index_failed:
            return None
        if self._disk_index is None:
            from .index import FolderIndex
            try:
                self._disk_index = FolderIndex(self.path, self.uidvalidity)
            except ImportError:  # a Python built without sqlite3
                self._disk_index_failed = True
                return None
        db = self._disk_index
        errors = (db.errors, OSError)
        for attempt in (1, 2):
            try:
                self.account.store._index_opened(self)
                return use(db)
            except errors:
                db.reset()
        self._disk_index_failed = True  # SQLite cannot work here: every answer is worked out
        return None

    def close_index(self) -> None:
        """Close the index file (it opens again when next needed)."""
        if self._disk_index is not None:
            self._disk_index.close()

    def described(self, uids: Iterable[int], fields: tuple[str, ...]) -> dict[int, tuple]:
        """uid -> the named fields of ``maillab.index.FIELDS`` for those messages, from the
        index file; a message not described there yet is read, described and recorded."""
        from .index import FIELDS, describe
        with self._lock:
            index = self._ensure_index()
            infos = [index[u] for u in uids if u in index]
            # Rows checked against their files before are read without the base name (a third
            # of the cost); the others are checked now.
            out = self._indexed(lambda db: db.fields([i.uid for i in infos if i.described], fields,
                                                     with_base=False)) or {}
            unsure = [info for info in infos if info.uid not in out]
            rows = self._indexed(lambda db: db.fields([i.uid for i in unsure], fields)) or {} if unsure else {}
            todo = []
            for info in unsure:
                row = rows.get(info.uid)
                if row is not None and row[0] == info.base:
                    out[info.uid] = row[1:]
                    info.described = True
                else:
                    todo.append((info.uid, info.base, info.file))
        if not todo:
            return out
        picks = [FIELDS.index(f) for f in fields]
        made = []
        for uid, base, path in todo:  # read and parsed without the lock: other threads go on
            try:
                with open(path, "rb") as f:
                    raw = f.read()
                    mtime = os.fstat(f.fileno()).st_mtime
            except OSError:
                try:
                    raw, mtime = self.read(uid), None  # renamed meanwhile (its flags changed)
                except KeyError:
                    continue  # expunged meanwhile
            entry = describe(to_crlf(raw))
            out[uid] = tuple(entry[i] for i in picks)
            if mtime is not None:
                made.append((uid, base, mtime, *entry))
        if made:
            with self._lock:
                self._indexed(lambda db: db.put(made))
        return out

    def note_plain(self, rows: list[tuple[object, int, str]]) -> None:
        """Record in the index file what a search learned: (``plain`` value, uid, base name)."""
        with self._lock:
            self._indexed(lambda db: db.set_plain(rows))

    # ---- custom keywords (IMAP), kept beside the messages
    def _load_keywords(self):
        try:
            data = json.loads((self.path / KEYWORDFILE).read_text())
            saved = {int(uid): set(kws) for uid, kws in data.get("uids", {}).items()}
            defined = [str(k) for k in data.get("defined", [])]
        except (OSError, ValueError, AttributeError, TypeError):
            return
        for uid, kws in saved.items():
            if (self._index is None or uid in self._index) and kws:
                self.keywords[uid] = kws | self.keywords.get(uid, set())
        for k in defined:
            if k not in self._defined_keywords:
                self._defined_keywords.append(k)

    def _save_keywords(self):
        data = {"defined": self._defined_keywords,
                "uids": {str(uid): sorted(kws) for uid, kws in sorted(self.keywords.items()) if kws}}
        tmp = self.path / (KEYWORDFILE + ".tmp")
        try:
            _write_private(tmp, json.dumps(data))
            os.replace(tmp, self.path / KEYWORDFILE)
        except OSError:
            pass  # the folder was deleted meanwhile

    def _define_keywords(self, kws: Iterable[str]) -> None:
        for k in kws:
            if k not in self._defined_keywords:
                self._defined_keywords.append(k)

    def defined_keywords(self) -> list[str]:
        """Custom keywords known in this folder (IMAP lists them in FLAGS and PERMANENTFLAGS)."""
        with self._lock:
            if self._saved_listing() is None:
                self._ensure_index()
            return list(self._defined_keywords)

    @staticmethod
    def _filename(uid: int, size: int, flags: Iterable[str]) -> str:
        unique = f"{time.time_ns() // 1000}.M{secrets.token_hex(4)}P{os.getpid()}.{_HOST}"
        return f"{unique},U={uid},W={size}{_flag_suffix(flags)}"

    # ---- reading
    def messages(self) -> list[MessageInfo]:
        """A snapshot of the folder's messages in UID order."""
        with self._lock:
            return list(self._current_index().values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._current_index())

    def room(self) -> int:
        """How many more messages this folder takes before its quota (``Store.max_messages``).
        (Counted in memory: no look at the directories, which a burst of APPENDs into a big
        folder would have listed again each time.)"""
        with self._lock:
            return max(0, self.account.store.max_messages - len(self._ensure_index()))

    def get(self, uid: int) -> MessageInfo | None:
        with self._lock:
            return self._ensure_index().get(uid)

    def read(self, uid: int, *, crlf: bool = True) -> bytes:
        """The message's bytes (CRLF line ends unless ``crlf=False``). KeyError if expunged."""
        with self._lock:
            info = self._ensure_index().get(uid)
            if info is None:
                raise KeyError(uid)
            path = info.file
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise KeyError(uid) from None
        return to_crlf(data) if crlf else data

    def flags_of(self, uid: int) -> frozenset[str]:
        with self._lock:
            info = self._ensure_index()[uid]
            return info.flags | frozenset(self.keywords.get(uid, ()))

    def snapshot(self) -> list[tuple[MessageInfo, frozenset[str]]]:
        """Every message with all its flags (keywords included), in UID order, taken at once."""
        with self._lock:
            kws = self.keywords
            return [(info, info.flags | frozenset(kws[uid]) if uid in kws else info.flags)
                    for uid, info in self._current_index().items()]

    def uids(self) -> list[int]:
        """The folder's UIDs, in order."""
        with self._lock:
            listing = self._saved_listing()
            if listing is not None:  # (a SELECT after a restart: no message in memory yet)
                return list(listing.uids)
            return list(self._current_index())

    def first_unseen(self) -> int | None:
        """The UID of the first message without \\Seen, if any."""
        with self._lock:
            listing = self._saved_listing()
            if listing is not None:
                return listing.first_unseen or None
            return next((uid for uid, info in self._ensure_index().items() if "\\Seen" not in info.flags), None)

    def flags_of_each(self, uids: Iterable[int]) -> list[frozenset[str] | None]:
        """All the flags (keywords included) of each UID, None for those not here (any longer)."""
        with self._lock:
            get, kws = self._ensure_index().get, self.keywords
            return [None if info is None else info.flags | frozenset(kws[uid]) if uid in kws else info.flags
                    for uid, info in zip(uids, map(get, uids))]

    def lookup(self, uids: Iterable[int]) -> list[tuple[MessageInfo, frozenset[str]] | None]:
        """(message, all its flags) for each UID, None for those not here (any longer)."""
        with self._lock:
            index, kws = self._ensure_index(), self.keywords
            out = []
            for uid in uids:
                info = index.get(uid)
                out.append(None if info is None else
                           (info, info.flags | frozenset(kws[uid]) if uid in kws else info.flags))
            return out

    # ---- changing
    def deliver(self, data: bytes, flags: Iterable[str] = (), internaldate: float | None = None,
                origin: object = None) -> MessageInfo:
        """Store a message atomically and give it the next UID."""
        data = to_lf(data)
        flags = frozenset(flags)
        system = frozenset(f for f in flags if f in FLAG_TO_LETTER)
        with self._lock:
            index = self._ensure_index()
            uid = self._allocate_uid()
            size = crlf_size(data)
            name = self._filename(uid, size, system)
            # Plain strings for the two paths (a Path object per step costs more than the
            # rest of the bookkeeping); the file's own mtime is the internal date, read from
            # the open file rather than looked up again by name.
            folder = os.fspath(self.path)
            tmp, final = os.path.join(folder, "tmp", name), os.path.join(folder, "new", name)
            with open(tmp, "wb", opener=private_opener) as f:
                f.write(data)
                f.flush()  # the data in the file now: the mtime read or set below is final
                if internaldate is not None:
                    os.utime(f.fileno(), (internaldate, internaldate))
                mtime = os.fstat(f.fileno()).st_mtime
            os.rename(tmp, final)  # the Maildir step that makes the whole message visible at once
            return self._added(index, uid, size, flags, system, mtime, name, origin)

    def _added(self, index: dict, uid: int, size: int, flags: frozenset, system: frozenset,
               mtime: float, name: str, origin: object) -> MessageInfo:
        """The bookkeeping of a message file just put in new/ (under the lock)."""
        info = MessageInfo(uid, size, system, mtime, name, True, self)
        index[uid] = info
        if flags - system - {"\\Recent"}:
            self.keywords[uid] = set(flags - system - {"\\Recent"})
            self._define_keywords(sorted(self.keywords[uid]))
            self._save_keywords()
        self._notify(Change("exists", uid, info.flags, origin))
        return info

    def _deliver_link(self, source: str, size: int, flags: Iterable[str],
                      origin: object = None) -> MessageInfo | None:
        """Store a copy of the message file ``source`` as a hard link to it, as Maildir servers
        copy (the same bytes and internal date, nothing written; messages are never changed in
        place, flags live in file names). None where the file system cannot link, or the
        file is gone: the caller then copies the bytes (a UID skipped is allowed: RFC 3501
        2.3.1.1 asks for ascending UIDs, not contiguous ones)."""
        flags = frozenset(flags)
        system = frozenset(f for f in flags if f in FLAG_TO_LETTER)
        with self._lock:
            index = self._ensure_index()
            uid = self._allocate_uid()
            name = self._filename(uid, size, system)
            final = os.path.join(os.fspath(self.path), "new", name)
            try:
                os.link(source, final)
                mtime = os.stat(final).st_mtime
            except OSError:
                return None
            return self._added(index, uid, size, flags, system, mtime, name, origin)

    def store_flags(self, uid: int, flags: Iterable[str], mode: str = "set",
                    origin: object = None) -> frozenset[str]:
        """Set (``mode="set"``), add (``"add"``) or remove (``"remove"``) flags of one message."""
        flags = frozenset(flags) - {"\\Recent"}
        with self._lock:
            index = self._ensure_index()
            info = index.get(uid)
            if info is None:
                raise KeyError(uid)
            current = info.flags | frozenset(self.keywords.get(uid, ()))
            if mode == "set":
                new = flags
            elif mode == "add":
                new = current | flags
            elif mode == "remove":
                new = current - flags
            else:
                raise ValueError(mode)
            if new == current:
                return current
            system = frozenset(f for f in new if f in FLAG_TO_LETTER)
            if system != info.flags:
                # A message whose flags change has been seen by a client: it moves to cur/.
                target = info.base + _flag_suffix(system)
                try:
                    os.rename(info.file, os.path.join(self._dirs[False], target))
                except FileNotFoundError:  # removed (or renamed) behind the store's back
                    self._sync_with_disk()
                    raise KeyError(uid) from None
                info.name, info.flags, info.recent = target, system, False
            kw = set(new - system)
            if kw != self.keywords.get(uid, set()):
                if kw:
                    self.keywords[uid] = kw
                    self._define_keywords(sorted(kw))
                else:
                    self.keywords.pop(uid, None)
                self._save_keywords()
            self._notify(Change("flags", uid, new, origin))
            return new

    def claim_recent(self) -> list[int]:
        """Move messages from new/ to cur/ and return their UIDs (IMAP's \\Recent, RFC 3501)."""
        with self._lock:
            listing = self._saved_listing()
            if listing is not None and listing.recent == 0:  # nothing in new/
                return []
            claimed = []
            for info in self._ensure_index().values():
                if info.recent:
                    target = info.base + _flag_suffix(info.flags)
                    try:
                        os.rename(info.file, os.path.join(self._dirs[False], target))
                    except FileNotFoundError:
                        continue
                    info.name, info.recent = target, False
                    claimed.append(info.uid)
            return claimed

    def expunge(self, uids: Iterable[int], origin: object = None) -> list[int]:
        """Remove messages for good. Returns the UIDs that were removed."""
        removed = []
        with self._lock:
            index = self._ensure_index()
            self._save_uid_state()  # before any file (and so any UID) disappears
            had_keywords = False
            for uid in sorted(set(uids)):
                info = index.pop(uid, None)
                if info is None:
                    continue
                try:
                    os.unlink(info.file)
                except FileNotFoundError:
                    pass
                had_keywords |= self.keywords.pop(uid, None) is not None
                removed.append(uid)
                self._notify(Change("expunge", uid, origin=origin))
            if had_keywords:
                self._save_keywords()
            # An expunged message leaves the index file too (its subject and addresses), even
            # when nothing opened that file since the start (POP3 uses none).
            if removed and os.path.exists(os.path.join(self.path, INDEX_FILE)):
                self._indexed(lambda db: db.forget(removed))
        return removed

    def copy_to(self, uid: int, dest: "Folder", origin: object = None) -> MessageInfo:
        """Copy a message with its flags and internal date into another folder."""
        with self._lock:
            info = self._ensure_index()[uid]
            copy = dest._deliver_link(info.file, info.size, self.flags_of(uid), origin=origin)
            if copy is None:
                data = self.read(uid, crlf=False)
                copy = dest.deliver(data, self.flags_of(uid), info.internaldate, origin=origin)
            # The copy's description is the original's: the index row goes along (if there is one).
            row = self._indexed(lambda db: db.row(uid)) if self._disk_index is not None else None
            if row is not None and row[0] == info.base and row[2 + _PLAIN] is not None:
                made = [(copy.uid, copy.base, copy.internaldate, *row[2:])]
                dest._indexed(lambda db: db.put(made))
            return copy

    # ---- listeners
    def subscribe(self, listener: Callable[[Change], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Change], None]) -> None:
        with self._lock:
            try:
                self._listeners.remove(listener)
            except ValueError:
                pass

    def _notify(self, change: Change) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a broken listener must never lose mail for everyone else
                pass

    def __repr__(self) -> str:
        return f"<Folder {self.account.login}/{self.name} {len(self)} messages>"


class Account:
    """A mail user: login, domain, addresses, salted password hash, and folders."""

    def __init__(self, store: "Store", login: str, domain: str, addresses: list[str],
                 password_hash: str, apop_secret: str | None = None,
                 folders_to_make: Iterable[str] = ()):
        self.store = store
        self.login = login
        self.domain = domain
        self.addresses = addresses
        self.password_hash = password_hash
        # APOP (RFC 1939) needs a secret the server can read back; a salted hash cannot serve.
        # That is why APOP is obsolete. The lab keeps one, in memory only, for accounts created
        # with apop=True (the ready-made lab accounts, whose passwords are public anyway).
        self.apop_secret = apop_secret
        self.path = store.root / login
        self._folders: dict[str, Folder] = {}
        self.maildrop_lock = threading.Lock()  # POP3: one session per maildrop (RFC 1939)
        # The special folders of a new account (Sent, Drafts, ...) are made on disk together,
        # the first time anything looks beyond INBOX (a LIST, a SELECT, the webmail's page);
        # until then they are listed here (and in accounts.json). Creating directories is
        # slow on some disks, and many accounts of a lesson only ever receive mail (SMTP and
        # POP3 see INBOX alone); every listing shows the folders as before.
        self.folders_to_make = list(folders_to_make)

    @property
    def address(self) -> str:
        return self.addresses[0]

    def check_password(self, password: str) -> bool:
        return verify_password(password, self.password_hash)

    # ---- folders
    def _maildir(self) -> mailbox.Maildir:
        import mailbox  # the stdlib's Maildir++ folder handling, for the folder commands only
        return mailbox.Maildir(self.path, factory=None, create=True)

    def _folder_path(self, name: str) -> Path:
        if name.upper() == "INBOX":
            return self.path
        return self.path / ("." + name)

    @staticmethod
    def _check_name(name: str) -> str:
        if not name or name.startswith(".") or "/" in name or "\x00" in name or ".." in name:
            raise FolderError(f"invalid folder name {name!r}")
        return name

    def _make_folders(self) -> None:
        """Make the special folders still to be made (see ``folders_to_make``)."""
        with self.store.lock:
            if not self.folders_to_make:
                return
            for name in self.folders_to_make:
                make_maildir(self._folder_path(name), subfolder=True)
            self.folders_to_make = []
            self.store._save_accounts()

    def folder_names(self) -> list[str]:
        with self.store.lock:
            self._make_folders()
            return ["INBOX"] + sorted(self._maildir().list_folders())

    # ---- subscriptions (IMAP SUBSCRIBE/LSUB): names, whether or not the folder exists
    def subscriptions(self) -> list[str]:
        """Subscribed folder names. Until a client changes them: INBOX and the special folders."""
        with self.store.lock:
            try:
                text = (self.path / SUBSCRIPTIONFILE).read_text("utf-8")
            except OSError:
                return ["INBOX"] + [n for n in SPECIAL_USE if self.has_folder(n)]
            return [line for line in text.split("\n") if line]

    def set_subscribed(self, name: str, subscribed: bool = True) -> None:
        if name.upper() == "INBOX":
            name = "INBOX"
        with self.store.lock:
            names = self.subscriptions()
            if subscribed and name not in names:
                names.append(name)
            elif not subscribed and name in names:
                names.remove(name)
            else:
                return
            tmp = self.path / (SUBSCRIPTIONFILE + ".tmp")
            _write_private(tmp, "".join(n + "\n" for n in names))
            os.replace(tmp, self.path / SUBSCRIPTIONFILE)

    def has_folder(self, name: str) -> bool:
        if name.upper() == "INBOX":
            return True
        if not name or name.startswith(".") or "/" in name or "\x00" in name:
            return False
        self._make_folders()
        try:
            return self._folder_path(name).is_dir()  # what mailbox.list_folders checks
        except OSError:  # a name too long for a file name (Python 3.11 raises, newer say False)
            return False

    def folder(self, name: str = "INBOX") -> Folder:
        with self.store.lock:
            key = "INBOX" if name.upper() == "INBOX" else name
            f = self._folders.get(key)
            if f is None:
                if not self.has_folder(key):
                    raise FolderError(f"no folder named {name!r}")
                f = Folder(self, key, self._folder_path(key))
                self._folders[key] = f
            return f

    def create_folder(self, name: str) -> Folder:
        with self.store.lock:
            self._check_name(name)
            if self.has_folder(name):
                raise FolderError(f"folder {name!r} exists already")
            self._maildir().add_folder(name)  # folders 0700; its empty mark file by the umask
            os.chmod(self._folder_path(name) / "maildirfolder", 0o600)
            return self.folder(name)

    def delete_folder(self, name: str) -> None:
        with self.store.lock:
            if name.upper() == "INBOX":
                raise FolderError("INBOX cannot be deleted")
            f = self.folder(name)
            for info in f.messages():
                f.expunge([info.uid])
            import shutil  # (imported here: few sessions delete a folder)
            f.close_index()
            shutil.rmtree(f.path)
            self._folders.pop(name, None)

    def rename_folder(self, old: str, new: str) -> None:
        with self.store.lock:
            self._check_name(new)
            if self.has_folder(new):
                raise FolderError(f"folder {new!r} exists already")
            if old.upper() == "INBOX":
                # RFC 3501: renaming INBOX moves its messages and leaves INBOX empty.
                src = self.folder("INBOX")
                dest = self.create_folder(new)
                for info in src.messages():
                    src.copy_to(info.uid, dest)
                src.expunge([i.uid for i in src.messages()])
                return
            f = self.folder(old)
            # Folders below the old name move with it (Maildir++ keeps each one in its own dir).
            prefix = old + HIERARCHY_DELIMITER
            children = [n for n in self.folder_names() if n.startswith(prefix)]
            for child in children:
                if self.has_folder(new + child[len(old):]):
                    raise FolderError(f"folder {new + child[len(old):]!r} exists already")
            for moving in [f] + [self._folders[c] for c in children if c in self._folders]:
                moving.close_index()
            os.rename(f.path, self._folder_path(new))
            self._folders.pop(old, None)
            for child in children:
                os.rename(self._folder_path(child), self._folder_path(new + child[len(old):]))
                self._folders.pop(child, None)

    def special_use(self, name: str) -> str | None:
        return SPECIAL_USE.get(name)

    def __repr__(self) -> str:
        return f"<Account {self.login} {', '.join(self.addresses)}>"


class Store:
    """All accounts of a lab. ``root=None`` makes a temporary directory removed by ``close()``."""

    max_messages = MAX_MESSAGES_PER_FOLDER  # the quota of every folder (a lab may change it)

    def __init__(self, root: str | os.PathLike | None = None, *, hash_n: int = SCRYPT_N):
        self._tmp = None
        if root is None:
            import tempfile  # (imported here: it brings shutil and three compressors along)
            self._tmp = tempfile.TemporaryDirectory(prefix="maillab-")
            root = self._tmp.name
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.lock = threading.RLock()
        self.hash_n = hash_n
        self._last_validity = self._read_last_validity()
        self._accounts: dict[str, Account] = {}
        self._dummy_hashes: dict[tuple, str] = {}
        self._open_indexes: OrderedDict[Folder, None] = OrderedDict()  # least recently used first
        self._load_accounts()

    def _index_opened(self, folder: Folder) -> None:
        """A folder's index file is in use: close the least recently used beyond OPEN_INDEXES."""
        with self.lock:
            self._open_indexes[folder] = None
            self._open_indexes.move_to_end(folder)
            while len(self._open_indexes) > OPEN_INDEXES:
                oldest, _ = self._open_indexes.popitem(last=False)
                oldest.close_index()

    # ---- UIDVALIDITY: one counter for the whole store, kept on disk
    # A deleted folder's UIDVALIDITY file goes with it; this counter remembers the largest value
    # ever given, so a folder re-created under the same name (even after a restart within the
    # same second, when the clock alone would repeat itself) gets a larger one (RFC 3501 2.3.1.1).
    def _read_last_validity(self) -> int:
        try:
            return int((self.root / LAST_VALIDITY_FILE).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def _next_validity(self) -> int:
        with self.lock:
            validity = max(int(time.time()), self._last_validity + 1)
            self._saw_validity(validity)
            return validity

    def _saw_validity(self, validity: int) -> None:
        with self.lock:
            if validity <= self._last_validity:
                return
            self._last_validity = validity
            tmp = self.root / (LAST_VALIDITY_FILE + ".tmp")
            try:
                _write_private(tmp, f"{validity}\n")
                os.replace(tmp, self.root / LAST_VALIDITY_FILE)
            except OSError:
                pass  # a read-only store: the in-memory counter still protects this run

    # ---- persistence
    @property
    def _accounts_file(self) -> Path:
        return self.root / "accounts.json"

    def _load_accounts(self):
        try:
            data = json.loads(self._accounts_file.read_text())
        except (OSError, ValueError):
            return
        for a in data.get("accounts", []):
            self._accounts[a["login"]] = Account(self, a["login"], a["domain"], a["addresses"],
                                                 a["password_hash"],
                                                 folders_to_make=a.get("folders_to_make", ()))

    def _save_accounts(self):
        # APOP secrets are plaintext-equivalent: they stay in memory and never reach the disk.
        data = {"accounts": [
            {"login": a.login, "domain": a.domain, "addresses": a.addresses,
             "password_hash": a.password_hash,
             **({"folders_to_make": a.folders_to_make} if a.folders_to_make else {})}
            for a in self._accounts.values()]}
        tmp = self._accounts_file.with_suffix(".tmp")
        _write_private(tmp, json.dumps(data, indent=1))
        os.replace(tmp, self._accounts_file)

    # ---- accounts
    def add_account(self, login: str, password: str, domain: str, addresses: Iterable[str] = (),
                    *, apop: bool = False, password_hash: str | None = None,
                    save: bool = True) -> Account:
        """Create an account (or replace its password if it exists). Addresses default to login@domain.

        ``save=False`` leaves writing ``accounts.json`` to a later :meth:`save` (for many accounts).
        Safe to call from several threads at once.
        """
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", login):
            raise ValueError(f"invalid login {login!r}: use letters, digits, '.', '_' or '-'")
        domain = domain.lower()
        addresses = [a.lower() for a in addresses] or [f"{login.lower()}@{domain}"]
        hashed = password_hash or hash_password(password, n=self.hash_n)
        # INBOX on disk first, outside the lock: making it is idempotent and slow-ish. The
        # special folders follow when first needed (Account.folders_to_make).
        make_maildir(self.root / login)
        with self.lock:
            acct = self._accounts.get(login)
            if acct is None:
                acct = Account(self, login, domain, addresses, hashed, password if apop else None,
                               folders_to_make=SPECIAL_USE)
                self._accounts[login] = acct
            else:  # update in place: open sessions keep the same object (and maildrop lock)
                acct.domain, acct.addresses, acct.password_hash = domain, addresses, hashed
                acct.apop_secret = password if apop else None
            if save:
                self._save_accounts()
            return acct

    def save(self) -> None:
        """Write ``accounts.json`` (after ``add_account(..., save=False)``)."""
        with self.lock:
            self._save_accounts()

    def account(self, login: str) -> Account | None:
        with self.lock:
            return self._accounts.get(login)

    @property
    def accounts(self) -> list[Account]:
        with self.lock:
            return list(self._accounts.values())

    def find_address(self, address: str) -> Account | None:
        """The account that receives mail for an address (case-insensitive), if any."""
        address = address.strip().strip("<>").lower()
        with self.lock:
            for acct in self._accounts.values():
                if address in acct.addresses:
                    return acct
        return None

    def find_recipient(self, address: str) -> Account | None:
        """The account that mail to ``address`` goes to: the address's own, else, for
        postmaster@domain (which every mail domain must take, RFC 5321 4.5.1), the domain's
        first account, its administrator in the lab. Logins never use this alias."""
        found = self.find_address(address)
        if found is not None:
            return found
        local, _at, domain = address.strip().strip("<>").lower().rpartition("@")
        if local != "postmaster":
            return None
        with self.lock:
            return next((a for a in self._accounts.values() if a.domain == domain), None)

    def domains(self) -> set[str]:
        with self.lock:
            return {a.domain for a in self._accounts.values()}

    def authenticate(self, user: str, password: str) -> Account | None:
        """Log in by login name or by any of the account's addresses."""
        acct = self.account(user) or self.find_address(user)
        if acct is None:
            # Spend the same time as a real check, so timing does not tell who exists.
            verify_password(password, self._dummy_hash())
            return None
        return acct if acct.check_password(password) else None

    def _dummy_hash(self) -> str:
        """A hash no password matches, with the scrypt cost most accounts here have."""
        costs = Counter(_scrypt_cost(a.password_hash) for a in self.accounts)
        cost = costs.most_common(1)[0][0] if costs else None
        if cost is None:
            cost = (self.hash_n, SCRYPT_R, SCRYPT_P)
        dummy = self._dummy_hashes.get(cost)
        if dummy is None:
            salt = base64.b64encode(secrets.token_bytes(16)).decode()
            dummy = "scrypt${}${}${}${}$".format(*cost, salt) + base64.b64encode(bytes(64)).decode()
            self._dummy_hashes[cost] = dummy
        return dummy

    def close(self):
        with self.lock:
            for account in self._accounts.values():
                for folder in account._folders.values():
                    try:
                        folder.keep_listing()  # the next start's first SELECT needs no listing
                    except OSError:  # (the folder was removed by hand)
                        pass
            for folder in self._open_indexes:
                folder.close_index()
            self._open_indexes.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __repr__(self) -> str:
        return f"<Store {self.root} {len(self._accounts)} accounts>"


def _scrypt_cost(stored: str) -> tuple[int, int, int] | None:
    """(n, r, p) of a stored hash, or None if it is not one of ours."""
    try:
        scheme, n, r, p, _salt, _digest = stored.split("$")
        return (int(n), int(r), int(p)) if scheme == "scrypt" else None
    except ValueError:
        return None
