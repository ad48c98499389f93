"""The machinery of translated editions (maillab.i18n, docs/i18n.md), on small made-up sources.

* ``_()`` follows the learner's language (start(lang=...), set_language, MAILLAB_LANG), loads
  catalogs lazily, and returns English on the lab's protocol thread: a Greek lab still answers
  in ASCII English on the wire, while its table is Greek.
* Notebooks: what is extracted (markdown cells, comments, docstrings, ``_()`` strings, assert
  messages) and what is left alone (other strings, session cells, ids, nbgrader metadata).
* Catalogs: update keeps, moves, marks fuzzy (with the old English) and empties; build writes
  only finished notebooks; check finds untranslated, fuzzy, stale and broken translations.
* The checks: placeholders, inline code and markers, the folder/envelope glossary trap, English
  left in a translation, unmarked tables.
* A Greek lab made by build is a valid nbgrader assignment of its own.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import polib
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import maillab
from maillab import i18n
from maillab.i18n import catalogs as cat
from maillab.i18n import checks
from maillab.i18n.__main__ import main as i18n_main
from maillab.i18n.edition import Edition
from maillab.i18n.notebooks import pieces, translate
from maillab.i18n.state import edition_problems

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "src" / "maillab" / "locale" / "el"


@pytest.fixture(autouse=True)
def english_afterwards(monkeypatch):
    """Every test leaves the process in English, as it found it."""
    monkeypatch.delenv("MAILLAB_LANG", raising=False)
    saved = i18n._learner_language
    yield
    i18n._learner_language = saved


# ------------------------------------------------------------------ the runtime
def test_underscore_follows_the_chosen_language():
    i18n.set_language("en")
    assert i18n._("Mail lab running") == "Mail lab running"
    i18n.set_language("el_GR.UTF-8")
    assert i18n.get_language() == "el"
    assert i18n._("Mail lab running") == "Το εργαστήριο αλληλογραφίας τρέχει"
    assert i18n._("a text no catalog has") == "a text no catalog has"
    assert i18n.N_("Mail lab running") == "Mail lab running"  # only marks
    with pytest.raises(ValueError):
        i18n.set_language("klingon")


def test_environment_variable_is_the_fallback(monkeypatch):
    i18n._learner_language = None
    monkeypatch.setenv("MAILLAB_LANG", "el")
    assert i18n.get_language() == "el"
    i18n._learner_language = None
    monkeypatch.setenv("MAILLAB_LANG", "no-such-language")
    assert i18n.get_language() == "en"  # a stray value never breaks the lab


def test_placeholders_survive_translation():
    i18n.set_language("el")
    text = i18n._("Step {0} of {1}").format(2, 4)
    assert text == "Βήμα 2 από 4"


def test_protocol_thread_speaks_english_unless_text_is_for_the_learner():
    i18n.set_language("el")
    seen = {}

    def server_thread():
        i18n.speak_protocol_in_this_thread()
        seen["wire"] = i18n._("too many recipients")
        with i18n.for_learner():
            seen["page"] = i18n._("too many recipients")

    t = threading.Thread(target=server_thread)
    t.start()
    t.join()
    assert seen == {"wire": "too many recipients", "page": "πάρα πολλοί παραλήπτες"}
    assert i18n._("too many recipients") == "πάρα πολλοί παραλήπτες"  # this thread: learner's


def test_translate_text_finds_the_message_behind_a_filled_in_text():
    i18n.set_language("el")
    assert i18n.translate_text("at most 100 per message") == "το πολύ 100 ανά μήνυμα"
    assert i18n.translate_text("no such user here") == "δεν υπάρχει τέτοιος χρήστης εδώ"
    assert i18n.translate_text("something else entirely") == "something else entirely"
    i18n.set_language("en")
    assert i18n.translate_text("at most 100 per message") == "at most 100 per message"


IN_USE = ("maildrop already in use (another POP3 session of this account is still open: it ends "
          "with QUIT or by closing its connection (in Python: close the makefile() file too, not "
          "only the socket))")


def test_a_short_message_with_fields_does_not_swallow_a_long_text():
    """'{service} connection {conn}' matches any text with ' connection ' in it: one word of
    a server's hint came out in Greek, the rest in English ('by closing its, σύνδεση')."""
    i18n.set_language("el")
    try:
        assert i18n.translate_text(IN_USE) == IN_USE  # no message of the catalog is this text
        assert i18n.translate_text("smtp:example.com connection 7") != \
            "smtp:example.com connection 7"  # what that message is for still works
    finally:
        i18n.set_language("en")


