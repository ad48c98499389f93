"""A cache beside every folder: what IMAP asks about a message, worked out once and kept on disk.

Dovecot keeps an index and a cache file in every folder so that it need not read a message again
to answer ``FETCH 1:* BODYSTRUCTURE`` or ``SEARCH FROM bob``; this module does the same for the
lab's store. Each folder has one SQLite file, ``maillab-index.sqlite`` (Maildir readers ignore it,
as they ignore ``maillab-uidvalidity``), with a row per message:

========================  =====================================================================
``uid``, ``base``         the key: the UID and the file's base name (``<unique>,U=<uid>,W=<size>``,
                          the name without its ``:2,flags`` part, which changes with the flags)
``internaldate``          the file's modification time
``envelope``, ``body``,   FETCH ENVELOPE, BODY and BODYSTRUCTURE, as sent on the wire
``bodystructure``
``h_from`` ... ``h_date`` the header fields SEARCH reads, decoded and case-folded
``plain``                 0, or true if SEARCH TEXT/BODY may look in the raw bytes first
                          (``imap.search.transparent``): 1 when described, then, once a
                          search decoded the message, the byte ranges that are exactly its
                          searched texts ("r243-974,...") or 2 if there are none such
                          (``imap.search.searched_ranges``)
========================  =====================================================================

A second, plain file, ``maillab-listing``, holds the names in ``cur/`` and ``new/`` as last
listed, with the directories' modification times then and what SELECT tells (the UIDs, the first
unseen, how many are new), so that the first SELECT after a restart neither lists 40,000 names
again nor loads SQLite.

It is a cache, never a second truth. Flags stay in the file names; which messages exist is read
from the directories; a row is used only while a file with its UID *and* base name exists, so a
file added, removed or renamed behind the store's back (a learner in a terminal) can never get
another message's structure. A row is made the first time a command needs it (as Dovecot's cache
fields are), copied along by COPY and MOVE, and forgotten on expunge. A missing, unreadable or
corrupt file, or one made for another UIDVALIDITY, is replaced by an empty one and filled again.

The listing is used only while both directories still have the modification times it was
saved with (any file added, removed or renamed changes them), and saved only from a listing of
directories that had not changed for a tick of the file system's clock before it.

Files in a Maildir are never changed in place (the Maildir rule that lets readers work without
locks), so a message's content is not checked again once its row exists.
"""

from __future__ import annotations

import array
import contextlib
import os
from pathlib import Path
from typing import Iterable, NamedTuple

from .store import INDEX_FILE  # (there: the store looks for the file before it loads this module)

__all__ = ["FolderIndex", "INDEX_FILE", "FIELDS", "describe", "LISTING_FILE", "Listing", "read_listing",
           "read_listing_names", "write_listing"]

# Raised whenever what describe() makes changes, so that index files made before are rebuilt
# ("2": the BODYSTRUCTURE of a MIME parameter whose quoted string never closes, session 5;
# "3": SEARCH's decoded headers and the raw-bytes shortcut ("plain") of session 6).
SCHEMA_VERSION = "3"
# The parsed fields of a row, in the order describe() returns them.
FIELDS = ("envelope", "body", "bodystructure", "plain",
          "h_from", "h_to", "h_cc", "h_bcc", "h_subject", "h_date")
SEARCH_HEADERS = ("from", "to", "cc", "bcc", "subject")  # the header keys of SEARCH, cached
_SCHEMA = ("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
           "CREATE TABLE IF NOT EXISTS messages (uid INTEGER PRIMARY KEY, base TEXT NOT NULL, "
           "internaldate REAL, envelope BLOB, body BLOB, bodystructure BLOB, plain INTEGER, "
           "h_from TEXT, h_to TEXT, h_cc TEXT, h_bcc TEXT, h_subject TEXT, h_date TEXT)")


def describe(raw: bytes) -> tuple:
    """The parsed fields (in :data:`FIELDS` order) of a message given with CRLF line ends."""
    from .imap import fetch, search  # (imported when a row is first made: they bring the email package)
    root = fetch.parse_message(raw)
    values = root.values
    headers = []
    for name in SEARCH_HEADERS:
        found = values.get(name.encode())
        # NUL cannot come from a decoded header's search text here: it separates the values
        headers.append(None if found is None else
                       "\x00".join(search.decode_header_value(v).casefold() for v in found))
    date = values.get(b"date")
    return (fetch.envelope(root), fetch.bodystructure(root, False), fetch.bodystructure(root, True),
            int(search.transparent(raw, root)), *headers,
            date[0].decode("ascii", "replace") if date else None)


