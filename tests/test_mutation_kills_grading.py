"""maillab.grading's evidence helpers, pinned where planted bugs survived (bench/mutation.py).

Each test here failed on a mutant of src/maillab/grading.py that the other grading tests let
through: the seal on the transcript, the cell time limit and its watchdog, the Maildir reader,
the transcript's sessions (commands, DATA payloads, queue ids, reply codes), the evidence of one
cell, and the helpers hidden tests use. Quick, in-process tests (one subprocess for the
watchdog, which ends its process).
"""

from __future__ import annotations

import base64
import builtins
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import nbformat
import pytest

import maillab
from maillab import grading
from maillab.transcript import Line


from test_labs_grading import lab  # noqa: E402,F401 (a sealed lab for the module)
from conftest import require_root  # noqa: E402


def line(who: str, raw: bytes, conn: int = 1, service: str = "smtp:example.com",
         at: float = 0.0) -> Line:
    return Line(at, service, conn, who, raw)


# ------------------------------------------------------------------ the sealed transcript
def test_sealing_keeps_the_lines_already_recorded_and_refuses_every_other_way_in():
    sealed = grading._SealedLines([1, 2], 5, threading.get_ident())
    assert list(sealed) == [1, 2] and sealed.maxlen == 5
    sealed.extend([3])  # from the owning thread: accepted
    assert list(sealed) == [1, 2, 3] and sealed.refused == 0
    sealed.appendleft(0)
    sealed.extendleft([0])
    sealed.insert(0, 0)
    assert list(sealed) == [1, 2, 3] and sealed.refused == 3
    other = threading.Thread(target=sealed.extend, args=([4, 5],))
    other.start()
    other.join()
    assert list(sealed) == [1, 2, 3] and sealed.refused == 5


def test_prepare_refuses_a_stopped_lab_and_seals_a_running_one(monkeypatch):
    from maillab.lab import MailLab
    # a lab of its own: maillab.start() would hand back (and this test stop) the module's
    # shared lab when a test using it ran first (the mutation runner runs tests in its order)
    lab = MailLab(ports="any", tls=False).start()
    try:
        assert type(lab.recorder._lines) is not grading._SealedLines
        old = socket.getdefaulttimeout()
        try:
            assert grading.prepare(lab, socket_timeout=2.5) is lab
            assert socket.getdefaulttimeout() == 2.5
        finally:
            socket.setdefaulttimeout(old)
        assert type(lab.recorder._lines) is grading._SealedLines
        assert lab.recorder._lines.loop_ident == lab._thread.ident
        grading.verify(lab)
    finally:
        lab.stop()
    with pytest.raises(RuntimeError, match="start the lab first"):
        grading.prepare(lab)


# ------------------------------------------------------------------ the cell time limit
def test_the_hard_limit_is_armed_only_under_nbgrader(monkeypatch):
    for value, hard in (("autograde", True), ("validate", True), ("", False), ("x", False)):
        monkeypatch.setenv("NBGRADER_EXECUTION", value)
        assert grading._CellLimit(1, 1).hard is hard


def test_a_cell_over_its_limit_is_interrupted_and_its_window_recorded():
    limit = grading._CellLimit(0.2, 1.0)
    limit.alarm(14, None)  # no cell running: nothing happens
    before = time.time()
    limit.pre(type("Info", (), {"cell_id": "cell-7"})())
    try:
        with pytest.raises(grading.CellTimeLimit, match="0.2 s"):
            time.sleep(3)
    finally:
        limit.post()
    assert limit.started is None and limit.cell is None
    (cell, start, end), = limit.windows
    assert cell == "cell-7" and before <= start <= end <= time.time()
    time.sleep(0.3)  # the timer is off again: no late interrupt
    limit.alarm(14, None)


def test_only_the_last_200_cell_windows_are_kept():
    limit = grading._CellLimit(100, 1)
    for n in range(205):
        limit.cell = (f"c{n}", 0.0)
        limit.post()
    assert len(limit.windows) == 200 and limit.windows[0][0] == "c5"


WATCHDOG = """
import os, sys, threading, time
os.environ["NBGRADER_EXECUTION"] = "autograde"
from maillab import grading
limit = grading._CellLimit(0.1, 0.2)
threading.Thread(target=limit.watchdog, daemon=True).start()
if sys.argv[1] == "running":
    limit.pre()
    while True:  # a cell that swallows its interrupts
        try:
            time.sleep(5)
        except grading.CellTimeLimit:
            pass
time.sleep(1)
print("alive")
"""


@pytest.mark.parametrize("cell, code, out", [("running", grading.HARD_KILL_CODE, ""),
                                             ("idle", 0, "alive\n")])
