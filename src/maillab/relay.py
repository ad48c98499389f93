"""Relaying mail between the lab's domains: the routing table, a queue on disk, retries, bounces.

A server that says ``250`` to mail for another domain has promised to deliver it (RFC 5321
6.1). So before that ``250`` goes out, the message is written to the queue on disk, under the
store's root, the way Maildir delivers: into ``queue/tmp/``, then renamed into ``queue/ready/``,
so an entry is either whole or absent. A scheduler on the lab's loop hands ready entries to the
next hop over real SMTP (smtplib, in worker threads, several messages per connection) and
removes an entry only after the next hop said ``250`` for it. So:

* a restart of a lab with the same ``root=`` delivers what was still queued, even after kill -9;
* a temporary failure (a 4xx reply, a refused or broken connection) is retried later, after
  :data:`RETRY_DELAYS`; a permanent one (5xx), or a temporary one that outlives every retry,
  comes back to the sender as a delivery status notification (a "bounce", RFC 3464) in their
  INBOX. Mail from the null sender ``<>`` (itself a bounce) never bounces: it is logged.
* exactly once: if the process dies after the next hop stored a message but before this side
  removed its entry (the duplicate window of RFC 5321 6.1, a fraction of a millisecond), the
  restart finds it: a next hop that is one of the lab's own domains has stored it in the
  recipient's INBOX with this entry's queue id in its ``Received:`` trace, so that recipient is
  dropped from the entry instead of getting a second copy. (A next hop outside the lab, such as
  a learner's own server, gets it again, as SMTP allows.)

An entry is one file: a line of JSON (sender, recipients, next hop's domain) followed by the
message. Its name carries the attempts so far and the time of the next one
(``<queue id>.<n>,A=<attempts>,T=<milliseconds>``), so a retry is one rename.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import email.utils
import heapq
import itertools
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from .i18n import _
from .store import private_opener

__all__ = ["Router", "RelayQueue", "QueuedMessage", "RETRY_DELAYS", "delivery_status_notification"]

log = logging.getLogger("maillab.relay")

QUEUE_DIR = "queue"
# Seconds before the 2nd, 3rd, ... attempt; after the last one fails the sender gets a bounce.
RETRY_DELAYS = (0.2, 1.0, 3.0, 10.0, 30.0)
HISTORY = 1000  # delivered and failed messages remembered (without their text) for inspection
BATCH = 50  # messages handed to one next hop over one connection
PARALLEL = 2  # connections to next hops at once (each a worker thread)
SMTP_TIMEOUT = 30  # seconds smtplib waits for any one reply of the next hop
IDLE_CLOSE = 2.0  # seconds an unused connection to a next hop stays open for the next batch

_NAME = re.compile(r"^(?P<id>[A-Za-z0-9]+)\.(?P<part>\d+),A=(?P<attempts>\d+),T=(?P<next>\d+)$")


class QueuedMessage:
    """A message on its way to one other domain's server."""

    # (a plain class: a dataclass takes about 0.5 ms to make at import, on every start)
    _FIELDS = ("mail_from", "rcpt_tos", "content", "queue_id", "attempts", "errors", "domain",
               "helo", "next_try")  # shown and compared; ``path`` is neither

    def __init__(self, mail_from: str, rcpt_tos: list[str], content: bytes, queue_id: str,
                 attempts: int = 0, errors: list[str] | None = None, domain: str = "",
                 helo: str = "", next_try: float = 0.0, path: Path | None = None):
        self.mail_from = mail_from  # "" is the null sender of bounces
        self.rcpt_tos = rcpt_tos
        self.content = content  # empty once the message has left (history keeps no text)
        self.queue_id = queue_id  # the id the sending client was told ("queued as <id>")
        self.attempts = attempts
        self.errors = errors if errors is not None else []
        self.domain = domain  # the next hop's mail domain, a key of Router.mx
        self.helo = helo  # the name our server gives itself to the next hop
        self.next_try = next_try  # time.time() of the next attempt
        self.path = path  # the entry's file in the queue, while it is there

    def replace(self, **changes) -> "QueuedMessage":
        """A copy with some fields changed (lists are shared unless replaced, as with
        dataclasses.replace)."""
        values = {name: getattr(self, name) for name in self._FIELDS + ("path",)}
        values.update(changes)
        return QueuedMessage(**values)

    def without_content(self) -> "QueuedMessage":
        return self.replace(content=b"", errors=self.errors[-3:], path=None)

    def __eq__(self, other: object) -> bool:
        if type(other) is not QueuedMessage:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    def __repr__(self) -> str:
        return "QueuedMessage(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self._FIELDS) + ")"


