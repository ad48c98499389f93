"""Plain-words explanations of what a server's reply means, for every protocol of the lab.

Used by the session cells, the transcript viewer and the console (on hover and on click): a
module of its own, outside the widgets, so a session cell does not load ipywidgets. The protocol
text itself (codes, status words) is never translated; the explanations go through
``maillab.i18n._``.
"""

from __future__ import annotations

import re

from .i18n import N_, _, translate_text

__all__ = ["explain", "protocol_of"]

# --------------------------------------------------------------------------- SMTP (RFC 5321)
SMTP_CODES = {
    "211": N_("System status or help reply."),
    "214": N_("Help message: text meant for a human reading it."),
    "220": N_("The server is ready: the greeting after you connect, or, after STARTTLS, the "
              "go-ahead to start TLS."),
    "221": N_("The server is closing the connection, as you asked with QUIT."),
    "235": N_("Login accepted: you are now authenticated (AUTH worked)."),
    "250": N_("OK: the command worked."),
    "251": N_("The user is not local here, but the server will forward the message."),
    "252": N_("The server cannot check this address, but will try to deliver."),
    "334": N_("The server waits for the next part of your login (base64 text) after AUTH."),
    "354": N_("Go ahead: send the message now, headers first, and end it with a line holding "
              "only a dot."),
    "421": N_("The service is not available and the server is closing the connection (try "
              "again later)."),
    "450": N_("Mailbox busy or unavailable for now: a temporary problem, try again later."),
    "451": N_("The server had a local problem while handling this: temporary, try again later."),
    "452": N_("Not enough room right now (too many recipients, or the disk is full): temporary."),
    "454": N_("Temporary authentication failure, or TLS is not available at the moment."),
    "500": N_("Syntax error: the server did not understand the command."),
    "501": N_("Syntax error in the arguments: the command is right but what follows it is not."),
    "502": N_("This command is not implemented on this server."),
    "503": N_("Bad sequence of commands: right command, wrong moment (e.g. RCPT before MAIL)."),
    "504": N_("That parameter (for example that AUTH mechanism) is not supported."),
    "530": N_("Authentication required: log in with AUTH first."),
    "534": N_("This login mechanism is too weak for this server."),
    "535": N_("Login failed: wrong user name or password."),
    "538": N_("Encryption is required for this login mechanism (use STARTTLS first)."),
    "550": N_("Refused for good: usually no such mailbox here, or the server will not relay "
              "for you."),
    "551": N_("The user is not local; the server will not forward for you."),
    "552": N_("Too big: the message exceeds the size this server accepts."),
    "553": N_("The address is not allowed or not written correctly."),
    "554": N_("Transaction failed for good (for example: relaying is refused)."),
    "555": N_("A MAIL FROM or RCPT TO parameter is not recognised."),
}
SMTP_CLASS = {
    "2": N_("2xx means success."),
    "3": N_("3xx means: fine so far, now send the rest."),
    "4": N_("4xx means a temporary failure: the same command may work later."),
    "5": N_("5xx means a permanent failure: repeating the same command will not help."),
}

# --------------------------------------------------------------------------- POP3 (RFC 1939)
POP3_STATUS = {
    "+OK": N_("Positive answer: the command worked. RETR, LIST, UIDL, TOP and CAPA answers go on "
              "over several lines and end with a line holding only a dot."),
    "-ERR": N_("Negative answer: the command failed; the text after -ERR says why."),
    "+": N_("The server waits for more login data from you (a continuation during AUTH)."),
}

