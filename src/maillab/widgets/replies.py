"""Plain-words explanations of what a server's reply means, for every protocol of the lab.

Used by the transcript viewer and the console (on hover and on click). The protocol text itself
(codes, status words) is never translated; the explanations go through ``maillab.i18n._``.
"""

from __future__ import annotations

import re

from ..i18n import _

__all__ = ["explain", "protocol_of"]

# --------------------------------------------------------------------------- SMTP (RFC 5321)
SMTP_CODES = {
    "211": "System status or help reply.",
    "214": "Help message: text meant for a human reading it.",
    "220": "The server is ready: the greeting after you connect, or, after STARTTLS, the go-ahead "
           "to start TLS.",
    "221": "The server is closing the connection, as you asked with QUIT.",
    "235": "Login accepted: you are now authenticated (AUTH worked).",
    "250": "OK: the command worked.",
    "251": "The user is not local here, but the server will forward the message.",
    "252": "The server cannot check this address, but will try to deliver.",
    "334": "The server waits for the next part of your login (base64 text) after AUTH.",
    "354": "Go ahead: send the message now, headers first, and end it with a line holding only a dot.",
    "421": "The service is not available and the server is closing the connection (try again later).",
    "450": "Mailbox busy or unavailable for now: a temporary problem, try again later.",
    "451": "The server had a local problem while handling this: temporary, try again later.",
    "452": "Not enough room right now (too many recipients, or the disk is full): temporary.",
    "454": "Temporary authentication failure, or TLS is not available at the moment.",
    "500": "Syntax error: the server did not understand the command.",
    "501": "Syntax error in the arguments: the command is right but what follows it is not.",
    "502": "This command is not implemented on this server.",
    "503": "Bad sequence of commands: right command, wrong moment (e.g. RCPT before MAIL).",
    "504": "That parameter (for example that AUTH mechanism) is not supported.",
    "530": "Authentication required: log in with AUTH first.",
    "534": "This login mechanism is too weak for this server.",
    "535": "Login failed: wrong user name or password.",
    "538": "Encryption is required for this login mechanism (use STARTTLS first).",
    "550": "Refused for good: usually no such mailbox here, or the server will not relay for you.",
    "551": "The user is not local; the server will not forward for you.",
    "552": "Too big: the message exceeds the size this server accepts.",
    "553": "The address is not allowed or not written correctly.",
    "554": "Transaction failed for good (for example: relaying is refused).",
    "555": "A MAIL FROM or RCPT TO parameter is not recognised.",
}
SMTP_CLASS = {
    "2": "2xx means success.",
    "3": "3xx means: fine so far, now send the rest.",
    "4": "4xx means a temporary failure: the same command may work later.",
    "5": "5xx means a permanent failure: repeating the same command will not help.",
}

# --------------------------------------------------------------------------- POP3 (RFC 1939)
POP3_STATUS = {
    "+OK": "Positive answer: the command worked. RETR, LIST, UIDL, TOP and CAPA answers go on "
           "over several lines and end with a line holding only a dot.",
    "-ERR": "Negative answer: the command failed; the text after -ERR says why.",
    "+": "The server waits for more login data from you (a continuation during AUTH).",
}

# --------------------------------------------------------------------------- IMAP (RFC 3501)
IMAP_TAGGED = {
    "OK": "The command with this tag is finished and worked.",
    "NO": "The command with this tag is finished but failed (for example a wrong password or "
          "a folder that does not exist).",
    "BAD": "The server did not understand the command with this tag (a typing or syntax "
           "mistake, or a command not allowed in the current state).",
}
IMAP_UNTAGGED = {
    "OK": "Information from the server (an untagged OK); the command is not finished yet.",
    "NO": "A warning from the server (an untagged NO).",
    "BAD": "The server could not read a line at all (an untagged BAD).",
    "BYE": "The server is about to close the connection.",
    "PREAUTH": "Greeting: you are already logged in on this connection.",
    "CAPABILITY": "The list of things this server can do (extensions).",
    "LIST": "One folder: its attributes, the separator between folder levels, and its name.",
    "LSUB": "One folder you are subscribed to.",
    "STATUS": "Counters of a folder (messages, unseen, UIDNEXT, ...) without selecting it.",
    "SEARCH": "The numbers of the messages that match your search.",
    "ESEARCH": "The result of a search, in the extended form.",
    "FLAGS": "The flags that can be set on messages in this folder.",
    "EXISTS": "How many messages the selected folder now holds.",
    "RECENT": "How many messages arrived since any client last looked at this folder.",
    "EXPUNGE": "That message was removed for good; the numbers of the later messages go down by one.",
    "FETCH": "Data about one message: what you asked for with FETCH (or changed flags).",
    "NAMESPACE": "Where personal and shared folders live in the folder tree.",
    "ID": "The server's name and version.",
    "ENABLED": "The extensions switched on by ENABLE.",
}
IMAP_CODES = {
    "UIDVALIDITY": "UIDVALIDITY: while this number stays the same, every UID in this folder "
                   "keeps meaning the same message.",
    "UIDNEXT": "UIDNEXT: the UID the next message arriving in this folder will get.",
    "UNSEEN": "UNSEEN: the number of the first message not read yet.",
    "PERMANENTFLAGS": "PERMANENTFLAGS: the flags you can change and that the server keeps.",
    "READ-WRITE": "READ-WRITE: you may change this folder (flags, deletions).",
    "READ-ONLY": "READ-ONLY: you can look but not change anything (EXAMINE does this).",
    "TRYCREATE": "TRYCREATE: the folder does not exist; create it first.",
    "ALERT": "ALERT: a message the client must show to the user.",
    "CAPABILITY": "CAPABILITY: the list of things this server can do.",
    "APPENDUID": "APPENDUID: the folder's UIDVALIDITY and the UID the new message got.",
    "COPYUID": "COPYUID: which UIDs the copied messages got in the other folder.",
    "AUTHENTICATIONFAILED": "AUTHENTICATIONFAILED: wrong user name or password.",
    "PRIVACYREQUIRED": "PRIVACYREQUIRED: this needs an encrypted connection (STARTTLS) first.",
    "CLOSED": "CLOSED: the previously selected folder is now closed.",
}

