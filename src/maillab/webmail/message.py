"""Messages for the browser: headers for lists, bodies made safe, attachments, and new mail.

Parsing, MIME and RFC 2047 come from the stdlib ``email`` package. HTML mail is cleaned with
nh3 (the Rust sanitizer ammonia) to an allow-list of tags, attributes, URL schemes and CSS
properties; what remains is shown in a sandboxed frame under its own Content-Security-Policy,
so that even a sanitizer bug could neither run script nor reach the network.

Mail comes from strangers, so reading it is bounded: header values are cut to a few KB before
the ``email`` package parses them (its parser is quadratic on some long values and recursive on
nested comments), a value it cannot parse is shown as plain text, and only the first
``MAX_PARTS`` parts, ``MAX_DEPTH`` levels deep, are walked. Mail the webmail writes is checked
for header injection (CVE-2024-6923) whatever the Python: see ``build_message``.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import email.policy
import email.utils
import functools
import itertools
import mimetypes
import re
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage, Message
import email.parser
from email.parser import BytesHeaderParser
from urllib.parse import quote as urlquote

import nh3

from ..i18n import N_, _

__all__ = ["ListEntry", "ReadView", "Attachment", "list_entry", "read_view", "sanitize_html",
           "safe_filename", "find_part", "build_message", "date_sort_key", "reply_fields",
           "forward_fields", "part_payload", "format_address", "HeaderInjection", "Unreadable"]

# How much of one header field the webmail parses: enough for any honest Subject, a long
# References or the longest To the compose form sends (4,000 characters of Greek names are some
# 9,300 as encoded words); a message list needs less. The MIME headers of parts (Content-Type,
# ...) get less again: a message can have many parts.
READ_FIELD_LIMIT = 10_240
LIST_FIELD_LIMIT = 1024
PART_FIELD_LIMIT = 1024
_PART_FIELDS = {"content-type", "content-disposition", "content-transfer-encoding", "content-id"}
# Parts walked in one message, and how deep multiparts may nest, for reading and attachments.
MAX_PARTS = 100
MAX_DEPTH = 12
# More multiparts than this (counted as "multipart/" in the raw message, which is cheap and
# errs on the safe side) and the message is shown as its source: see parse_message.
MAX_MULTIPARTS = 16


class Unreadable(Exception):
    """A message (or part) built so that it cannot be shown; the text says so for the reader."""


class _ReadingPolicy(email.policy.EmailPolicy):
    """The default policy, made safe for mail from strangers (see the module's docstring).

    Headers are written back exactly as they came (``refold_source="none"``): refolding parses
    them again, and CPython before 3.11.10 can turn an encoded word into a raw line break there.
    """

    field_limit = READ_FIELD_LIMIT

    def header_fetch_parse(self, name, value):
        if hasattr(value, "name"):  # set by a program, parsed already
            return value
        limit = PART_FIELD_LIMIT if name.lower() in _PART_FIELDS else self.field_limit
        value = value[:limit]
        if name.lower() in _ADDRESS_FIELDS:
            value = _joined_encoded_words(value)
        return _parsed_header(self.header_factory, name, value)


_ADDRESS_FIELDS = {"from", "to", "cc", "bcc", "reply-to", "sender"}
# A run of RFC 2047 encoded words with only white space (folding included) between them.
_STRICT_WORD = r"=\?[^?\s]{1,75}\?[qQbB]\?[^?\s]*\?="
_WORD_RUN = re.compile(_STRICT_WORD + r"(?:\s+" + _STRICT_WORD + r")+")


def _joined_encoded_words(value: str) -> str:
    """``value`` with each run of adjacent encoded words made one word. The white space between
    them is no text (RFC 2047 6.2), but the email package's address parser keeps a space there:
    a long name that a mailer (Python's email package among them) folded into several words
    read "Παπαδόπουλος -Κωνσταντινίδης του Γεωργ ίου". The text stays inside an encoded word,
    so a comma or bracket in it is still no address syntax."""
    def join(run: re.Match) -> str:
        try:
            text = str(email.header.make_header(email.header.decode_header(run.group(0))))
        except Exception:  # a charset Python does not know, bad base64, ...
            return run.group(0)
        return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8", "replace")).decode() + "?="
    return _WORD_RUN.sub(join, value) if "=?" in value else value


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _parsed_header(factory, name: str, value: str):
    """The header object for ``value``, parsed once for the many times a page asks for it.
    A long value's parse tree is big (over 100 KB of objects for some), so few of those are
    kept: 512 of them held 60 MB in bench/fuzz.py, which the process kept after they went."""
    cache = _parsed_short_header if len(value) <= SHORT_HEADER else _parsed_long_header
    return cache(factory, name, value)


SHORT_HEADER = 256  # characters: a Content-Type, a Subject, a sender or two


@functools.lru_cache(maxsize=512)  # parts ask for their Content-Type again and again
def _parsed_short_header(factory, name: str, value: str):
    return _parse_header(factory, name, value)


@functools.lru_cache(maxsize=8)  # the message on show, and a few of the last
def _parsed_long_header(factory, name: str, value: str):
    return _parse_header(factory, name, value)


def _without_comments(value: str) -> str:
    """``value`` with the characters of RFC 5322 comments blanked: the email package's parsers
    recurse once per nested comment (RecursionError), and values without them often parse."""
    return re.sub(r"[()\\]", " ", value)


def _parse_header(factory, name: str, value: str):
    value = re.sub(r"[\r\n]", "", value)  # unfold, as EmailPolicy does
    try:
        return factory(name, value)
    except Exception:  # RecursionError on nested comments, IndexError on cut values, ...
        pass
    try:
        return factory(name, _without_comments(value))
    except Exception:
        return _CONTROL.sub(" ", value)  # plain text: str() and the MIME getters accept it


POLICY = _ReadingPolicy(raise_on_defect=False, refold_source="none")
LIST_POLICY = POLICY.clone(field_limit=LIST_FIELD_LIMIT)


# ----------------------------------------------------------------------------- dates, names

def _parse_date(value) -> datetime | None:
    if not value:
        return None
    try:
        d = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):  # (a day or year of 20 digits)
        return None
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d


def _parse_internaldate(value) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(str(value).strip('"'), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


def date_sort_key(header: bytes, internaldate) -> float:
    """RFC 5256 SORT DATE: the Date header's time, or the arrival time when it has none."""
    d = None
    m = re.search(rb"^Date:[ \t]*(.*(?:\r?\n[ \t].*)*)", header[:LIST_FIELD_LIMIT],
                  re.IGNORECASE | re.MULTILINE)
    if m:
        d = _parse_date(m.group(1).decode("ascii", "replace").replace("\r\n", " "))
    d = d or _parse_internaldate(internaldate)
    return d.timestamp() if d else 0.0


def format_date(d: datetime | None, *, full: bool = False) -> str:
    if d is None:
        return ""
    local = d.astimezone()
    if full:
        return local.strftime("%Y-%m-%d %H:%M")
    now = datetime.now().astimezone()
    if local.date() == now.date():
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d")


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a header the parser cannot make sense of
        value = None
    if value is None:
        return ""
    try:
        return " ".join(str(value).split())
    except Exception:
        return ""


def _addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    raw = _header(msg, name)
    if not raw:
        return []
    try:
        pairs = email.utils.getaddresses([raw])
    except Exception:  # RecursionError: its parser recurses once per nested comment
        try:
            pairs = email.utils.getaddresses([_without_comments(raw)])
        except Exception:
            return []
    return [(n, a) for n, a in pairs if a or n]


def display_name(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(n or a for n, a in pairs)


def format_address(pair: tuple[str, str]) -> str:
    """``Name <address>`` as a person would type it: an ASCII name as ``email.utils.formataddr``
    writes it, any other name in quotes and in its own letters (formataddr makes an RFC 2047
    encoded word of it, unreadable in a reply's To field and twice as long; the email package
    encodes the name when the message is written). Non-ASCII addresses too (RFC 6531)."""
    name, address = pair
    if name.isascii() and address.isascii():
        return email.utils.formataddr(pair)
    if not name:
        return address
    return '"{}" <{}>'.format(name.replace("\\", "\\\\").replace('"', '\\"'), address)


def human_size(n: int) -> str:
    if n < 1024:
        return _("{0} B").format(n)
    if n < 1024 * 1024:
        return _("{0} KB").format(round(n / 1024))
    return _("{0:.1f} MB").format(n / 1024 / 1024)


# ----------------------------------------------------------------------------- list entries

@dataclass
class ListEntry:
    uid: int
    subject: str
    sender: str  # who to show: From (To in the Sent folder)
    sender_title: str  # the full addresses, for the tooltip
    date: str
    date_full: str
    size: str
    seen: bool
    answered: bool
    flagged: bool
    has_attachment: bool


def list_entry(uid: int, flags, size: int, header: bytes, internaldate, show_to: bool = False) -> ListEntry:
    msg = BytesHeaderParser(policy=LIST_POLICY).parsebytes(header)
    who = _addresses(msg, "To" if show_to else "From")
    d = _parse_date(_header(msg, "Date")) or _parse_internaldate(internaldate)
    ctype = _header(msg, "Content-Type").lower()
    return ListEntry(
        uid=uid,
        subject=_header(msg, "Subject") or _("(no subject)"),
        sender=display_name(who) or _("(unknown)"),
        sender_title=", ".join(format_address(p) for p in who),
        date=format_date(d), date_full=format_date(d, full=True), size=human_size(size),
        seen="\\Seen" in flags, answered="\\Answered" in flags, flagged="\\Flagged" in flags,
        has_attachment=ctype.startswith(("multipart/mixed", "application/", "multipart/related")),
    )


# ----------------------------------------------------------------------------- parts

def _is_container(part: Message) -> bool:
    # The email package calls message/rfc822 "multipart" too; here it is one attachment.
    return part.is_multipart() and part.get_content_maintype() == "multipart"


def _children(part: Message) -> list:
    payload = part.get_payload()
    return payload if isinstance(payload, list) else []


def iter_parts(msg: Message):
    """(IMAP section number, part) for the parts, as RFC 3501 6.4.5 numbers them.

    An attached message (message/rfc822) is one part: it is downloaded whole, not opened here.
    At most MAX_PARTS parts, MAX_DEPTH levels deep (a loop, not recursion: mail can nest
    multiparts thousands deep).
    """
    if not _is_container(msg):
        yield "1", msg
        return
    count = 0
    stack = [(iter(enumerate(_children(msg), 1)), "")]
    while stack:
        children, prefix = stack[-1]
        step = next(children, None)
        if step is None:
            stack.pop()
            continue
        i, sub = step
        section = f"{prefix}{i}"
        yield section, sub
        count += 1
        if count >= MAX_PARTS:
            return
        if _is_container(sub) and len(stack) < MAX_DEPTH:
            stack.append((iter(enumerate(_children(sub), 1)), section + "."))


def find_part(msg: Message, section: str) -> Message | None:
    for sec, part in iter_parts(msg):
        if sec == section and not _is_container(part):
            return part
    return None


def part_payload(part: Message) -> bytes:
    """The decoded bytes of a leaf part (an attached message as its whole text)."""
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            try:
                return inner[0].as_bytes(policy=POLICY)
            except RecursionError:
                raise Unreadable(_("This attached message nests its parts too deeply to be "
                                   "saved from here; an IMAP client can fetch it.")) from None
        return part.get_payload(decode=True) or b""
    return part.get_payload(decode=True) or b""


def _text_of(part: Message) -> str:
    data = part.get_payload(decode=True) or b""
    if not isinstance(data, bytes):
        data = b""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset, "replace")
    except (LookupError, ValueError):  # an unknown or malformed charset name
        text = data.decode("latin-1")
    if _LONE_SURROGATE.search(text):
        # UTF-7 (and UTF-16 code units written by hand) can decode to half of a surrogate
        # pair, which no page or sanitizer can encode: show U+FFFD in its place.
        text = _LONE_SURROGATE.sub("\ufffd", text)
    return text.replace("\r\n", "\n")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"*/:<>?\\|]+')
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
             *(f"LPT{i}" for i in range(1, 10))}


def safe_filename(name: str | None, fallback: str = "attachment") -> str:
    """A file name that is safe to save anywhere: no folders, control or reserved characters."""
    name = unicodedata.normalize("NFC", str(name or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]  # no path, on any system
    # Bidirectional overrides can disguise an extension ("invoice\u202egpj.exe").
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cf", "Cc", "Cs", "Co"))
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    if name.split(".", 1)[0].upper() in _RESERVED:
        name = "_" + name
    if len(name) > 120:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:110] + dot + ext[:9]) if dot and len(ext) <= 9 else name[:120]
    return name or fallback


