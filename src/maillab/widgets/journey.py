"""One message's journey, hop by hop, reconstructed from what the lab's servers really saw.

The lecture's worked example (S11): you write a message in your mail client and press Send; the
client hands it to your own mail server with SMTP; your server hands it to the recipient's server
with SMTP again; the recipient's client fetches it with POP3 or IMAP. :class:`Journey` finds each
of those hops in a lab's transcript (following the queue ids that every server writes into its
``Received:`` header), and :class:`JourneyView` steps through them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import ipywidgets as W

from ..i18n import N_, _
from ..transcript import Transcript
from ._common import CLIENT, SERVER, STYLE, esc, guess_user, render_lines

__all__ = ["Hop", "Journey", "JourneyView", "received_headers"]

_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")


def received_headers(lines) -> list[str]:
    """Every ``Received:`` header (unfolded onto one line) found in some message text lines."""
    out, current = [], None
    for text in lines:
        if current is not None and text[:1] in (" ", "\t"):
            current += " " + text.strip()
            continue
        if current is not None:
            out.append(current)
            current = None
        if text.lower().startswith("received:"):
            current = text.strip()
        elif text == "":
            pass
    if current is not None:
        out.append(current)
    return out


@dataclass
class Hop:
    """One step of the journey."""

    kind: str  # "submission", "relay", "stored", "retrieval"
    protocol: str  # "SMTP", "POP3", "IMAP" or "Maildir"
    sender: str  # who speaks first / who gives the message
    receiver: str  # who takes the message
    transcript: Transcript = field(default_factory=lambda: Transcript([]))
    received: str | None = None  # the Received: header this hop's server wrote
    detail: str = ""  # e.g. the Maildir file name
    done: bool = True  # False: this hop has not happened yet

    @property
    def title(self) -> str:
        return {
            "submission": _("Submission: the sender's client hands the message to its own server"),
            "relay": _("Relay: one mail server hands the message to another"),
            "stored": _("Delivery: the recipient's server stores the message in a mailbox"),
            "retrieval": _("Retrieval: the recipient's client fetches the message"),
        }[self.kind]


class Journey:
    """The hops of one message, found in ``lab``'s transcript.

    By default the newest message submitted by a logged-in user; ``queue_id`` picks another
    (the id in the server's reply ``250 2.0.0 OK: queued as ...``).
    """

    def __init__(self, lab, queue_id: str | None = None):
        self.lab = lab
        self.hops: list[Hop] = []
        self.recipient: str | None = None
        self.queue_ids: list[str] = []
        self._find(queue_id)

    def __len__(self) -> int:
        return len(self.hops)

    def __iter__(self):
        return iter(self.hops)

    def __getitem__(self, i) -> Hop:
        return self.hops[i]

    @property
    def complete(self) -> bool:
        return bool(self.hops) and all(h.done for h in self.hops)

    # ---- finding the hops
    def _find(self, queue_id: str | None) -> None:
        everything = self.lab.transcript()
        # Mail can be handed over on port 25, on submission (587) or over SMTPS (465).
        smtp = Transcript(l for l in everything.lines
                          if l.service.split(":", 1)[0] in ("smtp", "submission", "smtps"))
        users = guess_user(smtp.lines)
        queued: list[tuple[str, int, float]] = []  # (queue id, conn, time)
        for line in smtp.lines:
            if line.who == SERVER:
                m = _QUEUED.search(line.text)
                if m:
                    queued.append((m.group(1), line.conn, line.time))
        if not queued:
            return
        if queue_id is None:
            submitted = [q for q in queued if q[1] in users]
            first = (submitted or queued)[-1]
        else:
            matches = [q for q in queued if q[0] == queue_id]
            if not matches:
                raise KeyError(_("no message was queued as {0}").format(queue_id))
            first = matches[-1]
        chain = [first]
        while True:
            qid = chain[-1][0]
            nxt = None
            for q in queued:
                if q[1] == chain[-1][1] or q in chain:
                    continue
                if any(l.who == CLIENT and f" id {qid}" in l.text
                       for l in smtp.filter(conn=q[1]).lines):
                    nxt = q
                    break
            if nxt is None:
                break
            chain.append(nxt)
        self.queue_ids = [q[0] for q in chain]

        for i, (qid, conn, when) in enumerate(chain):
            t = smtp.filter(conn=conn)
            server = _host_of(t.lines[0].service) if t.lines else "?"
            helo = _helo(t)
            if i == 0:
                who = users.get(conn)
                sender = _("{0}'s mail client").format(who) if who else (helo or _("a mail client"))
                kind = "submission" if who else "relay"
            else:
                sender = helo or _host_of(smtp.filter(conn=chain[i - 1][1]).lines[0].service)
                kind = "relay"
            self.hops.append(Hop(kind, "SMTP", sender, server, t))

        # Each server's Received: header: read it where the next party saw the message.
        last_conn = chain[-1][1]
        last = smtp.filter(conn=last_conn)
        rcpts = [m.group(1) for l in last.lines if l.who == CLIENT
                 for m in [re.match(r"(?i)rcpt to:\s*<([^>]*)>", l.text)] if m]
        final_domain = last.lines[0].service.split(":", 1)[-1] if last.lines else ""
        rcpts_here = [r for r in rcpts if r.rsplit("@", 1)[-1].lower() == final_domain] or rcpts
        self.recipient = rcpts_here[0] if rcpts_here else None
        for i, hop in enumerate(self.hops[:-1]):
            nxt = self.hops[i + 1].transcript
            hop.received = _pick(received_headers(nxt.client_lines()), self.queue_ids[i])

        # Delivery: the message as stored on the recipient's server.
        acct = self.lab.store.find_address(self.recipient) if (self.recipient and self.lab.store) \
            else None
        login = acct.login if acct else (self.recipient or "?")
        server = self.hops[-1].receiver
        stored = Hop("stored", "Maildir", server,
                     _("{0}'s mailbox").format(login))
        last_id = self.queue_ids[-1]
        found = None
        if acct is not None:
            try:
                for msg in self.lab.mailbox(acct.login):
                    if f" id {last_id}".encode() in msg.raw:
                        found = msg
            except Exception:
                found = None
        if found is not None:
            stored.detail = (f"{found.path.parent.name}/{found.path.name}  \u00b7  "
                             f"{found.size} " + _("bytes") + "  \u00b7  " +
                             _("flags: {0}").format(" ".join(sorted(found.flags)) or "-"))
            text = found.raw.decode("utf-8", "replace").split("\r\n")
            self.hops[-1].received = _pick(received_headers(text), last_id)
        else:
            stored.detail = _("The file is no longer in the mailbox: a POP3 client downloaded "
                              "and deleted it (or it was moved).")
        self.hops.append(stored)

        # Retrieval: the recipient's POP3 or IMAP session that carried the message.
        retrieval = Hop("retrieval", "POP3/IMAP", server, _("{0}'s mail client").format(login),
                        done=False)
        delivered_at = chain[-1][2]
        fetchers = everything.filter(since=delivered_at)
        fetchers = Transcript(l for l in fetchers.lines
                              if l.service.split(":")[0] in ("pop3", "imap", "pop3s", "imaps")
                              and l.service.split(":", 1)[-1] == final_domain)
        fusers = guess_user(fetchers.lines)
        best = None
        for conn in fetchers.connections():
            if acct is not None and fusers.get(conn) not in (acct.login, acct.address):
                continue
            t = fetchers.filter(conn=conn)
            if any(f" id {last_id}" in l.text for l in t.lines if l.who == SERVER):
                best = t
                break
        if best is not None:
            retrieval.transcript = best
            retrieval.protocol = best.lines[0].service.split(":")[0].upper()
            retrieval.done = True
            if self.hops[-2].received is None:
                self.hops[-2].received = _pick(received_headers(best.server_lines()), last_id)
        self.hops.append(retrieval)

    # ---- plain text, for printing and for tests
    def __str__(self) -> str:
        out = []
        for i, hop in enumerate(self.hops, 1):
            state = "" if hop.done else "  (" + _("not yet") + ")"
            out.append(f"{i}. [{hop.protocol}] {hop.sender} -> {hop.receiver}: {hop.title}{state}")
            if hop.received:
                out.append(f"     {hop.received}")
            if hop.detail:
                out.append(f"     {hop.detail}")
        return "\n".join(out) if out else _("No message has been sent yet.")

    def __repr__(self) -> str:
        return f"<Journey {len(self.hops)} hops, queue ids {self.queue_ids}>"


def _pick(headers: list[str], queue_id: str) -> str | None:
    for h in headers:
        if f" id {queue_id}" in h:
            return h
    return None


def _host_of(service: str) -> str:
    return "mail." + service.split(":", 1)[-1] if ":" in service else service


def _helo(t: Transcript) -> str | None:
    for l in t.lines:
        if l.who == CLIENT:
            words = l.text.split()
            if len(words) > 1 and words[0].upper() in ("EHLO", "HELO"):
                return words[1]
    return None


_EXPLAIN = {
    "submission": N_("{sender} connects to {receiver}, logs in with AUTH and hands over the "
                     "message with SMTP. This is what happens when you press Send."),
    "relay": N_("{sender} looks up which server takes mail for the recipient's domain (here in "
                "the lab's routing table, on the Internet in DNS MX records) and hands the "
                "message to {receiver} with SMTP. Now a server is the client."),
    "stored": N_("{sender} writes the message into {receiver} as one file (Maildir). It waits "
                 "there until the recipient's client comes for it."),
    "retrieval": N_("{receiver} logs in to {sender} (user name and password) and fetches the "
                    "message with POP3 or IMAP."),
}


class JourneyView(W.VBox):
    """Step through a :class:`Journey` with Previous / Next; Refresh looks for new hops."""

    def __init__(self, lab, queue_id: str | None = None, *, step: int = 0, max_lines: int = 80):
        self.lab = lab
        self.queue_id = queue_id
        self.max_lines = max_lines
        self.journey = Journey(lab, queue_id)
        self.step = step
        self.picture = W.HTML()
        self.heading = W.HTML()
        self.body = W.HTML(layout=W.Layout(max_height="380px", overflow="auto"))
        self.prev_button = W.Button(description=_("Previous"), icon="arrow-left",
                                    layout=W.Layout(width="auto"))
        self.next_button = W.Button(description=_("Next"), icon="arrow-right",
                                    layout=W.Layout(width="auto"))
        self.refresh_button = W.Button(description=_("Refresh"), icon="refresh",
                                       layout=W.Layout(width="auto"))
        self.prev_button.on_click(lambda _b: self.show(self.step - 1))
        self.next_button.on_click(lambda _b: self.show(self.step + 1))
        self.refresh_button.on_click(lambda _b: self.refresh())
        super().__init__([W.HBox([self.prev_button, self.next_button, self.refresh_button]),
                          self.picture, self.heading, self.body])
        self.add_class("maillab-journey")
        self.show(step)

    def refresh(self) -> None:
        self.journey = Journey(self.lab, self.queue_id)
        self.show(self.step)

    def show(self, step: int) -> None:
        hops = self.journey.hops
        if not hops:
            self.step = 0
            self.picture.value = ""
            self.heading.value = '<div class="maillab">' + STYLE + '<p class="ml-note">' + esc(
                _("No message has been sent yet: send one, then press Refresh.")) + "</p></div>"
            self.body.value = ""
            self.prev_button.disabled = self.next_button.disabled = True
            return
        self.step = max(0, min(step, len(hops) - 1))
        hop = hops[self.step]
        self.prev_button.disabled = self.step == 0
        self.next_button.disabled = self.step == len(hops) - 1
        self.picture.value = self._picture()
        explanation = _(_EXPLAIN[hop.kind]).format(sender=hop.sender, receiver=hop.receiver)
        state = "" if hop.done else (' <span class="ml-bad">' + esc(
            _("(not yet: run the cell that fetches the mail, then press Refresh)")) + "</span>")
        self.heading.value = (
            '<div class="maillab">' + STYLE +
            f"<h4 style='margin:4px 0'>{esc(_('Step {0} of {1}').format(self.step + 1, len(hops)))}"
            f" \u00b7 {esc(hop.title)}{state}</h4>"
            f"<p style='margin:2px 0'>{esc(explanation)}</p></div>")
        parts = []
        if hop.received:
            parts.append("<p style='margin:4px 0'><b>" + esc(
                _("The Received: header {0} wrote into the message:").format(hop.receiver)) +
                f"</b><br><code>{esc(hop.received)}</code></p>")
        if hop.detail:
            parts.append(f"<p style='margin:4px 0'><b>{esc(_('On the server'))}:</b> "
                         f"<code>{esc(hop.detail)}</code></p>")
        if hop.transcript.lines:
            parts.append(render_lines(_collapse(hop.transcript, self.max_lines).lines,
                                      max_lines=self.max_lines,
                                      users=guess_user(hop.transcript.lines)))
        self.body.value = '<div class="maillab">' + STYLE + "".join(parts) + "</div>"

    def _picture(self) -> str:
        hops = self.journey.hops
        first, last = hops[0], hops[-1]
        boxes = [first.sender] + [h.receiver for h in hops if h.protocol == "SMTP"] + [last.receiver]
        arrows = [h for h in hops if h.kind != "stored"]
        on = hops[self.step]
        cells = []
        for i, name in enumerate(boxes):
            lit = (on.kind == "stored" and i == len(boxes) - 2)
            cells.append(f'<div class="ml-box{" ml-on" if lit else ""}">{esc(name)}</div>')
            if i < len(arrows):
                h = arrows[i]
                arrow = "\u2192"  # the way the message goes
                label = h.protocol if h.done else h.protocol + " ?"
                cells.append(f'<div class="ml-arrow{" ml-on" if h is on else ""}">'
                             f"{esc(label)}<br>{arrow}</div>")
        return '<div class="maillab">' + STYLE + '<div class="ml-hops">' + "".join(cells) + \
            "</div></div>"


def _collapse(t: Transcript, keep: int, run: int = 14) -> Transcript:
    """Shorten long runs of lines from one side (a message's text) so every command stays visible."""
    from ..transcript import EVENT, Line

    out, i, lines = [], 0, t.lines
    while i < len(lines):
        j = i
        while j < len(lines) and lines[j].who == lines[i].who and lines[j].conn == lines[i].conn:
            j += 1
        block = lines[i:j]
        if lines[i].who != EVENT and len(block) > run + 3:
            out.extend(block[:run])
            hidden = len(block) - run - 2
            l0 = block[run]
            out.append(Line(l0.time, l0.service, l0.conn, EVENT,
                            _("... {0} more lines of the message ...").format(hidden).encode(),
                            l0.peer))
            out.extend(block[-2:])
        else:
            out.extend(block)
        i = j
    return Transcript(out)
