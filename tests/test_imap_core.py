"""The IMAP core without sockets: bytes in, bytes out."""

from __future__ import annotations

import base64
import calendar
import re

import pytest

from maillab.imap import fetch as fetchmod
from maillab.imap.core import ImapSession, State
from maillab.imap.parser import (MAX_LINE, Cursor, Framer, ParseError, decode_mailbox,
                                 encode_mailbox, parse_datetime, format_datetime)
from maillab.imap.testing import GROUP, PLAIN, SAMPLES
from maillab.net import ServerContext
from maillab.store import Store, to_crlf
from maillab.transcript import Recorder


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store", hash_n=2**10)
    s.add_account("alice", "alice-pw", "example.com")
    s.add_account("bob", "bob-pw", "example.com")
    s.add_account("john", "john-pw", "example.net")
    yield s
    s.close()


@pytest.fixture
def ctx(store):
    return ServerContext(store, Recorder(), "mail.example.com", "example.com")


class Client:
    """Feeds a session and collects what it says."""

    def __init__(self, ctx, **kw):
        self.s = ImapSession(ctx, "test", **kw)
        self.s.greeting()
        self.greeting = self.s.data_to_send()

    def send(self, data: bytes) -> bytes:
        self.s.receive_data(data)
        return self.s.data_to_send()

    def cmd(self, line: str | bytes) -> bytes:
        data = line.encode() if isinstance(line, str) else line
        return self.send(data + b"\r\n")

    def login(self, user="alice", pw="alice-pw"):
        out = self.cmd(f"a LOGIN {user} {pw}")
        assert b"a OK" in out, out
        return self


def lines(out: bytes) -> list[bytes]:
    return out.split(b"\r\n")[:-1]


def fill(store, login="alice", samples=SAMPLES, flags=()):
    folder = store.account(login).folder("INBOX")
    return [folder.deliver(s, flags) for s in samples]


# ----------------------------------------------------------------------------- framing and hints

def test_greeting_lists_capabilities(ctx):
    c = Client(ctx)
    assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"UNSELECT", b"LITERAL+", b"NAMESPACE", b"ID",
                b"SPECIAL-USE", b"SASL-IR", b"AUTH=PLAIN"):
        assert cap in c.greeting
    assert b"STARTTLS" not in c.greeting  # only with a TLS context


def test_missing_tag_gets_untagged_bad_with_example(ctx):
    c = Client(ctx)
    assert c.cmd("LOGIN alice alice-pw") == \
        b"* BAD every command starts with a tag, for example: a1 LOGIN alice password\r\n"
    assert c.cmd("CAPABILITY") == b"* BAD every command starts with a tag, for example: a1 CAPABILITY\r\n"
    assert c.cmd("") .startswith(b"* BAD empty line")
    # the session survives any number of mistakes
    assert b"a1 OK" in c.cmd("a1 NOOP")


def test_unknown_command_and_bad_arguments_get_hints(ctx):
    c = Client(ctx)
    out = c.cmd("a1 HELLO")
    assert out.startswith(b"a1 BAD unknown command HELLO") and b"CAPABILITY" in out
    out = c.cmd("a2 LOGIN alice")
    assert out.startswith(b"a2 BAD LOGIN: ") and b"more arguments" in out
    out = c.cmd('a3 LOGIN "alice')
    assert b"a3 BAD" in out and b'closing "' in out
    out = c.cmd("a4 SELECT INBOX")
    assert out.startswith(b"a4 BAD SELECT: log in first, for example: a1 LOGIN alice password")
    c.login()
    out = c.cmd("a5 FETCH 1 FLAGS")
    assert out.startswith(b"a5 BAD FETCH: select a folder first")
    c.cmd("a6 SELECT INBOX")
    out = c.cmd("a7 FETCH 1 FLAGZ")
    assert b"a7 BAD" in out and b"unknown FETCH item FLAGZ" in out
    out = c.cmd("a8 FETCH 1 FLAGS")
    assert out.startswith(b"a8 BAD FETCH: this folder is empty (* 0 EXISTS)")
    out = c.cmd("a9 UID FOO 1")
    assert out.startswith(b"a9 BAD UID comes before")
    assert b"b OK" in c.cmd("b NOOP")


def test_literal_split_across_reads(ctx):
    c = Client(ctx)
    out = c.send(b"a1 LOGIN {5}\r\n")
    assert out == b"+ Ready for literal data\r\n"
    assert c.s.quickack_wanted
    out = b""
    for byte in b"alice {8}\r\n":
        out += c.send(bytes([byte]))
    assert out == b"+ Ready for literal data\r\n"
    out = c.send(b"alice-")
    assert out == b""
    out = c.send(b"pw\r")
    assert out == b""
    out = c.send(b"\n")
    assert b"a1 OK" in out and c.s.state is State.AUTHENTICATED


def test_non_synchronizing_literal_needs_no_continuation(ctx):
    c = Client(ctx)
    out = c.send(b"a1 LOGIN {5+}\r\nalice {8+}\r\nalice-pw\r\n")
    assert out.startswith(b"a1 OK") and b"+ Ready" not in out


def test_overlong_line_is_refused_and_session_goes_on(ctx):
    c = Client(ctx)
    out = c.send(b"a1 NOOP " + b"x" * (MAX_LINE + 10))
    assert out.startswith(b"* BAD that line is too long")
    out = c.send(b"yyyy\r\na2 NOOP\r\n")
    assert out.startswith(b"a2 OK")


def test_oversized_literals_are_refused(ctx):
    c = Client(ctx).login()
    out = c.send(b"a1 APPEND INBOX {999999999999}\r\n")
    assert out.startswith(b"a1 NO [TOOBIG]")
    # a LITERAL+ one is read and thrown away, not stored
    out = c.send(b"a2 LOGIN {70000+}\r\n" + b"z" * 70000 + b" more\r\na3 NOOP\r\n")
    assert b"a2 NO [TOOBIG]" in out and b"a3 OK" in out
    assert c.s.framer.buffered < 1000


def test_pipelined_commands(ctx):
    c = Client(ctx)
    out = c.send(b"a1 LOGIN alice alice-pw\r\na2 SELECT INBOX\r\na3 LOGOUT\r\n")
    assert re.search(rb"a1 OK.*a2 OK \[READ-WRITE\].*\* BYE.*a3 OK", out, re.S)
    assert c.s.closing


# ----------------------------------------------------------------------------- logging in

def test_login_by_address_and_wrong_password(ctx):
    c = Client(ctx)
    out = c.cmd("a1 LOGIN alice wrong")
    assert out.startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    out = c.cmd("a2 LOGIN john john-pw")  # another domain's account
    assert out.startswith(b"a2 NO [AUTHENTICATIONFAILED]")
    out = c.cmd('a3 LOGIN "alice@example.com" "alice-pw"')
    assert out.startswith(b"a3 OK [CAPABILITY ")
    assert c.s.user == "alice"
    assert b"AUTH=PLAIN" not in c.cmd("a4 CAPABILITY")
    assert c.cmd("a5 LOGIN alice alice-pw").startswith(b"a5 BAD LOGIN: you are logged in already")


