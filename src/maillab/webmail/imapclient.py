"""The webmail's IMAP side: one short IMAP session per web request, as Roundcube does.

Everything here is blocking (the stdlib ``imaplib``) and runs in a worker thread; the lab's
IMAP server records each session in the transcript like any other client's. Only standard
IMAP4rev1 is required; MOVE and UIDPLUS are used when the server offers them.
"""

from __future__ import annotations

import base64
import imaplib
import re
import socket
from dataclasses import dataclass, field

from ..i18n import _

__all__ = ["ImapAccess", "FolderInfo", "MessageRow", "LoginFailed", "MailServerError", "NoSuchFolder",
           "encode_mailbox", "decode_mailbox", "quote", "parse_values"]

# Headers fetched for the message list (a PEEK: listing never marks mail as read), each field
# on its own and cut to LIST_FIELD_BYTES (a partial FETCH, RFC 3501 6.4.5): a stranger's 1.6 MB
# Subject costs the list a kilobyte, and cannot push the other fields out of reach.
LIST_HEADERS = ("DATE", "FROM", "TO", "CC", "SUBJECT", "CONTENT-TYPE")
LIST_FIELD_BYTES = 1024


class MailServerError(Exception):
    """The mail server could not be reached or refused a command; the text is for the reader."""


class LoginFailed(MailServerError):
    """The server said NO to LOGIN: wrong address or password."""


class NoSuchFolder(MailServerError):
    """SELECT/EXAMINE said NO: the folder is not there (any more)."""


# ----------------------------------------------------------------------------- names

def encode_mailbox(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3)."""
    out, run = [], []

    def flush():
        if run:
            data = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if " " <= ch <= "~":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode_mailbox(name: str) -> str:
    """The readable form of a modified UTF-7 folder name (left as it is if it is not valid)."""
    def one(m: re.Match) -> str:
        body = m.group(1)
        if not body:
            return "&"
        b64 = body.replace(",", "/")
        try:
            return base64.b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return m.group(0)
    return re.sub(r"&([A-Za-z0-9+,]*)-", one, name)


def quote(text: str) -> str:
    """An IMAP quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox_arg(name: str) -> str:
    return quote(encode_mailbox(name))


# ----------------------------------------------------------------------------- responses

_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\s*$")


def _responses(items) -> list[tuple[bytes, list[bytes]]]:
    """Group imaplib's data items into whole responses.

    imaplib returns a response with literals as one ``(text before, literal)`` tuple per literal
    followed by the bytes after the last literal; a response without literals is plain bytes.
    Literals are replaced by ``\\x00N\\x00`` markers (NUL cannot occur outside a literal).
    """
    out, text, lits = [], b"", []
    for item in items or ():
        if item is None:
            continue
        if isinstance(item, tuple):
            head, lit = item
            m = _LITERAL_AT_END.search(head)
            text += (head[:m.start()] if m else head) + b"\x00%d\x00" % len(lits)
            lits.append(lit)
        else:
            out.append((text + item, lits))
            text, lits = b"", []
    if text:
        out.append((text, lits))
    return out


class _Reader:
    """A small reader for IMAP response data: atoms, quoted strings, literals, NIL, lists."""

    def __init__(self, text: bytes, lits: list[bytes]):
        self.b, self.i, self.lits = text, 0, lits

    def _space(self):
        while self.i < len(self.b) and self.b[self.i] in b" \r\n":
            self.i += 1

    def at_end(self) -> bool:
        self._space()
        return self.i >= len(self.b)

    def value(self):
        self._space()
        b = self.b
        if self.i >= len(b):
            raise ValueError("unexpected end of response")
        c = b[self.i]
        if c == ord("("):
            self.i += 1
            items = []
            while True:
                self._space()
                if self.i >= len(b):
                    raise ValueError("unclosed list")
                if b[self.i] == ord(")"):
                    self.i += 1
                    return items
                items.append(self.value())
        if c == ord('"'):
            self.i += 1
            out = bytearray()
            while self.i < len(b) and b[self.i] != ord('"'):
                if b[self.i] == ord("\\") and self.i + 1 < len(b):
                    self.i += 1
                out.append(b[self.i])
                self.i += 1
            self.i += 1
            return out.decode("utf-8", "replace")
        if c == 0:
            end = b.index(b"\x00", self.i + 1)
            n = int(b[self.i + 1:end])
            self.i = end + 1
            return self.lits[n]
        start, depth = self.i, 0
        while self.i < len(b):
            ch = b[self.i]
            if ch == ord("["):
                depth += 1
            elif ch == ord("]"):
                depth -= 1
            elif depth == 0 and ch in b" ()":
                break
            self.i += 1
        atom = b[start:self.i].decode("utf-8", "replace")
        return None if atom.upper() == "NIL" else atom


