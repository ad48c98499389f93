"""Differential tests: the same IMAP sessions against maillab and a private Dovecot.

Responses are normalized before comparing (maillab.imap.testing.normalize): tags, UIDVALIDITY,
human text, CAPABILITY lists, ID replies, the order of LIST lines and of FETCH items, the
keywords listed in PERMANENTFLAGS, \\Recent, and a few response codes only one server sends
(CLIENTBUG, NONEXISTENT, CANNOT) are set aside. Everything else — message numbers, UIDs, flags,
internal dates, bytes of every section, ENVELOPE, BODYSTRUCTURE (case-folded), SEARCH results,
COPYUID/APPENDUID UIDs, EXPUNGE order, LIST attributes — must match.

Deliberate differences, not tested here: maillab accepts raw UTF-8 in atoms other than folder
names (learners type them) where Dovecot answers BAD (folder names: test_imap_dovecot_hints); STORE and EXPUNGE in a read-only (EXAMINE)
folder are NO [READ-ONLY] in maillab and a silent OK in Dovecot; RENAME onto an existing folder
is refused; RENAME INBOX moves its mail as RFC 3501 says (Dovecot: NO [CANNOT]); DELETE of a
folder that has sub-folders removes it, leaving a Noselect name as in RFC 3501's example
(Dovecot's Maildir++ keeps it as an empty selectable folder).
"""

from __future__ import annotations

import pytest

from conftest import require_root, require_tool
from maillab.imap.testing import (SAMPLES, Dovecot, ImapTestServer, RawClient, literal, normalize)
from maillab.store import to_crlf


@pytest.fixture
def servers():
    require_tool("dovecot")
    require_root("the reference Dovecot must start as root (it then runs as nobody)")
    with Dovecot() as dovecot, ImapTestServer() as maillab:
        yield dovecot, maillab


SETUP = [b"LOGIN alice alice-pw"] + [
    b'APPEND INBOX (\\Seen) "0%d-Jan-2024 10:00:00 +0000" ' % (i + 1) + literal(to_crlf(s))
    for i, s in enumerate(SAMPLES)] + [b"SELECT INBOX"]


def run_both(servers, *scripts: list[bytes]):
    """Run scripts (one per connection, in turns: each command of script 1, then the next
    command of script 2, ...) against both servers; returns [(command, dovecot, maillab)]."""
    results = []
    for srv in servers:
        clients = [RawClient(srv.host, srv.port) for _ in scripts]
        out = []
        for step in range(max(len(s) for s in scripts)):
            for i, (client, script) in enumerate(zip(clients, scripts)):
                if step < len(script):
                    out.append((i, script[step], normalize(client.command(script[step]))))
        for c in clients:
            c.close()
        results.append(out)
    return [(cmd, a, b) for (i, cmd, a), (_j, _c, b) in zip(*results)]


def compare(servers, *scripts):
    differences = []
    for cmd, dovecot, maillab in run_both(servers, *scripts):
        if dovecot != maillab:
            differences.append(f"{cmd[:80]!r}\n  dovecot: {dovecot}\n  maillab: {maillab}")
    assert not differences, "\n".join(differences)


def test_fetch(servers):
    compare(servers, SETUP + [
        b"FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)",
        b"FETCH 1:* ENVELOPE",
        b"FETCH 1:* BODYSTRUCTURE",
        b"FETCH 1:* BODY",
        b"FETCH 1:* (BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[1.MIME] BODY.PEEK[2.MIME] BODY.PEEK[1.1] "
        b"BODY.PEEK[2.1] BODY.PEEK[3])",
        b"FETCH 1:* (BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1.MIME] BODY.PEEK[2.2] "
        b"BODY.PEEK[HEADER.FIELDS (From To)] BODY.PEEK[HEADER.FIELDS.NOT (From To)]<10.20>)",
        b"FETCH 4 (BODY.PEEK[2.2.1] BODY.PEEK[2.1.1] BODY.PEEK[2.2.MIME] BODY.PEEK[2.1.2] BODY.PEEK[1.2] "
        b"BODY.PEEK[1.1.1] BODY.PEEK[2.HEADER.FIELDS (SUBJECT)] BODY.PEEK[2.1.HEADER] BODY.PEEK[2.MIME]<5.10>)",
        b"FETCH 3 (BODY.PEEK[1.1.1] BODY.PEEK[1.3] BODY.PEEK[1.TEXT] BODY.PEEK[1.HEADER] BODY.PEEK[2.1.1] "
        b"BODY.PEEK[]<0.1> BODY.PEEK[]<1000000.10>)",
        b"FETCH 1:5 FAST", b"FETCH 1:5 ALL", b"FETCH 1:5 FULL",
        b"STORE 1:* -FLAGS.SILENT (\\Seen)",
        b"FETCH 1 RFC822.HEADER", b"FETCH 1 FLAGS",
        b"FETCH 2 RFC822.TEXT", b"FETCH 3 BODY[1.1]", b"FETCH 4 (BODY.PEEK[TEXT] FLAGS)",
        b"FETCH 5 RFC822", b"FETCH 1:* FLAGS",
        b"UID FETCH 2:4 (FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
        b"UID FETCH 3:* UID", b"UID FETCH 100:* UID", b"UID FETCH 100:200 UID",
        b"FETCH 6 FLAGS", b"FETCH 1 NOPE", b"FETCH 1 BODY[4.NOPE]",
        b"FETCH 2 (UID UID FLAGS BODY.PEEK[HEADER] FLAGS BODY.PEEK[HEADER] BODY.PEEK[]<0.9>)",
    ])