def test_a_servers_hint_and_its_reason_in_parentheses_are_both_translated():
    from maillab.explain import _in_learners_words
    with i18n.language("el"):
        [said] = _in_learners_words("{0}", IN_USE)
        assert said.startswith(i18n._("maildrop already in use") + " (")
        assert "closing its" not in said and "still open" not in said


def test_plural_forms():
    i18n.set_language("en")
    assert i18n.ngettext("{0} line", "{0} lines", 1) == "{0} line"
    assert i18n.ngettext("{0} line", "{0} lines", 2) == "{0} lines"


def test_catalogs_are_loaded_only_when_needed():
    code = ("import sys, maillab, maillab.i18n as i; "
            "print(len(i._catalogs), 'polib' in sys.modules, 'babel' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT).stdout.split()
    assert out == ["0", "False", "False"]


def test_a_greek_lab_shows_greek_but_answers_in_english_on_the_wire():
    lab = maillab.start(lang="el", ports="any", tls=False)
    try:
        assert i18n.get_language() == "el"
        assert "Το εργαστήριο αλληλογραφίας τρέχει" in lab._repr_html_()
        with socket.create_connection((lab.host, lab.smtp_port), timeout=5) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"EHLO learner.example.org\r\nMAIL FROM:<bad\r\nQUIT\r\n")
            lines = [f.readline() for _ in range(12)]
        refused = next(line for line in lines if line.startswith(b"553"))
        refused.decode("ascii")  # raises on anything but ASCII
        assert b"malformed address (hint: " in refused
    finally:
        lab.stop()


# ------------------------------------------------------------------ notebooks
def _demo_notebook():
    nb = new_notebook(cells=[
        new_markdown_cell("# Demo\n\nSee ![the client](figures/client.svg) and "
                          "[next](02-next.ipynb). Type `EHLO x`.", id="demo-00"),
        new_code_cell('import maillab\nfrom maillab.i18n import _\n'
                      'lab = maillab.start(ports="any")  # start the lab\n%time x = 1\nlab',
                      id="demo-01"),
        new_code_cell('def f(x):\n    """Say hello."""\n    return "kept as it is"  # say why\n\n'
                      'assert f(1), "f must answer"\nprint(_("Hello {0}").format("Alice"))',
                      id="demo-02"),
        new_code_cell("%%smtp example.com\nEHLO laptop  # not Python\nQUIT", id="demo-03"),
        new_markdown_cell("### BEGIN SOLUTION\nAn answer.\n### END SOLUTION", id="demo-04"),
    ])
    nb.cells[2].metadata["nbgrader"] = {"grade": True, "grade_id": "t", "points": 1,
                                        "solution": False, "locked": True, "schema_version": 3}
    return nb


def test_pieces_are_prose_comments_docstrings_and_marked_strings_only():
    found = [(p.cell_id, p.kind, p.text) for p in pieces(_demo_notebook())]
    assert ("demo-01", "comment", "start the lab") in found
    assert ("demo-02", "docstring", "Say hello.") in found
    assert ("demo-02", "comment", "say why") in found
    assert ("demo-02", "assert", "f must answer") in found
    assert ("demo-02", "string", "Hello {0}") in found
    texts = [t for _c, _k, t in found]
    assert "kept as it is" not in texts and not any("not Python" in t for t in texts)
    assert [k for _c, k, _t in found].count("markdown") == 2