@dataclass
class Attachment:
    section: str
    filename: str
    content_type: str
    size: str
    inline_image: bool = False


@dataclass
class ReadView:
    subject: str
    from_: list
    to: list
    cc: list
    reply_to: list
    date: str
    message_id: str
    flags: frozenset
    text: str | None = None  # plain-text body, shown as text
    has_html: bool = False  # an HTML body exists (shown in its own frame)
    has_text_alternative: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    remote_images: int = 0


def _bodies(msg: Message):
    """(html part, text part) the reader should see."""
    try:
        html_part = msg.get_body(preferencelist=("html",))
        text_part = msg.get_body(preferencelist=("plain",))
    except Exception:
        html_part = text_part = None
    return html_part, text_part


_MULTIPART = re.compile(rb"multipart/", re.IGNORECASE)


def _too_many_multiparts(raw: bytes) -> bool:
    found = _MULTIPART.finditer(raw)
    return next(itertools.islice(found, MAX_MULTIPARTS, None), None) is not None


def parse_message(raw: bytes) -> tuple[EmailMessage, bool]:
    """(the parsed message, True); for a message with more than MAX_MULTIPARTS multiparts,
    (its headers with the body's source as plain text, False).

    The stdlib parser runs every line through one generator per enclosing multipart (a 1.2 MB
    message nested 400 deep: 15 s) and recurses per level (RecursionError near 1,000).
    """
    if not _too_many_multiparts(raw):
        try:
            return email.message_from_bytes(raw, policy=POLICY), True
        except RecursionError:
            pass
    msg = email.parser.BytesParser(policy=POLICY).parsebytes(raw, headersonly=True)
    for name in ("Content-Type", "Content-Transfer-Encoding"):
        del msg[name]
    msg["Content-Type"] = "text/plain; charset=utf-8"
    return msg, False