# --------------------------------------------------------------------------- IMAP (RFC 3501)
IMAP_TAGGED = {
    "OK": N_("The command with this tag is finished and worked."),
    "NO": N_("The command with this tag is finished but failed (for example a wrong password or "
             "a folder that does not exist)."),
    "BAD": N_("The server did not understand the command with this tag (a typing or syntax "
              "mistake, or a command not allowed in the current state)."),
}
IMAP_UNTAGGED = {
    "OK": N_("Information from the server (an untagged OK); the command is not finished yet."),
    "NO": N_("A warning from the server (an untagged NO)."),
    "BAD": N_("The server could not read a line at all (an untagged BAD)."),
    "BYE": N_("The server is about to close the connection."),
    "PREAUTH": N_("Greeting: you are already logged in on this connection."),
    "CAPABILITY": N_("The list of things this server can do (extensions)."),
    "LIST": N_("One folder: its attributes, the separator between folder levels, and its name."),
    "LSUB": N_("One folder you are subscribed to."),
    "STATUS": N_("Counters of a folder (messages, unseen, UIDNEXT, ...) without selecting it."),
    "SEARCH": N_("The numbers of the messages that match your search."),
    "ESEARCH": N_("The result of a search, in the extended form."),
    "FLAGS": N_("The flags that can be set on messages in this folder."),
    "EXISTS": N_("How many messages the selected folder now holds."),
    "RECENT": N_("How many messages arrived since any client last looked at this folder."),
    "EXPUNGE": N_("That message was removed for good; the numbers of the later messages go "
                  "down by one."),
    "FETCH": N_("Data about one message: what you asked for with FETCH (or changed flags)."),
    "NAMESPACE": N_("Where personal and shared folders live in the folder tree."),
    "ID": N_("The server's name and version."),
    "ENABLED": N_("The extensions switched on by ENABLE."),
}
IMAP_CODES = {
    "UIDVALIDITY": N_("UIDVALIDITY: while this number stays the same, every UID in this folder "
                      "keeps meaning the same message."),
    "UIDNEXT": N_("UIDNEXT: the UID the next message arriving in this folder will get."),
    "UNSEEN": N_("UNSEEN: the number of the first message not read yet."),
    "PERMANENTFLAGS": N_("PERMANENTFLAGS: the flags you can change and that the server keeps."),
    "READ-WRITE": N_("READ-WRITE: you may change this folder (flags, deletions)."),
    "READ-ONLY": N_("READ-ONLY: you can look but not change anything (EXAMINE does this)."),
    "TRYCREATE": N_("TRYCREATE: the folder does not exist; create it first."),
    "ALERT": N_("ALERT: a message the client must show to the user."),
    "CAPABILITY": N_("CAPABILITY: the list of things this server can do."),
    "APPENDUID": N_("APPENDUID: the folder's UIDVALIDITY and the UID the new message got."),
    "COPYUID": N_("COPYUID: which UIDs the copied messages got in the other folder."),
    "AUTHENTICATIONFAILED": N_("AUTHENTICATIONFAILED: wrong user name or password."),
    "PRIVACYREQUIRED": N_("PRIVACYREQUIRED: this needs an encrypted connection (STARTTLS) first."),
    "CLOSED": N_("CLOSED: the previously selected folder is now closed."),
}

# --------------------------------------------------------------------------- HTTP (RFC 9110)
HTTP_CODES = {
    "200": N_("OK: here is the page you asked for."),
    "201": N_("Created: the server made what you sent."),
    "204": N_("No content: it worked, and there is nothing to show."),
    "301": N_("Moved for good: the page is now at the address in the Location header."),
    "302": N_("Found: go to the address in the Location header (a redirect)."),
    "303": N_("See other: go to the address in the Location header with GET (after a form "
              "was sent)."),
    "304": N_("Not modified: the copy your browser has is still good."),
    "307": N_("Temporary redirect: repeat the same request at the Location address."),
    "400": N_("Bad request: the server could not understand the request."),
    "401": N_("Unauthorized: you must log in first."),
    "403": N_("Forbidden: you may not do this (for example a form without its security token)."),
    "404": N_("Not found: there is no page at this address."),
    "405": N_("Method not allowed: this page does not accept that method (GET, POST, ...)."),
    "413": N_("Too large: what you sent is bigger than the server accepts."),
    "429": N_("Too many requests: slow down (for example too many login attempts)."),
    "500": N_("Internal server error: something broke on the server side."),
    "503": N_("Service unavailable: the server cannot answer right now."),
}

