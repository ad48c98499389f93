"""Lab 5: webmail over HTTP, and passwords in clear text versus TLS (S4, S7, S10, S12, S13)."""

TLS = True  # this lab needs the lab's certificate authority and its TLS ports


def build(b, setup_md, setup, stop):
    b.md("""
# Lab 5: webmail, and keeping passwords secret

**Webmail** is e-mail in a web browser: the browser speaks **HTTP** to a web server, and the
web server speaks IMAP and SMTP to the mail servers for you (S12). Either way you log in with
a user name and a password (S13), and that password crosses the network. Without encryption,
anyone on the way can read it; with TLS (ports 465/587, 995, 993, 443) they cannot.

| part | what you build | points |
| --- | --- | --- |
| 1 | a raw HTTP request: fetch the webmail's login page | 10 |
| 2 | find the fields of the login form | 10 |
| 3 | log in to the webmail like a browser does (POST, cookies) | 15 |
| 4 | be the eavesdropper: find passwords in clear-text sessions | 10 |
| 5 | POP3 over TLS (port 995's job) | 15 |
| 6 | SMTP submission with STARTTLS (port 587's job) | 15 |
| 7 | which port for which job | 15 |
| 8 | a short written answer (graded by your teacher) | 10 |
""")
    b.md(setup_md)
    b.given("setup", setup)
    b.md("""
## Part 1: speak HTTP (10 points)

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
    b.tests("http_get_tests", 10, '''
with grading.watch(lab) as ev:
    status, headers, body = http_get(lab.host, lab.webmail_port, "/login")
print(status, headers)
assert status == 200 and headers["content-type"].startswith("text/html")
assert b"Password" in body
s = ev.session("http")
assert s.client_lines[0] == "GET /login HTTP/1.1", s.client_lines
''', '''
assert len(body) == int(headers["content-length"])
_st, _h, _b = http_get(lab.host, lab.webmail_port, "/no-such-page")
assert _st == 404
''')
    b.md("""
## Part 2: the login form (10 points)

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
    b.tests("form_fields_tests", 10, '''
fields = form_fields('<form><input type="email" name="address" value="">'
                     '<input type="hidden" name="csrf" value="abc">'
                     '<input type="password" name="password" required></form>')
assert fields == {"address": "", "csrf": "abc", "password": ""}
''', '''
_st, _h, _b = http_get(lab.host, lab.webmail_port, "/login")
_f = form_fields(_b.decode())
assert set(_f) == {"csrf", "address", "password"} and len(_f["csrf"]) > 10
assert form_fields('<INPUT name="a"\\n value="1"><p>name="b"</p>') == {"a": "1"}
''')
    b.md("""
## Part 3: log in like a browser (15 points)

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
    b.tests("login_tests", 15, '''
with grading.watch(lab) as ev:
    session = webmail_login(lab.host, lab.webmail_port, "alice@example.com", "wonderland")
print(session)
assert session and "=" in session
http = ev.sessions("http")
assert [h.client_lines[0] for h in http][:2] == ["GET /login HTTP/1.1", "POST /login HTTP/1.1"]
imap = ev.session("imap:example.com")  # the webmail speaking IMAP for you
print(imap)
assert "LOGIN" in imap.commands(tagged=True) or "AUTHENTICATE" in imap.commands(tagged=True)
''', '''
assert any(_a.user == "alice@example.com" and _a.success and _a.service.startswith("imap")
           for _a in ev.logins())
_u, _p = _g.make_account(lab)
assert webmail_login(lab.host, lab.webmail_port, f"{_u}@example.com", "wrong") is None
_status, _h, _b = http_get(lab.host, lab.webmail_port, "/mail")
assert _status in (303, 302)  # without the cookie: back to the login page
''')
    b.md("""
## Part 4: be the eavesdropper (10 points)

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
    b.tests("sniff_tests", 10, '''
import poplib, imaplib, smtplib
user, password = grading.make_account(lab)
with grading.watch(lab) as ev:
    pop = poplib.POP3(lab.host, lab.pop3_port); pop.user(user); pop.pass_(password); pop.quit()
    imap = imaplib.IMAP4(lab.host, lab.imap_port); imap.login(user, password); imap.logout()
text = "\\n".join(str(s) for s in ev.sessions())
print(text)
assert find_passwords(text) == {(user, password)}
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
## Part 5: POP3 over TLS (15 points)

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
    b.tests("pop3s_tests", 15, '''
msgs = [grading.sample(1), grading.sample(2)]
user, password = grading.make_account(lab, msgs)
with grading.watch(lab) as ev:
    result = pop3s_stat(lab.host, lab.pop3s_port, user, password, lab.client_context())
print(result)
assert result == (2, sum(map(len, msgs)))
s = ev.session("pop3s:example.com")
print(s)
assert [a.secure for a in ev.logins() if a.user == user] == [True]
''', '''
assert any("TLS" in _e for _e in s.events) and s.commands()[:2] == ["USER", "PASS"]
import ssl
try:
    pop3s_stat(lab.host, lab.pop3s_port, user, password, ssl.create_default_context())
except ssl.SSLError:
    pass
else:
    raise AssertionError("a context that does not trust the lab's CA must fail")
''')
    b.md("""
## Part 6: submission with STARTTLS (15 points)

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
    b.tests("starttls_tests", 15, '''
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
assert len(got) == 1 and got[0].body == msg.encode()
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
## Part 7: which port for which job? (15 points)

Real-world ports. Fill in the number for each job.
""")
    b.solution("ports", '''
PORTS = {
    "server to server (SMTP)": None,
    "client sends mail, STARTTLS": None,
    "client sends mail, TLS from the start": None,
    "download with POP3 over TLS": None,
    "read with IMAP over TLS": None,
    "webmail over HTTPS": None,
}
### BEGIN SOLUTION
PORTS = {
    "server to server (SMTP)": 25,
    "client sends mail, STARTTLS": 587,
    "client sends mail, TLS from the start": 465,
    "download with POP3 over TLS": 995,
    "read with IMAP over TLS": 993,
    "webmail over HTTPS": 443,
}
### END SOLUTION
''')
    b.tests("ports_tests", 15, '''
assert len(PORTS) == 6 and all(isinstance(p, int) for p in PORTS.values())
''', '''
assert list(PORTS.values()) == [25, 587, 465, 995, 993, 443]
''')
    b.md("""
## Part 8: in your own words (10 points, graded by your teacher)

In part 4 you read passwords out of sessions without encryption. A friend says: "SMTP
`AUTH PLAIN` is safe, the password is encoded." Answer them in two or three sentences, and say
what actually protects the password.
""")
    b.written("eavesdrop", 10, """
Base64 is an encoding, not encryption: anyone who sees the line can decode it with no key, as
find_passwords did. What protects the password is TLS: either a port that is encrypted from
the start (465, 995, 993, 443) or STARTTLS before AUTH on 587, so that the whole login crosses
the network encrypted and the server's certificate shows it is the real server.
""")
    b.given("stop", stop)