def test_authenticate_plain_with_continuation_and_with_initial_response(ctx):
    token = base64.b64encode(b"\0alice\0alice-pw")
    c = Client(ctx)
    assert c.cmd("a1 AUTHENTICATE PLAIN") == b"+ \r\n"
    out = c.send(token + b"\r\n")
    assert out.startswith(b"a1 OK")
    c = Client(ctx)
    assert c.cmd(b"a1 AUTHENTICATE PLAIN " + token).startswith(b"a1 OK")
    c = Client(ctx)
    c.cmd("a1 AUTHENTICATE PLAIN")
    assert c.send(b"*\r\n").startswith(b"a1 BAD authentication cancelled")
    assert c.cmd("a2 AUTHENTICATE PLAIN !!!").startswith(b"a2 BAD")
    bad = base64.b64encode(b"\0alice\0nope")
    assert c.cmd(b"a3 AUTHENTICATE PLAIN " + bad).startswith(b"a3 NO [AUTHENTICATIONFAILED]")
    assert c.cmd("a4 AUTHENTICATE CRAM-MD5").startswith(b"a4 NO unsupported mechanism")


def test_strict_mode_disables_login_without_tls(ctx):
    ctx.options["strict"] = True
    c = Client(ctx)
    assert b"LOGINDISABLED" in c.greeting and b"AUTH=PLAIN" not in c.greeting
    assert c.cmd("a1 LOGIN alice alice-pw").startswith(b"a1 NO [PRIVACYREQUIRED]")
    c = Client(ctx, tls=True)
    assert b"LOGINDISABLED" not in c.greeting
    assert c.cmd("a1 LOGIN alice alice-pw").startswith(b"a1 OK")


def test_starttls_when_a_context_is_configured(ctx):
    c = Client(ctx)
    assert c.cmd("a1 STARTTLS").startswith(b"a1 BAD")
    ctx.options["tls_context"] = object()
    c = Client(ctx)
    assert b"STARTTLS" in c.greeting
    out = c.send(b"a1 STARTTLS\r\na2 LOGIN alice alice-pw\r\n")  # the injected LOGIN is dropped
    assert out == b"a1 OK Begin TLS negotiation now\r\n" and c.s.starttls_wanted
    c.s.tls_started()
    assert b"STARTTLS" not in c.cmd("a3 CAPABILITY")
    assert c.s.state is State.NOT_AUTHENTICATED


def test_logout(ctx):
    c = Client(ctx)
    out = c.cmd("a1 LOGOUT")
    assert out == b"* BYE Logging out, goodbye\r\na1 OK LOGOUT completed\r\n"
    assert c.s.closing


# ----------------------------------------------------------------------------- folders

def test_select_and_examine(ctx, store):
    infos = fill(store)
    store.account("alice").folder("INBOX").store_flags(infos[0].uid, {"\\Seen"})
    c = Client(ctx).login()
    out = c.cmd("a1 SELECT inbox")
    folder = store.account("alice").folder("INBOX")
    assert lines(out) == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
        b"* 5 EXISTS", b"* 4 RECENT", b"* OK [UNSEEN 2] First unseen",
        b"* OK [UIDVALIDITY %d] UIDs valid" % folder.uidvalidity,
        b"* OK [UIDNEXT 6] Predicted next UID",
        b"a1 OK [READ-WRITE] SELECT completed"]
    # \Recent belongs to the first session only
    c2 = Client(ctx).login()
    out = c2.cmd("b1 EXAMINE INBOX")
    assert b"* 0 RECENT" in out and b"[PERMANENTFLAGS ()]" in out and b"b1 OK [READ-ONLY]" in out
    out = c.cmd("a2 SELECT Nope")
    assert b"a2 NO [NONEXISTENT]" in out and c.s.state is State.AUTHENTICATED


def test_create_rename_delete_list(ctx, store):
    c = Client(ctx).login()
    assert c.cmd("a1 CREATE Archive").startswith(b"a1 OK")
    assert c.cmd("a2 CREATE Archive").startswith(b"a2 NO [ALREADYEXISTS]")
    assert c.cmd("a3 CREATE Work.2024.Q1").startswith(b"a3 OK")
    assert c.cmd("a4 CREATE INBOX").startswith(b"a4 NO")
    assert c.cmd('a5 CREATE "bad*name"').startswith(b"a5 NO")
    out = c.cmd('a6 LIST "" *')
    assert b'* LIST (\\HasNoChildren) "." INBOX' in out
    assert b'* LIST (\\HasNoChildren \\Sent) "." Sent' in out
    assert b'* LIST (\\Noselect \\HasChildren) "." Work' in out
    assert b'* LIST (\\Noselect \\HasChildren) "." Work.2024' in out
    assert b'* LIST (\\HasNoChildren) "." Work.2024.Q1' in out
    out = c.cmd('a7 LIST "" %')
    assert b"Work.2024" not in out and b'"." Work\r\n' in out
    out = c.cmd('a8 LIST Work. %')
    assert lines(out)[:-1] == [b'* LIST (\\Noselect \\HasChildren) "." Work.2024']
    assert c.cmd('a9 LIST "" ""') == b'* LIST (\\Noselect) "." ""\r\na9 OK LIST completed\r\n'
    assert c.cmd("b0 RENAME Work.2024 Old").startswith(b"b0 NO [NONEXISTENT]")  # only implied
    c.cmd("b1 CREATE Work")
    assert c.cmd("b1 RENAME Work Old").startswith(b"b1 OK")  # its sub-folders move along
    assert store.account("alice").folder_names() == ["INBOX", "Archive", "Drafts", "Junk", "Old",
                                                     "Old.2024.Q1", "Sent", "Trash"]
    assert c.cmd("b1 RENAME Old.2024.Q1 Old.Q1").startswith(b"b1 OK")
    assert c.cmd("b2 DELETE Old.Q1").startswith(b"b2 OK")
    assert c.cmd("b3 DELETE Old.Q1").startswith(b"b3 NO [NONEXISTENT]")
    assert c.cmd("b4 DELETE INBOX").startswith(b"b4 NO")
    assert c.cmd("b5 RENAME Nope X").startswith(b"b5 NO [NONEXISTENT]")


def test_unicode_folder_names_use_modified_utf7(ctx, store):
    c = Client(ctx).login()
    assert c.cmd("a1 CREATE Entw&APw-rfe").startswith(b"a1 OK")
    assert "Entwürfe" in store.account("alice").folder_names()
    assert b'"." Entw&APw-rfe' in c.cmd('a2 LIST "" *')
    assert encode_mailbox("日本語 & more") == b"&ZeVnLIqe- &- more"
    assert decode_mailbox(b"&ZeVnLIqe- &- more") == "日本語 & more"


def test_subscribe_lsub(ctx, store):
    c = Client(ctx).login()
    out = c.cmd('a1 LSUB "" *')
    assert b'* LSUB () "." INBOX' in out and b'* LSUB (\\Sent) "." Sent' in out
    c.cmd("a2 CREATE Lists.python")
    assert c.cmd("a3 SUBSCRIBE Lists.python").startswith(b"a3 OK")
    out = c.cmd('a4 LSUB "" %')
    assert b'* LSUB (\\Noselect) "." Lists' in out
    assert c.cmd("a5 UNSUBSCRIBE Sent").startswith(b"a5 OK")
    assert b"Sent" not in c.cmd('a6 LSUB "" *')
    # kept on disk: a new store sees it
    again = Store(store.root, hash_n=2**10)
    assert "Lists.python" in again.account("alice").subscriptions()
    assert "Sent" not in again.account("alice").subscriptions()
    out = c.cmd('a7 LIST (SUBSCRIBED) "" * RETURN (CHILDREN)')
    assert b'* LIST (\\Subscribed \\HasNoChildren) "." Lists.python' in out


