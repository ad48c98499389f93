"""What a translation must keep, the glossary, English left in a translation, unmarked strings.

Each check returns a list of problems in words (empty: fine); ``python -m maillab.i18n check``
and tests/test_i18n*.py run them.
"""

from __future__ import annotations

import ast
import csv
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

_FORMATTER = string.Formatter()
_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_MARKER = re.compile(r"^#+\s*(BEGIN|END)\s+(SOLUTION|HIDDEN TESTS)\b.*$", re.M)


# ------------------------------------------------------------------ what must be kept
def format_fields(text: str) -> Counter | None:
    """The ``{...}`` fields of a str.format template (None: the text is no valid template)."""
    try:
        return Counter((name, spec, conv) for _lit, name, spec, conv in _FORMATTER.parse(text)
                       if name is not None)
    except ValueError:
        return None


def field_problems(msgid: str, msgstr: str) -> list[str]:
    """A translation keeps exactly the ``{...}`` fields of its English (``.format`` fills them)."""
    want = format_fields(msgid)
    if not msgstr or want is None or not want:
        return []
    have = format_fields(msgstr)
    if have is None:
        return ["the translation is no valid format template (a lone { or })"]
    if have != want:
        fields = lambda c: sorted("{" + n + (":" + s if s else "") + "}" for n, s, _c in c.elements())  # noqa: E731
        return [f"fields {fields(want)} became {fields(have)}"]
    return []


def code_spans(markdown: str) -> Counter:
    """Inline code (`...`) outside fenced blocks."""
    return Counter(m.group(2).strip() for m in _CODE_SPAN.finditer(_FENCE.sub("", markdown)))


def markup_problems(msgid: str, msgstr: str) -> list[str]:
    """A translated markdown cell keeps its inline code, its fenced blocks and nbgrader's
    markers (a code span is a command or a name: it is the same in every language)."""
    if not msgstr:
        return []
    problems = []
    lost = code_spans(msgid) - code_spans(msgstr)
    added = code_spans(msgstr) - code_spans(msgid)
    if lost or added:
        problems.append(f"inline code changed: lost {sorted(lost)}, added {sorted(added)}")
    if len(_FENCE.findall(msgid)) != len(_FENCE.findall(msgstr)):
        problems.append("the number of fenced code blocks changed")
    if _MARKER.findall(msgid) != _MARKER.findall(msgstr):
        problems.append("nbgrader's ### BEGIN/END markers changed")
    return problems


# ------------------------------------------------------------------ the glossary
@dataclass(frozen=True)
class Term:
    concept: str
    english: re.Pattern  # found in the English
    greek: re.Pattern  # then the translation must have it
    wrong: re.Pattern | None  # and must not have this (another concept's word, a synonym)
    unless: re.Pattern | None  # the rule is off when the English also has this
    note: str