def parse_values(text: bytes, lits: list[bytes] = ()) -> list:
    r = _Reader(text, list(lits))
    out = []
    while not r.at_end():
        out.append(r.value())
    return out


def _fetch_dicts(data) -> list[dict]:
    """``UID FETCH`` data -> one dict per message, keys upper-cased (``"BODY[HEADER...]"``...)."""
    out = []
    for text, lits in _responses(data):
        try:
            values = parse_values(text, lits)
        except (ValueError, IndexError):
            continue
        if len(values) < 2 or not isinstance(values[1], list):
            continue
        items = values[1]
        d = {}
        for k, v in zip(items[0::2], items[1::2]):
            if isinstance(k, str):
                # BODY[HEADER.FIELDS (...)] comes back with the same name; drop an <origin>
                d[re.sub(r"<\d+>$", "", k.upper())] = v
        out.append(d)
    return out


def _header_fields(d: dict) -> bytes:
    """The LIST_HEADERS fields of one FETCH reply as one header block."""
    lines = []
    for name in LIST_HEADERS:
        value = d.get(f"BODY[HEADER.FIELDS ({name})]")
        if isinstance(value, bytes) and value.strip():
            lines.append(value.rstrip(b"\r\n") + b"\r\n")
    return b"".join(lines) + b"\r\n"


def _body_value(d: dict) -> bytes:
    for k, v in d.items():
        if k.startswith("BODY[") or k in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
            if isinstance(v, bytes):
                return v
            if isinstance(v, str):
                return v.encode()
    return b""


# ----------------------------------------------------------------------------- results

@dataclass
class FolderInfo:
    name: str  # as the server names it (decoded from modified UTF-7)
    delimiter: str | None
    attributes: list[str]
    special: str | None  # "\\Sent", "\\Trash", ... (RFC 6154) or None
    messages: int = 0
    unseen: int = 0

    @property
    def selectable(self) -> bool:
        return not any(a.lower() == "\\noselect" for a in self.attributes)


@dataclass
class MessageRow:
    uid: int
    flags: frozenset
    size: int
    header: bytes  # the fetched header fields
    internaldate: str | None = None
    sort_key: float = 0.0


@dataclass
class ListPage:
    total: int
    rows: list[MessageRow] = field(default_factory=list)


SPECIAL_NAMES = {"\\Sent": "Sent", "\\Trash": "Trash", "\\Drafts": "Drafts", "\\Junk": "Junk"}