def test_status_and_namespace(ctx, store):
    fill(store, flags=())
    store.account("alice").folder("INBOX").store_flags(1, {"\\Seen"})
    c = Client(ctx).login()
    out = c.cmd("a1 STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)")
    assert lines(out)[0] == b"* STATUS INBOX (MESSAGES 5 RECENT 4 UIDNEXT 6 UNSEEN 4)"
    assert c.cmd("a2 STATUS INBOX (SIZE)").startswith(b"a2 BAD")
    assert c.cmd("a3 NAMESPACE").startswith(b'* NAMESPACE (("" ".")) NIL NIL')
    assert c.cmd('a4 ID ("name" "test")').startswith(b'* ID ("name" "maillab"')
    assert c.cmd("a5 ID NIL").startswith(b'* ID ')
    assert c.cmd("a6 ENABLE CONDSTORE UTF8=ACCEPT") == b"* ENABLED\r\na6 OK ENABLE completed\r\n"


def test_append_with_flags_and_date(ctx, store):
    c = Client(ctx).login()
    msg = to_crlf(PLAIN)
    out = c.send(b'a1 APPEND Sent (\\Seen $Important) "05-Feb-2024 10:20:30 +0100" {%d}\r\n' % len(msg))
    assert out == b"+ Ready for literal data\r\n"
    out = c.send(msg + b"\r\n")
    folder = store.account("alice").folder("Sent")
    assert out == b"a1 OK [APPENDUID %d 1] APPEND completed\r\n" % folder.uidvalidity
    info = folder.get(1)
    assert folder.flags_of(1) == {"\\Seen", "$Important"}
    assert info.internaldate == parse_datetime("05-Feb-2024 10:20:30 +0100")
    assert folder.read(1) == msg
    out = c.send(b"a2 APPEND Nope {%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert out.startswith(b"a2 NO [TRYCREATE]")
    out = c.send(b"a3 APPEND INBOX (\\Bogus) {1+}\r\nx\r\n")
    assert out.startswith(b"a3 BAD")


# ----------------------------------------------------------------------------- FETCH

def fetch(c, what: str) -> bytes:
    out = c.cmd("f " + what)
    assert out.endswith(b"f OK FETCH completed\r\n") or out.endswith(b"f OK UID FETCH completed\r\n"), out
    return out


@pytest.fixture
def selected(ctx, store):
    fill(store)
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    return c


def test_fetch_simple_items(selected, store):
    folder = store.account("alice").folder("INBOX")
    info = folder.get(1)
    out = fetch(selected, "FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE)")
    assert lines(out)[0] == (b'* 1 FETCH (UID 1 FLAGS (\\Recent) INTERNALDATE "%s" RFC822.SIZE %d)'
                             % (format_datetime(info.internaldate).encode(), info.size))
    out = fetch(selected, "FETCH 1 FAST")
    assert b"FLAGS" in out and b"INTERNALDATE" in out and b"ENVELOPE" not in out
    out = fetch(selected, "FETCH 1 ALL")
    assert b"ENVELOPE (" in out and b"BODY " not in out
    out = fetch(selected, "FETCH 1 FULL")
    assert b"ENVELOPE (" in out and b" BODY (" in out


def test_fetch_rfc822_sets_seen_but_peek_does_not(selected, store):
    folder = store.account("alice").folder("INBOX")
    raw = to_crlf(PLAIN)
    out = fetch(selected, "FETCH 1 BODY.PEEK[]")
    assert out.startswith(b"* 1 FETCH (BODY[] {%d}\r\n" % len(raw) + raw + b")")
    assert "\\Seen" not in folder.flags_of(1)
    out = fetch(selected, "FETCH 1 RFC822.HEADER")
    assert "\\Seen" not in folder.flags_of(1)
    header = raw[:raw.index(b"\r\n\r\n") + 4]
    assert out.startswith(b"* 1 FETCH (RFC822.HEADER {%d}\r\n" % len(header) + header + b")")
    out = fetch(selected, "FETCH 1 RFC822")
    assert out.startswith(b"* 1 FETCH (RFC822 {%d}\r\n" % len(raw) + raw + b" FLAGS (\\Seen \\Recent))")
    out = fetch(selected, "FETCH 2 BODY[TEXT]")
    assert b"FLAGS (\\Seen \\Recent)" in out
    out = fetch(selected, "FETCH 3 RFC822.TEXT")
    assert b"FLAGS (\\Seen \\Recent)" in out


def test_fetch_envelope(selected):
    out = fetch(selected, "FETCH 1:5 ENVELOPE")
    env = lines(out)
    assert env[0] == (b'* 1 FETCH (ENVELOPE ("Mon, 1 Jan 2024 10:00:00 +0100" "Lunch on Friday?" '
                      b'(("Bob Builder" NIL "bob" "example.com")) (("Bob Builder" NIL "bob" "example.com")) '
                      b'(("Bob Builder" NIL "bob" "example.com")) '
                      b'(("Alice" NIL "alice" "example.com")(NIL NIL "carol" "example.org")) '
                      b'(("Dave, the reviewer" NIL "dave" "example.net")) NIL NIL "<lunch-1@example.com>"))')
    # RFC 2047 words stay encoded in ENVELOPE; In-Reply-To is there
    assert b'"=?UTF-8?B?R3LDvMOfZSBhdXMgQmVybGlu?=" (("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.de"))' in env[1]
    assert b'"<lunch-1@example.com>" "<berlin-2@example.de>"))' in env[1]
    # Reply-To and Bcc
    assert b'(("Carol Replies" NIL "replies" "example.org"))' in env[2]
    assert b'((NIL NIL "archive" "example.org"))' in env[2]
    # groups, a quoted name with escaped quotes, a comment as name, a folded subject
    assert b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))' in env[4]
    assert (b'((NIL NIL "Friends" NIL)(NIL NIL "frank" "example.com")("Grace" NIL "grace" "example.com")'
            b'(NIL NIL NIL NIL)("Henry H" NIL "henry" "example.com"))') in env[4]
    assert b'(("Eve \\"the\\" Example" NIL "eve" "example.com"))' in env[4]
    assert b'((NIL NIL "list-bounces" "lists.example.com"))' in env[4]
    assert b'"A group, a comment and a very long header line that is folded onto a second line"' in env[4]


def test_fetch_bodystructure(selected):
    out = fetch(selected, "FETCH 1:5 BODYSTRUCTURE")
    bs = lines(out)
    assert bs[0] == (b'* 1 FETCH (BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 52 5 '
                     b'NIL NIL NIL NIL))')
    assert bs[1] == (b'* 2 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL '
                     b'"quoted-printable" 55 1 NIL NIL NIL NIL)("text" "html" ("charset" "utf-8") NIL NIL '
                     b'"quoted-printable" 67 0 NIL NIL NIL NIL) "alternative" ("boundary" "alt-boundary-42") '
                     b'NIL NIL NIL))')
    assert (b'("application" "pdf" ("name" "report.pdf") "<part3@example.org>" "Quarterly report" "base64" '
            b'204 NIL ("attachment" ("filename" "report.pdf")) NIL NIL) "mixed" ("boundary" "mixed-1") '
            b'NIL NIL NIL))') in bs[2]
    assert b'("message" "rfc822" NIL NIL NIL "7bit" 435 ("Mon, 1 Jan 2024 10:00:00 +0100"' in bs[3]
    assert b'"alternative" ("boundary" "inner") NIL NIL NIL) 17 NIL NIL NIL NIL) "mixed"' in bs[3]
    out = fetch(selected, "FETCH 2 BODY")
    assert lines(out)[0] == (b'* 2 FETCH (BODY (("text" "plain" ("charset" "utf-8") NIL NIL '
                             b'"quoted-printable" 55 1)("text" "html" ("charset" "utf-8") NIL NIL '
                             b'"quoted-printable" 67 0) "alternative"))')


