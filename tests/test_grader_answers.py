"""maillab.grader's answer process and the values that cross to the grader (no sandbox here).

The learner's code loads in a fresh interpreter one statement at a time; the grader calls it
through proxies and gets plain data back. These tests pin down what the sealed grading rests
on: a lying ``__eq__`` never reaches a check, a statement that ends or hangs Python is skipped
(the functions around it survive), exceptions keep their learner-side names, and sockets and
TLS contexts a check opens reach the learner's code.
"""

from __future__ import annotations

import io
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

from maillab.grader import codec
from maillab.grader.learner import (AnswerProcess, Handle, LearnerDied, LearnerException,
                                    LearnerFunction, LearnerTimeout)


def spawn(fd: int) -> subprocess.Popen:
    env = dict(os.environ, MAILLAB_ANSWERS_FD=str(fd))
    return subprocess.Popen([sys.executable, "-m", "maillab.grader.answers"], env=env,
                            pass_fds=[fd])


@pytest.fixture
def answers():
    made = []

    def make(*cells, **kwargs):
        a = AnswerProcess(list(cells), spawn, **kwargs)
        made.append(a)
        a.ensure_loaded()
        return a
    yield make
    for a in made:
        a.kill()


# ------------------------------------------------------------------ codec
def test_plain_values_round_trip_and_keep_their_exact_types():
    value = {"a": [1, 2.5, None, True], (1, "x"): {b"\x00\xff", frozenset({3})},
             "b": bytearray(b"ok"), "nan": float("inf")}
    back = codec.decode(codec.encode(value))
    assert back == value
    assert type(back["b"]) is bytearray and type(next(iter(back[(1, "x")]))) in (bytes, frozenset)


def test_anything_that_is_not_exact_data_is_refused_or_becomes_a_handle():
    class Yes(bytes):
        def __eq__(self, other):
            return True
    with pytest.raises(codec.CodecError):
        codec.encode(Yes(b"x"))
    assert codec.encode([Yes(b"x")], lambda v: {"$h": 7, "type": "Yes"}) == \
        [{"$h": 7, "type": "Yes"}]


def test_decoding_refuses_what_encode_never_makes():
    for bad in ({"$h": 1}, {"$zz": 1}, {"$b": 5}, {"$d": [[1]]}, {"a": 1, "b": 2}):
        with pytest.raises(codec.CodecError):
            codec.decode(bad)
    with pytest.raises(codec.CodecError):
        codec.read_frame(lambda n: (b"\xff\xff\xff\xff", []))


# ------------------------------------------------------------------ the answer process
def test_a_lying_eq_never_reaches_the_grader(answers):
    a = answers('''
class Yes(bytes):
    def __eq__(self, other):
        return True
def dot_stuff(text):
    return Yes(b"whatever")
PORT = Yes(b"25")
''')
    got = LearnerFunction(a, "dot_stuff")("x")
    assert isinstance(got, Handle) and got != b"whatever" and not got == b"anything"
    assert a.names["PORT"]["kind"] == "object"
    assert "Yes" in repr(got)  # what it is, for the learner's feedback


def test_statements_that_end_or_hang_python_are_skipped_and_the_rest_loads(answers):
    a = answers('''
import os, time
def first():
    return "first"
os._exit(3)
def second():
    return "second"
''', '''
while True:
    pass
def third():
    return 3
''', statement_limit=1.0)
    assert LearnerFunction(a, "first")() == "first"
    assert LearnerFunction(a, "second")() == "second"
    assert LearnerFunction(a, "third")() == 3
    assert len(a.events) == 2 and "exit code 3" in a.events[0] and "1 s" in a.events[1]


def test_a_call_that_ends_or_outlasts_python_fails_and_the_next_call_gets_a_fresh_process(
        answers):
    a = answers('''
import os
def die():
    os._exit(5)
def spin():
    while True:
        pass
def fine():
    return "fine"
''', call_limit=1.0)
    with pytest.raises(LearnerDied, match="exit code 5"):
        LearnerFunction(a, "die")()
    assert LearnerFunction(a, "fine")() == "fine"
    with pytest.raises(LearnerTimeout):
        LearnerFunction(a, "spin")()
    assert LearnerFunction(a, "fine")() == "fine"
    assert a.generation == 3


