"""The language of a server's human-readable text: IMAP LANGUAGE (RFC 5255), POP3 LANG (RFC 6856).

Without them a server's text is ``i-default`` (RFC 2277: English, here ASCII), whatever the
learner's language: the wire stays as the RFCs define it. A client may ask for another language;
from then on the *text* of its session's replies comes in that language, in UTF-8: the words
after the status (``OK``, ``NO``, ``+OK``, ``-ERR``) and after a response code. Status words,
response codes and data (message numbers, sizes, flags, folder names, message bytes) never change.

The servers' texts are the package's learner-facing strings (``_()``), so the translations are
the package catalog's; a session in a language asks for it explicitly (:func:`speaking`), since
the lab's protocol thread otherwise speaks English.
"""

from __future__ import annotations

import contextlib
import re

from . import i18n
from .i18n import _

DEFAULT = "i-default"
# Each tag a server offers, and the language's name in itself (RFC 6856 4: the listing names each
# language in its own words, so these are not translated into the learner's language).
LANGUAGES = {DEFAULT: "English", "en": "English", "el": "Ελληνικά"}


def name(tag: str) -> str:
    return LANGUAGES[tag]


def switched(tag: str) -> str:
    """The text of the reply that switches a session into ``tag``, already in that language."""
    with speaking(tag):
        return _("language changed: {name}").format(name=name(tag))


# RFC 4647 2.1 basic language range: "*" or 1-8 letters, then "-" and 1-8 letters/digits each.
_RANGE = re.compile(r"\*|[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")


def is_range(text: str) -> bool:
    return _RANGE.fullmatch(text) is not None


def choose(ranges: list[str], current: str = DEFAULT) -> str | None:
    """The language tag to use for the first range this server can serve, or None.

    RFC 4647 3.4 lookup: a range that names no offered tag is shortened from its end
    (``el-GR`` -> ``el``). ``*`` keeps the current language; ``default`` is the language the
    server's administrator prefers (RFC 5255 3.2): here the lab's learner language.
    """
    for wanted in ranges:
        wanted = wanted.lower()
        if wanted == "*":
            return current
        if wanted == "default":
            return i18n.get_language()
        while wanted:
            if wanted in LANGUAGES:
                return wanted
            wanted = wanted.rpartition("-")[0]
            if len(wanted.rpartition("-")[2]) == 1:  # RFC 4647 3.4: a lone singleton goes too
                wanted = wanted.rpartition("-")[0]
    return None


def speaking(tag: str | None):
    """``with speaking(session.language):`` texts made in the block (``_()``) are in the
    session's language; None (no LANGUAGE/LANG asked) leaves ``_()`` as it is."""
    if tag is None:
        return contextlib.nullcontext()
    return i18n.language(i18n.SOURCE_LANGUAGE if tag == DEFAULT else tag)