def _body(out: bytes, label: bytes) -> bytes:
    m = re.search(re.escape(label) + rb" \{(\d+)\}\r\n", out)
    assert m, (label, out)
    return out[m.end():m.end() + int(m.group(1))]


def test_fetch_sections(selected):
    out = fetch(selected, "FETCH 3 (BODY.PEEK[1] BODY.PEEK[1.1] BODY.PEEK[1.2.MIME] BODY.PEEK[2] "
                          "BODY.PEEK[2.MIME] BODY.PEEK[HEADER.FIELDS (Subject FROM)] "
                          "BODY.PEEK[HEADER.FIELDS.NOT (Subject From Date To Bcc Reply-To MIME-Version "
                          "Content-Type)] BODY.PEEK[TEXT]<2.5> BODY.PEEK[9])")
    assert _body(out, b"BODY[1]").startswith(b"--alt-2\r\nContent-Type: text/plain")
    assert _body(out, b"BODY[1.1]") == b"Please find the report attached."
    assert _body(out, b"BODY[1.2.MIME]") == b"Content-Type: text/html; charset=us-ascii\r\n\r\n"
    assert _body(out, b"BODY[2]").startswith(b"JVBERi0xLjQK") and _body(out, b"BODY[2]").endswith(b"iago0MgplbmRvYmoK")
    assert _body(out, b"BODY[2.MIME]").startswith(b'Content-Type: application/pdf; name="report.pdf"\r\n')
    assert _body(out, b"BODY[HEADER.FIELDS (SUBJECT FROM)]") == \
        b"From: Carol <carol@example.org>\r\nSubject: The report (with attachment)\r\n\r\n"
    assert _body(out, b"BODY[HEADER.FIELDS.NOT (SUBJECT FROM DATE TO BCC REPLY-TO MIME-VERSION "
                      b"CONTENT-TYPE)]") == b"Message-ID: <report-3@example.org>\r\n\r\n"
    assert _body(out, b"BODY[TEXT]<2>") == b"mixed"
    assert _body(out, b"BODY[9]") == b""
    out = fetch(selected, "FETCH 4 (BODY.PEEK[2] BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] "
                          "BODY.PEEK[2.2.MIME] BODY.PEEK[2.HEADER.FIELDS (SUBJECT)])")
    assert _body(out, b"BODY[2]").startswith(b"Date: Mon, 1 Jan 2024") and _body(out, b"BODY[2]").endswith(b"--inner--\r\n")
    assert _body(out, b"BODY[2.HEADER]").endswith(b'boundary="inner"\r\n\r\n')
    assert _body(out, b"BODY[2.TEXT]").startswith(b"--inner\r\n")
    assert _body(out, b"BODY[2.1]") == b"shall we have lunch on Friday?"
    assert _body(out, b"BODY[2.2.MIME]") == b"Content-Type: text/html; charset=us-ascii\r\n\r\n"
    assert _body(out, b"BODY[2.HEADER.FIELDS (SUBJECT)]") == b"Subject: Lunch on Friday?\r\n\r\n"
    out = fetch(selected, "FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[]<0.4>)")
    assert _body(out, b"BODY[1]") == to_crlf(PLAIN).split(b"\r\n\r\n", 1)[1]
    assert _body(out, b"BODY[]<0>") == b"Retu"


def test_uid_fetch_adds_uid_and_ignores_missing(selected):
    out = fetch(selected, "UID FETCH 2,4:* FLAGS")
    assert [l[:20] for l in lines(out)[:-1]] == [b"* 2 FETCH (UID 2 FLA", b"* 4 FETCH (UID 4 FLA",
                                                  b"* 5 FETCH (UID 5 FLA"]
    out = selected.cmd("x UID FETCH 100:* FLAGS")  # n:* always takes in the highest UID
    assert lines(out) == [b"* 5 FETCH (UID 5 FLAGS (\\Recent))", b"x OK UID FETCH completed"]
    assert lines(selected.cmd("x UID FETCH 100:200 FLAGS")) == [b"x OK UID FETCH completed"]


# ----------------------------------------------------------------------------- SEARCH

SEARCHES = {
    "ALL": [1, 2, 3, 4, 5],
    "FROM bob": [1],
    "FROM Müller": [2],  # decoded RFC 2047 display name, raw UTF-8 typed by hand
    "SUBJECT grüße": [2],
    "CHARSET UTF-8 SUBJECT {7}\r\ngrüße": [2],
    'SUBJECT "lunch on"': [1, 4],
    "TO alice": [1, 2, 3, 4],
    "CC grace": [5],
    "BCC archive": [3],
    "HEADER X-Priority 1": [5],
    'HEADER Message-ID ""': [1, 2, 3, 4, 5],
    "HEADER In-Reply-To lunch": [2],
    "BODY schön": [2],  # quoted-printable decoded
    "BODY report": [3],
    "TEXT report": [3],
    "TEXT pdf": [3],  # MIME headers of parts count as text
    "TEXT list-bounces": [5],
    "OR FROM bob FROM carol": [1, 3],
    "NOT FROM bob": [2, 3, 4, 5],
    "SENTBEFORE 3-Jan-2024": [1, 2],
    "SENTON 2-Jan-2024": [2],
    "SENTSINCE 4-Jan-2024": [4, 5],
    "LARGER 750": [3, 4],
    "SMALLER 400": [1],
    "2:4": [2, 3, 4],
    "*": [5],
    "UID 1,5": [1, 5],
    "(OR 1 2) (OR 2 3)": [2],
    "SEEN": [1],
    "UNSEEN": [2, 3, 4, 5],
    "RECENT": [1, 2, 3, 4, 5],
    "NEW": [2, 3, 4, 5],
    "OLD": [],
    "FLAGGED": [2],
    "UNFLAGGED": [1, 3, 4, 5],
    "ANSWERED": [3],
    "UNANSWERED": [1, 2, 4, 5],
    "DELETED": [4],
    "UNDELETED": [1, 2, 3, 5],
    "DRAFT": [5],
    "UNDRAFT": [1, 2, 3, 4],
    "KEYWORD $Important": [5],
    "UNKEYWORD $Important": [1, 2, 3, 4],
}


def test_search_every_key(ctx, store):
    folder = store.account("alice").folder("INBOX")
    flags = [{"\\Seen"}, {"\\Flagged"}, {"\\Answered"}, {"\\Deleted"}, {"\\Draft", "$Important"}]
    for sample, f in zip(SAMPLES, flags):
        folder.deliver(sample, f)  # delivered with flags: still \Recent
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    for query, expected in SEARCHES.items():
        out = c.send(b"q SEARCH " + query.encode() + b"\r\n")
        out = b"".join(l for l in out.split(b"+ Ready for literal data\r\n"))
        assert lines(out) == [b"* SEARCH" + b"".join(b" %d" % n for n in expected),
                              b"q OK SEARCH completed"], query
    # date keys use the internal date
    today = format_datetime(folder.get(1).internaldate)[:11].strip()
    assert lines(c.cmd(f"q SEARCH ON {today}"))[0] == b"* SEARCH 1 2 3 4 5"
    assert lines(c.cmd(f"q SEARCH BEFORE {today}"))[0] == b"* SEARCH"
    assert lines(c.cmd(f"q SEARCH SINCE {today}"))[0] == b"* SEARCH 1 2 3 4 5"
    assert lines(c.cmd("q UID SEARCH FROM carol"))[0] == b"* SEARCH 3"
    assert c.cmd("q SEARCH CHARSET KLINGON ALL").startswith(b"q NO [BADCHARSET")
    assert c.cmd("q SEARCH FROBNICATE").startswith(b"q BAD SEARCH: unknown search key FROBNICATE")
    assert c.cmd("q SEARCH SINCE yesterday").startswith(b"q BAD SEARCH: dates look like 1-Feb-2024")


