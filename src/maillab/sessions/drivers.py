"""Following a hand-typed session, protocol by protocol (no sockets here).

A driver reads the learner's lines as typed in a session cell and, for each, says which bytes go
on the wire, which answer to wait for (see :mod:`.replies`), and, when the line is not a command
the server takes at this point of the session, a short remark. It follows the session's state
from what the server answered: SMTP's greeting, EHLO, MAIL, RCPT, DATA; POP3's AUTHORIZATION and
TRANSACTION states; IMAP's not authenticated, authenticated and selected states. Every line is
sent whatever the remark: learners must see the server's real answer.

The learner types what goes on the wire: a line of a message after DATA is sent as typed (no
dot-stuffing), the final ``.`` is theirs to type, and IMAP literals are counted in bytes of the
typed lines, each ended by CRLF.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Iterator

from ..i18n import _
from .replies import HttpReply, ImapReply, Pop3Reply, Reply, SmtpReply

__all__ = ["Step", "Driver", "SmtpDriver", "Pop3Driver", "ImapDriver", "HttpDriver", "AnswerValues",
           "DRIVERS"]

CRLF = b"\r\n"
LOGIN_ANSWER = "(login answer)"  # the command of a line that answers the server's login question


@dataclass
class Step:
    """What to do with one typed line (for HTTP: with the whole request)."""

    shown: list[str]  # the client's lines as they go on the wire
    data: bytes  # the bytes to send
    reply: Reply | None  # the answer to wait for; None: the server says nothing yet
    notes: list[str] = field(default_factory=list)  # maillab's remarks about these lines
    added: set[int] = field(default_factory=set)  # indexes of shown lines maillab added
    command: str = ""  # the command word, upper-case ("MAIL", "RETR", "SELECT", "GET", ...)


class Driver:
    """What every protocol's driver does; subclasses fill in the protocol."""

    protocol = ""
    starts_talking = True  # the server speaks first (a greeting): not so for HTTP

    def __init__(self):
        self.start_tls = False  # the server agreed to STARTTLS/STLS: wrap the socket now
        self.closing = False  # the session is ending (QUIT, LOGOUT): the server will hang up

    def greeting(self) -> Reply | None:
        return None

    def steps(self, lines: list[str]) -> Iterator[Step]:
        """The steps for a cell's lines; read lazily, so each step sees the answers before it."""
        for line in lines:
            yield self.step(line)

    def step(self, line: str) -> Step:
        raise NotImplementedError

    def answered(self, step: Step | None, reply: Reply) -> None:
        """Follow the state from a whole answer (``step`` None: the greeting)."""

    def remarks_on(self, step: Step | None, reply: Reply) -> list[str]:
        """Remarks about a whole answer, for what the learner can do about it (called before
        :meth:`answered`, so the state is the one the line was sent in)."""
        return []

    def tls_started(self) -> list[str]:
        """The connection is now encrypted; remarks for the learner."""
        self.start_tls = False
        return []

    def unfinished(self) -> list[str]:
        """Remarks when the cell ends in the middle of something (a message, a literal)."""
        return []

    @staticmethod
    def deciding_line(reply: Reply) -> str:
        """The line of an answer that says what it means (explained to the learner)."""
        lines = reply.lines
        return lines[-1] if lines else ""


def _words(line: str) -> list[str]:
    return line.split()


def _plain(line: str) -> bytes:
    return line.encode("utf-8") + CRLF


# --------------------------------------------------------------------------- SMTP (RFC 5321)
SMTP_COMMANDS = {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN",
                 "HELP", "STARTTLS", "AUTH", "BDAT", "ETRN"}