def test_search(servers):
    keys = [
        b"FROM bob", b"SUBJECT lunch", b"TEXT berlin", b"CHARSET UTF-8 BODY {6+}\r\ngr\xc3\xbc\xc3\x9fe",
        b"CHARSET UTF-8 SUBJECT {7+}\r\ngr\xc3\xbc\xc3\x9fe", b"CHARSET UTF-8 FROM {7+}\r\nm\xc3\xbcller",
        b"CHARSET UTF-8 TEXT {7+}\r\nm\xc3\xbcller", b"HEADER X-Priority 1", b'HEADER X-Priority ""',
        b"BCC archive", b"CC grace", b"TO undisclosed", b"OR FROM bob FROM carol", b"NOT FROM bob",
        b"SENTBEFORE 3-Jan-2024", b"SENTON 2-Jan-2024", b"SENTSINCE 3-Jan-2024", b"BEFORE 3-Jan-2024",
        b"ON 2-Jan-2024", b"SINCE 3-Jan-2024", b"LARGER 750", b"SMALLER 600", b"2:4 SEEN", b"UID 1:3",
        b"TEXT report", b"BODY report", b"TEXT lists.example.com", b"TEXT x-priority", b"BODY Bob",
        b"ALL", b"NEW", b"OLD", b"RECENT", b"(OR SEEN UNSEEN) NOT DELETED", b"KEYWORD foo",
        b"UNKEYWORD foo", b"BODY JVBERi0", b"TEXT pdf", b"TEXT alt-2", b"BODY html", b"TEXT html",
        b"CHARSET ISO-8859-1 ALL", b"CHARSET FOO-8 ALL", b'BODY "shall we"', b"TEXT See",
        b"HEADER Content-Type multipart", b"HEADER Content-Type alternative", b"TEXT quarterly",
        b"BODY quarterly", b"TEXT <b>", b"SEEN", b"FOO", b"7", b"5:*", b"*", b"1,2 OR 3 4", b"UID 2:*",
        b"FLAGGED", b"UNFLAGGED", b"ANSWERED", b"UNANSWERED", b"DELETED", b"UNDELETED", b"DRAFT",
        b"UNDRAFT", b"UNSEEN",
    ]
    script = SETUP + [b"STORE 2 -FLAGS (\\Seen)", b"STORE 3 +FLAGS (\\Flagged \\Answered foo)",
                      b"STORE 4 +FLAGS (\\Deleted \\Draft)"]
    script += [b"SEARCH " + k for k in keys] + [b"UID SEARCH " + k for k in keys[:20]]
    compare(servers, script)


def test_search_after_expunge_with_gaps(servers):
    """After an EXPUNGE, UIDs and sequence numbers differ: SEARCH answers sequence numbers,
    UID SEARCH UIDs (a SEARCH answering UIDs passed every test while they were equal)."""
    keys = [b"ALL", b"FROM bob", b"NOT FROM bob", b"2:3", b"UID 4:5", b"UID 2:3", b"*", b"UID *",
            b"LARGER 750", b"SUBJECT report", b"OR 1 UID 5", b"SEEN", b"UNSEEN"]
    script = SETUP + [b"STORE 2:3 +FLAGS.SILENT (\\Deleted)", b"EXPUNGE", b"STORE 2 -FLAGS (\\Seen)"]
    compare(servers, script + [b"SEARCH " + k for k in keys] + [b"UID SEARCH " + k for k in keys])


