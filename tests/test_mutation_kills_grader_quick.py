"""Tests that pin down what bench/mutation.py's 40% sample of the grader's quick modules found
unguarded (sandbox, sealed lab, its client, the learner's answer process).

Each test states a behaviour the grading rests on and was checked to fail on the planted bug it
is named after: the sandbox's environment and its clean-up of a submission's processes, the
sealed lab's limits and its control socket, the client's retries, and the grader's side of the
answer process when the learner's code lies on the channel.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import maillab
from conftest import require_root
from maillab.grader import client, codec, sealed as sealed_module
from maillab.grader.learner import (AnswerProcess, Handle, LearnerDied, LearnerException,
                                    LearnerFunction, LearnerStopped, LearnerTimeout, _buffered)
from maillab.grader.sandbox import (Limits, Sandbox, _alive_of_user, _inner_pid, _zombie,
                                    maillab_folder, python_folders)
from maillab.grader.sealed import SealedLab

from test_grader_answers import answers, spawn  # noqa: F401 (fixture)
from test_grader_sandbox import UID, run, sandbox  # noqa: F401 (fixture)

# A user id of this process's own for the tests that count a user's processes: another pytest
# running the sandbox tests at the same time (mutation workers do) uses UID.
OWN_UID = 2_000_198_000 + os.getpid() % 1000
from test_grader_sealed import sealed  # noqa: F401 (fixture)


# ------------------------------------------------------------------ sandbox
def test_the_sandbox_environment_names_the_student_and_finds_python_and_maillab(tmp_path):
    box = Sandbox(UID, tmp_path, [], env={"LANG": "el_GR.UTF-8"})
    env = box.environment({"EXTRA": "1"})
    assert env["USER"] == env["LOGNAME"] == "student" and env["HOME"] == "/home/student"
    assert env["PATH"].split(os.pathsep) == [os.path.dirname(sys.executable), "/usr/local/bin",
                                             "/usr/bin", "/bin"]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONNOUSERSITE"] == "1"
    # maillab is importable even from a checkout that no site-packages knows
    assert env["PYTHONPATH"] == os.path.dirname(maillab_folder())
    assert env["LANG"] == "el_GR.UTF-8" and env["EXTRA"] == "1"  # the sandbox's, then the call's


def test_the_sandbox_home_is_shared_sticky_and_python_leaves_no_bytecode_there(sandbox):
    got = run(sandbox, """
        import json, os, sys
        open("/home/student/mine.py", "w").write("VALUE = 42\\n")
        sys.path.insert(0, "/home/student")
        import mine
        print(json.dumps({"home": oct(os.stat("/home/student").st_mode & 0o7777),
                          "tmp": oct(os.stat("/tmp").st_mode & 0o7777),
                          "value": mine.VALUE,
                          "left": sorted(os.listdir("/home/student"))}))
    """)
    assert got["home"] == got["tmp"] == oct(0o1777)
    assert got["value"] == 42 and got["left"] == ["mine.py"]  # no __pycache__


def test_a_process_of_the_sandbox_user_is_seen_until_it_is_ended_and_reaped():
    require_root("processes of another user")
    proc = subprocess.Popen(["sleep", "60"], user=OWN_UID, group=OWN_UID, extra_groups=[])
    try:
        assert _alive_of_user(OWN_UID) and _alive_of_user(OWN_UID, zombies=True)
        os.kill(proc.pid, 9)
        deadline = time.monotonic() + 10
        while not _zombie(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        # dead but not reaped: a zombie counts against the user's process limit
        assert not _alive_of_user(OWN_UID) and _alive_of_user(OWN_UID, zombies=True)
    finally:
        proc.kill()
        proc.wait()
    assert not _alive_of_user(OWN_UID, zombies=True)


def test_kill_all_returns_as_soon_as_the_user_has_nothing_left(tmp_path):
    require_root("kill as another user")
    box = Sandbox(OWN_UID, tmp_path, [])
    proc = subprocess.Popen(["sleep", "60"], user=OWN_UID, group=OWN_UID, extra_groups=[])
    try:
        start = time.monotonic()
        box.kill_all(wait=30)
        assert proc.wait(10) == -9
        box.kill_all(wait=30, reaped=True)
        assert time.monotonic() - start < 10  # not the whole 30 s budget
    finally:
        proc.kill()
        proc.wait()


def test_zombies_and_inner_pids_are_read_from_proc():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while not _zombie(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _zombie(child.pid)
    child.wait()
    assert not _zombie(os.getpid())
    assert _zombie(2 ** 22 + 12345)  # gone counts as dead
    assert _inner_pid(os.getpid()) is not None
    assert _inner_pid(2 ** 22 + 12345) is None


# ------------------------------------------------------------------ sealed lab
def test_the_sealed_lab_makes_exactly_its_quota_of_test_accounts(sealed, monkeypatch):
    grader = sealed(tls=False)
    monkeypatch.setattr(sealed_module, "MAX_ACCOUNTS", 3)
    for _ in range(3):
        grader.make_account([], None, [])
    with pytest.raises(ValueError, match="too many test accounts"):
        grader.make_account([], None, [])


def test_an_accounts_messages_may_fill_the_byte_limit_exactly(sealed, monkeypatch):
    grader = sealed(tls=False)
    monkeypatch.setattr(sealed_module, "MAX_ACCOUNT_BYTES", 100)
    message = b"Subject: x\r\n\r\n" + b"y" * 86
    assert len(message) == 100
    user, _password = grader.make_account([base64.b64encode(message).decode()], None, [])
    assert [m.raw for m in grader.lab.mailbox(user)] == [message]
    with pytest.raises(ValueError, match="too many test accounts"):
        grader.make_account([base64.b64encode(message + b"z").decode()], None, [])


def test_closing_the_sealed_lab_stops_its_servers_and_its_control_socket(tmp_path):
    control = tmp_path / "control"
    control.mkdir()
    grader = SealedLab(tmp_path / "private", control / "lab.sock", {"tls": False})
    port = grader.lab.smtp_port
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    grader.close()
    grader.close()  # a second time: nothing happens
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with socket.socket(socket.AF_UNIX) as s, pytest.raises(OSError):
        s.settimeout(5)
        s.connect(str(control / "lab.sock"))
        s.sendall(b'{"op": "info"}\n')
        if not s.recv(10):
            raise ConnectionError("closed")


def test_a_grader_that_forgets_to_close_its_sealed_lab_still_exits(tmp_path):
    code = textwrap.dedent(f"""
        from pathlib import Path
        from maillab.grader.sealed import SealedLab
        folder = Path({str(tmp_path)!r})
        (folder / "control").mkdir()
        SealedLab(folder / "private", folder / "control" / "lab.sock", {{"tls": False}})
        print("made", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "made", done.stderr[-2000:]


def test_a_message_file_removed_meanwhile_is_left_out_of_the_evidence(sealed, monkeypatch):
    grader = sealed(tls=False)
    real = grader.lab.root / "one-file"
    real.write_bytes(b"Subject: here\r\n\r\n")
    from maillab import grading
    monkeypatch.setattr(grading, "maildir", lambda lab, user, folder: {
        "gone": real.parent / "gone-meanwhile", "here": real})
    got = grader.files("bob", "INBOX")
    assert [(base, name) for base, name, _mtime, _raw in got] == [("here", "one-file")]


def test_a_request_that_is_not_a_json_object_is_named_as_such(sealed):
    grader = sealed(tls=False)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(grader.control.server_address))
        f = sock.makefile("rb")
        for request in (b"[1, 2]\n", b'"info"\n', b"7\n"):
            sock.sendall(request)
            assert json.loads(f.readline()) == \
                {"error": "ValueError: a request is a JSON object"}