class SmtpDriver(Driver):
    protocol = "smtp"

    def __init__(self):
        super().__init__()
        self.said_hello = False
        self.mail = False  # MAIL FROM accepted: a message is under way
        self.mail_refused = ""  # the code of a refused MAIL FROM, until the next one or EHLO
        self.recipients = 0
        self.in_data = False  # between 354 and the line holding only "."
        self.login_prompt = False  # 334: the next line answers AUTH's question

    def greeting(self) -> Reply:
        return SmtpReply()

    def step(self, line: str) -> Step:
        if self.in_data:
            notes = []
            if line == ".":
                self.in_data = False  # whatever the answer, the message has ended
                return Step([line], _plain(line), SmtpReply(), command=".")
            if line.strip() == ".":
                notes.append(_("This line holds a dot and spaces: only a line holding just a dot "
                               "ends the message."))
            elif line.startswith("."):
                notes.append(_("The server takes away the first dot of a line that starts with "
                               "a dot (dot-stuffing): type two dots to keep one."))
            return Step([line], _plain(line), None, notes, command="")
        if self.login_prompt:
            return Step([line], _plain(line), SmtpReply(), command=LOGIN_ANSWER)
        words = _words(line)
        command = words[0].upper() if words else ""
        return Step([line], _plain(line), SmtpReply(), self._remarks(command), command=command)

    def _remarks(self, command: str) -> list[str]:
        if not command:
            return [_("An empty line is not a command (only inside the message after DATA).")]
        if command not in SMTP_COMMANDS:
            return [_("{0} is not an SMTP command.").format(command)]
        if command in ("MAIL", "RCPT", "DATA", "AUTH") and not self.said_hello:
            return [_("Say EHLO (or HELO) first: the server wants to know who is calling.")]
        if command == "MAIL" and self.mail:
            return [_("A message is already under way: finish it with DATA, or start again "
                      "with RSET.")]
        if command in ("RCPT", "DATA") and not self.mail and self.mail_refused:
            return [self._mail_was_refused()]
        if command == "RCPT" and not self.mail:
            return [_("RCPT TO comes after MAIL FROM.")]
        if command == "DATA" and not self.recipients:
            return [_("DATA comes after at least one accepted RCPT TO.")]
        return []

    def _mail_was_refused(self) -> str:
        """The remark for RCPT or DATA after a refused MAIL FROM: the cause is above them."""
        if self.mail_refused == "530":  # RFC 4954: authentication required
            return _("The MAIL FROM above was refused (530): fix that first. This server wants "
                     "you to log in before MAIL FROM: AUTH, after EHLO (on port 587 after "
                     "STARTTLS).")
        return _("The MAIL FROM above was refused ({0}): fix that first. RCPT TO and DATA need "
                 "an accepted MAIL FROM.").format(self.mail_refused)

    def answered(self, step: Step | None, reply: Reply) -> None:
        code = reply.code if isinstance(reply, SmtpReply) else ""
        self.login_prompt = code == "334"
        command = step.command if step else ""
        ok = code.startswith("2")
        if command in ("EHLO", "HELO") and ok:
            self.said_hello, self.mail, self.recipients = True, False, 0
            self.mail_refused = ""
        elif command == "MAIL":
            self.mail, self.mail_refused = ok, "" if ok else code
        elif command == "RCPT" and ok:
            self.recipients += 1
        elif command == "DATA":
            self.in_data = code == "354"
        elif command == "." or (command == "RSET" and ok):
            self.mail, self.recipients = False, 0  # a message ends with its dot, accepted or not
        elif command == "STARTTLS":
            self.start_tls = code == "220"
        elif command == "QUIT":
            self.closing = True
        if code == "421":
            self.closing = True  # the server is about to hang up

    def tls_started(self) -> list[str]:
        super().tls_started()
        self.said_hello, self.mail, self.recipients, self.mail_refused = False, False, 0, ""
        return [_("Say EHLO again: after STARTTLS the server forgets what it was told before "
                  "(RFC 3207).")]

    def unfinished(self) -> list[str]:
        if self.in_data:
            return [_("The message never ended: the server is still waiting for a line holding "
                      "only a dot. Every line after DATA (QUIT too) became part of the message.")]
        return []