def test_translate_replaces_only_pieces_and_keeps_ids_metadata_and_magics(tmp_path):
    nb = _demo_notebook()
    greek = {"start the lab": "ξεκίνα το εργαστήριο", "Say hello.": "Πες «γεια».",
             "say why": "πες γιατί", "f must answer": "η f πρέπει να απαντά",
             "Hello {0}": "Γεια σου, {0}"}
    out = translate(nb, lambda p: greek.get(p.text), lang="el",
                    source_dir=str(tmp_path / "course"), target_dir=str(tmp_path / "course" / "el"),
                    renamed={str(tmp_path / "course" / "02-next.ipynb"):
                             str(tmp_path / "course" / "el" / "02-next.ipynb")})
    assert [c.id for c in out.cells] == [c.id for c in nb.cells]
    assert out.cells[2].metadata == nb.cells[2].metadata
    setup, body = out.cells[1].source, out.cells[2].source
    assert 'maillab.start(lang="el", ports="any")  # ξεκίνα το εργαστήριο' in setup
    assert "%time x = 1" in setup
    assert '"""Πες «γεια»."""' in body and '"kept as it is"  # πες γιατί' in body
    assert 'assert f(1), "η f πρέπει να απαντά"' in body
    assert '_("Γεια σου, {0}").format("Alice")' in body
    compile(body, "cell", "exec")  # still Python
    assert out.cells[3].source == nb.cells[3].source
    md = out.cells[0].source  # untranslated here: English kept, links made for course/el/
    assert "](../figures/client.svg)" in md and "](02-next.ipynb)" in md


# ------------------------------------------------------------------ catalogs
def _entry(ctx, msgid, msgstr="", fuzzy=False):
    e = polib.POEntry(msgctxt=ctx, msgid=msgid, msgstr=msgstr)
    if fuzzy:
        e.flags.append("fuzzy")
    return e


def test_merge_keeps_moves_drafts_and_remembers():
    old = cat.new_catalog("el", "t")
    for e in [_entry("nb#a", "Unchanged text.", "Αμετάβλητο."),
              _entry("nb#b", "The cell moved.", "Το κελί μετακινήθηκε."),
              _entry("nb#c", "The server answers with a code.", "Ο διακομιστής απαντά."),
              _entry("nb#d", "A cell that is gone.", "Ένα κελί που χάθηκε.")]:
        old.append(e)
    new = [_entry("nb#a", "Unchanged text."), _entry("nb#z", "The cell moved."),
           _entry("nb#c", "The server answers with a three-digit code."),
           _entry("nb#e", "Something new.")]
    po, report = cat.merge(old, new, lang="el", title="t")
    got = {(e.msgctxt, e.msgid): e for e in po if not e.obsolete}
    assert got[("nb#a", "Unchanged text.")].msgstr == "Αμετάβλητο."
    moved = got[("nb#z", "The cell moved.")]
    assert moved.msgstr == "Το κελί μετακινήθηκε." and "fuzzy" not in moved.flags
    changed = got[("nb#c", "The server answers with a three-digit code.")]
    assert "fuzzy" in changed.flags and changed.previous_msgid == "The server answers with a code."
    assert got[("nb#e", "Something new.")].msgstr == ""
    assert [e.msgid for e in po if e.obsolete] == ["A cell that is gone."]
    assert (report.kept, report.moved, report.fuzzy, report.new) == (1, 1, 1, 1)
    untranslated, fuzzy = cat.incomplete(po)
    assert len(untranslated) == 1 and len(fuzzy) == 1
    # the memory brings a translation back when its English returns
    again, _r = cat.merge(po, [_entry("nb#q", "A cell that is gone.")], lang="el", title="t")
    assert [e.msgstr for e in again if not e.obsolete] == ["Ένα κελί που χάθηκε."]


# ------------------------------------------------------------------ checks
def test_fields_code_and_markers_must_be_kept():
    assert checks.field_problems("at most {0} per {unit}", "το πολύ {0} ανά {unit}") == []
    assert checks.field_problems("at most {0} per message", "το πολύ {1} ανά μήνυμα")
    assert checks.field_problems("idle for {0:g} s", "αδράνεια {0} s")
    assert checks.field_problems("a {", "ένα {") == []  # no template: nothing to keep
    assert checks.markup_problems("Type `EHLO x`.", "Γράψε `EHLO x`.") == []
    assert checks.markup_problems("Type `EHLO x`.", "Γράψε `EHLO`.")
    assert checks.markup_problems("### BEGIN SOLUTION\nA\n### END SOLUTION", "Απάντηση")