def read_view(raw: bytes, flags, *, prefer_text: bool = False) -> tuple[ReadView, EmailMessage]:
    msg, whole = parse_message(raw)
    html_part, text_part = _bodies(msg)
    view = ReadView(
        subject=_header(msg, "Subject") or _("(no subject)"),
        from_=_addresses(msg, "From"), to=_addresses(msg, "To"), cc=_addresses(msg, "Cc"),
        reply_to=_addresses(msg, "Reply-To"),
        date=format_date(_parse_date(_header(msg, "Date")), full=True),
        message_id=_header(msg, "Message-ID"), flags=frozenset(flags))
    # The body parts (and their alternative) are what the reader sees, not attachments.
    shown = {id(p) for p in (html_part, text_part) if p is not None}
    used_cids = set()
    if html_part is not None and not (prefer_text and text_part is not None):
        view.has_html = True
        used_cids = set(re.findall(r"cid:([^\"'\s)>]+)", _text_of(html_part), re.IGNORECASE))
    elif text_part is not None:
        view.text = _text_of(text_part)
    if not whole:
        view.text = _("(This message has more parts inside parts than the webmail follows; "
                      "here is the source of its body.)") + "\n\n" + (view.text or "")
    view.has_text_alternative = html_part is not None and text_part is not None
    for section, part in iter_parts(msg):
        if _is_container(part) or id(part) in shown:
            continue
        ctype = part.get_content_type()
        cid = (part.get("Content-ID") or "").strip().strip("<>")
        inline_image = ctype.startswith("image/") and cid and cid in used_cids
        filename = part.get_filename()
        if inline_image and not filename:
            continue  # shown inside the HTML, not as an attachment
        ext = mimetypes.guess_extension(ctype) or (".eml" if ctype == "message/rfc822" else ".bin")
        try:
            size = human_size(len(part_payload(part)))
        except Unreadable:
            size = "?"
        view.attachments.append(Attachment(
            section, safe_filename(filename, f"part-{section}{ext}"), ctype, size,
            bool(inline_image)))
    return view, msg


