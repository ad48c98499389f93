"""Lab 3: IMAP by hand (Level 1) and a raw-socket IMAP client (Level 2) (S8-S10, S13)."""

# Level 1: one test cell per step of the session typed by hand (step, points).
HAND_STEPS = [("login", 5), ("create", 7), ("move", 10), ("flag", 8), ("search", 6),
              ("logout", 4)]

MULTIPART = ('From: maria@example.net\r\nTo: {to}\r\nSubject: the photo\r\nMIME-Version: 1.0\r\n'
             'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n--XYZ\r\n'
             'Content-Type: text/plain\r\n\r\nSee the attachment.\r\n--XYZ\r\n'
             'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n'
             'aGVsbG8gd29ybGQ=\r\n--XYZ--\r\n')


def build(b, setup_md, setup, stop):
    b.md("""
# Lab 3: IMAP, by hand and in code

**IMAP** (port 143, or 993 encrypted) was designed to keep mail **on the server**: the client
searches, reads parts of messages, and sets flags there, and every device sees the same
mailbox. That costs the server more disk space and CPU than POP3 (S8, S9). You first speak
IMAP yourself, line by line (level 1), then write an IMAP client with a plain socket, no
`imaplib` (level 2); the grader checks what the server saw and the message files (and their
flags) on disk.

IMAP's special trick: every command starts with a **tag** you choose (`a1`, `a2`, ...). The
server may send many untagged lines (`* ...`) and ends with a line that starts with your tag:
`a1 OK ...`, `a1 NO ...` (refused) or `a1 BAD ...` (not understood).

| part | what you do | points |
| --- | --- | --- |
| **level 1** | | |
| 1 | by hand: make a folder, move a message into it, flag it, find it | 40 |
| **level 2** | | |
| 2 | send a tagged command, read until its tagged reply | 6 |
| 3 | log in | 5 |
| 4 | count messages (STATUS) | 6 |
| 5 | search (UID SEARCH) | 6 |
| 6 | read replies that contain literals `{n}` | 6 |
| 7 | fetch one header without marking the message as read | 6 |
| 8 | fetch one part of a message (an attachment) | 5 |
| 9 | set a flag (UID STORE) | 5 |
| 10 | ports and ideas | 5 |
| 11 | a short written answer (graded by your teacher) | 10 |
""")
    b.md(setup_md)
    b.given("setup", setup)
    b.given("helpers", '''
class IMAPError(Exception):
    """The server answered NO or BAD."""
''')
    b.md("""
## Part 1: folders and flags, by hand (40 points)

Bob (password `builder`) has three messages in his INBOX. Run the next cell to put them there;
run it again whenever you want to start over (it also deletes the folder `Homework`).
""")
    b.given("fill_box", """
grading.fill_mailbox(lab, "bob", "builder", "bob@example.com", drop="Homework")
for number, (subject, text) in enumerate(grading.POP3_BOX, 1):
    print(number, subject)
""")
    b.md("""
A cell that starts with `%%imap example.com` connects to the IMAP server of `example.com` (port
143, or the lab's port standing for it) and sends the lines below it one by one, each time
waiting for the line with your tag. Replace the two lines `# YOUR CODE HERE` and
`raise NotImplementedError()` with your session, a new tag on every line:

1. `a1 LOGIN bob builder`;
2. `a2 CREATE Homework`: a new folder, on the server;
3. `a3 SELECT INBOX`, then `a4 MOVE 3 Homework`: message 3 ("Homework for Monday") moves
   into the folder;
4. `a5 SELECT Homework`, then `a6 STORE 1 +FLAGS (\\Flagged)`: in this folder it is message 1;
   give it a flag (a star, in most mail programs);
5. `a7 SEARCH FLAGGED`: the server searches for you and answers `* SEARCH` with the numbers
   it found;
6. `a8 LOGOUT`.

Every device that opens Bob's mailbox now sees the folder, the message in it and its flag:
they live on the server. That is what IMAP was made for.

The test cells below read what the server saw while the cell just above them ran: keep them
right below your session cell, and run them after it (got something wrong? fix the session,
run it again, then the tests).
""")
    b.solution("hand_session", r"""
%%imap example.com
### BEGIN SOLUTION
a1 LOGIN bob builder
a2 CREATE Homework
a3 SELECT INBOX
a4 MOVE 3 Homework
a5 SELECT Homework
a6 STORE 1 +FLAGS (\Flagged)
a7 SEARCH FLAGGED
a8 LOGOUT
### END SOLUTION
""")
    b.step_tests("folder", HAND_STEPS, "imap_steps", '"imap:example.com", user="bob", '
                 'folder="Homework",\n    subject="Homework for Monday"')
    b.md("""
## Part 2: one tagged command (6 points)

Write `imap_command(sock, f, tag, command)`: send `tag command\\r\\n`, then read lines until the
line that starts with `tag` and a space. Return `(status, lines)`: `status` is the word after
the tag (`"OK"`, `"NO"` or `"BAD"`), `lines` the lines before it as strings without `\\r\\n`.
""")
    b.solution("command", '''
def imap_command(sock, f, tag, command):
    """Send one tagged command; return (status, [untagged lines])."""
    ### BEGIN SOLUTION
    sock.sendall(f"{tag} {command}\\r\\n".encode())
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        text = line.decode("utf-8", "replace").rstrip("\\r\\n")
        if text.startswith(tag + " "):
            return text.split()[1].upper(), lines
        lines.append(text)
    ### END SOLUTION
''')
    b.tests("command_tests", 6, '''
user, password = grading.make_account(lab, [grading.sample(1), grading.sample(2)])
with grading.watch(lab) as ev:
    sock = socket.create_connection((lab.host, lab.imap_port))
    f = sock.makefile("rb")
    print(f.readline())
    print(imap_command(sock, f, "a1", f"LOGIN {user} {password}"))
    st, lines = imap_command(sock, f, "a2", "SELECT INBOX")
    print(st, lines)
    assert st == "OK" and "* 2 EXISTS" in lines, \\
        _("got {0!r}, {1!r}: expected OK, '* 2 EXISTS'").format(st, lines)
    got = imap_command(sock, f, "a3", "FETCH 99 FLAGS")
    assert got[0] in ("NO", "BAD", "OK"), \\
        _("the status is the word after the tag (OK, NO or BAD); got {0!r}").format(got)
    sock.close()
s = ev.session("imap:example.com")
print(s)
''', '''
assert [l.split()[0] for l in s.client_lines] == ["a1", "a2", "a3"]
_sock = socket.create_connection((lab.host, lab.imap_port))
_f = _sock.makefile("rb")
_f.readline()
assert imap_command(_sock, _f, "x9", "LOGIN nobody wrong")[0] == "NO"
assert imap_command(_sock, _f, "x10", "NONSENSE")[0] == "BAD"
_st, _lines = imap_command(_sock, _f, "z", "CAPABILITY")
assert _st == "OK" and len(_lines) == 1 and _lines[0].startswith("* CAPABILITY IMAP4rev1")
_sock.close()
''')
    b.md("""
## Part 3: log in (5 points)

Write `imap_login(host, port, user, password)`: connect, read the greeting line (`* OK ...`),
send `LOGIN user password` with tag `a1`, and return `(sock, f)`. If the answer is not `OK`,
close the socket and raise `IMAPError`.
""")
    b.solution("login", '''
def imap_login(host, port, user, password):
    """Connect and LOGIN; return (sock, f)."""
    ### BEGIN SOLUTION
    sock = socket.create_connection((host, port))
    f = sock.makefile("rb")
    f.readline()
    status, lines = imap_command(sock, f, "a1", f"LOGIN {user} {password}")
    if status != "OK":
        sock.close()
        raise IMAPError(status)
    return sock, f
    ### END SOLUTION
''')
    b.tests("login_tests", 5, '''
user, password = grading.make_account(lab)
with grading.watch(lab) as ev:
    sock, f = imap_login(lab.host, lab.imap_port, user, password)
    sock.sendall(b"a2 LOGOUT\\r\\n")
    print(f.read())
    sock.close()
s = ev.session("imap:example.com")
assert s.commands(tagged=True) == ["LOGIN", "LOGOUT"], s.commands(tagged=True)
try:
    imap_login(lab.host, lab.imap_port, user, "not-the-password")
except IMAPError as e:
    print(_("refused, as it should be:"), e)
else:
    raise AssertionError(_("LOGIN with a wrong password got NO: imap_login must raise IMAPError"))
''', '''
_u, _p = _g.make_account(lab)
try:
    imap_login(lab.host, lab.imap_port, _u, "not-" + _p)
except IMAPError:
    pass
else:
    raise AssertionError(_("a refused LOGIN must raise IMAPError"))
''')
    b.md("""
## Part 4: how many, how many unread? (6 points)

`STATUS INBOX (MESSAGES UNSEEN)` answers with one untagged line:
`* STATUS INBOX (MESSAGES 3 UNSEEN 2)`. A message counts as read when it has the flag `\\Seen`.

Write `folder_status(host, port, user, password, folder="INBOX")` returning
`{"MESSAGES": 3, "UNSEEN": 2}` (numbers as `int`), then `LOGOUT`.
""")
    b.solution("status", '''
def folder_status(host, port, user, password, folder="INBOX"):
    """{"MESSAGES": n, "UNSEEN": m} from STATUS."""
    ### BEGIN SOLUTION
    sock, f = imap_login(host, port, user, password)
    with sock:
        status, lines = imap_command(sock, f, "a2", f"STATUS {folder} (MESSAGES UNSEEN)")
        if status != "OK":
            raise IMAPError(status)
        words = lines[-1].split("(", 1)[1].rstrip(")").split()
        imap_command(sock, f, "a3", "LOGOUT")
    return {words[i].upper(): int(words[i + 1]) for i in range(0, len(words), 2)}
    ### END SOLUTION
''')
    b.tests("status_tests", 6, '''
user, password = grading.make_account(lab, [grading.sample(i) for i in range(3)],
                                      flags=[("\\\\Seen",)])
with grading.watch(lab) as ev:
    counts = folder_status(lab.host, lab.imap_port, user, password)
print(counts)
assert counts == {"MESSAGES": 3, "UNSEEN": 2}, \\
    _("got {0}, expected 3 messages, 2 unseen").format(counts)
assert "STATUS" in ev.session("imap:example.com").commands(tagged=True), \\
    "ask with the command STATUS"
got = folder_status(lab.host, lab.imap_port, user, password, "Sent")
assert got == {"MESSAGES": 0, "UNSEEN": 0}, \\
    _("the folder Sent: got {0}, expected none").format(got)
''', '''
_u, _p = _g.make_account(lab, [_g.sample(1)], flags=[("\\\\Seen",)])
assert folder_status(lab.host, lab.imap_port, _u, _p) == {"MESSAGES": 1, "UNSEEN": 0}
assert folder_status(lab.host, lab.imap_port, _u, _p, "Trash") == {"MESSAGES": 0, "UNSEEN": 0}
''')
    b.md("""
## Part 5: search on the server (6 points)

IMAP searches on the server, so the client downloads nothing it does not need. First choose a
folder with `SELECT INBOX`. `UID SEARCH FROM "maria@example.net"` then answers
`* SEARCH 1 3`: the **UIDs** of the matching messages. A UID never changes; a message's
*sequence number* (its position) does, when messages before it are deleted.

Write `search_from(host, port, user, password, sender)` returning the list of UIDs (`int`).
""")
    b.solution("search", '''
def search_from(host, port, user, password, sender):
    """UIDs of the INBOX messages from sender."""
    ### BEGIN SOLUTION
    sock, f = imap_login(host, port, user, password)
    with sock:
        imap_command(sock, f, "a2", "SELECT INBOX")
        status, lines = imap_command(sock, f, "a3", f'UID SEARCH FROM "{sender}"')
        imap_command(sock, f, "a4", "LOGOUT")
    found = []
    for line in lines:
        if line.upper().startswith("* SEARCH"):
            found += [int(w) for w in line.split()[2:]]
    return found
    ### END SOLUTION
''')
    b.tests("search_tests", 6, '''
senders = ["maria@example.net", "john@example.net", "maria@example.net", "bob@example.com"]
user, password = grading.make_account(lab, [grading.sample(i, sender=x) for i, x in enumerate(senders)])
with grading.watch(lab) as ev:
    uids = search_from(lab.host, lab.imap_port, user, password, "maria@example.net")
print(uids)
assert sorted(uids) == [1, 3], _("got {0!r}, expected the UIDs 1 and 3").format(uids)
assert "UID SEARCH" in ev.session("imap:example.com").commands(tagged=True), \\
    "search with UID SEARCH, so that the numbers are UIDs"
''', '''
assert sorted(search_from(lab.host, lab.imap_port, user, password, "bob@example.com")) == [4]
assert search_from(lab.host, lab.imap_port, user, password, "nobody@example.org") == []
''')
    b.md("""
## Part 6: literals (6 points)

A message can contain any text, even a line that looks like your tagged reply. So IMAP sends
message data as a **literal**: a line ends with `{29}` and then exactly 29 bytes follow,
whatever they contain; after them the line goes on. For example:

```
* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {29}
Subject: Message number 1

)
a5 OK Fetch completed.
```

Write `read_response(f, tag)`: read everything up to and including the tagged line and return
`(status, data)`, where `data` is all the bytes **before** the tagged line (untagged lines with
their `\\r\\n`, literals included as they came). Read a literal with `f.read(n)`, never line by
line.
""")
    b.solution("literal", '''
import re

def read_response(f, tag):
    """(status, bytes before the tagged line), reading literals {n} as n bytes."""
    ### BEGIN SOLUTION
    data = b""
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        if line.startswith(tag.encode() + b" "):
            return line.split()[1].decode().upper(), data
        data += line
        m = re.search(rb"\\{(\\d+)\\}\\r\\n$", line)
        while m:
            data += f.read(int(m.group(1)))
            line = f.readline()
            data += line
            m = re.search(rb"\\{(\\d+)\\}\\r\\n$", line)
    ### END SOLUTION
''')
    b.tests("literal_tests", 6, '''
import io
reply = b"* 1 FETCH (BODY[] {12}\\r\\na5 OK fake\\r\\n)\\r\\na5 OK done\\r\\n"
got = read_response(io.BytesIO(reply), "a5")
expected = ("OK", b"* 1 FETCH (BODY[] {12}\\r\\na5 OK fake\\r\\n)\\r\\n")
assert got == expected, \\
    _("got {0!r}, expected {1!r} (the 12 bytes are a literal)").format(got, expected)
''', '''
_r = b"* 1 FETCH (A {3}\\r\\nx\\r\\n B {4}\\r\\n\\r\\n\\r\\n)\\r\\n* 2 EXISTS\\r\\nt NO no\\r\\n"
assert read_response(io.BytesIO(_r), "t") == ("NO", _r[:-9])
_u, _p = _g.make_account(lab, [_g.sample(1, body="a1 OK this line hides in a message\\r\\n")])
_sock = socket.create_connection((lab.host, lab.imap_port))
_f = _sock.makefile("rb")
_f.readline()
_sock.sendall(f"a1 LOGIN {_u} {_p}\\r\\na2 SELECT INBOX\\r\\n".encode())
assert read_response(_f, "a1")[0] == "OK" and read_response(_f, "a2")[0] == "OK"
_sock.sendall(b"a1 FETCH 1 BODY.PEEK[TEXT]\\r\\n")
assert read_response(_f, "a1") == ("OK", b"* 1 FETCH (BODY[TEXT] {36}\\r\\na1 OK this line hides in a message\\r\\n)\\r\\n")
_sock.close()
''')
    b.md("""
## Part 7: one header, without reading the message (6 points)

`UID FETCH 3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])` returns just the `Subject:` header line
of the message with UID 3, as a literal. `PEEK` means: do not set `\\Seen`, the user has not
read it yet. (Without `.PEEK`, fetching a body marks the message as read.)

Write `fetch_subject(host, port, user, password, uid)` returning the subject text (after
`Subject: `, without line ends). Use `SELECT INBOX` first, your `read_response` for the fetch,
and `LOGOUT` at the end.
""")
    b.solution("subject", '''
def fetch_subject(host, port, user, password, uid):
    """The Subject of message uid, without setting \\\\Seen."""
    ### BEGIN SOLUTION
    sock, f = imap_login(host, port, user, password)
    with sock:
        imap_command(sock, f, "a2", "SELECT INBOX")
        sock.sendall(f"a3 UID FETCH {uid} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\\r\\n".encode())
        status, data = read_response(f, "a3")
        imap_command(sock, f, "a4", "LOGOUT")
    m = re.search(rb"\\{(\\d+)\\}\\r\\n", data)
    header = data[m.end():m.end() + int(m.group(1))].decode()
    return header.split(":", 1)[1].strip()
    ### END SOLUTION
''')
    b.tests("subject_tests", 6, '''
user, password = grading.make_account(lab, [grading.sample(i, subject=f"Hello number {i}") for i in range(3)])
with grading.watch(lab) as ev:
    subject = fetch_subject(lab.host, lab.imap_port, user, password, 2)
print(subject)
assert subject == "Hello number 1", \\
    _("got {0!r}, expected {1!r}").format(subject, "Hello number 1")
s = ev.session("imap:example.com")
assert "UID FETCH" in s.commands(tagged=True), s.commands(tagged=True)
assert all("S" not in m.flags for m in map(grading.DiskMessage, grading.maildir(lab, user).values())), "PEEK!"
''', '''
assert fetch_subject(lab.host, lab.imap_port, user, password, 3) == "Hello number 2"
assert all("S" not in _m.flags for _m in map(_g.DiskMessage, _g.maildir(lab, user).values()))
''')
    b.md("""
## Part 8: one part of a message (5 points)

A message with an attachment has several *parts* (MIME). IMAP numbers them: part 1 is the
text, part 2 the attachment, and `BODY.PEEK[2]` fetches just part 2, as it is stored (here,
base64 text). A phone on a slow network can show the text and fetch the photo later.

Write `fetch_part(host, port, user, password, uid, part)` returning the bytes of that part.
""")
    b.solution("part", '''
def fetch_part(host, port, user, password, uid, part):
    """The bytes of one MIME part of message uid (BODY.PEEK[part])."""
    ### BEGIN SOLUTION
    sock, f = imap_login(host, port, user, password)
    with sock:
        imap_command(sock, f, "a2", "SELECT INBOX")
        sock.sendall(f"a3 UID FETCH {uid} (BODY.PEEK[{part}])\\r\\n".encode())
        status, data = read_response(f, "a3")
        imap_command(sock, f, "a4", "LOGOUT")
    m = re.search(rb"\\{(\\d+)\\}\\r\\n", data)
    return data[m.end():m.end() + int(m.group(1))]
    ### END SOLUTION
''')
    b.tests("part_tests", 5, f'''
import base64
photo = {MULTIPART!r}
user, password = grading.make_account(lab, [grading.sample(1), photo.format(to="you@example.com")])
with grading.watch(lab) as ev:
    data = fetch_part(lab.host, lab.imap_port, user, password, 2, "2")
print(data)
assert base64.b64decode(data) == b"hello world", \\
    _("part 2 of the message, decoded from base64, is {{0!r}}; got {{1!r}}").format(b"hello world",
                                                                                 data)
assert "UID FETCH" in ev.session("imap:example.com").commands(tagged=True), "fetch by UID"
read = [m for m in map(grading.DiskMessage, grading.maildir(lab, user).values()) if "S" in m.flags]
assert not read, "the message is now marked as read: fetch with BODY.PEEK[...]"
''', '''
assert fetch_part(lab.host, lab.imap_port, user, password, 2, "1") == b"See the attachment."
assert all("S" not in _m.flags for _m in map(_g.DiskMessage, _g.maildir(lab, user).values()))
''')
    b.md("""
## Part 9: flags (5 points)

Flags are how IMAP remembers, on the server, what you did with a message: `\\Seen`,
`\\Answered`, `\\Flagged` (a star), `\\Deleted`. `UID STORE 2 +FLAGS (\\Flagged)` adds one.

Write `add_flag(host, port, user, password, uid, flag)` (after `SELECT INBOX`). Raise
`IMAPError` if the server does not answer `OK`.
""")
    b.solution("flag", '''
def add_flag(host, port, user, password, uid, flag):
    """Add a flag to message uid."""
    ### BEGIN SOLUTION
    sock, f = imap_login(host, port, user, password)
    with sock:
        imap_command(sock, f, "a2", "SELECT INBOX")
        status, lines = imap_command(sock, f, "a3", f"UID STORE {uid} +FLAGS ({flag})")
        imap_command(sock, f, "a4", "LOGOUT")
    if status != "OK":
        raise IMAPError(status)
    ### END SOLUTION
''')
    b.tests("flag_tests", 5, '''
user, password = grading.make_account(lab, [grading.sample(i) for i in range(2)])
with grading.watch(lab) as ev:
    add_flag(lab.host, lab.imap_port, user, password, 2, "\\\\Flagged")
flags = {m.uid: m.flags for m in map(grading.DiskMessage, grading.maildir(lab, user).values())}
print(flags)
assert flags == {1: set(), 2: {"F"}}, (
    _("flags on the disk: got {0!r}, expected {1!r} (F is \\\\Flagged, on message 2 only)")
    .format(flags, {1: set(), 2: {"F"}}))
assert "UID STORE" in ev.session("imap:example.com").commands(tagged=True), "use UID STORE"
try:
    add_flag(lab.host, lab.imap_port, user, password, 1, "\\\\Bogus")
except IMAPError as e:
    print(_("refused, as it should be:"), e)
else:
    raise AssertionError(_("STORE of an unknown flag got NO: add_flag must raise IMAPError"))
''', '''
add_flag(lab.host, lab.imap_port, user, password, 1, "\\\\Answered")
_flags = {m.uid: m.flags for m in map(_g.DiskMessage, _g.maildir(lab, user).values())}
assert _flags == {1: {"R"}, 2: {"F"}}
try:
    add_flag(lab.host, lab.imap_port, user, password, 1, "\\\\NoSuchFlag")
except IMAPError:
    pass
else:
    raise AssertionError(_("a refused STORE must raise IMAPError"))
''')
    b.md("""
## Part 10: ports and ideas (5 points)
""")
    b.solution("concepts", '''
IMAP_PORT = None       # the standard TCP port of IMAP
IMAPS_PORT = None      # IMAP encrypted from the first byte (SSL/TLS)
NEEDS_MORE_DISK = None # which server needs more disk space and CPU: "POP3" or "IMAP"
NEVER_CHANGES = None   # which number of a message never changes: "UID" or "sequence number"
### BEGIN SOLUTION
IMAP_PORT = 143
IMAPS_PORT = 993
NEEDS_MORE_DISK = "IMAP"
NEVER_CHANGES = "UID"
### END SOLUTION
''')
    b.tests("concepts_tests", 5, '''
assert isinstance(IMAP_PORT, int) and isinstance(IMAPS_PORT, int), \\
    "each port is a number (an int), such as 80"
assert NEEDS_MORE_DISK in ("POP3", "IMAP"), \\
    'NEEDS_MORE_DISK: "POP3" or "IMAP", in capitals as written here'
assert NEVER_CHANGES in ("UID", _("sequence number")), \\
    'NEVER_CHANGES: "UID" or "sequence number", written exactly as here'
''', '''
assert (IMAP_PORT, IMAPS_PORT, NEEDS_MORE_DISK, NEVER_CHANGES) == (143, 993, "IMAP", "UID")
''')
    b.md("""
## Part 11: in your own words (10 points, graded by your teacher)

A school gives every pupil a mailbox. Should it tell them to use POP3 or IMAP in their mail
apps? Give one advantage of your choice for the pupils and one cost for the school.
""")
    b.written("pop_or_imap", 10, """
IMAP: the mail stays on the server, so pupils see the same folders, read marks and flags on a
school computer, a phone and at home, and nothing is lost with a broken phone. The cost is for
the school's server: it must store every pupil's mail and do the searching, so it needs more
disk space and more CPU than with POP3.
""")
    b.given("stop", stop)
