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


def prose_of(text: str) -> str:
    """The words of a text that are prose: code, URLs, addresses and fields taken out."""
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
    text = re.sub(r"\b[A-Z][a-z]+(-[A-Z][a-z]+)+:", " ", text)  # header names: Retry-After:
    text = re.sub(r"\b[A-Z][A-Z0-9]+\b", " ", text)  # commands, protocol and item names (FLAGS)
    return text


def glossary_problems(msgid: str, msgstr: str, terms: list[Term]) -> list[str]:
    if not msgstr:
        return []
    english, greek = prose_of(msgid), plain(prose_of(msgstr))
    problems = []
    for t in terms:
        if not t.english.search(english) or (t.unless and t.unless.search(english)):
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


def english_left(msgstr: str, allowed: set[str], msgid: str = "") -> list[str]:
    """English words in a translated text: an English function word, or two Latin-script
    words in a row that are neither commands (upper case), nor allowed names and terms, nor
    names the English itself had as code."""
    code = set(" ".join(code_spans(msgid)).split()) if msgid else set()
    allowed_lower = {w.lower() for w in allowed}
    found = set()
    for sentence in re.split(r"[.;:!?\u00b7\u0387\u037e()\n\u00ab\u00bb\"]", prose_of(msgstr)):
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