# ----------------------------------------------------------------------------- HTML

ALLOWED_TAGS = {
    "a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption", "center",
    "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "font",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p",
    "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var", "wbr",
}
_COMMON = {"align", "dir", "lang", "title", "style"}
ALLOWED_ATTRIBUTES = {
    "*": _COMMON,
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "border"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor", "summary"},
    "td": {"width", "height", "colspan", "rowspan", "valign", "bgcolor", "nowrap"},
    "th": {"width", "height", "colspan", "rowspan", "valign", "bgcolor", "scope"},
    "tr": {"valign", "bgcolor"},
    "col": {"span", "width"}, "colgroup": {"span", "width"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type"}, "ul": {"type"}, "li": {"value"},
    "hr": {"width", "size", "noshade"},
}
# CSS that lays out and colours text; nothing that can load a resource (url(...) needs one of
# background, background-image, list-style-image, content, cursor, border-image, mask, ...).
STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "text-align", "text-decoration", "text-indent", "text-transform",
    "line-height", "letter-spacing", "word-spacing", "white-space", "vertical-align",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left", "border-color",
    "border-style", "border-width", "border-collapse", "border-spacing", "border-radius",
    "width", "max-width", "min-width", "height", "max-height", "min-height", "display",
    "list-style-type", "direction", "table-layout",
}
_CSS_URL = re.compile(r"url\s*\(|expression\s*\(|@import|\\", re.IGNORECASE)