def test_the_watchdog_ends_a_kernel_whose_cell_ignores_its_limit_and_only_then(cell, code, out):
    done = subprocess.run([sys.executable, "-c", WATCHDOG, cell], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (code, out), done.stderr[-2000:]


class FakeEvents:
    def __init__(self):
        self.registered: list[tuple[str, object]] = []

    def register(self, event, fn):
        self.registered.append((event, fn))

    def unregister(self, event, fn):
        self.registered.remove((event, fn))


def test_limit_cells_hooks_every_cell_once_even_when_called_again(monkeypatch):
    ip = type("IPython", (), {"events": FakeEvents()})()
    monkeypatch.setattr(builtins, "get_ipython", lambda: ip, raising=False)
    monkeypatch.setattr(grading, "_limit", None)
    grading.limit_cells(5, 1)
    first = grading._limit
    assert first is not None and (first.seconds, first.grace) == (5, 1)
    assert ip.events.registered == [("pre_run_cell", first.pre), ("post_run_cell", first.post)]
    grading.limit_cells(7, 2)
    assert grading._limit is first and (first.seconds, first.grace) == (7, 2)
    assert ip.events.registered == [("pre_run_cell", first.pre), ("post_run_cell", first.post)]
    # from another thread (a learner's thread calling the setup again): nothing changes
    other = threading.Thread(target=grading.limit_cells, args=(1, 1))
    other.start()
    other.join()
    assert first.seconds == 7 and len(ip.events.registered) == 2


def test_during_reads_the_window_of_the_cell_before_or_of_the_cell_named(monkeypatch, lab):
    limit = grading._CellLimit(100, 1)
    limit.windows = [("a", 1.0, 2.0), ("b", 3.0, 4.0), ("a", 5.0, 6.0), ("c", 7.0, 8.0)]
    monkeypatch.setattr(grading, "_limit", limit)
    last = grading.during(lab)
    assert (last.start, last.end) == (7.0, 8.0)
    named = grading.during(lab, "a")
    assert (named.start, named.end) == (5.0, 6.0)
    with pytest.raises(AssertionError, match="has not run"):
        grading.during(lab, "zzz")
    limit.windows = []
    with pytest.raises(AssertionError, match="has not run"):
        grading.during(lab)


# ------------------------------------------------------------------ Maildir and messages
def test_maildir_lists_new_and_cur_by_unique_name_and_refuses_an_unknown_user(lab):
    user, _ = grading.make_account(lab, [grading.sample(1), grading.sample(2)],
                                   flags=[("\\Seen",)])
    root = lab.store.root / user
    found = grading.maildir(lab, user)
    assert len(found) == 2
    assert {p.parent.name for p in found.values()} <= {"new", "cur"}
    for key, path in found.items():
        assert ":" not in key and "," not in key and path.name.startswith(key)
    (root / "cur" / ".hidden").write_bytes(b"x")
    (root / "new" / "1234.extra:2,S").write_bytes(b"Subject: by hand\r\n\r\nx\r\n")
    again = grading.maildir(lab, user)
    assert ".hidden" not in again and "1234.extra" in again and len(again) == 3
    assert grading.maildir(lab, user, "Archive") == {}  # no such folder yet: nothing
    lab.store.account(user).create_folder("Archive").deliver(grading.sample(3))
    archived = grading.maildir(lab, user, "Archive")
    assert len(archived) == 1 and all("/.Archive/" in str(p) for p in archived.values())
    with pytest.raises(KeyError):
        grading.maildir(lab, "nobody-here")


def test_a_disk_message_reads_flags_uid_headers_and_the_body_without_trace_headers(tmp_path):
    path = tmp_path / "1700000000.M1P2.host,U=7:2,FS"
    path.write_bytes(b"Return-Path: <a@example.com>\nReceived: from x\n\tby y; Mon\n"
                     b"Delivered-To: b@example.com\nSubject: hi\n\nbody\n.\n")
    m = grading.DiskMessage(path)
    assert m.flags == {"F", "S"} and m.uid == 7
    assert m.raw.count(b"\r\n") == 8 and b"\n" not in m.raw.replace(b"\r\n", b"")
    assert m.header("subject") == "hi" and m.header("X-Nothing") is None
    assert m.body == b"Subject: hi\r\n\r\nbody\r\n.\r\n"
    plain = tmp_path / "1700000001.M2P3.host"
    plain.write_bytes(b"Subject: x\r\n\r\ny\r\n")
    m = grading.DiskMessage(plain)
    assert m.flags == set() and m.uid is None and m.body == b"Subject: x\r\n\r\ny\r\n"


def test_unstuff_removes_one_leading_dot_per_line():
    assert grading.unstuff(b"a\r\n..b\r\n.c\r\nd.e") == b"a\r\n.b\r\nc\r\nd.e"


def test_headers_unfold_continuations_and_skip_lines_without_a_colon():
    raw = b"Received: from a\r\n\tby b\r\nnot a header\r\nSubject: x: y\r\n\r\nBody: no\r\n"
    assert grading._headers(raw) == [("Received", "from a by b"), ("Subject", "x: y")]


# ------------------------------------------------------------------ sessions
def test_commands_skip_message_text_literals_and_tags_and_join_uid():
    s = grading.Session([
        line("*", b"connect"), line("S", b"220 hi\r\n"), line("C", b"ehlo a\r\n"),
        line("C", b"\r\n"), line("C", b"DATA\r\n"), line("S", b"354 go\r\n"),
        line("C", b"RCPT TO:<x> inside the message\r\n"), line("C", b"..\r\n"),
        line("C", b".\r\n"), line("S", b"250 2.0.0 OK: queued as ABC123\r\n"),
        line("C", b"quit\r\n")])
    assert s.commands() == ["EHLO", "DATA", "QUIT"]
    assert s.service == "smtp:example.com" and s.conn == 1
    assert s.events == ["connect"] and s.replies() == [220, 354, 250]
    assert s.client_bytes.startswith(b"ehlo a\r\n\r\nDATA\r\n")
    assert s.data_payloads() == [b"RCPT TO:<x> inside the message\r\n..\r\n"]
    assert s.queue_ids() == ["ABC123"]
    imap = grading.Session([
        line("C", b"a1 APPEND INBOX {11}\r\n", service="imap"), line("S", b"+ go\r\n"),
        line("C", b"LOGIN x y\r\n", service="imap"), line("C", b"\r\n", service="imap"),
        line("C", b"a2 uid fetch 1 (FLAGS)\r\n", service="imap"),
        line("C", b"a3 UID\r\n", service="imap"), line("C", b"a4\r\n", service="imap")])
    assert imap.commands(tagged=True) == ["APPEND", "UID FETCH", "UID"]
    assert imap.commands() == ["A1", "A2", "A3", "A4"]
    empty = grading.Session([])
    assert empty.service == "" and empty.conn is None and empty.commands() == []


def test_data_payloads_and_replies_need_the_servers_own_lines():
    s = grading.Session([line("C", b"354 is what I typed\r\n"), line("C", b"text\r\n"),
                         line("C", b".\r\n"), line("S", b"250-multi\r\n"),
                         line("S", b"250 last\r\n"), line("S", b"hello\r\n")])
    assert s.data_payloads() == [] and s.commands() == ["354", "TEXT", "."]
    assert s.replies() == [250]
    two = grading.Session([line("S", b"354 a\r\n"), line("C", b"one\r\n"), line("C", b".\r\n"),
                           line("S", b"354 b\r\n"), line("C", b"two\r\n"),
                           line("C", b". \r\n"), line("C", b".\r\n")])
    assert two.data_payloads() == [b"one\r\n", b"two\r\n. \r\n"]


def test_sessions_of_a_service_and_its_subservices_whole_or_not_at_all():
    lines = [line("C", b"A\r\n", conn=1, service="smtp", at=1.0),
             line("C", b"B\r\n", conn=2, service="smtp:example.com", at=2.0),
             line("C", b"C\r\n", conn=3, service="smtpx", at=3.0),
             line("C", b"late\r\n", conn=1, service="smtp", at=9.0),
             line("C", b"D\r\n", conn=4, service="pop3", at=4.0)]
    lab = type("Lab", (), {"recorder": type("R", (), {"lines": lambda self: lines})()})()
    got = grading._sessions(lab, "smtp", lambda first: first.time >= 2.0)
    assert [s.conn for s in got] == [2]  # conn 1 started before: its late line is no evidence
    got = grading._sessions(lab, "smtp", lambda first: True)
    assert [(s.conn, len(s.lines)) for s in got] == [(1, 2), (2, 1)]
    assert [s.conn for s in grading._sessions(lab, None, lambda first: True)] == [1, 2, 3, 4]
    evidence = grading.CellEvidence(lab, 2.0, 3.0)
    assert [s.conn for s in evidence.sessions()] == [2, 3]
    assert evidence.session("smtp:example.com").conn == 2
    with pytest.raises(AssertionError, match="in that cell"):
        evidence.session("pop3")


def test_plain_auth_user_reads_the_login_of_auth_plain_only():
    token = base64.b64encode(b"\0alice\0wonderland").decode()
    auth = grading.Session([line("C", b"EHLO a\r\n"),
                            line("C", f"auth plain {token}\r\n".encode())])
    assert grading.plain_auth_user(auth) == "alice"
    assert grading.plain_auth_user(grading.Session([line("C", b"AUTH LOGIN x\r\n")])) is None
    assert grading.plain_auth_user(grading.Session([line("C", b"AUTH PLAIN !!\r\n")])) is None
    assert grading.plain_auth_user(grading.Session([line("C", b"AUTH PLAIN\r\n")])) is None


# ------------------------------------------------------------------ watching the lab
def test_watch_sees_only_new_connections_messages_and_removals(lab):
    user, password = grading.make_account(lab, [grading.sample(1), grading.sample(2)])
    before_conns = {l.conn for l in lab.recorder.lines()}
    ev = grading.watch(lab)
    assert ev.first_conn == max(before_conns, default=0) + 1 and user in ev.users
    with ev:
        sock = socket.create_connection((lab.host, lab.pop3_port), timeout=5)
        f = sock.makefile("rb")
        f.readline()
        for command in (f"USER {user}", f"PASS {password}", "DELE 1", "QUIT"):
            sock.sendall(command.encode() + b"\r\n")
            f.readline()
        sock.close()
        lab.store.account(user).folder("INBOX").deliver(grading.sample(3))
    assert ev.after is not None and user in ev.after
    assert [s.commands() for s in ev.sessions("pop3")] == [["USER", "PASS", "DELE", "QUIT"]]
    assert [m.header("Subject") for m in ev.new_messages(user)] == ["Message number 3"]
    assert len(ev.removed(user)) == 1
    assert [a.user for a in ev.logins()] == [user]
    only = grading.watch(lab, users=[user])
    assert only.users == [user] and list(only.before) == [user]


def test_a_timeout_in_a_watched_block_gets_the_hint_and_is_not_swallowed(lab):
    with pytest.raises(TimeoutError) as e:
        with grading.watch(lab) as ev:
            raise TimeoutError("timed out")
    assert ev.error is e.value and grading.timeout_hint() in e.value.__notes__


def test_make_account_gives_flags_to_the_first_messages_only(lab):
    user, password = grading.make_account(lab, [grading.sample(1), "Subject: two\r\n\r\n2\r\n"],
                                          flags=[("\\Flagged",)])
    assert lab.store.authenticate(user, password) is not None
    messages = sorted((grading.DiskMessage(p) for p in grading.maildir(lab, user).values()),
                      key=lambda m: m.uid)
    assert [m.flags for m in messages] == [{"F"}, set()]
    assert messages[1].header("Subject") == "two"
    assert user in grading.account_logins(lab)


# ------------------------------------------------------------------ grader.codec
from maillab.grader import codec  # noqa: E402


def nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_codec_floats_that_json_cannot_hold_cross_as_tags_and_nothing_else_decodes_as_one():
    assert codec.encode(2.5) == 2.5 and type(codec.encode(2.5)) is float
    for value in (float("inf"), float("-inf")):
        assert codec.encode(value) == {"$f": repr(value)} and codec.decode(codec.encode(value)) == value
    nan = codec.decode(codec.encode(float("nan")))
    assert nan != nan
    with pytest.raises(codec.CodecError, match="bad float"):
        codec.decode({"$f": "1e999"})


def test_codec_nesting_deeper_than_the_limit_is_a_handle_or_an_error():
    assert codec.decode(codec.encode(nested(codec.MAX_DEPTH))) == nested(codec.MAX_DEPTH)
    with pytest.raises(codec.CodecError):
        codec.encode(nested(codec.MAX_DEPTH + 1))
    got = codec.encode(nested(codec.MAX_DEPTH + 1), other=lambda obj: {"$h": 7})
    inner = got
    for _ in range(codec.MAX_DEPTH):
        inner = inner[0]
    assert inner == {"$h": 7}
    codec.decode(nested(codec.MAX_DEPTH + 3))  # lists down to depth MAX_DEPTH + 2
    with pytest.raises(codec.CodecError, match="too deeply"):
        codec.decode(nested(codec.MAX_DEPTH + 4))


def test_codec_decoding_refuses_malformed_tags_and_bodies():
    """Every malformed message is a CodecError (the grader's callers catch that one): bad
    base64 raised binascii.Error and an unhashable set member or key a TypeError before."""
    bad = [{}, {"$b": 5}, {"$b": "!!!"}, {"$ba": "a"}, {"$ba": ["x"]}, {"$t": "ab"},
           {"$d": [[1]]}, {"$d": [[1, 2, 3]]}, {"$d": "x"}, {"$h": "7"}, {"$zz": 1}, b"x",
           ("a",), {"$s": [[1]]}, {"$fs": [{"$d": []}]}, {"$d": [[[1], 2]]}]
    for data in bad:
        with pytest.raises(codec.CodecError):
            codec.decode(data, handle=lambda key, kind: (key, kind))
    assert codec.decode({"$h": 7, "type": "Mailbox"}, handle=lambda k, t: (k, t)) == (7, "Mailbox")
    with pytest.raises(codec.CodecError, match="unknown tag"):
        codec.decode({"$h": 7})  # no handles on this side
    with pytest.raises(codec.CodecError, match="unknown tag"):
        codec.decode({"$x": 1}, extra=lambda tag, body: NotImplemented)
    assert codec.decode({"$x": 1}, extra=lambda tag, body: ("extra", tag, body)) == \
        ("extra", "$x", 1)
    assert codec.decode({"$ba": codec._b64(b"ab")}) == bytearray(b"ab")
    assert codec.decode({"$s": [1]}) == {1} and type(codec.decode({"$fs": [1]})) is frozenset


def stream(data: bytes, piece: int = 5, fds=()):
    """recv(n) over ``data``: at most ``piece`` bytes a time; ``fds`` come with the first."""
    left, extra = [data], [list(fds)]

    def recv(n: int):
        chunk = left[0][:min(n, piece)]
        left[0] = left[0][len(chunk):]
        sent, extra[0] = extra[0], []
        return chunk, sent
    return recv


def test_codec_frames_are_length_prefixed_json_objects_within_the_limit():
    message = {"op": "call", "args": [1, "two"]}
    data = codec.frame(message)
    assert data[:4] == len(data[4:]).to_bytes(4, "big") and b" " not in data[4:]
    got_fds: list = []
    assert codec.read_frame(stream(data, 3, [9]), got_fds) == message  # arriving in pieces
    assert got_fds == [9]
    for body in (b"not json", b"[1, 2]"):
        with pytest.raises(codec.CodecError):
            codec.read_frame(stream(len(body).to_bytes(4, "big") + body))
    with pytest.raises(codec.CodecError, match="over the limit"):
        codec.read_frame(stream((codec.MAX_MESSAGE + 1).to_bytes(4, "big")))
    with pytest.raises(EOFError):
        codec.read_frame(stream(data[:10]))
    with pytest.raises(codec.CodecError, match="over the limit"):
        codec.frame({"x": "a" * codec.MAX_MESSAGE})
    # descriptors that come with a frame nobody asked them for are closed, not leaked
    r, w = os.pipe()
    os.close(w)
    assert codec.read_frame(stream(data, fds=[r])) == message
    with pytest.raises(OSError):
        os.fstat(r)


# ------------------------------------------------------------------ the nbgrader side
def test_test_cells_hidden_parts_and_what_learners_see():
    def cell(kind="code", **nbgrader):
        return {"cell_type": kind, "metadata": {"nbgrader": nbgrader}}
    assert grading.is_test_cell(cell(grade=True, solution=False))
    assert not grading.is_test_cell(cell(grade=True, solution=True))
    assert not grading.is_test_cell(cell("markdown", grade=True))
    assert not grading.is_test_cell(cell(grade=False)) and not grading.is_test_cell({})
    source = "a = 1\n### BEGIN HIDDEN TESTS\nassert secret\n### END HIDDEN TESTS\nb = 2\n"
    assert grading.split_hidden(source) == (["a = 1", "b = 2"], ["assert secret"])
    assert grading.visible_source(source + "\n\n") == "a = 1\nb = 2"


def test_definitions_keeps_defs_classes_and_imports_only():
    source = "import os\nx = f()\ndef g():\n    return 1\nclass C: pass\nos._exit(1)\n"
    assert grading.definitions(source) == "import os\n\ndef g():\n    return 1\n\nclass C:\n    pass"
    assert grading.definitions("x = 1") == "" and grading.definitions("def (") == ""


def test_feedback_hides_the_hidden_tests_and_tracebacks_that_show_them():
    hide = grading.nbgrader_preprocessors()["HideHiddenTests"]()
    from nbformat import NotebookNode
    source = "assert ok\n### BEGIN HIDDEN TESTS\nassert secret_check()\n### END HIDDEN TESTS"
    meta = {"nbgrader": {"grade": True, "solution": False}}
    shown = NotebookNode(cell_type="code", source=source, metadata=meta, outputs=[
        NotebookNode(output_type="error", ename="AssertionError", evalue="no",
                     traceback=["line 3", "assert secret_check()"]),
        NotebookNode(output_type="error", ename="NameError", evalue="x",
                     traceback=["assert ok"])])
    cell, _ = hide.preprocess_cell(shown, {}, 0)
    assert cell.source == "assert ok"
    assert cell.outputs[0]["traceback"] == ["AssertionError: no"]
    assert cell.outputs[1]["traceback"] == ["assert ok"]
    solution = NotebookNode(cell_type="code", source=source, outputs=[],
                            metadata={"nbgrader": {"grade": True, "solution": True}})
    assert hide.preprocess_cell(solution, {}, 0)[0].source == source


def test_fresh_is_a_new_copy_of_the_module_that_verified_the_lab(lab, monkeypatch):
    copy = grading.fresh(lab)
    assert copy is not grading and copy.__file__ == grading.__file__
    assert copy.unstuff is not grading.unstuff
    monkeypatch.setattr(maillab.lab.MailLab, "mailbox", lambda self, user, folder="INBOX": [])
    with pytest.raises(AssertionError, match="MailLab.mailbox was changed") as e:
        grading.fresh(lab)  # the copy's own Tampered, an AssertionError
    assert type(e.value).__name__ == "Tampered"


# ------------------------------------------------------------------ grader: the answer process
from maillab.grader.learner import AnswerProcess, LearnerDied, LearnerException, LearnerFunction  # noqa: E402,E501


# the answer process as test_grader_answers starts it, and its fixture
from test_grader_answers import answers, spawn as spawn_answers  # noqa: E402,F401


def test_a_fork_while_the_cells_load_leaves_one_process_answering(answers):
    a = answers("import os\nchild = os.fork()", "def who():\n    return os.getpid()")
    first = LearnerFunction(a, "who")()
    assert [LearnerFunction(a, "who")() for _ in range(3)] == [first] * 3


def test_an_argument_of_a_tag_the_answer_process_does_not_know_is_refused(answers):
    a = answers("def echo(x=None):\n    return x")
    with pytest.raises(LearnerException, match="unknown tag"):
        a.request({"op": "call", "target": {"name": "echo"}, "args": [{"$zz": 1}],
                   "kwargs": {"$d": []}})
    assert LearnerFunction(a, "echo")(5) == 5  # the process is still there


def test_a_cell_that_is_not_python_is_a_problem_and_the_next_cells_still_load(answers):
    a = answers("this is not ( python", "def one():\n    return 1")
    assert LearnerFunction(a, "one")() == 1
    assert [p[:3] for p in a.problems] == [[0, -1, "SyntaxError"]] and a.loads == 1


def test_a_value_a_check_sets_reaches_the_learners_code(answers):
    a = answers("def get():\n    return given")
    a.set_value("given", {"k": (1, b"x")})
    assert LearnerFunction(a, "get")() == {"k": (1, b"x")}


def test_an_operation_the_answer_process_does_not_know_is_refused_by_name(answers):
    a = answers("def f():\n    return 1")
    with pytest.raises(LearnerException, match="unknown operation 'zap'"):
        a.request({"op": "zap", "target": {"name": "f"}})


def test_codec_depth_counts_sets_and_handle_type_names_are_cut():
    value: object = frozenset({1})
    for _ in range(codec.MAX_DEPTH):
        value = frozenset({value})
    with pytest.raises(codec.CodecError):
        codec.encode(value)
    got = codec.decode({"$h": 3, "type": "T" * 300}, handle=lambda key, kind: kind)
    assert got == "T" * 200


def test_a_frame_of_exactly_the_limit_is_allowed():
    wrapper = len(codec.frame({"x": ""})) - 4
    body = codec.frame({"x": "a" * (codec.MAX_MESSAGE - wrapper)})
    assert len(body) - 4 == codec.MAX_MESSAGE


def test_what_the_learners_code_prints_goes_nowhere(answers):
    started = []

    def spawn(fd: int) -> subprocess.Popen:
        env = dict(os.environ, MAILLAB_ANSWERS_FD=str(fd))
        started.append(subprocess.Popen([sys.executable, "-m", "maillab.grader.answers"],
                                        env=env, pass_fds=[fd], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE))
        return started[-1]
    a = AnswerProcess(["import os, sys\ndef noisy():\n    print('out')\n"
                       "    print('err', file=sys.stderr)\n    os.write(1, b'fd1')\n"
                       "    os.write(2, b'fd2')\n    return 1"], spawn)
    try:
        assert LearnerFunction(a, "noisy")() == 1
    finally:
        a.kill()
    assert (started[0].stdout.read(), started[0].stderr.read()) == (b"", b"")


FORGER = """
import os, socket, sys, time
sys.path.insert(0, {src!r})
from maillab.grader.codec import frame
channel = socket.socket(fileno=int(sys.argv[1]))
channel.sendall(frame({{"not": "a loading message"}}))
time.sleep(60)
"""


def test_an_answer_process_that_says_something_unexpected_while_loading_is_ended():
    src = os.path.dirname(os.path.dirname(grading.__file__))

    def spawn(fd: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", FORGER.format(src=src), str(fd)],
                                pass_fds=[fd])
    a = AnswerProcess(["x = 1"], spawn)
    with pytest.raises(LearnerDied, match="unexpected"):
        a.ensure_loaded()
    assert a.proc.poll() is not None and a.channel is None


def test_kill_ends_the_answer_process_at_once(answers):
    a = answers("def f():\n    return 1")
    proc = a.proc
    a.kill()
    assert proc.poll() is not None  # not merely waited for (it would still run)
    assert not a.alive


def test_after_call_sees_the_process_after_loading_and_after_every_call():
    seen = []
    a = AnswerProcess(["def f():\n    return 1"], spawn_answers, after_call=seen.append)
    try:
        a.ensure_loaded()
        assert seen == [a.proc]
        LearnerFunction(a, "f")()
        assert seen == [a.proc, a.proc]
    finally:
        a.kill()


def test_a_handle_goes_back_to_the_learners_code_as_the_same_object(answers):
    a = answers("class Box:\n    def __init__(self):\n        self.n = 41\n"
                "def make():\n    return Box()\ndef grow(box):\n    box.n += 1\n    return box.n")
    box = LearnerFunction(a, "make")()
    assert LearnerFunction(a, "grow")(box) == 42 and LearnerFunction(a, "grow")(box) == 43


def test_a_tls_context_crosses_with_exactly_its_own_certificates(answers):
    import ssl
    a = answers("def count(ctx):\n    return len(ctx.get_ca_certs())")
    system = ssl.create_default_context().get_ca_certs(binary_form=True)
    if not system:
        pytest.skip("no system CA certificates to build a context from")
    one = ssl.create_default_context(cadata=system[0])
    assert LearnerFunction(a, "count")(one) == 1


def test_a_socket_file_handed_over_twice_is_never_read_by_the_grader_again():
    """The first call of a process not loaded yet: call() encoded its arguments, then
    request() started the process, which forgot what had been sent; the second hand-over
    sent the file again and read ahead here, so the learner's readline never got the line."""
    a = AnswerProcess(["def keep(f):\n    return 0\ndef read_line(f):\n    return f.readline()"],
                      spawn_answers, call_limit=3)
    left, right = socket.socketpair()
    f = left.makefile("rb")
    try:
        assert LearnerFunction(a, "keep")(f) == 0  # handed over while nothing is waiting
        right.sendall(b"two\r\n")  # there before the second hand-over (a local socket pair)
        assert LearnerFunction(a, "read_line")(f) == b"two\r\n"
    finally:
        a.kill()
        left.close()
        right.close()


def test_learner_exceptions_of_nested_classes_keep_their_own_names(answers):
    a = answers("class Client:\n    class Refused(Exception):\n        pass\n"
                "def fail():\n    raise Client.Refused('no')")
    with pytest.raises(LearnerException) as e:
        LearnerFunction(a, "fail")()
    assert type(e.value).__name__ == "Refused" and e.value.learner_text == "no"
    assert a.standin("__main__", "Client.Refused").__name__ == "Refused"


SERVER = """
import socket, sys
sys.path.insert(0, {src!r})
from maillab.grader.codec import frame, read_frame
channel = socket.socket(fileno=int(sys.argv[1]))
recv = lambda n: (channel.recv(n), [])
read_frame(recv)
channel.sendall({first})
while True:
    message = read_frame(recv)
    channel.sendall(frame({{"id": message["id"], "ok": {{"$zz": 1}}}}))
"""


def forged(first: bytes):
    src = os.path.dirname(os.path.dirname(grading.__file__))

    def spawn(fd: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", SERVER.format(src=src, first=first),
                                 str(fd)], pass_fds=[fd])
    return AnswerProcess(["x = 1"], spawn)


