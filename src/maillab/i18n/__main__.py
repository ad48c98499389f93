"""The tools of a translated edition (docs/i18n.md), run at the top of the repository:

    python -m maillab.i18n update    catalogs from the English sources (new entries empty,
                                     changed English: the old translation marked fuzzy)
    python -m maillab.i18n build     compile the package catalog and write the translated
                                     notebooks, lab masters and documents (docs.py;
                                     complete catalogs only);
                                     fails while a published notebook is not finished
    python -m maillab.i18n build --draft DIR   every translated notebook into DIR, English
                                     where the catalog has no translation yet (to look at)
    python -m maillab.i18n check     everything the tests check, writing nothing
    python -m maillab.i18n stats     entries and words per catalog
    python -m maillab.i18n unmarked  learner-facing strings of the package not marked for
                                     translation (a wide net: read the list, mark what is shown)

Options: --lang el (the default: the only translation so far), --root PATH (default: found
from the current folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import LANGUAGES, SOURCE_LANGUAGE
from .edition import Edition, Notebook, find_root
from . import checks
from . import catalogs as cat
from . import docs


def _read_notebook(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def _package_title() -> str:
    return "maillab, the package's learner-facing strings"


# ------------------------------------------------------------------ update
def update(ed: Edition, out=print) -> None:
    package = ed.root / "src" / "maillab"
    entries = cat.package_entries(package)
    po, report = cat.merge(cat.load(ed.package_catalog), entries, lang=ed.lang,
                           title=_package_title())
    cat.save(po, ed.package_catalog)
    out(_report_line(ed.package_catalog.relative_to(ed.root), po, report))
    for nb in ed.notebooks():
        entries = cat.notebook_entries(_read_notebook(nb.english), nb.name)
        po, report = cat.merge(cat.load(nb.catalog), entries, lang=ed.lang,
                               title=f"{nb.name}")
        cat.save(po, nb.catalog)
        out(_report_line(nb.catalog.relative_to(ed.root), po, report))
    for orphan in ed.orphans():
        if orphan.suffix == ".po":
            orphan.unlink()
            out(f"{orphan.relative_to(ed.root)}: removed (its English notebook is gone)")
    docs.update(ed, out)


def _report_line(path, po, report: cat.MergeReport) -> str:
    untranslated, fuzzy = cat.incomplete(po)
    return (f"{path}: {cat.live(po)} entries ({report.kept} kept, {report.moved} moved, "
            f"{report.fuzzy} fuzzy drafts, {report.new} new, {report.dropped} dropped); "
            f"to do: {len(untranslated)} untranslated, {len(fuzzy)} fuzzy")


# ------------------------------------------------------------------ build
def generated(ed: Edition, nb: Notebook, po, *, target: Path | None = None):
    """The translated notebook made from ``nb``'s English and its catalog ``po``."""
    from .notebooks import translate

    table = cat.usable(po) if po is not None else {}
    ctx = lambda piece: f"{nb.name}#{piece.cell_id}"  # noqa: E731
    target = target or nb.target
    return translate(_read_notebook(nb.english),
                     lambda piece: table.get((ctx(piece), piece.text)),
                     lang=ed.lang, source_dir=str(nb.english.parent),
                     target_dir=str(target.parent), renamed=ed.renamed())


def notebook_text(nb) -> str:
    import nbformat

    return nbformat.writes(nb) + "\n"