# ------------------------------------------------------------------ the notebook's client
def test_the_client_gives_up_after_its_second_attempt_with_the_real_error(tmp_path):
    control = client._Control(str(tmp_path / "no-such.sock"))
    with pytest.raises(FileNotFoundError):
        control.ask("info")
    assert control.sock is None


def test_settle_asks_the_sealed_lab_with_the_notebooks_timeout(sealed):
    grader = sealed(tls=False)
    asked = []
    grader.settle = asked.append
    lab = maillab.start()
    lab.settle(3)
    lab.settle()
    assert asked == [3, 10]


# ------------------------------------------------------------------ the answer process
LOOP = '''
def spin():
    while True:
        pass
def fine():
    return "fine"
def made():
    return object()
def same(x):
    return x
'''


def test_the_checks_overall_deadline_cuts_a_call_short_of_its_own_limit(answers):
    a = answers(LOOP, call_limit=60)
    a.deadline = time.monotonic() + 1
    start = time.monotonic()
    with pytest.raises(LearnerTimeout):
        LearnerFunction(a, "spin")()
    assert time.monotonic() - start < 20


def test_every_request_carries_a_new_id(answers, monkeypatch):
    a = answers(LOOP)
    sent = []
    real = a.send
    monkeypatch.setattr(a, "send", lambda message, fds=(): (sent.append(message.get("id")),
                                                             real(message, fds)))
    assert LearnerFunction(a, "fine")() == "fine"
    assert LearnerFunction(a, "fine")() == "fine"
    assert len(sent) == 2 and sent[1] == sent[0] + 1


