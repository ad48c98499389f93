"""Real Unix users for the tests of a shared machine (isolation, JupyterHub): made and removed as root.

Names carry the test process id so that two runs at once, or a run after a crashed one, never
meet each other's users. ``remove()`` also ends every process the user still has.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys

import pytest

from conftest import in_ci


def require_root() -> None:
    """These tests create users: root only (CI runs as root, so there they always run)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("needs Linux (users, /proc, netlink)")
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("CI must run these tests as root (they create Unix users)", pytrace=False)
        pytest.skip("needs root: the test creates Unix users")
    for tool in ("useradd", "userdel", "setpriv"):
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")):
            pytest.fail(f"{tool} is missing (Debian: passwd, util-linux)", pytrace=False)


class UnixUser:
    def __init__(self, name: str, home: str | None = None):
        self.name = name
        self.home = home
        args = ["useradd", "--shell", "/bin/bash", "--user-group"]
        args += ["--create-home", "--home-dir", home] if home else ["--no-create-home"]
        subprocess.run(args + [name], check=True, capture_output=True)
        entry = pwd.getpwnam(name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def command(self, argv: list[str], *, read_anything: bool = False) -> list[str]:
        """``argv`` run as this user. ``read_anything`` keeps one capability, reading and
        searching every folder: enough to run this checkout's Python wherever CI cloned it (a
        folder under /root, say), while every socket the process opens is still this user's."""
        wrap = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        if read_anything:
            wrap += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        else:
            wrap += ["--inh-caps=-all", "--bounding-set=-all"]
        return wrap + ["--", *argv]

    def env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
        env.update(HOME=self.home or "/tmp", USER=self.name, LOGNAME=self.name, **extra)
        return env

    def remove(self) -> None:
        subprocess.run(["pkill", "-KILL", "-u", str(self.uid)], capture_output=True)  # this user only
        subprocess.run(["userdel", "--force", "--remove", self.name], capture_output=True)
        if self.home and os.path.isdir(self.home):
            shutil.rmtree(self.home, ignore_errors=True)


def shared_python() -> str:
    """A Python 3.11+ every user can run: the system's (/usr/bin/python3), not this venv's base,
    which may live under /root (pyenv) where other users cannot enter."""
    for candidate in ("/usr/bin/python3", os.path.join(sys.base_prefix, "bin", "python3")):
        if os.path.exists(candidate):
            version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                                     capture_output=True, text=True).stdout.strip()
            if version == "True":
                return candidate
    pytest.fail("no Python 3.11 for every user (Debian: python3, python3-venv)", pytrace=False)


def unique_name(prefix: str) -> str:
    """A user name nobody has: the prefix, this process id, and a counter."""
    n = 0
    while True:
        name = f"{prefix}{os.getpid() % 100000}{n or ''}"
        try:
            pwd.getpwnam(name)
        except KeyError:
            return name
        n += 1
