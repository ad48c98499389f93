"""TLS for the lab: a certificate authority of its own, certificates for every mail host.

Each lab makes a fresh CA and issues one certificate per simulated host, valid for
``localhost``, ``127.0.0.1`` and the host's name (ECDSA P-256 keys, signed with SHA-256).
A lab with a folder of its own (``python -m maillab serve --root``) keeps them there instead.
Clients that should trust the lab load ``lab.ca_file`` or use ``lab.client_context()``; a client
that does not trust the lab's CA fails verification, as it would against a stranger's server.

``cryptography`` makes the keys and the signatures; the certificates around them (RFC 5280)
are written out here in DER, a handful of nested values. Its ``x509`` module would build them
too, but importing it costs more CPU than all the rest of a lab's certificates (about 20 ms,
at every start).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import os
import ssl
from pathlib import Path

from .net import DEFAULT_MAX_CONNECTIONS, ConnectionLimit

__all__ = ["LabCA", "describe", "start_tls_server", "serve"]

HANDSHAKE_TIMEOUT = 15  # seconds a client gets to finish a TLS handshake

# Long-lived on purpose: a mail program told once to trust a lab kept with --root keeps working.
VALID_FROM = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
VALID_UNTIL = datetime.datetime(3000, 1, 1, tzinfo=datetime.timezone.utc)
CA_SUBJECT = (("2.5.4.10", "maillab"), ("2.5.4.11", "lab CA"))  # O=maillab, OU=lab CA


class LabCA:
    """The lab's certificate authority and the server certificates it issued.

    With ``directory`` the CA and the server keys are kept there (keys readable by their owner
    only) and used again on the next start: a mail program told once to trust the lab's CA
    keeps trusting it. Without it, a fresh CA lives in a temporary folder until close() (the
    server keys beside their certificates, for the TLS contexts to load; the CA's key in memory
    only).
    """

    def __init__(self, hostnames: list[str], directory: str | os.PathLike | None = None):
        import tempfile
        self._dir = tempfile.TemporaryDirectory(prefix="maillab-ca-") if directory is None else None
        self.directory = Path(self._dir.name if directory is None else directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ca_file = self.directory / "maillab-ca.pem"
        self._ca: _Issuer | None = None
        reuse = self._dir is None and self.ca_file.exists()
        if reuse:
            self._ca = self._saved_ca()  # None when damaged: a new CA, trusted anew
            reuse = self._ca is not None
        if not reuse:
            self._ca = _Issuer.new_ca()
            self._save(self.ca_file, self._ca.certificate_pem, self._ca.key_pem())
        self._certs = {h: self._server_cert(h, reuse) for h in hostnames}
        self._server_contexts: dict[str, ssl.SSLContext] = {}

    def _saved_ca(self) -> _Issuer | None:
        try:
            return _Issuer.from_pem(self.ca_file.read_bytes(),
                                    self.ca_file.with_suffix(".key").read_bytes())
        except (OSError, ValueError, TypeError, IndexError):
            return None  # none yet, or damaged: a new CA (clients must trust it anew)

    def _server_cert(self, hostname: str, reuse: bool) -> tuple[Path, Path]:
        """The certificate and key files of ``hostname``'s servers (issued now if need be)."""
        cert_file = self.directory / f"{hostname}.pem"
        key_file = cert_file.with_suffix(".key")
        if reuse and cert_file.exists() and key_file.exists():
            return cert_file, key_file  # issued by this CA on an earlier start
        certificate, key = self._ca.issue_server(hostname)
        self._write_new(cert_file, certificate)
        self._write_new(key_file, key)
        return cert_file, key_file

    def _save(self, cert_file: Path, cert: bytes, key: bytes) -> None:
        """Write a certificate and, when kept for later starts, its private key beside it
        (``.key``). Both are written whole before they replace older ones, with mode 0600 like
        everything else in a lab's root: the folder is its owner's alone (a shared server's
        other users have no business there), and the owner's mail programs read the CA as the
        same user."""
        self._write_new(cert_file, cert)
        if self._dir is None:
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


# ----------------------------------------------------------------------------- certificates

def _der(tag: int, *contents: bytes) -> bytes:
    """One DER value (X.690): its tag, its length, then its contents."""
    body = b"".join(contents)
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _seq(*items: bytes) -> bytes:
    return _der(0x30, *items)


def _integer(n: int) -> bytes:  # (non-negative: a leading zero byte keeps the sign bit clear)
    return _der(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(x) for x in dotted.split("."))
    out = bytearray([40 * first + second])
    for arc in rest:  # base 128, high bit set on all but the last byte
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


def _time(t: datetime.datetime) -> bytes:
    # RFC 5280 4.1.2.5: UTCTime until 2049, GeneralizedTime from 2050 on.
    if t.year < 2050:
        return _der(0x17, t.strftime("%y%m%d%H%M%SZ").encode())
    return _der(0x18, t.strftime("%Y%m%d%H%M%SZ").encode())


def _name(*attributes: tuple[str, str]) -> bytes:
    """A distinguished name: one attribute (type OID, UTF8String value) per RDN."""
    return _seq(*(_der(0x31, _seq(_oid(oid), _der(0x0C, value.encode()))) for oid, value in attributes))


def _extension(oid: str, critical: bool, value: bytes) -> bytes:
    return _seq(_oid(oid), _der(0x01, b"\xff") if critical else b"", _der(0x04, value))