def test_glossary_keeps_folder_and_envelope_apart():
    terms = checks.load_glossary(LOCALE / "glossary.tsv")
    ok = lambda en, el: not checks.glossary_problems(en, el, terms)  # noqa: E731
    assert ok("The envelope is not the letter.", "Ο ταχυδρομικός φάκελος δεν είναι το γράμμα.")
    assert not ok("The envelope is not the letter.", "Ο φάκελος δεν είναι το γράμμα.")
    assert not ok("The envelope says who gets it.",
                  "Ο ταχυδρομικός φάκελος λέει ποιος το παίρνει· ο φάκελος το ξέρει.")
    assert ok("Open the folder Sent.", "Άνοιξε τον φάκελο Sent.")
    assert not ok("Open the folder Sent.", "Άνοιξε τον ταχυδρομικό φάκελο Sent.")
    assert ok("The messages of a folder.", "Τα μηνύματα ενός φακέλου.")  # accents move
    assert not ok("Use port 25.", "Χρησιμοποίησε την πόρτα 25.")


def test_english_left_in_a_translation_is_found():
    allowed = {"Alice", "Thunderbird"}
    assert checks.english_left("Η Alice ανοίγει το Thunderbird και στέλνει `EHLO x`.", allowed) == []
    assert checks.english_left("Ο διακομιστής απαντά 250 OK με SIZE.", allowed) == []
    assert "is" in checks.english_left("Ο διακομιστής is ready.", allowed)
    assert "Send now" in checks.english_left("Πάτησε Send now για αποστολή.", allowed)


def test_glossary_terms_are_found_across_line_breaks_and_beside_names_in_capitals():
    terms = checks.load_glossary(LOCALE / "glossary.tsv")
    ok = lambda en, el: not checks.glossary_problems(en, el, terms)  # noqa: E731
    # a translator's line break inside a term: neither a missed term nor a false alarm
    assert ok("The SMTP\nenvelope holds the\naddresses.",
              "Ο ταχυδρομικός\nφάκελος του SMTP έχει τις διευθύνσεις.")
    assert not ok("The SMTP envelope holds the addresses.",
                  "Ο ταχυδρομικός φάκελος του SMTP έχει τις διευθύνσεις· ο\nφάκελος τις ξέρει.")
    assert not ok("Ask the incoming-mail\nserver.", "Ρώτα τον διακομιστή.")
    assert ok("Ask the incoming-mail\nserver.",
              "Ρώτα τον διακομιστή εισερχόμενης\nαλληλογραφίας.")
    # a term with a name in capitals, and no term inside a command
    assert ok("Look up the MX record.", "Ψάξε την εγγραφή MX.")
    assert not ok("Look up the MX record.", "Ψάξε το αρχείο MX.")
    assert ok("Send AUTHENTICATE PLAIN.", "Στείλε AUTHENTICATE PLAIN.")
    # the log is not the transcript; logging in is no log
    assert ok("The lab's log shows it.", "Το ημερολόγιο του εργαστηρίου το δείχνει.")
    assert not ok("The lab's log shows it.", "Η καταγραφή του εργαστηρίου το δείχνει.")
    assert ok("Log in first.", "Συνδέσου πρώτα.")
    # a quoted value is data: "lab" the learner types needs no εργαστήριο
    assert ok('Type "system" or "lab".', 'Γράψε "system" ή "lab".')
    assert not ok("Clear text: readable.", "Απλό κείμενο: διαβάζεται.")
    assert ok("Clear text: readable.", "Χωρίς κρυπτογράφηση: διαβάζεται.")


def test_header_names_and_quoted_values_are_no_english_prose_but_sentences_still_are():
    allowed = {"Alice"}
    assert checks.english_left("Γράψε τα To: και From: όπως και το Subject:.", allowed) == []
    # the values a learner types, quoted in the English too: data, not prose
    english = 'How many will it find: "one" or "all"? Type "no" if none.'
    assert checks.english_left('Πόσα θα βρει: "one" (ένα) ή «all» (όλα); Γράψε "no" αν κανένα.',
                               allowed, english) == []
    # ... but only those: an English word the English did not quote, a quoted sentence, and a
    # sentence left in English are still found
    assert "no" in checks.english_left('Γράψε "no" εδώ.', allowed, "Write no here.")
    assert "the server says no" in checks.english_left(
        'Θα δεις «the server says no».', allowed, 'You see "the server says no".')
    left = checks.english_left('Γράψε "one" ή "all". This sentence was left in English.',
                               allowed, english)
    assert "This sentence was left in English" in left and "one" not in left