@dataclass
class Sanitized:
    html: str
    remote_images: int  # images from the network, left out (or kept when allowed)


def sanitize_html(source: str, *, allow_remote_images: bool = False, cid_url=None) -> Sanitized:
    """Clean an HTML body: no script, no forms or frames, no active URLs, no remote loads.

    ``cid_url(content_id)`` gives the (relative) address of an inline image part, or None.
    Remote images (http/https) are dropped unless ``allow_remote_images``; the count tells the
    page whether to offer to show them.
    """
    remote = 0

    def attribute_filter(tag: str, attr: str, value: str):
        nonlocal remote
        if attr == "style":
            # nh3 keeps only STYLE_PROPERTIES; anything that could still load is refused.
            return None if _CSS_URL.search(value) else value
        if tag == "img" and attr == "src":
            v = value.strip()
            low = v.lower()
            if low.startswith("cid:"):
                return cid_url(v[4:]) if cid_url else None
            if low.startswith(("http://", "https://", "//")):
                remote += 1
                return v if allow_remote_images and not low.startswith("//") else None
            return None  # data:, relative paths and anything else
        if tag == "a" and attr == "href":
            low = value.strip().lower()
            return value if low.startswith(("http://", "https://", "mailto:")) else None
        return value

    cleaned = nh3.clean(
        source,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style", "title", "template", "noscript", "textarea",
                            "select", "option", "iframe", "object", "embed", "svg", "math",
                            "frameset", "noembed", "noframes", "xmp", "plaintext"},
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=attribute_filter,
        # cid: reaches attribute_filter, which turns it into the inline image's data: URL;
        # relative URLs pass nh3 (its default) and attribute_filter then drops them.
        url_schemes={"http", "https", "mailto", "cid"},
        filter_style_properties=STYLE_PROPERTIES,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return Sanitized(cleaned, remote)


def html_document(body: str, title: str) -> str:
    """The frame's document around a sanitized body."""
    from html import escape
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:8px;color:#1d1d1f;"
            "overflow-wrap:anywhere}img{max-width:100%;height:auto}"
            "blockquote{margin-left:.5em;padding-left:.8em;border-left:3px solid #ccd}</style>"
            f"</head><body>{body}</body></html>")