def test_store(servers):
    compare(servers, SETUP + [
        b"STORE 1 +FLAGS (\\Flagged foo)", b"STORE 2 FLAGS (\\Answered)", b"STORE 2:3 -FLAGS (\\Seen)",
        b"STORE 4 +FLAGS.SILENT (\\Deleted)", b"UID STORE 1:5 +FLAGS (\\Draft)", b"UID STORE 9 +FLAGS (\\Draft)",
        b"STORE 9 +FLAGS (\\Draft)", b"STORE 1 +FLAGS \\Seen", b"STORE 1 +FLAGS (\\Bogus)",
        b"STORE 1 +FLAGS (\\Recent)", b"STORE 1 -FLAGS (foo)", b"STORE 1:* FLAGS ($Forwarded bar)",
        b"UID STORE 1:* -FLAGS.SILENT (bar)", b"FETCH 1:* FLAGS", b"STORE 1 PLUSFLAGS (x)",
    ])


def test_copy_move(servers):
    compare(servers, SETUP + [
        b"STORE 2 +FLAGS (\\Flagged kw1)",
        b"COPY 1:2 Trash", b"COPY 1 Nope", b"UID COPY 3:4 Sent", b"UID COPY 30:40 Sent",
        b"MOVE 5 Junk", b"UID MOVE 1 Trash", b"UID MOVE 40:50 Trash", b"FETCH 1:* (UID FLAGS)",
        b"STATUS Trash (MESSAGES UIDNEXT UNSEEN RECENT)", b"STATUS Sent (MESSAGES UIDNEXT UNSEEN)",
        b"STATUS Junk (MESSAGES)", b"SELECT Trash", b"FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
        b"COPY 1:* INBOX", b"SELECT INBOX", b"FETCH 1:* (UID FLAGS)",
    ])


def test_expunge_and_close(servers):
    compare(servers, SETUP + [
        b"STORE 2,3,5 +FLAGS.SILENT (\\Deleted)", b"EXPUNGE", b"FETCH 1:* UID",
        b"APPEND INBOX " + literal(to_crlf(SAMPLES[0])), b"NOOP",
        b"STORE 1:* +FLAGS.SILENT (\\Deleted)", b"UID EXPUNGE 4:5", b"FETCH 1:* UID",
        b"EXAMINE INBOX", b"CLOSE", b"STATUS INBOX (MESSAGES)",
        b"SELECT INBOX", b"CLOSE", b"STATUS INBOX (MESSAGES UIDNEXT)", b"EXPUNGE",
    ])


def test_folders_list_status(servers):
    compare(servers, [b"LOGIN alice alice-pw",
        b'LIST "" "*"', b'LIST "" ""', b'LIST "" %', b"CREATE Archive", b"CREATE Archive.2024",
        b"CREATE Projects.Alpha.Notes", b"CREATE Archive", b"CREATE INBOX", b"CREATE Lists.",
        b'LIST "" *', b'LIST "" %', b'LIST "" Projects.%', b"LIST Projects. %", b'LIST "" Projects.*',
        b'LIST "" inbox', b'LIST "" IN*', b'LIST "" *2024', b'LSUB "" *', b"SUBSCRIBE Archive.2024",
        b'LSUB "" *', b'LSUB "" %', b"UNSUBSCRIBE Archive.2024", b"RENAME Archive Old", b'LIST "" *',
        b"RENAME Nope X", b"DELETE Nope", b"DELETE INBOX", b"DELETE Projects.Alpha", b'LIST "" *',
        b"STATUS Projects (MESSAGES)", b"CREATE Gr&APw-n2", b'LIST "" Gr*', b"SELECT Old",
        b"SELECT Nope", b"FETCH 1 FLAGS", b'LIST (SPECIAL-USE) "" *', b'LIST "" * RETURN (SPECIAL-USE)',
        b'LIST (SUBSCRIBED) "" *', b'LIST "" * RETURN (SUBSCRIBED CHILDREN)', b'LIST "" (INBOX Sent)',
        b'LIST (SUBSCRIBED) "" % RETURN (CHILDREN)', b"NAMESPACE", b"DELETE Old.2024", b'LIST "" *',
        b"STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)", b"STATUS Sent (UNSEEN MESSAGES)",
        b"STATUS Nope (MESSAGES)",
    ])


def test_two_sessions_see_each_others_changes(servers):
    a = SETUP + [b"NOOP", b"FETCH 1:* FLAGS", b"NOOP", b"SEARCH ALL", b"NOOP", b"NOOP", b"LOGOUT"]
    b = [b"LOGIN alice alice-pw", b"SELECT INBOX", b"STORE 1 +FLAGS (\\Flagged)",
         b"STORE 2 +FLAGS.SILENT (\\Deleted)", b"EXPUNGE",
         b"APPEND INBOX " + literal(to_crlf(SAMPLES[1])), b"STORE 3 +FLAGS.SILENT (\\Deleted)",
         b"EXPUNGE"]
    # b runs its first steps while a is still appending (SETUP), then they alternate
    compare(servers, a, [b"NOOP"] * 8 + b)