STAND_IN_GRADER = """
import os, socket, subprocess, sys
from maillab.grader.codec import frame, read_frame
mine, theirs = socket.socketpair()
proc = subprocess.Popen([sys.executable, "-m", "maillab.grader.answers"], pass_fds=[theirs.fileno()],
                        env=dict(os.environ, MAILLAB_ANSWERS_FD=str(theirs.fileno())))
mine.sendall(frame({"cells": ["while True:\\n    pass"], "skip": []}))
read_frame(lambda n: (mine.recv(n), []))  # the first statement is about to run
print(proc.pid, flush=True)
os._exit(0)  # a grader killed while the learner's code spins
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_answer_process_ends_when_its_grader_is_gone_even_while_learner_code_spins():
    out = subprocess.run([sys.executable, "-c", STAND_IN_GRADER], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    pid = int(out.split()[0])
    try:
        deadline = time.monotonic() + 10
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(pid), "the orphaned answer process is still running"
    finally:
        if _running(pid):
            os.kill(pid, 9)


def test_learner_exceptions_keep_their_names_and_standard_bases(answers):
    a = answers('''
import ssl
class POP3Error(Exception):
    pass
def refuse():
    raise POP3Error("-ERR no such user")
def hang_up():
    raise ConnectionError("the server closed the connection")
def tls():
    raise ssl.SSLCertVerificationError("certificate verify failed")
''')
    pop3_error = a.standin("__main__", "POP3Error")
    with pytest.raises(pop3_error) as e:
        LearnerFunction(a, "refuse")()
    assert e.value.learner_text == "-ERR no such user" and isinstance(e.value, LearnerException)
    with pytest.raises(ConnectionError):
        LearnerFunction(a, "hang_up")()
    with pytest.raises(ssl.SSLError):
        LearnerFunction(a, "tls")()


def test_sockets_files_streams_and_tls_contexts_reach_the_learners_code(answers):
    a = answers('''
import io
def read_line(f):
    return f.readline()
def peer_says(sock):
    return sock.recv(100)
def both(f, tag):
    return tag, f.read(3)
def context(ctx):
    return ctx.check_hostname, len(ctx.get_ca_certs())
def connect(sock_file):
    return sock_file
''')
    left, right = socket.socketpair()
    right.sendall(b"first line\r\nsecond line\r\n")
    f = left.makefile("rb")
    assert f.readline() == b"first line\r\n"  # the grader read one line; the learner the next
    assert LearnerFunction(a, "read_line")(f) == b"second line\r\n"
    right.sendall(b"more")
    assert LearnerFunction(a, "peer_says")(left) == b"more"
    stream = io.BytesIO(b"abcdef")
    stream.read(2)
    assert LearnerFunction(a, "both")(stream, "t") == ("t", b"cde")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    assert LearnerFunction(a, "context")(ctx) == (False, len(ctx.get_ca_certs()))
    with pytest.raises(TypeError, match="cannot hand a"):
        LearnerFunction(a, "connect")(object())


def test_returned_objects_are_handles_whose_methods_run_in_the_answer_process(answers):
    a = answers('''
import socket
def pair():
    mine, theirs = socket.socketpair()
    theirs.sendall(b"+OK hello\\r\\n")
    kept.append(theirs)
    return mine, mine.makefile("rb")
kept = []
''')
    sock, f = LearnerFunction(a, "pair")()
    assert isinstance(sock, Handle) and isinstance(f, Handle)
    assert f.readline() == b"+OK hello\r\n"
    sock.close()


def test_a_child_of_os_fork_does_not_answer_for_the_parent(answers):
    a = answers('''
import os
def fork_and_return():
    os.fork()
    return os.getpid()
''')
    first = LearnerFunction(a, "fork_and_return")()
    assert type(first) is int
    assert LearnerFunction(a, "fork_and_return")() == first  # always the same (parent) process


def test_nesting_past_the_depth_limit_is_a_handle_or_refused_whatever_the_container():
    """Each level counts, tuples and dict pairs too: a value nested deeper than MAX_DEPTH
    goes as a handle (or is refused without one); a message nested deeper is refused."""
    deep_tuple, deep_dict = (), {"$d": []}
    for _ in range(codec.MAX_DEPTH + 5):
        deep_tuple = (deep_tuple,)
        deep_dict = {"$d": [[{"$t": []}, deep_dict]]}
    encoded = codec.encode(deep_tuple, other=lambda obj: {"$h": 7})
    assert str(encoded).count("$t") == codec.MAX_DEPTH and "'$h': 7" in str(encoded)
    with pytest.raises(codec.CodecError, match="cannot send a tuple"):
        codec.encode(deep_tuple)
    with pytest.raises(codec.CodecError, match="too deeply nested"):
        codec.decode(deep_dict)


def test_closing_a_descriptor_that_is_gone_is_no_error():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    codec._close(r)  # (received descriptors are closed on error paths, some twice)


def test_a_handed_over_file_gives_what_the_grader_had_buffered_then_the_rest(answers):
    a = answers("def two_lines(f):\n    return [f.readline(), f.readline()]")
    left, right = socket.socketpair()
    f = left.makefile("rb")
    try:
        right.sendall(b"one\r\n" + b"x" * 10_000 + b"\r\n")
        assert f.readline() == b"one\r\n"  # the grader's reader holds part of the next line
        right.sendall(b"three\r\n")
        assert LearnerFunction(a, "two_lines")(f) == [b"x" * 10_000 + b"\r\n", b"three\r\n"]
    finally:
        f.close()
        left.close()
        right.close()


def test_a_cell_with_ipython_syntax_still_defines_its_functions(answers):
    a = answers("def one():\n    return 1\n%ls\n!echo hi")
    assert LearnerFunction(a, "one")() == 1
    assert not any(p[2] == "SyntaxError" for p in a.problems)


def test_text_the_learners_objects_refuse_to_give_is_a_question_mark(answers):
    a = answers('''
class Mute(Exception):
    def __str__(self):
        raise RuntimeError("no")
class Odd(Exception):
    def __str__(self):
        return 42
class Sneaky(str):
    def __eq__(self, other):
        return True
class Sly(Exception):
    def __str__(self):
        return Sneaky("a str that equals anything")
def mute():
    raise Mute()
def odd():
    raise Odd()
def sly():
    raise Sly()
''')
    for name in ("mute", "odd", "sly"):
        with pytest.raises(LearnerException) as e:
            LearnerFunction(a, name)()
        assert e.value.learner_text == "?"


def test_what_the_loading_reports_is_bounded(answers):
    a = answers(*["this is not ( python"] * 60,
                "import types\nm = types.ModuleType('x' * 250)")
    assert len(a.problems) == 50
    assert a.names["m"] == {"kind": "module", "module": "x" * 200}


def test_restarting_the_answer_process_leaves_no_descriptor_open(answers):
    """Each start makes a socket pair and hands one end to the new process: the grader must
    close its copy of that end, or a grading of a notebook that ends Python again and again
    runs out of descriptors (and never sees the old process's end of file)."""
    a = answers("import os\ndef die():\n    os._exit(1)\ndef ok():\n    return 1")
    assert LearnerFunction(a, "ok")() == 1
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(LearnerDied):
            LearnerFunction(a, "die")()
        assert LearnerFunction(a, "ok")() == 1
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_session_typed_by_hand_is_not_loaded_and_reports_no_error(answers):
    """A `%%pop3` cell (the learner's session, run by the notebook's kernel) became a
    get_ipython() call here, and every honest submission's report listed "NameError: name
    'get_ipython' is not defined" under "loading"."""
    a = answers("def one():\n    return 1", "%%pop3 example.com\nUSER bob\nPASS builder",
                "\n  %%smtp example.com\nEHLO desk.example.com")
    assert a.problems == []
    assert LearnerFunction(a, "one")() == 1


def test_the_grader_names_the_function_that_is_not_written_yet(answers):
    """The verdict of a test that met the student version's `raise NotImplementedError()` was
    an empty message: it names the unwritten function (the innermost one), in the learner's
    language, as the notebook's kernel does."""
    from maillab import i18n
    from maillab.grader.checks import TestRun

    a = answers('''
def read_multiline(f):
    # YOUR CODE HERE
    raise NotImplementedError()
def list_messages(host, port, user, password):
    return read_multiline(None)
def later():
    raise NotImplementedError("next week")
''')
    run = TestRun(a, None, [])
    verdict = run.run("list_tests", "list_messages('127.0.0.1', 110, 'bob', 'builder')")
    assert (verdict.passed, verdict.kind, verdict.message) == (
        False, "NotImplementedError",
        "you have not written read_multiline yet (it still raises NotImplementedError)")
    assert run.run("t", "later()").message == \
        "you have not written later yet (it still raises NotImplementedError): next week"
    with i18n.language("el"):
        verdict = run.run("list_tests", "list_messages('127.0.0.1', 110, 'bob', 'builder')")
    assert verdict.message == \
        "δεν έχεις γράψει ακόμη τη read_multiline (σηκώνει ακόμη NotImplementedError)"
