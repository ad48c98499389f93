"""The server's side of a mailbox: folders, the Maildir files, their flags and sizes."""

from __future__ import annotations

import os
import time

import ipywidgets as W

from ..i18n import _
from ._common import Poller, STYLE, esc

__all__ = ["MailboxView"]


class MailboxView(W.VBox):
    """What the mail server keeps on its disk for one user, folder by folder.

    Each message is one file in the folder's ``new/`` (not yet seen by any client) or ``cur/``
    directory; its name carries the UID (``U=``), the size (``W=``) and the flags after ``:2,``
    (S seen, R answered, F flagged, T deleted, D draft). ``live=True`` follows changes as they
    happen (watch the files disappear when a POP3 client deletes them).
    """

    def __init__(self, lab, user: str, folder: str | None = None, *, live: bool = False,
                 interval: float = 0.5):
        self.lab = lab
        self.user = user
        self._signature = None
        self.folder = W.Dropdown(description=_("Folder"), layout=W.Layout(width="auto"))
        self.refresh_button = W.Button(description=_("Refresh"), icon="refresh",
                                       layout=W.Layout(width="auto"))
        self.summary = W.HTML()
        self.table = W.HTML(layout=W.Layout(max_height="360px", overflow="auto"))
        self.refresh_button.on_click(lambda _b: self.refresh(force=True))
        self._filling = False
        self.folder.observe(lambda _c: self._filling or self.refresh(force=True), "value")
        super().__init__([W.HBox([self.folder, self.refresh_button, self.summary],
                                 layout=W.Layout(align_items="center")), self.table])
        self.add_class("maillab-mailbox")
        self._fill_folders(folder or "INBOX")
        self.refresh(force=True)
        self._poller = Poller(lab, self.refresh, interval)
        if live:
            self._poller.start()

    # ---- data
    def account(self):
        store = self.lab.store
        acct = store.account(self.user) or store.find_address(self.user)
        if acct is None:
            raise KeyError(_("no account {0!r}").format(self.user))
        return acct

    def folders(self) -> dict[str, int]:
        """Folder name -> number of messages."""
        acct = self.account()
        return {name: len(acct.folder(name)) for name in acct.folder_names()}

    def rows(self, folder: str | None = None) -> list[dict]:
        """One dict per message file: uid, dir (new/cur), file, flags, size, subject, sender."""
        out = []
        for m in self.lab.mailbox(self.user, folder or self.folder.value or "INBOX"):
            try:
                on_disk = os.path.getsize(m.path)
            except OSError:
                on_disk = None
            out.append({"uid": m.uid, "dir": m.path.parent.name, "file": m.path.name,
                        "flags": " ".join(sorted(m.flags)), "size": m.size, "disk": on_disk,
                        "subject": m.subject, "from": m.sender, "date": m.internaldate})
        return out

    # ---- display
    def _fill_folders(self, wanted: str, counts: dict[str, int] | None = None) -> None:
        if counts is None:
            try:
                counts = self.folders()
            except Exception:
                counts = {}
        options = tuple((f"{name} ({n})", name) for name, n in counts.items())
        if tuple(self.folder.options) == options:
            return
        current = self.folder.value if self.folder.options else wanted
        self._filling = True
        try:
            self.folder.options = options
            if current in counts:
                self.folder.value = current
            elif options:
                self.folder.value = options[0][1]
        finally:
            self._filling = False

    def refresh(self, force: bool = False) -> None:
        if self.lab.store is None or not getattr(self.lab, "running", True):
            self.summary.value = f'<span style="color:#888">{esc(_("the lab is stopped"))}</span>'
            return
        try:
            acct = self.account()
            rows = self.rows()
            counts = self.folders()
        except Exception as e:  # e.g. a folder deleted meanwhile
            self.summary.value = f'<span class="maillab ml-bad">{esc(e)}</span>'
            return
        signature = (self.folder.value, tuple((r["file"], r["size"]) for r in rows),
                     tuple(counts.items()))
        if not force and signature == self._signature:
            return
        self._signature = signature
        self._fill_folders(self.folder.value, counts)
        folder_path = acct.folder(self.folder.value or "INBOX").path
        total = sum(r["size"] for r in rows)
        head = "".join(f"<th>{esc(h)}</th>" for h in (
            "UID", _("directory"), _("file name"), _("flags"), _("size (bytes)"), _("subject"),
            _("from")))
        body = "".join(
            f"<tr><td>{r['uid']}</td><td><code>{esc(r['dir'])}/</code></td>"
            f"<td><code style='font-size:11px'>{esc(_short(r['file']))}</code></td>"
            f"<td>{esc(r['flags']) or '-'}</td><td style='text-align:right'>{r['size']}</td>"
            f"<td>{esc(r['subject'])}</td><td>{esc(r['from'])}</td></tr>" for r in rows)
        if not rows:
            body = f"<tr><td colspan='7'><i>{esc(_('empty: no message files'))}</i></td></tr>"
        self.table.value = (
            '<div class="maillab">' + STYLE +
            f"<p class='ml-note'>{esc(_('On the server:'))} <code>{esc(str(folder_path))}</code> "
            f"\u00b7 {esc(_('updated {0}').format(time.strftime('%H:%M:%S')))}</p>"
            f"<table class='ml-grid'><tr>{head}</tr>{body}</table></div>")
        self.summary.value = (
            f'<span style="font-size:13px">{esc(acct.address)}: '
            f'{esc(_("{0} messages, {1} bytes in this folder").format(len(rows), total))}</span>')

    def stop(self) -> None:
        self._poller.stop()

    def close(self) -> None:
        self.stop()
        super().close()


def _short(name: str, keep: int = 14) -> str:
    """Shorten the unique part of a Maildir file name; keep the U=, W= and flags that teach."""
    base, sep, rest = name.partition(",")
    if len(base) > keep:
        base = base[:keep] + "\u2026"
    return base + sep + rest