def build(ed: Edition, out=print, draft_dir: Path | None = None) -> int:
    """Write what is finished; 1 if a published notebook or the package is unfinished."""
    failed = 0
    po = cat.load(ed.package_catalog)
    if draft_dir is None and po is not None:
        cat.compile_mo(po, ed.package_mo)
        out(f"{ed.package_mo.relative_to(ed.root)}: compiled")
        untranslated, fuzzy = cat.incomplete(po)
        if untranslated or fuzzy:
            out(f"  unfinished: {len(untranslated)} untranslated, {len(fuzzy)} fuzzy "
                "(English is shown for them)")
            failed = 1
    published = set(ed.published())
    for nb in ed.notebooks():
        po = cat.load(nb.catalog)
        if draft_dir is not None:
            target = draft_dir / nb.target.relative_to(ed.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(notebook_text(generated(ed, nb, po, target=nb.target)))
            out(f"{target}: draft")
            continue
        untranslated, fuzzy = cat.incomplete(po) if po is not None else ([None], [])
        if po is None or untranslated or fuzzy or \
                cat.out_of_step(po, cat.notebook_entries(_read_notebook(nb.english), nb.name)) != ([], []):
            state = ("no catalog" if po is None else
                     f"{len(untranslated)} untranslated, {len(fuzzy)} fuzzy of {cat.live(po)}")
            if nb.name in published:
                out(f"{nb.name}: PUBLISHED BUT UNFINISHED ({state}; run update, then translate)")
                failed = 1
            else:
                out(f"{nb.name}: not translated yet ({state})")
            continue
        nb.target.parent.mkdir(parents=True, exist_ok=True)
        nb.target.write_text(notebook_text(generated(ed, nb, po)))
        out(f"{nb.target_name}: written" + (" (then: nbgrader generate_assignment "
                                            f"{nb.target.parent.name} --force)"
                                            if nb.kind == "lab" else ""))
    for orphan in ed.orphans():
        if orphan.suffix == ".ipynb" and draft_dir is None:
            orphan.unlink()
            out(f"{orphan.relative_to(ed.root)}: removed (its English notebook is gone)")
    return failed | docs.build(ed, out, draft_dir)


# ------------------------------------------------------------------ check
def problems(ed: Edition) -> list[str]:
    """Everything that is wrong with the edition, in words (empty: all is well)."""
    from .state import edition_problems

    return edition_problems(ed)


# ------------------------------------------------------------------ stats, unmarked
def stats(ed: Edition, out=print) -> None:
    rows = []
    catalogs = [(ed.package_catalog, "package")] + [(nb.catalog, nb.kind) for nb in ed.notebooks()]
    catalogs += [(doc.catalog, "doc") for doc in docs.documents(ed.root, ed.lang)]
    for path, kind in catalogs:
        po = cat.load(path)
        if po is None:
            continue
        untranslated, fuzzy = cat.incomplete(po)
        entries = [e for e in po if not e.obsolete]
        rows.append((str(path.relative_to(ed.root)), kind, len(entries),
                     sum(cat.words(e.msgid) for e in entries),
                     len(entries) - len(untranslated) - len(fuzzy), len(fuzzy)))
    width = max(len(r[0]) for r in rows)
    out(f"{'catalog':{width}}  kind     entries  words  done  fuzzy")
    for r in rows:
        out(f"{r[0]:{width}}  {r[1]:7}  {r[2]:7}  {r[3]:5}  {r[4]:4}  {r[5]:5}")
    out(f"{'total':{width}}  {'':7}  {sum(r[2] for r in rows):7}  {sum(r[3] for r in rows):5}  "
        f"{sum(r[4] for r in rows):4}  {sum(r[5] for r in rows):5}")


def unmarked(ed: Edition, out=print) -> None:
    package = ed.root / "src" / "maillab"
    for path in sorted(package.rglob("*.py")):
        if "i18n" in path.relative_to(package).parts:
            continue
        found = checks.unmarked_strings(path.read_text(encoding="utf-8"))
        if found:
            out(f"{path.relative_to(ed.root)}:")
            for line, text in found:
                out(f"  {line}: {text[:120]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maillab.i18n",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["update", "build", "check", "stats", "unmarked"])
    parser.add_argument("--lang", default="el",
                        choices=[lang for lang in LANGUAGES if lang != SOURCE_LANGUAGE])
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--draft", type=Path, default=None, metavar="DIR",
                        help="build: every notebook into DIR, English where untranslated")
    args = parser.parse_args(argv)
    ed = Edition(find_root(args.root), args.lang)
    if args.command == "update":
        update(ed)
    elif args.command == "build":
        return build(ed, draft_dir=args.draft)
    elif args.command == "check":
        found = problems(ed)
        for problem in found:
            print(problem)
        print(f"{len(found)} problem(s)" if found else "the edition is complete and up to date")
        return 1 if found else 0
    elif args.command == "stats":
        stats(ed)
    elif args.command == "unmarked":
        unmarked(ed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