def plain(text: str) -> str:
    """Lower case without accents: Greek moves its accent as a word inflects (μήνυμα,
    μηνύματα, μηνυμάτων), so the glossary's Greek is matched on plain letters."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace("ς", "σ")


def load_glossary(path: Path) -> list[Term]:
    terms = []
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t")
        for row in rows:
            english = lambda text: re.compile(text, re.I) if text else None  # noqa: E731
            greek = lambda text: re.compile(plain(text)) if text else None  # noqa: E731
            terms.append(Term(row["concept"], english(row["english"]), greek(row["greek"]),
                              greek(row["wrong"]), english(row["unless"]), row["note"]))
    return terms


def prose_of(text: str, *, commands: bool = False) -> str:
    """The words of a text that are prose: code, URLs, addresses, fields, header names and
    (unless ``commands``) words in capitals (commands, protocol and item names) taken out."""
    text = _FENCE.sub(" ", text)
    text = _CODE_SPAN.sub(" ", text)
    text = re.sub(r"\]\([^)]*\)", "] ", text)  # link targets
    text = re.sub(r"<[^>]+>", " ", text)  # HTML tags
    text = re.sub(r"\b[a-z][a-z0-9+.-]*://\S+", " ", text)  # URLs
    text = re.sub(r"\S+@\S+", " ", text)  # addresses
    text = re.sub(r"\b[\w-]+(\.[\w-]+)+\b", " ", text)  # host names, file names, lab.attributes
    text = re.sub(r"\{[^{}]*\}", " ", text)  # format fields
    text = re.sub(r"(?<![\w-])--?[a-z][\w-]*", " ", text)  # command-line options (--port)
    text = re.sub(r"\b[a-z]\d+ [A-Z]{2,}\b[^.,;:()\u00b7]*", " ", text)  # IMAP: a1 LOGIN alice password
    text = re.sub(r"\b[1-5]\d\d( [A-Z][\w-]*)+", " ", text)  # a status and its reason: 503 Service Unavailable
    text = re.sub(r"\b[A-Z][a-z]+(-[A-Z][a-z]+)*:", " ", text)  # header names: To:, Retry-After:
    if not commands:
        text = re.sub(r"\b[A-Z][A-Z0-9]+\b", " ", text)  # commands, protocol and item names
    return text


def _one_line(text: str) -> str:
    """Runs of white space as one space: a term may be broken over two lines."""
    return " ".join(text.split())


def glossary_problems(msgid: str, msgstr: str, terms: list[Term]) -> list[str]:
    if not msgstr:
        return []
    # Names in capitals stay (MX record, εγγραφή MX) but a term is not found in a command
    # (AUTHENTICATE, HEADER); quoted values ("lab") are data; white space is one space, so that
    # a term broken over two lines is found and a look-behind such as (?<!ταχυδρομικός ) holds.
    english = _one_line(_without_quoted_values(prose_of(msgid, commands=True),
                                               quoted_values(msgid)))
    greek = plain(_one_line(prose_of(msgstr, commands=True)))
    says = lambda pattern: any(not m.group(0).isupper() for m in pattern.finditer(english))  # noqa: E731
    problems = []
    for t in terms:
        if not says(t.english) or (t.unless and says(t.unless)):
            continue
        if not t.greek.search(greek):
            problems.append(f"{t.concept}: the English says it, the translation lacks "
                            f"/{t.greek.pattern}/ ({t.note})")
        elif t.wrong and t.wrong.search(greek):
            problems.append(f"{t.concept}: /{t.wrong.pattern}/ is not the glossary's word here "
                            f"({t.note})")
    return problems


# ------------------------------------------------------------------ English left in a translation
# Words that only English prose has: one of them in a translated text means a sentence was
# left in English.
ENGLISH_WORDS = frozenset("""
a about after again all also an and any are as at be because been before but by can cannot could
do does done each else every first for from get gets go goes has have here how if in into is it
its just last let may more most must my never new next no not now of off on once one only or other
our out over run same see send shows so some still such than that the their them then there these
they this those to too try two type under until up use used uses very was wait want was way we
were what when where which while who why will with without would you your
""".split())
_LATIN_WORD = re.compile(r"(?<![\w'-])[A-Za-z][A-Za-z'-]*[A-Za-z]|(?<![\w'-])[A-Za-z](?![\w'-])")


def latin_words(text: str) -> list[str]:
    return _LATIN_WORD.findall(prose_of(text))


# A value in quotes ("yes", «one», 'all'): what the learner types or a program prints.
_QUOTED = re.compile(r'"([^"\n]{1,40})"|\u00ab([^\u00bb\n]{1,40})\u00bb|\u201c([^\u201d\n]{1,40})\u201d'
                     r"|(?<!\w)'([^'\s][^'\n]{0,38})'(?!\w)")
QUOTED_WORDS = 3  # a quoted value longer than this is a sentence, checked as prose


def _value(m: re.Match) -> str:
    return " ".join(next(g for g in m.groups() if g is not None).lower().split())


def quoted_values(text: str) -> set[str]:
    """The short quoted values of a text and its code spans without their quotes, lower case;
    also as they read once code, addresses and host names are taken out (see prose_of)."""
    found = {_value(m) for t in (text, prose_of(text)) for m in _QUOTED.finditer(t)}
    found |= {" ".join(span.strip("\"'").lower().split()) for span in code_spans(text)}
    return {value for value in found if len(value.split()) <= QUOTED_WORDS}


def _without_quoted_values(text: str, values: set[str]) -> str:
    """``text`` without the quoted values that the English had quoted (or as code) too: in
    `Γράψε "yes" ή "no"` the "no" is what the learner types, not an English sentence."""
    def sub(m: re.Match) -> str:
        return " " if _value(m) in values else m.group(0)

    return _QUOTED.sub(sub, text) if values else text


def english_left(msgstr: str, allowed: set[str], msgid: str = "") -> list[str]:
    """English words in a translated text: an English function word, or two Latin-script
    words in a row that are neither commands (upper case), nor allowed names and terms, nor
    names the English itself had as code, nor short values the English had in quotes too."""
    code = set(" ".join(code_spans(msgid)).split()) if msgid else set()
    allowed_lower = {w.lower() for w in allowed}
    found = set()
    prose = _without_quoted_values(prose_of(msgstr), quoted_values(msgid) if msgid else set())
    for sentence in re.split(r"[.;:!?\u00b7\u0387\u037e()\n\u00ab\u00bb\"]", prose):
        run: list[str] = []
        for word in sentence.split():
            latin = _LATIN_WORD.fullmatch(word.strip(",*_'"))
            w = latin.group(0) if latin else None
            if w is None or w.isupper() or w.lower() in allowed_lower or w in code:
                run = []
                continue
            if w.lower() in ENGLISH_WORDS:
                found.add(w)
            run.append(w)
            if len(run) >= 2:
                found.add(" ".join(run))
    return sorted(found)


def english_in_texts(texts, allowed: set[str]) -> list[str]:
    """English left in texts shown to a learner (a page's or a widget's), each text apart."""
    return sorted({found for text in texts for found in english_left(text, allowed)})


# ------------------------------------------------------------------ a web page's words
class _PageTexts(HTMLParser):
    # Not prose: code and protocol text (pre, code), what the user typed (textarea), machinery.
    SKIP = {"script", "style", "pre", "code", "textarea", "svg"}
    HUMAN_ATTRIBUTES = ("title", "aria-label", "placeholder", "alt")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        if not self.skipping:
            self.texts += [value for name, value in attrs
                           if name in self.HUMAN_ATTRIBUTES and value and value.strip()]

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data):
        if not self.skipping and data.strip():
            self.texts.append(" ".join(data.split()))


def page_texts(html: str) -> list[str]:
    """What a reader of a web page sees or hears: the text between tags and the attributes
    written for people (title, aria-label, placeholder, alt); not scripts, styles, code or
    protocol text (pre, code) nor what the user typed (textarea)."""
    parser = _PageTexts()
    parser.feed(html)
    parser.close()
    return parser.texts


# ------------------------------------------------------------------ unmarked strings in the package
_PROTOCOL = re.compile(r"^\s*(\d{3}[ -]|[+-](OK|ERR)\b|\* |HTTP/|[\w.]+ (OK|NO|BAD) )")
_PROSE = re.compile(r"[a-z]{2,}[,:;]?\s+[a-z]{2,}[,:;]?\s+[a-z]{2,}", re.I)


def looks_like_prose(text: str) -> bool:
    """Three words or more, not protocol text (a reply code, +OK, a command in capitals)."""
    return bool(_PROSE.search(text)) and not _PROTOCOL.match(text) and "\n" not in text.strip()


_MARKERS = {"_", "N_", "ngettext"}


def unmarked_table_strings(source: str) -> list[tuple[int, str, str]]:
    """Prose in tables (dicts, lists, tuples assigned at module or class level) that is not
    marked with ``_()``/``N_()``: (line, table name, text). Dictionary keys are lookups, not
    shown text, and are left out."""
    tree = ast.parse(source)
    found = []

    def visit_value(node, table: str):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in _MARKERS:
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if looks_like_prose(node.value):
                found.append((node.lineno, table, node.value))
        elif isinstance(node, ast.Dict):
            for v in node.values:
                visit_value(v, table)
        elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            for v in node.elts:
                visit_value(v, table)

    def visit_body(body):
        for stmt in body:
            if isinstance(stmt, ast.ClassDef):
                visit_body(stmt.body)
            targets = stmt.targets if isinstance(stmt, ast.Assign) else \
                [stmt.target] if isinstance(stmt, ast.AnnAssign) and stmt.value else []
            if targets and isinstance(stmt.value, (ast.Dict, ast.List, ast.Tuple, ast.Set)):
                name = ast.unparse(targets[0])
                visit_value(stmt.value, name)

    visit_body(tree.body)
    return found


def unmarked_strings(source: str) -> list[tuple[int, str]]:
    """Every prose string of a module that no marker holds (a wider, noisier net than the
    tables: for finding what to mark). Docstrings, logging and protocol text are left out."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            if node.body and isinstance(node.body[0], ast.Expr) and \
                    isinstance(node.body[0].value, ast.Constant):
                skip.add(id(node.body[0].value))
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else ""
            if name in _MARKERS or name in {"debug", "info", "warning", "error", "exception",
                                            "critical", "log", "add", "compile", "getLogger",
                                            "sub", "match", "search", "fullmatch"}:
                for sub in ast.walk(node):
                    skip.add(id(sub))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                looks_like_prose(node.value):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if looks_like_prose(text):
                found.append((node.lineno, "f-string: " + ast.unparse(node)[:100]))
            for v in node.values:
                skip.add(id(v))
    return sorted(set(found))