def html_body(msg: Message, *, allow_remote_images: bool, cid_url) -> Sanitized:
    html_part, _text = _bodies(msg)
    if html_part is None:
        return Sanitized("", 0)
    return sanitize_html(_text_of(html_part), allow_remote_images=allow_remote_images,
                         cid_url=cid_url)


def cid_sections(msg: Message) -> dict[str, str]:
    """Content-ID -> section of the images that can be shown inline."""
    out = {}
    for section, part in iter_parts(msg):
        cid = (part.get("Content-ID") or "").strip().strip("<>")
        if cid and part.get_content_type() in INLINE_IMAGE_TYPES:
            out[cid] = section
    return out


# Raster images a browser shows without running anything (not SVG: it can carry script).
INLINE_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


# ----------------------------------------------------------------------------- writing

def plain_text(msg: Message) -> str:
    html_part, text_part = _bodies(msg)
    if text_part is not None:
        return _text_of(text_part)
    if html_part is not None:
        text = nh3.clean(_text_of(html_part), tags={"br", "p", "div"}, strip_comments=True,
                         clean_content_tags={"script", "style", "title"})
        text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", text)
        text = re.sub(r"<[^>]+>", "", text)
        import html as _html
        return _html.unescape(text)
    return ""


def _quote_text(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())


def _prefixed(subject: str, prefix: str) -> str:
    if re.match(rf"^\s*{prefix}\s*:", subject, re.IGNORECASE):
        return subject
    return f"{prefix}: {subject}"


def reply_fields(msg: Message, me: str, reply_all: bool) -> dict:
    """To/Cc/Subject/body/threading headers of a reply (RFC 5322 3.6.4)."""
    author = _addresses(msg, "Reply-To") or _addresses(msg, "From")
    to = [format_address(p) for p in author]
    cc = []
    if reply_all:
        seen = {a.lower() for _n, a in author} | {me.lower()}
        for n, a in _addresses(msg, "To") + _addresses(msg, "Cc"):
            if a and a.lower() not in seen:
                seen.add(a.lower())
                cc.append(format_address((n, a)))
    subject = _header(msg, "Subject")
    mid = _header(msg, "Message-ID")
    refs = (_header(msg, "References") + " " + mid).strip() if mid else _header(msg, "References")
    who = display_name(_addresses(msg, "From")) or _("someone")
    date = format_date(_parse_date(_header(msg, "Date")), full=True)
    intro = _("On {date}, {who} wrote:").format(date=date, who=who) if date else \
        _("{who} wrote:").format(who=who)
    return {"to": ", ".join(to), "cc": ", ".join(cc), "subject": _prefixed(subject, "Re"),
            "body": f"\n\n{intro}\n{_quote_text(plain_text(msg))}\n",
            "in_reply_to": mid, "references": refs}


def forward_fields(msg: Message) -> dict:
    lines = ["", "", "-------- " + _("Forwarded message") + " --------",
             _("Subject") + ": " + _header(msg, "Subject"),
             _("Date") + ": " + _header(msg, "Date"),
             _("From") + ": " + _header(msg, "From"),
             _("To") + ": " + _header(msg, "To")]
    if _header(msg, "Cc"):
        lines.append(_("Cc") + ": " + _header(msg, "Cc"))
    lines += ["", plain_text(msg)]
    return {"to": "", "cc": "", "subject": _prefixed(_header(msg, "Subject"), "Fwd"),
            "body": "\n".join(lines), "in_reply_to": "", "references": ""}


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


class HeaderInjection(ValueError):
    """A header value the user controls would start a new header line (or end the headers),
    or could not be written at all."""


# RFC 2047 encoded words. CPython's email package before 3.11.10 (CVE-2024-6923) decodes one when
# it refolds a header and writes a line break inside it as a real line break: a Subject of
# "=?utf-8?q?hi=0D=0ABcc:_someone@example.net?=" then sends a Bcc the form never had.
_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([qQbB])\?([^?]*)(?:\?=|$)")
# Control characters: CR and LF, and what str.splitlines() also takes for a line end (the email
# package checks header values with it), NUL, DEL and the C1 controls.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
OUTGOING = email.policy.SMTP.clone(refold_source="none")  # attached messages stay as they came