def test_a_frame_that_is_not_json_from_the_answer_process_ends_it():
    a = forged(b"\x00\x00\x00\x03abc")
    with pytest.raises(LearnerDied, match="unexpected"):
        a.ensure_loaded()
    assert a.channel is None


def test_a_reply_value_that_cannot_be_read_is_the_learners_failure():
    from maillab.grader import codec as wire
    a = forged(wire.frame({"loaded": {"names": {}, "problems": []}}))
    try:
        with pytest.raises(LearnerException, match="could not be read"):
            LearnerFunction(a, "x")()
    finally:
        a.kill()


# ------------------------------------------------------------------ grader.sandbox
from maillab.grader import sandbox as sandboxing  # noqa: E402

SANDBOX_UID = 2_000_199_100  # a throwaway user id of this module only


@pytest.fixture
def box(tmp_path):
    from conftest import sandbox_control
    made = sandboxing.Sandbox(SANDBOX_UID, sandbox_control(tmp_path), sandboxing.python_folders(),
                              sandboxing.Limits(processes=32, home_size=4 << 20,
                                                tmp_size=4 << 20))
    yield made
    made.kill_all()


REPORT = "import json, os; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"


def test_the_sandbox_starts_in_its_home_with_only_its_own_environment(box, monkeypatch):
    monkeypatch.setenv("MAILLAB_OUTSIDE_SECRET", "the grader's")
    done = subprocess.run(box.command([sys.executable, "-c", REPORT], env={"EXTRA": "1"}),
                          capture_output=True, text=True, timeout=60, cwd=str(box.control_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got["cwd"] == sandboxing.HOME and got["env"]["HOME"] == sandboxing.HOME
    assert "MAILLAB_OUTSIDE_SECRET" not in got["env"] and got["env"]["EXTRA"] == "1"
    assert got["env"]["MAILLAB_SEALED"] == f"{sandboxing.CONTROL}/lab.sock"


def test_without_a_sandbox_the_command_still_gets_only_its_own_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILLAB_OUTSIDE_SECRET", "the grader's")
    plain = sandboxing.Unsandboxed(0, tmp_path, [])
    for _ in range(2):  # its home is made once and reused
        done = subprocess.run(plain.command([sys.executable, "-c", REPORT]), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
    env = json.loads(done.stdout)["env"]
    assert env["HOME"] == str(tmp_path / "home") and (tmp_path / "home").is_dir()
    assert env["MAILLAB_SEALED"] == str(tmp_path / "lab.sock")
    assert "MAILLAB_OUTSIDE_SECRET" not in env
    assert plain.visible_path(tmp_path / "lab.sock") == str(tmp_path / "lab.sock")
    assert plain.end_strays(os.getpid()) == 0


def test_parent_folders_are_made_passable_once_each():
    made: set[str] = set()
    assert sandboxing._parents("/srv/course/py/lib/file", made) == [
        "--perms", "0755", "--dir", "/srv", "--perms", "0755", "--dir", "/srv/course",
        "--perms", "0755", "--dir", "/srv/course/py", "--perms", "0755", "--dir",
        "/srv/course/py/lib"]
    assert sandboxing._parents("/srv/course/other/x", made) == [
        "--perms", "0755", "--dir", "/srv/course/other"]
    assert sandboxing._parents("/usr/lib/python3/x", set()) == []  # system folders are there


def test_the_children_of_a_process_that_is_gone_are_none():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # ended and reaped: no /proc entry any more
    assert sandboxing._children(proc.pid) == [] and sandboxing._descendants(proc.pid) == []


ISOLATED = """
import json, os, sys
from pathlib import Path
from maillab.grader.sandbox import isolate_worker
private = Path(sys.argv[1])
isolate_worker(private)
(private / "evidence").write_text("x")
print(json.dumps({"mode": oct(os.stat(private).st_mode & 0o777),
                  "there": (private / "evidence").exists()}))
"""


def test_a_workers_private_folder_is_its_own_writable_tmpfs(tmp_path):
    require_root("a worker's namespaces need root")
    private = tmp_path / "private"
    done = subprocess.run([sys.executable, "-c", ISOLATED, str(private)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"mode": "0o700", "there": True}
    assert not (private / "evidence").exists()  # the tmpfs was the worker's alone


# ------------------------------------------------------------------ grader.sealed
from maillab.grader import sealed as sealing  # noqa: E402


@pytest.fixture
def sealed_lab(tmp_path):
    made = []

    def make(**options):
        control = tmp_path / f"control{len(made)}"
        control.mkdir()
        made.append(sealing.SealedLab(tmp_path / f"private{len(made)}", control / "lab.sock",
                                      options))
        return made[-1]
    yield make
    for lab in made:
        lab.close()


def ask(lab, request: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(lab.control.server_address))
        sock.sendall(request + b"\n")
        reply = sock.makefile("rb").readline()
    return json.loads(reply) if reply else {}


def test_the_control_socket_says_whether_the_lab_speaks_tls(sealed_lab):
    assert sealed_lab(tls=False).info()["tls"] is False
    with_tls = sealed_lab()
    assert with_tls.info()["tls"] is True and with_tls.info()["ca"].startswith("-----BEGIN")


def test_test_accounts_stop_at_the_limit(sealed_lab):
    lab = sealed_lab(tls=False)
    lab.accounts_made = sealing.MAX_ACCOUNTS - 1
    login, password = lab.make_account([], None, [])
    assert lab.lab.store.authenticate(login, password) is not None
    with pytest.raises(ValueError, match="too many"):
        lab.make_account([], None, [])


def test_settle_waits_for_the_lab_at_most_ten_seconds(sealed_lab, monkeypatch):
    lab = sealed_lab(tls=False)
    asked = []
    monkeypatch.setattr(lab.lab, "settle", asked.append)
    assert lab.answer({"op": "settle", "timeout": 99}) is None
    assert lab.answer({"op": "settle", "timeout": 0.5}) is None
    assert asked == [10.0, 0.5]


def test_the_control_socket_serves_any_number_of_connections_one_after_another(sealed_lab):
    lab = sealed_lab(tls=False)
    for _ in range(sealing.MAX_CONNECTIONS + 2):
        assert ask(lab, b'{"op": "info"}')["ok"]["host"] == lab.lab.host


def test_an_error_reply_is_cut_at_500_characters(sealed_lab):
    lab = sealed_lab(tls=False)
    reply = ask(lab, json.dumps({"op": "x" * 1000}).encode())
    assert len(reply["error"]) == 500 and reply["error"].startswith("ValueError: unknown request")


def test_the_client_asks_again_on_a_new_connection_when_the_lab_hung_up(tmp_path):
    from maillab.grader.client import _Control
    path = str(tmp_path / "lab.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    seen = []

    def serve():
        for answer in (None, b'{"ok": 7}\n'):  # the first connection ends without an answer
            conn, _ = server.accept()
            seen.append(conn.makefile("rb").readline())
            if answer:
                conn.sendall(answer)
            conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert _Control(path).ask("info") == 7
    finally:
        thread.join(10)
        server.close()
    assert seen == [b'{"op": "info"}\n'] * 2


# ------------------------------------------------------------------ Level 1: steps typed by hand
class FakeEvidence:
    """A cell's evidence made of given lines (for the step checkers), nothing delivered."""

    def __init__(self, *raw_lines, delivered=()):
        self.lab = type("Lab", (), {"settle": lambda self, timeout: None})()
        self._lines = [line(who, raw, service="smtp:example.com") for who, raw in raw_lines]
        self._delivered = list(delivered)

    def sessions(self, service=None):
        return [grading.Session(self._lines)] if self._lines else []

    def delivered(self, user, session):
        return self._delivered


def smtp(*exchanges_, tls=False, delivered=("a message",), login=None):
    raw = [("S", b"220 mail.example.com ESMTP\r\n")]
    for command, *answers in exchanges_:
        raw.append(("C", command.encode() + b"\r\n"))
        raw += [("S", a.encode() + b"\r\n") for a in answers]
    steps = grading.smtp_steps(FakeEvidence(*raw, delivered=delivered), "smtp:example.com",
                               rcpt="bob@example.com", user="bob", tls=tls, login=login)
    return {name: steps.done(name) for name in steps.results}, steps


MESSAGE = (("DATA", "354 go"), ("From: a@example.com",), ("Date: Mon, 1 Jun 2026 10:00:00 +0300",),
           ("Subject: hi",), ("",), ("body",), (".", "250 2.0.0 OK: queued as Q1"))


def test_steps_say_what_failed_and_why():
    steps = grading.Steps("title")
    steps.add("a", "say hello", None)
    steps.add("b", "send it", "it was refused")
    assert steps.done("a") and not steps.done("b")
    assert steps.why("b") == "send it: it was refused"
    steps.check("a")
    with pytest.raises(AssertionError, match="^send it: it was refused$"):
        steps.check("b")
    assert str(steps) == "title\n  [x] say hello\n  [ ] send it: it was refused"


def test_quoted_text_is_cut_at_its_limit():
    assert grading._quoted("a" * 70) == "'" + "a" * 70 + "'"
    assert grading._quoted("a" * 71) == "'" + "a" * 67 + "...'"
    assert grading._quoted("abcdef", 5) == "'ab...'"


def test_helo_counts_as_hello_but_only_when_the_server_said_250():
    done, _ = smtp(("HELO pc", "250 ok"))
    assert done["hello"]
    done, steps = smtp(("EHLO pc", "500 no"), ("MAIL FROM:<a@example.com>", "250 ok"))
    assert not done["hello"] and "'EHLO pc' with '500 no'" in steps.why("hello")
    done, _ = smtp(("EHLO pc", "259 odd"), ("MAIL FROM:<a@example.com>", "250 ok"),
                   ("RCPT TO:<bob@example.com>", "259 odd"))
    assert not done["hello"] and not done["envelope"]  # accepted means 250


def test_a_refused_starttls_is_no_encryption_even_with_ehlo_after():
    done, _ = smtp(("EHLO pc", "250 ok"), ("STARTTLS", "454 not now"), ("EHLO pc", "250 ok"),
                   tls=True)
    assert done["hello"] and not done["tls"]
    done, _ = smtp(("EHLO pc", "250 ok"), ("STARTTLS", "220 go"), ("EHLO pc", "250 ok"),
                   tls=True)
    assert done["tls"]


def test_a_whole_session_passes_every_step():
    done, _ = smtp(("EHLO pc", "250 ok"), ("MAIL FROM:<a@example.com>", "250 ok"),
                   ("RCPT TO:<Bob@Example.com>", "250 ok"), *MESSAGE, ("QUIT", "221 bye"))
    assert done == {"hello": True, "envelope": True, "message": True, "headers": True,
                    "quit": True}


def test_exchanges_pair_commands_with_answers_and_keep_literals_and_events_apart():
    s = grading.Session([line("*", b"connected"), line("S", b"220 hi\r\n"),
                         line("C", b"EHLO a {3}\r\n"), line("S", b"250 ok\r\n"),
                         line("C", b"abc\r\n"), line("*", b"closed")])
    assert [(e.command, e.replies) for e in grading.exchanges(s)] == [
        ("EHLO a {3}", ["250 ok"]), ("abc", [])]
    imap = grading.Session([line("C", b"a1 LOGIN {5}\r\n"), line("S", b"+ go\r\n"),
                            line("C", b"alice\r\n"), line("C", b"a2 NOOP\r\n"),
                            line("S", b"a2 OK\r\n")])
    got = grading.exchanges(imap, "imap")
    assert [(e.command, e.data, e.replies) for e in got] == [
        ("a1 LOGIN {5}", b"alice\r\n", ["+ go"]), ("a2 NOOP", b"", ["a2 OK"])]


def test_headers_of_a_typed_message_end_at_the_first_blank_line():
    assert grading._typed_headers(b"From: a\r\n\r\nX-Body: no\r\n") == {"from": "a"}
    assert grading._headers(b"From: a\nDate: b\r\n\r\n") == [("From", "a\nDate: b")]


class Evidence:
    """A cell's evidence: sessions given as (service, [(who, raw, time), ...]), and logins."""

    def __init__(self, *sessions, logins=()):
        self.lab = None
        self._sessions = [grading.Session([Line(at, service, n, who, raw)
                                           for who, raw, at in lines])
                          for n, (service, lines) in enumerate(sessions, 1)]
        self._logins = list(logins)

    def sessions(self, service=None):
        return [s for s in self._sessions if service is None or s.service == service
                or s.service.startswith(service + ":")]

    def logins(self):
        return self._logins


def talk(service, *pairs, at=0.0):
    """(service, lines) from (who, text) pairs, one line per 0.01 s from ``at``."""
    return service, [(who, text.encode() + b"\r\n", at + i / 100)
                     for i, (who, text) in enumerate(pairs)]


POP3_READ = [("S", "+OK ready"), ("C", "USER bob"), ("S", "+OK"), ("C", "PASS secret"),
             ("S", "+OK in"), ("C", "RETR 1"), ("S", "+OK 40 octets"),
             ("S", "Received: from mail.example.net by mail.example.com"), ("S", "Subject: x"),
             ("S", "."), ("C", "QUIT"), ("S", "+OK bye")]


def pop3_read(pairs, service="pop3s:example.com", **kw):
    steps = grading.pop3_read_steps(Evidence(talk(service, *pairs)), "example.com", user="bob",
                                    came_from="mail.example.net", **kw)
    return {name: steps.done(name) for name in steps.results}, steps


def test_pop3_read_steps_pass_a_whole_session_and_name_each_slip():
    assert pop3_read(POP3_READ)[0] == {"login": True, "retr": True, "kept": True, "quit": True}
    done, steps = pop3_read(POP3_READ[:5] + [("C", "RETR 9"), ("S", "-ERR no such message")])
    assert (done["retr"], done["kept"], done["quit"]) == (False, False, False)
    assert "RETR was refused" in steps.why("retr")
    done, steps = pop3_read(POP3_READ[:10] + [("C", "DELE 1"), ("S", "+OK deleted")]
                            + POP3_READ[10:])
    assert not done["kept"] and "'DELE 1'" in steps.why("kept") and done["quit"]
    done, steps = pop3_read([("C", "USER"), ("S", "-ERR who?")] + POP3_READ[3:])
    assert not done["login"] and "no USER line" in steps.why("login")
    assert pop3_read(POP3_READ, service="pop3:example.com")[0]["login"] is False  # port 110
    assert pop3_read(POP3_READ, service="pop3:example.com", tls=False)[0]["login"] is True


def test_http_steps_say_what_the_webmail_answered():
    def run(*pairs, status=200):
        steps = grading.http_steps(Evidence(talk("http", *pairs)), "GET", "/mail", status)
        return steps.done("request"), steps.why("request") if not steps.done("request") else ""
    assert run(("C", "GET /mail HTTP/1.1"), ("S", "HTTP/1.1 200 OK")) == (True, "")
    done, why = run(("C", "GET /mail HTTP/1.1"), ("S", "HTTP/1.1 303 See Other"))
    assert not done and "'HTTP/1.1 303 See Other'" in why and "session cookie" in why
    done, why = run(("C", "GET /mail HTTP/1.1"), ("S", "HTTP/1.1 303 See Other"), status=303)
    assert done
    done, why = run(("C", "GET /mail HTTP/1.1"), ("S", "HTTP/1.1 404 Not Found"))
    assert not done and "session cookie" not in why
    done, why = run(("C", "POST /mail HTTP/1.1"), ("S", "HTTP/1.1 200 OK"))
    assert not done and "'POST /mail HTTP/1.1', not GET /mail" in why


class Attempt:
    def __init__(self, user, success=True):
        self.user, self.success = user, success


def webmail_login(status, waited=0.1, users=("ann@example.com",)):
    evidence = Evidence(("http", [("C", b"POST /login HTTP/1.1\r\n", 10.0),
                                  ("S", f"HTTP/1.1 {status}\r\n".encode(), 10.0 + waited)]),
                        logins=[Attempt(u) for u in users])
    steps = grading.webmail_login_steps(evidence, "Ann@example.com")
    return steps.done("token"), steps.done("login"), str(steps)


def test_webmail_login_steps_read_the_status_the_webmail_gave():
    assert webmail_login("303 See Other")[:2] == (True, True)
    token, login, text = webmail_login("303 See Other", users=("bob@example.com",))
    assert token and not login and "you logged in as bob@example.com" in text
    assert webmail_login("403 Forbidden")[:2] == (False, False)
    token, login, text = webmail_login("400 Bad Request")
    assert token and not login and "no address and password" in text
    token, login, text = webmail_login("400 Bad Request", waited=1.5)
    assert not token and "Content-Length is larger" in text
    assert webmail_login("401 Unauthorized")[:2] == (True, False)
    token, login, text = webmail_login("429 Too Many")
    assert token and not login and "too many logins" in text
    token, login, text = webmail_login("500 Oops")
    assert not token and "'HTTP/1.1 500 Oops'" in text
    steps = grading.webmail_login_steps(Evidence(talk("http", ("C", "GET / HTTP/1.1"))),
                                        "ann@example.com")
    assert "'GET / HTTP/1.1', not POST /login" in steps.why("token")


def test_readable_commands_are_those_before_an_accepted_starttls():
    def session(*pairs):
        return grading.Session(Evidence(talk("smtp", *pairs))._sessions[0].lines)
    assert grading.readable_commands(session(
        ("C", "EHLO pc"), ("S", "250 ok"), ("C", "### BEGIN"), ("C", "STARTTLS"),
        ("S", "220 go"), ("C", "AUTH PLAIN x"))) == {"EHLO", "STARTTLS"}
    assert grading.readable_commands(session(
        ("C", "STARTTLS"), ("S", "454 no"), ("C", "AUTH PLAIN x"))) == {"STARTTLS", "AUTH"}
    assert grading.readable_commands(None) == set()


def test_the_last_request_of_the_cell_is_the_one_quoted_and_judged():
    two_gets = Evidence(talk("http", ("C", "GET /mail HTTP/1.1"), ("S", "HTTP/1.1 404 No")),
                        talk("http", ("C", "GET /mail HTTP/1.1"), ("S", "HTTP/1.1 500 Oops")))
    assert "'HTTP/1.1 500 Oops'" in grading.http_steps(two_gets, "GET", "/mail", 200).why(
        "request")
    two_others = Evidence(talk("http", ("C", "GET /a HTTP/1.1")),
                          talk("http", ("C", "GET /b HTTP/1.1")))
    assert "'GET /b HTTP/1.1'" in grading.webmail_login_steps(
        two_others, "ann@example.com").why("token")
    retried = Evidence(talk("http", ("C", "POST /login HTTP/1.1"), ("S", "HTTP/1.1 401 No")),
                       talk("http", ("C", "POST /login HTTP/1.1"), ("S", "HTTP/1.1 303 See")),
                       logins=[Attempt("ann@example.com")])
    steps = grading.webmail_login_steps(retried, "ann@example.com")
    assert steps.done("token") and steps.done("login")


def test_an_unexpected_webmail_answer_is_quoted_up_to_60_characters():
    answer = "HTTP/1.1 500 " + "x" * 80
    token, _, text = webmail_login("500 " + "x" * 80)
    assert f"'{answer[:57]}...'" in text


class NoFiles:
    """A lab whose store the steps read through the sealed evidence: the folders are empty."""

    class sealed_evidence:  # noqa: N801 (the attribute maillab.grading looks for)
        @staticmethod
        def files(user, folder="INBOX"):
            return {}


def pop3_box(*pairs, user="ann"):
    evidence = Evidence(talk("pop3", *pairs))
    evidence.lab = NoFiles()
    steps = grading.pop3_steps(evidence, "pop3", user=user, retr=1, dele=2)
    return {name: steps.done(name) for name in steps.results}, steps


def test_pop3_steps_read_logins_looks_and_downloads():
    first = grading.POP3_BOX[0][0]
    done, steps = pop3_box(("C", "USER bob"), ("S", "+OK"), ("C", "USER ann"), ("S", "+OK"),
                           ("C", "PASS x"), ("S", "+OK in"), ("C", "LIST"), ("S", "+OK 3"),
                           ("C", "RETR 1 x"), ("S", "+OK"), ("S", f"Subject: {first}"))
    assert done["login"] and done["look"] and done["retr"]
    done, steps = pop3_box(("C", "APOP ann 0123"), ("S", "+OK in"))
    assert done["login"]
    done, steps = pop3_box(("C", "USER ann"), ("S", "+OK"), ("C", "USER bob x"), ("S", "+OK"),
                           ("C", "PASS x"), ("S", "+OK in"))
    assert not done["login"] and steps.why("login").endswith("you logged in as bob, not as ann")
    done, steps = pop3_box(("C", "USER ann"), ("S", "+OK"), ("C", "PASS x"),
                           ("S", "-ERR " + "n" * 80))
    assert f"'-ERR {'n' * 52}...'" in steps.why("login")


def test_the_sealed_client_has_the_labs_services_but_none_of_its_servers(sealed_lab):
    from maillab.grader.client import SealedLabClient
    grader = sealed_lab(tls=False)
    lab = SealedLabClient(str(grader.control.server_address))
    assert [(s.protocol, s.port, s.login_policy) for s in lab.services] == \
        [(s.protocol, s.port, s.login_policy) for s in grader.lab.services]
    assert all(s.server is None for s in lab.services)


def test_smtp_steps_judge_the_last_message_and_its_delivery():
    first = (("DATA", "354 go"), ("From: a@example.com",), ("Subject: no date",), ("",),
             ("body",), (".", "250 2.0.0 OK: queued as Q0"))
    session = (("EHLO pc", "250 ok"), *first, ("MAIL FROM:<a@example.com>", "250 ok"),
               ("RCPT TO:<bob@example.com>", "250 ok"), *MESSAGE, ("QUIT", "221 bye"))
    done, steps = smtp(*session)
    assert done["headers"] and done["message"]
    assert steps.session.commands()[-1] == "QUIT"
    done, steps = smtp(*session, delivered=())
    assert not done["message"] and "not in bob@example.com's mailbox" in steps.why("message")


def imap(*pairs, folder="Work"):
    evidence = Evidence(talk("imap", *pairs))
    evidence.lab = NoFiles()
    steps = grading.imap_steps(evidence, "imap", user="ann", folder=folder, subject="Hi")
    return {name: steps.done(name) for name in steps.results}, steps


def test_imap_steps_read_uid_commands_refusals_and_the_selected_folder():
    login = [("C", "a1 LOGIN ann pw"), ("S", "a1 OK in")]
    done, _ = imap(*login, ("C", "a2 SELECT Work"), ("S", "a2 OK"),
                   ("C", "a3 UID SEARCH ALL"), ("S", "* SEARCH 4"), ("S", "a3 OK"),
                   ("C", "a4 UID"), ("S", "a4 BAD what?"))
    assert done["login"] and done["search"]
    done, steps = imap(*login, ("C", "a2 SELECT INBOX"), ("S", "a2 OK"),
                       ("C", "a3 SEARCH ALL"), ("S", "* SEARCH 1"), ("S", "a3 OK"))
    assert not done["search"]  # a SEARCH in another folder
    long = "a2 CREATE " + "W" * 50
    done, steps = imap(*login, ("C", long), ("S", "a2 NO [ALREADYEXISTS] exists"))
    assert not done["create"]
    assert f"(the server answered '{long[:37]}...' with 'a2 NO [ALREADYEXISTS] exists')" in \
        steps.why("create")


# ------------------------------------------------------------------ mail program settings
@pytest.fixture(scope="module")
def tls_lab():
    from maillab.lab import MailLab
    lab = MailLab(ports="any").start()  # not the process's current lab: no test stops it
    yield lab
    lab.stop()


def settings(lab, inbound=("imaps", "SSL/TLS", "IMAP"), outbound=("submission", "STARTTLS"),
             **changes):
    def group(service, security, **more):
        return {"server": "localhost", "port": lab.port(service), "security": security,
                "authentication": "Normal password", "username": "alice", **more}
    account = {"email": "alice@example.com", "password": "wonderland",
               "incoming": group(inbound[0], inbound[1], protocol=inbound[2]),
               "outgoing": group(*outbound)}
    for key, value in changes.items():
        part, _, field = key.partition("__")
        if field:
            account[part][field] = value
        else:
            account[part] = value
    steps = grading.mail_settings_steps(lab, account)
    return {name: (steps.results[name][1] or "") for name in steps.results}


def test_mail_settings_that_work_pass_with_either_kind_of_tls(tls_lab):
    assert settings(tls_lab) == {"incoming": "", "outgoing": ""}
    assert settings(tls_lab, inbound=("pop3", "STARTTLS", "pop3"),
                    outbound=("smtps", "SSL/TLS")) == {"incoming": "", "outgoing": ""}


def test_mail_settings_name_what_is_wrong(tls_lab):
    got = settings(tls_lab, inbound=("imaps", "STARTTLS", "IMAP"))
    assert "speaks SSL/TLS, not STARTTLS" in got["incoming"] and got["outgoing"] == ""
    got = settings(tls_lab, outgoing__authentication="Encrypted password")
    assert got["outgoing"].startswith("authentication: choose Normal password")
    got = settings(tls_lab, incoming={"protocol": "imap"})
    assert got["incoming"].startswith("no server, port, security, authentication, username")
    got = settings(tls_lab, incoming__protocol="nntp")
    assert "neither IMAP nor POP3" in got["incoming"]
    got = settings(tls_lab, email="alice")
    assert set(got) == {"incoming", "outgoing"}
    assert all("no e-mail address" in problem for problem in got.values())
    got = settings(tls_lab, outgoing="smtp.example.com")
    assert got["outgoing"].startswith("no outgoing settings")
    far = "0" * 35 + "10.0.0.1"  # 8.0.0.1, written long (no name to look up)
    got = settings(tls_lab, outgoing__server=far)
    assert got["outgoing"] == f"server: '{far[:37]}...' is another computer; the lab runs on " \
        "this one, localhost"
    got = settings(tls_lab, incoming__username="bob")
    assert "refused the login as 'bob'" in got["incoming"]
    got = settings(tls_lab, password="wrong")  # the server's reason, cut at 60 characters
    said = "b'[AUTHENTICATIONFAILED] Authentication failed: check the"
    assert f"refused the login as 'alice' ('{said}...')" in got["incoming"]


def test_a_cell_that_ended_the_kernel_keeps_its_source_and_outputs_in_the_notebook(tmp_path):
    """RobustExecute replays earlier cells, and the definitions of the cell that ended the
    kernel, after the restart. nbclient stores the cell it runs at its index, so the replayed
    copy took the learner's cell's place: its source became the definitions only, and its
    outputs, the KernelDied error that says what happened included, were gone."""
    from nbformat.v4 import new_code_cell, new_notebook
    meta = {"nbgrader": {"grade": True, "solution": False, "grade_id": "t", "points": 1,
                         "locked": True, "schema_version": 3, "task": False}}
    killer = "import os\ndef f():\n    return 41\nprint('defined')\nos._exit(1)"
    nb = new_notebook(cells=[new_code_cell("x = 1\nprint('first')"), new_code_cell(killer),
                             new_code_cell("y = f() + x"), new_code_cell("assert y == 42",
                                                                         metadata=meta)])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3",
                              "language": "python"}
    robust = grading.nbgrader_preprocessors()["RobustExecute"]()
    robust.timeout = 30
    nb, _ = robust.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    outputs = [[o.get("text", o.get("ename")) for o in cell.outputs] for cell in nb.cells]
    assert nb.cells[1].source == killer
    assert outputs[0] == ["first\n"] and "KernelDied" in outputs[1]
    assert [o.evalue for o in nb.cells[1].outputs if o.output_type == "error"] == [
        "this cell ended the Python kernel"]
    assert outputs[3] == [] and robust._restarts == 1
    assert nb.cells[2].execution_count == 1  # the replays are not in the new kernel's history


def _robust_run(tmp_path, *sources, max_restarts=5):
    """RobustExecute over code cells of these sources in a real (unsandboxed) kernel; the
    preprocessor and its log warnings."""
    from nbformat.v4 import new_code_cell, new_notebook
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3",
                              "language": "python"}
    robust = grading.nbgrader_preprocessors()["RobustExecute"]()
    robust.timeout, robust.max_restarts = 30, max_restarts
    robust.warnings = []
    robust.log.warning = lambda message, *args, **kw: robust.warnings.append(message % args)
    return robust, nb


def test_a_replay_that_ends_the_kernel_again_is_dropped_and_the_notebook_goes_on(tmp_path):
    """After a restart the earlier cells are replayed. A replay that ends the new kernel too
    is dropped from the replays (else every restart would end the same way, until the
    notebook is given up), the kernel restarts once more, the other replays run once, and
    the later cells run."""
    mark, log = tmp_path / "mark", tmp_path / "log"
    robust, nb = _robust_run(
        tmp_path,
        f"import os\nif os.path.exists({str(mark)!r}):\n    os._exit(1)\n"
        f"open({str(mark)!r}, 'w').close()",
        f"open({str(log)!r}, 'a').write('b\\n')",
        "import os\nos._exit(1)",
        "print('after')")
    nb, _ = robust.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert robust._restarts == 2
    assert log.read_text() == "b\n" * 2  # its own run and one replay
    assert [o.get("text") for o in nb.cells[3].outputs] == ["after\n"]
    assert "os._exit(1)" in nb.cells[0].source and nb.cells[0].outputs == []
    assert not any("did not start" in w for w in robust.warnings)


def test_a_notebook_given_up_after_cells_ran_is_not_run_a_second_time(tmp_path):
    """Only a kernel that never started gets a second try: a notebook that ended the kernel
    more often than max_restarts is given up at once, its cells not run again."""
    from nbclient.exceptions import DeadKernelError  # noqa: F401 (nbclient is there)
    log = tmp_path / "log"
    robust, nb = _robust_run(tmp_path, f"open({str(log)!r}, 'a').write('a\\n')",
                             "import os\nos._exit(1)", "import os\nos._exit(1)",
                             max_restarts=1)
    with pytest.raises(Exception, match="too many kernel restarts"):
        robust.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert log.read_text() == "a\n" * 2  # its run and the replay after the first restart
    assert not any("did not start" in w for w in robust.warnings)


def _kernel_that_cannot_start():
    """A RobustExecute, a notebook that asks for a kernel not installed, and the list the
    preprocessor's warnings go to."""
    from nbformat.v4 import new_code_cell, new_notebook
    nb = new_notebook(cells=[new_code_cell("x = 1")])
    nb.metadata.kernelspec = {"name": "no-such-kernel", "display_name": "?", "language": "python"}
    robust = grading.nbgrader_preprocessors()["RobustExecute"]()
    tries = []
    robust.log.warning = lambda message, *args: tries.append(message % args)
    return robust, nb, tries


def test_a_kernel_that_cannot_start_is_tried_twice_then_named(tmp_path):
    from jupyter_client.kernelspec import NoSuchKernel
    robust, nb, tries = _kernel_that_cannot_start()
    with pytest.raises(NoSuchKernel):
        robust.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert len(tries) == 1 and "did not start" in tries[0]


def test_two_gradings_at_once_get_different_sandbox_user_ids():
    """A worker's clean-up ends every process of its user ids (kill -1 as that user), and every
    `maillab grade` used the same ids: two gradings at once ended each other's kernels, and
    the scores of both were wrong. Each run now holds a block of ids of its own."""
    first, held = sandboxing.reserve_uids()
    try:
        second, also = sandboxing.reserve_uids()
        also.close()
        assert abs(second - first) >= sandboxing.UID_BLOCK
        with pytest.raises(sandboxing.SandboxUnavailable, match="another grading"):
            sandboxing.reserve_uids(first)
    finally:
        held.close()
    again, held = sandboxing.reserve_uids(first)  # free again once the first run ended
    held.close()
    assert again == first


def test_deleted_locked_and_test_cells_come_back_after_their_nearest_earlier_cell():
    from types import SimpleNamespace as Cell

    from nbformat.v4 import new_code_cell, new_notebook

    def master(name, **kw):
        return Cell(name=name, cell_type="code", locked=kw.get("locked", False),
                    checksum="x", source=f"# {name}")

    def meta(name, **kw):
        return {"nbgrader": {"grade_id": name, "schema_version": 3, **kw}}
    cells = [master("setup", locked=True), master("answer"), master("test1", locked=True),
             master("test2", locked=True)]
    notebook = Cell(source_cells=cells, solution_cells=[Cell(name="answer")],
                    grade_cells=[Cell(name="test1", max_score=3), Cell(name="test2",
                                                                       max_score=2)])
    overwrite = grading.nbgrader_preprocessors()["RobustOverwriteCells"]()
    overwrite.gradebook = Cell(find_notebook=lambda notebook_id, assignment_id: notebook)
    overwrite.notebook_id = overwrite.assignment_id = "lab"
    nb = new_notebook(cells=[
        new_code_cell("x = 1", metadata=meta("answer", solution=True, grade=False)),
        new_code_cell("assert x", metadata=meta("test2", grade=True, points=2, locked=True))])
    nb, _ = overwrite.add_missing_grade_cells(nb, {})
    got = [(c.metadata.nbgrader["grade_id"], c.metadata.nbgrader.get("grade"),
            c.metadata.nbgrader.get("points")) for c in nb.cells]
    assert got == [("setup", False, None), ("answer", False, None), ("test1", True, 3),
                   ("test2", True, 2)]


# ------------------------------------------------------------------ grader.execute (in-process parts)
def test_the_answer_process_gets_given_and_learner_cells_but_never_the_tests():
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    from maillab.grader.execute import MasterCells

    def cell(source, gid=None):
        meta = {"nbgrader": {"grade_id": gid}} if gid else {}
        return new_code_cell(source, metadata=meta)
    master = MasterCells({"setup": "%%capture\nnot python (", "helpers": "lab = maillab.start("
                          "ports='any', tls=False, lang='el', root=folder)"},
                         {"t1": ("assert secret_check()", 5.0)})
    assert master.lab_options() == {"tls": False}
    assert master.learner_language() == "el"
    nb = new_notebook(cells=[new_markdown_cell("# Lab"), cell("edited setup", "setup"),
                             cell("def send(): pass", "answer"), cell("assert send()", "t1"),
                             cell(master.given["helpers"]), cell("x = 1")])
    assert master.answer_cells(nb) == [master.given["setup"], "def send(): pass", "x = 1"]
    assert MasterCells({"setup": "x = 1"}, {}).lab_options() is None
    assert MasterCells({}, {}).learner_language() == "en"


SPY = '''
### BEGIN SOLUTION
seen = []
get_ipython().input_transformers_cleanup.append(lambda lines: seen.append("".join(lines)) or lines)
### END SOLUTION
'''
LATE = '''
### BEGIN SOLUTION
print("SEEN", seen)
### END SOLUTION
'''
HIDDEN = '''
assert 1 + 1 == 2, "visible check"
### BEGIN HIDDEN TESTS
assert "hidden check"
### END HIDDEN TESTS
'''


def test_the_learners_kernel_never_runs_the_hidden_tests(tmp_path):
    """`maillab grade` runs the notebook in the learner's sandboxed kernel with the hidden
    tests taken out of the test cells: code the learner left in the kernel (an input
    transformer here) sees the visible part only."""
    from nbformat.v4 import new_code_cell, new_notebook

    from conftest import require_tool
    from labcourse import Course, nbgrader_env
    require_tool("bwrap")
    require_root("grading in sandboxes needs root")

    def meta(grade_id, **kw):
        return {"nbgrader": {"grade": False, "grade_id": grade_id, "locked": False,
                             "schema_version": 3, "solution": False, "task": False, **kw}}
    course = Course(tmp_path / "course", [])
    cells = [new_code_cell("import maillab\nlab = maillab.start(ports='any', tls=False)",
                           id="spy-setup", metadata=meta("setup", locked=True)),
             new_code_cell(SPY.strip(), id="spy-spy", metadata=meta("spy", solution=True)),
             new_code_cell(HIDDEN.strip(), id="spy-test",
                           metadata=meta("t", grade=True, locked=True, points=1)),
             new_code_cell(LATE.strip(), id="spy-late", metadata=meta("late", solution=True))]
    nb = new_notebook(cells=cells)
    nb.metadata.kernelspec = {"display_name": "Python 3 (ipykernel)", "language": "python",
                              "name": "python3"}
    master = course.root / "solutions" / "spy" / "spy.ipynb"
    master.parent.mkdir(parents=True)
    nbformat.write(nb, master)
    course.generate("spy")
    mine = nbformat.read(master, 4)  # the learner's copy: the master's solutions as answers
    submitted = course.root / "submitted" / "ada" / "spy" / "spy.ipynb"
    submitted.parent.mkdir(parents=True)
    nbformat.write(mine, submitted)
    done = subprocess.run([sys.executable, "-m", "maillab", "grade", "spy", "--workers", "1",
                           "--quiet"], cwd=course.root, env=nbgrader_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    graded = nbformat.read(course.root / "autograded" / "ada" / "spy" / "spy.ipynb", 4)
    printed = "".join(o.get("text", "") for o in graded.cells[3].outputs)
    assert "visible check" in printed and "hidden check" not in printed


# ------------------------------------------------------------------ session 5: typed sessions
ENVELOPE = (("MAIL FROM:<a@example.com>", "250 ok"), ("RCPT TO:<bob@example.com>", "250 ok"))


def auth_plain(user: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0secret".encode()).decode()


def test_the_smtp_login_step_passes_for_the_right_user_and_names_the_wrong_one():
    hello = ("EHLO pc", "250 ok")
    done, steps = smtp(hello, (auth_plain("bob"), "235 2.7.0 ok"), *ENVELOPE, *MESSAGE,
                       ("QUIT", "221 bye"), login="bob")
    assert done["login"] and done["envelope"]
    # with encryption asked for and missing, the login step still judges the login alone
    done, steps = smtp(hello, (auth_plain("bob"), "235 2.7.0 ok"), *ENVELOPE, login="bob",
                       tls=True)
    assert not done["tls"] and done["login"]
    done, steps = smtp(hello, (auth_plain("ann"), "235 2.7.0 ok"), *ENVELOPE, login="bob")
    assert steps.why("login") == "log in as bob (AUTH): you logged in as ann, not as bob"


def test_a_refused_mail_from_is_named_as_such_not_as_a_missing_recipient():
    done, steps = smtp(("EHLO pc", "250 ok"), ("MAIL FROM:<a@example.com>", "530 5.7.0 log in"),
                       ("RCPT TO:<bob@example.com>", "503 5.5.1 MAIL first"))
    assert not done["envelope"]
    assert steps.why("envelope").startswith(
        "the envelope: MAIL FROM, then RCPT TO:<bob@example.com>: no MAIL FROM was accepted "
        "(the server answered 'MAIL FROM:<a@example.com>' with '530 5.7.0 log in')")


def test_a_refused_data_quotes_the_last_data_and_a_refused_message_is_not_an_unended_one():
    done, steps = smtp(("EHLO pc", "250 ok"), ("DATA", "503 5.5.1 MAIL first"), ENVELOPE[0],
                       ("DATA", "503 5.5.1 RCPT first"))
    assert steps.why("message").endswith("DATA was refused: '503 5.5.1 RCPT first'")
    done, steps = smtp(("EHLO pc", "250 ok"), *ENVELOPE, *MESSAGE[:-1],
                       (".", "554 5.7.1 no thanks"), ("QUIT", "221 bye"))
    assert not done["message"] and done["quit"]
    assert "never ended" not in steps.why("message")
    assert steps.why("message").endswith(
        "the message was refused (the server answered '.' with '554 5.7.1 no thanks')")


def test_a_folded_header_line_is_a_header_and_a_stray_line_is_quoted_up_to_40():
    assert grading._header_problem(b"Subject: a\r\n  long one\r\n\r\nbody\r\n") is None
    assert grading._header_problem(b"Subject: a\r\n\tlong one\r\n\r\nbody\r\n") is None
    stray = "x" * 41
    why = grading._header_problem(f"Subject: a\r\n{stray}\r\nbody\r\n".encode())
    assert f"'{'x' * 37}...' was stored as a header line" in why
    why = grading._header_problem(f"Subject: a\r\n{'x' * 40}\r\nbody\r\n".encode())
    assert f"'{'x' * 40}' was stored as a header line" in why


def test_an_imap_literal_belongs_to_its_own_command_not_the_first_one():
    s = grading.Session([line("C", b"a1 LOGIN {3}\r\n"), line("S", b"+ go\r\n"),
                         line("C", b"ann pw\r\n"), line("S", b"a1 OK\r\n"),
                         line("C", b"a2 SELECT {4}\r\n"), line("S", b"+ go\r\n"),
                         line("C", b"Work\r\n"), line("S", b"a2 OK\r\n")])
    got = grading.exchanges(s, "imap")
    assert [(e.command, e.data) for e in got] == [("a1 LOGIN {3}", b"ann pw\r\n"),
                                                  ("a2 SELECT {4}", b"Work\r\n")]


def test_commands_skip_a_one_byte_literal_and_a_tag_35_is_no_data():
    s = grading.Session([line("C", b"a1 LOGIN {1}\r\n", service="imap"),
                         line("S", b"+ go\r\n"), line("C", b"b secret\r\n"),
                         line("S", b"a1 OK\r\n"), line("C", b"a2 NOOP\r\n")])
    assert s.commands(tagged=True) == ["LOGIN", "NOOP"]
    s = grading.Session([line("C", b"35 LOGIN ann pw\r\n", service="imap"),
                         line("S", b"35 OK in\r\n"), line("C", b"36 SELECT INBOX\r\n"),
                         line("S", b"36 OK\r\n")])
    assert s.commands(tagged=True) == ["LOGIN", "SELECT"]


def test_pop3_read_steps_name_a_missing_or_refused_password_a_wrong_user_and_a_wrong_message():
    done, steps = pop3_read(POP3_READ[:3] + POP3_READ[5:])
    assert steps.why("login").endswith(": no PASS line after USER")
    done, steps = pop3_read(POP3_READ[:4] + [("S", "-ERR [AUTH] wrong password")])
    assert steps.why("login").endswith(": the password was refused: '-ERR [AUTH] wrong password'")
    done, steps = pop3_read(POP3_READ[:4] + [("S", "-ERR [AUTH] wrong password")]
                            + POP3_READ[1:4] + [("S", "-ERR [IN-USE] mailbox busy")])
    assert steps.why("login").endswith(": the password was refused: '-ERR [IN-USE] mailbox busy'")
    done, steps = pop3_read([POP3_READ[0], ("C", "USER ann@example.com")] + POP3_READ[2:])
    assert steps.why("login").endswith(": you logged in as ann@example.com, not as bob")
    assert pop3_read([POP3_READ[0], ("C", "USER Bob@example.com")] + POP3_READ[2:])[0]["login"]
    other = [("S", "Received: from mail.example.org by mail.example.com") if "Received" in t
             else (w, t) for w, t in POP3_READ]
    done, steps = pop3_read(other)
    assert not done["retr"] and done["kept"]
    assert "did not come from mail.example.net" in steps.why("retr")


def test_a_quit_typed_twice_at_once_is_a_goodbye():
    # as the lab's POP3 server records it: both lines, then the one answer
    twice = POP3_READ[:10] + [("C", "QUIT"), ("C", "QUIT"), ("S", "+OK bye")]
    assert pop3_read(twice)[0]["quit"]


def test_the_request_line_the_webmail_got_instead_is_quoted_up_to_50_characters():
    wrong = "POST /" + "p" * 36 + " HTTP/1.1"  # 51 characters
    steps = grading.http_steps(Evidence(talk("http", ("C", wrong), ("S", "HTTP/1.1 200 OK"))),
                               "GET", "/mail", 200)
    assert f"the webmail got '{wrong[:47]}...', not GET /mail" in steps.why("request")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_watchdog_ends_the_kernel_once_a_cell_is_late_and_only_then(monkeypatch):
    ended = []

    def fake_exit(code):
        ended.append((code, time.monotonic()))
        raise SystemExit  # ends the watchdog's thread

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(sys, "stderr", open(os.devnull, "w"))
    limit = grading._CellLimit(0.1, 0.1)
    limit.hard = True
    watchdog = threading.Thread(target=limit.watchdog, daemon=True)
    watchdog.start()
    time.sleep(0.7)  # no cell running: nothing happens
    assert ended == []
    with limit.lock:
        limit.started = time.monotonic() - 5  # a cell long over its limit
    watchdog.join(5)
    assert [code for code, _ in ended] == [grading.HARD_KILL_CODE] and not watchdog.is_alive()


def test_no_alarm_is_left_set_after_a_cell(monkeypatch):
    limit = grading._CellLimit(30, 1)
    limit.pre()
    limit.post()
    try:
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)


class GrowingRecorder:
    """A transcript whose length follows ``counts``, one value per read."""

    def __init__(self, *counts):
        self.counts, self.reads = list(counts), 0

    def lines(self, first_conn=None):
        self.reads += 1
        return [None] * self.counts[min(self.reads, len(self.counts)) - 1]


def quiet_reads(*counts) -> int:
    recorder = GrowingRecorder(*counts)
    watch = type("W", (), {"lab": type("Lab", (), {"recorder": recorder})(), "first_conn": 1})()
    grading.Watch._quiet(watch, most=5, step=0.001)
    return recorder.reads


def test_a_watch_waits_until_the_transcript_stopped_growing_for_two_steps():
    assert quiet_reads(1, 2, 3, 3) == 5  # grew, grew, grew, same, same
    assert quiet_reads(0) == 3  # empty from the start: the first read is no "same" yet


@pytest.fixture(scope="module")
def own_lab():
    """A sealed lab of these tests alone: not the process's current lab, so that a test
    (or fixture) that runs maillab.start() in between does not stop it."""
    from maillab.lab import MailLab
    lab = MailLab(ports="any", tls=False).start()
    grading.seal(lab)
    yield lab
    lab.stop()


def test_a_watch_reads_the_mailboxes_once_the_lab_settled(own_lab, monkeypatch):
    lab = own_lab
    user, _ = grading.make_account(lab)
    late = lambda timeout: lab.store.account(user).folder("INBOX").deliver(  # noqa: E731
        grading.sample(4))  # a message the relay hands over while the lab settles
    monkeypatch.setattr(lab, "settle", late, raising=False)
    with grading.watch(lab, users=[user]) as ev:
        pass
    assert len(ev.after[user]) == 1


def test_a_cells_logins_are_those_of_its_own_time():
    at = lambda t: type("Attempt", (), {"time": t})()  # noqa: E731
    attempts = [at(1.0), at(2.0), at(3.0), at(4.0)]
    lab = type("Lab", (), {"logins": lambda self: attempts})()
    assert grading.CellEvidence(lab, 2.0, 3.0).logins() == attempts[1:3]


class Folders:
    """A lab whose store the steps read through the sealed evidence: {folder: {name: path}};
    an unknown user has no mailbox (KeyError, as maildir says)."""

    def __init__(self, user, folders):
        owner, boxes = user, folders

        class sealed_evidence:  # noqa: N801 (the attribute maillab.grading looks for)
            @staticmethod
            def files(user, folder="INBOX"):
                if user != owner:
                    raise KeyError(user)
                return boxes.get(folder, {})
        self.sealed_evidence = sealed_evidence


def test_imap_steps_flag_search_and_a_mailbox_that_is_not_there(tmp_path):
    (tmp_path / "1.a:2,FS").write_bytes(b"Subject: Hi\r\n\r\nx\r\n")
    pairs = [("C", "a1 LOGIN ann pw"), ("S", "a1 OK in"), ("C", "a2 SELECT Work"),
             ("S", "a2 OK"), ("C", "a3 SEARCH SUBJECT Hi"), ("S", "* SEARCH 1"), ("S", "a3 OK"),
             ("C", "a4 SEARCH SUBJECT Nope"), ("S", "* SEARCH"), ("S", "a4 OK")]
    evidence = Evidence(talk("imap", *pairs))
    evidence.lab = Folders("ann", {"Work": {"1": tmp_path / "1.a:2,FS"}})
    steps = grading.imap_steps(evidence, "imap", user="ann", folder="Work", subject="Hi")
    assert steps.done("move") and steps.done("flag") and steps.done("search")
    evidence.lab = Folders("bob", {})  # no mailbox for ann: nothing moved, no crash
    steps = grading.imap_steps(evidence, "imap", user="ann", folder="Work", subject="Hi")
    assert steps.why("move") == "move 'Hi' into Work: 'Hi' is not in the folder Work"
    assert steps.why("flag").endswith(": there is no message to flag in Work")
    (tmp_path / "2.b:2,S").write_bytes(b"Subject: Hi\r\n\r\nx\r\n")
    evidence.lab = Folders("ann", {"Work": {"2": tmp_path / "2.b:2,S"}})
    steps = grading.imap_steps(evidence, "imap", user="ann", folder="Work", subject="Hi")
    assert steps.why("flag").endswith(": the message in Work has no \\Flagged flag on the server")


def test_imap_steps_count_only_accepted_logins_and_creates_of_the_folder():
    done, steps = imap(("C", "a1 LOGIN ann wrong"), ("S", "a1 NO [AUTHENTICATIONFAILED] no"),
                       ("C", "a2 CAPABILITY"), ("S", "* CAPABILITY IMAP4rev1"), ("S", "a2 OK"),
                       ("C", "a3 CREATE Other"), ("S", "a3 OK"))
    assert not done["login"] and not done["create"]
    assert steps.why("login").endswith(
        "(the server answered 'a1 LOGIN ann wrong' with 'a1 NO [AUTHENTICATIONFAILED] no')")
    ir = base64.b64encode(b"\0ann\0pw").decode()
    done, steps = imap(("C", f"a1 AUTHENTICATE PLAIN {ir}"), ("S", "a1 OK in"))
    assert done["login"]


def test_imap_steps_name_a_bad_command_and_quote_its_answer_up_to_60():
    done, steps = imap(("C", "a1 LOGIN ann pw"), ("S", "a1 OK in"), ("C", "a2 CREATE"),
                       ("S", "a2 BAD " + "m" * 60))
    assert not done["create"]
    assert steps.why("create").endswith(f"(the server answered 'a2 CREATE' with "
                                        f"'a2 BAD {'m' * 50}...')")


def test_pop3_steps_judge_the_download_apart_from_the_login():
    first = grading.POP3_BOX[0][0]
    done, steps = pop3_box(("C", "USER bob"), ("S", "+OK"), ("C", "PASS x"), ("S", "+OK in"),
                           ("C", "RETR 1"), ("S", "+OK"), ("S", f"Subject: {first}"))
    assert not done["login"] and done["retr"]


def test_a_400_exactly_the_wait_after_the_request_means_the_body_never_came():
    token, login, text = webmail_login("400 Bad Request", waited=grading.WAITED)
    assert not token and "waited for the rest of your body" in text
    assert webmail_login("400 Bad Request", waited=grading.WAITED / 2)[0]


def test_mail_settings_quote_an_unknown_name_and_a_port_that_is_no_number(tls_lab):
    name = "x" * 64  # a label longer than 63: no name to look up
    got = settings(tls_lab, incoming__server=name)
    assert got["incoming"].startswith(f"server: '{name[:37]}...' is not a name this computer")
    got = settings(tls_lab, outgoing__port="five hundred eighty-7")
    assert got["outgoing"] == "port: 'five hundred eigh...' is not a number"


def test_a_tls_failure_while_checking_the_settings_is_a_failed_connection(tls_lab, monkeypatch):
    import ssl
    monkeypatch.setattr(tls_lab, "client_context", ssl.create_default_context)  # not the lab's CA
    got = settings(tls_lab)
    assert all(p.startswith("the connection failed: ") and "CERTIFICATE_VERIFY_FAILED" in p
               for p in got.values()), got


def test_the_settings_check_says_goodbye_to_each_server(tls_lab):
    first = max((l.conn for l in tls_lab.recorder.lines()), default=0) + 1
    settings(tls_lab, inbound=("imap", "STARTTLS", "IMAP"))
    settings(tls_lab, inbound=("pop3", "STARTTLS", "pop3"))
    last = {}
    for s in grading._sessions(tls_lab, None, lambda line: line.conn >= first):
        protocol = s.service.split(":")[0]
        last[protocol] = s.commands(tagged=protocol.startswith("imap"))[-1]
    assert last == {"imap": "LOGOUT", "pop3": "QUIT", "submission": "QUIT"}


def test_verify_names_a_seal_of_another_thread_and_allows_the_learners_own_attributes(
        own_lab, monkeypatch):
    lab = own_lab
    monkeypatch.setattr(lab, "remember", print, raising=False)  # a learner's own callable
    grading.verify(lab)
    monkeypatch.setattr(lab.recorder._lines, "loop_ident", -1)
    with pytest.raises(grading.Tampered, match="^grading evidence cannot be trusted: the "
                       "transcript seal belongs to another thread$"):
        grading.verify(lab)


def test_verify_names_a_replaced_module_once(own_lab, monkeypatch):
    lab = own_lab
    import types as pytypes
    fake = pytypes.ModuleType("maillab.net")
    fake.__file__ = "/tmp/elsewhere/net.py"
    exec("def set_nodelay(transport):\n    pass\n", fake.__dict__)
    monkeypatch.setitem(sys.modules, "maillab.net", fake)
    with pytest.raises(grading.Tampered) as e:
        grading.verify(lab)
    assert str(e.value) == "grading evidence cannot be trusted: maillab.net was replaced"


def test_a_bare_lf_pair_does_not_end_a_typed_messages_headers():
    # RFC 5322 2.3: CR and LF only together end a line
    assert grading._typed_headers(b"Subject: a\n\nb\r\n\r\nbody\r\n") == {"subject": "a\n\nb"}


def test_fill_mailbox_delivers_the_box_numbered_as_pop3_numbers_it_and_logs_out(own_lab):
    lab = own_lab
    user, password = grading.make_account(lab, [grading.sample(1)])
    first = max((l.conn for l in lab.recorder.lines()), default=0) + 1
    grading.fill_mailbox(lab, user, password, f"{user}@example.com")
    boxes = sorted((grading.DiskMessage(p) for p in grading.maildir(lab, user).values()),
                   key=lambda m: m.header("Message-ID"))
    assert [(m.header("Subject"), m.header("Message-ID").split(".")[0]) for m in boxes] == [
        (subject, f"<box{i}") for i, (subject, _body) in enumerate(grading.POP3_BOX, 1)]
    imap = [s for s in grading._sessions(lab, "imap", lambda line: line.conn >= first)]
    assert imap[-1].commands(tagged=True)[-1] == "LOGOUT"


def test_every_earlier_definition_is_replayed_after_a_restart(tmp_path):
    robust, nb = _robust_run(tmp_path, "a = 1", "b = 2", "import os\nos._exit(1)",
                             "print(a + b)")
    nb, _ = robust.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert robust._restarts == 1
    assert [o.get("text") for o in nb.cells[3].outputs] == ["3\n"]


def test_a_clean_up_that_fails_after_a_failed_start_does_not_stop_the_second_try(tmp_path):
    from jupyter_client.kernelspec import NoSuchKernel
    robust, nb, tries = _kernel_that_cannot_start()

    def cleanup():
        raise RuntimeError("no kernel to clean up")

    robust._cleanup_kernel = cleanup
    with pytest.raises(NoSuchKernel):
        robust.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert len(tries) == 1 and "did not start" in tries[0]


def test_a_login_the_server_asked_more_of_is_judged_by_its_last_answer():
    """AUTH LOGIN (which the lab's SMTP server offers and names in its hints), AUTH PLAIN
    without its base64 on the same line, and IMAP's AUTHENTICATE: the server asks for more
    (334, +) and answers the login after the client's next line. Those lines belong to the
    login command: the grader said 'AUTH was refused: 334 ...' for a login that worked."""
    user, password = (base64.b64encode(w).decode() for w in (b"bob", b"secret"))
    done, steps = smtp(("EHLO pc", "250 ok"), ("AUTH LOGIN", "334 VXNlcm5hbWU6"),
                       (user, "334 UGFzc3dvcmQ6"), (password, "235 2.7.0 ok"), *ENVELOPE,
                       *MESSAGE, ("QUIT", "221 bye"), login="bob")
    assert all(done.values()), str(steps)
    plain = base64.b64encode(b"\0bob\0secret").decode()
    done, steps = smtp(("EHLO pc", "250 ok"), ("AUTH PLAIN", "334 "), (plain, "235 2.7.0 ok"),
                       *ENVELOPE, login="bob")
    assert done["login"], str(steps)
    done, steps = smtp(("EHLO pc", "250 ok"), ("AUTH LOGIN", "334 VXNlcm5hbWU6"),
                       (user, "334 UGFzc3dvcmQ6"), ("d3Jvbmc=", "535 5.7.8 no"), login="bob")
    assert steps.why("login") == "log in as bob (AUTH): AUTH was refused: '535 5.7.8 no'"
    ir = base64.b64encode(b"\0ann\0pw").decode()
    done, steps = imap(("C", "a1 AUTHENTICATE PLAIN"), ("S", "+ "), ("C", ir), ("S", "a1 OK in"))
    assert done["login"], str(steps)
    s = grading.Session([line("C", b"a1 IDLE\r\n"), line("S", b"+ idling\r\n"),
                         line("C", b"DONE\r\n"), line("S", b"a1 OK done\r\n")])
    assert [(e.command, e.data, e.replies) for e in grading.exchanges(s, "imap")] == [
        ("a1 IDLE", b"DONE\r\n", ["+ idling", "a1 OK done"])]


def test_a_test_cell_tagged_to_be_skipped_is_graded_as_not_run(tmp_path):
    """nbclient skips a cell tagged skip-execution: a test cell so tagged must not pass
    unseen (nbgrader counts a test cell without an error as passed)."""
    robust, nb = _robust_run(tmp_path, "x = 1", "assert x == 2")
    nb.cells[1].metadata = {"tags": ["skip-execution"], "nbgrader": {
        "grade": True, "solution": False, "grade_id": "t", "points": 1, "locked": True,
        "schema_version": 3, "task": False}}
    nb, _ = robust.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert [(o.get("output_type"), o.get("ename")) for o in nb.cells[1].outputs] == [
        ("error", "NotExecuted")]


def test_the_smtp_login_step_names_the_user_of_auth_login_and_of_plain_asked_for():
    """Once AUTH LOGIN and AUTH PLAIN without its base64 counted as logins, the user they
    logged in as must be checked too, not only that of AUTH PLAIN <base64>."""
    ann, pw = (base64.b64encode(w).decode() for w in (b"ann", b"secret"))
    done, steps = smtp(("EHLO pc", "250 ok"), ("AUTH LOGIN", "334 VXNlcm5hbWU6"),
                       (ann, "334 UGFzc3dvcmQ6"), (pw, "235 2.7.0 ok"), login="bob")
    assert steps.why("login") == "log in as bob (AUTH): you logged in as ann, not as bob"
    done, steps = smtp(("EHLO pc", "250 ok"), (f"AUTH LOGIN {ann}", "334 UGFzc3dvcmQ6"),
                       (pw, "235 2.7.0 ok"), login="bob")
    assert steps.why("login") == "log in as bob (AUTH): you logged in as ann, not as bob"
    plain = base64.b64encode(b"\0ann\0secret").decode()
    done, steps = smtp(("EHLO pc", "250 ok"), ("AUTH PLAIN", "334 "), (plain, "235 2.7.0 ok"),
                       login="bob")
    assert steps.why("login") == "log in as bob (AUTH): you logged in as ann, not as bob"
    # the accepted login is the one judged, not a refused one before it
    done, steps = smtp(("EHLO pc", "250 ok"), (auth_plain("ann"), "535 5.7.8 no"),
                       (auth_plain("bob"), "235 2.7.0 ok"), login="bob")
    assert done["login"], str(steps)


def test_exchanges_carry_a_literal_over_lines_and_without_a_go_ahead():
    append = grading.Session([line("C", b"a1 APPEND Work {20}\r\n"), line("S", b"+ go\r\n"),
                              line("C", b"Subject: x\r\n"), line("C", b"\r\n"),
                              line("C", b"body\r\n"), line("S", b"a1 OK\r\n")])
    assert [(e.command, e.data) for e in grading.exchanges(append, "imap")] == [
        ("a1 APPEND Work {20}", b"Subject: x\r\n\r\nbody\r\n")]
    plus = grading.Session([line("C", b"a1 LOGIN {5+}\r\n"), line("C", b"alice pw\r\n"),
                            line("S", b"a1 OK\r\n")])  # LITERAL+: no '+' from the server
    assert [(e.command, e.data) for e in grading.exchanges(plus, "imap")] == [
        ("a1 LOGIN {5+}", b"alice pw\r\n")]
    pipelined = grading.Session([line("C", b"a1 NOOP\r\n"), line("C", b"a2 NOOP\r\n")])
    assert [e.command for e in grading.exchanges(pipelined, "imap")] == ["a1 NOOP", "a2 NOOP"]


def test_auth_user_names_no_one_for_a_mechanism_or_base64_it_cannot_read():
    def user(command, data=b""):
        return grading._auth_user(grading.Exchange(command, ["235 2.7.0 ok"], data))
    assert user("AUTH CRAM-MD5", b"Ym9iIDEyMzQ=\r\n") is None  # 'bob 1234': not a login name
    assert user("AUTH PLAIN !!") is None and user("AUTH LOGIN", b"//8=\r\n") is None
    assert user("auth login", b"Ym9i\r\n") == "bob"


# ------------------------------------------------------------------ Session.commands, unwritten_function
def _session(*lines):
    return grading.Session([Line(0, "imap:example.com", 1, who, raw) for who, raw in lines])


def test_a_literal_of_one_byte_is_skipped_and_so_is_only_it():
    # LITERAL+ (no '+' from the server): the user name "x" is the literal, " y" the password
    s = _session(("C", b"a1 LOGIN {1+}\r\n"), ("C", b"x y\r\n"), ("S", b"a1 OK\r\n"),
                 ("C", b"a2 NOOP\r\n"))
    assert s.commands(tagged=True) == ["LOGIN", "NOOP"]


def test_the_line_after_a_literal_the_server_asked_for_is_a_command_again():
    # the next command sent before the server's answer to the first (pipelined)
    s = _session(("C", b"a1 APPEND INBOX {5}\r\n"), ("S", b"+ Ready for literal data\r\n"),
                 ("C", b"hello\r\n"), ("C", b"a2 NOOP\r\n"), ("S", b"a1 OK\r\n"),
                 ("S", b"a2 OK\r\n"))
    assert s.commands(tagged=True) == ["APPEND", "NOOP"]


def test_only_a_notebook_functions_own_not_implemented_error_names_it():
    namespace: dict = {}
    exec("def unwritten():\n    raise NotImplementedError()\n"
         "def broken():\n    raise ValueError('not that')\n", namespace)
    for name, kind in (("unwritten", NotImplementedError), ("broken", ValueError)):
        try:
            namespace[name]()
        except kind as e:
            error = e
        assert grading.unwritten_function(error, namespace) == (
            "unwritten" if kind is NotImplementedError else None)
    assert grading.unwritten_function(NotImplementedError(), namespace) is None  # never raised


def test_a_refusal_quotes_the_command_up_to_40_and_the_answer_up_to_60_characters():
    e = grading.Exchange("MAIL FROM:<" + "a" * 50 + "@b>", ["550 " + "x" * 100])
    said = grading._refusal([e], lambda e: True)
    assert said == " (the server answered {0} with {1})".format(
        grading._quoted(e.command, 40), grading._quoted("550 " + "x" * 100, 60))
    assert f"'550 {'x' * 53}...'" in said  # 60 characters with the dots
