"""``python -m maillab serve`` for real mail programs: the CA it prints, kept under ``--root``.

A mail program is told once to trust the lab's CA certificate (curl ``--cacert``, openssl
``-CAfile``, Thunderbird's certificate manager). These tests start ``serve`` as a process,
as a user does, connect with curl and openssl against the printed CA file, restart it on the
same ``--root``, and check that the same file still verifies the servers.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from conftest import require_tool

from maillab.tls import LabCA

SRC = Path(__file__).resolve().parent.parent / "src"
SERVICE_LINE = re.compile(r"^\s+([A-Z0-9]+)\s+(\S+)\s+port\s+(\d+)\s")


class Serve:
    """``python -m maillab serve --ports any [--root ROOT]``, read until it says it is ready."""

    def __init__(self, root: Path | None = None):
        args = [sys.executable, "-m", "maillab", "serve", "--ports", "any"]
        if root is not None:
            args += ["--root", str(root)]
        env = dict(os.environ, PYTHONPATH=str(SRC))
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.output = ""
        self.ports: dict[str, int] = {}
        deadline = time.monotonic() + 60
        for line in self.proc.stdout:
            self.output += line
            m = SERVICE_LINE.match(line)
            if m and m.group(2) == "mail.example.com":
                self.ports[m.group(1).lower()] = int(m.group(3))
            if line.startswith("ready") or time.monotonic() > deadline:
                break
        if not line.startswith("ready"):
            self.stop()
            pytest.fail(f"serve did not start:\n{self.output}\n{self.proc.stderr.read()}")

    def ca_file(self) -> Path:
        """The CA certificate's path as serve prints it (the line that names a .pem file)."""
        found = re.findall(r"(/\S+\.pem)\b", self.output)
        assert found, f"serve printed no CA certificate path:\n{self.output}"
        return Path(found[0])

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rest, _err = self.proc.communicate(timeout=60)
        return rest


@pytest.fixture
def serve():
    started = []

    def start(root=None):
        s = Serve(root)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def curl_imaps(ca: Path, port: int) -> subprocess.CompletedProcess:
    """List alice's folders over IMAPS with curl, which checks the certificate and the name."""
    return subprocess.run([require_tool("curl"), "-sS", "-m", "20", "--cacert", str(ca),
                           f"imaps://localhost:{port}/", "-u", "alice:wonderland"],
                          capture_output=True, text=True, timeout=60)


def openssl_verify(ca: Path, port: int) -> str:
    """openssl s_client against the POP3S port, verifying with ``ca``: its verdict line."""
    out = subprocess.run([require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
                          "-CAfile", str(ca), "-verify_hostname", "localhost",
                          "-verify_return_error", "-brief"],
                         input="QUIT\r\n", capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def server_certificate(port: int) -> str:
    return ssl.get_server_certificate(("127.0.0.1", port))


def test_serve_prints_a_ca_file_that_curl_and_openssl_trust(serve):
    lab = serve()
    ca = lab.ca_file()
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    listing = curl_imaps(ca, lab.ports["imaps"])
    assert listing.returncode == 0, listing.stderr
    assert "INBOX" in listing.stdout
    verdict = openssl_verify(ca, lab.ports["pop3s"])
    assert "Verification: OK" in verdict, verdict
    lab.stop()
    assert not ca.exists(), "without --root the CA goes away with the lab"


def test_without_the_ca_file_curl_refuses_the_lab(serve, tmp_path):
    lab = serve()
    stranger = LabCA(["mail.example.com"], directory=tmp_path / "other")  # another lab's CA
    listing = curl_imaps(stranger.ca_file, lab.ports["imaps"])
    assert listing.returncode == 60, listing  # curl: peer certificate cannot be authenticated


def test_labca_directory_keeps_the_ca_and_keys_private(tmp_path):
    first = LabCA(["mail.example.com"], directory=tmp_path / "tls")
    pem, key = first.ca_file.read_bytes(), first.ca_file.with_suffix(".key")
    first.close()
    assert first.ca_file.exists(), "close() keeps a CA that was asked to persist"
    for private in [key, tmp_path / "tls" / "mail.example.com.key"]:
        assert private.stat().st_mode & 0o777 == 0o600, private
    again = LabCA(["mail.example.com", "mail.example.net"], directory=tmp_path / "tls")
    assert again.ca_file.read_bytes() == pem
    # a host name the lab did not have before gets a certificate from the same CA
    ca = x509.load_pem_x509_certificate(pem)
    leaf = x509.load_pem_x509_certificate((tmp_path / "tls" / "mail.example.net.pem").read_bytes())
    leaf.verify_directly_issued_by(ca)
    again.server_context("mail.example.net")  # its key matches its certificate


def test_labca_directory_with_a_damaged_ca_makes_a_new_one(tmp_path):
    first = LabCA(["mail.example.com"], directory=tmp_path)
    old = first.ca_file.read_bytes()
    first.ca_file.with_suffix(".key").write_text("not a key")
    second = LabCA(["mail.example.com"], directory=tmp_path)
    assert second.ca_file.read_bytes() != old
    second.server_context("mail.example.com")  # and its server certificates match it


def test_serve_root_keeps_the_ca_across_restarts(serve, tmp_path):
    root = tmp_path / "mail"
    first = serve(root)
    ca = first.ca_file()
    assert ca.parent == root / "tls"
    trusted = shutil.copy(ca, tmp_path / "trusted-once.pem")  # what a mail program keeps
    certificate = server_certificate(first.ports["imaps"])
    first.stop()

    second = serve(root)
    assert second.ca_file() == ca
    assert server_certificate(second.ports["imaps"]) == certificate
    listing = curl_imaps(Path(trusted), second.ports["imaps"])
    assert listing.returncode == 0, listing.stderr
    assert "Verification: OK" in openssl_verify(Path(trusted), second.ports["pop3s"])
    for key in (root / "tls").glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