class RelayQueue:
    """The queue's files under ``directory`` (``tmp/`` while written, ``ready/`` once whole)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.tmp = self.directory / "tmp"
        self.ready = self.directory / "ready"
        for d in (self.directory, self.tmp, self.ready):  # private, as the store around it
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._parts = itertools.count(1)

    def _name(self, msg: QueuedMessage, part: int) -> str:
        return f"{msg.queue_id}.{part},A={msg.attempts},T={int(msg.next_try * 1000)}"

    def add(self, msg: QueuedMessage) -> None:
        """Write a new entry atomically; when this returns, the entry survives a crash."""
        header = json.dumps({"from": msg.mail_from, "to": msg.rcpt_tos, "domain": msg.domain,
                             "helo": msg.helo, "id": msg.queue_id})
        name = self._name(msg, next(self._parts))
        tmp = self.tmp / name
        with open(tmp, "wb", opener=private_opener) as f:
            f.write(header.encode() + b"\n" + msg.content)
        final = self.ready / name
        os.rename(tmp, final)  # the step that makes the whole entry visible at once
        msg.path = final

    def reschedule(self, msg: QueuedMessage) -> None:
        """Save the attempts and the next attempt's time (a rename: the entry stays whole)."""
        m = _NAME.match(msg.path.name)
        target = self.ready / self._name(msg, int(m.group("part")) if m else next(self._parts))
        os.rename(msg.path, target)
        msg.path = target

    def remove(self, msg: QueuedMessage) -> None:
        if msg.path is not None:
            try:
                os.unlink(msg.path)
            except FileNotFoundError:
                pass

    def content(self, msg: QueuedMessage) -> bytes:
        if msg.content:
            return msg.content
        with open(msg.path, "rb") as f:
            f.readline()
            return f.read()

    def load(self) -> list[QueuedMessage]:
        """Entries left by an earlier run, oldest first. Half-written ones (in ``tmp/``) never
        got their ``250``: the client was not told the message was taken, so they go."""
        for name in os.listdir(self.tmp):
            try:
                os.unlink(self.tmp / name)
            except OSError:
                pass
        found = []
        for name in sorted(os.listdir(self.ready)):
            m = _NAME.match(name)
            path = self.ready / name
            try:
                with open(path, "rb") as f:
                    header = json.loads(f.readline())
                msg = QueuedMessage(str(header["from"]), [str(r) for r in header["to"]], b"",
                                    str(header["id"]), domain=str(header["domain"]),
                                    helo=str(header["helo"]))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("queue entry %s is unreadable and stays where it is: %s", name, e)
                continue
            if m is None:
                log.error("queue entry %s has a name this lab did not give; it stays where it is", name)
                continue
            msg.attempts, msg.next_try, msg.path = int(m.group("attempts")), int(m.group("next")) / 1000, path
            self._parts = itertools.count(max(next(self._parts), int(m.group("part")) + 1))
            found.append(msg)
        return found


class _Outcome:
    """What one attempt did for one message (decided in a worker thread)."""

    def __init__(self, msg: QueuedMessage, delivered: list[str] | None = None,
                 temporary: dict[str, str] | None = None, permanent: dict[str, str] | None = None,
                 headers: bytes = b"", tried: bool = True):
        self.msg = msg
        self.delivered = delivered if delivered is not None else []  # recipients the next hop took
        self.temporary = temporary if temporary is not None else {}  # recipient -> 4xx or network error
        self.permanent = permanent if permanent is not None else {}  # recipient -> 5xx error
        self.headers = headers  # the message's header section, for a bounce
        self.tried = tried  # False: not attempted (the lab was stopping); no attempt counted
        self.broken = False  # the connection failed (not a reply): the batch's rest waits


