"""Lab 1: SMTP by hand (Level 1) and a raw-socket SMTP client (Level 2) (S1-S4)."""

TLS = True  # the submission port (587) with STARTTLS, for part 2

# Level 1: one test cell per step of a session typed by hand (grade id suffix, step, points).
HAND_STEPS = [("hello", 3), ("envelope", 5), ("message", 6), ("headers", 3), ("quit", 3)]
SUBMIT_STEPS = [("tls", 5), ("login", 5), ("envelope", 4), ("message", 6), ("headers", 2),
                ("quit", 3)]


def build(b, setup_md, setup, stop):
    b.md("""
# Lab 1: SMTP, by hand and in code

In the lecture, mail programs hand a message to their provider's server with **SMTP**, and
servers pass it on to each other with SMTP too. In this lab you first speak SMTP yourself, line
by line (level 1), then write a client that does it with nothing but a TCP socket, no
`smtplib` (level 2). The grader does not look at what your cells print: it reads what the
**server** saw, line by line, and what it **stored** in the mailboxes.

| part | what you do | points |
| --- | --- | --- |
| **level 1** | | |
| 1 | by hand: deliver a message on port 25, as a mail server does | 20 |
| 2 | by hand: send as a mail program does: port 587, STARTTLS, log in, to another provider | 25 |
| **level 2** | | |
| 3 | read one reply, also a reply of several lines | 6 |
| 4 | greet the server with EHLO and list its extensions | 5 |
| 5 | prepare a message for DATA (line ends, dot-stuffing) | 6 |
| 6 | send a message to several recipients | 8 |
| 7 | cope with refused recipients | 5 |
| 8 | log in and send to another provider | 5 |
| 9-10 | ports and reply codes | 10 |
| 11 | a short written answer (graded by your teacher) | 10 |
""")
    b.md(setup_md)
    b.given("setup", setup)
    b.md("""
## Part 1: deliver a message by hand, as a server does (20 points)

Servers hand mail to each other on **port 25**. Such a server takes mail for its own users from
anyone, without a password: that is how mail from the whole Internet reaches them. Play the
server of `example.net` and deliver a message from `maria@example.net` to `bob@example.com`.

A cell that starts with `%%smtp example.com` connects to the SMTP server of `example.com` (port
25, or the lab's port standing for it) and sends the lines below it, one by one, waiting for
each answer, as you would type them after `telnet mail.example.com 25`. Replace the two lines
`# YOUR CODE HERE` and `raise NotImplementedError()` with your session:

1. `EHLO` and a name for your computer, for example `EHLO laptop.example.net`;
2. the *envelope*: `MAIL FROM:<maria@example.net>`, then `RCPT TO:<bob@example.com>`;
3. `DATA`, then the message: the headers `From:`, `Date:` and `Subject:`, one per line
   (RFC 5322 asks every message for `From:` and `Date:`; a date looks like
   `Date: Fri, 27 Nov 2026 10:00:00 +0200`), then **an empty line**, then the text, and last a
   line holding only a dot `.`;
4. `QUIT`.

Run the cell and read the server's answers: `250` means yes, `354` means "send the message now",
a code starting with 5 means no, and the line below it says why.

The test cells below read what the server saw while the cell just above them ran: keep them
right below your session cell, and run them after it (got something wrong? fix the session,
run it again, then the tests).
""")
    b.solution("hand_session", """
%%smtp example.com
### BEGIN SOLUTION
EHLO laptop.example.net
MAIL FROM:<maria@example.net>
RCPT TO:<bob@example.com>
DATA
From: maria@example.net
To: bob@example.com
Date: Fri, 27 Nov 2026 10:00:00 +0200
Subject: Hello from example.net

Hi Bob, this message came to you by hand.
.
QUIT
### END SOLUTION
""")
    b.step_tests("hand", HAND_STEPS, "smtp_steps",
                 '"smtp:example.com", rcpt="bob@example.com", user="bob"')
    b.md("""
## Part 2: send as a mail program does (25 points)

A mail program (Thunderbird, your phone) does not use port 25. It sends to its *own* provider
on the **submission port 587**, and only after two things:

* `STARTTLS`: from there on, the connection is encrypted (TLS), so nobody on the network can
  read your password. The server forgets what was said before, so say `EHLO` **again**;
* `AUTH`: it logs in. `AUTH PLAIN` takes one word, the user name and password in *base64*
  (run the next cell to see alice's).

(Port 465 does the same with TLS from the first byte; on both, the connection is encrypted.)
Then your provider passes the message on to the other provider's server on port 25, on its own.

Be `alice@example.com` (password `wonderland`) and send a message to `john@example.net`: the
cell starts with `%%smtp example.com --submission`. The message needs `From:`, `To:` and
`Subject:` (the submission server adds a `Date:` when a program forgot it).
""")
    b.auth_token()
    b.solution("submit_session", """
%%smtp example.com --submission
### BEGIN SOLUTION
EHLO laptop.example.com
STARTTLS
EHLO laptop.example.com
AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=
MAIL FROM:<alice@example.com>
RCPT TO:<john@example.net>
DATA
From: alice@example.com
To: john@example.net
Subject: Hello John

Greetings from example.com, sent like a real mail program.
.
QUIT
### END SOLUTION
""")
    b.step_tests("submit", SUBMIT_STEPS, "smtp_steps",
                 '"submission:example.com", rcpt="john@example.net", user="john", login="alice",\n'
                 '    tls=True, headers=("From", "To", "Subject")')
    b.md("""
## Part 3: read a reply (6 points)

Every SMTP reply starts with a three-digit code. A reply can take several lines: then every
line but the last has a `-` after the code, and the last one a space:

```
250-mail.example.com
250-SIZE 10485760
250 HELP
```

Write `read_reply(f)`. `f` is a file made from a socket with `sock.makefile("rb")`: its
`readline()` returns one line as bytes, with its `\\r\\n` (or `b""` when the server hung up).
Return the code as an `int` and the texts after the code (without the `-`/space and without
`\\r\\n`) as a list of strings. Raise `ConnectionError` if the server hung up.
""")
    b.solution("read_reply", '''
def read_reply(f):
    """Read one SMTP reply from f; return (code, [text of each line])."""
    ### BEGIN SOLUTION
    texts = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        line = line.decode("utf-8", "replace").rstrip("\\r\\n")
        texts.append(line[4:])
        if line[3:4] != "-":
            return int(line[:3]), texts
    ### END SOLUTION
''')
    b.tests("read_reply_tests", 6, '''
import io
sock = socket.create_connection((lab.host, lab.smtp_port))
f = sock.makefile("rb")
code, texts = read_reply(f)
print(code, texts)
assert code == 220 and texts[0].startswith("mail.example.com"), (
    _("the greeting: got {0!r}, expected 220 and a text starting with mail.example.com")
    .format((code, texts)))
sock.sendall(b"EHLO tester.example.org\\r\\n")
code, texts = read_reply(f)
print(code, texts)
assert code == 250 and len(texts) > 3, "EHLO gets a reply of several lines"
sock.sendall(b"QUIT\\r\\n")
got = read_reply(f)
assert got[0] == 221, _("the answer to QUIT: got {0!r}, expected the code 221").format(got)
sock.close()
got = read_reply(io.BytesIO(b"250-first\\r\\n250 last\\r\\n"))
assert got == (250, ["first", "last"]), \\
    _("got {0!r}, expected {1!r}").format(got, (250, ["first", "last"]))
try:
    got = read_reply(io.BytesIO(b""))  # the server hung up: no line at all
except ConnectionError:
    pass
else:
    raise AssertionError(
        _("a closed connection must raise ConnectionError, not return {0!r}").format(got))
''', '''
assert read_reply(io.BytesIO(b"250-a b\\r\\n250-c\\r\\n250 d\\r\\n")) == (250, ["a b", "c", "d"])
assert read_reply(io.BytesIO(b"354 go ahead\\r\\n250 later\\r\\n")) == (354, ["go ahead"])
_f = io.BytesIO(b"")
try:
    read_reply(_f)
except ConnectionError:
    pass
else:
    raise AssertionError(_("a closed connection must raise ConnectionError"))
''')
    b.md("""
## Part 4: say hello (5 points)

A client introduces itself with `EHLO` and its own name (`EHLO laptop.example.com`). The
server answers with a list of the *extensions* it supports, one per line after the first
(`SIZE 10485760`, `AUTH PLAIN LOGIN`, `STARTTLS`, ...).

Write `ehlo_extensions(host, port, name)`: connect, read the greeting, send `EHLO name`, read
the reply, say `QUIT` (and read its reply), close the socket, and return the set of extension
**keywords** in upper case (the first word of each line after the first: `{"SIZE", "AUTH", ...}`).
Use your `read_reply`.
""")
    b.solution("ehlo", '''
def ehlo_extensions(host, port, name):
    """Greet the server with EHLO name; return the set of extension keywords it offers."""
    ### BEGIN SOLUTION
    with socket.create_connection((host, port)) as sock:
        f = sock.makefile("rb")
        read_reply(f)
        sock.sendall(f"EHLO {name}\\r\\n".encode())
        code, texts = read_reply(f)
        sock.sendall(b"QUIT\\r\\n")
        read_reply(f)
    return {t.split()[0].upper() for t in texts[1:] if t.split()}
    ### END SOLUTION
''')
    b.tests("ehlo_tests", 5, '''
with grading.watch(lab) as ev:
    ext = ehlo_extensions(lab.host, lab.smtp_port, "student.example.org")
print(ext)
s = ev.session("smtp:example.com")
print(s)  # your session, as the server saw it
assert {"SIZE", "AUTH", "8BITMIME"} <= ext, (
    _("SIZE, AUTH and 8BITMIME are among the keywords the server offers; you returned {0!r}")
    .format(ext))
assert s.commands() == ["EHLO", "QUIT"], s.commands()
''', '''
assert s.client_lines[0] == "EHLO student.example.org"
_offered = {t[4:].split()[0].upper() for t in s.server_lines[1:] if t.startswith("250")}
_offered.discard("MAIL.EXAMPLE.COM")
assert ext == _offered, (ext, _offered)
with _g.watch(lab) as _ev:
    _ext = ehlo_extensions(lab.host, lab.port("smtp", "example.net"), "other.example.org")
_s = _ev.session("smtp:example.net")
assert _s.client_lines == ["EHLO other.example.org", "QUIT"] and "SIZE" in _ext
''')
    b.md("""
## Part 5: get a message ready for DATA (6 points)

After `DATA` (and the server's `354`), the client sends the message and ends it with a line
that holds a single dot. Two rules make that work:

* every line ends with `\\r\\n` (CR LF), whatever your text used;
* a line of the message that **starts** with a dot gets one more dot in front
  (*dot-stuffing*), so that no line of the message can look like the end. The server removes it.

Write `dot_stuff(text)`: return the bytes to send after `354` (UTF-8), ending with the
final `.\\r\\n`. A text that does not end with a line break gets one first.
""")
    b.solution("dot_stuff", '''
def dot_stuff(text):
    """The bytes a client sends after 354: CRLF line ends, dot-stuffed, ending with '.' CRLF."""
    ### BEGIN SOLUTION
    text = text.replace("\\r\\n", "\\n")
    if not text.endswith("\\n"):
        text += "\\n"
    lines = ["." + line if line.startswith(".") else line for line in text.split("\\n")[:-1]]
    return ("\\r\\n".join(lines) + "\\r\\n.\\r\\n").encode("utf-8")
    ### END SOLUTION
''')
    b.tests("dot_stuff_tests", 6, '''
for text, expected in [("Hi\\r\\n", b"Hi\\r\\n.\\r\\n"),
                       ("one\\ntwo\\n", b"one\\r\\ntwo\\r\\n.\\r\\n"),   # CRLF line ends
                       (".hidden\\r\\n", b"..hidden\\r\\n.\\r\\n"),   # dot-stuffing
                       ("no end", b"no end\\r\\n.\\r\\n"),               # a line break added
                       ("Καλημέρα\\n", "Καλημέρα\\r\\n.\\r\\n".encode())]:  # UTF-8
    got = dot_stuff(text)
    assert got == expected, \\
        _("dot_stuff({0!r}) returned {1!r}, expected {2!r}").format(text, got, expected)
''', '''
assert dot_stuff("no end") == b"no end\\r\\n.\\r\\n"
assert dot_stuff("a\\n.\\n..b\\n") == b"a\\r\\n..\\r\\n...b\\r\\n.\\r\\n"
assert dot_stuff("x .y\\r\\n\\r\\nz.\\r\\n") == b"x .y\\r\\n\\r\\nz.\\r\\n.\\r\\n"
assert dot_stuff("Grüße\\n") == "Grüße\\r\\n.\\r\\n".encode()
''')
    b.md("""
## Part 6: send a message (8 points)

Now the whole conversation: greeting, `EHLO name`, `MAIL FROM:<sender>`, one
`RCPT TO:<...>` for **each** recipient, `DATA`, the message (your `dot_stuff`), and `QUIT`:
the session you typed in part 1, now in code.
Check every reply: if a code is not the one you expect (220, 250, 354, 221), raise
`RuntimeError` with the reply.

Write `send_mail(host, port, sender, recipients, message, name="student.example.org")` and
return the queue id the server gives after the message (`250 2.0.0 OK: queued as 4F2A...`:
the last word).
""")
    b.solution("send_mail", '''
def send_mail(host, port, sender, recipients, message, name="student.example.org"):
    """Send message from sender to every address in recipients; return the server's queue id."""
    ### BEGIN SOLUTION
    def expect(f, wanted):
        code, texts = read_reply(f)
        if code != wanted:
            raise RuntimeError(f"{code} {' '.join(texts)}")
        return texts

    with socket.create_connection((host, port)) as sock:
        f = sock.makefile("rb")
        expect(f, 220)
        sock.sendall(f"EHLO {name}\\r\\n".encode())
        expect(f, 250)
        sock.sendall(f"MAIL FROM:<{sender}>\\r\\n".encode())
        expect(f, 250)
        for rcpt in recipients:
            sock.sendall(f"RCPT TO:<{rcpt}>\\r\\n".encode())
            expect(f, 250)
        sock.sendall(b"DATA\\r\\n")
        expect(f, 354)
        sock.sendall(dot_stuff(message))
        texts = expect(f, 250)
        sock.sendall(b"QUIT\\r\\n")
        expect(f, 221)
    return texts[-1].split()[-1]
    ### END SOLUTION
''')
    b.tests("send_mail_tests", 8, '''
msg = ("From: alice@example.com\\r\\nTo: bob@example.com\\r\\nSubject: dots\\r\\n\\r\\n"
       ".this line starts with a dot\\r\\n.\\r\\nand the line above was a single dot\\r\\n")
with grading.watch(lab) as ev:
    qid = send_mail(lab.host, lab.smtp_port, "alice@example.com", ["bob@example.com"], msg)
s = ev.session("smtp:example.com")
print(s)
assert s.commands() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"], s.commands()
assert s.queue_ids() == [qid], \\
    _("send_mail returned {0!r}, but the server's queue id was {1!r}").format(qid, s.queue_ids())
stored = ev.delivered("bob", s)
assert len(stored) == 1 and stored[0].body == msg.encode(), "bob's mailbox has not got it"
try:
    send_mail(lab.host, lab.smtp_port, "alice@example.com", ["nobody@example.com"], "x\\r\\n")
except RuntimeError as e:
    print(_("refused, as it should be:"), e)
else:
    raise AssertionError(
        _("RCPT TO:<nobody@example.com> got 550: send_mail must raise RuntimeError"))
''', '''
assert s.client_lines[1] == "MAIL FROM:<alice@example.com>"
assert s.data_payloads() == [msg.replace("\\r\\n.", "\\r\\n..").encode()]
_msg = ("From: maria@example.net\\r\\nSubject: two of you\\r\\n\\r\\n..two dots\\r\\nend\\r\\n")
with _g.watch(lab) as _ev:
    _q = send_mail(lab.host, lab.smtp_port, "maria@example.net",
                   ["alice@example.com", "bob@example.com"], _msg, name="pc7.example.net")
_s = _ev.session("smtp:example.com")
assert _s.commands() == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
assert _s.client_lines[0] == "EHLO pc7.example.net"
assert _s.client_lines[2:4] == ["RCPT TO:<alice@example.com>", "RCPT TO:<bob@example.com>"]
assert _s.data_payloads() == [_msg.replace("\\r\\n..", "\\r\\n...").encode()]
for _who in ("alice", "bob"):
    _got = _ev.delivered(_who, _s)
    assert len(_got) == 1 and _got[0].body == _msg.encode(), _who
assert _q == _s.queue_ids()[0]
_bad = None
try:
    send_mail(lab.host, lab.smtp_port, "alice@example.com", ["nobody@example.com"], "x\\r\\n")
except RuntimeError as _e:
    _bad = str(_e)
assert _bad and _bad.startswith("550"), _bad
''')
    b.md("""
## Part 7: when the server says no (5 points)

Servers refuse some recipients: `550` for a user that does not exist, `554` when you ask a
server to pass mail on to a domain it is not responsible for, without logging in (it is not an
*open relay*). A good client goes on with the recipients that were accepted; if none was, it
sends no `DATA` at all.

Write `send_checked(host, port, sender, recipients, message)` returning a pair
`(queue_id, refused)`: `refused` is a dict from each refused address to its reply code,
such as `{"nobody@example.com": 550}`, and `queue_id` is `None` when nothing was sent. End the
session with `QUIT` in every case.
""")
    b.solution("send_checked", '''
def send_checked(host, port, sender, recipients, message, name="student.example.org"):
    """Send to the recipients the server accepts; return (queue_id or None, {refused: code})."""
    ### BEGIN SOLUTION
    refused, queue_id = {}, None
    with socket.create_connection((host, port)) as sock:
        f = sock.makefile("rb")
        read_reply(f)
        sock.sendall(f"EHLO {name}\\r\\n".encode())
        read_reply(f)
        sock.sendall(f"MAIL FROM:<{sender}>\\r\\n".encode())
        code, texts = read_reply(f)
        if code == 250:
            for rcpt in recipients:
                sock.sendall(f"RCPT TO:<{rcpt}>\\r\\n".encode())
                code, texts = read_reply(f)
                if code != 250:
                    refused[rcpt] = code
            if len(refused) < len(recipients):
                sock.sendall(b"DATA\\r\\n")
                if read_reply(f)[0] == 354:
                    sock.sendall(dot_stuff(message))
                    code, texts = read_reply(f)
                    if code == 250:
                        queue_id = texts[-1].split()[-1]
        sock.sendall(b"QUIT\\r\\n")
        read_reply(f)
    return queue_id, refused
    ### END SOLUTION
''')
    b.tests("send_checked_tests", 5, '''
msg = "Subject: some of you\\r\\n\\r\\nhello\\r\\n"
with grading.watch(lab) as ev:
    qid, refused = send_checked(lab.host, lab.smtp_port, "alice@example.com",
                                ["nobody@example.com", "bob@example.com"], msg)
print(qid, refused)
s = ev.session("smtp:example.com")
assert refused == {"nobody@example.com": 550}, \\
    _("refused: got {0!r}, expected {1!r}").format(refused, {"nobody@example.com": 550})
assert s.commands() == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"], s.commands()
assert len(ev.delivered("bob", s)) == 1, "bob's mailbox has not got the message"
with grading.watch(lab) as ev2:
    got = send_checked(lab.host, lab.smtp_port, "alice@example.com", ["nemo@example.com"], msg)
assert got == (None, {"nemo@example.com": 550}), \\
    _("got {0!r}, expected {1!r}").format(got, (None, {"nemo@example.com": 550}))
assert ev2.session("smtp:example.com").commands() == ["EHLO", "MAIL", "RCPT", "QUIT"], \\
    "no recipient was accepted: no DATA, but QUIT"
''', '''
with _g.watch(lab) as _ev:
    _r = send_checked(lab.host, lab.smtp_port, "alice@example.com",
                      ["john@example.net", "ghost@example.com"], msg)
_s = _ev.session("smtp:example.com")
assert _r == (None, {"john@example.net": 554, "ghost@example.com": 550}), _r
assert "DATA" not in _s.commands() and _s.commands()[-1] == "QUIT"
assert not any(_ev.new_messages(u) for u in ("alice", "bob", "john", "maria"))
assert qid == s.queue_ids()[0]
''')
    b.md("""
## Part 8: log in and send to another provider (5 points)

Your server takes mail for *other* domains only from users who log in. SMTP's `AUTH PLAIN`
does it in one line: `AUTH PLAIN ` followed by the base64 encoding of
`\\0login\\0password` (two zero bytes). The server answers `235` when the login worked. Then
your server passes the message on to the other provider's server, on its own (the lecture's
journey, S3 and S11).

Write `send_as_user(host, port, login, password, sender, recipients, message)`: like
`send_mail`, but log in after `EHLO`. Return the queue id. (`import base64` first.)

A real mail program logs in on port 587 after `STARTTLS`, as you did by hand in part 2, never
without encryption. The lab's port 25 takes `AUTH` without TLS too, so that your code can stay
short: that is a shortcut of this lab, not something to copy.
""")
    b.solution("send_as_user", '''
import base64

def send_as_user(host, port, login, password, sender, recipients, message,
                 name="student.example.org"):
    """Log in with AUTH PLAIN, then send; return the queue id."""
    ### BEGIN SOLUTION
    def expect(f, wanted):
        code, texts = read_reply(f)
        if code != wanted:
            raise RuntimeError(f"{code} {' '.join(texts)}")
        return texts

    token = base64.b64encode(f"\\0{login}\\0{password}".encode()).decode()
    with socket.create_connection((host, port)) as sock:
        f = sock.makefile("rb")
        expect(f, 220)
        sock.sendall(f"EHLO {name}\\r\\n".encode())
        expect(f, 250)
        sock.sendall(f"AUTH PLAIN {token}\\r\\n".encode())
        expect(f, 235)
        sock.sendall(f"MAIL FROM:<{sender}>\\r\\n".encode())
        expect(f, 250)
        for rcpt in recipients:
            sock.sendall(f"RCPT TO:<{rcpt}>\\r\\n".encode())
            expect(f, 250)
        sock.sendall(b"DATA\\r\\n")
        expect(f, 354)
        sock.sendall(dot_stuff(message))
        texts = expect(f, 250)
        sock.sendall(b"QUIT\\r\\n")
        expect(f, 221)
    return texts[-1].split()[-1]
    ### END SOLUTION
''')
    b.tests("send_as_user_tests", 5, '''
msg = ("From: alice@example.com\\r\\nTo: john@example.net\\r\\nSubject: hello John\\r\\n"
       "Date: Mon, 1 Jun 2026 10:00:00 +0000\\r\\nMessage-ID: <lab1.part6@example.com>\\r\\n\\r\\n"
       "Greetings from example.com!\\r\\n")
with grading.watch(lab) as ev:
    qid = send_as_user(lab.host, lab.smtp_port, "alice", "wonderland",
                       "alice@example.com", ["john@example.net"], msg)
s = ev.session("smtp:example.com")
print(s)
assert s.commands() == ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"], s.commands()
got = ev.delivered("john", s)
assert len(got) == 1 and got[0].body == msg.encode(), "john has not got it (yet?)"
try:
    send_as_user(lab.host, lab.smtp_port, "alice", "not-her-password", "alice@example.com",
                 ["john@example.net"], msg)
except RuntimeError as e:
    print(_("refused, as it should be:"), e)
else:
    raise AssertionError(_("a wrong password gets 535: send_as_user must raise RuntimeError"))
''', '''
assert _g.plain_auth_user(s) == "alice" and qid == s.queue_ids()[0]
assert got[0].raw.count(b"Received: ") == 2  # the relay hop
_msg = msg.replace("lab1.part6", "lab1.part6b").replace("John", "Maria and John")
with _g.watch(lab) as _ev:
    _q = send_as_user(lab.host, lab.port("smtp", "example.net"), "john", "postman",
                      "john@example.net", ["maria@example.net", "bob@example.com"], _msg)
_s = _ev.session("smtp:example.net")
assert _g.plain_auth_user(_s) == "john"
for _who in ("maria", "bob"):
    _got = _ev.delivered(_who, _s)
    assert len(_got) == 1 and _got[0].body == _msg.encode(), _who
_err = None
try:
    send_as_user(lab.host, lab.smtp_port, "alice", "wrong", "alice@example.com",
                 ["john@example.net"], _msg)
except RuntimeError as _e:
    _err = str(_e)
assert _err and _err.startswith("535"), _err
''')
    b.md("""
## Part 9: ports (5 points)

Fill in the port numbers of the real world (not the lab's) and name the protocol.
""")
    b.solution("ports", '''
# Which TCP port does a server listen on ...
SMTP_PORT = None        # ... for SMTP between servers?
SUBMISSION_PORT = None  # ... for mail programs sending, encrypted after STARTTLS?
SMTPS_PORT = None       # ... for mail programs sending, encrypted from the first byte (TLS)?
SENDING_PROTOCOL = None # "SMTP", "POP3" or "IMAP": which one hands mail to a server?
### BEGIN SOLUTION
SMTP_PORT = 25
SUBMISSION_PORT = 587
SMTPS_PORT = 465
SENDING_PROTOCOL = "SMTP"
### END SOLUTION
''')
    b.tests("ports_tests", 5, '''
assert all(isinstance(p, int) for p in (SMTP_PORT, SUBMISSION_PORT, SMTPS_PORT)), \\
    "each port is a number (an int), such as 80"
assert SENDING_PROTOCOL in ("SMTP", "POP3", "IMAP"), "SENDING_PROTOCOL: one of SMTP, POP3, IMAP"
''', '''
assert (SMTP_PORT, SUBMISSION_PORT, SMTPS_PORT) == (25, 587, 465)
assert SENDING_PROTOCOL == "SMTP"
''')
    b.md("""
## Part 10: reading reply codes (5 points)

Look back at your transcripts. Which code does the server send ...
""")
    b.solution("codes", '''
READY = None         # ... as its greeting, when it is ready?
GO_AHEAD = None      # ... after DATA, to say "send the message now"?
NO_SUCH_USER = None  # ... for RCPT TO a user that does not exist?
LOGGED_IN = None     # ... when AUTH worked?
FIRST_DIGIT_OK = None  # which first digit means success ("2", "3", "4" or "5")?
### BEGIN SOLUTION
READY = 220
GO_AHEAD = 354
NO_SUCH_USER = 550
LOGGED_IN = 235
FIRST_DIGIT_OK = "2"
### END SOLUTION
''')
    b.tests("codes_tests", 5, '''
assert all(isinstance(c, int) for c in (READY, GO_AHEAD, NO_SUCH_USER, LOGGED_IN)), \\
    "each reply code is a number (an int), such as 250"
assert FIRST_DIGIT_OK in ("2", "3", "4", "5"), \\
    'FIRST_DIGIT_OK: one of "2", "3", "4", "5": a digit in quotes (a str), not a number'
''', '''
assert (READY, GO_AHEAD, NO_SUCH_USER, LOGGED_IN) == (220, 354, 550, 235)
assert FIRST_DIGIT_OK == "2"
''')
    b.md("""
## Part 11: in your own words (10 points, graded by your teacher)

The server of `example.com` took a message for its own user `bob@example.com` without a
password (parts 1 and 6). A message for `john@example.net`, a user of another provider, it
passes on only for a user who logged in: you logged in before sending to John (parts 2 and 8),
and to a stranger it answers `554` (part 7). Explain in two or three sentences why a mail
server behaves like that.
""")
    b.written("why_auth", 10, """
A server must accept mail for its own users from anyone, because other servers deliver to it
without an account there. Passing mail on to other domains is different: if it did that for
strangers, spammers could use it as an open relay. So it relays only for its own users, who
prove who they are with AUTH.
""")
    b.given("stop", stop)