# --------------------------------------------------------------------------- POP3 (RFC 1939)
POP3_ANYTIME = {"QUIT", "CAPA", "LANG"}  # LANG: RFC 6856, in either state
POP3_LOGIN = {"USER", "PASS", "APOP", "AUTH", "STLS", "UTF8"}
POP3_LOGGED_IN = {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"}
# Positive answers that go on over several lines and end with ".": RETR, TOP, CAPA; LIST and
# UIDL without a message number (RFC 1939, RFC 2449). AUTH without a mechanism lists the
# mechanisms the same way on some servers (RFC 5034 says nothing; Dovecot and others do), and
# LANG without a language lists the languages (RFC 6856).
POP3_MULTI = {"RETR", "TOP", "CAPA"}
POP3_MULTI_WITHOUT_ARGUMENT = {"LIST", "UIDL", "AUTH", "LANG"}


class Pop3Driver(Driver):
    protocol = "pop3"

    def __init__(self):
        super().__init__()
        self.state = "AUTHORIZATION"
        self.user_given = False
        self.login_prompt = False  # "+ ": the next line answers AUTH's question

    def greeting(self) -> Reply:
        return Pop3Reply()

    def step(self, line: str) -> Step:
        if self.login_prompt:
            return Step([line], _plain(line), Pop3Reply(), command=LOGIN_ANSWER)
        words = _words(line)
        command = words[0].upper() if words else ""
        multi = command in POP3_MULTI or (command in POP3_MULTI_WITHOUT_ARGUMENT and len(words) == 1)
        return Step([line], _plain(line), Pop3Reply(multi), self._remarks(command), command=command)

    def _remarks(self, command: str) -> list[str]:
        if not command:
            return [_("An empty line is not a POP3 command.")]
        if command not in POP3_ANYTIME | POP3_LOGIN | POP3_LOGGED_IN:
            return [_("{0} is not a POP3 command.").format(command)]
        if self.state == "AUTHORIZATION":
            if command in POP3_LOGGED_IN:
                return [_("{0} works only after logging in (USER, then PASS).").format(command)]
            if command == "PASS" and not self.user_given:
                return [_("PASS comes right after USER.")]
        elif command in POP3_LOGIN:
            return [_("You are logged in already: {0} belongs to the login.").format(command)]
        return []

    @staticmethod
    def deciding_line(reply: Reply) -> str:
        lines = reply.lines
        return lines[0] if lines else ""  # +OK or -ERR comes first; a multi-line answer follows

    def remarks_on(self, step: Step | None, reply: Reply) -> list[str]:
        if step is not None and self.deciding_line(reply).upper().startswith("-ERR [IN-USE]"):
            # RFC 2449's IN-USE: the maildrop is locked by a session that is still logged in;
            # in a notebook that is nearly always the console a few cells up, left without QUIT
            return [_("Another session is still logged in to this mailbox, perhaps the console "
                      "above: type QUIT there (or press Disconnect), then run this cell again. "
                      "POP3 lets only one session at a time into a mailbox.")]
        return []

    def answered(self, step: Step | None, reply: Reply) -> None:
        status = reply.status if isinstance(reply, Pop3Reply) else ""
        self.login_prompt = status == "+"
        command = step.command if step else ""
        ok = status == "+OK"
        if command == "USER":
            self.user_given = ok
        elif command in ("PASS", "APOP", LOGIN_ANSWER) and ok:
            self.state = "TRANSACTION"
        elif command == "AUTH" and ok and len(_words(step.shown[0])) > 2:
            self.state = "TRANSACTION"  # AUTH PLAIN <initial response>, accepted at once
        elif command == "STLS":
            self.start_tls = ok
        elif command == "QUIT":
            self.closing = True
            if self.state == "TRANSACTION":
                self.state = "UPDATE"
        if command == "PASS" and not ok:
            self.user_given = False


# --------------------------------------------------------------------------- IMAP (RFC 3501)
IMAP_ANY_STATE = {"CAPABILITY", "NOOP", "LOGOUT", "ID", "ENABLE", "LANGUAGE"}  # RFC 5255
IMAP_NOT_AUTHENTICATED = {"STARTTLS", "AUTHENTICATE", "LOGIN"}
IMAP_AUTHENTICATED = {"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
                      "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE", "IDLE",
                      "GETQUOTA", "GETQUOTAROOT", "GETACL", "MYRIGHTS", "XLIST"}
IMAP_SELECTED = {"CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID",
                 "UNSELECT", "SORT", "THREAD"}
IMAP_COMMANDS = IMAP_ANY_STATE | IMAP_NOT_AUTHENTICATED | IMAP_AUTHENTICATED | IMAP_SELECTED
_IMAP_LITERAL = re.compile(rb"\{(\d{1,12})(\+?)\}\r\n\Z")


class ImapDriver(Driver):
    protocol = "imap"

    def __init__(self):
        super().__init__()
        self.state = "not authenticated"
        self.tag = b""  # the tag of the command under way
        self.command_open = False  # the command goes on in the next line (literal, IDLE, AUTHENTICATE)
        self.literal_left = 0  # bytes of a literal still to come from the typed lines
        self.command = ""

    def greeting(self) -> Reply:
        return ImapReply(None)

    def step(self, line: str) -> Step:
        data = _plain(line)
        if self.literal_left:
            if len(data) <= self.literal_left:
                self.literal_left -= len(data)  # all of this line is literal data
                return Step([line], data, None, command=self.command)
            rest = data[self.literal_left:]  # the literal ends inside the line: the command goes on
            self.literal_left = 0
            return self._piece(line, data, rest, [])
        if self.command_open:
            return self._piece(line, data, data, [])
        words = _words(line)
        self.tag = words[0].encode("utf-8") if words else b""
        self.command = words[1].upper() if len(words) > 1 else ""
        return self._piece(line, data, data, self._remarks(words))

    def _piece(self, line: str, data: bytes, tail: bytes, notes: list[str]) -> Step:
        """A line of the command itself; ``tail`` is the part after any literal it finished."""
        literal = _IMAP_LITERAL.search(tail)
        if literal:
            self.literal_left = int(literal.group(1))
            self.command_open = True
            if literal.group(2):  # {n+}: LITERAL+, the data follows without waiting for "+"
                return Step([line], data, None, notes, command=self.command)
            return Step([line], data, ImapReply(self.tag), notes, command=self.command)
        self.command_open = False
        return Step([line], data, ImapReply(self.tag), notes, command=self.command)

    def _remarks(self, words: list[str]) -> list[str]:
        if not words:
            return [_("An empty line is not an IMAP command: start with a tag and a command, "
                      "for example: a1 NOOP")]
        if words[0].upper() in IMAP_COMMANDS:
            return [_("IMAP commands start with a tag of your choice (a1, a2, ...): the server "
                      "reads {0} as the tag.").format(words[0])]
        if len(words) < 2:
            return [_("After the tag comes a command, for example: {0} NOOP").format(words[0])]
        command = self.command
        if command not in IMAP_COMMANDS:
            return [_("{0} is not an IMAP command.").format(words[1])]
        if self.state == "not authenticated" and command in IMAP_AUTHENTICATED | IMAP_SELECTED:
            return [_("Log in first, for example: a1 LOGIN alice wonderland")]
        if self.state == "authenticated" and command in IMAP_SELECTED:
            return [_("{0} needs a selected folder: SELECT one first, for example: "
                      "a2 SELECT INBOX").format(command)]
        if self.state in ("authenticated", "selected") and command in IMAP_NOT_AUTHENTICATED:
            return [_("You are logged in already.")]
        return []

    def answered(self, step: Step | None, reply: Reply) -> None:
        if not isinstance(reply, ImapReply):
            return
        if step is None:  # the greeting
            if reply.last_line.upper().startswith(b"* PREAUTH"):
                self.state = "authenticated"
            elif reply.last_line.upper().startswith(b"* BYE"):
                self.closing = True
            return
        status = reply.status
        if status == "+":
            self.command_open = True  # the server waits for the rest of this command
            return
        # The command is over: a refused synchronizing literal is never sent (RFC 3501 7.5).
        self.command_open, self.literal_left = False, 0
        command = self.command
        if status == "OK":
            if command in ("LOGIN", "AUTHENTICATE"):
                self.state = "authenticated"
            elif command in ("SELECT", "EXAMINE"):
                self.state = "selected"
            elif command in ("CLOSE", "UNSELECT"):
                self.state = "authenticated"
            elif command == "STARTTLS":
                self.start_tls = True
        elif status == "NO" and command in ("SELECT", "EXAMINE"):
            self.state = "authenticated"  # a failed SELECT leaves no folder selected
        if command == "LOGOUT" or b"* BYE" in reply.raw.upper():
            self.closing = True

    def unfinished(self) -> list[str]:
        if self.literal_left:
            return [_("The literal is not complete: the server still waits for {0} more "
                      "bytes.").format(self.literal_left)]
        if self.command_open:
            return [_("The command is not finished: the server waits for the rest of it "
                      "(for IDLE: a line DONE).")]
        return []

    @staticmethod
    def deciding_line(reply: Reply) -> str:
        if isinstance(reply, ImapReply) and reply.last_line:
            return reply.last_line.decode("utf-8", "backslashreplace")
        return Driver.deciding_line(reply)


# --------------------------------------------------------------------------- HTTP (RFC 9110/9112)
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"}


class HttpDriver(Driver):
    """One request per cell: request line, header lines, an empty line, then the body.

    The body is the text after the first empty line, its lines joined by CRLF, with no line end
    after its last line (a form's body has none). When a body is typed without Content-Length,
    maillab adds the header with the body's size and shows the line it added; a Content-Length
    that does not match the body is sent as typed, with a remark. ``{name}`` in a line is filled
    in from the server's earlier answers (:class:`AnswerValues`) before anything is counted.
    """

    protocol = "http"
    starts_talking = False

    def __init__(self, values: "AnswerValues | None" = None):
        super().__init__()
        self.values = values if values is not None else AnswerValues()

    def steps(self, lines: list[str]) -> Iterator[Step]:
        if lines:
            yield self.request(lines)

    def request(self, lines: list[str]) -> Step:
        lines, notes = self.values.fill(lines)
        added: set[int] = set()
        if "" in lines:
            blank = lines.index("")
            head, body = lines[:blank], lines[blank + 1:]
        else:
            head, body = list(lines), []
        body_bytes = "\r\n".join(body).encode("utf-8")
        words = _words(head[0]) if head else []
        method = words[0].upper() if words else ""
        notes += self._remarks(words, head)
        length = _header(head, "content-length")
        if body and length is None and _header(head, "transfer-encoding") is None:
            head.append(f"Content-Length: {len(body_bytes)}")
            added.add(len(head) - 1)
            notes.append(_("maillab added Content-Length: {0}: the number of bytes of your body, "
                           "so that the server knows where it ends.").format(len(body_bytes)))
        elif length is not None and length.strip() != str(len(body_bytes)):
            notes.append(_("Your body is {0} bytes, but Content-Length says {1}: the server reads "
                           "{1} bytes.").format(len(body_bytes), length.strip()))
        shown = head + [""] + body
        if "" not in lines:
            added.add(len(head))
            notes.append(_("maillab sent the empty line that ends the headers (an empty line at "
                           "the end of a cell is easy to miss)."))
        data = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body_bytes
        return Step(shown, data, HttpReply(head_only=method == "HEAD"), notes, added,
                    command=method)

    @staticmethod
    def _remarks(words: list[str], head: list[str]) -> list[str]:
        if not words:
            return [_("A request starts with a line such as: GET / HTTP/1.1")]
        if words[0].upper() not in HTTP_METHODS:
            return [_("{0} is not an HTTP method (GET, POST, HEAD, ...).").format(words[0])]
        if len(words) != 3 or not words[2].upper().startswith("HTTP/"):
            return [_("The request line has three parts: method, path and version, for example: "
                      "GET / HTTP/1.1")]
        if words[2].upper() == "HTTP/1.1" and _header(head, "host") is None:
            return [_("HTTP/1.1 needs a Host: header line (the name of the web site).")]
        return []

    def answered(self, step: Step | None, reply: Reply) -> None:
        if isinstance(reply, HttpReply):
            self.values.learn(reply)
            if reply.closes:
                self.closing = True

    @staticmethod
    def deciding_line(reply: Reply) -> str:
        if isinstance(reply, HttpReply):
            return reply.head.split(b"\r\n", 1)[0].decode("utf-8", "backslashreplace")
        return Driver.deciding_line(reply)


def _header(head: list[str], name: str) -> str | None:
    """The value of a header line the learner typed (the request line is skipped)."""
    for line in head[1:]:
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() == name:
            return value
    return None


_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_-]{0,63})\}")
_INPUT_TAG = re.compile(r"<input\b[^>]*>", re.IGNORECASE)
_ATTRIBUTE = r"""\b%s\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))"""


