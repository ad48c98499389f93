"""Predict, then run: a learner's guess beside what really happened.

A notebook asks for a prediction in a cell of its own (``my_guess = ...``, the learner replaces
the ``...``), runs the experiment, and then shows :func:`reveal` (one value) or
:func:`check_answers` (several). Guessing wrong is fine: the point is to think before looking.
"""

from __future__ import annotations

from ..i18n import _
from ._common import STYLE, esc

__all__ = ["reveal", "check_answers", "Reveal"]

YES = {"yes", "y", "true", "ναι"}
NO = {"no", "n", "false", "όχι", "οχι"}


def _missing(guess) -> bool:
    return guess is ... or guess is None or (isinstance(guess, str) and not guess.strip())


def _normal(value):
    """A value as compared: numbers as numbers, yes/no as booleans, text without case or spaces."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    if text in YES:
        return True
    if text in NO:
        return False
    try:
        return float(text)
    except ValueError:
        return " ".join(text.split())


def same(guess, actual) -> bool:
    """Does the prediction match? (``"3"`` matches 3, ``"yes"`` matches True, case does not matter)."""
    return not _missing(guess) and _normal(guess) == _normal(actual)


def _shown(value) -> str:
    if value is True:
        return _("yes")
    if value is False:
        return _("no")
    return str(value)


class Reveal:
    """The rows of a comparison; shows itself as a small table in a notebook."""

    def __init__(self, rows: list[tuple[str, object, object, str]], facts: bool = False):
        self.rows = rows  # (what, guess, actual, explanation)
        self.facts = facts  # answers looked up (a port, a setting), not predictions

    @property
    def right(self) -> int:
        return sum(1 for _w, guess, actual, _e in self.rows
                   if actual is not None and same(guess, actual))

    def _line(self, what, guess, actual, explanation) -> tuple[str, str]:
        if actual is None:  # the experiment has not run yet (cells run out of order)
            text = _("Nothing to compare with yet: run the cell above first (the session or the "
                     "experiment), then this one.")
            return "\u2022", f"{what}: {text}" if what else text
        if _missing(guess):
            mark, text = "\u2022", _("No answer yet. It is: {0}.").format(_shown(actual))
        elif same(guess, actual):
            right = _("You wrote {0}: right!") if self.facts else _("You predicted {0}: right!")
            mark, text = "\u2714", right.format(_shown(guess))
        else:
            wrong = _("You wrote {0}; it is {1}.") if self.facts else \
                _("You predicted {0}; it is {1}.")
            mark, text = "\u2718", wrong.format(_shown(guess), _shown(actual))
        if what:
            text = f"{what}: {text}"
        if explanation:
            text += " " + explanation
        return mark, text

    def _lines(self) -> list[tuple[str, str]]:
        lines = [self._line(*row) for row in self.rows]
        if any(_missing(guess) for _w, guess, _a, _e in self.rows):
            lines.append(("", _("Replace the ... above with your answer, run that cell, then "
                                "this one.")))
        return lines

    def __repr__(self) -> str:
        return "\n".join(f"{mark} {text}".strip() for mark, text in self._lines())

    def _repr_html_(self) -> str:
        classes = {"\u2714": "ml-ok", "\u2718": "ml-bad", "\u2022": "ml-note", "": "ml-note"}
        items = "".join(f'<div><span class="{classes[mark]}">{mark}</span> {esc(text)}</div>'
                        for mark, text in self._lines())
        return f'<div class="maillab maillab-reveal">{STYLE}{items}</div>'


def reveal(guess, actual, explain: str = "") -> Reveal:
    """Your prediction beside the real value, with an optional explanation. ``actual`` None:
    the experiment has not run yet (the learner ran the cells out of order), and it says so."""
    return Reveal([("", guess, actual, explain)])


def check_answers(answers: dict, expected: dict, explain: dict | None = None, *,
                  facts: bool = False) -> Reveal:
    """Several predictions at once: ``answers`` and ``expected`` map the same names to values.
    ``facts=True``: the answers are facts the learner looked up or knows (the standard ports, a
    mail client's settings), so each line says "You wrote", not "You predicted"."""
    explain = explain or {}
    return Reveal([(name, answers.get(name, ...), value, explain.get(name, ""))
                   for name, value in expected.items()], facts)