def _decoded_words(value: str):
    """The text each encoded word in ``value`` stands for, read generously (the email package
    decodes words that RFC 2047 would not call encoded words: in quoted strings, unclosed, ...)."""
    for charset, kind, text in _ENCODED_WORD.findall(value):
        try:
            if kind in "qQ":
                data = binascii.a2b_qp(text.replace("_", " ").encode("ascii", "replace"),
                                       header=True)
            else:
                text = re.sub(r"[^A-Za-z0-9+/]", "", text)
                data = base64.b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, binascii.Error):
            continue
        try:
            yield data.decode(charset.split("*")[0], "replace")
        except (LookupError, ValueError):
            yield data.decode("latin-1")


# The longest header value the compose form takes (about 100 addresses): the email package
# folds non-ASCII text at about 25 us a character, twice (our check and the sending).
MAX_HEADER_TEXT = 4_000


_INJECTION_HINT = N_(
    "The {0} field may not contain line breaks or other control characters, not even "
    "inside an encoded word (=?...?=): they would add header lines of their own "
    "(header injection).")


def check_typed_text(field: str, value: str) -> None:
    """The quick part of :func:`check_header_text`: the length, and control characters as typed
    or inside an encoded word (no header parsing, which costs for long non-ASCII values)."""
    if len(value) > MAX_HEADER_TEXT:
        raise HeaderInjection(_("The {0} field is longer than {1} characters: shorten it.").format(
            field, MAX_HEADER_TEXT))
    if _CONTROLS.search(value) or any(_CONTROLS.search(t) for t in _decoded_words(value)):
        raise HeaderInjection(_(_INJECTION_HINT).format(field))


def check_header_text(field: str, value: str, header: str = "Subject") -> None:
    """Refuse line breaks and other control characters in a header value, typed or hidden in
    an encoded word: as we read it, and as the email package reads it (``header`` names the
    header the value goes into; an address header is parsed as one)."""
    check_typed_text(field, value)
    try:
        parsed = OUTGOING.header_factory(header, value)
        unsafe = _CONTROLS.search(str(parsed))
    except Exception:  # e.g. "address parts cannot contain CR or LF"
        unsafe = True
    if unsafe:
        raise HeaderInjection(_(_INJECTION_HINT).format(field))
    if header == "Content-Disposition":
        return  # (a file name: it becomes a quoted parameter, not the header's whole value)
    try:
        parsed.fold(policy=OUTGOING)
    except Exception:
        # The email package fails to write back some values it parsed: an encoded word whose
        # bytes are partly no text in its charset ("=?utf-8?b?-m9iDQo=?=": UnicodeEncodeError),
        # hundreds of nested comments in an address (RecursionError), ...
        raise HeaderInjection(_(
            "The {0} field cannot be written as a mail header (an encoded word =?...?= that "
            "does not decode to text, or brackets nested too deep?): write it plainly.").format(
            field)) from None


_MSG_ID = re.compile(r"<[!-;=?-~]{1,250}>")  # printable ASCII, no spaces, no < or > inside
MAX_REFERENCES = 20


def message_ids(value: str) -> str:
    """The message ids in an In-Reply-To or References value, and nothing else (RFC 5322 3.6.4);
    of a long References the first and the latest, as the RFC suggests when trimming."""
    # (an encoded word has no place in a message id, and the email package would decode it)
    ids = [i for i in _MSG_ID.findall(value) if "=?" not in i]
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1):]
    return " ".join(ids)


