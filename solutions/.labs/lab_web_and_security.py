"""Lab 5: webmail over HTTP, passwords in clear text versus TLS, and setting up a mail program
(S4, S7, S10, S12, S13, S14): by hand (Level 1), then with sockets (Level 2)."""

TLS = True  # this lab needs the lab's certificate authority and its TLS ports

# Level 1: one test cell per step of a session typed by hand (step, points).
SUBMIT_STEPS = [("hello", 2), ("tls", 4), ("login", 3), ("envelope", 2), ("message", 3),
                ("quit", 2)]


def build(b, setup_md, setup, stop):
    b.md("""
# Lab 5: webmail, and keeping passwords secret

**Webmail** is e-mail in a web browser: the browser speaks **HTTP** to a web server, and the
web server speaks IMAP and SMTP to the mail servers for you (S12). Either way you log in with
a user name and a password (S13), and that password crosses the network. Without encryption,
anyone on the way can read it; with TLS (ports 465/587, 995, 993, 443) they cannot.

| part | what you do | points |
| --- | --- | --- |
| **level 1** | | |
| 1 | by hand: ask the webmail for pages and log in over HTTP | 18 |
| 2 | by hand: send over port 587 with STARTTLS, and predict what an eavesdropper reads | 22 |
| 3 | set up a mail program: the settings of Thunderbird's account window | 16 |
| **level 2** | | |
| 4 | a raw HTTP request: fetch the webmail's login page | 5 |
| 5 | find the fields of the login form | 5 |
| 6 | log in to the webmail like a browser does (POST, cookies) | 4 |
| 7 | be the eavesdropper: find passwords in clear-text sessions | 5 |
| 8 | POP3 over TLS (port 995's job) | 7 |
| 9 | SMTP submission with STARTTLS (port 587's job) | 7 |
| 10 | which port for which job | 6 |
| 11 | a short written answer (graded by your teacher) | 5 |

The grader does not look at what your cells print: it reads what the **servers** saw and
stored, and it tries your mail program's settings on them.
""")
    b.md(setup_md)
    b.given("setup", setup)
    b.md("""
# Level 1: by hand

## Part 1: ask the webmail for pages and log in, by hand (18 points)

Your browser speaks **HTTP** to the webmail: it sends a *request*, text like this, and gets a
page back.

```
GET /login HTTP/1.1
Host: localhost
```

The first line says what you want: the method `GET`, the path `/login`, and the protocol
version. The `Host:` line names the web site. An **empty line** ends the request (maillab adds
it if you forget). A cell that starts with `%%http example.com` sends your lines to the lab's
webmail, as you would type them after `telnet localhost 80`.

The cell below starts with `%%http example.com`: replace the two lines `# YOUR CODE HERE` and
`raise NotImplementedError()` under it with the request for the login page, `/login` (as
above), and run it. The answer starts with a **status line**: `HTTP/1.1 200 OK`
means "here it is". Then come header lines, an empty line, and the page itself (HTML): find the
form with the fields "Email Address" and "Password".
""")
    b.solution("page_session", """
%%http example.com
### BEGIN SOLUTION
GET /login HTTP/1.1
Host: localhost
### END SOLUTION
""")
    b.step_tests("page", [("request", 3)], "http_steps", '"GET", "/login", 200')
    b.md("""
Now ask for your mailbox, the page `/mail`, the same way, in the next cell (it starts with
`%%http example.com` too). You have not logged in, so the
webmail does not show it: it answers `303 See Other` and a `Location:` header that sends the
browser to the login page instead. (Status codes starting with 2 mean success, 3 "look
elsewhere", 4 a mistake of the client, such as `404 Not Found`, 5 a fault of the server.)
""")
    b.solution("mailbox_session", """
%%http example.com
### BEGIN SOLUTION
GET /mail HTTP/1.1
Host: localhost
### END SOLUTION
""")
    b.step_tests("mailbox", [("request", 3)], "http_steps", '"GET", "/mail", 303')
    b.md("""
### Log in by hand

A browser logs in with two requests: it fetches the login page, then sends the form back
filled in. The webmail's first answer (the login page, above) came with two things it wants
back with the form. Scroll up to that answer and find them:

- a **cookie**, in the header line `Set-Cookie: maillab_webmail_..._pre=...; Max-Age=3600; ...`.
  The cookie is the part before the first `;` (its name, `=`, its value). A browser sends it back
  in a `Cookie:` line.
- a **token**, hidden in the form: `<input type="hidden" name="csrf" value="...">`. It proves
  that the form came from this webmail, not from another web site that makes your browser
  send a login behind your back (that attack is called CSRF).

Both change every time the lab starts, and your teacher's grader starts a lab of its own: a
value you paste works only until then. So do not paste them: write `{Set-Cookie}` and
`{csrf}` where they go. As in a Python f-string, maillab puts in the values from the webmail's
last answer that had them, and shows the lines as they were really sent.

The form goes back with `POST`. Its body, after the empty line, holds the fields as
`name=value`, joined with `&`:

```
POST /login HTTP/1.1
Host: localhost
Cookie: {Set-Cookie}
Content-Type: application/x-www-form-urlencoded

csrf={csrf}&address=alice@example.com&password=wonderland
```

`Content-Type` says how the body is written: a filled-in form. The server also needs
`Content-Length`, the number of bytes of the body, to know where it ends: leave that line out,
and maillab counts the bytes and adds it (the output marks the added line).

In the next cell, under `%%http example.com`, replace the two lines `# YOUR CODE HERE` and
`raise NotImplementedError()` with this request, and run it. `303 See Other` with
`Location: mail` means you are in. `403 Forbidden` means the token or the cookie was not this
run's (run the `GET /login` cell again, then this one); `401 Unauthorized`, a wrong password.
""")
    b.solution("post_session", """
%%http example.com
### BEGIN SOLUTION
POST /login HTTP/1.1
Host: localhost
Cookie: {Set-Cookie}
Content-Type: application/x-www-form-urlencoded

csrf={csrf}&address=alice@example.com&password=wonderland
### END SOLUTION
""")
    b.step_tests("post", [("token", 4), ("login", 4)], "webmail_login_steps",
                 '"alice@example.com"')
    b.md("""
The answer to your login sets a new cookie, in its first `Set-Cookie:` line:
`maillab_webmail_...=...`. That is your **session**: each request that carries it tells the
webmail that you are logged in, until you log out.

Ask for your mailbox, `/mail`, once more, now with the line `Cookie: {Set-Cookie}` below
`Host:` (maillab puts in the session cookie from the login's answer). This time the answer is
`200 OK` and the page of alice's inbox: find `Inbox` and `Logged in as` in the HTML.
""")
    b.solution("inbox_session", """
%%http example.com
### BEGIN SOLUTION
GET /mail HTTP/1.1
Host: localhost
Cookie: {Set-Cookie}
### END SOLUTION
""")
    b.step_tests("inbox", [("request", 4)], "http_steps", '"GET", "/mail", 200')
    b.md("""
## Part 2: send a message safely, and be the eavesdropper (22 points)

A mail program sends on the **submission port 587**. The connection starts in clear text: an
eavesdropper on the network reads every byte. After `STARTTLS` and the server's `220`, both
sides switch on TLS on the same connection, and from there on the eavesdropper sees only
scrambled bytes. Only then does the program log in (`AUTH PLAIN`).

**First predict.** In the session below you will type `EHLO`, `STARTTLS`, `EHLO`, `AUTH`,
`MAIL`, `RCPT`, `DATA` and `QUIT`. Which of these commands can the eavesdropper read? Put them
in the set `EAVESDROPPER_READS`, and say with `PASSWORD_READABLE` (`True` or `False`) whether
the eavesdropper can read alice's password. A test after the session compares your prediction
with what really crossed the network.
""")
    b.solution("predict", '''
EAVESDROPPER_READS = set()  # for example {"EHLO", "QUIT"}
PASSWORD_READABLE = None  # True or False
### BEGIN SOLUTION
EAVESDROPPER_READS = {"EHLO", "STARTTLS"}
PASSWORD_READABLE = False
### END SOLUTION
''')
    b.md("""
**Then send.** Be `alice@example.com` (password `wonderland`) and send a message to
`bob@example.com`. The cell starts with `%%smtp example.com --submission`; type below it:

1. `EHLO` and a name for your computer, for example `EHLO laptop.example.com`;
2. `STARTTLS`; after its `220`, `EHLO` **again** (TLS starts afresh: the server forgets what
   was said before);
3. the `AUTH PLAIN ...` line printed by the next cell;
4. `MAIL FROM:<alice@example.com>`, then `RCPT TO:<bob@example.com>`;
5. `DATA`, the headers `From:`, `To:` and `Subject:`, **an empty line**, your text, and a line
   holding only a dot `.`;
6. `QUIT`.
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
RCPT TO:<bob@example.com>
DATA
From: alice@example.com
To: bob@example.com
Subject: Safe on the way

Nobody on the network could read this message.
.
QUIT
### END SOLUTION
""")
    b.step_tests("submit", SUBMIT_STEPS, "smtp_steps",
                 '"submission:example.com", rcpt="bob@example.com", user="bob", login="alice",\n'
                 '    tls=True, headers=("From", "To", "Subject")')
    b.md("""
Was your prediction right? What the eavesdropper read of your session is everything you typed
before the server's `220` to `STARTTLS`. `lab.observed("submission")` shows the bytes they
saw; after the TLS handshake they are unreadable.
""")
    b.tests("predict_tests", 6, '''
# the commands of your session that crossed the network before TLS started
print(sorted(grading.readable_commands(submit.session)))
assert isinstance(EAVESDROPPER_READS, set) and isinstance(PASSWORD_READABLE, bool), \\
    "EAVESDROPPER_READS must be a set and PASSWORD_READABLE True or False"
assert all(isinstance(c, str) and c.upper() in {"EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA",
                                                "QUIT"} for c in EAVESDROPPER_READS), \\
    'EAVESDROPPER_READS holds command words of the session, such as "EHLO"'
''', '''
_seen = _g.readable_commands(_g.again(submit).session)
assert _seen and {c.upper() for c in EAVESDROPPER_READS} == _seen, \\
    _("the eavesdropper read {0}, you predicted {1}").format(sorted(_seen),
                                                              sorted(EAVESDROPPER_READS))
assert PASSWORD_READABLE == ("AUTH" in _seen), "PASSWORD_READABLE: AUTH came after STARTTLS"
''')
    b.md("""
## Part 3: set up a mail program (16 points)

A mail program such as Thunderbird needs to know where your provider's servers are. Its account
window asks for these settings, in two groups:

| | incoming (to read mail) | outgoing (to send mail) |
| --- | --- | --- |
| protocol | `"IMAP"` or `"POP3"` | (always SMTP) |
| server | the server's host name | the same |
| port | the port number | the port number |
| connection security | `"None"`, `"STARTTLS"` or `"SSL/TLS"` | the same |
| authentication | `"Normal password"`, `"Encrypted password"`, ... | the same |
| user name | what you log in with | the same |

Fill in alice's settings (`alice@example.com`, password `wonderland`) so that she **reads with
IMAP** and **sends on the port standing for 465**, both encrypted from the first byte
(`"SSL/TLS"`); the password travels inside TLS, so authentication is `"Normal password"`. The
lab runs on this computer: its host name is `localhost`. The port numbers are in the lab's
table, printed by the first cell (the row for 993, and the row for 465): they differ each time
the lab starts, so write `lab.port("imaps")` and `lab.port("smtps")` rather than the numbers.

The test does what Thunderbird does when you press *Done*: it connects with your settings and
logs in. One group right is worth half the points; a wrong setting is named in one line.

(A real mail program can find all of this by itself: it asks the provider's web server for an
*autoconfig* file, which the lab's webmail serves:
`http://localhost:<webmail port>/mail/config-v1.1.xml?emailaddress=alice@example.com`.)
""")
    b.solution("account", '''
ACCOUNT = {
    "email": "alice@example.com",
    "password": "wonderland",
    "incoming": {"protocol": None, "server": None, "port": None, "security": None,
                 "authentication": None, "username": None},
    "outgoing": {"server": None, "port": None, "security": None,
                 "authentication": None, "username": None},
}
### BEGIN SOLUTION
ACCOUNT["incoming"] = {"protocol": "IMAP", "server": "localhost", "port": lab.port("imaps"),
                       "security": "SSL/TLS", "authentication": "Normal password",
                       "username": "alice"}
ACCOUNT["outgoing"] = {"server": "localhost", "port": lab.port("smtps"), "security": "SSL/TLS",
                       "authentication": "Normal password", "username": "alice"}
### END SOLUTION
''')
    for group in ("incoming", "outgoing"):
        visible = f'assert account.done("{group}"), account.why("{group}")'
        hidden = ("_account = _g.mail_settings_steps(lab, ACCOUNT)\n"
                  f'assert _account.done("{group}"), _account.why("{group}")')
        if group == "incoming":
            visible = ("# Thunderbird's check: connect with your settings and log in\n"
                       "account = grading.mail_settings_steps(lab, ACCOUNT)\n"
                       "print(account)\n" + visible)
        b.tests(f"account_{group}_tests", 8, visible, hidden)
    b.md("""
# Level 2: the same in code
""")
    b.md("""
## Part 4: speak HTTP (5 points)

HTTP is a text protocol too. A request is a request line, header lines, and an empty line:

```
GET /login HTTP/1.1
Host: 127.0.0.1
Connection: close

```

(each line ending in `\\r\\n`). The answer: a status line (`HTTP/1.1 200 OK`), header lines,
an empty line, then the body. With `Connection: close` the server hangs up after the body, so
you can read until `recv` returns `b""`.

Write `http_get(host, port, path)` returning `(status, headers, body)`: the status code as an
`int`, the headers as a dict with **lower-case** names (for a header that comes several times,
such as `Set-Cookie`, keep the last), and the body as bytes.
""")
    b.solution("http_get", '''
def read_all(sock):
    """Everything the server sends until it hangs up."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def parse_response(data):
    """(status, {lower-case header: value}, body) of a raw HTTP response."""
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    lines = head.decode("iso-8859-1").split("\\r\\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def http_get(host, port, path):
    """GET path with a raw socket; (status, headers, body)."""
    ### BEGIN SOLUTION
    with socket.create_connection((host, port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n".encode())
        return parse_response(read_all(sock))
    ### END SOLUTION
''')
    b.tests("http_get_tests", 5, '''
with grading.watch(lab) as ev:
    status, headers, body = http_get(lab.host, lab.webmail_port, "/login")
print(status, headers)
assert status == 200 and headers.get("content-type", "").startswith("text/html"), \\
    _("expected the status 200 (an int) and a header content-type (the name in lower case) "
      "starting with text/html; got {0!r}, {1!r}").format(status, headers)
assert b'name="password"' in body, _("the login page has no password field")
s = ev.session("http")
assert s.client_lines[0] == "GET /login HTTP/1.1", s.client_lines
''', '''
assert len(body) == int(headers["content-length"])
_st, _h, _b = http_get(lab.host, lab.webmail_port, "/no-such-page")
assert _st == 404
''')
    b.md("""
## Part 5: the login form (5 points)

The login page contains an HTML form like the one on the lecture's slide: "Email Address",
"Password", "Log In". A browser sends back every `<input>` of the form, by its `name`, with
its `value` (empty if it has none). One of them is hidden: a random token that proves the form
came from this server (protection against other web sites posting logins).

Write `form_fields(html)`: return a dict `{name: value}` of all `<input ...>` tags of an HTML
text (a `str`). A regular expression on the tags is enough here.
""")
    b.solution("form_fields", '''
import re

def form_fields(html):
    """{name: value} of every <input> tag."""
    ### BEGIN SOLUTION
    fields = {}
    for tag in re.findall(r"<input\\b[^>]*>", html, re.IGNORECASE | re.DOTALL):
        name = re.search(r'\\bname="([^"]*)"', tag)
        value = re.search(r'\\bvalue="([^"]*)"', tag)
        if name:
            fields[name.group(1)] = value.group(1) if value else ""
    return fields
    ### END SOLUTION
''')
    b.tests("form_fields_tests", 5, '''
fields = form_fields('<form><input type="email" name="address" value="">'
                     '<input type="hidden" name="csrf" value="abc">'
                     '<input type="password" name="password" required></form>')
expected = {"address": "", "csrf": "abc", "password": ""}
assert fields == expected, _("got {0!r}, expected {1!r}").format(fields, expected)
''', '''
import http.client as _http
_c = _http.HTTPConnection(lab.host, lab.webmail_port)
_c.request("GET", "/login")
_f = form_fields(_c.getresponse().read().decode())
_c.close()
assert set(_f) == {"csrf", "address", "password"} and len(_f["csrf"]) > 10
assert form_fields('<INPUT name="a"\\n value="1"><p>name="b"</p>') == {"a": "1"}
''')
    b.md("""
## Part 6: log in like a browser (4 points)

To log in, the browser first GETs the form. The answer sets a **cookie** (`Set-Cookie:
name=value; ...`): the browser sends it back with the next request (`Cookie: name=value`),
together with the form's token. Then it POSTs the filled-in form:

```
POST /login HTTP/1.1
Host: 127.0.0.1
Cookie: <name>=<value>
Content-Type: application/x-www-form-urlencoded
Content-Length: <bytes of the body>
Connection: close

csrf=...&address=alice%40example.com&password=wonderland
```

`urllib.parse.urlencode(dict)` makes that body. A successful login answers `303 See Other` with
a new cookie: the session. Behind the scenes the webmail logs in to the IMAP server for you.

Write `webmail_login(host, port, address, password)`: return the session cookie
(`"name=value"`, from the `Set-Cookie` of the 303) or `None` if the login failed.
""")
    b.solution("login", '''
import urllib.parse

def webmail_login(host, port, address, password):
    """Log in through the webmail's form; the session cookie "name=value", or None."""
    ### BEGIN SOLUTION
    status, headers, body = http_get(host, port, "/login")
    cookie = headers["set-cookie"].split(";")[0]
    fields = form_fields(body.decode())
    fields.update(address=address, password=password)
    form = urllib.parse.urlencode(fields).encode()
    request = (f"POST /login HTTP/1.1\\r\\nHost: {host}\\r\\nCookie: {cookie}\\r\\n"
               f"Content-Type: application/x-www-form-urlencoded\\r\\n"
               f"Content-Length: {len(form)}\\r\\nConnection: close\\r\\n\\r\\n").encode() + form
    with socket.create_connection((host, port)) as sock:
        sock.sendall(request)
        status, headers, body = parse_response(read_all(sock))
    if status != 303:
        return None
    return headers["set-cookie"].split(";")[0]
    ### END SOLUTION
''')
    b.tests("login_tests", 4, '''
with grading.watch(lab) as ev:
    session = webmail_login(lab.host, lab.webmail_port, "alice@example.com", "wonderland")
print(session)
assert session and "=" in session, \\
    _("return the session cookie as name=value; got {0!r}").format(session)
http = ev.sessions("http")
asked = [h.client_lines[0] for h in http][:2]
assert asked == ["GET /login HTTP/1.1", "POST /login HTTP/1.1"], \\
    _("first GET /login (for the token), then POST /login; your requests: {0!r}").format(asked)
imap = ev.session("imap:example.com")  # the webmail speaking IMAP for you
print(imap)
assert "LOGIN" in imap.commands(tagged=True) or "AUTHENTICATE" in imap.commands(tagged=True), \\
    "the webmail did not log in to IMAP for you: was the login refused?"
''', '''
assert any(_a.user == "alice@example.com" and _a.success and _a.service.startswith("imap")
           for _a in ev.logins())
_u, _p = _g.make_account(lab)
assert webmail_login(lab.host, lab.webmail_port, f"{_u}@example.com", "wrong") is None
import http.client as _http
_c = _http.HTTPConnection(lab.host, lab.webmail_port)
_c.request("GET", "/mail")
assert _c.getresponse().status in (303, 302)  # without the cookie: back to the login page
_c.close()
''')
    b.md("""
## Part 7: be the eavesdropper (5 points)

Below, a test logs in to the POP3, IMAP and SMTP servers **without** encryption, and hands you
what someone listening on the network would have seen: the text of the sessions, lines such
as `C: PASS wonderland`, `C: a1 LOGIN bob builder` or `C: AUTH PLAIN AGJvYgBidWlsZGVy`.
(Base64 is not encryption: `base64.b64decode` undoes it.)

Write `find_passwords(text)` returning the set of `(user, password)` pairs you can read in it:
from `USER`/`PASS` pairs (POP3), `LOGIN user password` (IMAP, after the tag) and
`AUTH PLAIN <base64>` (SMTP or POP3; the base64 holds `\\0user\\0password`). Only lines that
start with `C: ` are the client's.
""")
    b.solution("sniff", '''
import base64

def find_passwords(text):
    """{(user, password)} readable in clear-text sessions."""
    ### BEGIN SOLUTION
    found, user = set(), None
    for line in text.splitlines():
        if not line.startswith("C: "):
            continue
        words = line[3:].split()
        upper = [w.upper() for w in words]
        if upper[:1] == ["USER"] and len(words) > 1:
            user = words[1]
        elif upper[:1] == ["PASS"] and len(words) > 1 and user:
            found.add((user, words[1]))
        elif len(words) >= 4 and upper[1] == "LOGIN":
            found.add((words[2].strip('"'), words[3].strip('"')))
        elif upper[:2] == ["AUTH", "PLAIN"] and len(words) > 2:
            parts = base64.b64decode(words[2]).split(b"\\0")
            found.add((parts[1].decode(), parts[2].decode()))
    return found
    ### END SOLUTION
''')
    b.tests("sniff_tests", 5, '''
import poplib, imaplib, smtplib
user, password = grading.make_account(lab)
with grading.watch(lab) as ev:
    pop = poplib.POP3(lab.host, lab.pop3_port); pop.user(user); pop.pass_(password); pop.quit()
    imap = imaplib.IMAP4(lab.host, lab.imap_port); imap.login(user, password); imap.logout()
text = "\\n".join(str(s) for s in ev.sessions())
print(text)
got = find_passwords(text)
assert got == {(user, password)}, _("got {0!r}, expected {1!r}").format(got, {(user, password)})
''', '''
_u2, _p2 = _g.make_account(lab)
with _g.watch(lab) as _ev:
    with smtplib.SMTP(lab.host, lab.smtp_port) as _c:
        _c.ehlo()
        _c.login(_u2, _p2)
_t = "\\n".join(str(_s) for _s in _ev.sessions())
assert find_passwords(_t) == {(_u2, _p2)}, _t
assert find_passwords("S: +OK\\nC: USER x\\nS: -ERR\\n") == set()
''')
    b.md("""
## Part 8: POP3 over TLS (7 points)

Port 995 (here `lab.pop3s_port`) speaks POP3 inside TLS from the very first byte. Connect as
usual, then wrap the socket: `context.wrap_socket(sock, server_hostname="mail.example.com")`.
The context (`lab.client_context()`) trusts the lab's own certificate authority, and the
server name is checked against the server's certificate: that stops an impostor. After that,
POP3 works exactly as in Lab 2, but nobody on the network can read it.

Write `pop3s_stat(host, port, user, password, context)` returning `STAT`'s two numbers.
""")
    b.solution("pop3s", '''
def pop3s_stat(host, port, user, password, context, server_name="mail.example.com"):
    """(count, octets) from STAT, over implicit TLS."""
    ### BEGIN SOLUTION
    raw = socket.create_connection((host, port))
    with context.wrap_socket(raw, server_hostname=server_name) as sock:
        f = sock.makefile("rb")

        def ok():
            line = f.readline().decode()
            if not line.startswith("+OK"):
                raise RuntimeError(line)
            return line[4:].strip()

        ok()
        for command in (f"USER {user}", f"PASS {password}"):
            sock.sendall(f"{command}\\r\\n".encode())
            ok()
        sock.sendall(b"STAT\\r\\n")
        count, octets = ok().split()[:2]
        sock.sendall(b"QUIT\\r\\n")
        ok()
    return int(count), int(octets)
    ### END SOLUTION
''')
    b.tests("pop3s_tests", 7, '''
msgs = [grading.sample(1), grading.sample(2)]
user, password = grading.make_account(lab, msgs)
with grading.watch(lab) as ev:
    result = pop3s_stat(lab.host, lab.pop3s_port, user, password, lab.client_context())
print(result)
expected = (2, sum(map(len, msgs)))
assert result == expected, _("got {0!r}, expected {1!r} (messages, bytes)").format(result, expected)
s = ev.session("pop3s:example.com")
print(s)
assert [a.secure for a in ev.logins() if a.user == user] == [True], \\
    "log in once, inside TLS"
''', '''
assert any("TLS" in _e for _e in s.events) and s.commands()[:2] == ["USER", "PASS"]
import ssl
try:
    pop3s_stat(lab.host, lab.pop3s_port, user, password, ssl.create_default_context())
except ssl.SSLError:
    pass
else:
    raise AssertionError(_("a context that does not trust the lab's CA must fail"))
''')
    b.md("""
## Part 9: submission with STARTTLS (7 points)

Port 587 (here `lab.submission_port`) starts in clear text and switches to TLS on request:
after `EHLO`, the client sends `STARTTLS`, the server answers `220`, and both start TLS on the
same connection. Then the client says `EHLO` again (everything said before TLS is forgotten)
and only now logs in (`AUTH PLAIN`). The server refuses `AUTH` before `STARTTLS`.

Write `submit_starttls(host, port, login, password, sender, recipients, message, context)`
returning the queue id. You may reuse your code from Lab 1, or write the commands out.
""")
    b.solution("starttls", '''
def smtp_reply(f):
    texts = []
    while True:
        line = f.readline().decode()
        texts.append(line[4:].rstrip())
        if line[3:4] != "-":
            return int(line[:3]), texts


def expect(f, code):
    got, texts = smtp_reply(f)
    if got != code:
        raise RuntimeError(f"{got} {texts}")
    return texts


def submit_starttls(host, port, login, password, sender, recipients, message, context,
                    server_name="mail.example.com"):
    """Submission: EHLO, STARTTLS, EHLO, AUTH PLAIN, then the message; the queue id."""
    ### BEGIN SOLUTION
    raw = socket.create_connection((host, port))
    f = raw.makefile("rb")
    expect(f, 220)
    raw.sendall(b"EHLO student.example.org\\r\\n")
    expect(f, 250)
    raw.sendall(b"STARTTLS\\r\\n")
    expect(f, 220)
    with context.wrap_socket(raw, server_hostname=server_name) as sock:
        f = sock.makefile("rb")
        sock.sendall(b"EHLO student.example.org\\r\\n")
        expect(f, 250)
        token = base64.b64encode(f"\\0{login}\\0{password}".encode()).decode()
        sock.sendall(f"AUTH PLAIN {token}\\r\\n".encode())
        expect(f, 235)
        sock.sendall(f"MAIL FROM:<{sender}>\\r\\n".encode())
        expect(f, 250)
        for rcpt in recipients:
            sock.sendall(f"RCPT TO:<{rcpt}>\\r\\n".encode())
            expect(f, 250)
        sock.sendall(b"DATA\\r\\n")
        expect(f, 354)
        text = message.replace("\\r\\n", "\\n").rstrip("\\n").split("\\n")
        sock.sendall("".join(("." if l.startswith(".") else "") + l + "\\r\\n" for l in text).encode()
                     + b".\\r\\n")
        queue_id = expect(f, 250)[-1].split()[-1]
        sock.sendall(b"QUIT\\r\\n")
        expect(f, 221)
    return queue_id
    ### END SOLUTION
''')
    b.tests("starttls_tests", 7, '''
msg = ("From: alice@example.com\\r\\nTo: bob@example.com\\r\\nSubject: safe\\r\\n"
       "Date: Wed, 3 Jun 2026 08:00:00 +0000\\r\\nMessage-ID: <lab5@example.com>\\r\\n\\r\\n"
       "Sent through TLS.\\r\\n")
with grading.watch(lab) as ev:
    qid = submit_starttls(lab.host, lab.submission_port, "alice", "wonderland",
                          "alice@example.com", ["bob@example.com"], msg, lab.client_context())
s = ev.session("submission:example.com")
print(s)
assert s.commands() == ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"], s.commands()
got = ev.delivered("bob", s)
assert len(got) == 1 and got[0].body == msg.encode(), "bob's mailbox has not got the message"
''', '''
assert [a.secure for a in ev.logins() if a.user == "alice"] == [True]
assert s.queue_ids() == [qid]
_msg = msg.replace("lab5@", "lab5b@")
with _g.watch(lab) as _ev:
    submit_starttls(lab.host, lab.port("submission", "example.net"), "john", "postman",
                    "john@example.net", ["maria@example.net", "alice@example.com"], _msg,
                    lab.client_context(), "mail.example.net")
_s = _ev.session("submission:example.net")
assert [m.body for m in _ev.delivered("maria", _s)] == [_msg.encode()]
assert [m.body for m in _ev.delivered("alice", _s)] == [_msg.encode()]
''')
    b.md("""
## Part 10: which port for which job? (6 points)

Real-world ports. Fill in the number for each job.
""")
    b.solution("ports", '''
PORTS = {
    _("server to server (SMTP)"): None,
    _("client sends mail, STARTTLS"): None,
    _("client sends mail, TLS from the start"): None,
    _("download with POP3 over TLS"): None,
    _("read with IMAP over TLS"): None,
    _("webmail over HTTPS"): None,
}
### BEGIN SOLUTION
PORTS = {
    _("server to server (SMTP)"): 25,
    _("client sends mail, STARTTLS"): 587,
    _("client sends mail, TLS from the start"): 465,
    _("download with POP3 over TLS"): 995,
    _("read with IMAP over TLS"): 993,
    _("webmail over HTTPS"): 443,
}
### END SOLUTION
''')
    b.tests("ports_tests", 6, '''
assert len(PORTS) == 6 and all(isinstance(p, int) for p in PORTS.values()), \\
    "PORTS keeps its six jobs, and each port is a number (an int), such as 80"
''', '''
assert list(PORTS.values()) == [25, 587, 465, 995, 993, 443]
''')
    b.md("""
## Part 11: in your own words (5 points, graded by your teacher)

In part 7 you read passwords out of sessions without encryption. A friend says: "SMTP
`AUTH PLAIN` is safe, the password is encoded." Answer them in two or three sentences, and say
what actually protects the password.
""")
    b.written("eavesdrop", 5, """
Base64 is an encoding, not encryption: anyone who sees the line can decode it with no key, as
find_passwords did. What protects the password is TLS: either a port that is encrypted from
the start (465, 995, 993, 443) or STARTTLS before AUTH on 587, so that the whole login crosses
the network encrypted and the server's certificate shows it is the real server.
""")
    b.given("stop", stop)
