"""TLS for the lab: a certificate authority of its own, certificates for every mail host.

A lab has a CA of its own that issues one certificate per simulated host, valid for
``localhost``, ``127.0.0.1`` and the host's name (ECDSA P-256 keys, signed with SHA-256).
A lab with a folder of its own (``python -m maillab serve --root``) keeps them there, others in
the user's cache folder (``~/.cache/maillab/tls``), or, when that cannot be used safely, makes
a fresh CA at every start.
Clients that should trust the lab load ``lab.ca_file`` or use ``lab.client_context()``; a client
that does not trust the lab's CA fails verification, as it would against a stranger's server.

The certificates themselves are made by :mod:`maillab.certificates` (imported when a lab
starts, not with this module).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

from .net import DEFAULT_MAX_CONNECTIONS, ConnectionLimit

__all__ = ["LabCA", "describe", "start_tls_server", "serve"]

HANDSHAKE_TIMEOUT = 15  # seconds a client gets to finish a TLS handshake


class LabCA:
    """The lab's certificate authority and the server certificates it issued.

    With ``directory`` the CA and the server keys are kept there (keys readable by their owner
    only) and used again on the next start: a mail program told once to trust the lab's CA
    keeps trusting it. Without it, they are kept the same way in the user's cache folder
    (``~/.cache/maillab/tls``, when it is safely the user's alone: see
    ``certificates.kept_folder``; making keys costs more than the rest of a start) and the lab
    works on copies in a temporary folder until close() (the server keys beside their
    certificates, for the TLS contexts to load; the CA's key stays in the cache); without a
    usable cache folder, a fresh CA lives in the temporary folder (its key in memory only).
    """

    def __init__(self, hostnames: list[str], directory: str | os.PathLike | None = None):
        import tempfile

        from .certificates import Issuer, kept_folder  # (cryptography: only to make keys)
        self._dir = tempfile.TemporaryDirectory(prefix="maillab-ca-") if directory is None else None
        self.directory = Path(self._dir.name if directory is None else directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ca_file = self.directory / "maillab-ca.pem"
        kept = self.directory if self._dir is None else kept_folder()  # (None: nowhere)
        with _locked(kept):  # (two labs starting at once must not mix two CAs' files)
            self._ca: Issuer | None = None
            reuse = kept is not None and (kept / self.ca_file.name).exists()
            if reuse:
                self._ca = self._saved_ca(kept)  # None when damaged: a new CA, trusted anew
                reuse = self._ca is not None
            if not reuse:
                self._ca = Issuer.new_ca()
                self._save(kept or self.directory, self._ca.certificate_pem, self._ca.key_pem(),
                           kept is not None)
            self._certs = {h: self._server_cert(kept or self.directory, h, reuse) for h in hostnames}
            if kept is not None and kept != self.directory:  # the lab's own copies, gone at close()
                for path in [kept / self.ca_file.name] + [p for pair in self._certs.values() for p in pair]:
                    self._write_new(self.directory / path.name, path.read_bytes())
                self._certs = {h: (self.directory / c.name, self.directory / k.name)
                               for h, (c, k) in self._certs.items()}
        self._server_contexts: dict[str, ssl.SSLContext] = {}

    def _saved_ca(self, folder: Path) -> Issuer | None:
        from .certificates import Issuer
        ca_file = folder / self.ca_file.name
        try:
            return Issuer.from_pem(ca_file.read_bytes(), ca_file.with_suffix(".key").read_bytes())
        except (OSError, ValueError, TypeError, IndexError):
            return None  # none yet, or damaged: a new CA (clients must trust it anew)

    def _server_cert(self, folder: Path, hostname: str, reuse: bool) -> tuple[Path, Path]:
        """The certificate and key files of ``hostname``'s servers (issued now if need be)."""
        cert_file = folder / f"{hostname}.pem"
        key_file = cert_file.with_suffix(".key")
        if reuse and cert_file.exists() and key_file.exists():
            return cert_file, key_file  # issued by this CA on an earlier start
        certificate, key = self._ca.issue_server(hostname)
        self._write_new(cert_file, certificate)
        self._write_new(key_file, key)
        return cert_file, key_file

    def _save(self, folder: Path, cert: bytes, key: bytes, keep_key: bool) -> None:
        """Write the CA's certificate and, when kept for later starts, its private key beside it
        (``.key``). Both are written whole before they replace older ones, with mode 0600 like
        everything else in a lab's root: the folder is its owner's alone (a shared server's
        other users have no business there), and the owner's mail programs read the CA as the
        same user."""
        cert_file = folder / self.ca_file.name
        self._write_new(cert_file, cert)
        if keep_key:
            self._write_new(cert_file.with_suffix(".key"), key)

    @staticmethod
    def _write_new(path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def server_context(self, hostname: str) -> ssl.SSLContext:
        """The TLS context a server for ``hostname`` uses (TLS 1.2 or newer)."""
        ctx = self._server_contexts.get(hostname)
        if ctx is None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            cert_file, key_file = self._certs[hostname]
            ctx.load_cert_chain(cert_file, key_file)
            self._server_contexts[hostname] = ctx
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this lab's CA (and verifies host names)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()


class _locked:
    """An exclusive lock on ``folder`` (a lock file in it) for a with block; no folder: none."""

    def __init__(self, folder: Path | None):
        self.folder, self.file = folder, None

    def __enter__(self):
        if self.folder is not None:
            import fcntl
            self.file = open(os.open(self.folder / "maillab-ca.lock", os.O_WRONLY | os.O_CREAT, 0o600), "wb")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()  # (closing the file lets the lock go)


def describe(transport) -> str | None:
    """'TLS established (TLSv1.3, TLS_AES_256_GCM_SHA384)' for a TLS transport, else None."""
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    if obj is None:
        return None
    cipher = obj.cipher()
    return f"TLS established ({obj.version()}, {cipher[0] if cipher else '?'})"


async def start_tls_server(protocol: asyncio.BaseProtocol, transport: asyncio.Transport,
                           context: ssl.SSLContext) -> asyncio.Transport:
    """Upgrade a plain server connection to TLS (STARTTLS, STLS) and return the new transport.

    The caller must already have dropped anything the client pipelined after its STARTTLS
    command: those bytes came in clear text and must not run inside the TLS session
    (RFC 3207 4.2, RFC 2595 3.1).
    """
    loop = asyncio.get_running_loop()
    return await loop.start_tls(transport, protocol, context, server_side=True,
                                ssl_handshake_timeout=HANDSHAKE_TIMEOUT)


async def serve(ctx, sock, protocol_factory, *, implicit_tls: bool = False,
                busy_reply: bytes | str | None = None, service: str | None = None):
    """``loop.create_server`` on a bound socket; with ``implicit_tls`` every connection starts
    with a TLS handshake using the host's certificate (SMTPS 465, POP3S 995, IMAPS 993).

    At most ``ctx.options["max_connections"]`` connections are open at once on this service
    (:data:`maillab.net.DEFAULT_MAX_CONNECTIONS` unless the lab set it); a client beyond that
    gets ``busy_reply``, the protocol's own refusal (e.g. ``421 4.7.0 ...``, ``* BYE
    [UNAVAILABLE] ...``, ``-ERR [SYS/TEMP] ...``), recorded in the transcript as ``service``.
    Returns the asyncio server; its ``connection_limit`` attribute counts open and refused ones.
    """
    loop = asyncio.get_running_loop()
    ssl_context = ctx.server_tls_context() if implicit_tls else None
    if implicit_tls and ssl_context is None:
        raise ValueError("implicit TLS needs the lab's certificates (ctx.tls)")
    limit = ConnectionLimit(int(ctx.options.get("max_connections", DEFAULT_MAX_CONNECTIONS)),
                            busy_reply=busy_reply, recorder=ctx.recorder,
                            service=service or ctx.service_name("server"),
                            grace=HANDSHAKE_TIMEOUT + 1 if ssl_context else None)
    server = await loop.create_server(limit.wrap(protocol_factory), sock=sock, ssl=ssl_context,
                                      ssl_handshake_timeout=HANDSHAKE_TIMEOUT if ssl_context else None)
    server.connection_limit = limit
    return server