# ----------------------------------------------------------------------------- STORE, COPY, MOVE, EXPUNGE

def test_store_variants(selected, store):
    folder = store.account("alice").folder("INBOX")
    out = selected.cmd("a STORE 1 +FLAGS (\\Seen \\Flagged)")
    assert lines(out) == [b"* 1 FETCH (FLAGS (\\Flagged \\Seen \\Recent))", b"a OK STORE completed"]
    out = selected.cmd("a STORE 1 -FLAGS \\Seen")
    assert lines(out) == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent))", b"a OK STORE completed"]
    out = selected.cmd("a STORE 1:2 FLAGS.SILENT (\\Answered todo)")
    # the new keyword is announced (FLAGS, PERMANENTFLAGS), the flags themselves are not
    assert lines(out) == [b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft todo)",
                          b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft todo \\*)] "
                          b"Flags permitted", b"a OK STORE completed"]
    assert folder.flags_of(2) == {"\\Answered", "todo"}
    out = selected.cmd("a UID STORE 2 +FLAGS (done)")
    assert lines(out)[0] == b"* 2 FETCH (FLAGS (\\Answered done todo \\Recent) UID 2)"
    assert selected.cmd("a STORE 1 +FLAGS (\\Recent)").startswith(b"a BAD")
    assert selected.cmd("a STORE 1 +FLAGS (\\Bogus)").startswith(b"a BAD")
    assert selected.cmd("a STORE 1 PLUSFLAGS (x)").startswith(b"a BAD")
    # keywords survive a restart
    again = Store(store.root, hash_n=2**10)
    assert again.account("alice").folder("INBOX").flags_of(2) == {"\\Answered", "todo", "done"}
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft todo done)" in selected.cmd("a SELECT INBOX")