def test_errors_and_failed_login_last(servers):
    compare(servers, [b"NOOP", b"SELECT INBOX", b"LOGIN alice wrong", b"LOGIN alice alice-pw",
                      b"LOGIN alice alice-pw", b"FETCH 1 FLAGS", b"SELECT INBOX", b"FETCH 1 FLAGS",
                      b"UID FETCH 1:* FLAGS", b"SEARCH ALL", b"LOGOUT"])


THUNDERBIRD_HEADERS = (b"BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority "
                       b"X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)]")


def test_a_thunderbird_shaped_session(servers):
    """The commands Thunderbird sends (lower-case words, quoted names, mixed-case flags)."""
    compare(servers, [
        b"capability", b'login "alice" "alice-pw"', b"namespace",
        b'ID ("name" "Thunderbird" "version" "115.3.1")'] + SETUP[1:-1] + [
        b'lsub "" "*"', b'list "" "INBOX"', b'list "" "%"', b'select "INBOX"',
        b"UID fetch 1:* (FLAGS)",
        b"UID fetch 1:5 (UID RFC822.SIZE FLAGS " + THUNDERBIRD_HEADERS + b")",
        b"UID fetch 3 (UID RFC822.SIZE BODY.PEEK[]<0.1000>)", b"UID fetch 3 (UID RFC822.SIZE BODY.PEEK[])",
        b"UID fetch 3 (BODYSTRUCTURE)", b"UID fetch 3 (BODY.PEEK[1.2] BODY.PEEK[2.MIME])",
        b"UID store 3 +Flags (\\Seen)", b"UID store 1:2 -Flags (\\Seen)",
        b'UID copy 3 "Trash"', b'UID move 4 "Junk"',
        b"UID store 5 +FLAGS (\\Deleted)", b"expunge",
        b'append "Sent" (\\Seen) "01-Feb-2024 12:00:00 +0000" ' + literal(to_crlf(SAMPLES[0])),
        b'STATUS "Sent" (UIDNEXT MESSAGES UNSEEN RECENT)', b'STATUS "Trash" (UIDNEXT MESSAGES UNSEEN RECENT)',
        b"noop", b"UID fetch 1:* (FLAGS)", b"close", b'select "Sent"', b"UID fetch 1:* (FLAGS)",
        b"unselect", b"logout",
    ])


def test_unusual_messages(servers):
    from maillab.imap.testing import UNUSUAL
    script = [b"LOGIN alice alice-pw"] + [
        b'APPEND INBOX "0%d-Feb-2024 10:00:00 +0000" ' % (i + 1) + literal(to_crlf(s))
        for i, s in enumerate(UNUSUAL)] + [b"SELECT INBOX"]
    compare(servers, script + [
        b"FETCH 1:* (ENVELOPE RFC822.SIZE INTERNALDATE)", b"FETCH 1:* BODYSTRUCTURE", b"FETCH 1:* BODY",
        b"FETCH 1:* (BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2] "
        b"BODY.PEEK[3.1] BODY.PEEK[3.HEADER] BODY.PEEK[3.TEXT] BODY.PEEK[2.HEADER])",
        b"SEARCH CHARSET UTF-8 SUBJECT {8+}\r\n\xce\xba\xcf\x8c\xcf\x83\xce\xbc",
        b"SEARCH CHARSET UTF-8 BODY {9+}\r\nS\xc3\xa9bastien", b"SEARCH CHARSET UTF-8 SUBJECT {6+}\r\ncaf\xc3\xa9",
        b"SEARCH CHARSET UTF-8 FROM {5+}\r\nandr\xc3\xa9", b"SEARCH SUBJECT inner", b"SEARCH TEXT inner",
        b"SEARCH BODY inner", b"SEARCH TEXT epilogue", b"SEARCH BODY d2", b"SEARCH HEADER subject d1",
        b"SEARCH FROM zoe", b"SEARCH TO smith", b"SEARCH SENTBEFORE 1-Jan-2000", b"SEARCH SENTON 1-Jan-1970",
        b"SEARCH SENTSINCE 1-Jan-2000", b"SEARCH ON 3-Feb-2024", b"SEARCH BEFORE 3-Feb-2024",
    ])
