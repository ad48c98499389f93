"""What of a notebook is translated, and the translated notebook made from it.

Translated, one catalog entry each (message context ``<notebook path>#<cell id>``):

* a **markdown cell**: the whole cell is one entry (a cell is short and holds one idea, so the
  translator sees the whole thought, may reorder sentences, and the reviewer compares cell by
  cell);
* in a **code cell**, only what is written for the learner:
  comments (``# ...``, but not nbgrader's ``### BEGIN SOLUTION``-style markers or pragmas such
  as ``# noqa``), docstrings, the string given to ``_()`` (``_("Which protocol ...?")``), and the
  message of an ``assert`` when it is a plain string. Every other string in code is data
  (protocol text, addresses, dictionary keys that other cells compare) and stays as it is: to
  have one translated, write it as ``_("...")``. Cells that start with a cell magic
  (``%%smtp``: protocol text) are left alone.

Everything else is copied: cell ids, metadata (nbgrader's too), code, outputs (there are none
in committed notebooks). The translated notebook also starts the lab in its language:
``maillab.start(`` becomes ``maillab.start(lang="el", ``. Relative links and images in markdown
are written as in the English notebook (relative to its folder) and rewritten for the folder of
the translated one: a link to another notebook of the edition goes to its translation.
"""

from __future__ import annotations

import ast
import copy
import inspect
import io
import os
import re
import tokenize
from dataclasses import dataclass

# Comments that are machinery, not prose: nbgrader's markers and tool pragmas.
_MACHINE_COMMENT = re.compile(
    r"^#+\s*(BEGIN|END)\s+(SOLUTION|HIDDEN TESTS)\b|^#\s*YOUR (CODE|ANSWER) HERE"
    r"|^#\s*(noqa|type:|pragma|fmt:|pylint:|nbqa|isort:)|^#!", re.I)
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class Piece:
    """One translatable text of a cell."""

    cell_id: str
    kind: str  # "markdown", "comment", "docstring", "string" (an argument of _()), "assert"
    text: str  # the English, as the translator sees it


KIND_NOTES = {
    "markdown": "markdown cell: translate the prose; keep `code`, links' targets, HTML and the "
                "### BEGIN/END markers as they are",
    "comment": "a comment in a code cell",
    "docstring": "a docstring in a code cell",
    "string": "a string the code shows to the learner (the argument of _())",
    "assert": "the message of an assert (shown when a check fails)",
}


# ------------------------------------------------------------------ code cells
@dataclass
class _Span:
    start: tuple[int, int]  # (line index from 0, column in characters)
    end: tuple[int, int]
    kind: str
    text: str
    original: str  # the source text of the span


def _is_python(source: str) -> bool:
    return not source.lstrip().startswith("%%")


def _masked(source: str) -> str:
    """The cell with IPython's line magics and shell lines blanked (same length, so positions
    stay), so that Python's own tokenizer and parser can read the rest."""
    return "\n".join(" " * len(line) if line.lstrip()[:1] in ("%", "!") else line
                     for line in source.split("\n"))


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))


