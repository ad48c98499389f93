"""Lab 4: the journey of a message across two providers (S3, S11, S13): by hand (Level 1), then
with sockets (Level 2)."""

TLS = True  # Level 1: mail programs submit on 587 (STARTTLS) and download on 995 (TLS)

# Level 1: one test cell per step of a session typed by hand (step, points).
SEND_STEPS = [("hello", 2), ("tls", 3), ("login", 4), ("envelope", 3), ("message", 4),
                ("headers", 2), ("quit", 2)]
DOWNLOAD_STEPS = [("login", 6), ("retr", 7), ("kept", 4), ("quit", 3)]


def build(b, setup_md, setup, stop):
    b.md("""
# Lab 4: the journey of a message

The lecture's example (S11): you write a message in your mail client and press Send. Your
client hands it to **your** mail server with SMTP; your server finds the recipient's server and
hands the message on with SMTP again; the recipient's client downloads it with POP3 or IMAP.

In this lab you are Alice at `example.com`, and John reads his mail at `example.net`. First you
walk the journey **by hand** (level 1): you type what Alice's mail program says to her server,
then what John's mail program says to his. Then you play every part of it with sockets
(level 2) and read the traces the servers leave in the message: the `Received:` headers. The
grader does not look at what your cells print: it reads what the **servers** saw and stored.

| part | what you do | points |
| --- | --- | --- |
| **level 1** | | |
| 1 | by hand: Alice's mail program sends to John (port 587, STARTTLS, log in) | 20 |
| 2 | by hand: John's mail program downloads it (POP3 on port 995), keeping a copy | 20 |
| **level 2** | | |
| 3 | find the recipient's mail server (the MX table) | 6 |
| 4 | be a mail server: pass a message on to another provider | 9 |
| 5 | be Alice's mail client: submit a message to your own server | 9 |
| 6 | read the `Received:` headers: which way did it travel? | 6 |
| 7 | be John's client: download the newest message with POP3 | 6 |
| 8 | ... or read it with IMAP, leaving it on the server | 6 |
| 9-10 | which protocol and port for which step | 12 |
| 11 | a short written answer (graded by your teacher) | 6 |
""")
    b.md(setup_md)
    b.given("setup", setup)
    b.md("""
Alice already wrote to John once today. The next cell sends that message, as her mail program
did: to her own server, on the submission port, after STARTTLS and logging in.
""")
    b.given("alice_sends", """
import smtplib
with smtplib.SMTP(lab.host, lab.submission_port) as client:
    client.starttls(context=lab.client_context())
    client.login("alice", "wonderland")
    client.sendmail("alice@example.com", ["john@example.net"],
                    "From: alice@example.com\\r\\nTo: john@example.net\\r\\n"
                    "Subject: Lab today\\r\\n\\r\\nSee you at the lab!\\r\\n")
lab.settle()
print(lab.mailbox("john"))
""")
    b.md("""
## Part 1: Alice's mail program sends (20 points)

You press Send. Your mail program does not talk to John's server: it hands the message to
**your own** provider's server, on the **submission port 587**, and only after two things:

* `STARTTLS`: from there on the connection is encrypted (TLS), so nobody on the network can read
  your password. The server forgets what was said before, so say `EHLO` **again**;
* `AUTH PLAIN` and one word: your user name and password in *base64* (the next cell prints
  alice's).

(Port 465 does the same with TLS from the first byte; on both ports the connection is
encrypted. Port 25 is for servers passing mail on to each other.)

Be `alice@example.com` (password `wonderland`) and send John (`john@example.net`) a message.
The cell starts with `%%smtp example.com --submission`; type below it, one per line:

1. `EHLO` and a name for your computer, for example `EHLO alice-laptop.example.com`;
2. `STARTTLS`, then `EHLO` again;
3. the `AUTH PLAIN ...` line printed by the next cell;
4. the envelope: `MAIL FROM:<alice@example.com>`, then `RCPT TO:<john@example.net>`;
5. `DATA`, then the message: the headers `From:`, `To:` and `Subject:`, one per line, then
   **an empty line**, then your text, and last a line holding only a dot `.`;
6. `QUIT`.

Replace the lines `# YOUR CODE HERE` and `raise NotImplementedError()` with your session and run
the cell. Read the answers: `250` means yes, `354` "send the message now", a code starting with
5 means no, and the line below it says why. Fix the cell and run it again until it works, then
run the test cells below it.
""")
    b.auth_token()
    b.solution("send_session", """
%%smtp example.com --submission
### BEGIN SOLUTION
EHLO alice-laptop.example.com
STARTTLS
EHLO alice-laptop.example.com
AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=
MAIL FROM:<alice@example.com>
RCPT TO:<john@example.net>
DATA
From: alice@example.com
To: john@example.net
Subject: Follow this message

Hi John, this message travels from example.com to example.net.
.
QUIT
### END SOLUTION
""")
    b.step_tests("send", SEND_STEPS, "smtp_steps",
                 '"submission:example.com", rcpt="john@example.net", user="john", login="alice",\n'
                 '    tls=True, headers=("From", "To", "Subject")')
    b.md("""
Your message's journey did not end at your server. `example.com`'s server looked up the mail
server of `example.net` and passed the message on, on port 25, as one server to another: no
password there. Run the next cell to see that second conversation, which you did not type.
""")
    b.given("show_relay", """
print(lab.transcript("smtp:example.net"))
""")
    b.md("""
## Part 2: John's mail program downloads it (20 points)

Now be John. His mail program fetches his mail from **his** provider, `example.net`, with POP3.
It uses port **995**, where the connection is encrypted from the first byte (like 465 for
sending), so his password is safe on the way. John has two messages from Alice now: the one
sent at the start, and yours.
""")
    b.md("""
The cell starts with `%%pop3 example.net --tls`. Type below it:

1. `USER john`, then `PASS postman`;
2. `STAT`: the server answers `+OK`, the number of messages and their size in bytes;
3. `RETR 1` to download message number 1, the message Alice sent first. Find its `Received:`
   headers at the top: each server on the way added one, the newest on top;
4. `QUIT`.

Do **not** delete anything (`DELE`): John keeps a copy on the server, as most mail programs do
for a few days.
""")
    b.solution("download_session", """
%%pop3 example.net --tls
### BEGIN SOLUTION
USER john
PASS postman
STAT
RETR 1
QUIT
### END SOLUTION
""")
    b.step_tests("download", DOWNLOAD_STEPS, "pop3_read_steps",
                 '"example.net", user="john", came_from="mail.example.com"')
    b.md("""
You walked the whole journey: Alice's program to her server (587, SMTP), her server to John's
(25, SMTP), John's server to his program (995, POP3). Level 2 does the same with sockets.

# Level 2: the journey in code
""")
    b.md("""
You wrote SMTP, POP3 and IMAP clients in the earlier labs. So that this lab is about the
journey, the next cell gives you small helpers for each protocol. Read them: they are short.
""")
    b.given("helpers", '''
import base64
import re


def smtp_reply(f):
    """One SMTP reply: (code, [texts])."""
    texts = []
    while True:
        line = f.readline().decode("utf-8", "replace")
        if not line:
            raise ConnectionError(_("the server closed the connection"))
        texts.append(line[4:].rstrip("\\r\\n"))
        if line[3:4] != "-":
            return int(line[:3]), texts


def smtp_expect(f, code):
    """Read a reply; raise RuntimeError unless it has this code. Returns the texts."""
    got, texts = smtp_reply(f)
    if got != code:
        raise RuntimeError(f"{got} {' '.join(texts)}")
    return texts


def smtp_data(text):
    """A message as sent after 354: CRLF line ends, dot-stuffed, ending with '.'."""
    lines = text.replace("\\r\\n", "\\n").rstrip("\\n").split("\\n")
    return "".join(("." if l.startswith(".") else "") + l + "\\r\\n" for l in lines).encode() + b".\\r\\n"


def pop3_status(f):
    """One POP3 status line: the text after +OK (RuntimeError on -ERR)."""
    line = f.readline().decode("utf-8", "replace").rstrip("\\r\\n")
    if not line.startswith("+OK"):
        raise RuntimeError(line)
    return line[4:]


def pop3_multiline(f):
    """The lines of a multi-line POP3 reply up to '.', dot-stuffing undone."""
    out = b""
    while (line := f.readline()) != b".\\r\\n":
        if not line:
            raise ConnectionError(_("the server closed the connection"))
        out += line[1:] if line.startswith(b".") else line
    return out


def imap_response(f, tag):
    """(status, bytes before the tagged line), literals {n} read whole."""
    data = b""
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError(_("the server closed the connection"))
        if line.startswith(tag.encode() + b" "):
            return line.split()[1].decode(), data
        data += line
        while m := re.search(rb"\\{(\\d+)\\}\\r\\n$", line):
            data += f.read(int(m.group(1)))
            line = f.readline()
            data += line


def first_literal(data):
    """The bytes of the first literal {n} in an IMAP response."""
    m = re.search(rb"\\{(\\d+)\\}\\r\\n", data)
    return data[m.end():m.end() + int(m.group(1))]
''')
    b.md("""
## Part 3: where does the mail for a domain go? (6 points)

On the Internet, a server finds the recipient's mail server with a DNS question: "what is the
**MX** (mail exchanger) of `example.net`?" In the lab, `lab.mx` plays DNS: a dict from domain
to `(host, port)`. Look at it:
""")
    b.given("show_mx", "lab.mx")
    b.md("""
Write `mx_lookup(address, mx)`: return the `(host, port)` of the server for the domain of
`address` (the part after the `@`; domains are not case-sensitive). Raise `KeyError` if the
table has no entry for it.
""")
    b.solution("mx", '''
def mx_lookup(address, mx):
    """(host, port) of the mail server responsible for address."""
    ### BEGIN SOLUTION
    domain = address.rsplit("@", 1)[1].lower()
    return mx[domain]
    ### END SOLUTION
''')
    b.tests("mx_tests", 6, '''
got = mx_lookup("john@example.net", lab.mx)
assert got == lab.mx["example.net"], \\
    _("john@example.net: got {0!r}, expected {1!r}").format(got, lab.mx["example.net"])
got = mx_lookup("alice@example.com", lab.mx)
assert got == (lab.host, lab.smtp_port), \\
    _("alice@example.com: got {0!r}, expected {1!r}").format(got, (lab.host, lab.smtp_port))
''', '''
assert mx_lookup("John@EXAMPLE.NET", lab.mx) == lab.mx["example.net"]
assert mx_lookup("a@b@example.com", {"example.com": ("h", 1)}) == ("h", 1)
try:
    mx_lookup("x@example.org", lab.mx)
except KeyError:
    pass
else:
    raise AssertionError(_("an unknown domain must raise KeyError"))
''')
    b.md("""
## Part 4: be a mail server (9 points)

When Alice's server has a message for `john@example.net`, it acts as an SMTP **client** of
John's server: it connects to the MX of `example.net`, introduces itself with **its own** name
(`EHLO mail.example.com`) and delivers. No password: John's server accepts mail for its own
users from anyone (that is the job of port 25).

Write `relay(mx, sender, recipients, message, name="mail.example.com")`: group the recipients
by domain, and for each domain open one connection to its MX and deliver to all of that
domain's recipients (EHLO, MAIL FROM, RCPT TO for each, DATA, QUIT). Return the list of queue
ids the servers gave (last word of the `250` after the message), one per connection.
""")
    b.solution("relay", '''
def relay(mx, sender, recipients, message, name="mail.example.com"):
    """Deliver straight to each recipient domain's MX; return the queue ids."""
    ### BEGIN SOLUTION
    by_domain = {}
    for rcpt in recipients:
        by_domain.setdefault(rcpt.rsplit("@", 1)[1].lower(), []).append(rcpt)
    ids = []
    for domain, rcpts in by_domain.items():
        with socket.create_connection(mx_lookup(rcpts[0], mx)) as sock:
            f = sock.makefile("rb")
            smtp_expect(f, 220)
            sock.sendall(f"EHLO {name}\\r\\n".encode())
            smtp_expect(f, 250)
            sock.sendall(f"MAIL FROM:<{sender}>\\r\\n".encode())
            smtp_expect(f, 250)
            for rcpt in rcpts:
                sock.sendall(f"RCPT TO:<{rcpt}>\\r\\n".encode())
                smtp_expect(f, 250)
            sock.sendall(b"DATA\\r\\n")
            smtp_expect(f, 354)
            sock.sendall(smtp_data(message))
            ids.append(smtp_expect(f, 250)[-1].split()[-1])
            sock.sendall(b"QUIT\\r\\n")
            smtp_expect(f, 221)
    return ids
    ### END SOLUTION
''')
    b.tests("relay_tests", 9, '''
msg = ("From: alice@example.com\\r\\nTo: john@example.net\\r\\nSubject: straight to you\\r\\n\\r\\n"
       "Delivered by my own little mail server.\\r\\n")
with grading.watch(lab) as ev:
    ids = relay(lab.mx, "alice@example.com", ["john@example.net"], msg)
s = ev.session("smtp:example.net")
print(s)
assert s.client_lines[0] == "EHLO mail.example.com", \\
    _("a server introduces itself with its own name: EHLO mail.example.com; your first line "
      "was {0!r}").format(s.client_lines[0])
assert "AUTH" not in s.commands() and s.commands()[-1] == "QUIT", (
    _("a server passes mail on without AUTH and ends with QUIT; your commands: {0}")
    .format(s.commands()))
got = ev.delivered("john", s)
assert len(got) == 1 and got[0].body == msg.encode(), "john's mailbox has not got the message"
assert ids == s.queue_ids(), \\
    _("relay returned {0!r}, but the server's queue ids were {1!r}").format(ids, s.queue_ids())
''', '''
assert got[0].raw.count(b"Received: ") == 1
_msg = msg.replace("straight to you", "to all of you")
with _g.watch(lab) as _ev:
    _ids = relay(lab.mx, "alice@example.com",
                 ["john@example.net", "bob@example.com", "maria@example.net"], _msg)
_net, _com = _ev.session("smtp:example.net"), _ev.session("smtp:example.com")
assert len(_ev.sessions("smtp")) == 2 and len(_ids) == 2
assert _net.commands().count("RCPT") == 2 and _com.commands().count("RCPT") == 1
for _who, _s in (("john", _net), ("maria", _net), ("bob", _com)):
    assert [m.body for m in _ev.delivered(_who, _s)] == [_msg.encode()], _who
''')
    b.md("""
## Part 5: be Alice's mail client (9 points)

Normally Alice's *client* does not talk to John's server: it hands the message to **her own**
server, logged in (`AUTH PLAIN`, base64 of `\\0login\\0password`), and her server does part 4
for her. As in part 1, the connection is encrypted: here on the port standing for **465**, where
TLS starts with the first byte. `context.wrap_socket(sock, server_hostname=host)` turns your
TCP socket into a TLS one (`context` trusts the lab's certificates); after that you use it
exactly as before.

Write `submit(host, port, context, login, password, sender, recipients, message)` and return
the queue id. The test then looks for **both** steps: your client talking to `example.com` (in
that server's transcript), and `example.com` handing the message to `example.net` (the top
`Received:` header of the message stored in John's mailbox).
""")
    b.solution("submit", '''
def submit(host, port, context, login, password, sender, recipients, message,
           name="alice-laptop.example.com"):
    """Log in to your own server and hand it the message; return the queue id."""
    ### BEGIN SOLUTION
    token = base64.b64encode(f"\\0{login}\\0{password}".encode()).decode()
    with context.wrap_socket(socket.create_connection((host, port)), server_hostname=host) as sock:
        f = sock.makefile("rb")
        smtp_expect(f, 220)
        sock.sendall(f"EHLO {name}\\r\\n".encode())
        smtp_expect(f, 250)
        sock.sendall(f"AUTH PLAIN {token}\\r\\n".encode())
        smtp_expect(f, 235)
        sock.sendall(f"MAIL FROM:<{sender}>\\r\\n".encode())
        smtp_expect(f, 250)
        for rcpt in recipients:
            sock.sendall(f"RCPT TO:<{rcpt}>\\r\\n".encode())
            smtp_expect(f, 250)
        sock.sendall(b"DATA\\r\\n")
        smtp_expect(f, 354)
        sock.sendall(smtp_data(message))
        queue_id = smtp_expect(f, 250)[-1].split()[-1]
        sock.sendall(b"QUIT\\r\\n")
        smtp_expect(f, 221)
    return queue_id
    ### END SOLUTION
''')
    b.tests("submit_tests", 9, '''
msg = ("From: alice@example.com\\r\\nTo: john@example.net\\r\\nSubject: the journey\\r\\n"
       "Date: Tue, 2 Jun 2026 09:00:00 +0000\\r\\nMessage-ID: <journey.1@example.com>\\r\\n\\r\\n"
       "Hi John, follow this message!\\r\\n")
with grading.watch(lab) as ev:
    qid = submit(lab.host, lab.smtps_port, lab.client_context(), "alice", "wonderland",
                 "alice@example.com", ["john@example.net"], msg)
step1 = ev.session("smtps:example.com")
print(step1)
assert "AUTH" in step1.commands(), (
    _("a mail program logs in with AUTH before MAIL FROM; your commands: {0}")
    .format(step1.commands()))
got = ev.delivered("john", step1)
assert len(got) == 1 and got[0].body == msg.encode(), "john's mailbox has not got the message"
# the newest hop, on top: example.com's server handed it to example.net's
step2 = " ".join(got[0].header("Received").split())
print("Received:", step2)
assert step2.startswith("from mail.example.com") and "by mail.example.net" in step2, \\
    "the newest Received: says that mail.example.com handed the message to mail.example.net"
''', '''
assert _g.plain_auth_user(step1) == "alice" and step1.queue_ids() == [qid]
assert "ESMTPA" not in step2 and got[0].raw.count(b"Received: ") == 2
assert step1.client_lines[0] == "EHLO alice-laptop.example.com"
''')
    b.md("""
## Part 6: read the traces (6 points)

Every server that handles a message adds a `Received:` header **on top**: `from` names who
handed it the message, `by` names the server itself. So the newest hop is at the top, and the
journey reads from the bottom up. A header may run over several lines (the next lines start
with a space or tab).

Write `received_hops(raw)` for a message's bytes: return a list of `(from_name, by_name)`
pairs, **oldest hop first**, taking the first word after `from` and after `by`.
""")
    b.solution("hops", '''
def received_hops(raw):
    """[(from, by), ...] of the Received: headers, oldest first."""
    ### BEGIN SOLUTION
    head = raw.split(b"\\r\\n\\r\\n", 1)[0].decode("utf-8", "replace")
    head = re.sub(r"\\r\\n[ \\t]+", " ", head)
    hops = []
    for line in head.split("\\r\\n"):
        if line.lower().startswith("received:"):
            hops.append((re.search(r"\\bfrom\\s+(\\S+)", line).group(1),
                         re.search(r"\\bby\\s+(\\S+)", line).group(1)))
    return hops[::-1]
    ### END SOLUTION
''')
    b.tests("hops_tests", 6, '''
sample = (b"Received: from mail.example.com ([127.0.0.1])\\r\\n\\tby mail.example.net (maillab) with ESMTP;\\r\\n"
          b"Received: from laptop ([127.0.0.1])\\r\\n\\tby mail.example.com (maillab) with ESMTPA;\\r\\n"
          b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
got = received_hops(sample)
expected = [("laptop", "mail.example.com"), ("mail.example.com", "mail.example.net")]
assert got == expected, _("got {0!r}, expected {1!r} (the oldest hop first)").format(got, expected)
''', '''
_msg = "Subject: hops\\r\\nDate: Tue, 2 Jun 2026 09:00:00 +0000\\r\\nMessage-ID: <hops@example.com>\\r\\n\\r\\nx\\r\\n"
with _g.watch(lab) as _ev:
    import smtplib
    with smtplib.SMTP_SSL(lab.host, lab.smtps_port, local_hostname="pc1.example.com",
                          context=lab.client_context()) as _c:
        _c.login("alice", "wonderland")
        _c.sendmail("alice@example.com", ["maria@example.net"], _msg)
_got = _ev.new_messages("maria")
assert received_hops(_got[0].raw) == [("pc1.example.com", "mail.example.com"),
                                      ("mail.example.com", "mail.example.net")]
assert received_hops(b"Subject: none\\r\\n\\r\\nReceived: from x by y\\r\\n") == []
''')
    b.md("""
## Part 7: be John's client, with POP3 (6 points)

John's client downloads from **his** server (`example.net`), after logging in (S13).

Write `pop3_latest(host, port, user, password)`: log in (USER, PASS), find the number of
messages with `STAT`, fetch the last one with `RETR`, `QUIT` without deleting anything, and
return its bytes. Use the helpers.
""")
    b.solution("pop3", '''
def pop3_latest(host, port, user, password):
    """The newest message, downloaded with POP3 and kept on the server."""
    ### BEGIN SOLUTION
    with socket.create_connection((host, port)) as sock:
        f = sock.makefile("rb")
        pop3_status(f)
        sock.sendall(f"USER {user}\\r\\n".encode())
        pop3_status(f)
        sock.sendall(f"PASS {password}\\r\\n".encode())
        pop3_status(f)
        sock.sendall(b"STAT\\r\\n")
        count = int(pop3_status(f).split()[0])
        sock.sendall(f"RETR {count}\\r\\n".encode())
        pop3_status(f)
        message = pop3_multiline(f)
        sock.sendall(b"QUIT\\r\\n")
        pop3_status(f)
    return message
    ### END SOLUTION
''')
    b.tests("pop3_tests", 6, '''
msgs = [grading.sample(i, sender="alice@example.com") for i in range(3)]
user, password = grading.make_account(lab, msgs, domain="example.net")
with grading.watch(lab) as ev:
    newest = pop3_latest(lab.host, lab.port("pop3", "example.net"), user, password)
assert newest == msgs[-1], "return the bytes of the newest message, the last in LIST"
s = ev.session("pop3:example.net")
assert "RETR 3" in s.client_lines and "DELE" not in s.commands(), s.commands()
''', '''
assert not ev.removed(user) and s.commands()[-1] == "QUIT"
''')
    b.md("""
## Part 8: ... or with IMAP (6 points)

With IMAP the message stays on John's server and only what he reads travels.

Write `imap_latest(host, port, user, password)`: `LOGIN`, `SELECT INBOX`, `UID SEARCH ALL`
(the highest UID is the newest), `UID FETCH <uid> (BODY.PEEK[])` (the whole message, without
marking it read), `LOGOUT`; return the message's bytes. `imap_response` and `first_literal`
help.
""")
    b.solution("imap", '''
def imap_latest(host, port, user, password):
    """The newest message, read with IMAP and left unread on the server."""
    ### BEGIN SOLUTION
    with socket.create_connection((host, port)) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(f"a1 LOGIN {user} {password}\\r\\n".encode())
        assert imap_response(f, "a1")[0] == "OK"
        sock.sendall(b"a2 SELECT INBOX\\r\\n")
        imap_response(f, "a2")
        sock.sendall(b"a3 UID SEARCH ALL\\r\\n")
        uids = [int(w) for w in imap_response(f, "a3")[1].split()[2:]]
        sock.sendall(f"a4 UID FETCH {max(uids)} (BODY.PEEK[])\\r\\n".encode())
        message = first_literal(imap_response(f, "a4")[1])
        sock.sendall(b"a5 LOGOUT\\r\\n")
        imap_response(f, "a5")
    return message
    ### END SOLUTION
''')
    b.tests("imap_tests", 6, '''
msgs = [grading.sample(i, sender="alice@example.com") for i in range(3)]
user, password = grading.make_account(lab, msgs, domain="example.net")
with grading.watch(lab) as ev:
    newest = imap_latest(lab.host, lab.port("imap", "example.net"), user, password)
assert newest == msgs[-1], "return the bytes of the newest message, the highest UID"
s = ev.session("imap:example.net")
assert "UID FETCH" in s.commands(tagged=True), s.commands(tagged=True)
''', '''
assert all("S" not in _m.flags for _m in map(_g.DiskMessage, _g.maildir(lab, user).values()))
assert not ev.removed(user)
''')
    b.md("""
## Part 9: which protocol for which step? (6 points)
""")
    b.solution("steps", '''
CLIENT_TO_OWN_SERVER = None  # "SMTP", "POP3" or "IMAP"
SERVER_TO_SERVER = None      # "SMTP", "POP3" or "IMAP"
SERVER_TO_READER = None      # a set: which protocols can bring mail to the reader's client?
NEEDS_LOGIN = None           # a set of the steps that need a password: "submit", "relay", "read"
### BEGIN SOLUTION
CLIENT_TO_OWN_SERVER = "SMTP"
SERVER_TO_SERVER = "SMTP"
SERVER_TO_READER = {"POP3", "IMAP"}
NEEDS_LOGIN = {"submit", "read"}
### END SOLUTION
''')
    b.tests("steps_tests", 6, '''
assert CLIENT_TO_OWN_SERVER in ("SMTP", "POP3", "IMAP") and SERVER_TO_SERVER in (
    "SMTP", "POP3", "IMAP"), "CLIENT_TO_OWN_SERVER and SERVER_TO_SERVER: one of SMTP, POP3, IMAP"
assert isinstance(SERVER_TO_READER, set) and isinstance(NEEDS_LOGIN, set), \\
    "SERVER_TO_READER and NEEDS_LOGIN must be sets, such as {'POP3'}"
assert SERVER_TO_READER <= {"SMTP", "POP3", "IMAP"}, \\
    'SERVER_TO_READER: a set of protocol names written as here, such as {"SMTP"}'
assert NEEDS_LOGIN <= {"submit", "relay", "read"}, \\
    'NEEDS_LOGIN: a set of the steps "submit", "relay", "read", written as here'
''', '''
assert (CLIENT_TO_OWN_SERVER, SERVER_TO_SERVER) == ("SMTP", "SMTP")
assert SERVER_TO_READER == {"POP3", "IMAP"} and NEEDS_LOGIN == {"submit", "read"}
''')
    b.md("""
## Part 10: ports along the way (6 points)

Real-world port numbers, for each step of the journey.
""")
    b.solution("ports", '''
SUBMIT_PORT = None   # Alice's client to her server, with STARTTLS
RELAY_PORT = None    # Alice's server to John's server
POP3_PORT = None     # John's client downloads with POP3 (no encryption)
IMAP_PORT = None     # ... or reads with IMAP (no encryption)
DNS_RECORD = None    # the DNS record type that names a domain's mail server
### BEGIN SOLUTION
SUBMIT_PORT = 587
RELAY_PORT = 25
POP3_PORT = 110
IMAP_PORT = 143
DNS_RECORD = "MX"
### END SOLUTION
''')
    b.tests("ports_tests", 6, '''
assert all(isinstance(p, int) for p in (SUBMIT_PORT, RELAY_PORT, POP3_PORT, IMAP_PORT)), \\
    "each port is a number (an int), such as 80"
assert isinstance(DNS_RECORD, str) and DNS_RECORD.isalpha() and DNS_RECORD.isupper(), \\
    'DNS_RECORD: the name of the record type in capitals (a str), such as "A" or "AAAA"'
''', '''
assert (SUBMIT_PORT, RELAY_PORT, POP3_PORT, IMAP_PORT, DNS_RECORD) == (587, 25, 110, 143, "MX")
''')
    b.md("""
## Part 11: in your own words (6 points, graded by your teacher)

John got a message that claims to come from Alice, but he is not sure. Explain how the
`Received:` headers let him follow the path it took, and why he should trust the lower
headers (older hops) less than the top one.
""")
    b.written("received", 6, """
Each server that passed the message on added a Received: header on top, naming who handed it
over (from) and itself (by), so reading from the bottom up gives the path from the sender's
computer to John's server. The top header was written by John's own server, which he trusts;
the lower ones were written by servers further away, or could even have been made up by the
sender, so they are only as trustworthy as the servers that wrote them.
""")
    b.given("stop", stop)
