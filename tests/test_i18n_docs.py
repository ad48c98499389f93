"""The Greek edition's documents (maillab.i18n.docs): the teachers' guides, the labs' README,
the Greek start page and the Greek section of README.md, made from English + catalog.

* In this repository: every document's catalog is in step with its English, finished (no
  untranslated or fuzzy entry), holds to the glossary and leaves no English prose; every
  generated file is exactly what `python -m maillab.i18n build` writes; code blocks and inline
  code are the English's; relative links resolve.
* The machinery, on a small repository: update makes empty entries, build writes only finished
  documents, check reports untranslated, fuzzy (after an English change), stale, hand-edited,
  glossary-breaking and table-breaking translations, and a README region is rewritten between
  its markers and nowhere else.

Fix a failure: `python -m maillab.i18n update`, translate the catalog in docs/.i18n/el/, then
`python -m maillab.i18n build`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import polib
import pytest

from maillab.i18n import docs
from maillab.i18n.edition import Edition

ROOT = Path(__file__).resolve().parent.parent
EDITION = Edition(ROOT, "el")
DOCS = docs.documents(ROOT, "el")
LOCALE = ROOT / "src" / "maillab" / "locale" / "el"
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.M | re.S)
CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _show(problems: list[str]) -> str:
    return "\n".join(problems[:40]) + (f"\n... and {len(problems) - 40} more"
                                        if len(problems) > 40 else "")


# ------------------------------------------------------------------ this repository
def test_the_edition_has_the_teachers_guides_the_labs_readme_and_a_start_page():
    targets = {doc.name: doc.target_name for doc in DOCS}
    assert targets["docs/instructor.md"] == "docs/el/instructor.md"
    assert targets["docs/jupyterhub.md"] == "docs/el/jupyterhub.md"
    assert targets["labs/README.md"] == "labs/README.el.md"
    assert targets["docs/.i18n/el/start-here.md"] == "docs/el/README.md"
    for doc in DOCS:
        if not doc.region:
            assert doc.target.is_file(), f"{doc.target_name} missing: run maillab.i18n build"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_greek_document_is_complete_sound_and_fresh(doc):
    """Catalog in step and finished, glossary, no English left, table rows whole, and the Greek
    file (or README's region) what build writes."""
    problems = [p for p in docs.problems(EDITION)
                if doc.name in p or doc.catalog.name in p or doc.target_name in p]
    assert not problems, _show(problems)


@pytest.mark.parametrize("doc", [d for d in DOCS if not d.region], ids=lambda d: d.name)
def test_code_blocks_and_inline_code_are_the_englishs(doc):
    english, greek = doc.english.read_text(), doc.target.read_text()
    fences = lambda text: [m.group(0) for m in FENCE.finditer(text)]  # noqa: E731
    inline = lambda text: sorted(m.group(2)  # noqa: E731
                                 for m in CODE.finditer(FENCE.sub("", text)))
    assert fences(greek) == fences(english)
    assert inline(greek) == inline(english)


@pytest.mark.parametrize("doc", [d for d in DOCS if not d.region], ids=lambda d: d.name)
def test_relative_links_of_greek_documents_resolve(doc):
    greek = FENCE.sub("", doc.target.read_text())
    for target in LINK.findall(greek):
        if re.match(r"^([a-z][a-z0-9+.-]*:|#)", target):
            continue
        path = (doc.target.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{doc.target_name}: link to {target} leads nowhere"


def test_greek_documents_link_to_greek_ones():
    start = (ROOT / "docs" / "el" / "README.md").read_text()
    for target in ("instructor.md", "jupyterhub.md", "../../course/el/00-welcome.ipynb",
                   "../../labs/README.el.md", "../architecture.md", "../i18n.md"):
        assert f"]({target})" in start, target


def test_cutting_into_blocks_and_joining_gives_every_document_back():
    """No text is lost or moved: an empty catalog gives the English, byte for byte (all the
    repository's markdown, not only the translated documents)."""
    paths = [*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "labs" / "README.md"]
    for path in paths:
        text = path.read_text()
        assert docs.translate(text, lambda block: None) == text, path


def test_blocks_are_prose_only_and_keep_structure():
    text = ("# Title\n\nA paragraph\nover two lines.\n\n- an item\n  continued\n"
            "   1. a nested `item`\n\n```bash\nrun this # and this\n```\n\n"
            "| a | b |\n| --- | --- |\n"
            "| `x` | some words |\n| `y` | `z` |\n")
    found = [(b.kind, b.prefix, b.text) for b in docs.blocks(text) if b.kind != "raw"]
    assert found == [("heading", "# ", "Title"), ("paragraph", "", "A paragraph\nover two lines."),
                     ("item", "- ", "an item\ncontinued"), ("item", "   1. ", "a nested `item`"),
                     ("row", "", "| a | b |"), ("row", "", "| `x` | some words |")]
    greek = {"an item\ncontinued": "ένα στοιχείο\nπου συνεχίζει"}
    out = docs.translate(text, lambda b: greek.get(b.text))
    assert "- ένα στοιχείο\n  που συνεχίζει\n" in out and "run this # and this" in out
    assert docs.row_problems("| a | b |", "| α β |")
    assert not docs.row_problems("| a | b |", "| α | β |")
    assert docs.anchor("5. Autograde `python`") == "5-autograde-python"


# ------------------------------------------------------------------ the machinery
ENGLISH = """# Teaching

Open the notebook and run the first cell.

| what | port |
| --- | --- |
| the mail server | 2525 |

```bash
nbgrader generate_assignment smtp --force
```

See [the other guide](jupyterhub.md).
"""
GREEK = {
    "Teaching": "Διδασκαλία",
    "Open the notebook and run the first cell.":
        "Ανοίξτε το σημειωματάριο και εκτελέστε το πρώτο κελί.",
    "| what | port |": "| τι | θύρα |",
    "| the mail server | 2525 |": "| ο διακομιστής αλληλογραφίας | 2525 |",
    "See [the other guide](jupyterhub.md).": "Δείτε [τον άλλο οδηγό](jupyterhub.md).",
}


def _repo(tmp_path: Path) -> Edition:
    for folder in ("course", "solutions", "docs", "labs"):
        (tmp_path / folder).mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    locale = tmp_path / "src" / "maillab" / "locale" / "el"
    locale.mkdir(parents=True)
    shutil.copy(LOCALE / "glossary.tsv", locale)
    shutil.copy(LOCALE / "edition.toml", locale)
    (tmp_path / "docs" / "instructor.md").write_text(ENGLISH)
    (tmp_path / "docs" / "jupyterhub.md").write_text("# Hub\n\nA hub.\n")
    return Edition(tmp_path, "el")


def _fill(path: Path, table: dict[str, str]) -> None:
    po = polib.pofile(str(path))
    for e in po:
        if e.msgid in table:
            e.msgstr = table[e.msgid]
            e.flags = [f for f in e.flags if f != "fuzzy"]
    po.save(str(path))


def test_update_build_check_on_a_small_repository(tmp_path):
    ed = _repo(tmp_path)
    guide = next(d for d in docs.documents(ed.root, "el") if d.name == "docs/instructor.md")
    hub = next(d for d in docs.documents(ed.root, "el") if d.name == "docs/jupyterhub.md")
    assert docs.problems(ed) == []  # nothing translated, nothing held yet
    docs.update(ed, out=lambda line: None)
    po = polib.pofile(str(guide.catalog))
    assert [e.msgid for e in po] == list(GREEK)  # no code, no separator row
    assert {e.msgctxt for e in po} == {"docs/instructor.md#teaching"}
    assert any("untranslated" in p for p in docs.problems(ed))

    _fill(guide.catalog, GREEK)
    assert docs.build(ed, out=lambda line: None) == 0  # the unfinished hub guide: not written
    assert not hub.target.exists()
    greek = guide.target.read_text()
    assert greek.startswith("# Διδασκαλία\n\nΑνοίξτε το σημειωματάριο")
    assert "```bash\nnbgrader generate_assignment smtp --force\n```" in greek
    assert "| --- | --- |\n| ο διακομιστής αλληλογραφίας | 2525 |" in greek
    assert [p for p in docs.problems(ed) if "instructor" in p] == []

    # a Greek file edited by hand is out of date
    guide.target.write_text(greek.replace("Διδασκαλία", "Διδασκαλία!"))
    assert any("out of date" in p for p in docs.problems(ed))
    docs.build(ed, out=lambda line: None)

    # the English changes: out of step, then fuzzy with the old English after update
    guide.english.write_text(ENGLISH.replace("run the first cell", "run the first code cell"))
    assert any("the English changed" in p for p in docs.problems(ed))
    assert docs.build(ed, out=lambda line: None) == 1  # held (its Greek file exists), unfinished
    docs.update(ed, out=lambda line: None)
    fuzzy = [e for e in polib.pofile(str(guide.catalog)) if "fuzzy" in e.flags]
    assert len(fuzzy) == 1
    assert fuzzy[0].previous_msgid == "Open the notebook and run the first cell."
    assert any("fuzzy" in p for p in docs.problems(ed))
    _fill(guide.catalog, {fuzzy[0].msgid: "Ανοίξτε το σημειωματάριο και εκτελέστε το πρώτο κελί "
                                          "κώδικα."})
    assert docs.build(ed, out=lambda line: None) == 0
    assert [p for p in docs.problems(ed) if "instructor" in p] == []

    # a translation that breaks the glossary, leaves English or loses a table cell is reported
    _fill(guide.catalog, {"| what | port |": "| τι πόρτα |",
                          "Teaching": "Teaching the class"})
    found = docs.problems(ed)
    assert any("port:" in p for p in found), found
    assert any("cells instead of" in p for p in found), found
    assert any("English left" in p for p in found), found


def test_a_region_is_written_between_its_markers_only(tmp_path):
    ed = _repo(tmp_path)
    source = tmp_path / "docs" / ".i18n" / "el" / "readme-section.md"
    source.parent.mkdir(parents=True)
    source.write_text("## In Greek\n\nOpen [the guide](docs/instructor.md).\n")
    readme = tmp_path / "README.md"
    readme.write_text("# demo\n\nEnglish text.\n")
    section = next(d for d in docs.documents(ed.root, "el") if d.region)
    docs.update(ed, out=lambda line: None)
    _fill(section.catalog, {"In Greek": "Στα ελληνικά",
                            "Open [the guide](docs/instructor.md).":
                                "Ανοίξτε [τον οδηγό](docs/instructor.md)."})
    docs.build(ed, out=lambda line: None)
    assert readme.read_text() == "# demo\n\nEnglish text.\n"  # no markers: README is left alone
    assert not any("README.md" in p for p in docs.problems(ed))

    readme.write_text(f"# demo\n\n{section.begin}\nold text\n{section.end}\n\nEnglish text.\n")
    assert any("README.md: out of date" in p for p in docs.problems(ed))
    docs.build(ed, out=lambda line: None)
    assert readme.read_text() == (f"# demo\n\n{section.begin}\n## Στα ελληνικά\n\nΑνοίξτε "
                                  f"[τον οδηγό](docs/el/instructor.md).\n{section.end}\n\n"
                                  "English text.\n")
    assert not any("README.md" in p for p in docs.problems(ed))
