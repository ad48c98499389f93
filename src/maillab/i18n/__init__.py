"""The learner's language: one translation function for every learner-facing string.

English is the source language. Learner-facing strings of the package go through ``_()``::

    from maillab.i18n import _, N_
    print(_("The lab is stopped."))                      # translated when it is shown
    print(_("at most {0} per message").format(100))      # placeholders stay as they are

    HINTS = {"503": N_("say hello first")}               # a table: marked here (N_ does nothing),
    print(_(HINTS["503"]))                               # translated where it is shown

The language is chosen by ``maillab.start(lang="el")``, :func:`set_language`, or the
environment variable ``MAILLAB_LANG`` (read when the first string is translated); English
otherwise. Translations come from gettext catalogs compiled to
``maillab/locale/<lang>/LC_MESSAGES/maillab.mo`` and are loaded the first time they are needed,
so ``import maillab`` pays nothing for them.

Protocol text is never translated: whatever a server puts on the wire stays ASCII English
(RFC 5321 4.2). The lab's server thread is marked with :func:`speak_protocol_in_this_thread`,
and there ``_()`` returns the English source. Learner-facing text made on that thread (the
webmail's pages) asks for the learner's language explicitly with ``with for_learner(): ...``.
:func:`translate_text` turns such an English text (a hint a server sent) back into the
learner's language, for showing beside the reply.

How catalogs are made, updated and checked: docs/i18n.md (tools: ``python -m maillab.i18n``).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from pathlib import Path

__all__ = ["_", "N_", "ngettext", "set_language", "get_language", "for_learner", "language",
           "current_language", "speak_protocol_in_this_thread", "translate_text", "translation",
           "LANGUAGES", "SOURCE_LANGUAGE"]

SOURCE_LANGUAGE = "en"
LANGUAGES = ("en", "el")  # the languages the package has catalogs for (English is the source)
DOMAIN = "maillab"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
ENV_VAR = "MAILLAB_LANG"

_learner_language: str | None = None  # set_language(); None: not chosen yet (see get_language)
_catalogs: dict = {}  # language -> gettext translations (loaded on first use)
_load_lock = threading.Lock()
_protocol_thread = threading.local()  # .active: this thread's _() speaks protocol (English)
# A language asked for by ``with language(...)`` / ``with for_learner()`` in this task/thread.
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("maillab_language",
                                                                      default=None)


def _normalise(lang: str) -> str:
    """"el", "el_GR.UTF-8", "EL-gr" -> "el"; an unknown language is refused (a typo would
    otherwise silently show English)."""
    code = str(lang).strip().replace("-", "_").split(".")[0].split("_")[0].lower()
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}: maillab speaks {', '.join(LANGUAGES)}")
    return code


def set_language(lang: str) -> str:
    """Choose the learner's language for everything the package shows from now on."""
    global _learner_language
    _learner_language = _normalise(lang)
    return _learner_language


def get_language() -> str:
    """The learner's language: set_language(), else $MAILLAB_LANG, else English."""
    global _learner_language
    if _learner_language is None:
        env = os.environ.get(ENV_VAR, "").strip()
        try:
            _learner_language = _normalise(env) if env else SOURCE_LANGUAGE
        except ValueError:
            _learner_language = SOURCE_LANGUAGE  # a stray value must not break the lab
    return _learner_language


def speak_protocol_in_this_thread(active: bool = True) -> None:
    """Mark the calling thread as one that speaks protocol: ``_()`` returns English there.

    The lab's loop thread calls it: the servers' replies (and the hints appended to them) go on
    the wire, which stays ASCII English whatever the learner's language.
    """
    _protocol_thread.active = active


@contextlib.contextmanager
def language(lang: str):
    """``with language("el"):`` translate into ``lang`` in this block (this task/thread only)."""
    token = _override.set(_normalise(lang))
    try:
        yield
    finally:
        _override.reset(token)


def for_learner():
    """``with for_learner():`` text made in this block is shown to the learner (a web page),
    even on the lab's protocol thread: it is translated into the learner's language."""
    return language(get_language())


def current_language() -> str:
    """The language ``_()`` translates into here and now (a web page's ``lang`` attribute):
    ``with language(...)`` first, English on a protocol thread, else the learner's."""
    lang = _override.get()
    if lang is not None:
        return lang
    if getattr(_protocol_thread, "active", False):
        return SOURCE_LANGUAGE
    return get_language()


_current = current_language


def translation(lang: str | None = None):
    """The gettext translations object of a language (``.gettext``, ``.ngettext``), for code that
    needs one, such as a Jinja2 environment (``install_gettext_translations``)."""
    import gettext

    lang = _normalise(lang) if lang else _current()
    found = _catalogs.get(lang)
    if found is not None:
        return found
    with _load_lock:
        if lang not in _catalogs:
            if lang == SOURCE_LANGUAGE:
                _catalogs[lang] = gettext.NullTranslations()
            else:
                # fallback: a missing compiled catalog shows English rather than failing
                _catalogs[lang] = gettext.translation(DOMAIN, LOCALE_DIR, [lang], fallback=True)
        return _catalogs[lang]


def _(text: str) -> str:
    """``text`` in the learner's language (English if there is no translation of it)."""
    lang = _current()
    if lang == SOURCE_LANGUAGE:
        return text
    return translation(lang).gettext(text)


def N_(text: str) -> str:
    """Mark a string for translation without translating it (tables built at import time:
    translate with ``_()`` where the string is shown)."""
    return text


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form for ``n``, in the learner's language."""
    lang = _current()
    if lang == SOURCE_LANGUAGE:
        return singular if n == 1 else plural
    return translation(lang).ngettext(singular, plural, n)


def translate_text(english: str) -> str:
    """An English text that a server sent (a hint in a reply) in the learner's language.

    The text may be a message of the catalog as it is, or one with its ``{...}`` fields filled
    in ("at most 100 per message" for "at most {0} per message"); anything else comes back as it
    is.
    """
    lang = _current()
    if lang == SOURCE_LANGUAGE or not english:
        return english
    from ._reverse import reverse_lookup

    return reverse_lookup(translation(lang), english)