_IMAP_CODE = re.compile(r"\[([A-Z-]+)")
_IMAP_CODE_TEXT = re.compile(r"^\s*\[[^\]]*\]\s*")  # a response code before the text: [ALERT]
# The hint an SMTP server of the lab appends to a reply, in English on the wire (RFC 5321 4.2).
_SMTP_HINT = re.compile(r"\(hint: (.+)\)\s*$")


def _in_learners_words(template: str, english: str) -> list[str]:
    """The server's own words (a hint sent in English) in the learner's language, as one item
    to add to an explanation; nothing when they read the same (English, or unknown text).

    A server's text is usually a message of the catalog, sometimes with a word before it
    (``RETR: no such message``) or a hint in parentheses (``syntax error (give a number)``):
    each of these is tried."""
    english = english.strip()
    candidates = [english]
    word = re.match(r"^[A-Za-z]+: (.+)$", english)
    if word:
        candidates.append(word.group(1))
    inner = re.search(r"\((.+)\)$", english)
    if inner:
        candidates.append(inner.group(1))
    for candidate in candidates:
        translated = translate_text(candidate) if candidate else candidate
        if translated != candidate:
            if inner is None or candidate != inner.group(1):  # the whole text, or after 'WORD:'
                return [template.format(translated)]
            # the words before the parentheses too, if the catalog has them
            before = english[:inner.start()].rstrip()
            said = translate_text(before)
            return [template.format(f"{said} ({translated})" if said != before else translated)]
    return []


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


def _smtp(text: str, words: bool = True) -> str | None:
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
    hint = _SMTP_HINT.search(text)
    if hint and words:
        parts += _in_learners_words(_("Hint: {0}"), hint.group(1))
    return " ".join(parts) or None


def _pop3(text: str, words: bool = True) -> str | None:
    for status in ("+OK", "-ERR"):
        if text.startswith(status):
            said = _IMAP_CODE_TEXT.sub("", text[len(status):]).strip()
            return " ".join([_(POP3_STATUS[status]), *(
                _in_learners_words(_("The server says: {0}"), said) if words else [])])
    if text.startswith("+ ") or text == "+":
        return _(POP3_STATUS["+"])
    return None


def _imap(text: str, said: bool = True) -> str | None:
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
    if said and len(words) > 2 and words[1].upper() in ("OK", "NO", "BAD", "BYE"):
        # a status line (tagged or not): after the status word comes text for people
        rest = _IMAP_CODE_TEXT.sub("", text.split(None, 2)[2])
        parts += _in_learners_words(_("The server says: {0}"), rest)
    return " ".join(parts) or None


def _http(text: str, words: bool = True) -> str | None:
    m = re.match(r"^HTTP/\d(?:\.\d)? (\d{3})", text)
    if not m:
        return None
    code = m.group(1)
    return _(HTTP_CODES[code]) if code in HTTP_CODES else _("HTTP status {0}.").format(code)


_BY_PROTOCOL = {"smtp": _smtp, "pop3": _pop3, "imap": _imap, "http": _http}


def explain(service: str, text: str, words: bool = True) -> str | None:
    """What a server line means, in plain words; None if there is nothing to say about it.
    ``words=False``: without the server's own words (its text or hint, translated), which
    always come last: what the same kind of answer means in general."""
    fn = _BY_PROTOCOL.get(protocol_of(service))
    if fn is None:
        return None
    try:
        return fn(text.strip("\r\n"), words)
    except Exception:  # an explanation must never break a display
        return None


def server_words(service: str, text: str) -> str:
    """Only the server's own words of a reply line (its text or hint) in the learner's language,
    as :func:`explain` ends with them; "" when they read the same (English, or text the catalog
    does not have). For quoting a reply: the reply as sent, and what it says, readable."""
    full, general = explain(service, text), explain(service, text, words=False)
    if not full or full == general:
        return ""
    if general and full.startswith(general):
        return full[len(general):].strip()
    return full if not general else ""
