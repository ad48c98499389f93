"""Is the edition complete and up to date? The checks behind ``check`` and tests/test_i18n*.py.

* the package catalog has exactly the strings the sources mark, all translated, none fuzzy,
  and the compiled .mo says the same;
* every tables' prose in the package is marked (``N_()``), but for the tables listed as
  pending in edition.toml;
* every translation keeps its ``{...}`` fields; a markdown cell keeps its inline code and
  nbgrader's markers; the glossary holds; no English prose is left in a translation;
* every published notebook, and every notebook that has a translation in the repository, has
  a catalog in step with its English, complete, and a translation that is what ``build``
  writes from them.
"""

from __future__ import annotations

import gettext
import tomllib
from functools import lru_cache
from pathlib import Path

from . import catalogs as cat
from . import checks
from .edition import Edition, Notebook


def config(ed: Edition) -> dict:
    if not ed.config.exists():
        return {}
    with ed.config.open("rb") as f:
        return tomllib.load(f)


def allowed_latin(ed: Edition) -> set[str]:
    return set(config(ed).get("latin", []))


@lru_cache(maxsize=8)
def _glossary(path: Path, _mtime: float):
    return checks.load_glossary(path)


def glossary(ed: Edition):
    return _glossary(ed.glossary, ed.glossary.stat().st_mtime) if ed.glossary.exists() else []


def _name(entry) -> str:
    where = f"[{entry.msgctxt}] " if entry.msgctxt else ""
    return where + entry.msgid[:70].replace("\n", " ")


# ------------------------------------------------------------------ the package
def package_sources_problems(ed: Edition) -> list[str]:
    po = cat.load(ed.package_catalog)
    if po is None:
        return [f"{ed.package_catalog}: missing (run python -m maillab.i18n update)"]
    missing, gone = cat.out_of_step(po, cat.package_entries(ed.root / "src" / "maillab"))
    return ([f"package catalog lacks (run update, translate): {m}" for m in missing] +
            [f"package catalog has English the sources lost (run update): {g}" for g in gone])


def completeness_problems(path: Path) -> list[str]:
    po = cat.load(path)
    if po is None:
        return [f"{path}: missing"]
    untranslated, fuzzy = cat.incomplete(po)
    return ([f"{path.name}: untranslated: {_name(e)}" for e in untranslated] +
            [f"{path.name}: fuzzy (the English changed; check and clear the flag): {_name(e)}"
             for e in fuzzy])


def mo_problems(ed: Edition) -> list[str]:
    po = cat.load(ed.package_catalog)
    if po is None or not ed.package_mo.exists():
        return [f"{ed.package_mo}: missing (run python -m maillab.i18n build)"]
    with ed.package_mo.open("rb") as f:
        compiled = gettext.GNUTranslations(f)._catalog  # the table gettext really uses
    want = {}
    for e in po:
        if e.obsolete or "fuzzy" in e.flags:
            continue
        k = f"{e.msgctxt}\x04{e.msgid}" if e.msgctxt else e.msgid
        if e.msgid_plural:
            for n, text in e.msgstr_plural.items():
                if text:
                    want[(k, int(n))] = text
        elif e.msgstr:
            want[k] = e.msgstr
    have = {k: v for k, v in compiled.items() if k != ""}
    return [] if have == want else [f"{ed.package_mo.name} is stale: run python -m maillab.i18n build"]


def table_problems(ed: Edition) -> list[str]:
    pending = set(config(ed).get("pending_tables", []))
    not_shown = set(config(ed).get("not_shown_tables", []))
    package = ed.root / "src" / "maillab"
    found, seen = [], set()
    for path in sorted(package.rglob("*.py")):
        if "i18n" in path.relative_to(package).parts:
            continue  # the tools' own words are for maintainers and translators
        rel = path.relative_to(ed.root).as_posix()
        for line, table, text in checks.unmarked_table_strings(path.read_text(encoding="utf-8")):
            name = f"{rel}:{table}"
            seen.add(name)
            if name not in pending and name not in not_shown:
                found.append(f"{rel}:{line}: {table} holds unmarked prose (wrap it in N_() and "
                             f"translate where shown): {text[:60]!r}")
    found += [f"edition.toml lists {name} as pending, but its prose is marked now: take it out"
              for name in sorted(pending - seen)]
    return found


