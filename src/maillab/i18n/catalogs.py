"""Gettext catalogs (.po): made from the English sources, kept in step with them, compiled.

The English is the source: every ``update`` extracts it again and merges the catalog:

1. an entry whose English (and context) is unchanged keeps its translation and flags;
2. an entry whose English moved (same text, another context: a cell got a new id) takes the
   translation it had there;
3. an entry whose English changed takes the old translation marked **fuzzy**, with the old
   English kept as ``#| msgid`` so that the translator sees what changed (first the old entry
   of the same context, e.g. the same cell, else the most similar English of the catalog);
4. anything else is new and empty.

A translated entry whose English is gone is kept at the end of the catalog as obsolete
(``#~``): a memory that rules 2 and 3 draw on when the English comes back (a cell restored, a
table newly marked with ``N_()``). A fuzzy or empty entry is not used: the English is shown
instead, and the tests and ``build`` report it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import polib

from .notebooks import KIND_NOTES, pieces

PLURAL_FORMS = {"el": "nplurals=2; plural=(n != 1);"}
LANGUAGE_NAMES = {"el": "Greek"}
WRAP = 100  # line width of the .po files (as the code's)
SIMILAR = 0.6  # how alike an old English must be to give its translation as a fuzzy draft

# What is extracted from the package: _("..."), N_("...") and ngettext("...", "...", n) in
# Python files (read with ast, so calls inside f-strings count too), the same calls in the
# webmail's Jinja2 templates (with Jinja2's extractor for Babel). A comment starting with
# "i18n:" on the line of a call or just above it goes to the translator.
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}
TEMPLATES = [("**/templates/**.html", "jinja2")]


def key(entry: polib.POEntry) -> tuple[str, str, str]:
    return (entry.msgctxt or "", entry.msgid, entry.msgid_plural or "")


def new_catalog(lang: str, title: str) -> polib.POFile:
    po = polib.POFile(wrapwidth=WRAP)
    po.header = f"{title}: {LANGUAGE_NAMES.get(lang, lang)} translation (docs/i18n.md)."
    po.metadata = {
        "Project-Id-Version": "maillab",
        "Language": lang,
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=UTF-8",
        "Content-Transfer-Encoding": "8bit",
        "Plural-Forms": PLURAL_FORMS.get(lang, "nplurals=2; plural=(n != 1);"),
    }
    return po


# ------------------------------------------------------------------ extraction
def _python_messages(source: str):
    """(line, msgid, plural, translator comment) of every marked string of a module."""
    import ast
    import io
    import tokenize

    notes = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT and tok.string.lstrip("# ").startswith("i18n:"):
                notes[tok.start[0]] = tok.string.lstrip("# ")[len("i18n:"):].strip()
    except (tokenize.TokenError, SyntaxError):
        pass
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in KEYWORDS):
            continue
        args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None
                for a in node.args[:2]]
        if not args or args[0] is None:
            continue  # _(variable): the string was marked where it was written (N_)
        plural = args[1] if node.func.id == "ngettext" and len(args) > 1 else ""
        note = notes.get(node.lineno) or notes.get(node.lineno - 1) or ""
        found.append((node.lineno, node.col_offset, args[0], plural or "", note))
    return sorted(found)


def package_entries(package_dir: Path) -> list[polib.POEntry]:
    """Every marked string of the package, in file order, without line numbers (a catalog must
    not change because code moved)."""
    from babel.messages.extract import extract_from_dir

    package_dir = Path(package_dir)
    found = []  # (file, msgid, plural, comment)
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).as_posix()
        if rel.startswith("i18n/"):
            continue
        for _line, _col, msgid, plural, note in _python_messages(path.read_text(encoding="utf-8")):
            found.append((rel, msgid, plural, note))
    for filename, _line, message, comments, _context in extract_from_dir(
            str(package_dir), method_map=TEMPLATES, keywords=KEYWORDS, comment_tags=("i18n:",),
            strip_comment_tags=True):
        msgid, plural = (message[0], message[1]) if isinstance(message, tuple) else (message, "")
        found.append((filename.replace("\\", "/"), msgid, plural or "", "\n".join(comments)))
    by_key: dict[tuple, polib.POEntry] = {}
    for rel, msgid, plural, note in found:
        if not msgid:
            continue
        where = f"{package_dir.name}/{rel}"
        entry = by_key.get(("", msgid, plural))
        if entry is None:
            entry = polib.POEntry(msgid=msgid, msgid_plural=plural, msgstr="",
                                  msgstr_plural={0: "", 1: ""} if plural else {},
                                  occurrences=[], comment=note)
            if "{" in msgid:
                entry.flags.append("python-brace-format")
            by_key[key(entry)] = entry
        if (where, "") not in entry.occurrences:
            entry.occurrences.append((where, ""))
    return list(by_key.values())


def notebook_entries(nb, name: str) -> list[polib.POEntry]:
    """The translatable pieces of a notebook, as entries with the context ``name#cell-id``."""
    found: dict[tuple, polib.POEntry] = {}
    for piece in pieces(nb):
        entry = polib.POEntry(msgctxt=f"{name}#{piece.cell_id}", msgid=piece.text, msgstr="",
                              comment=KIND_NOTES[piece.kind])
        if piece.kind in ("string", "assert") and "{" in piece.text:
            entry.flags.append("python-brace-format")
        found.setdefault(key(entry), entry)
    return list(found.values())


