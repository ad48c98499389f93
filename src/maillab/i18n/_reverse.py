"""From an English text with its fields filled in back to the message it came from.

A server sends "452 4.5.3 too many recipients (hint: at most 100 per message)": the hint was
made from the message "at most {0} per message" with 100 in its field. To show the hint in the
learner's language, the text is matched against the messages that have fields, and the
translation gets the same values. Only used for text that was sent on the wire in English.
"""

from __future__ import annotations

import re
import string
import threading
import weakref

_patterns: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_FORMATTER = string.Formatter()
MAX_FIELD = 80  # characters a filled-in field may have (a command a learner typed, say)


def _fields(text: str) -> list[tuple[str, str | None]]:
    """(literal text, field name or None) pieces of a str.format template."""
    try:
        return [(literal, name) for literal, name, _spec, _conv in _FORMATTER.parse(text)]
    except ValueError:  # not a valid template: treat it as plain text
        return [(text, None)]


def _compile(msgid: str) -> re.Pattern | None:
    pieces = _fields(msgid)
    if all(name is None for _lit, name in pieces):
        return None
    regex = "".join(re.escape(literal) + ("(.+?)" if name is not None else "")
                    for literal, name in pieces)
    return re.compile(regex + r"\Z", re.S)


def _table(translations) -> list[tuple[re.Pattern, str, list[str]]]:
    with _lock:
        found = _patterns.get(translations)
        if found is None:
            found = []
            for msgid, msgstr in getattr(translations, "_catalog", {}).items():
                if not isinstance(msgid, str) or "\x04" in msgid or not msgid or not msgstr:
                    continue  # plural forms, messages with a context, the header
                pattern = _compile(msgid)
                if pattern is not None:
                    names = [name for _lit, name in _fields(msgid) if name is not None]
                    found.append((pattern, msgstr, names))
            # the message with the most fixed text wins (the most specific one)
            found.sort(key=lambda item: -len(item[0].pattern))
            _patterns[translations] = found
        return found


def _fill(template: str, names: list[str], values: tuple[str, ...]) -> str:
    """``template`` with each field replaced by the text the English had in the same field."""
    by_name: dict[str, str] = {}
    position = 0
    for name, value in zip(names, values):
        key = name if name else str(position)  # "{}" fields are numbered in order
        position += 1
        by_name.setdefault(key, value)
    out, position = [], 0
    for literal, name, _spec, _conv in _FORMATTER.parse(template):
        out.append(literal)
        if name is not None:
            key = name if name else str(position)
            position += 1
            out.append(by_name.get(key, "{" + key + "}"))
    return "".join(out)


def reverse_lookup(translations, english: str) -> str:
    exact = translations.gettext(english)
    if exact != english:
        return exact
    for pattern, msgstr, names in _table(translations):
        match = pattern.match(english)
        # A field stands for a number, a name or a command, not for sentences: "{service}
        # connection {conn}" matched a long hint with " connection " in it, and made Greek of
        # that one word ("by closing its, σύνδεση (in Python: ...").
        if match and all(len(v) <= MAX_FIELD and "(" not in v and ")" not in v
                         for v in match.groups()):
            try:
                return _fill(msgstr, names, match.groups())
            except ValueError:
                return english
    return english