class AnswerValues:
    """What a server's answers hand back for the next request, so a cell can write ``{name}``.

    A login form's hidden token and the cookie that goes with it change at every start of the
    lab: a value pasted from one run's answer is wrong in the next run (and in the grader's).
    ``{csrf}`` stands for the value of the form field ``csrf`` in the newest answer that had
    one; ``{Set-Cookie}`` (any header's name) for that header's value in the newest answer
    that had it; for Set-Cookie the cookie only (``name=value``, the first one that is not a
    deletion), ready for a ``Cookie:`` line. A ``{name}`` no answer had is sent as typed.
    """

    def __init__(self):
        self.fields: dict[str, str] = {}  # form field name -> value
        self.headers: dict[str, str] = {}  # header name, lower case -> value

    def learn(self, reply: HttpReply) -> None:
        head = reply.head.decode("iso-8859-1")
        cookies = []
        # lines as the transcript shows them (split_lines): a bare LF ends one too, else its
        # value would carry the server's line end into the learner's next request
        for line in head.split("\n")[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                continue
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie":
                cookie = value.split(";", 1)[0].strip()
                if cookie.partition("=")[2] and "max-age=0" not in value.lower().replace(" ", ""):
                    cookies.append(cookie)
            else:
                self.headers[name] = value
        if cookies:
            self.headers["set-cookie"] = cookies[0]
        body = reply.body.decode("utf-8", "replace")
        for tag in _INPUT_TAG.findall(body):
            name = re.search(_ATTRIBUTE % "name", tag)
            if name:
                value = re.search(_ATTRIBUTE % "value", tag)
                self.fields[html.unescape(next(filter(None, name.groups()), ""))] = \
                    html.unescape(next(filter(None, value.groups()), "")) if value else ""

    def value(self, name: str) -> str | None:
        if name in self.fields:
            return self.fields[name]
        return self.headers.get(name.lower())

    def fill(self, lines: list[str]) -> tuple[list[str], list[str]]:
        """The lines with every known ``{name}`` filled in, and a remark for each name."""
        notes: list[str] = []
        seen: set[str] = set()

        def put(m: re.Match) -> str:
            name, value = m.group(1), self.value(m.group(1))
            if name not in seen:
                seen.add(name)
                if value is None:
                    known = ", ".join(["{%s}" % k for k in sorted(self.fields)] + [
                        "{Set-Cookie}"] * ("set-cookie" in self.headers)) or \
                        _("none yet: ask for a page first")
                    notes.append(_("No earlier answer of this server had {{{0}}}, so it was sent "
                                   "as typed (known: {1}).").format(name, known))
                else:
                    notes.append(_("maillab put in {{{0}}} from the server's last answer that had "
                                   "it: {1}").format(name, _short(value)))
            return m.group(0) if value is None else value

        return [_PLACEHOLDER.sub(put, line) for line in lines], notes


def _short(value: str, keep: int = 48) -> str:
    return value if len(value) <= keep else value[:keep - 3] + "..."


DRIVERS = {"smtp": SmtpDriver, "pop3": Pop3Driver, "imap": ImapDriver, "http": HttpDriver}