# ------------------------------------------------------------------ merging
@dataclass
class MergeReport:
    kept: int = 0
    moved: int = 0
    fuzzy: int = 0
    new: int = 0
    dropped: int = 0


def _translated(entry: polib.POEntry) -> bool:
    if entry.msgid_plural:
        return all(entry.msgstr_plural.get(i) for i in (0, 1))
    return bool(entry.msgstr)


def _copy_translation(src: polib.POEntry, dst: polib.POEntry) -> None:
    dst.msgstr = src.msgstr
    if dst.msgid_plural:
        dst.msgstr_plural = dict(src.msgstr_plural) if src.msgid_plural else \
            {0: src.msgstr, 1: src.msgstr}
    dst.tcomment = src.tcomment


def _mark_fuzzy(entry: polib.POEntry, old: polib.POEntry) -> None:
    if "fuzzy" not in entry.flags:
        entry.flags.append("fuzzy")
    entry.previous_msgid = old.previous_msgid if "fuzzy" in old.flags and old.previous_msgid \
        else old.msgid


def merge(old: polib.POFile | None, entries: list[polib.POEntry], *, lang: str,
          title: str) -> tuple[polib.POFile, MergeReport]:
    """The catalog for ``entries`` (the current English), keeping what ``old`` translated."""
    report = MergeReport()
    po = new_catalog(lang, title)
    if old is not None:
        po.header, po.metadata = old.header, dict(old.metadata)
    previous = {key(e): e for e in (old or []) if not e.obsolete}
    memory = [e for e in (old or []) if e.obsolete]
    by_msgid: dict[str, polib.POEntry] = {}
    by_context: dict[str, list[polib.POEntry]] = {}
    for e in [*previous.values(), *memory]:
        if _translated(e):
            if "fuzzy" not in e.flags:
                by_msgid.setdefault(e.msgid, e)
            by_context.setdefault(e.msgctxt or "", []).append(e)
    used: set[tuple] = set()
    for entry in entries:
        k = key(entry)
        same = previous.get(k)
        if same is not None:
            _copy_translation(same, entry)
            if "fuzzy" in same.flags:
                _mark_fuzzy(entry, same)
            used.add(k)
            report.kept += 1
        elif entry.msgid in by_msgid:
            _copy_translation(by_msgid[entry.msgid], entry)
            used.add(key(by_msgid[entry.msgid]))
            report.moved += 1
        else:
            draft = _closest(entry, by_context.get(entry.msgctxt or "", []), used) or \
                _closest(entry, [e for es in by_context.values() for e in es], used)
            if draft is not None:
                _copy_translation(draft, entry)
                _mark_fuzzy(entry, draft)
                used.add(key(draft))
                report.fuzzy += 1
            else:
                report.new += 1
        po.append(entry)
    current = {key(e) for e in entries}
    gone = [e for k, e in previous.items() if k not in current]
    report.dropped = len(gone)
    kept: set[tuple] = set()
    for e in [*gone, *memory]:
        if _translated(e) and key(e) not in current | used | kept:
            e.obsolete = True
            kept.add(key(e))
            po.append(e)
    return po, report


def _closest(entry: polib.POEntry, candidates: list[polib.POEntry], used: set) -> polib.POEntry | None:
    best, best_ratio = None, SIMILAR
    for c in candidates:
        if key(c) in used or c.msgid == entry.msgid:
            continue
        matcher = difflib.SequenceMatcher(None, c.msgid, entry.msgid, autojunk=False)
        if matcher.real_quick_ratio() < best_ratio or matcher.quick_ratio() < best_ratio:
            continue
        ratio = matcher.ratio()
        if ratio >= best_ratio:
            best, best_ratio = c, ratio
    return best


# ------------------------------------------------------------------ state of a catalog
def incomplete(po: polib.POFile) -> tuple[list[polib.POEntry], list[polib.POEntry]]:
    """(untranslated entries, fuzzy entries)."""
    live = [e for e in po if not e.obsolete]
    fuzzy = [e for e in live if "fuzzy" in e.flags]
    return [e for e in live if not _translated(e) and "fuzzy" not in e.flags], fuzzy


def out_of_step(po: polib.POFile, entries: list[polib.POEntry]) -> tuple[list[str], list[str]]:
    """(English in the sources that the catalog lacks, catalog English the sources lost)."""
    have = {key(e) for e in po if not e.obsolete}
    want = {key(e) for e in entries}
    describe = lambda k: (f"[{k[0]}] " if k[0] else "") + k[1][:90].replace("\n", " ")  # noqa: E731
    return sorted(map(describe, want - have)), sorted(map(describe, have - want))


def live(po: polib.POFile) -> int:
    """How many entries the catalog has for the current English (obsolete ones left out)."""
    return sum(1 for e in po if not e.obsolete)


def usable(po: polib.POFile) -> dict[tuple[str, str], str]:
    """(context, English) -> translation, for the finished entries only."""
    return {(e.msgctxt or "", e.msgid): e.msgstr for e in po
            if not e.obsolete and "fuzzy" not in e.flags and e.msgstr and not e.msgid_plural}


def words(text: str) -> int:
    return len(text.split())


def save(po: polib.POFile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    po.wrapwidth = WRAP
    po.save(str(path))


def load(path: Path) -> polib.POFile | None:
    return polib.pofile(str(path), wrapwidth=WRAP) if path.exists() else None


def compile_mo(po: polib.POFile, path: Path) -> None:
    """The compiled catalog gettext reads at run time (fuzzy and empty entries left out)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    po.save_as_mofile(str(path))