def _code_spans(source: str) -> list[_Span]:
    """The translatable spans of a code cell, in order."""
    if not _is_python(source):
        return []
    masked = _masked(source)
    lines = source.split("\n")
    spans: list[_Span] = []

    def add(node: ast.expr, kind: str) -> None:
        start = (node.lineno - 1, _char_col(lines[node.lineno - 1], node.col_offset))
        end = (node.end_lineno - 1, _char_col(lines[node.end_lineno - 1], node.end_col_offset))
        text = inspect.cleandoc(node.value) if kind == "docstring" else node.value
        if _LETTER.search(text):
            spans.append(_Span(start, end, kind, text, _slice(lines, start, end)))

    try:
        tree = ast.parse(masked)
    except SyntaxError:
        tree = None
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                body = node.body
                if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                        and isinstance(body[0].value.value, str)):
                    add(body[0].value, "docstring")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == "_" and node.args and _is_str(node.args[0])):
                add(node.args[0], "string")
            elif isinstance(node, ast.Assert) and node.msg is not None and _is_str(node.msg):
                add(node.msg, "assert")
    try:
        for tok in tokenize.generate_tokens(io.StringIO(masked).readline):
            if tok.type == tokenize.COMMENT and not _MACHINE_COMMENT.match(tok.string):
                text = re.sub(r"^#+\s?", "", tok.string).rstrip()
                if _LETTER.search(text):
                    start = (tok.start[0] - 1, tok.start[1])
                    end = (tok.end[0] - 1, tok.end[1])
                    spans.append(_Span(start, end, "comment", text, tok.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    spans.sort(key=lambda s: s.start)
    return spans


def _is_str(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _slice(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    if start[0] == end[0]:
        return lines[start[0]][start[1]:end[1]]
    return "\n".join([lines[start[0]][start[1]:], *lines[start[0] + 1:end[0]],
                      lines[end[0]][:end[1]]])


def _literal(text: str, original: str, indent: str) -> str:
    """A Python string literal holding ``text``, quoted the way ``original`` was."""
    body = original.lstrip("rRuUbBfF")
    quote = body[:3] if body[:3] in ('"""', "'''") else (body[:1] or '"')
    escaped = text.replace("\\", "\\\\")
    if len(quote) == 3:
        escaped = escaped.replace(quote, "\\" + quote[0] * 3)
        escaped = escaped.replace("\n", "\n" + indent) if indent else escaped
        if escaped.endswith(quote[0]):
            escaped = escaped[:-1] + "\\" + quote[0]
    else:
        escaped = escaped.replace(quote, "\\" + quote).replace("\n", "\\n").replace("\r", "\\r")
    return quote + escaped + quote


def _replacement(span: _Span, translated: str, lines: list[str]) -> str:
    if span.kind == "comment":
        prefix = re.match(r"^#+\s?", span.original).group(0)
        return prefix + translated.replace("\n", " ")
    indent = " " * span.start[1] if span.kind == "docstring" else ""
    if span.kind == "docstring" and "\n" in span.text:
        # cleandoc took the indentation away: the lines after the first get it back
        first = lines[span.start[0]]
        indent = first[:len(first) - len(first.lstrip())]
    return _literal(translated, span.original, indent)


_START_CALL = re.compile(r"\bmaillab\.start\(")


def _start_in(source: str, lang: str) -> str:
    """``maillab.start(`` calls made to start the lab in ``lang`` (outside strings/comments)."""
    if "maillab.start(" not in source or not _is_python(source):
        return source
    lines = source.split("\n")
    hits = []
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(_masked(source)).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source
    for a, b, c, d in zip(toks, toks[1:], toks[2:], toks[3:]):
        if (a.string, b.string, c.string, d.string) == ("maillab", ".", "start", "(") \
                and a.type == tokenize.NAME:
            hits.append((d.end[0] - 1, d.end[1]))
    for row, col in reversed(hits):
        line = lines[row]
        rest = line[col:]
        sep = "" if rest.lstrip().startswith(")") else ", "
        lines[row] = line[:col] + f'lang="{lang}"' + sep + rest
    return "\n".join(lines)


# ------------------------------------------------------------------ markdown links
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))|(<img\s[^>]*?src=\")([^\"]+)(\")")


def _relink(markdown: str, source_dir: str, target_dir: str, renamed: dict[str, str]) -> str:
    """Relative link targets, written relative to ``source_dir``, made relative to
    ``target_dir``; a target in ``renamed`` (English notebook -> its translation) is replaced."""
    if source_dir == target_dir and not renamed:
        return markdown

    def fix(target: str) -> str:
        if re.match(r"^([a-z][a-z0-9+.-]*:|#|/)", target, re.I):
            return target  # an URL, an anchor or an absolute path
        path, hashpart = (target.split("#", 1) + [""])[:2]
        full = os.path.normpath(os.path.join(source_dir, path))
        full = renamed.get(full, full)
        new = os.path.relpath(full, target_dir).replace(os.sep, "/")
        return new + ("#" + hashpart if hashpart else "")

    def sub(m: re.Match) -> str:
        if m.group(1) is not None:
            return m.group(1) + fix(m.group(2)) + m.group(3)
        return m.group(4) + fix(m.group(5)) + m.group(6)

    return _LINK.sub(sub, markdown)


# ------------------------------------------------------------------ the whole notebook
def pieces(nb) -> list[Piece]:
    """Every translatable text of a notebook, in order."""
    found = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            if _LETTER.search(cell.source):
                found.append(Piece(cell.id, "markdown", cell.source))
        elif cell.cell_type == "code":
            found.extend(Piece(cell.id, s.kind, s.text) for s in _code_spans(cell.source))
    return found


def translate(nb, lookup, *, lang: str, source_dir: str, target_dir: str,
              renamed: dict[str, str] | None = None):
    """A translated copy of ``nb``. ``lookup(piece)`` gives a piece's translation, or None
    (then the English stays: only drafts are built from incomplete catalogs)."""
    out = copy.deepcopy(nb)
    renamed = renamed or {}
    for cell in out.cells:
        if cell.cell_type == "markdown" and _LETTER.search(cell.source):
            text = lookup(Piece(cell.id, "markdown", cell.source)) or cell.source
            cell.source = _relink(text, source_dir, target_dir, renamed)
        elif cell.cell_type == "code":
            lines = cell.source.split("\n")
            for span in reversed(_code_spans(cell.source)):
                translated = lookup(Piece(cell.id, span.kind, span.text))
                if translated is None:
                    continue
                new = _replacement(span, translated, lines)
                (r0, c0), (r1, c1) = span.start, span.end
                head, tail = lines[r0][:c0], lines[r1][c1:]
                lines[r0:r1 + 1] = (head + new + tail).split("\n")
            cell.source = _start_in("\n".join(lines), lang)
    return out