class Router:
    """The lab's routing table (our stand-in for DNS MX records) and its relay queue.

    ``mx`` maps a mail domain to the ``(host, port)`` of its SMTP server. :meth:`enqueue`
    stores a message on disk for each next hop; :meth:`start` runs the scheduler that hands
    them on; :meth:`settle` waits until the queue is empty; :meth:`drain` and :meth:`close`
    end it when the lab stops. ``delivered`` and ``failed`` keep the last :data:`HISTORY`
    messages handed on or given up (without their text).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, queue_dir: str | os.PathLike,
                 retry_delays=RETRY_DELAYS, *, store=None, history: int = HISTORY):
        self.loop = loop
        self.mx: dict[str, tuple[str, int]] = {}
        self.retry_delays = tuple(retry_delays)
        self.queue = RelayQueue(queue_dir)
        self.store = store  # where bounces go (the lab's store: every domain's accounts)
        self.tls_context = None  # a client context trusting the lab's CA: relay over STARTTLS
        self.delivered: deque[QueuedMessage] = deque(maxlen=history)
        self.failed: deque[QueuedMessage] = deque(maxlen=history)
        self._pending: dict[int, QueuedMessage] = {}  # every entry on disk (key: id(entry))
        self._due: dict[str, deque[QueuedMessage]] = {}  # domain -> entries to send now
        self._later: list[tuple[float, int, QueuedMessage]] = []  # heap of entries in backoff
        self._order = itertools.count()
        self._batches: set[asyncio.Future] = set()
        self._changed = asyncio.Event()  # pulsed whenever an entry arrives, leaves or waits
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(PARALLEL, "maillab-relay")
        # Open connections between batches, by (host, port, our name): a burst of relays does
        # not pay a TCP and TLS handshake per message. Only worker threads touch them.
        self._idle: dict[tuple, list[tuple[float, smtplib.SMTP]]] = {}
        self._idle_lock = threading.Lock()

    # ------------------------------------------------------------------ public
    def knows(self, domain: str) -> bool:
        return domain.lower() in self.mx

    def enqueue(self, helo_name: str, msg: QueuedMessage) -> None:
        """Queue ``msg`` on disk, one entry per next hop; raises OSError if it cannot be stored
        (then the client must not get its 250)."""
        by_domain: dict[str, list[str]] = {}
        for rcpt in msg.rcpt_tos:
            by_domain.setdefault(rcpt.rsplit("@", 1)[-1].lower(), []).append(rcpt)
        for domain, rcpts in by_domain.items():
            part = QueuedMessage(msg.mail_from, rcpts, msg.content, msg.queue_id, domain=domain,
                                 helo=helo_name, next_try=time.time())
            self.queue.add(part)
            part.content = b""  # on disk now; read back when it is sent
            self._add(part)

    async def start(self) -> None:
        """Take up what an earlier run left in the queue, and start handing entries on. Reading
        the queue and the INBOXes it may have reached already is file work (0.7 s for 1,400
        entries): it runs in a worker thread, not on the loop every server shares."""
        left, arrived = await self.loop.run_in_executor(self._executor, self._left_over)
        now = time.time()
        for msg in left:
            done = [r for r in msg.rcpt_tos if (r.lower(), msg.queue_id) in arrived]
            if done:
                log.warning("queued message %s had reached %s before the lab stopped (its "
                            "entry outlived the 250): not sent again", msg.queue_id, ", ".join(done))
                rest = [r for r in msg.rcpt_tos if r not in done]
                try:
                    if not rest:
                        self.queue.remove(msg)
                        continue
                    self._replace_entry(msg, rest)
                except OSError as e:
                    log.error("could not update queue entry %s: %s", msg.queue_id, e)
            msg.next_try = min(msg.next_try, now)  # a restart is a reason to try again at once
            self._add(msg)
        if self._pending:
            log.warning("%d queued message(s) from an earlier run will be relayed", len(self._pending))
        self._task = self.loop.create_task(self._run())

    def _left_over(self) -> tuple[list[QueuedMessage], set[tuple[str, str]]]:
        left = self.queue.load()
        return left, self._arrived_already(left)

    def _arrived_already(self, entries: list[QueuedMessage]) -> set[tuple[str, str]]:
        """(recipient, queue id) of the left-over ``entries`` whose recipient's INBOX in this
        lab's store already holds a message with that queue id in a Received: line. Only files
        written since the oldest entry are read (their header section only)."""
        if self.store is None or not entries:
            return set()
        wanted: dict[str, tuple] = {}  # login -> (account, queue ids, recipients)
        for msg in entries:
            for rcpt in msg.rcpt_tos:
                account = self.store.find_recipient(rcpt)
                if account is not None:
                    _acct, ids, rcpts = wanted.setdefault(account.login, (account, set(), []))
                    ids.add(msg.queue_id)
                    rcpts.append((rcpt.lower(), msg.queue_id))
        if not wanted:
            return set()
        since = min(_mtime(m.path) for m in entries) - 2.0  # clock steps between the two files
        found: set[tuple[str, str]] = set()
        for account, ids, rcpts in wanted.values():
            seen = _received_ids(account.folder("INBOX").path, since) & ids
            found.update((r, q) for r, q in rcpts if q in seen)
        return found

    def pending(self) -> list[QueuedMessage]:
        """The messages still in the queue (being sent, due, or waiting for a retry)."""
        return list(self._pending.values())

    async def settle(self) -> None:
        """Wait until every queued message has been handed on or bounced."""
        while self._pending:
            await self._wait_for_change()

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the queue to empty; return early when what is
        left waits for a retry beyond that time (waiting longer would change nothing)."""
        deadline = time.time() + timeout
        while self._pending and time.time() < deadline:
            if not self._batches and all(m.next_try > deadline for m in self._pending.values()):
                return
            await self._wait_for_change(min(0.5, max(0.0, deadline - time.time())))

    async def close(self, timeout: float = 5.0) -> None:
        """Stop handing messages on: let the ones being sent finish (up to ``timeout``
        seconds); every other entry stays on disk for the next start."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        if self._batches:
            await asyncio.wait(list(self._batches), timeout=timeout)
        # QUIT needs the next hop's answer, and the next hop may be on this very loop.
        await self.loop.run_in_executor(self._executor, self._close_idle, 0.0)
        self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ scheduling
    def _add(self, msg: QueuedMessage) -> None:
        self._pending[id(msg)] = msg
        if msg.next_try <= time.time():
            self._due.setdefault(msg.domain, deque()).append(msg)
        else:
            heapq.heappush(self._later, (msg.next_try, next(self._order), msg))
        self._changed.set()

    def _finished(self, msg: QueuedMessage) -> None:
        self._pending.pop(id(msg), None)
        self._changed.set()

    async def _wait_for_change(self, timeout: float | None = None) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _run(self) -> None:
        while not self._stopping:
            now = time.time()
            while self._later and self._later[0][0] <= now:
                msg = heapq.heappop(self._later)[2]
                self._due.setdefault(msg.domain, deque()).append(msg)
            while len(self._batches) < PARALLEL and self._due:
                domain = next(iter(self._due))
                waiting = self._due[domain]
                batch = [waiting.popleft() for _ in range(min(BATCH, len(waiting)))]
                if not waiting:
                    del self._due[domain]
                else:  # the next batch for this domain goes after the other domains' batches
                    self._due[domain] = self._due.pop(domain)
                self._start_batch(domain, batch)
            if self._idle:  # (also while other next hops' batches run: one may be slow)
                self.loop.run_in_executor(self._executor, self._close_idle, IDLE_CLOSE)
            wait = self._later[0][0] - now if self._later else None
            if self._idle:
                wait = min(wait or IDLE_CLOSE, IDLE_CLOSE)
            await self._wait_for_change(wait if not self._due else 0.05)

    def _start_batch(self, domain: str, batch: list[QueuedMessage]) -> None:
        context = contextvars.copy_context()  # the worker logs into this lab's log
        future = self.loop.run_in_executor(self._executor, context.run, self._send_batch,
                                           domain, batch)
        self._batches.add(future)
        future.add_done_callback(lambda f: self._batch_done(f, batch))

    def _batch_done(self, future: asyncio.Future, batch: list[QueuedMessage]) -> None:
        self._batches.discard(future)
        try:
            outcomes = future.result()
        except BaseException as e:  # a bug: leave the entries on disk for the next attempt
            log.error("relaying a batch failed: %r; its messages will be tried again", e)
            outcomes = [_Outcome(m, tried=False) for m in batch]
        for outcome in outcomes:
            self._settle_outcome(outcome)
        self._changed.set()

    # ------------------------------------------------------------------ one batch (worker thread)
    def _send_batch(self, domain: str, batch: list[QueuedMessage]) -> list[_Outcome]:
        """Hand ``batch`` to ``domain``'s server over one connection."""
        # smtplib is imported by the functions that use it (all in worker threads), not with
        # the module: a lab that never relays, and ``import maillab``, do without it.
        import smtplib

        def everyone(error: str, permanent: bool = False) -> list[_Outcome]:
            return [_Outcome(m, **{"permanent" if permanent else "temporary":
                                   dict.fromkeys(m.rcpt_tos, error)}) for m in batch]

        if domain not in self.mx:
            return everyone(f"550 5.4.4 no mail server known for {domain}", permanent=True)
        key = (*self.mx[domain], batch[0].helo)
        try:
            client = self._connect(key)
        except (OSError, smtplib.SMTPException, ValueError) as e:
            return everyone(f"{type(e).__name__}: {e}")
        outcomes: list[_Outcome] = []
        healthy = True
        try:
            for i, msg in enumerate(batch):
                if self._stopping:  # the lab is stopping: the rest stays queued, untried
                    outcomes += [_Outcome(m, tried=False) for m in batch[i:]]
                    break
                outcome = self._send_one(client, msg)
                outcomes.append(outcome)
                if outcome.delivered:
                    # At once, in this thread: the window in which a crash would send the
                    # message twice is the time between the 250 and this line.
                    if outcome.temporary:
                        self._replace_entry(msg, list(outcome.temporary))
                    else:
                        self.queue.remove(msg)
                        msg.path = None
                elif outcome.broken:
                    healthy = False
                    error = next(iter(outcome.temporary.values()))
                    outcomes += [_Outcome(m, temporary=dict.fromkeys(m.rcpt_tos, error))
                                 for m in batch[i + 1:]]
                    break
        finally:
            self._release(key, client, healthy)
        return outcomes

    def _connect(self, key: tuple) -> smtplib.SMTP:
        """A connection to the next hop: an idle one if it still answers, or a new one."""
        import smtplib
        with self._idle_lock:
            idle = self._idle.get(key)
            client = idle.pop()[1] if idle else None
        if client is not None:
            try:
                # One round trip: is it still there? (A next hop that timed the connection out
                # may still answer, with a 421 before it closes.)
                if client.rset()[0] == 250:
                    return client
            except (OSError, smtplib.SMTPException):
                pass
            client.close()
        host, port, helo = key
        client = smtplib.SMTP(host, port, local_hostname=helo, timeout=SMTP_TIMEOUT)
        try:
            client.ehlo()
            if self.tls_context is not None and client.has_extn("starttls"):
                # Server-to-server TLS as real MTAs do it (RFC 3207), checked against the
                # lab's CA: an impostor on the MX's port would fail here.
                client.starttls(context=self.tls_context)
                client.ehlo()
        except BaseException:
            client.close()
            raise
        return client

    def _release(self, key: tuple, client: smtplib.SMTP, healthy: bool) -> None:
        if healthy and not self._stopping:
            with self._idle_lock:
                self._idle.setdefault(key, []).append((time.monotonic(), client))
        else:
            _quit(client)

    def _close_idle(self, older_than: float) -> None:
        """QUIT the connections unused for ``older_than`` seconds (worker thread)."""
        now = time.monotonic()
        with self._idle_lock:
            old = [c for clients in self._idle.values() for t, c in clients if now - t >= older_than]
            for key in list(self._idle):
                self._idle[key] = [(t, c) for t, c in self._idle[key] if now - t < older_than]
                if not self._idle[key]:
                    del self._idle[key]
        for client in old:
            _quit(client)

    def _send_one(self, client: smtplib.SMTP, msg: QueuedMessage) -> _Outcome:
        import smtplib
        outcome = _Outcome(msg)
        addresses = [msg.mail_from, *msg.rcpt_tos]
        options = ["SMTPUTF8"] if any(not a.isascii() for a in addresses) else []
        try:
            content = self.queue.content(msg)
        except OSError as e:  # its entry's file is gone or unreadable: a matter of this message
            outcome.temporary.update(dict.fromkeys(msg.rcpt_tos, f"{type(e).__name__}: {e}"))
            return outcome  # (the connection is fine: the batch goes on)
        outcome.headers = _header_section(content)
        if not content.isascii():
            options.append("BODY=8BITMIME")
        try:
            refused = client.sendmail(msg.mail_from, msg.rcpt_tos, content, mail_options=options)
        except smtplib.SMTPRecipientsRefused as e:
            refused = e.recipients
        except smtplib.SMTPResponseException as e:  # MAIL FROM or DATA refused: every recipient
            error = f"{e.smtp_code} {e.smtp_error.decode('utf-8', 'replace')}"
            target = outcome.temporary if 400 <= e.smtp_code < 500 else outcome.permanent
            target.update(dict.fromkeys(msg.rcpt_tos, error))
            # 421: the next hop closes the connection (smtplib has closed its side): the rest
            # of the batch waits for a retry with this reason (after a 5xx and a close, the
            # next message finds the connection gone and defers the rest with that)
            outcome.broken = bool(outcome.temporary) and (e.smtp_code == 421 or client.sock is None)
            return outcome
        except (OSError, smtplib.SMTPException, UnicodeError, ValueError) as e:
            # A broken connection, or one left in the middle of a transaction (an address
            # smtplib cannot send, say): it is not used again.
            outcome.temporary.update(dict.fromkeys(msg.rcpt_tos, f"{type(e).__name__}: {e}"))
            outcome.broken = True
            return outcome
        for rcpt in msg.rcpt_tos:
            if rcpt in refused:
                code, text = refused[rcpt]
                error = f"{code} {text.decode('utf-8', 'replace')}"
                (outcome.temporary if 400 <= code < 500 else outcome.permanent)[rcpt] = error
            else:
                outcome.delivered.append(rcpt)
        return outcome

    def _replace_entry(self, msg: QueuedMessage, rcpts: list[str]) -> None:
        """Keep only ``rcpts`` of ``msg`` in the queue. The new entry is written before the old
        one goes, so a crash in between repeats a delivery rather than losing one."""
        rest = msg.replace(rcpt_tos=rcpts, content=self.queue.content(msg), path=None)
        self.queue.add(rest)
        self.queue.remove(msg)
        msg.rcpt_tos, msg.path = rcpts, rest.path

    # ------------------------------------------------------------------ after an attempt (loop)
    def _settle_outcome(self, outcome: _Outcome) -> None:
        # The entry stays in _pending until it is finished with: pending() is read from other
        # threads, and the file operations below let them run in between.
        msg = outcome.msg
        if not outcome.tried:
            self._add(msg)  # still on disk, unchanged
            return
        if outcome.delivered:
            self.delivered.append(msg.replace(rcpt_tos=outcome.delivered).without_content())
        msg.errors = (msg.errors + [f"{r}: {e}" for r, e in
                                    {**outcome.temporary, **outcome.permanent}.items()])[-10:]
        if outcome.permanent:
            self._give_up(msg, outcome.permanent, outcome.headers)
        if not outcome.temporary:
            self.queue.remove(msg)  # nothing if the worker removed it already
            self._finished(msg)
            return
        try:
            if sorted(msg.rcpt_tos) != sorted(outcome.temporary):
                self._replace_entry(msg, list(outcome.temporary))
            msg.attempts += 1
            if msg.attempts > len(self.retry_delays):
                self._give_up(msg, outcome.temporary, outcome.headers)
                self.queue.remove(msg)
                self._finished(msg)
                return
            msg.next_try = time.time() + self.retry_delays[msg.attempts - 1]
            self.queue.reschedule(msg)
        except OSError as e:  # the entry is still on disk under some name: try it again anyway
            log.error("could not note the retry of %s: %s", msg.queue_id, e)
        self._add(msg)

    def _give_up(self, msg: QueuedMessage, errors: dict[str, str], headers: bytes) -> None:
        """Delivery to these recipients failed for good: a bounce to the sender (not for <>)."""
        self.failed.append(msg.replace(rcpt_tos=list(errors)).without_content())
        last = next(reversed(errors.values()), "unknown error")
        if not msg.mail_from:
            log.warning("giving up on %s for %s (%s); no bounce: its sender is the null sender <>",
                        msg.queue_id, ", ".join(errors), last)
            return
        account = self.store.find_address(msg.mail_from) if self.store is not None else None
        if account is None:
            log.warning("giving up on %s for %s (%s); its sender %s has no mailbox here",
                        msg.queue_id, ", ".join(errors), last, msg.mail_from)
            return
        if not headers and msg.path is not None:  # never sent: read them from the entry
            try:
                headers = _header_section(self.queue.content(msg))
            except OSError:
                pass
        account.folder("INBOX").deliver(delivery_status_notification(
            msg, errors, f"mail.{account.domain}", headers))