class ImapAccess:
    """One IMAP session: ``with ImapAccess(host, port, user, password) as imap: ...``."""

    def __init__(self, host: str, port: int, user: str, password: str, *, timeout: float = 15,
                 client_name: str = "maillab webmail", tls_context=None):
        self.host, self.port = host, port
        self.tls_context = tls_context
        self.user, self.password = user, password
        self.timeout = timeout
        self.client_name = client_name
        self.conn: imaplib.IMAP4 | None = None
        self.selected: str | None = None
        self.selected_readonly = True

    # ---- session
    def __enter__(self) -> "ImapAccess":
        try:
            self.conn = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
        except (OSError, imaplib.IMAP4.error) as e:
            raise MailServerError(_("The IMAP server is not reachable ({0}).").format(e)) from None
        try:
            if "LOGINDISABLED" in self.conn.capabilities or (
                    self.tls_context is not None and "STARTTLS" in self.conn.capabilities):
                # A webmail on another host than the mail server encrypts before logging in;
                # the servers' transcripts still show the decrypted conversation.
                self._starttls()
            self._login()
            if "ID" in self.conn.capabilities:
                # RFC 2971: say who we are, so that transcripts and server logs can tell.
                self._cmd("xatom", "ID", f'("name" {quote(self.client_name)})')
        except BaseException:
            self._close()
            raise
        return self

    def _starttls(self):
        """The server takes no password in the clear (RFC 3501 LOGINDISABLED): encrypt first."""
        if "STARTTLS" not in self.conn.capabilities or self.tls_context is None:
            raise MailServerError(_("The IMAP server accepts passwords only over TLS, and the "
                                    "webmail has no way to start TLS with it."))
        try:
            self.conn.starttls(self.tls_context)
        except (OSError, imaplib.IMAP4.error) as e:
            raise MailServerError(_("TLS with the IMAP server failed ({0}).").format(e)) from None

    def _login(self):
        c = self.conn
        try:
            if self.user.isascii() and self.password.isascii():
                c.login(self.user, self.password)
            else:  # LOGIN cannot carry non-ASCII text; AUTHENTICATE PLAIN can (UTF-8)
                payload = f"\0{self.user}\0{self.password}".encode()
                c.authenticate("PLAIN", lambda _challenge: payload)
        except imaplib.IMAP4.error as e:
            if "[UNAVAILABLE]" in str(e):  # RFC 5530: not a wrong password, a server too busy
                raise MailServerError(_("The mail server is not checking passwords for this "
                                        "account right now (too many login attempts): try "
                                        "again in a few seconds.")) from None
            raise LoginFailed(_("The mail server did not accept this address and password.")) from e
        except OSError as e:
            raise MailServerError(_("The connection to the IMAP server broke ({0}).").format(e)) from None

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            try:
                self.conn.logout()
            except (OSError, imaplib.IMAP4.error):
                pass
        self._close()

    def _close(self):
        if self.conn is not None:
            try:
                self.conn.shutdown()
            except OSError:
                pass
            self.conn = None

    @property
    def capabilities(self) -> tuple:
        return self.conn.capabilities if self.conn else ()

    def _cmd(self, method: str, *args):
        """Run an imaplib command; a NO/BAD or a broken connection becomes MailServerError."""
        try:
            typ, data = getattr(self.conn, method)(*args)
        except imaplib.IMAP4.abort as e:
            raise MailServerError(_("The IMAP server closed the connection ({0}).").format(e)) from None
        except imaplib.IMAP4.error as e:
            raise MailServerError(_("The IMAP server refused: {0}").format(e)) from None
        except (OSError, socket.timeout) as e:
            raise MailServerError(_("The connection to the IMAP server broke ({0}).").format(e)) from None
        if typ != "OK":
            text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            raise MailServerError(_("The IMAP server refused: {0}").format(text))
        return data

    # ---- folders
    def folders(self, with_counts: bool = True) -> list[FolderInfo]:
        data = self._cmd("list", '""', '"*"')
        found: list[FolderInfo] = []
        for text, lits in _responses(data):
            try:
                attrs, delim, name = parse_values(text, lits)[:3]
            except (ValueError, IndexError):
                continue
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            name = decode_mailbox(name)
            if name.upper() == "INBOX":
                name = "INBOX"
            attrs = [a for a in attrs or [] if isinstance(a, str)]
            special = next((flag for a in attrs for flag in SPECIAL_NAMES
                            if a.lower() == flag.lower()), None)
            found.append(FolderInfo(name, delim, attrs, special))
        # Servers without SPECIAL-USE: recognise the usual names.
        for f in found:
            if f.special is None:
                for flag, plain in SPECIAL_NAMES.items():
                    if f.name == plain and not any(g.special == flag for g in found):
                        f.special = flag
        if with_counts:
            for f in found:
                if f.selectable:
                    f.messages, f.unseen = self.status(f.name)
        order = {"INBOX": 0, "\\Drafts": 1, "\\Sent": 2, "\\Junk": 3, "\\Trash": 4}
        found.sort(key=lambda f: (order.get("INBOX" if f.name == "INBOX" else f.special, 5),
                                  f.name.lower()))
        return found

    def status(self, folder: str) -> tuple[int, int]:
        data = self._cmd("status", mailbox_arg(folder), "(MESSAGES UNSEEN)")
        for text, lits in _responses(data):
            try:
                values = parse_values(text, lits)
                items = values[-1]
                d = {str(k).upper(): v for k, v in zip(items[0::2], items[1::2])}
                return int(d.get("MESSAGES", 0)), int(d.get("UNSEEN", 0))
            except (ValueError, IndexError, TypeError):
                continue
        return 0, 0

    def special_folder(self, flag: str, create: bool = True) -> str:
        """The name of the Sent/Trash/... folder, created if the account has none."""
        for f in self.folders(with_counts=False):
            if f.special == flag:
                return f.name
        name = SPECIAL_NAMES[flag]
        if create:
            try:
                self._cmd("create", mailbox_arg(name))
            except MailServerError:
                pass  # it may exist under this name without the attribute
        return name

    def select(self, folder: str, readonly: bool = True) -> int:
        """SELECT (or EXAMINE, read-only) a folder; returns its number of messages."""
        if self.selected == folder and (readonly or not self.selected_readonly):
            return self._exists
        try:
            data = self._cmd("select", mailbox_arg(folder), readonly)
        except MailServerError as e:
            if self.conn is not None and self.conn.state in ("AUTH", "SELECTED"):
                raise NoSuchFolder(_("There is no folder named {0}.").format(folder)) from e
            raise
        self.selected, self.selected_readonly = folder, readonly
        try:
            self._exists = int(data[0])
        except (ValueError, TypeError, IndexError):
            self._exists = 0
        return self._exists

    # ---- lists
    def message_page(self, folder: str, page: int, per_page: int, newest_first: bool = True,
                     sort_key=None) -> ListPage:
        """One page of a folder's messages sorted by date (the Date header, else arrival)."""
        total = self.select(folder, readonly=True)
        if total == 0:
            return ListPage(0)
        data = self._cmd("uid", "FETCH", "1:*",
                         f"(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS (DATE)]<0.{LIST_FIELD_BYTES}>)")
        keyed = []
        for d in _fetch_dicts(data):
            if "UID" not in d:
                continue
            uid = int(d["UID"])
            key = sort_key(_body_value(d), d.get("INTERNALDATE")) if sort_key else uid
            keyed.append((key, uid))
        keyed.sort(reverse=newest_first)
        start = max(0, (page - 1) * per_page)
        chosen = [uid for _k, uid in keyed[start:start + per_page]]
        page_rows = ListPage(len(keyed))
        if not chosen:
            return page_rows
        fields = " ".join(f"BODY.PEEK[HEADER.FIELDS ({name})]<0.{LIST_FIELD_BYTES}>"
                          for name in LIST_HEADERS)
        data = self._cmd("uid", "FETCH", ",".join(map(str, chosen)),
                         f"(UID FLAGS RFC822.SIZE INTERNALDATE {fields})")
        rows = {}
        for d in _fetch_dicts(data):
            if "UID" not in d:
                continue
            uid = int(d["UID"])
            flags = frozenset(f for f in (d.get("FLAGS") or []) if isinstance(f, str))
            try:
                size = int(d.get("RFC822.SIZE") or 0)
            except ValueError:
                size = 0
            rows[uid] = MessageRow(uid, flags, size, _header_fields(d), d.get("INTERNALDATE"))
        page_rows.rows = [rows[u] for u in chosen if u in rows]
        return page_rows

    # ---- one message
    def fetch(self, folder: str, uid: int, mark_seen: bool = False) -> tuple[bytes, frozenset]:
        """The whole message and its flags; KeyError if there is no such UID."""
        self.select(folder, readonly=not mark_seen)
        data = self._cmd("uid", "FETCH", str(uid), "(UID FLAGS BODY.PEEK[])")
        for d in _fetch_dicts(data):
            if str(d.get("UID")) == str(uid) and any(k.startswith("BODY[") for k in d):
                flags = frozenset(f for f in (d.get("FLAGS") or []) if isinstance(f, str))
                if mark_seen and "\\Seen" not in flags:
                    self.store(folder, [uid], "+FLAGS.SILENT", ["\\Seen"])
                    flags = flags | {"\\Seen"}
                return _body_value(d), flags
        raise KeyError(uid)

    def store(self, folder: str, uids, op: str, flags) -> None:
        if not uids:
            return
        self.select(folder, readonly=False)
        self._cmd("uid", "STORE", ",".join(map(str, uids)), op, "(" + " ".join(flags) + ")")

    def move(self, folder: str, uids, dest: str) -> None:
        """Move messages to another folder (MOVE, else COPY + \\Deleted + expunge)."""
        if not uids:
            return
        self.select(folder, readonly=False)
        uidset = ",".join(map(str, uids))
        if "MOVE" in self.capabilities:
            self._cmd("uid", "MOVE", uidset, mailbox_arg(dest))
            return
        self._cmd("uid", "COPY", uidset, mailbox_arg(dest))
        self.delete(folder, uids)

    def delete(self, folder: str, uids) -> None:
        """Remove messages for good (\\Deleted, then UID EXPUNGE where the server has UIDPLUS)."""
        if not uids:
            return
        self.store(folder, uids, "+FLAGS.SILENT", ["\\Deleted"])
        if "UIDPLUS" in self.capabilities:
            self._cmd("uid", "EXPUNGE", ",".join(map(str, uids)))
        else:
            self._cmd("expunge")

    def append(self, folder: str, raw: bytes, flags=("\\Seen",)) -> None:
        self._cmd("append", mailbox_arg(folder), "(" + " ".join(flags) + ")", None, raw)
