"""The transcript viewer: what clients and servers said, coloured, aligned and explained."""

from __future__ import annotations

import time

import ipywidgets as W

from ..i18n import _
from ..transcript import Transcript
from ._common import Poller, guess_user, render_lines

__all__ = ["TranscriptViewer"]


class TranscriptViewer(W.VBox):
    """Shows a lab's transcript (or a fixed :class:`Transcript`) and keeps it up to date.

    ``TranscriptViewer(lab)`` follows every session of the lab live; ``service="pop3"``,
    ``conn=3`` or ``since=time.time()`` narrow it down, ``last=True`` keeps only the newest
    connection. Server replies are explained: hover over a reply, or click it to open the
    explanation; the "Explain every reply" box opens them all. ``live=False`` refreshes only when
    the Refresh button (or :meth:`refresh`) is used.
    """

    def __init__(self, source, service: str | None = None, conn: int | None = None,
                 since: float | None = None, *, last: bool = False, live: bool = True,
                 interval: float = 0.5, max_lines: int = 400, explain_all: bool = False):
        self.lab = None if isinstance(source, Transcript) else source
        self._fixed = source if isinstance(source, Transcript) else None
        self.service, self.conn, self.since, self.last = service, conn, since, last
        self.max_lines = max_lines
        self._signature = None
        self.html = W.HTML(layout=W.Layout(max_height="420px", overflow="auto",
                                           border="1px solid #ddd"))
        self.explain_box = W.Checkbox(value=explain_all, description=_("Explain every reply"),
                                      indent=False, layout=W.Layout(width="auto"))
        self.refresh_button = W.Button(description=_("Refresh"), icon="refresh",
                                       layout=W.Layout(width="auto"))
        self.clear_button = W.Button(description=_("Show only new lines"),
                                     layout=W.Layout(width="auto"),
                                     tooltip=_("Hide what was said so far; keep showing new lines"))
        self.status = W.HTML()
        self.refresh_button.on_click(lambda _b: self.refresh(force=True))
        self.clear_button.on_click(lambda _b: self.show_new_only())
        self.explain_box.observe(lambda _c: self.refresh(force=True), "value")
        controls = [self.refresh_button, self.explain_box, self.status]
        if self.lab is not None:
            controls.insert(1, self.clear_button)
        super().__init__([W.HBox(controls, layout=W.Layout(align_items="center")), self.html])
        self.add_class("maillab-transcript")
        self._poller = Poller(self.lab, self._tick, interval) if self.lab is not None else None
        self.refresh(force=True)
        if live and self._poller is not None:
            self._poller.start()
            self._update_status(len(self.transcript()))

    # ---- data
    def transcript(self) -> Transcript:
        """The lines this viewer shows right now."""
        if self._fixed is not None:
            t = self._fixed.filter(service=self.service, conn=self.conn, since=self.since)
        else:
            t = self.lab.transcript(self.service, self.conn, self.since)
        return t.last() if self.last else t

    @property
    def live(self) -> bool:
        return self._poller is not None and self._poller.running

    def show_new_only(self) -> None:
        """Forget what was said so far: show only lines recorded from now on."""
        self.since = time.time()
        self.refresh(force=True)

    # ---- display
    def refresh(self, force: bool = False) -> None:
        t = self.transcript()
        signature = (len(t), t.lines[-1] if t.lines else None, self.explain_box.value)
        if not force and signature == self._signature:
            return
        self._signature = signature
        self.html.value = render_lines(t.lines, max_lines=self.max_lines,
                                       explain_all=self.explain_box.value,
                                       users=guess_user(t.lines))
        self._update_status(len(t))

    def _update_status(self, count: int) -> None:
        if self.lab is None:
            state = ""
        elif not self.lab.running:
            state = " \u00b7 " + _("lab stopped")
        elif self.live:
            state = " \u00b7 " + _("live")
        else:
            state = ""
        self.status.value = (f'<span style="color:#666;font-size:12px">'
                             f'{_("{0} lines").format(count)}{state}</span>')

    def _tick(self) -> None:
        self.refresh()
        if not self.lab.running:
            self._update_status(len(self.transcript()))  # "lab stopped"

    def stop(self) -> None:
        """Stop following the lab (the lines shown stay)."""
        if self._poller is not None:
            self._poller.stop()
        if self.lab is not None:
            self._update_status(len(self.transcript()))

    def close(self) -> None:
        self.stop()
        super().close()