class FolderIndex:
    """The index file of one folder. Every method may raise ``sqlite3.Error`` (the store then
    calls :meth:`reset` and carries on without it); callers hold the store's lock."""

    def __init__(self, folder_path: Path, uidvalidity: int):
        import sqlite3  # (imported here: ``import maillab`` stays light)
        self.path = Path(folder_path) / INDEX_FILE
        self._sqlite3 = sqlite3
        self.errors = sqlite3.Error  # what every method may raise
        self.uidvalidity = uidvalidity
        self._db = None

    # ---- opening, checking, starting again
    @property
    def db(self):
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self):
        sqlite3 = self._sqlite3
        if not self.path.exists():
            # Made here first, 0600 like everything in the store (SQLite would use 0644, and its
            # -wal and -shm files take the database file's mode).
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5)
        try:
            # WAL: a crash (a learner restarting the kernel mid-write) never leaves half a change;
            # synchronous=NORMAL: no flush per change (the file can always be made again).
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM meta"))
            if meta.get("version") != SCHEMA_VERSION or meta.get("uidvalidity") != str(self.uidvalidity):
                # Made for another UIDVALIDITY (the folder was deleted and made again) or
                # another layout: its rows say nothing about these messages.
                db.execute("BEGIN")
                db.execute("DELETE FROM messages")
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               [("version", SCHEMA_VERSION), ("uidvalidity", str(self.uidvalidity))])
                db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def reset(self) -> None:
        """Throw the file away (it was unreadable or corrupt): the next use makes a new one."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(str(self.path) + suffix)
            except OSError:
                pass

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except self._sqlite3.Error:
                pass
            self._db = None

    # ---- reading
    def dates(self, uids: Iterable[int] | None = None) -> dict[int, tuple[str, float]]:
        """uid -> (base, internal date) of the rows (all, or those of ``uids``)."""
        if uids is None:
            rows = self.db.execute("SELECT uid, base, internaldate FROM messages")
        else:
            rows = self._in("SELECT uid, base, internaldate FROM messages WHERE uid IN ({})", list(uids))
        return {uid: (base, date) for uid, base, date in rows if date is not None}

    def fields(self, uids: list[int], names: tuple[str, ...], *, with_base: bool = True) -> dict[int, tuple]:
        """uid -> ([base,] *the named fields) for the rows of ``uids`` that have been described
        (without the base name for rows the caller has checked before)."""
        cols = ("base, " if with_base else "") + ", ".join(names)
        return {row[0]: row[1:] for row in
                self._in(f"SELECT uid, {cols} FROM messages WHERE uid IN ({{}}) AND plain IS NOT NULL", uids)}

    def row(self, uid: int) -> tuple | None:
        """(base, internal date, *FIELDS) of one message, or None."""
        return self.db.execute(f"SELECT base, internaldate, {', '.join(FIELDS)} FROM messages "
                               "WHERE uid = ?", (uid,)).fetchone()

    def _in(self, query: str, uids: list[int]) -> list:
        # Sorted UIDs with few gaps (a FETCH 1:*, a batch of a SEARCH) are read as a range;
        # others at most 500 at a time (SQLite allows 999 variables in one statement in old builds).
        if uids and uids[-1] - uids[0] < 4 * len(uids) and uids == sorted(uids):
            rows = self.db.execute(query.replace("IN ({})", "BETWEEN ? AND ?"), (uids[0], uids[-1])).fetchall()
            if uids[-1] - uids[0] == len(uids) - 1:
                return rows
            wanted = set(uids)
            return [row for row in rows if row[0] in wanted]
        out = []
        for i in range(0, len(uids), 500):
            part = uids[i:i + 500]
            out += self.db.execute(query.format(",".join("?" * len(part))), part).fetchall()
        return out

    # ---- writing
    @contextlib.contextmanager
    def _transaction(self):
        """One transaction: all of it is written, or (on any error) none of it."""
        db = self.db
        db.execute("BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def put_dates(self, rows: list[tuple[int, str, float]]) -> None:
        """Record (uid, base, internal date) of messages (a row with another base is replaced)."""
        with self._transaction() as db:
            db.executemany("INSERT INTO messages (uid, base, internaldate) VALUES (?, ?, ?) "
                           "ON CONFLICT (uid) DO UPDATE SET base = excluded.base, "
                           "internaldate = excluded.internaldate, plain = NULL "
                           "WHERE base != excluded.base", rows)

    def put(self, rows: list[tuple]) -> None:
        """Record whole rows: (uid, base, internal date, *FIELDS)."""
        marks = ", ".join("?" * (3 + len(FIELDS)))
        with self._transaction() as db:
            db.executemany(f"INSERT OR REPLACE INTO messages (uid, base, internaldate, {', '.join(FIELDS)}) "
                           f"VALUES ({marks})", rows)

    def set_plain(self, rows: list[tuple[object, int, str]]) -> None:
        """Record new ``plain`` values, (value, uid, base), of rows described before."""
        with self._transaction() as db:
            db.executemany("UPDATE messages SET plain = ? WHERE uid = ? AND base = ? "
                           "AND plain IS NOT NULL", rows)

    def forget(self, uids: Iterable[int]) -> None:
        uids = list(uids)
        if uids:
            with self._transaction() as db:
                for i in range(0, len(uids), 500):
                    part = uids[i:i + 500]
                    db.execute(f"DELETE FROM messages WHERE uid IN ({','.join('?' * len(part))})", part)

    def uids(self) -> set[int]:
        return {uid for (uid,) in self.db.execute("SELECT uid FROM messages")}


# ----------------------------------------------------------------------------- the listing file
# The folder's directories as last listed, in a file of its own beside the index: the first
# SELECT after a restart reads it (a few hundred bytes and the UIDs) without loading SQLite.
# Layout: one line "maillab-listing 1 UIDVALIDITY CUR_MTIME NEW_MTIME FIRST_UNSEEN RECENT COUNT"
# (times in ns; FIRST_UNSEEN the first UID without \Seen, 0 for none; RECENT how many are in
# new/), the COUNT UIDs in order as 32-bit numbers, then the names in cur/, a NUL, the names in
# new/ (each list "\n"-separated).

LISTING_FILE = "maillab-listing"
_LISTING_MAGIC = b"maillab-listing 1"
_UID_ARRAY = "I" if array.array("I").itemsize == 4 else "L"  # IMAP UIDs are 32-bit numbers


class Listing(NamedTuple):
    stamp: tuple[int, int]  # the modification times (ns) of cur/ and new/ it was listed at
    uids: list[int]
    first_unseen: int  # 0: every message is \Seen
    recent: int  # how many messages are in new/


def read_listing(folder_path: str | os.PathLike, uidvalidity: int) -> Listing | None:
    """The folder's saved listing (without the names), or None if there is none or it is
    damaged or of another UIDVALIDITY."""
    try:
        with open(os.path.join(folder_path, LISTING_FILE), "rb") as f:
            head = f.readline(200).split()
            if len(head) != 8 or b" ".join(head[:2]) != _LISTING_MAGIC or int(head[2]) != uidvalidity:
                return None
            cur, new, unseen, recent, count = map(int, head[3:])
            uids = array.array(_UID_ARRAY)
            uids.frombytes(f.read(count * uids.itemsize))
    except (OSError, ValueError, EOFError):
        return None
    if len(uids) != count:
        return None
    return Listing((cur, new), uids.tolist(), unseen, recent)


def read_listing_names(folder_path: str | os.PathLike, listing: Listing) -> list[list[str]] | None:
    """The names in cur/ and new/ saved with ``listing`` (None if the file changed since)."""
    try:
        with open(os.path.join(folder_path, LISTING_FILE), "rb") as f:
            head = f.readline(200).split()
            if tuple(map(int, head[3:5])) != listing.stamp or int(head[7]) != len(listing.uids):
                return None
            f.seek(len(listing.uids) * array.array(_UID_ARRAY).itemsize, os.SEEK_CUR)
            cur, new = f.read().decode("utf-8", "surrogateescape").split("\x00")
    except (OSError, ValueError, IndexError):
        return None
    names = [cur.split("\n") if cur else [], new.split("\n") if new else []]
    return names if len(names[0]) + len(names[1]) == len(listing.uids) else None


def write_listing(folder_path: str | os.PathLike, uidvalidity: int, listing: Listing,
                  names: list[list[str]]) -> None:
    """Save a listing (atomically: a reader sees the old one or the new one). ``names`` are the
    file names in cur/ and new/, none with a line end or NUL in it."""
    head = b"%s %d %d %d %d %d %d\n" % (_LISTING_MAGIC, uidvalidity, *listing.stamp,
                                          listing.first_unseen, listing.recent, len(listing.uids))
    body = "\n".join(names[0]) + "\x00" + "\n".join(names[1])
    path = os.path.join(folder_path, LISTING_FILE)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as f:
        f.write(head)
        f.write(array.array(_UID_ARRAY, listing.uids).tobytes())
        f.write(body.encode("utf-8", "surrogateescape"))
    os.replace(path + ".tmp", path)