# --------------------------------------------------------------------------- HTTP (RFC 9110)
HTTP_CODES = {
    "200": "OK: here is the page you asked for.",
    "201": "Created: the server made what you sent.",
    "204": "No content: it worked, and there is nothing to show.",
    "301": "Moved for good: the page is now at the address in the Location header.",
    "302": "Found: go to the address in the Location header (a redirect).",
    "303": "See other: go to the address in the Location header with GET (after a form was sent).",
    "304": "Not modified: the copy your browser has is still good.",
    "307": "Temporary redirect: repeat the same request at the Location address.",
    "400": "Bad request: the server could not understand the request.",
    "401": "Unauthorized: you must log in first.",
    "403": "Forbidden: you may not do this (for example a form without its security token).",
    "404": "Not found: there is no page at this address.",
    "405": "Method not allowed: this page does not accept that method (GET, POST, ...).",
    "413": "Too large: what you sent is bigger than the server accepts.",
    "429": "Too many requests: slow down (for example too many login attempts).",
    "500": "Internal server error: something broke on the server side.",
    "503": "Service unavailable: the server cannot answer right now.",
}

_IMAP_CODE = re.compile(r"\[([A-Z-]+)")


def protocol_of(service: str) -> str:
    """``"smtp:example.com"`` -> ``"smtp"``; TLS variants map to their protocol."""
    name = service.split(":", 1)[0].lower()
    for proto in ("smtp", "pop3", "imap", "http"):
        if name.startswith(proto) or name.endswith(proto):
            return proto
    if name in ("submission", "smtps"):
        return "smtp"
    if name in ("webmail", "https", "web"):
        return "http"
    return name


def _smtp(text: str) -> str | None:
    m = re.match(r"^(\d)(\d)(\d)[ -]?", text)
    if not m:
        return None
    code = text[:3]
    parts = []
    if code in SMTP_CODES:
        parts.append(_(SMTP_CODES[code]))
    if m.group(1) in SMTP_CLASS:
        parts.append(_(SMTP_CLASS[m.group(1)]))
    if text[3:4] == "-":
        parts.append(_("The dash after the code means more lines of this reply follow."))
        if code == "250":
            parts.append(_("After EHLO, each of these lines names an extension the server "
                           "offers (SIZE, STARTTLS, AUTH, ...)."))
    return " ".join(parts) or None


def _pop3(text: str) -> str | None:
    for status in ("+OK", "-ERR"):
        if text.startswith(status):
            return _(POP3_STATUS[status])
    if text.startswith("+ ") or text == "+":
        return _(POP3_STATUS["+"])
    return None


def _imap(text: str) -> str | None:
    words = text.split()
    if not words:
        return None
    parts = []
    if words[0] == "+":
        return _("Continuation: the server waits for you to send more (the rest of a literal, "
                 "login data, or DONE to end IDLE).")
    if words[0] == "*" and len(words) > 1:
        key = words[1].upper()
        if key.isdigit() and len(words) > 2:
            key = words[2].upper()
        if key in IMAP_UNTAGGED:
            parts.append(_("Untagged (*): ") + _(IMAP_UNTAGGED[key]))
    elif len(words) > 1 and words[1].upper() in IMAP_TAGGED:
        parts.append(_("Tagged reply to command {0}: ").format(words[0]) +
                     _(IMAP_TAGGED[words[1].upper()]))
    for code in _IMAP_CODE.findall(text):
        if code in IMAP_CODES:
            parts.append(_(IMAP_CODES[code]))
    return " ".join(parts) or None


def _http(text: str) -> str | None:
    m = re.match(r"^HTTP/\d(?:\.\d)? (\d{3})", text)
    if not m:
        return None
    code = m.group(1)
    return _(HTTP_CODES[code]) if code in HTTP_CODES else _("HTTP status {0}.").format(code)


_BY_PROTOCOL = {"smtp": _smtp, "pop3": _pop3, "imap": _imap, "http": _http}


def explain(service: str, text: str) -> str | None:
    """What a server line means, in plain words; None if there is nothing to say about it."""
    fn = _BY_PROTOCOL.get(protocol_of(service))
    if fn is None:
        return None
    try:
        return fn(text.strip("\r\n"))
    except Exception:  # an explanation must never break a display
        return None