def test_copy_move_expunge(selected, store):
    acct = store.account("alice")
    out = selected.cmd("a COPY 2:3 Trash")
    trash = acct.folder("Trash")
    assert lines(out) == [b"a OK [COPYUID %d 2:3 1:2] COPY completed" % trash.uidvalidity]
    assert trash.read(1) == acct.folder("INBOX").read(2)
    assert selected.cmd("a COPY 1 Nope").startswith(b"a NO [TRYCREATE]")
    out = selected.cmd("a UID MOVE 4:5 Junk")
    junk = acct.folder("Junk")
    assert lines(out) == [b"* OK [COPYUID %d 4:5 1:2] Moved" % junk.uidvalidity,
                          b"* 5 EXPUNGE", b"* 4 EXPUNGE", b"a OK UID MOVE completed"]
    out = selected.cmd("a STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    out = selected.cmd("a EXPUNGE")
    assert lines(out) == [b"* 3 EXPUNGE", b"* 1 EXPUNGE", b"a OK EXPUNGE completed"]
    assert [m.uid for m in acct.folder("INBOX").messages()] == [2]
    selected.cmd("a STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert lines(selected.cmd("a UID EXPUNGE 1"))[0] == b"a OK EXPUNGE completed"
    assert lines(selected.cmd("a UID EXPUNGE 2"))[0] == b"* 1 EXPUNGE"


def test_close_expunges_silently_and_unselect_does_not(ctx, store):
    fill(store)
    c = Client(ctx).login()
    c.cmd("a SELECT INBOX")
    c.cmd("a STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert c.cmd("a UNSELECT") == b"a OK UNSELECT completed\r\n"
    assert len(store.account("alice").folder("INBOX")) == 5
    c.cmd("a EXAMINE INBOX")
    assert c.cmd("a CLOSE") == b"a OK CLOSE completed\r\n"  # read-only: nothing expunged
    assert len(store.account("alice").folder("INBOX")) == 5
    c.cmd("a SELECT INBOX")
    assert c.cmd("a CLOSE") == b"a OK CLOSE completed\r\n"
    assert len(store.account("alice").folder("INBOX")) == 4
    assert c.s.state is State.AUTHENTICATED


def test_examine_is_read_only(ctx, store):
    fill(store)
    c = Client(ctx).login()
    c.cmd("a EXAMINE INBOX")
    fetch(c, "FETCH 1 BODY[]")
    assert "\\Seen" not in store.account("alice").folder("INBOX").flags_of(1)
    assert c.cmd("a STORE 1 +FLAGS (\\Seen)").startswith(b"a NO [READ-ONLY]")
    assert c.cmd("a EXPUNGE").startswith(b"a NO [READ-ONLY]")
    assert c.cmd("a MOVE 1 Trash").startswith(b"a NO [READ-ONLY]")


# ----------------------------------------------------------------------------- other sessions' changes

def test_changes_by_others_are_announced_when_allowed(ctx, store):
    infos = fill(store)
    folder = store.account("alice").folder("INBOX")
    c = Client(ctx).login()
    c.cmd("a SELECT INBOX")
    folder.deliver(PLAIN)  # e.g. SMTP
    folder.expunge([infos[1].uid])  # e.g. POP3
    folder.store_flags(infos[0].uid, {"\\Flagged"}, "add")  # another IMAP session
    # no EXPUNGE during FETCH: message 2 keeps its number (and has gone: NO, as RFC 2180 allows)
    out = c.cmd("a FETCH 1:2 FLAGS")
    assert b"EXPUNGE\r\n" not in out
    assert lines(out)[:3] == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent))", b"* 6 EXISTS", b"* 6 RECENT"]
    assert out.endswith(b"a NO [EXPUNGEISSUED] some of those messages were deleted meanwhile\r\n")
    out = c.cmd("a SEARCH ALL")
    assert b"EXPUNGE" not in out and b"* SEARCH 1 3 4 5 6" in out
    out = c.cmd("a NOOP")
    assert lines(out) == [b"* 2 EXPUNGE", b"a OK NOOP completed"]
    assert lines(c.cmd("a FETCH 5 UID")) == [b"* 5 FETCH (UID 6)", b"a OK FETCH completed"]
    # UID commands may see EXPUNGE at once
    folder.expunge([infos[2].uid])
    assert lines(c.cmd("a UID FETCH 1 UID"))[:2] == [b"* 1 FETCH (UID 1)", b"* 2 EXPUNGE"]


def test_idle_reports_at_once(ctx, store):
    fill(store, samples=[PLAIN])
    folder = store.account("alice").folder("INBOX")
    woken = []
    s = ImapSession(ctx, "t", wakeup=lambda: woken.append(1))
    s.receive_data(b"a LOGIN alice alice-pw\r\nb SELECT INBOX\r\nc IDLE\r\n")
    assert s.data_to_send().endswith(b"+ idling\r\n")
    folder.deliver(GROUP)
    assert woken
    s.changes_arrived()
    assert s.data_to_send() == b"* 2 EXISTS\r\n* 2 RECENT\r\n"
    folder.expunge([1])
    s.changes_arrived()
    assert s.data_to_send() == b"* 1 EXPUNGE\r\n"
    s.receive_data(b"DONE\r\n")
    assert s.data_to_send() == b"c OK IDLE terminated\r\n"
    s.receive_data(b"d IDLE\r\n")
    s.receive_data(b"nope\r\n")
    assert s.data_to_send().endswith(b"d BAD IDLE ends with the word DONE on a line by itself\r\n")
    s.connection_lost()
    assert not folder._listeners


# ----------------------------------------------------------------------------- small parts

def test_framer_reports_literals():
    f = Framer()
    f.feed(b"a1 APPEND INBOX {3}\r\nab")
    ev = f.next_event()
    assert ev.size == 3 and ev.synchronizing and ev.prefix == b"a1 APPEND INBOX "
    f.accept_literal()
    assert f.next_event() is None
    f.feed(b"c\r\n")
    assert f.next_event().raw == b"a1 APPEND INBOX {3}\r\nabc\r\n"


def test_cursor_strings_and_sets():
    c = Cursor(b'"a \\"b\\"" atom {3}\r\nxyz 1:3,5,*\r\n')
    assert c.astring() == b'a "b"'
    c.sp()
    assert c.astring() == b"atom"
    c.sp()
    assert c.astring() == b"xyz"
    c.sp()
    s = c.seqset()
    assert s.select([1, 2, 3, 4, 5, 6, 7], 7) == [1, 2, 3, 5, 7]
    with pytest.raises(ParseError):
        Cursor(b"0:3").seqset()


def test_datetime_round_trip():
    t = parse_datetime("17-Jul-1996 02:44:25 -0700")
    assert t == calendar.timegm((1996, 7, 17, 9, 44, 25))
    assert parse_datetime(format_datetime(t)) == t


def test_parse_message_without_boundary_end():
    raw = to_crlf(b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\none\n--x\n\ntwo\n")
    root = fetchmod.parse_message(raw)
    assert [p.body for p in root.children] == [b"one", b"two\r\n"]


def test_rename_inbox_moves_its_messages(ctx, store):
    """RFC 3501 6.3.5: renaming INBOX moves its mail to the new folder and leaves INBOX empty
    (Dovecot refuses with NO [CANNOT]; maillab does what the RFC describes)."""
    fill(store)
    c = Client(ctx).login()
    assert c.cmd("a RENAME INBOX Saved").startswith(b"a OK")
    acct = store.account("alice")
    assert len(acct.folder("INBOX")) == 0 and len(acct.folder("Saved")) == 5
    assert lines(c.cmd("a STATUS INBOX (MESSAGES UIDNEXT)"))[0] == b"* STATUS INBOX (MESSAGES 0 UIDNEXT 6)"


# ----------------------------------------------------------------------------- issue 10: hostile input

@pytest.mark.parametrize("value", [b"text/plain)", b")", b"text/plain; charset=utf-8) x", b"a)b)c"])
def test_a_stray_parenthesis_in_a_mime_header_ends(value):
    """A ')' outside a comment made the MIME tokenizer spin for ever (memory growing ~100 MB/s)."""
    from maillab.imap.testing import returns_within
    assert returns_within(5, fetchmod.parse_content_type, value)
    assert returns_within(5, fetchmod.parse_disposition, value)
    raw = (b"Content-Type: " + value + b"\r\nContent-Disposition: " + value +
           b"\r\nContent-Language: " + value + b"\r\n\r\nx")
    assert returns_within(5, lambda: fetchmod.bodystructure(fetchmod.parse_message(raw)))
    assert fetchmod.parse_content_type(b"text/plain) ; charset=x") == (b"text", b"plain", [(b"charset", b"x")])


def test_fetch_bodystructure_of_a_message_with_a_stray_parenthesis(ctx, store):
    store.account("alice").folder("INBOX").deliver(b"Content-Type: text/plain)\r\n\r\nx\r\n")
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    from maillab.imap.testing import returns_within
    assert returns_within(5, c.cmd, "f FETCH 1 BODYSTRUCTURE")
    assert lines(c.cmd("f FETCH 1 BODYSTRUCTURE")) == [
        b'* 1 FETCH (BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL))',
        b"f OK FETCH completed"]


def test_list_with_many_wildcards_answers_at_once(ctx, store):
    """80 stars made the regex backtrack for 71 s on this machine, holding the GIL."""
    from maillab.imap.testing import returns_within
    c = Client(ctx).login()
    assert returns_within(5, c.cmd, 'l LIST "" "' + "*" * 80 + 'X"')
    assert returns_within(5, c.cmd, 'l LIST "" "' + "%*" * 2000 + 'Q"')
    assert lines(c.cmd('l LIST "" "' + "*" * 80 + 'X"')) == [b'* LIST (\\HasNoChildren) "." INBOX',
                                                           b"l OK LIST completed"]


@pytest.mark.parametrize("pattern,name,expected", [
    ("*", "a.b.c", True), ("%", "a.b", False), ("%", "a", True), ("a.%", "a.b", True),
    ("a.%", "a.b.c", False), ("a.*", "a.b.c", True), ("a%c", "abc", True), ("a%c", "a.c", False),
    ("a*c", "a.b.c", True), ("%.%", "a.b", True), ("%.%", "a.b.c", False), ("*%", "a.b", True),
    ("%*", "a.b", True), ("%%", "a.b", False), ("", "", True), ("", "a", False), ("a*", "", False),
    ("*.c", "a.b.c", True), ("%.c", "a.b.c", False), ("**b", "ab", True), ("a%%%b", "axxb", True),
])
def test_list_pattern_semantics(pattern, name, expected):
    """RFC 3501 6.3.8: * matches anything, % anything but the hierarchy delimiter."""
    from maillab.imap.core import list_pattern
    assert list_pattern(pattern)(name) is expected
    assert list_pattern("inbox", ignore_case=True)("INBOX")
    assert not list_pattern("inbox")("INBOX")


def test_fetch_answers_repeated_items_once(selected):
    out = selected.cmd("f FETCH 1 (UID BODY.PEEK[] UID BODY.PEEK[] FLAGS FLAGS)")
    assert out.count(b"BODY[] {") == 1 and out.count(b"UID 1") == 1 and out.count(b"FLAGS (") == 1
    assert out.endswith(b"f OK FETCH completed\r\n")
    # BODY[] and BODY.PEEK[] stay two items, as in Dovecot
    assert selected.cmd("f FETCH 1 (BODY.PEEK[]<0.5> BODY[]<0.5>)").count(b"BODY[]<0> {5}") == 2


def test_a_fetch_answer_is_made_piece_by_piece(ctx, store):
    """A long FETCH answer is made as the server sends it: never one giant bytes object."""
    big = b"Subject: big\r\n\r\n" + b"0123456789" * 30_000  # 300 kB
    for _ in range(8):
        store.account("alice").folder("INBOX").deliver(big)
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    c.s.receive_data(b"f FETCH 1:* (UID BODY.PEEK[])\r\nn NOOP\r\n")
    pieces = []
    while True:
        piece = c.s.data_to_send(64 * 1024)
        if not piece:
            break
        pieces.append(piece)
    assert max(len(p) for p in pieces) <= 64 * 1024 + len(big) + 100  # a limit, then one item
    assert len(pieces) > 8
    answer = b"".join(pieces)
    assert answer.count(b"BODY[] {%d}\r\n" % len(big) + big + b")\r\n") == 8
    assert answer.endswith(b"f OK FETCH completed\r\nn OK NOOP completed\r\n")  # NOOP waited


def test_a_fetch_that_would_answer_too_much_is_refused(selected, monkeypatch):
    """600 distinct partial items of one message once built a 600 MB reply in memory."""
    import maillab.imap.core as coremod
    monkeypatch.setattr(coremod, "MAX_FETCH_OUTPUT", 20_000)
    items = " ".join(f"BODY.PEEK[]<{i}.1000>" for i in range(600))
    out = selected.cmd(f"f FETCH 1 ({items})")
    assert lines(out) == [lines(out)[0]] and out.startswith(b"f NO [LIMIT] that FETCH would answer")
    assert b"* 1 FETCH" not in out
    # structure items are not estimated beforehand: the answer stops when it grows too big
    monkeypatch.setattr(coremod, "MAX_FETCH_OUTPUT", 1_000)
    out = lines(selected.cmd("f FETCH 1:* BODYSTRUCTURE"))
    assert 1 <= len(out) - 1 < 5 and out[-1].startswith(b"f NO [LIMIT] FETCH stopped after")
    assert all(line.startswith(b"* ") and line.endswith(b")") for line in out[:-1])


def test_a_non_ascii_fetch_item_is_a_syntax_error(selected):
    for item in (b"B\xc3\xa9", b"\xff", b"BODY.PEEK[\xc3\xa9]", b"(UID \xc3\xa9)"):
        out = selected.send(b"f FETCH 1 " + item + b"\r\n")
        assert out.startswith(b"f BAD FETCH:"), out


def test_long_folder_names_are_refused_without_internal_errors(ctx, store):
    """A folder name over 255 bytes reached the file system: NO [SERVERBUG] with the store's path."""
    fill(store)
    c = Client(ctx).login()
    long = "x" * 300
    replies = [c.cmd(f"a CREATE {long}"), c.cmd(f"a SELECT {long}"), c.cmd(f"a EXAMINE {long}"),
               c.cmd(f"a STATUS {long} (MESSAGES)"), c.cmd(f"a DELETE {long}"),
               c.cmd(f"a RENAME {long} y"), c.cmd(f"a RENAME Trash {long}"),
               c.cmd(f"a SUBSCRIBE {long}"), c.cmd(f"a UNSUBSCRIBE {long}"),
               c.cmd(f"a APPEND {long} {{3+}}\r\nx\r\n"), c.cmd(f'a LIST "" {long}'),
               c.cmd("a CREATE " + encode_mailbox("é" * 128).decode())]  # 256 bytes in UTF-8
    c.cmd("s SELECT INBOX")
    replies += [c.cmd(f"a COPY 1 {long}"), c.cmd(f"a MOVE 1 {long}")]
    for out in replies:
        assert b"SERVERBUG" not in out and str(store.root).encode() not in out, out
    assert replies[0].startswith(b"a NO [CANNOT] that folder name is too long: at most 254 bytes")
    assert replies[1].startswith(b"a NO [NONEXISTENT] no folder named xxxx")
    assert b"x" * 61 not in replies[1]  # the name is shortened in the reply
    assert replies[6].startswith(b"a NO [CANNOT] that folder name is too long")
    assert replies[9].startswith(b"a NO [TRYCREATE]")
    assert replies[11].startswith(b"a NO [CANNOT] that folder name is too long")
    assert c.cmd("a CREATE " + "x" * 254).startswith(b"a OK")  # the longest that fits
    # sub-folders move with their parent: the longest of them must fit too
    assert c.cmd("a CREATE p").startswith(b"a OK") and c.cmd("a CREATE p.child").startswith(b"a OK")
    assert c.cmd("a RENAME p " + "y" * 250).startswith(b"a NO [CANNOT] that folder name is too long for")


@pytest.mark.parametrize("name", [b"x\r\n* OK [ALERT] injected", b"a\nb", b"a\rb", b"x\x00y"])
def test_responses_never_carry_a_clients_line_breaks(ctx, store, name):
    """Folder names echoed in NO replies once carried raw CR/LF: one reply became two."""
    c = Client(ctx).login()
    lit = b"{%d+}\r\n" % len(name) + name
    for cmd in (b"SELECT ", b"DELETE ", b"SUBSCRIBE ", b"STATUS ", b"CREATE ", b"RENAME Nope "):
        tail = b" (MESSAGES)" if cmd == b"STATUS " else b""
        out = c.send(b"a " + cmd + lit + tail + b"\r\n")
        assert out.startswith(b"a NO ") and out.count(b"\r\n") == 1 and b"\n" not in out[:-1], out
        assert b"\x00" not in out
    out = c.send(b"a NOOP {%d+}\r\n" % len(name) + name + b"\r\n")  # echoed as unexpected text
    assert out.startswith(b"a BAD ") and out.count(b"\r\n") == 1, out


def test_an_internal_error_tells_no_paths(ctx, store, monkeypatch, caplog):
    c = Client(ctx).login()
    folder = store.account("alice").folder("INBOX")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device", str(folder.path / "tmp" / "x"))
    monkeypatch.setattr(folder, "deliver", broken)
    out = c.cmd("a APPEND INBOX {3+}\r\nx\r\n")
    assert out.startswith(b"a NO [SERVERBUG] internal server error (OSError)")
    assert str(store.root).encode() not in out and b"No space" not in out
    assert str(folder.path) in caplog.text  # the details are in the log
    assert c.cmd("b NOOP") == b"b OK NOOP completed\r\n"  # and the session goes on


def test_deferred_logins_wait_for_their_answer(ctx):
    """With defer_logins the server checks passwords off its loop; commands pipelined behind a
    login wait for it, one login at a time (so each refusal can be answered late)."""
    s = ImapSession(ctx, "test", defer_logins=True)
    s.greeting()
    s.data_to_send()
    s.receive_data(b"a LOGIN alice wrong\r\nb LOGIN alice alice-pw\r\nc SELECT INBOX\r\n")
    assert s.data_to_send() == b"" and s.busy
    first = s.login_request
    assert first.tag == b"a" and first.user == "alice"
    s.finish_login(first.check())
    assert s.data_to_send().startswith(b"a NO [AUTHENTICATIONFAILED]")
    second = s.login_request
    assert second is not None and second.tag == b"b"
    s.finish_login(second.check())
    out = s.data_to_send()
    assert out.startswith(b"b OK [CAPABILITY") and out.endswith(b"c OK [READ-WRITE] SELECT completed\r\n")
    assert s.login_attempts == 2 and not s.busy
    s.receive_data(b"d LOGOUT\r\n")
    assert s.closing


# ----------------------------------------------------------------------------- issue 16: SEARCH numbering

@pytest.fixture
def gapped(ctx, store):
    """INBOX with UIDs 1, 4, 5 (sequence numbers 1, 2, 3) after an EXPUNGE."""
    fill(store)  # UIDs 1..5: bob, alice, carol, dave, zoe
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    c.cmd("a STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    assert lines(c.cmd("a EXPUNGE")) == [b"* 3 EXPUNGE", b"* 2 EXPUNGE", b"a OK EXPUNGE completed"]
    return c


@pytest.mark.parametrize("query,by_seq,by_uid", [
    ("ALL", b"1 2 3", b"1 4 5"),
    ("FROM dave", b"2", b"4"),
    ("NOT FROM bob", b"2 3", b"4 5"),
    ("2:3", b"2 3", b"4 5"),  # a sequence set names sequence numbers, in both forms
    ("UID 4:5", b"2 3", b"4 5"),
    ("UID 2:3", b"", b""),
    ("*", b"3", b"5"),
    ("UID *", b"3", b"5"),
])
def test_search_after_expunge_answers_sequence_numbers(gapped, query, by_seq, by_uid):
    """Plain SEARCH answers sequence numbers, UID SEARCH UIDs (RFC 3501 6.4.4, 6.4.8)."""
    def result(out):
        return lines(out)[0].removeprefix(b"* SEARCH").strip()
    assert result(gapped.cmd(f"q SEARCH {query}")) == by_seq
    assert result(gapped.cmd(f"q UID SEARCH {query}")) == by_uid


def test_search_larger_and_smaller_are_strict(ctx, store):
    """LARGER n: size > n; SMALLER n: size < n (RFC 3501 6.4.4): a message of size n is neither."""
    folder = store.account("alice").folder("INBOX")
    folder.deliver(b"Subject: a\r\n\r\nshort\r\n")
    folder.deliver(b"Subject: b\r\n\r\na little longer\r\n")
    n = folder.get(1).size
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    for query, expected in [(f"LARGER {n}", b"* SEARCH 2"), (f"LARGER {n - 1}", b"* SEARCH 1 2"),
                            (f"SMALLER {n}", b"* SEARCH"), (f"SMALLER {n + 1}", b"* SEARCH 1"),
                            (f"LARGER {n - 1} SMALLER {n + 1}", b"* SEARCH 1")]:
        assert lines(c.cmd(f"q SEARCH {query}"))[0] == expected, query


def test_search_charsets_that_are_not_text_encodings_are_refused(selected):
    """Python codecs such as base64 or idna passed the lookup and then raised: SERVERBUG."""
    for charset in ("BASE64", "ROT13", "IDNA", "UU"):
        out = selected.send(b"q SEARCH CHARSET " + charset.encode() + b" TEXT {2+}\r\n\xff\xfe\r\n")
        assert out.startswith(b"q NO [BADCHARSET (UTF-8 US-ASCII)] " + charset.encode()), out
    assert lines(selected.cmd("q SEARCH CHARSET ISO-8859-1 ALL"))[0] == b"* SEARCH 1 2 3 4 5"


def test_search_in_a_part_with_a_broken_charset_name(ctx, store):
    """A NUL in a part's charset made bytes.decode raise ValueError (found by bench/fuzz.py)."""
    store.account("alice").folder("INBOX").deliver(
        b"Content-Type: text/plain; charset=\"utf\x008\"\r\n\r\nhello caf\xc3\xa9\r\n")
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    assert lines(c.cmd("q SEARCH BODY hello")) == [b"* SEARCH 1", b"q OK SEARCH completed"]
    assert lines(c.cmd("q SEARCH TEXT caf")) == [b"* SEARCH 1", b"q OK SEARCH completed"]


def test_search_reads_at_most_max_parts_parts(ctx, store, monkeypatch):
    """The email package given a message of 200,000 empty parts took 4.6 s of the loop; the
    parts now come from fetch.parse_message, which stops at MAX_PARTS."""
    monkeypatch.setattr(fetchmod, "MAX_PARTS", 50)
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nfiller\r\n" * 300
           + b"--b\r\n\r\nneedle\r\n--b--\r\n")
    store.account("alice").folder("INBOX").deliver(raw)
    from maillab.imap import search as searchmod
    ctx_ = searchmod.SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw)
    # 50 entities, the last one holding the unsplit rest: bounded work, and nothing hidden
    assert len(ctx_.entities()) == 50 and "needle" in ctx_.entities()[-1].get_payload()
    monkeypatch.undo()
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    assert lines(c.cmd("q SEARCH BODY needle"))[0] == b"* SEARCH 1"


def test_a_header_folded_many_times_is_read_in_linear_time():
    """Each folded line was added to the bytes so far: 80,000 folded lines took 3 s, a 10 MB
    message of them would take a quarter of an hour (found by bench/fuzz.py)."""
    from maillab.imap.testing import returns_within
    raw = b"Subject: x\r\n" + b" y\r\n" * 300_000 + b"\r\nbody"
    assert returns_within(10, lambda: fetchmod.header_values(fetchmod.split_header(raw)[0]))
    values = fetchmod.header_values(fetchmod.split_header(raw)[0])
    assert values[b"subject"] == [b"x" + b" y" * 300_000]
    assert fetchmod.header_lines(b"A: 1\r\n 2\r\nB: 3\r\n") == [(b"a", b"A: 1\r\n 2\r\n"), (b"b", b"B: 3\r\n")]


@pytest.mark.parametrize("date", ["01-Jan-0000 00:00:00 +0000", "31-Feb-2024 10:00:00 +0000",
                                  "01-Jan-2024 24:00:00 +0000", "01-Jan-2024 10:61:00 +0000",
                                  "01-Jan-2024 10:00:00 +0099"])
def test_append_with_a_date_that_does_not_exist_is_a_syntax_error(ctx, store, date):
    """Year 0 reached calendar.timegm: ValueError, NO [SERVERBUG]."""
    c = Client(ctx).login()
    out = c.cmd(f'a APPEND INBOX "{date}" {{3+}}\r\nabc')
    assert out == f"a BAD APPEND: there is no such date or time: {date}\r\n".encode()
    assert len(store.account("alice").folder("INBOX")) == 0
    assert c.cmd('a APPEND INBOX "30-Jun-2015 23:59:60 +0000" {3+}\r\nabc').startswith(b"a OK")  # a leap second


def test_long_headers_cost_linear_time_in_search_and_envelope(ctx, store):
    """The email package's search for encoded words is quadratic when they do not end: a 96 kB
    Subject of "=?utf-8?q?x " took 40 s (found by bench/fuzz.py); an address list of megabytes
    was read byte by byte for every ENVELOPE."""
    from maillab.imap import search as searchmod
    from maillab.imap.testing import returns_within
    subject = b"=?utf-8?q?x " * 20_000 + b"=?utf-8?q?Caf=C3=A9?= =?utf-8?q?_cr=C3=A8me?="
    assert returns_within(10, searchmod.decode_header_value, subject)
    assert searchmod.decode_header_value(subject).endswith("Café crème")
    assert searchmod.decode_header_value(b"=?utf-8?q?Caf=C3=A9?= and =?x?q?broken") == "Café and =?x?q?broken"
    to = b", ".join(b"user%d@example.com" % i for i in range(50_000))  # 1.1 MB
    raw = b"From: a@b.example\r\nTo: " + to + b"\r\nSubject: " + subject + b"\r\n\r\nbody\r\n"
    store.account("alice").folder("INBOX").deliver(raw)
    c = Client(ctx).login()
    c.cmd("s SELECT INBOX")
    assert returns_within(10, c.cmd, "f FETCH 1 ENVELOPE")
    envelope = c.cmd("f FETCH 1 ENVELOPE")
    assert envelope.endswith(b"f OK FETCH completed\r\n") and envelope.count(b'"example.com")') < 1000
    assert lines(c.cmd(b"q SEARCH CHARSET UTF-8 SUBJECT {6+}\r\ncr\xc3\xa8me"))[0] == b"* SEARCH 1"
