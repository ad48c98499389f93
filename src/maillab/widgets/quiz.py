"""Self-checks with instant feedback."""

from __future__ import annotations

from dataclasses import dataclass, field

import ipywidgets as W

from ..i18n import _
from ._common import STYLE, esc

__all__ = ["Question", "Quiz"]


@dataclass
class Question:
    """A question with choices (``answer`` is the index of the right one, or a list of indices
    when several are right) or, without choices, a short typed answer (``answer`` is the text,
    ``accept`` more texts counted as right; case and surrounding spaces do not matter)."""

    prompt: str
    choices: list[str] = field(default_factory=list)
    answer: int | list[int] | str = 0
    explain: str = ""
    accept: list[str] = field(default_factory=list)

    @property
    def multiple(self) -> bool:
        return isinstance(self.answer, (list, tuple, set))

    def is_right(self, given) -> bool:
        if not self.choices:
            wanted = {str(self.answer).strip().lower()} | {a.strip().lower() for a in self.accept}
            return str(given or "").strip().lower() in wanted
        if self.multiple:
            return set(given or ()) == set(self.answer)
        return given == self.answer


class Quiz(W.VBox):
    """A list of :class:`Question` s; each answer is checked the moment it is given."""

    def __init__(self, questions: list[Question], title: str | None = None):
        self.questions = list(questions)
        self.results: list[bool | None] = [None] * len(self.questions)
        self.score = W.HTML()
        self._feedback: list[W.HTML] = []
        self._inputs: list[W.Widget] = []
        children = []
        if title:
            children.append(W.HTML(f"<h4 style='margin:4px 0'>{esc(title)}</h4>"))
        for i, q in enumerate(self.questions):
            children.append(W.HTML(f'<div class="maillab">{STYLE}<b>{i + 1}.</b> {esc(q.prompt)}'
                                   + (f" <i>({esc(_('choose all that apply'))})</i>"
                                      if q.multiple else "") + "</div>"))
            feedback = W.HTML()
            self._feedback.append(feedback)
            if not q.choices:
                box = W.Text(placeholder=_("your answer, then Enter"), continuous_update=False)
                box.observe(lambda c, i=i: c["new"] and self.answer(i, c["new"]), "value")
                row = W.HBox([box, feedback])
                self._inputs.append(box)
            elif q.multiple:
                checks = [W.Checkbox(description=c, indent=False, value=False) for c in q.choices]
                button = W.Button(description=_("Check"), layout=W.Layout(width="auto"))
                button.on_click(lambda _b, i=i, checks=checks: self.answer(
                    i, [k for k, c in enumerate(checks) if c.value]))
                row = W.VBox(checks + [W.HBox([button, feedback])])
                self._inputs.append(checks)
            else:
                radio = W.RadioButtons(options=[(c, k) for k, c in enumerate(q.choices)],
                                       value=None, layout=W.Layout(width="max-content"))
                radio.observe(lambda c, i=i: c["new"] is not None and self.answer(i, c["new"]),
                              "value")
                row = W.VBox([radio, feedback])
                self._inputs.append(radio)
            children.append(row)
        children.append(self.score)
        super().__init__(children)
        self.add_class("maillab-quiz")
        self._update_score()

    def answer(self, index: int, given) -> bool:
        """Give an answer to question ``index`` (from code, or from the widget); returns if right."""
        q = self.questions[index]
        right = q.is_right(given)
        self.results[index] = right
        if right:
            text = '<span class="ml-ok">\u2714 ' + esc(_("Right!")) + "</span>"
        else:
            text = '<span class="ml-bad">\u2718 ' + esc(_("Not quite, try again.")) + "</span>"
        if q.explain and right:
            text += " " + esc(q.explain)
        self._feedback[index].value = f'<div class="maillab">{STYLE}{text}</div>'
        self._update_score()
        return right

    def _update_score(self) -> None:
        right = sum(1 for r in self.results if r)
        self.score.value = (f'<div class="maillab">{STYLE}<p class="ml-note">' + esc(
            _("{0} of {1} right so far").format(right, len(self.questions))) + "</p></div>")