def test_a_string_two_cells_compare_has_one_translation():
    from maillab.i18n.notebooks import KIND_NOTES
    from maillab.i18n.state import disagreement_problems

    def catalog(*renderings):
        po = polib.POFile()
        for n, text in enumerate(renderings):
            po.append(polib.POEntry(msgctxt=f"course/x.ipynb#x-0{n}", msgid="user name",
                                    msgstr=text, comment=KIND_NOTES["string"]))
        return po

    # the prediction's key (cell x-00) and its check's key (x-01) must stay equal in Greek
    assert disagreement_problems(Path("x.po"), catalog("όνομα χρήστη", "όνομα χρήστη")) == []
    assert disagreement_problems(Path("x.po"), catalog("όνομα χρήστη", "όνομα του χρήστη"))


def test_a_pages_words_exclude_code_and_what_the_user_typed():
    html = ('<html lang="el"><head><title>Εισερχόμενα</title><style>p {color: red}</style></head>'
            '<body><p title="Σύνδεση ως">alice@example.com</p><pre>250 OK queued</pre>'
            '<code>EHLO x</code><textarea>what I typed</textarea>'
            '<button aria-label="Delete for good">X</button><p>Log In &amp; more</p></body></html>')
    texts = checks.page_texts(html)
    assert texts == ["Εισερχόμενα", "Σύνδεση ως", "alice@example.com", "Delete for good", "X",
                     "Log In & more"]
    english = checks.english_in_texts(texts, set())
    assert "Delete for good" in english and "Log In" in english
    assert not [text for text in english if "queued" in text or "typed" in text]


def test_unmarked_tables_are_found():
    source = ('from .i18n import N_\nHINTS = {"503": "say hello first, then send",\n'
              '         "504": N_("this one is marked, fine")}\nCODES = ("250 OK here now",)\n')
    found = checks.unmarked_table_strings(source)
    assert found == [(2, "HINTS", "say hello first, then send")]