def _mtime(path: Path | None) -> float:
    try:
        return os.stat(path).st_mtime if path is not None else time.time()
    except OSError:
        return time.time()


_RECEIVED_ID = re.compile(rb"\bid ([A-Za-z0-9]+)")


def _received_ids(folder: Path, since: float) -> set[str]:
    """The queue ids named by ``id ...`` in the header sections of a Maildir folder's messages
    written at or after ``since``."""
    ids: set[str] = set()
    for sub in ("new", "cur"):
        try:
            files = list(os.scandir(os.path.join(folder, sub)))
        except OSError:
            continue
        for entry in files:
            try:
                if entry.stat().st_mtime < since:
                    continue
                with open(entry.path, "rb") as f:
                    head = f.read(65536).split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
            except OSError:
                continue
            ids.update(m.decode() for m in _RECEIVED_ID.findall(head))
    return ids


def _quit(client: smtplib.SMTP) -> None:
    import smtplib
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def _header_section(content: bytes) -> bytes:
    """A message's header section (at most 16,000 bytes of it), for a bounce: what comes
    before the first empty line (nothing, when the message begins with one)."""
    return re.split(rb"(?:^|\r?\n)\r?\n", content, maxsplit=1)[0][:16_000]


def _status_of(error: str, final: bool) -> str:
    """The enhanced status code (RFC 3463) in an error text, or a general one."""
    m = re.search(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b", error)
    if m and m.group(1) == "5":
        return m.group(0)
    return "4.4.7" if final else "5.0.0"  # 4.4.7: delivery time expired


def delivery_status_notification(msg: QueuedMessage, errors: dict[str, str], reporting_host: str,
                                 headers: bytes = b"") -> bytes:
    """A bounce (RFC 3464 multipart/report): words for the sender, a status per recipient, and
    the headers of the message that could not be delivered."""
    boundary = f"maillab-report-{secrets.token_hex(8)}"
    rcpt_lines = "".join(f"    {r}: {e}\r\n" for r, e in errors.items())
    words = (_("This is the mail system at {0}.").format(reporting_host) + "\r\n\r\n" +
             _("Your message could not be delivered to these recipients:") + "\r\n" + rcpt_lines +
             "\r\n" + _("The last error of each is shown; the message's headers are attached.") + "\r\n")
    per_rcpt = "".join(
        f"\r\nFinal-Recipient: rfc822; {r}\r\nAction: failed\r\n"
        f"Status: {_status_of(e, e[:1] == '4' or not e[:1].isdigit())}\r\n"
        f"Diagnostic-Code: smtp; {e}\r\n" for r, e in errors.items())
    date = email.utils.formatdate(localtime=True)
    text = (f"From: Mail Delivery System <MAILER-DAEMON@{reporting_host.removeprefix('mail.')}>\r\n"
            f"To: {msg.mail_from}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            f"Date: {date}\r\nMessage-ID: <bounce.{msg.queue_id}.{secrets.token_hex(4)}@{reporting_host}>\r\n"
            f"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
            f"\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{words}"
            f"\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; {reporting_host}\r\nX-Maillab-Queue-ID: {msg.queue_id}\r\n{per_rcpt}"
            f"\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n")
    return (b"Return-Path: <>\r\n" + text.encode("utf-8", "replace") + headers +
            f"\r\n\r\n--{boundary}--\r\n".encode())
