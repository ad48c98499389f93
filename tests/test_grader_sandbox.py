"""The sandbox a submission's code runs in (maillab.grader.sandbox), tried as an attacker would.

Every test runs code through ``Sandbox.command`` (bubblewrap, prlimit, setpriv to a throwaway
user) exactly as the grader starts a learner's kernel and answer process, and checks from the
outside that the sandbox held: the course folder and the grader's files are not there, writes
land only in the sandbox's own small tmpfs, the grader cannot be signalled, a fork bomb stays
inside its limit and dies with the sandbox, and a worker's network namespace reaches nothing
but itself. Needs root and bubblewrap (CI has both).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import require_tool, sandbox_control
from labcourse import ROOT

from maillab.grader.sandbox import Limits, Sandbox, _alive_of_user, python_folders

# A throwaway user id of these tests only, and of this pytest only: mutation workers run these
# tests in two processes at once, and one's clean-up (kill -1 as the user) or process count
# would meet the other's processes (UID + 10 and + 11 are used too).
UID = 2_000_190_000 + (os.getpid() % 500) * 16


@pytest.fixture
def sandbox(tmp_path):
    box = Sandbox(UID, sandbox_control(tmp_path), python_folders(), Limits(processes=48, home_size=8 << 20,
                                                         tmp_size=4 << 20))
    yield box
    box.kill_all()


def run(box: Sandbox, code: str, timeout: float = 60, **env) -> dict:
    """Run Python code in the sandbox; it prints one JSON line with what it found."""
    cmd = box.command([sys.executable, "-c", textwrap.dedent(code)],
                      env={k: str(v) for k, v in env.items()})
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          cwd=str(box.control_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_sandbox_runs_as_a_throwaway_user_without_privileges(sandbox):
    got = run(sandbox, """
        import json, os
        status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
        print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups(),
                          "caps": status["CapEff"].strip(), "nnp": status["NoNewPrivs"].strip(),
                          "pid": os.getpid(), "cwd": os.getcwd()}))
    """)
    assert (got["uid"], got["euid"], got["groups"]) == (UID, UID, [])
    assert got["caps"] == "0000000000000000" and got["nnp"] == "1"
    assert got["pid"] == 2 and got["cwd"] == "/home/student"  # a pid namespace of its own


def test_the_course_and_the_graders_files_are_not_there(sandbox, tmp_path):
    course = tmp_path / "course"
    (course / "solutions" / "smtp").mkdir(parents=True)
    (course / "gradebook.db").write_text("grades")
    (course / "solutions" / "smtp" / "smtp.ipynb").write_text("hidden tests")
    os.chmod(course, 0o755)
    secret = [str(course / "gradebook.db"), str(course / "solutions" / "smtp" / "smtp.ipynb"),
              str(ROOT / "solutions" / "smtp" / "smtp.ipynb"),
              str(ROOT / "solutions" / ".labs" / "lab_smtp.py"), "/root/.bash_history",
              "/etc/shadow"]
    got = run(sandbox, """
        import json, os, sys
        out = {}
        for path in sys.argv[1:] or os.environ["SECRETS"].split(":"):
            try:
                open(path).read(10)
                out[path] = "read"
            except OSError as e:
                out[path] = type(e).__name__
        print(json.dumps(out))
    """, SECRETS=":".join(secret))
    assert got[str(course / "gradebook.db")] == "FileNotFoundError"
    assert got[str(ROOT / "solutions" / "smtp" / "smtp.ipynb")] == "FileNotFoundError"
    assert got["/etc/shadow"] == "PermissionError"
    assert "read" not in got.values(), got


def test_writes_land_only_in_the_sandboxs_own_small_folders(sandbox, tmp_path):
    marker = f"/tmp/maillab-sandbox-test-{os.getpid()}"
    got = run(sandbox, f"""
        import json, os
        out = {{}}
        for path in ("/usr/lib/x", "/etc/x", "{sandbox.control_dir}/x", "/run/maillab/x",
                     "{marker}", "/home/student/ok"):
            try:
                with open(path, "w") as f:
                    f.write("x")
                out[path] = "written"
            except OSError as e:
                out[path] = type(e).__name__
        try:
            with open("/home/student/big", "wb") as f:
                for _ in range(64):
                    f.write(b"x" * 2**20)
            out["fill"] = "no limit"
        except OSError as e:
            out["fill"] = e.strerror
        print(json.dumps(out))
    """)
    assert got["/home/student/ok"] == "written" and got[marker] == "written"  # its own /tmp
    assert not Path(marker).exists()  # ... which is not the machine's /tmp
    assert {got[p] for p in ("/usr/lib/x", "/etc/x", "/run/maillab/x")} <= \
        {"PermissionError", "OSError"}
    assert got[f"{sandbox.control_dir}/x"] == "FileNotFoundError"
    assert got["fill"] in ("No space left on device", "File too large")
    assert not list(sandbox.control_dir.iterdir())


def test_the_sandbox_cannot_signal_the_grader_or_anyone_else(sandbox):
    bystander = subprocess.Popen(["sleep", "60"])  # root's, like the grader
    try:
        got = run(sandbox, """
            import json, os, signal
            out = {}
            for name, pid in (("grader", int(os.environ["GRADER"])),
                              ("bystander", int(os.environ["BYSTANDER"])),
                              ("parent", os.getppid())):
                try:
                    os.kill(pid, signal.SIGKILL)
                    out[name] = "sent"
                except OSError as e:
                    out[name] = type(e).__name__
            print(json.dumps(out))
        """,
            GRADER=os.getpid(), BYSTANDER=bystander.pid)
        assert got["grader"] == "ProcessLookupError" and got["bystander"] == "ProcessLookupError"
        assert got["parent"] in ("sent", "PermissionError")  # the sandbox's own init ignores it
        assert bystander.poll() is None
    finally:
        bystander.kill()


def test_kill_minus_one_ends_only_the_sandbox(sandbox):
    bystander = subprocess.Popen(["sleep", "60"])
    cmd = sandbox.command([sys.executable, "-c", textwrap.dedent("""
        import os, signal, time
        assert os.getuid() >= 1000000  # never as root
        os.kill(-1, signal.SIGKILL)
        time.sleep(5)
        print("survived")
    """)])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert "survived" not in done.stdout
    assert bystander.poll() is None and os.getpid() > 0
    bystander.kill()


def test_a_fork_bomb_stays_within_the_process_limit_and_ends_with_the_sandbox(sandbox):
    cmd = sandbox.command([sys.executable, "-c", textwrap.dedent("""
        import os, time
        assert os.getuid() >= 1000000  # never as root
        end = time.time() + 3
        while time.time() < end:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
        time.sleep(60)
    """)])
    proc = subprocess.Popen(cmd)
    try:
        peak = 0
        for _ in range(30):
            time.sleep(0.1)
            peak = max(peak, _processes_of(UID))
        assert 10 < peak <= 48 + 1
    finally:
        proc.kill()
        proc.wait()
    sandbox.kill_all()
    assert not _alive_of_user(UID)


def test_a_new_process_starts_once_a_fork_bombs_children_are_reaped(sandbox):
    """The answer process restarts after a fork bomb under the same user: while more of the
    user's processes exist than the new one's limit (zombies count too), setpriv cannot exec
    (126: 'journey-resources' in CI); the grader's kill_all(reaped=True) waits until none is
    left, and then a start succeeds."""
    bigger = Sandbox(UID, sandbox.control_dir, python_folders(), Limits(processes=60))
    bomb = bigger.command([sys.executable, "-c", textwrap.dedent("""
        import os, time
        end = time.time() + 30
        while time.time() < end:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    """)])
    proc = subprocess.Popen(bomb)
    hello = sandbox.command([sys.executable, "-c", "print('started')"])
    try:
        for _ in range(100):
            if _processes_of(UID) >= 60:
                break
            time.sleep(0.05)
        blocked = subprocess.run(hello, capture_output=True, text=True, timeout=60,
                                 cwd=str(sandbox.control_dir))
        assert blocked.returncode == 126, (blocked.returncode, blocked.stderr[-500:])
    finally:
        proc.kill()
        proc.wait()
    sandbox.kill_all(wait=10, reaped=True)
    assert not _alive_of_user(UID, zombies=True)
    started = subprocess.run(hello, capture_output=True, text=True, timeout=60,
                             cwd=str(sandbox.control_dir))
    assert (started.returncode, started.stdout.strip()) == (0, "started"), started.stderr


def test_memory_and_file_size_limits_hold(sandbox):
    got = run(sandbox, """
        import json
        out = {}
        try:
            block = bytearray(3 * 2**30)
            out["memory"] = "allocated"
        except MemoryError:
            out["memory"] = "MemoryError"
        print(json.dumps(out))
    """)
    assert got["memory"] == "MemoryError"


def test_a_daemon_a_cell_left_behind_is_ended_and_the_command_lives_on(sandbox):
    cmd = sandbox.command([sys.executable, "-c", textwrap.dedent("""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         start_new_session=True)
        subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"])
        print("started", flush=True)
        time.sleep(60)
    """)])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(0.3)
        assert _processes_of(UID) >= 4
        assert sandbox.end_strays(proc.pid) >= 3
        time.sleep(0.3)
        assert _processes_of(UID) == 1 and proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_a_workers_network_namespace_reaches_only_itself(sandbox, tmp_path):
    """A worker (isolate_worker) and its sandboxes cannot reach a port of the machine."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    script = textwrap.dedent(f"""
        import json, socket, subprocess, sys
        from pathlib import Path
        from maillab.grader.sandbox import Sandbox, isolate_worker, python_folders
        isolate_worker(Path({str(tmp_path / "private")!r}))
        out = {{}}
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            out["worker"] = "connected"
        except OSError as e:
            out["worker"] = type(e).__name__
        inside = socket.create_server(("127.0.0.1", 0))
        box = Sandbox({UID}, Path({str(sandbox.control_dir)!r}), python_folders())
        code = ("import socket, sys; s = socket.create_connection(('127.0.0.1', "
                + str(inside.getsockname()[1]) + ")); print('own lab reached')")
        done = subprocess.run(box.command([sys.executable, "-c", code]), capture_output=True,
                              text=True, timeout=60)
        out["sandbox"] = done.stdout.strip()
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    listener.close()
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {"worker": "ConnectionRefusedError", "sandbox": "own lab reached"}