# ------------------------------------------------------------------ the whole pipeline
def _demo_repo(root: Path) -> Edition:
    (root / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    package = root / "src" / "maillab"
    (package / "locale" / "el").mkdir(parents=True)
    header = next(line for line in (LOCALE / "glossary.tsv").read_text().splitlines()
                  if line.startswith("concept"))
    (package / "locale" / "el" / "glossary.tsv").write_text(header + "\n")  # stand-ins: no terms
    (package / "locale" / "el" / "edition.toml").write_text('published = [\n]\nlatin = ["Alice"]\n')
    (package / "demo.py").write_text('from .i18n import N_, _\nTABLE = {"x": N_("Mail lab running")}\n'
                                     'print(_("at most {0} per message").format(3))\n')
    (root / "course").mkdir()
    nbformat.write(_demo_notebook(), str(root / "course" / "01-demo.ipynb"))
    master = nbformat.read(str(ROOT / "solutions" / "smtp" / "smtp.ipynb"), 4)
    (root / "solutions" / "smtp").mkdir(parents=True)
    nbformat.write(master, str(root / "solutions" / "smtp" / "smtp.ipynb"))
    return Edition(root, "el")


_KEPT = re.compile(r"(```.*?```|`[^`]*`|\{[^{}]*\}|^#+ (?:BEGIN|END)[^\n]*$|\b[A-Z][A-Z0-9]+\b"
                   r"|\S+@\S+|\b[\w-]+(?:\.[\w-]+)+\b)", re.M | re.S)
_LETTERS = str.maketrans("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                         "αβψδεφγηιξκλμνοπ;ρστθωςχυζΑΒΨΔΕΦΓΗΙΞΚΛΜΝΟΠ;ΡΣΤΘΩΣΧΥΖ")


def _stand_in(text: str) -> str:
    """A stand-in translation: Greek letters for Latin ones, what must be kept kept."""
    parts = _KEPT.split(text)
    return "".join(part if i % 2 else part.translate(_LETTERS) for i, part in enumerate(parts))


def _fill(path: Path, skip=()):
    po = polib.pofile(str(path))
    for e in po:
        if e.msgid not in skip:
            e.msgstr = _stand_in(e.msgid)
    po.save(str(path))


def test_update_build_check_on_a_small_repository(tmp_path, capsys):
    ed = _demo_repo(tmp_path)
    root = ["--root", str(tmp_path)]
    assert i18n_main(["update", *root]) == 0
    lab_po, course_po = ed.root / "solutions/.i18n/el/smtp.po", ed.root / "course/.i18n/el/01-demo.po"
    assert {e.msgid for e in polib.pofile(str(ed.package_catalog))} == \
        {"Mail lab running", "at most {0} per message"}
    assert all(not e.msgstr for e in polib.pofile(str(lab_po)))
    contexts = {e.msgctxt for e in polib.pofile(str(lab_po))}
    assert "solutions/smtp/smtp.ipynb#smtp-00" in contexts

    _fill(ed.package_catalog)
    _fill(lab_po)
    _fill(course_po, skip={"start the lab"})
    assert i18n_main(["build", *root]) == 0  # nothing published yet: unfinished is no failure
    greek_lab = ed.root / "solutions" / "smtp-el" / "smtp-el.ipynb"
    assert greek_lab.exists() and not (ed.root / "course" / "el" / "01-demo.ipynb").exists()
    assert ed.package_mo.exists()
    english = nbformat.read(str(ed.root / "solutions/smtp/smtp.ipynb"), 4)
    greek = nbformat.read(str(greek_lab), 4)
    assert [c.id for c in greek.cells] == [c.id for c in english.cells]
    assert [c.metadata for c in greek.cells] == [c.metadata for c in english.cells]
    assert any('maillab.start(lang="el", ports="any"' in c.source for c in greek.cells)
    assert edition_problems(ed) == []

    draft = tmp_path / "draft"
    assert i18n_main(["build", "--draft", str(draft), *root]) == 0
    assert (draft / "course" / "el" / "01-demo.ipynb").exists()

    # publishing the unfinished course notebook makes build and check fail
    config = ed.config.read_text().replace("published = [\n]",
                                           'published = [\n    "course/01-demo.ipynb",\n]')
    ed.config.write_text(config)
    assert i18n_main(["build", *root]) == 1
    assert any("untranslated" in p for p in edition_problems(ed))
    _fill(course_po)
    assert i18n_main(["build", *root]) == 0 and edition_problems(ed) == []

    # the English changes: the catalog is out of step, then fuzzy after update
    nb = nbformat.read(str(ed.root / "course/01-demo.ipynb"), 4)
    nb.cells[4].source = nb.cells[4].source.replace("An answer.", "A better answer.")
    nbformat.write(nb, str(ed.root / "course/01-demo.ipynb"))
    assert any("catalog lacks" in p for p in edition_problems(ed))
    assert i18n_main(["update", *root]) == 0
    changed = [e for e in polib.pofile(str(course_po)) if "fuzzy" in e.flags]
    assert len(changed) == 1 and "An answer." in changed[0].previous_msgid
    assert any("fuzzy" in p for p in edition_problems(ed))

    # a translation edited by hand (or left behind) is out of date
    changed[0].flags.remove("fuzzy")
    po = polib.pofile(str(course_po))
    for e in po:
        e.flags = [f for f in e.flags if f != "fuzzy"]
    po.save(str(course_po))
    assert i18n_main(["build", *root]) == 0 and edition_problems(ed) == []
    greek_course = ed.root / "course" / "el" / "01-demo.ipynb"
    edited = nbformat.read(str(greek_course), 4)
    edited.cells[0].source += " (edited by hand)"
    nbformat.write(edited, str(greek_course))
    assert any("out of date" in p for p in edition_problems(ed))

    # a translation that lost a field is reported
    po = polib.pofile(str(ed.package_catalog))
    for e in po:
        if "{0}" in e.msgid:
            e.msgstr = "χωρίς πεδίο"
    po.save(str(ed.package_catalog))
    assert any("fields" in p for p in edition_problems(ed))
    capsys.readouterr()


def test_a_greek_lab_is_an_nbgrader_assignment_of_its_own(tmp_path):
    from labcourse import nbgrader_env

    ed = _demo_repo(tmp_path)
    assert i18n_main(["update", "--root", str(tmp_path)]) == 0
    _fill(ed.root / "solutions/.i18n/el/smtp.po")
    assert i18n_main(["build", "--root", str(tmp_path)]) in (0, 1)
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path / "nbgrader_config.py")
    result = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "smtp-el",
                             "--force"], cwd=tmp_path, env=nbgrader_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    student = json.loads((tmp_path / "labs" / "smtp-el" / "smtp-el.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in student["cells"])
    assert "BEGIN HIDDEN TESTS" not in text and "raise NotImplementedError()" in text
    assert 'maillab.start(lang="el"' in text
