"""Markdown documents of a translated edition: the teachers' guides and the labs' README.

A document is cut into **blocks**, one catalog entry each (message context ``<English path>#<the
section's anchor>``, e.g. ``docs/instructor.md#5-autograde``):

* a heading (without its ``#`` marks), a paragraph, a list item (without its ``-`` or ``1.``
  and its indentation, continuation lines included), a table row (with its ``|`` cells, which
  the translation keeps);
* fenced code blocks, blank lines, table separators (``| --- |``) and blocks with no prose
  (only code, names in capitals, numbers) are copied as they are.

A translated document is the English with every block replaced by its translation, structure
(indentation, list marks, heading levels, fences) kept from the English, and relative links
rewritten for the translation's folder (a link to another translated document or notebook goes
to its translation). So code, commands and output samples cannot drift: they are the English's.

English source -> catalog -> generated (catalogs in docs/.i18n/el/):

* docs/instructor.md -> instructor.po -> docs/el/instructor.md
* docs/jupyterhub.md -> jupyterhub.po -> docs/el/jupyterhub.md
* labs/README.md (the release folder's README) -> labs-README.po -> labs/README.el.md
* docs/.i18n/el/start-here.md (its links written from docs/) -> start-here.po -> docs/el/README.md
* docs/.i18n/el/readme-section.md (links from the top) -> readme-section.po -> README.md, between
  its two marker lines

The last two have no English page of their own: the Greek start page and the Greek section at
the top of README.md say things only the Greek edition needs (where its course, labs and guides
are), and are still written in English first, so that a maintainer who reads no Greek can
review and change them and the same catalog rules hold. README.md belongs to its maintainers:
``build`` rewrites only what stands between the two marker lines ``<!-- el: ... -->`` and
``<!-- /el -->``, and only when README.md has them. labs/README.el.md sits beside
labs/README.md in nbgrader's release folder: a file, not a folder, so nbgrader takes it for no
assignment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .checks import prose_of

# (English source, catalog name, generated file, folder the source's links are written from,
# marker of a region (the generated text is put between two marker lines of the file) or "")
DOCS = [
    ("docs/instructor.md", "instructor", "docs/{lang}/instructor.md", "", ""),
    ("docs/jupyterhub.md", "jupyterhub", "docs/{lang}/jupyterhub.md", "", ""),
    ("labs/README.md", "labs-README", "labs/README.{lang}.md", "", ""),
    ("docs/.i18n/{lang}/start-here.md", "start-here", "docs/{lang}/README.md", "docs", ""),
    ("docs/.i18n/{lang}/readme-section.md", "readme-section", "README.md", ".", "{lang}"),
]
CATALOGS = "docs/.i18n/{lang}"
NOTE = "markdown {kind} of a document: translate the prose; keep `code`, links' targets and " \
       "the table's | cells as they are"


@dataclass(frozen=True)
class Doc:
    """One English document and its translation's files."""

    english: Path
    catalog: Path
    target: Path
    source_dir: Path  # the links of the English are relative to this folder
    region: str  # "": the whole target file; else the marker name of a region of the target
    root: Path

    @property
    def name(self) -> str:
        return self.english.relative_to(self.root).as_posix()

    @property
    def target_name(self) -> str:
        return self.target.relative_to(self.root).as_posix()

    @property
    def begin(self) -> str:
        return (f"<!-- {self.region}: generated from {self.name} by `python -m maillab.i18n "
                "build`; edit the English there, not here -->")

    @property
    def end(self) -> str:
        return f"<!-- /{self.region} -->"


def documents(root: Path, lang: str) -> list[Doc]:
    """The documents of the edition whose English exists in this repository."""
    found = []
    for english, catalog, target, source_dir, region in DOCS:
        english_path = root / english.format(lang=lang)
        if not english_path.exists():
            continue
        found.append(Doc(english_path, root / CATALOGS.format(lang=lang) / f"{catalog}.po",
                         root / target.format(lang=lang),
                         root / source_dir if source_dir else english_path.parent,
                         region.format(lang=lang), root))
    return found


