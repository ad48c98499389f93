"""Shared test helpers.

System tools (curl, swaks, dovecot, chromium) come from Debian packages that `.ci/run` installs.
On a developer's machine a test that needs a missing tool is skipped with the reason (pytest -ra
lists it); under CI (CI=true) it fails, so that a green CI never hides a skipped check.
"""

from __future__ import annotations

import os
import shutil

import pytest

# Debian packages that provide each tool, for the skip/fail message.
APT_PACKAGES = {
    "curl": "curl",
    "swaks": "swaks",
    "dovecot": "dovecot-imapd dovecot-pop3d",
    "doveadm": "dovecot-core",
    "chromium": "chromium",
    "openssl": "openssl",
    "bwrap": "bubblewrap",
    "node": "nodejs",
    "npm": "npm",
    "Xvfb": "xvfb",
    "xdotool": "xdotool",
    "thunderbird": "thunderbird",
    "fc-list": "fontconfig",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require_tool(name: str) -> str:
    """Return the path of the program `name`; skip the test if it is missing (fail under CI)."""
    # Daemons such as dovecot live in sbin, which is not on every user's PATH.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path:
        return path
    message = f"{name} is not installed (apt-get install {APT_PACKAGES.get(name, name)})"
    if in_ci():
        pytest.fail(f"{message}; CI must have it", pytrace=False)
    pytest.skip(message)


def require_root(why: str) -> None:
    """Skip a test that needs root (e.g. a reference Dovecot); under CI a skip would hide the
    check, so it fails instead, as a missing tool does."""
    if os.geteuid() == 0:
        return
    if in_ci():
        pytest.fail(f"not running as root: {why}; CI must run as root", pytrace=False)
    pytest.skip(f"not running as root: {why}")


@pytest.fixture(autouse=True)
def _socket_default_timeout():
    """Give every test the process's socket default timeout as it found it: a test that runs
    a lab's setup (``grading.prepare`` sets a 3 s default) must not shorten the next test's
    sockets, some of which wait longer on purpose (the login guard's delays reach 4 s)."""
    import socket
    saved = socket.getdefaulttimeout()
    yield
    socket.setdefaulttimeout(saved)


@pytest.fixture(name="require_tool")
def require_tool_fixture():
    """The same helper as a fixture: `def test_x(require_tool): curl = require_tool("curl")`."""
    return require_tool


def sandbox_control(tmp_path):
    """The control folder of a grading sandbox made in a test (bubblewrap and root needed,
    as for the grader): the sandbox's user must be able to reach it."""
    require_tool("bwrap")
    require_root("the sandbox needs root (the grader runs as root)")
    control = tmp_path / "control"
    control.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    return control


# The `lab` fixture (a running maillab.start() for a test, stopped afterwards) goes here once
# maillab.start() exists; the lead adds it.