def _processes_of(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    with open(f"/proc/{name}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                            count += 1
            except OSError:
                continue
    return count


def test_a_readable_folder_under_tmp_stays_visible_beside_the_sandboxs_own_tmp(sandbox, tmp_path):
    """A Python or a checkout under /tmp (tmp_path is there) must not be hidden by the
    sandbox's empty /tmp (bwrap mounts in order); the rest of the real /tmp stays hidden."""
    shared = tmp_path / "python-here"
    shared.mkdir(mode=0o755)
    (shared / "marker.txt").write_text("visible")
    os.chmod(shared / "marker.txt", 0o644)
    (tmp_path / "secret.txt").write_text("hidden")
    box = Sandbox(UID, sandbox.control_dir, python_folders() + [str(shared)], sandbox.limits)
    got = run(box, f"""
        import json, os
        print(json.dumps({{"marker": open({str(shared / "marker.txt")!r}).read(),
                           "secret": os.path.exists({str(tmp_path / "secret.txt")!r}),
                           "tmp": sorted(os.listdir("/tmp"))}}))
    """)
    assert got["marker"] == "visible" and got["secret"] is False
    # only the ways to bound folders (this one, and Python's own if it lives under /tmp)
    bound_under_tmp = {Path(p).parts[2] for p in box.readable if Path(p).parts[1:2] == ("tmp",)}
    assert Path(tmp_path).parts[2] in got["tmp"] and set(got["tmp"]) <= bound_under_tmp


def test_a_gradings_two_phases_run_as_two_different_users(tmp_path):
    # Phase 1 (the learner's notebook) and phase 2 (the answer process the checks call) run side
    # by side: as one user, the notebook's code could signal or ptrace the answer process and
    # forge what the checks see.
    from maillab.grader.worker import Worker
    control = sandbox_control(tmp_path)
    worker = Worker(tmp_path / "course", UID + 10, tmp_path / "private", sandboxed=True)
    uids = []
    for phase in ("phase1", "phase2"):
        box = worker.make_sandbox(control, phase)
        try:
            uids.append(run(box, "import json, os; print(json.dumps(os.getuid()))"))
        finally:
            box.kill_all()
    assert uids == [UID + 10, UID + 11]