FORGER = '''
import os, time
from maillab.grader.codec import frame
def forge():
    os.write(int(os.environ["MAILLAB_ANSWERS_FD"]), frame({"id": 10 ** 6, "ok": "passed"}))
    time.sleep(120)
'''


def test_a_reply_forged_with_a_wrong_id_ends_the_answer_process(answers):
    a = answers(FORGER, call_limit=60)
    proc = a.proc
    with pytest.raises(LearnerDied, match="unexpected"):
        LearnerFunction(a, "forge")()
    assert proc.wait(10) is not None  # ended, not left sleeping with its forged channel


def test_an_object_from_an_earlier_run_of_the_code_is_refused(answers):
    a = answers(LOOP)
    old = LearnerFunction(a, "made")()
    assert isinstance(old, Handle)
    assert LearnerFunction(a, "same")(old) is not None
    a.kill()
    a.ensure_loaded()
    with pytest.raises(LearnerStopped, match="earlier run"):
        LearnerFunction(a, "same")(old)


def test_a_forged_class_list_that_python_cannot_combine_still_gives_an_exception():
    a = AnswerProcess([], spawn)
    a.standin("learner", "Twice")
    e = a.exception_from({"mro": [["learner", "Twice"], ["learner", "Twice"]], "text": "no"})
    assert type(e).__name__ == "Twice" and isinstance(e, LearnerException)
    assert e.learner_text == "no"


def test_a_socket_file_of_a_reset_connection_hands_over_no_buffered_bytes():
    with socket.create_server(("127.0.0.1", 0)) as server:
        mine = socket.create_connection(server.getsockname(), timeout=5)
        theirs, _ = server.accept()
        with mine, theirs:
            reader = mine.makefile("rb")
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            theirs.close()  # an RST: reading now raises ConnectionResetError
            time.sleep(0.2)
            assert _buffered(reader) == b""
            assert mine.gettimeout() == 5


def test_a_handed_over_file_read_in_small_pieces_gives_the_buffered_bytes_in_order(answers):
    """read1(n) reads the raw stream straight into an n-byte buffer: the bytes the grader had
    buffered come out n at a time."""
    a = answers("def pieces(f):\n    return [f.read1(3), f.read1(3), f.readline()]")
    left, right = socket.socketpair()
    f = left.makefile("rb")
    try:
        right.sendall(b"one\r\n250 OK\r\n")
        assert f.readline() == b"one\r\n"  # "250 OK\r\n" stays in the grader's buffer
        assert LearnerFunction(a, "pieces")(f) == [b"250", b" OK", b"\r\n"]
    finally:
        f.close()
        left.close()
        right.close()


def test_the_codecs_depth_limit_counts_a_dictionary_key_as_a_level_like_its_value():
    def tuples(levels):
        wire = 1
        for _ in range(levels):
            wire = {"$t": [wire]}
        return wire

    def decodes(wire) -> bool:
        try:
            codec.decode(wire)
            return True
        except codec.CodecError:
            return False
    as_value = [decodes({"$d": [[1, tuples(n)]]}) for n in range(codec.MAX_DEPTH + 6)]
    as_key = [decodes({"$d": [[tuples(n), 1]]}) for n in range(codec.MAX_DEPTH + 6)]
    assert as_key == as_value and True in as_value and False in as_value
