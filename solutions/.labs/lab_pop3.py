"""Lab 2: POP3 by hand (Level 1) and a raw-socket POP3 client (Level 2) (S5-S7, S13)."""

# Level 1: one test cell per step of the session typed by hand (step, points).
HAND_STEPS = [("login", 6), ("look", 5), ("retr", 8), ("dele", 8), ("quit", 7), ("kept", 6)]


def build(b, setup_md, setup, stop):
    b.md("""
# Lab 2: POP3, by hand and in code

**POP3** lets a mail program download messages from its server (port 110, or 995 encrypted).
Its design: log in, download everything, delete it on the server, hang up; or, if the user
asks for it, keep a copy on the server. In this lab you first speak POP3 yourself, line by line
(level 1), then write such a program with a plain socket, no `poplib` (level 2). The grader
checks what the server saw, and what is left in the mailbox on disk afterwards.

| part | what you do | points |
| --- | --- | --- |
| **level 1** | | |
| 1 | by hand: download one message, delete another, keep the rest | 40 |
| **level 2** | | |
| 2 | log in (USER, PASS) | 6 |
| 3 | how much mail is there? (STAT) | 5 |
| 4 | read a reply of many lines (dot-stuffing, the other way round) | 6 |
| 5 | list the messages with sizes and unique ids (LIST, UIDL) | 8 |
| 6 | download everything, with or without deleting (RETR, DELE) | 8 |
| 7 | download only what is new, keep a copy (UIDL) | 6 |
| 8 | prove that a dropped connection deletes nothing | 6 |
| 9 | ports and states | 5 |
| 10 | a short written answer (graded by your teacher) | 10 |

In level 2, every test makes a new account with a few messages for your code, so you can run a
test again and again.
""")
    b.md(setup_md)
    b.given("setup", setup)
    b.md("""
## Part 1: your mailbox, by hand (40 points)

Bob (password `builder`) has three messages waiting on the server of `example.com`. Run the
next cell to put them there; run it again whenever you want to start over.
""")
    b.given("fill_box", """
grading.fill_mailbox(lab, "bob", "builder", "bob@example.com")
for number, (subject, text) in enumerate(grading.POP3_BOX, 1):
    print(number, subject)
""")
    b.md("""
A cell that starts with `%%pop3 example.com` connects to the POP3 server of `example.com` (port
110, or the lab's port standing for it) and sends the lines below it one by one, waiting for
each answer, as you would type them after `telnet mail.example.com 110`. Replace the two lines
`# YOUR CODE HERE` and `raise NotImplementedError()` with your session:

1. log in: `USER bob`, then `PASS builder`;
2. `STAT`: how many messages, and how many bytes (or `LIST`: the size of each one);
3. `RETR 1`: download message 1 and read it;
4. `DELE 2`: message 2 is spam, mark it for deletion;
5. `QUIT`. Only now does the server really delete what you marked (its *UPDATE* state): a
   session that ends without `QUIT` deletes nothing.

Leave message 3 on the server: your phone should still find it there ("leave a copy on the
server"). Every answer starts with `+OK` (yes) or `-ERR` (no, and why).

The test cells below read what the server saw while the cell just above them ran: keep them
right below your session cell, and run them after it. Got something wrong? Run the cell that
fills the mailbox first, then your corrected session, then the tests: a session run a second
time works on what the first one left, so its `DELE 2` deletes another message.

By the way: after `RETR`, this lab's server moves the message from `new/` to `cur/` in its
Maildir folder and marks it `\\Seen`. That is how *this* server keeps its files, not part of
POP3: POP3 itself knows nothing about read and unread messages.
""")
    b.solution("hand_session", """
%%pop3 example.com
### BEGIN SOLUTION
USER bob
PASS builder
STAT
RETR 1
DELE 2
QUIT
### END SOLUTION
""")
    b.step_tests("box", HAND_STEPS, "pop3_steps",
                 '"pop3:example.com", user="bob", retr=1, dele=2')
    b.md("""
POP3 answers every command with one status line: `+OK ...` or `-ERR ...`. The next cell gives
you an exception for the `-ERR` case, and a small function that reads one status line.
""")
    b.given("helpers", '''
class POP3Error(Exception):
    """The server answered -ERR."""


def status(f):
    """Read one status line from f; return its text after +OK, raise POP3Error on -ERR."""
    line = f.readline()
    if not line:
        raise ConnectionError(_("the server closed the connection"))
    line = line.decode("utf-8", "replace").rstrip("\\r\\n")
    if not line.startswith("+OK"):
        raise POP3Error(line)
    return line[4:]
''')
    b.md("""
## Part 2: log in (6 points)

After the greeting (`+OK ...`), a POP3 client logs in with two commands: `USER name`, then
`PASS password`. This is the moment the server checks that you own the mailbox (S13).

Write `pop3_login(host, port, user, password)`: connect, read the greeting, log in and return
the pair `(sock, f)` (the socket and `sock.makefile("rb")`) ready for the next command. If the
server says `-ERR`, close the socket and raise `POP3Error` (`status` does the raising).
""")
    b.solution("login", '''
def pop3_login(host, port, user, password):
    """Connect and log in; return (sock, f)."""
    ### BEGIN SOLUTION
    sock = socket.create_connection((host, port))
    f = sock.makefile("rb")
    try:
        status(f)
        sock.sendall(f"USER {user}\\r\\n".encode())
        status(f)
        sock.sendall(f"PASS {password}\\r\\n".encode())
        status(f)
    except BaseException:
        sock.close()
        raise
    return sock, f
    ### END SOLUTION
''')
    b.tests("login_tests", 6, '''
user, password = grading.make_account(lab, [grading.sample(1)])
with grading.watch(lab) as ev:
    sock, f = pop3_login(lab.host, lab.pop3_port, user, password)
    sock.sendall(b"QUIT\\r\\n")
    print(status(f))
    sock.close()
s = ev.session("pop3:example.com")
print(s)
assert s.commands() == ["USER", "PASS", "QUIT"], s.commands()
try:
    pop3_login(lab.host, lab.pop3_port, user, "not-the-password")
except POP3Error as e:
    print(_("refused, as it should be:"), e)
else:
    raise AssertionError(_("a wrong password got -ERR: pop3_login must raise POP3Error"))
''', '''
assert s.client_lines[:2] == [f"USER {user}", f"PASS {password}"]
_u, _p = _g.make_account(lab)
try:
    pop3_login(lab.host, lab.pop3_port, _u, "not-" + _p)
except POP3Error:
    pass
else:
    raise AssertionError(_("a wrong password must raise POP3Error"))
''')
    b.md("""
## Part 3: how much mail? (5 points)

`STAT` answers `+OK`, the number of messages and their total size in bytes: `+OK 3 1393`.

Write `mailbox_size(host, port, user, password)`: log in, send `STAT`, send `QUIT`, and return
the two numbers as a pair of `int`s.
""")
    b.solution("stat", '''
def mailbox_size(host, port, user, password):
    """(number of messages, total octets) from STAT."""
    ### BEGIN SOLUTION
    sock, f = pop3_login(host, port, user, password)
    with sock:
        sock.sendall(b"STAT\\r\\n")
        count, octets = status(f).split()[:2]
        sock.sendall(b"QUIT\\r\\n")
        status(f)
    return int(count), int(octets)
    ### END SOLUTION
''')
    b.tests("stat_tests", 5, '''
msgs = [grading.sample(i) for i in range(3)]
user, password = grading.make_account(lab, msgs)
with grading.watch(lab) as ev:
    result = mailbox_size(lab.host, lab.pop3_port, user, password)
print(result)
s = ev.session("pop3:example.com")
assert s.commands() == ["USER", "PASS", "STAT", "QUIT"], s.commands()
total = sum(len(m) for m in msgs)
assert result == (3, total), _("got {0!r}, expected {1!r}").format(result, (3, total))
''', '''
_m = _g.sample(9, body="x" * 100 + "\\r\\n")
_u, _p = _g.make_account(lab, [_m])
assert mailbox_size(lab.host, lab.pop3_port, _u, _p) == (1, len(_m))
_u, _p = _g.make_account(lab)
assert mailbox_size(lab.host, lab.pop3_port, _u, _p) == (0, 0)
''')
    b.md("""
## Part 4: replies of many lines (6 points)

`LIST`, `UIDL` and `RETR` answer with a status line and then many lines, ended by a line with a
single dot. Lines that start with a dot got one more dot in front (you added those in Lab 1
as a client; here the server adds them): remove it.

Write `read_multiline(f)`: read the lines **after** the status line up to the final `.` line,
and return them as one `bytes` value, each line ending with `\\r\\n`, dots undone.
""")
    b.solution("multiline", '''
def read_multiline(f):
    """The lines of a multi-line reply up to the final '.', with dot-stuffing undone."""
    ### BEGIN SOLUTION
    out = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        if line == b".\\r\\n":
            return b"".join(out)
        out.append(line[1:] if line.startswith(b".") else line)
    ### END SOLUTION
''')
    b.tests("multiline_tests", 6, '''
import io
for reply, expected in [(b"1 120\\r\\n2 200\\r\\n.\\r\\n", b"1 120\\r\\n2 200\\r\\n"),
                        (b"..dot\\r\\n.\\r\\nnext\\r\\n", b".dot\\r\\n")]:  # dots undone
    got = read_multiline(io.BytesIO(reply))
    assert got == expected, \\
        _("for the reply {0!r}: got {1!r}, expected {2!r}").format(reply, got, expected)
''', '''
assert read_multiline(io.BytesIO(b".\\r\\n")) == b""
assert read_multiline(io.BytesIO(b"a\\r\\n...\\r\\n..\\r\\n.\\r\\n")) == b"a\\r\\n..\\r\\n.\\r\\n"
_m = [_g.sample(1), _g.sample(2)]
_u, _p = _g.make_account(lab, _m)
_sock = socket.create_connection((lab.host, lab.pop3_port))
_f = _sock.makefile("rb")
assert _f.readline().startswith(b"+OK")
for _command in (f"USER {_u}", f"PASS {_p}", "RETR 1"):
    _sock.sendall(_command.encode() + b"\\r\\n")
    assert _f.readline().startswith(b"+OK")
assert read_multiline(_f) == _m[0]
_sock.sendall(b"QUIT\\r\\n")
_f.close()
_sock.close()
''')
    b.md("""
## Part 5: sizes and unique ids (8 points)

`LIST` gives every message's number and size; `UIDL` its number and *unique id*, a name that
stays the same as long as the message is on the server (numbers change when messages are
deleted; unique ids do not).

Write `list_messages(host, port, user, password)` returning a dict
`{number: (size, unique_id)}` with `int` numbers and sizes and `str` ids. Use `LIST` and `UIDL`
and your `read_multiline`, then `QUIT`.
""")
    b.solution("list", '''
def list_messages(host, port, user, password):
    """{number: (size, unique id)} from LIST and UIDL."""
    ### BEGIN SOLUTION
    sock, f = pop3_login(host, port, user, password)
    with sock:
        sock.sendall(b"LIST\\r\\n")
        status(f)
        sizes = dict(line.split() for line in read_multiline(f).decode().splitlines())
        sock.sendall(b"UIDL\\r\\n")
        status(f)
        uids = dict(line.split() for line in read_multiline(f).decode().splitlines())
        sock.sendall(b"QUIT\\r\\n")
        status(f)
    return {int(n): (int(sizes[n]), uids[n]) for n in sizes}
    ### END SOLUTION
''')
    b.tests("list_tests", 8, '''
msgs = [grading.sample(i) for i in range(4)]
user, password = grading.make_account(lab, msgs)
with grading.watch(lab) as ev:
    listing = list_messages(lab.host, lab.pop3_port, user, password)
print(listing)
s = ev.session("pop3:example.com")
assert s.commands() == ["USER", "PASS", "LIST", "UIDL", "QUIT"], s.commands()
assert sorted(listing) == [1, 2, 3, 4], \\
    _("message numbers {0}, expected {1}").format(sorted(listing), [1, 2, 3, 4])
sizes = [listing[n][0] for n in (1, 2, 3, 4)]
assert sizes == [len(m) for m in msgs], \\
    _("sizes {0}, expected {1}").format(sizes, [len(m) for m in msgs])
''', '''
import poplib
_pop = poplib.POP3(lab.host, lab.pop3_port)
_pop.user(user)
_pop.pass_(password)
_ids = {int(n): v for n, v in (x.decode().split() for x in _pop.uidl()[1])}
_pop.quit()
assert {n: listing[n][1] for n in listing} == _ids
_u, _p = _g.make_account(lab)
assert list_messages(lab.host, lab.pop3_port, _u, _p) == {}
''')
    b.md("""
## Part 6: download, and maybe delete (8 points)

POP3 was made for this: download every message (`RETR n`), mark each one for deletion
(`DELE n`), and `QUIT`. Only at `QUIT` does the server really delete them (its *UPDATE*
state). Many clients offer "leave a copy on the server": then they skip `DELE`.

Write `download_all(host, port, user, password, keep)`: return the list of all messages
(bytes, in order of their numbers), deleting them on the server unless `keep` is true.
""")
    b.solution("download", '''
def download_all(host, port, user, password, keep=False):
    """Every message, in order; deleted on the server unless keep."""
    ### BEGIN SOLUTION
    sock, f = pop3_login(host, port, user, password)
    messages = []
    with sock:
        sock.sendall(b"STAT\\r\\n")
        count = int(status(f).split()[0])
        for n in range(1, count + 1):
            sock.sendall(f"RETR {n}\\r\\n".encode())
            status(f)
            messages.append(read_multiline(f))
            if not keep:
                sock.sendall(f"DELE {n}\\r\\n".encode())
                status(f)
        sock.sendall(b"QUIT\\r\\n")
        status(f)
    return messages
    ### END SOLUTION
''')
    b.tests("download_tests", 8, '''
msgs = [grading.sample(i) for i in range(3)]
user, password = grading.make_account(lab, msgs)
with grading.watch(lab) as ev:
    got = download_all(lab.host, lab.pop3_port, user, password, keep=True)
assert got == msgs, "the messages, byte for byte"
s = ev.session("pop3:example.com")
assert "DELE" not in s.commands() and s.commands()[-1] == "QUIT", s.commands()
assert not ev.removed(user), "keep=True must leave the mailbox as it was"
with grading.watch(lab) as ev:
    got = download_all(lab.host, lab.pop3_port, user, password, keep=False)
assert got == msgs, "the messages, byte for byte"
assert grading.maildir(lab, user) == {}, "keep=False must delete every message (DELE, then QUIT)"
''', '''
_msgs = [_g.sample(i) for i in range(5)]
_u, _p = _g.make_account(lab, _msgs)
with _g.watch(lab) as _ev:
    _got = download_all(lab.host, lab.pop3_port, _u, _p, keep=False)
_s = _ev.session("pop3:example.com")
assert _got == _msgs
assert _s.commands().count("DELE") == 5 and _s.commands()[-1] == "QUIT"
assert _ev.removed(_u) == set(_ev.before[_u]) and len(_ev.before[_u]) == 5
assert _g.maildir(lab, _u) == {}
''')
    b.md("""
## Part 7: only what is new (6 points)

A client that keeps copies on the server must not download the same message twice. It
remembers the unique ids it has already got (`seen`), asks for `UIDL`, and downloads only
the others.

Write `download_new(host, port, user, password, seen)`: return a dict `{unique_id: message}`
of the messages whose id is not in `seen`. Delete nothing.
""")
    b.solution("resume", '''
def download_new(host, port, user, password, seen):
    """{unique id: message bytes} of the messages not in seen; deletes nothing."""
    ### BEGIN SOLUTION
    sock, f = pop3_login(host, port, user, password)
    new = {}
    with sock:
        sock.sendall(b"UIDL\\r\\n")
        status(f)
        for line in read_multiline(f).decode().splitlines():
            n, uid = line.split()
            if uid not in seen:
                sock.sendall(f"RETR {n}\\r\\n".encode())
                status(f)
                new[uid] = read_multiline(f)
        sock.sendall(b"QUIT\\r\\n")
        status(f)
    return new
    ### END SOLUTION
''')
    b.tests("resume_tests", 6, '''
msgs = [grading.sample(i) for i in range(3)]
user, password = grading.make_account(lab, msgs)
first = download_new(lab.host, lab.pop3_port, user, password, set())
assert sorted(first.values()) == sorted(msgs), \\
    _("a new mailbox of {0} messages: expected all of them, each as the bytes RETR gave; got "
      "{1}").format(len(msgs), len(first))
with grading.watch(lab) as ev:
    again = download_new(lab.host, lab.pop3_port, user, password, set(first))
assert again == {}, "nothing is new the second time"
s = ev.session("pop3:example.com")
assert "UIDL" in s.commands() and "RETR" not in s.commands(), s.commands()
''', '''
_acct = lab.store.account(user)
_extra = _g.sample(7)
_acct.folder("INBOX").deliver(_extra)
with _g.watch(lab) as _ev:
    _new = download_new(lab.host, lab.pop3_port, user, password, set(first))
_s = _ev.session("pop3:example.com")
assert list(_new.values()) == [_extra]
assert _s.commands().count("RETR") == 1 and "DELE" not in _s.commands()
assert not _ev.removed(user)
''')
    b.md("""
## Part 8: a dropped connection deletes nothing (6 points)

What if the connection breaks after `DELE` but before `QUIT`? RFC 1939 says: the server
never reaches its UPDATE state, so nothing is deleted. Prove it.

Write `delete_then_drop(host, port, user, password, number)`: log in, send `DELE number`
(check the `+OK`), then close the connection **without** `QUIT`. Then log in again, ask `STAT`,
say `QUIT`, and return the number of messages.

Careful: the file `f = sock.makefile("rb")` shares the connection with the socket. While that
file is open, `sock.close()` alone does **not** close the connection: the server still sees
your first session, and refuses the second login with `-ERR [IN-USE]`. Close both: `f.close()`,
then `sock.close()`. (`with sock:` closes only the socket, too.)
""")
    b.solution("drop", '''
def delete_then_drop(host, port, user, password, number):
    """DELE then hang up without QUIT; return the message count seen in a new session."""
    ### BEGIN SOLUTION
    sock, f = pop3_login(host, port, user, password)
    sock.sendall(f"DELE {number}\\r\\n".encode())
    status(f)
    f.close()
    sock.close()
    return mailbox_size(host, port, user, password)[0]
    ### END SOLUTION
''')
    b.tests("drop_tests", 6, '''
user, password = grading.make_account(lab, [grading.sample(i) for i in range(2)])
with grading.watch(lab) as ev:
    count = delete_then_drop(lab.host, lab.pop3_port, user, password, 1)
print(count)
first, second = ev.sessions("pop3:example.com")[:2]
assert first.commands() == ["USER", "PASS", "DELE"], first.commands()
assert count == 2 and not ev.removed(user), \\
    _("STAT counted {0} messages, expected 2").format(count)
''', '''
assert second.commands()[-1] == "QUIT" and "STAT" in second.commands()
assert len(_g.maildir(lab, user)) == 2
''')
    b.md("""
## Part 9: ports and states (5 points)
""")
    b.solution("concepts", '''
POP3_PORT = None       # the standard TCP port of POP3
POP3S_PORT = None      # POP3 encrypted from the first byte (SSL/TLS)
DELETES_IN = None      # the state in which the server really deletes: "AUTHORIZATION", "TRANSACTION" or "UPDATE"
KEEPS_MAIL = None      # which protocol was designed to keep mail on the server: "POP3" or "IMAP"
### BEGIN SOLUTION
POP3_PORT = 110
POP3S_PORT = 995
DELETES_IN = "UPDATE"
KEEPS_MAIL = "IMAP"
### END SOLUTION
''')
    b.tests("concepts_tests", 5, '''
assert isinstance(POP3_PORT, int) and isinstance(POP3S_PORT, int), \\
    "each port is a number (an int), such as 80"
assert DELETES_IN in ("AUTHORIZATION", "TRANSACTION", "UPDATE"), \\
    'DELETES_IN: one of "AUTHORIZATION", "TRANSACTION", "UPDATE", in capitals as written here'
assert KEEPS_MAIL in ("POP3", "IMAP"), \\
    'KEEPS_MAIL: "POP3" or "IMAP", in capitals as written here'
''', '''
assert (POP3_PORT, POP3S_PORT, DELETES_IN, KEEPS_MAIL) == (110, 995, "UPDATE", "IMAP")
''')
    b.md("""
## Part 10: in your own words (10 points, graded by your teacher)

You read your mail on a phone and on a laptop, both with POP3. Which setting should the
phone's mail app have, "delete from server" or "leave a copy", and what goes wrong with the
other one? Two or three sentences.
""")
    b.written("keep_copy", 10, """
The phone should leave a copy on the server. If it deleted what it downloaded, the messages
would only be on the phone and the laptop would never see them. With copies kept, the laptop
can download them too, and UIDL lets each device skip what it already has.
""")
    b.given("stop", stop)
