"""Self-checks with instant feedback.

A wrong answer gets a hint and one more try; after a second wrong try the quiz shows the right
answer with its explanation and closes the question, so clicking through the choices until one is
"right" teaches nothing and scores nothing: the score counts answers right at the first try.
"""

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
    ``accept`` more texts counted as right; case and surrounding spaces do not matter).

    ``explain`` says why the answer is right (shown after a right answer, and after the second
    wrong try); ``hint`` is shown after the first wrong try.
    """

    prompt: str
    choices: list[str] = field(default_factory=list)
    answer: int | list[int] | str = 0
    explain: str = ""
    accept: list[str] = field(default_factory=list)
    hint: str = ""

    @property
    def answer_text(self) -> str:
        """The right answer in words."""
        if not self.choices:
            return str(self.answer)
        picked = self.answer if self.multiple else [self.answer]
        return ", ".join(self.choices[k] for k in picked)

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


TRIES = 2  # wrong answers before the quiz shows the right one


class Quiz(W.VBox):
    """A list of :class:`Question` s; each answer is checked the moment it is given."""

    def __init__(self, questions: list[Question], title: str | None = None):
        self.questions = list(questions)
        self.results: list[bool | None] = [None] * len(self.questions)
        self.wrong_tries: list[int] = [0] * len(self.questions)
        self.first_try: list[bool | None] = [None] * len(self.questions)
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
                self._inputs.append(checks + [button])
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
        if self.closed(index):
            return bool(self.results[index])
        right = q.is_right(given)
        if self.first_try[index] is None:
            self.first_try[index] = right
        self.results[index] = right
        if right:
            text = '<span class="ml-ok">\u2714 ' + esc(_("Right!")) + "</span>"
            if q.explain:
                text += " " + esc(q.explain)
        else:
            self.wrong_tries[index] += 1
            text = '<span class="ml-bad">\u2718 ' + esc(_("Not quite.")) + "</span> "
            if self.wrong_tries[index] < TRIES:
                text += esc(q.hint or _("Think again, then try once more."))
            else:
                text += esc(_("The answer is: {0}.").format(q.answer_text))
                if q.explain:
                    text += " " + esc(q.explain)
        if self.closed(index):
            self._close(index)
        self._feedback[index].value = f'<div class="maillab">{STYLE}{text}</div>'
        self._update_score()
        return right

    def closed(self, index: int) -> bool:
        """Answered right, or shown after the last wrong try: no more answers count."""
        return bool(self.results[index]) or self.wrong_tries[index] >= TRIES

    def _close(self, index: int) -> None:
        inputs = self._inputs[index]
        for widget in inputs if isinstance(inputs, list) else [inputs]:
            widget.disabled = True

    def _update_score(self) -> None:
        first = sum(1 for r in self.first_try if r)
        self.score.value = (f'<div class="maillab">{STYLE}<p class="ml-note">' + esc(
            _("{0} of {1} right at the first try").format(first, len(self.questions)))
            + "</p></div>")
