"""Where a submission's code runs: a throwaway user in bubblewrap namespaces, with limits.

Every process of a submission (its Jupyter kernel, its answer process) starts as::

    bwrap <namespaces, a file system of read-only system folders and a private home>
      prlimit <memory, processes, CPU, file size, open files>
        setpriv --reuid=<throwaway uid> <no capabilities, no new privileges>
          python ...

* **Files.** The sandbox sees the system folders (/usr, /etc, ...), the Python installation and
  the maillab package, read-only; its home (the working folder) and /tmp are small tmpfs of its
  own; ``/run/maillab`` holds the control socket of its sealed lab (read-only). The course
  folder (masters, hidden tests, gradebook.db, other students' submissions) is not there at
  all; neither is the grader's own store of evidence.
* **Processes.** A pid namespace of its own: it cannot see or signal the grader, and when the
  sandbox ends every process in it ends too. The user id is not root and belongs to this
  worker alone, so process limits and the final clean-up (:meth:`Sandbox.kill_all`) touch
  this submission's processes only.
* **Network.** The worker process that starts sandboxes lives in a network namespace of its
  own (:func:`isolate_worker`): the sandbox shares it, so it reaches its own sealed lab on
  loopback and nothing else (no other student's lab, no outside network).

Needs root (or the same capabilities) and Debian's ``bubblewrap``.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HOME = "/home/student"  # the sandbox's working folder
CONTROL = "/run/maillab"  # the sealed lab's control folder, as the sandbox sees it
SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
UID_BASE = 2_000_100_000  # throwaway user ids: UID_BASE + worker number
UID_BLOCK = 1000  # user ids one grading run may use (two per worker)
UID_BLOCKS = 64  # grading runs at once on one machine


@dataclass
class Limits:
    memory: int = 2 << 30  # bytes of address space per process
    processes: int = 96  # processes and threads of the sandbox's user (a kernel uses ~10)
    cpu_seconds: int = 300  # CPU time per process
    file_size: int = 64 << 20  # bytes in one file
    open_files: int = 512
    home_size: int = 128 << 20  # bytes in the home tmpfs
    tmp_size: int = 64 << 20  # bytes in /tmp


class SandboxUnavailable(RuntimeError):
    pass


def check_available() -> None:
    """Raise SandboxUnavailable (with what to do) unless sandboxes can be made here."""
    if os.geteuid() != 0:
        raise SandboxUnavailable("grading in sandboxes needs root: run it with sudo "
                                 "(or pass --no-sandbox on a machine you trust)")
    for tool, package in (("bwrap", "bubblewrap"), ("setpriv", "util-linux"),
                          ("prlimit", "util-linux"), ("kill", "procps")):
        if shutil.which(tool) is None:
            raise SandboxUnavailable(f"{tool} is missing: apt-get install {package}")


def reserve_uids(first: int | None = None):
    """(first user id, lock): a block of throwaway user ids that no other grading on this
    machine uses while ``lock`` (an open file) stays open. Two runs sharing user ids would end
    each other's kernels: a worker's clean-up ends every process of its users (``kill -1``).
    With ``first`` (``--uid-base``): that block, or SandboxUnavailable if it is taken."""
    folder = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
    bases = [first] if first is not None else \
        [UID_BASE + n * UID_BLOCK for n in range(UID_BLOCKS)]
    for base in bases:
        lock = open(os.path.join(folder, f"maillab-grade-uids-{base}.lock"), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return base, lock
        except BlockingIOError:
            lock.close()
    raise SandboxUnavailable(f"another grading uses the sandbox user ids from {bases[0]}: "
                             "wait for it, or pass another --uid-base" if first is not None else
                             f"{UID_BLOCKS} gradings already run on this machine")


def python_folders() -> list[str]:
    """The folders a sandboxed Python needs to read: its installation, its site-packages and
    the maillab package itself (for a checkout: the package folder, not the checkout)."""
    import site

    import maillab
    found = [sys.base_prefix, sys.prefix, *site.getsitepackages(), maillab_folder()]
    out: list[str] = []
    for p in found:
        p = str(Path(p).resolve())
        if not os.path.isdir(p) or _under(p, SYSTEM) or _under(p, out):
            continue
        out = [o for o in out if not _under(o, [p])] + [p]
    return out


def maillab_folder() -> str:
    import maillab
    return str(Path(maillab.__file__).resolve().parent)


def _under(path: str, folders) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


class Sandbox:
    """Commands that run as user ``uid`` in a fresh bubblewrap sandbox each."""

    def __init__(self, uid: int, control_dir: Path, readable: list[str],
                 limits: Limits | None = None, env: dict | None = None):
        self.uid = uid
        self.control_dir = control_dir
        self.readable = readable
        self.limits = limits or Limits()
        self.env = env or {}

    def environment(self, extra: dict) -> dict:
        path = os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin",
                                "/bin"])
        env = {"HOME": HOME, "USER": "student", "LOGNAME": "student", "PATH": path,
               "LANG": "C.UTF-8", "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONNOUSERSITE": "1", "MALLOC_ARENA_MAX": "2",
               "MAILLAB_SEALED": f"{CONTROL}/lab.sock"}
        env["PYTHONPATH"] = os.path.dirname(maillab_folder())  # maillab, even from a checkout
        env.update(self.env)
        env.update(extra)
        return env

    def command(self, argv: list[str], env: dict | None = None,
                files: dict[str, str] | None = None) -> list[str]:
        """bwrap ... argv: ``argv`` as the sandbox's user; ``files`` maps names in the home
        folder to files outside that the sandbox may read."""
        lim = self.limits
        cmd = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
               "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
        for path in SYSTEM:
            if os.path.islink(path):
                cmd += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                cmd += ["--ro-bind", path, path]
        # /tmp first: bwrap mounts in order, so a Python or a checkout that lives under /tmp
        # (bound below) must come after the sandbox's own empty /tmp, not be hidden by it.
        cmd += ["--proc", "/proc", "--dev", "/dev",
                "--size", str(lim.tmp_size), "--perms", "1777", "--tmpfs", "/tmp"]
        made: set[str] = {"/tmp"}
        for path in self.readable + [CONTROL, HOME]:
            cmd += _parents(path, made)
        for path in self.readable:
            cmd += ["--ro-bind", path, path]
        cmd += ["--size", str(lim.home_size), "--perms", "1777", "--tmpfs", HOME,
                "--ro-bind", str(self.control_dir), CONTROL]
        for name, outside in (files or {}).items():
            cmd += ["--ro-bind", outside, f"{HOME}/{name}"]
        cmd += ["--chdir", HOME, "--clearenv"]
        for key, value in self.environment(env or {}).items():
            cmd += ["--setenv", key, value]
        cmd += ["--", shutil.which("prlimit") or "prlimit",
                f"--as={lim.memory}", f"--nproc={lim.processes}", f"--cpu={lim.cpu_seconds}",
                f"--fsize={lim.file_size}", f"--nofile={lim.open_files}", "--core=0", "--",
                shutil.which("setpriv") or "setpriv", f"--reuid={self.uid}",
                f"--regid={self.uid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs", "--", *argv]
        return cmd

    def visible_path(self, path: Path) -> str:
        """Where the sandbox sees a file of its control folder."""
        return f"{CONTROL}/{Path(path).relative_to(self.control_dir)}"

    def end_strays(self, outer_pid: int) -> int:
        """End every process of the sandbox started as ``outer_pid`` (bwrap) but its command:
        what code started and left behind (a fork bomb's children, a daemon). Returns how many.
        Run after every cell and every call: nothing a cell starts outlives it."""
        ended = 0
        for _round in range(3):
            found = []
            for init in _children(outer_pid):  # the pid namespace's init (bwrap's reaper)
                for child in _children(init):
                    if _inner_pid(child) == 2:  # the command itself: keep it, not what it made
                        found += _descendants(child)
                    else:  # an orphan that init adopted
                        found += [child, *_descendants(child)]
            if not found:
                break
            for pid in found:
                try:
                    os.kill(pid, 9)
                    ended += 1
                except ProcessLookupError:
                    pass
        return ended

    def kill_all(self, wait: float = 2.0, reaped: bool = False) -> None:
        """End every process of this sandbox's user (what a submission left running), and wait
        until they are gone (so that the ports they held are free again). With ``reaped``, wait
        until not even a zombie is left: the kernel counts zombies against the user's process
        limit, and a sandbox started while a fork bomb's children are still dying cannot start
        its command (setpriv's exec fails with EAGAIN: exit code 126)."""
        kill = shutil.which("kill") or "/bin/kill"
        deadline = time.monotonic() + wait
        while True:
            # "-9 -- -1": procps-ng 4's kill answers "-s KILL -- -1" with its usage and kills
            # nothing; util-linux's and busybox's take this form too
            subprocess.run([kill, "-9", "--", "-1"], user=self.uid, group=self.uid,
                           extra_groups=[], capture_output=True, timeout=10)
            if not _alive_of_user(self.uid, zombies=reaped) or time.monotonic() > deadline:
                return
            time.sleep(0.02)


def _alive_of_user(uid: int, zombies: bool = False) -> bool:
    """Whether a process of this user still runs (zombies count only when asked)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                info = os.stat(f"/proc/{name}")
                if info.st_uid == uid and (zombies or not _zombie(int(name))):
                    return True
            except OSError:
                continue
    return False


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _children(pid: int) -> list[int]:
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split() if not _zombie(int(x))]
        except OSError:
            continue
    return out


def _descendants(pid: int) -> list[int]:
    out, todo = [], _children(pid)
    while todo and len(out) < 100_000:
        child = todo.pop()
        out.append(child)
        todo += _children(child)
    return out


def _inner_pid(pid: int) -> int | None:
    """The pid a process has in its own (innermost) pid namespace."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def _parents(path: str, made: set[str]) -> list[str]:
    """bwrap makes missing parent folders 0700; make them 0755 first so the user can pass."""
    out = []
    parts = Path(path).parts[1:-1]
    for i in range(len(parts)):
        folder = "/" + "/".join(parts[:i + 1])
        if folder not in made and not _under(folder, SYSTEM):
            made.add(folder)
            out += ["--perms", "0755", "--dir", folder]
    return out


class Unsandboxed(Sandbox):
    """``--no-sandbox``: the same commands as the grader's own user, with the same limits on
    time and memory but no isolation (for a teacher's own machine, never for a class)."""

    def command(self, argv, env=None, files=None):
        home = self.control_dir / "home"
        home.mkdir(exist_ok=True)
        env = dict(self.environment(env or {}), HOME=str(home),
                   MAILLAB_SEALED=str(self.control_dir / "lab.sock"))
        return [shutil.which("prlimit") or "prlimit", f"--as={self.limits.memory}",
                f"--cpu={self.limits.cpu_seconds}", "--", "env", "-i",
                *[f"{k}={v}" for k, v in env.items()], *argv]

    def visible_path(self, path: Path) -> str:
        return str(path)

    def end_strays(self, outer_pid: int) -> int:
        return 0

    def kill_all(self, wait: float = 2.0, reaped: bool = False) -> None:
        pass


# ---------------------------------------------------------------------- the worker's namespaces

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18


def isolate_worker(private: Path, size: int = 2 << 30) -> None:
    """Give this (still single-threaded) process a network namespace with only loopback, and a
    mount namespace with a tmpfs at ``private`` that no other process on the machine sees."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare: " + os.strerror(ctypes.get_errno()))
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
    private.mkdir(parents=True, exist_ok=True)
    if libc.mount(b"tmpfs", str(private).encode(), b"tmpfs", 0,
                  f"size={size},mode=0700".encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mount tmpfs {private}")
    _loopback_up()


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, request))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))