# ------------------------------------------------------------------ blocks
_FENCE = re.compile(r"^\s*(```+|~~~+)")
_HEADING = re.compile(r"^(#{1,6}[ \t]+)(.*)$")
_ITEM = re.compile(r"^(\s*(?:[-*+]|\d{1,3}[.)])[ \t]+)(.*)$")
_ROW = re.compile(r"^(\s*)(\|.*)$")
_SEPARATOR = re.compile(r"^\s*\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*$")
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class Block:
    kind: str  # "raw" (copied), "heading", "paragraph", "item", "row"
    prefix: str  # written before the first line: indentation and the heading's or item's mark
    text: str  # the English as the translator sees it (raw: the lines as they are)
    section: str  # the anchor of the section the block is in


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`|\*\*|\]\([^)]*\)|\[", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _starts_block(line: str) -> bool:
    return bool(_FENCE.match(line) or _HEADING.match(line) or _ROW.match(line)
                or _ITEM.match(line) or _is_comment(line))


def _is_comment(line: str) -> bool:
    """An HTML comment line (README's region markers): a raw block of its own, never part of
    the paragraph or list item before it."""
    return line.startswith("<!--")


def blocks(markdown: str) -> list[Block]:
    """The document cut into blocks; joining every block's lines gives the document back."""
    lines = markdown.split("\n")
    found: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if not line.strip() or _is_comment(line):
            found.append(Block("raw", "", line, section))
            i += 1
        elif fence:
            mark = fence.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(mark):
                j += 1
            found.append(Block("raw", "", "\n".join(lines[i:j + 1]), section))
            i = j + 1
        elif _HEADING.match(line):
            mark, text = _HEADING.match(line).groups()
            section = anchor(text)
            found.append(Block("heading", mark, text, section))
            i += 1
        elif _ROW.match(line):
            indent, row = _ROW.match(line).groups()
            kind = "raw" if _SEPARATOR.match(line) else "row"
            found.append(Block(kind, indent, row if kind == "row" else line, section))
            i += 1
        else:
            item = _ITEM.match(line)
            prefix, first = item.groups() if item else (line[:len(line) - len(line.lstrip())],
                                                        line.lstrip())
            j = i + 1
            while j < len(lines) and lines[j].strip() and not _starts_block(lines[j]):
                j += 1
            text = "\n".join([first, *(x.strip() for x in lines[i + 1:j])])
            found.append(Block("item" if item else "paragraph", prefix, text, section))
            i = j
    return [b if b.kind == "raw" or _LETTER.search(prose_of(b.text)) else
            Block("raw", "", _written(b, b.text), b.section) for b in found]


def _written(block: Block, text: str) -> str:
    """A block's lines with ``text`` in it: the prefix before the first line, the following lines
    indented as far as the first line's text starts (a list item's continuation)."""
    if block.kind == "raw":
        return text
    if block.kind == "row":
        return block.prefix + text
    rest = " " * len(block.prefix)
    return "\n".join(block.prefix + line if k == 0 else (rest + line if line.strip() else "")
                     for k, line in enumerate(text.split("\n")))


def context(doc_name: str, block: Block) -> str:
    return f"{doc_name}#{block.section}"


def translate(markdown: str, lookup, *, relink=lambda text: text) -> str:
    """The document with each block's translation (``lookup(block)``; None: the English) and
    ``relink`` applied to everything outside fenced code."""
    out = []
    for b in blocks(markdown):
        if b.kind == "raw":
            out.append(b.text if _FENCE.match(b.text) else relink(b.text))
        else:
            out.append(_written(b, relink(lookup(b) or b.text)))
    return "\n".join(out)


# ------------------------------------------------------------------ what a translation keeps
def cells(row: str) -> int:
    """How many cells a table row has (``|`` inside code spans or escaped do not count)."""
    return len(re.findall(r"(?<!\\)\|", re.sub(r"`[^`]*`", "", row)))


def row_problems(msgid: str, msgstr: str) -> list[str]:
    if msgid.lstrip().startswith("|") and msgstr and cells(msgid) != cells(msgstr):
        return [f"the table row has {cells(msgstr) - 1} cells instead of {cells(msgid) - 1}"]
    return []


# ------------------------------------------------------------------ catalogs, build, check
def entries(doc: Doc):
    """The catalog entries of a document: one per block with prose, in order."""
    import polib

    from .catalogs import key

    found: dict[tuple, polib.POEntry] = {}
    for b in blocks(doc.english.read_text(encoding="utf-8")):
        if b.kind != "raw":
            entry = polib.POEntry(msgctxt=context(doc.name, b), msgid=b.text, msgstr="",
                                  comment=NOTE.format(kind=b.kind))
            found.setdefault(key(entry), entry)
    return list(found.values())


def _region_bounds(text: str, doc: Doc) -> tuple[int, int] | None:
    """(index of the begin marker's line, of the end marker's line) in the target, or None."""
    lines = text.split("\n")
    begin = next((i for i, line in enumerate(lines)
                  if line.startswith(f"<!-- {doc.region}: ")), None)
    if begin is None:
        return None
    end = next((i for i in range(begin + 1, len(lines)) if lines[i].strip() == doc.end), None)
    return None if end is None else (begin, end)


def present(doc: Doc) -> bool:
    """Has the repository the translation (for a region: the target file with its markers)?"""
    if not doc.target.exists():
        return False
    return not doc.region or _region_bounds(doc.target.read_text(encoding="utf-8"), doc) is not None


def generated(ed, doc: Doc, po, *, whole: bool = True) -> str:
    """The translated document (for a region: the whole target file with the region made
    anew, or with ``whole=False`` the region's text alone) from the English and the finished
    entries of ``po``."""
    from . import catalogs as cat
    from .notebooks import _relink

    table = cat.usable(po) if po is not None else {}
    renamed = {**ed.renamed(), **{str(d.english): str(d.target)
                                  for d in documents(ed.root, ed.lang) if not d.region}}
    text = translate(doc.english.read_text(encoding="utf-8"),
                     lambda b: table.get((context(doc.name, b), b.text)),
                     relink=lambda t: _relink(t, str(doc.source_dir), str(doc.target.parent),
                                              renamed))
    if not doc.region or not whole:
        return text
    target = doc.target.read_text(encoding="utf-8")
    lines = target.split("\n")
    begin, end = _region_bounds(target, doc)
    return "\n".join([*lines[:begin], region(doc, text), *lines[end + 1:]])


def region(doc: Doc, text: str) -> str:
    """The lines a region is made of, its two markers included (to paste into the target)."""
    return "\n".join([doc.begin, text.strip("\n"), doc.end])


def _state(doc: Doc, po) -> str:
    """"" when the catalog is finished and in step with the English, else what is missing."""
    from . import catalogs as cat

    if po is None:
        return "no catalog"
    untranslated, fuzzy = cat.incomplete(po)
    missing, gone = cat.out_of_step(po, entries(doc))
    if untranslated or fuzzy or missing or gone:
        return (f"{len(untranslated)} untranslated, {len(fuzzy)} fuzzy of {cat.live(po)}"
                + (f"; the English changed: run update ({len(missing)} new, {len(gone)} gone)"
                   if missing or gone else ""))
    return ""


def update(ed, out=print) -> None:
    from . import catalogs as cat
    from .__main__ import _report_line

    for doc in documents(ed.root, ed.lang):
        po, report = cat.merge(cat.load(doc.catalog), entries(doc), lang=ed.lang, title=doc.name)
        cat.save(po, doc.catalog)
        out(_report_line(doc.catalog.relative_to(ed.root), po, report))


def build(ed, out=print, draft_dir: Path | None = None) -> int:
    """Write every document whose catalog is finished; 1 if one that is in the repository
    already (held: see problems) is not. A region is written only where its markers are."""
    from . import catalogs as cat

    failed = 0
    for doc in documents(ed.root, ed.lang):
        po = cat.load(doc.catalog)
        if doc.region and not present(doc):
            out(f"{doc.target_name}: no <!-- {doc.region}: ... --> markers, its section from "
                f"{doc.name} is not written (maillab/i18n/docs.py)")
            continue
        if draft_dir is not None:
            target = draft_dir / doc.target.relative_to(ed.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(generated(ed, doc, po), encoding="utf-8")
            out(f"{target}: draft")
            continue
        state = _state(doc, po)
        if state:
            out(f"{doc.name}: {'UNFINISHED' if present(doc) else 'not translated yet'} ({state})")
            failed |= present(doc)
            continue
        doc.target.parent.mkdir(parents=True, exist_ok=True)
        doc.target.write_text(generated(ed, doc, po), encoding="utf-8")
        out(f"{doc.target_name}: written" + (f" (between its {doc.region} markers)"
                                             if doc.region else ""))
    return failed


def problems(ed) -> list[str]:
    """Every document whose translation is in the repository (or that has a catalog): catalog
    in step with the English and finished, its entries sound, its translation what build writes."""
    from . import catalogs as cat
    from .state import entry_problems

    found = []
    for doc in documents(ed.root, ed.lang):
        po = cat.load(doc.catalog)
        if po is None and not present(doc):
            continue
        found += entry_problems(ed, doc.catalog)
        found += [f"{doc.catalog.name}: [{e.msgctxt}] {e.msgid[:50]}: {p}"
                  for e in (po or []) if not e.obsolete and "fuzzy" not in e.flags
                  for p in row_problems(e.msgid, e.msgstr)]
        state = _state(doc, po)
        if state:
            found.append(f"{doc.name}: its catalog {doc.catalog.relative_to(ed.root)} is "
                         f"unfinished ({state})")
        elif not present(doc):
            if not doc.region:  # a region waits for its markers (README.md is not ours)
                found.append(f"{doc.target_name}: missing (run python -m maillab.i18n build)")
        elif doc.target.read_text(encoding="utf-8") != generated(ed, doc, po):
            found.append(f"{doc.target_name}: out of date (run python -m maillab.i18n build)")
    return found
