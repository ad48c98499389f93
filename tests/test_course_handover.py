"""One lab per Jupyter server on the usual ports (issue 11): closing a tab leaves its kernel and its
lab running, so the lab of the next notebook takes the ports over from it (maillab.handover).

The kernels here are real IPython kernels started by jupyter_client, as JupyterLab starts them:
they share the test process as their Jupyter parent (JPY_PARENT_PID), like two notebooks of one
learner. Labs outside that scope (other test runs, another user's) are never asked to stop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
from contextlib import contextmanager

import pytest
from jupyter_client.manager import start_new_kernel

import maillab
from maillab import handover


@contextmanager
def kernel():
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc, code: str, timeout: float = 60) -> str:
    """Run code in a kernel; return its printed output (fail on an error)."""
    msg_id = kc.execute(code)
    out, error = "", None
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out += content["text"]
        elif kind == "error":
            error = "\n".join(content["traceback"])
        elif kind == "status" and content["execution_state"] == "idle":
            break
    assert error is None, error
    return out


START = """
import json, maillab
from maillab.widgets import Console
lab = maillab.start()
lab
print(json.dumps({"pid": __import__("os").getpid(), "took_over": lab.took_over,
                  "ports": {s.name: s.port for s in lab.services},
                  "wanted": {s.name: w for s, w in lab._wanted_ports()}}))
"""


def started(kc) -> dict:
    return json.loads(run(kc, START).strip().splitlines()[-1])


def usual(info: dict) -> dict:
    """The services that got their usual (mnemonic) port."""
    return {name: port for name, port in info["ports"].items() if info["wanted"][name] == port}


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_new_lab_takes_the_usual_ports_over_from_an_older_kernel():
    with kernel() as (_km_a, a), kernel() as (km_b, b):
        first = started(a)
        held = usual(first)
        if not held:
            pytest.skip("another program holds every usual port on this machine")
        run(a, "console = Console(lab)")
        second = started(b)
        # the new lab asked the old one, which gave every usual port back
        assert [t["pid"] for t in second["took_over"]] == [first["pid"]]
        assert {name: second["ports"][name] for name in held} == held
        state = json.loads(run(a, "print(json.dumps({'running': lab.running, 'repr': repr(lab), "
                                  "'html': lab._repr_html_()}))"))
        assert not state["running"]
        assert "took over its ports" in state["repr"] and "Run the first cell again" in state["html"]
        run(a, "console.send('NOOP')")
        said = run(a, "print(console.transcript_text())")
        assert "the lab is stopped: run the first cell again" in said
        assert "Refused" not in said
        note = run(b, "print(lab.status_note())")
        assert "took the usual ports over" in note
        # the old kernel keeps no listener and no thread of its lab
        threads = run(a, "import threading; print([t.name for t in threading.enumerate()])")
        assert "maillab-loop" not in threads
        # a kernel that dies without stopping its lab leaves a control socket nobody answers
        os.kill(second["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (km_b.is_alive() or any(listening(p) for p in held.values())) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        with kernel() as (_km_c, c):
            third = started(c)
            assert third["took_over"] == []  # nobody was there to ask
            assert {name: third["ports"][name] for name in held} == held
            folder = run(c, "from maillab import handover; print(handover.control_dir())").strip()
            socks = sorted(os.listdir(folder))
            assert socks == [f"{third['pid']}-" + socks[0].split("-", 1)[1]], socks
            run(c, "lab.stop()")
            assert os.listdir(folder) == []  # a stopped lab removes its control socket


def test_labs_outside_jupyter_or_off_the_usual_ports_are_never_asked(monkeypatch, tmp_path):
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    assert handover.control_dir() is None and handover.stop_older_labs() == []
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with maillab.MailLab(ports="any") as lab:
        assert lab._control is None  # free ports: nothing to give back
        assert list(handover.control_dir().iterdir()) == []


def test_the_control_folder_must_be_private(monkeypatch, tmp_path):
    monkeypatch.setenv("JPY_PARENT_PID", "4242")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = handover.control_dir()
    assert folder == tmp_path / "maillab" / "4242"
    for path in (folder, folder.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    folder.parent.chmod(0o755)  # others could enter: no handover at all
    assert handover.control_dir() is None
    folder.parent.chmod(0o700)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "maillab").rename(tmp_path / "moved")
    (tmp_path / "maillab").symlink_to(tmp_path / "elsewhere")  # a planted link
    assert handover.control_dir() is None


def test_a_control_socket_answers_only_a_stop_request(monkeypatch, tmp_path):
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with maillab.MailLab() as lab:
        path = lab._control.path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for junk in (b"hello\n", b'{"op": "status"}\n', b"x" * 5000):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(path))
                s.sendall(junk)
                assert s.recv(100) == b""  # hung up on, nothing else
        assert lab.running
        # a stale socket file of a killed kernel is removed by the next lab that asks
        stale = path.parent / "1-1.sock"
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(str(stale))
        dead.close()
        answers = handover.stop_older_labs()
        assert [a["pid"] for a in answers] == [os.getpid()] and not stale.exists()
        deadline = time.monotonic() + 10
        while lab.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not lab.running and lab.replaced_by["pid"] == os.getpid()
        assert not path.exists()


def test_a_replaced_lab_frees_its_memory():
    # issue 11: `lab = maillab.start()` then `lab`, run again and again, kept every old lab's
    # transcripts and wire copies alive in IPython's output cache (~65 MB a re-run in 07)
    import gc
    import smtplib
    import weakref

    kept = []  # what IPython's Out[] does with every displayed lab
    for explicit_stop in (False, True):
        lab = maillab.start(ports="any")
        with smtplib.SMTP("127.0.0.1", lab.smtp_port) as s:
            for n in range(20):
                s.sendmail("x@example.org", ["bob@example.com"],
                           f"Subject: {n}\r\n\r\n" + "x" * 500 + "\r\n")
        assert len(lab.recorder.lines()) > 100
        loop = weakref.ref(lab._loop)
        if explicit_stop:
            lab.stop()  # the notebook's last cell, then the first cell again
        kept.append(lab)
        newer = maillab.start(ports="any")
        gc.collect()
        assert not lab.running and lab.recorder.lines() == []
        assert lab.store is None and lab.router is None and lab._last_loop is None
        assert loop() is None, "the old lab's event loop (and its wire copies) is still alive"
        newer.stop()


def test_the_table_says_why_a_port_is_not_the_usual_one():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    try:
        with maillab.MailLab(ports={"smtp": busy}) as lab:
            note = lab.status_note()
            assert f"{busy} \u2192 {lab.smtp_port} (SMTP mail.example.com)" in note, note
            assert "Another program" in note and note in lab._repr_html_()
    finally:
        taken.close()
    with maillab.MailLab(ports="any") as lab:
        assert lab.status_note() == ""  # free ports were asked for: nothing to explain