# ------------------------------------------------------------------ any catalog
def entry_problems(ed: Edition, path: Path) -> list[str]:
    """Fields, markup, glossary and English left, for every translated entry of a catalog."""
    po = cat.load(path)
    if po is None:
        return []
    terms, allowed = glossary(ed), allowed_latin(ed)
    found = []
    for e in po:  # obsolete entries too: they come back when their English does
        if "fuzzy" in e.flags:
            continue
        pairs = [(e.msgid, e.msgstr)] if not e.msgid_plural else \
            [(e.msgid if int(n) == 0 else e.msgid_plural, text) for n, text in e.msgstr_plural.items()]
        for msgid, msgstr in pairs:
            if not msgstr:
                continue
            markdown = e.comment.startswith("markdown")
            problems = (checks.markup_problems(msgid, msgstr) if markdown
                        else checks.field_problems(msgid, msgstr))
            problems += checks.glossary_problems(msgid, msgstr, terms)
            left = checks.english_left(msgstr, allowed, msgid)
            if left:
                problems.append(f"English left: {left}")
            found += [f"{path.name}: {_name(e)}: {p}" for p in problems]
    return found + disagreement_problems(path, po)


def disagreement_problems(path: Path, po) -> list[str]:
    """The same string of code translated two ways in one notebook: cells compare such strings
    (the keys of a prediction and of its check), so one translation must serve them all."""
    from .notebooks import KIND_NOTES

    renderings: dict[str, set[str]] = {}
    for e in po:
        if not e.obsolete and "fuzzy" not in e.flags and e.msgstr and \
                e.comment == KIND_NOTES["string"]:
            renderings.setdefault(e.msgid, set()).add(e.msgstr)
    return [f"{path.name}: {msgid!r} is translated in {len(found)} ways {sorted(found)}: cells "
            "compare it, give it one translation" for msgid, found in renderings.items()
            if len(found) > 1]


# ------------------------------------------------------------------ notebooks
def notebook_problems(ed: Edition, nb: Notebook) -> list[str]:
    """A notebook whose translation is published or present: catalog in step and complete,
    translation present and fresh."""
    from .__main__ import _read_notebook, generated, notebook_text

    po = cat.load(nb.catalog)
    if po is None:
        return [f"{nb.name}: no catalog {nb.catalog} (run update)"]
    missing, gone = cat.out_of_step(po, cat.notebook_entries(_read_notebook(nb.english), nb.name))
    found = [f"{nb.name}: catalog lacks (the English changed: run update): {m}" for m in missing]
    found += [f"{nb.name}: catalog has English the notebook lost (run update): {g}" for g in gone]
    found += completeness_problems(nb.catalog)
    if not nb.target.exists():
        found.append(f"{nb.target_name}: missing (run build)")
    elif not found and nb.target.read_text() != notebook_text(generated(ed, nb, po)):
        found.append(f"{nb.target_name}: out of date (run python -m maillab.i18n build)")
    return found


def notebooks_to_hold(ed: Edition) -> list[Notebook]:
    """The notebooks whose translation must be complete: published, or present."""
    published = set(ed.published())
    return [nb for nb in ed.notebooks() if nb.name in published or nb.target.exists()]


def config_problems(ed: Edition) -> list[str]:
    names = {nb.name for nb in ed.notebooks()}
    found = [f"edition.toml publishes {name}, which is no English notebook"
             for name in ed.published() if name not in names]
    found += [f"{p.relative_to(ed.root)}: its English notebook is gone (update/build remove it)"
              for p in ed.orphans()]
    return found


def edition_problems(ed: Edition) -> list[str]:
    found = package_sources_problems(ed) + completeness_problems(ed.package_catalog)
    found += mo_problems(ed) + table_problems(ed) + config_problems(ed)
    found += entry_problems(ed, ed.package_catalog)
    for nb in ed.notebooks():
        found += entry_problems(ed, nb.catalog)
    for nb in notebooks_to_hold(ed):
        found += notebook_problems(ed, nb)
    from .docs import problems as docs_problems

    return found + docs_problems(ed)