# One RFC 2047 encoded word is at most 75 characters: "=?utf-8?b?" and "?=" and 60 of base64,
# which are 45 bytes of UTF-8.
_WORD_BYTES = 45


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 encoded words of whole characters, each ending after a space where
    it can. The spaces stay inside the words: the white space between two encoded words is
    no text (RFC 2047 6.2)."""
    words, chunk = [], ""
    for part in re.findall(r"\S*\s*", text):
        while part:
            if len((chunk + part).encode()) <= _WORD_BYTES:
                chunk, part = chunk + part, ""
            elif chunk:
                words.append(chunk)
                chunk = ""
            else:  # one word longer than an encoded word: cut it between characters
                cut = len(part)
                while len(part[:cut].encode()) > _WORD_BYTES:
                    cut -= 1
                words.append(part[:cut])
                part = part[cut:]
    if chunk:
        words.append(chunk)
    return ["=?utf-8?b?" + base64.b64encode(w.encode()).decode() + "?=" for w in words]


def address_field(header: str, entries: list[str]) -> str:
    """The value of an address header (To, Cc, Bcc), encoded and folded here.

    CPython's email package (3.11) folds a list of non-ASCII names wrongly: it wrote the comma
    between two addresses as an encoded word of its own ("=?utf-8?q?=2C?="), so that readers
    lost an address (Python's own parser dropped the second of three Greek names), and it put
    the space between two words of a name outside the encoded words, where RFC 2047 readers
    drop it ("ΑλέξανδροςΠαπαδόπουλος")."""
    tokens = []
    for i, entry in enumerate(entries):
        name, address = email.utils.parseaddr(entry)
        if not address:  # not one address after all: written as the user typed it
            pieces = entry.split()
        elif name and not name.isascii():
            pieces = _encoded_words(name) + [f"<{address}>"]
        else:
            pieces = email.utils.formataddr((name, address)).split(" ") if address.isascii() \
                else entry.split()
        if i < len(entries) - 1:
            pieces[-1] += ","
        tokens += pieces
    lines, line = [], f"{header}:"
    for token in tokens:
        if len(line) + 1 + len(token) > 76 and line != f"{header}:":
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return "\r\n".join(lines)[len(header) + 2:]


def build_message(*, sender: str, to: list[str], cc: list[str], bcc: list[str], subject: str,
                  body: str, attachments: list[Upload], in_reply_to: str = "", references: str = "",
                  domain: str = "localhost") -> EmailMessage:
    """A complete RFC 5322 message (the Sent copy keeps Bcc; the sent one does not).

    Raises HeaderInjection for a line break in any header the user controls, whatever the
    Python; In-Reply-To and References keep only well-formed message ids.
    """
    # each address on its own: the length limit is about what one typed (a list of 30 Greek
    # names is well within it; their quotes and commas are not the user's doing)
    for label, header, values in ((_("To"), "To", to), (_("Cc"), "Cc", cc),
                                  (_("Bcc"), "Bcc", bcc), (_("Subject"), "Subject", [subject])):
        for value in values:
            check_header_text(label, value, header)
    msg = EmailMessage(policy=OUTGOING)
    msg["From"] = sender
    for header, entries in (("To", to), ("Cc", cc), ("Bcc", bcc)):
        if entries:
            msg.set_raw(header, address_field(header, entries))
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    if message_ids(in_reply_to):
        msg["In-Reply-To"] = message_ids(in_reply_to)
    if message_ids(references):
        msg["References"] = message_ids(references)
    msg["User-Agent"] = "maillab webmail"
    msg.set_content(body.replace("\r\n", "\n"))
    for up in attachments:
        filename = safe_filename(up.filename)
        check_header_text(_("Attach files"), filename, "Content-Disposition")
        maintype, _slash, subtype = (up.content_type or "application/octet-stream").partition("/")
        if not subtype or maintype in ("multipart", "text") and subtype not in ("plain", "csv", "html"):
            maintype, subtype = "application", "octet-stream"
        if maintype == "message" or not re.fullmatch(r"[A-Za-z0-9!#$&^_.+-]{1,64}", maintype + subtype):
            maintype, subtype = "application", "octet-stream"
        if maintype == "text":
            try:
                msg.add_attachment(up.data.decode("utf-8"), subtype=subtype, filename=filename)
                continue
            except UnicodeDecodeError:
                maintype, subtype = "application", "octet-stream"
        msg.add_attachment(up.data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def content_disposition(filename: str, inline: bool = False) -> str:
    """RFC 6266: an ASCII fallback name plus the UTF-8 name (RFC 5987)."""
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{urlquote(filename, safe='')}"


def now_ts() -> float:
    return time.time()