def _key_usage(unused_bits: int, bits: int) -> bytes:
    return _der(0x03, bytes([unused_bits, bits]))  # a BIT STRING of one byte


_ECDSA_SHA256 = _seq(_oid("1.2.840.10045.4.3.2"))  # ecdsa-with-SHA256, no parameters
_SERVER_AUTH, _CLIENT_AUTH = "1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"


def _pem(kind: str, der: bytes) -> bytes:
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n").encode()


def _der_items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The (tag, start, end) of each DER value in ``data[start:end]`` (ends exclusive)."""
    items = []
    while start < end:
        tag, n = data[start], data[start + 1]
        pos = start + 2
        if n & 0x80:
            size = n & 0x7F
            n, pos = int.from_bytes(data[pos:pos + size], "big"), pos + size
        if pos + n > end:
            raise ValueError("truncated DER value")
        items.append((tag, start, pos + n))
        start = pos + n
    return items


def _contents(data: bytes, item: tuple[int, int, int]) -> tuple[int, int]:
    """Where the contents of one value from :func:`_der_items` start and end."""
    _tag, start, end = item
    n = data[start + 1]
    return start + 2 + (n & 0x7F if n & 0x80 else 0), end


class _Issuer:
    """A CA key and its certificate: what signing a server certificate needs."""

    def __init__(self, key, subject: bytes, certificate_pem: bytes):
        self.key = key
        self.subject = subject  # the CA's name, DER: a server certificate's issuer, byte for byte
        self.certificate_pem = certificate_pem

    @classmethod
    def new_ca(cls) -> _Issuer:
        key = _new_key()
        subject = _name(*CA_SUBJECT)
        extensions = [
            _extension("2.5.29.19", True, _seq(_der(0x01, b"\xff"), _integer(0))),  # CA, no sub-CAs
            _extension("2.5.29.15", True, _key_usage(1, 0x86)),  # digitalSignature, keyCertSign, cRLSign
            _extension("2.5.29.14", False, _der(0x04, _key_id(key))),
        ]
        der = _signed(key, subject, subject, key, extensions)
        return cls(key, subject, _pem("CERTIFICATE", der))

    @classmethod
    def from_pem(cls, certificate_pem: bytes, key_pem: bytes) -> _Issuer:
        """A CA kept on disk (raises ValueError if either file is damaged)."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        key = load_pem_private_key(key_pem, password=None)
        body = certificate_pem.split(b"-----BEGIN CERTIFICATE-----")[1].split(b"-----END")[0]
        der = base64.b64decode(body, validate=False)
        (certificate,) = _der_items(der, 0, len(der))
        tbs = _der_items(der, *_contents(der, certificate))[0]
        fields = _der_items(der, *_contents(der, tbs))
        if fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        _tag, start, end = fields[4]  # serial, signature, issuer, validity, subject
        return cls(key, der[start:end], certificate_pem)

    def key_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization as ser
        return self.key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())

    def issue_server(self, hostname: str) -> tuple[bytes, bytes]:
        """A certificate (PEM) for ``hostname``, ``localhost`` and 127.0.0.1, and its key."""
        from cryptography.hazmat.primitives import serialization as ser
        key = _new_key()
        names = _seq(_der(0x82, b"localhost"), _der(0x87, bytes([127, 0, 0, 1])),  # DNS, IP
                     _der(0x82, _dns_name(hostname)))
        extensions = [
            _extension("2.5.29.19", True, _seq()),  # not a CA
            _extension("2.5.29.15", True, _key_usage(5, 0xA0)),  # digitalSignature, keyEncipherment
            _extension("2.5.29.37", False, _seq(_oid(_SERVER_AUTH), _oid(_CLIENT_AUTH))),
            _extension("2.5.29.17", False, names),
            _extension("2.5.29.14", False, _der(0x04, _key_id(key))),
            _extension("2.5.29.35", False, _seq(_der(0x80, _key_id(self.key)))),
        ]
        subject = _name(CA_SUBJECT[0], ("2.5.4.3", hostname))  # O=maillab, CN=host
        der = _signed(key, subject, self.subject, self.key, extensions)
        key_pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        return _pem("CERTIFICATE", der), key_pem


def _dns_name(hostname: str) -> bytes:
    """A host name as a certificate carries it: ASCII, international names in IDNA form."""
    try:
        return hostname.encode("ascii")
    except UnicodeEncodeError:
        return hostname.encode("idna")


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def _key_id(key) -> bytes:
    """The key identifier of RFC 5280 4.2.1.2 (1): SHA-1 of the public key's bits."""
    from cryptography.hazmat.primitives import serialization as ser
    point = key.public_key().public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
    return hashlib.sha1(point).digest()


def _signed(key, subject: bytes, issuer: bytes, signer, extensions: list[bytes]) -> bytes:
    """A version 3 certificate (RFC 5280 4.1) of ``key`` for ``subject``, signed by ``signer``."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    spki = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    serial = int.from_bytes(os.urandom(16), "big") >> 1  # positive, at most 20 bytes
    tbs = _seq(_der(0xA0, _integer(2)), _integer(serial), _ECDSA_SHA256, issuer,
               _seq(_time(VALID_FROM), _time(VALID_UNTIL)), subject, spki,
               _der(0xA3, _seq(*extensions)))
    signature = signer.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _seq(tbs, _ECDSA_SHA256, _der(0x03, b"\x00" + signature))
