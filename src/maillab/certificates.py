"""The lab's certificates (RFC 5280), written out in DER: a CA, and a certificate per mail host.

``cryptography`` makes the keys (ECDSA P-256) and the signatures (SHA-256); the certificates
around them are a handful of nested DER values (X.690), written here. Its ``x509`` module would
build them too, but importing it costs more CPU than all the rest of a lab's certificates
(about 20 ms, at every start). Even the parts of ``cryptography`` used here cost about 20 ms of
CPU to import (more than the keys and signatures), so they are imported only when a key is
made or used: a lab whose certificates were kept (``--root``, or the user's cache folder, see
:func:`kept_folder`) starts without them. :class:`maillab.tls.LabCA` uses :class:`Issuer`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import stat
from pathlib import Path

__all__ = ["Issuer", "CA_SUBJECT", "VALID_FROM", "VALID_UNTIL", "kept_folder"]

# Long-lived on purpose: a mail program told once to trust a lab kept with --root keeps working.
VALID_FROM = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
VALID_UNTIL = datetime.datetime(3000, 1, 1, tzinfo=datetime.timezone.utc)
CA_SUBJECT = (("2.5.4.10", "maillab"), ("2.5.4.11", "lab CA"))  # O=maillab, OU=lab CA


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
    return _seq(*(_der(0x31, _seq(_oid(oid), _der(0x0C, value.encode())))
                  for oid, value in attributes))


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


class Issuer:
    """A CA key and its certificate: what signing a server certificate needs."""

    def __init__(self, key, subject: bytes, certificate_pem: bytes, key_pem: bytes | None = None):
        self._key = key  # (None until first used when read from a file: see from_pem)
        self._key_pem = key_pem
        self.subject = subject  # the CA's name, DER: a server certificate's issuer, byte for byte
        self.certificate_pem = certificate_pem

    @property
    def key(self):
        if self._key is None:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key
            self._key = load_pem_private_key(self._key_pem, password=None)
        return self._key

    @classmethod
    def new_ca(cls) -> Issuer:
        key = _new_key()
        subject = _name(*CA_SUBJECT)
        extensions = [
            _extension("2.5.29.19", True, _seq(_der(0x01, b"\xff"), _integer(0))),  # CA, no sub-CAs
            # digitalSignature, keyCertSign, cRLSign
            _extension("2.5.29.15", True, _key_usage(1, 0x86)),
            _extension("2.5.29.14", False, _der(0x04, _key_id(key))),
        ]
        der = _signed(key, subject, subject, key, extensions)
        return cls(key, subject, _pem("CERTIFICATE", der))

    @classmethod
    def from_pem(cls, certificate_pem: bytes, key_pem: bytes) -> Issuer:
        """A CA kept on disk (raises ValueError if either file is damaged). The key is read
        (with ``cryptography``) when a certificate is first signed with it; here both files are
        only checked to hold one whole DER value in PEM armour."""
        _der_of(key_pem, b"PRIVATE KEY")
        der = _der_of(certificate_pem, b"CERTIFICATE")
        (certificate,) = _der_items(der, 0, len(der))
        tbs = _der_items(der, *_contents(der, certificate))[0]
        fields = _der_items(der, *_contents(der, tbs))
        if fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        _tag, start, end = fields[4]  # serial, signature, issuer, validity, subject
        return cls(None, der[start:end], certificate_pem, key_pem)

    def key_pem(self) -> bytes:
        return self._key_pem if self._key is None else _key_pem(self.key)

    def issue_server(self, hostname: str) -> tuple[bytes, bytes]:
        """A certificate (PEM) for ``hostname``, ``localhost`` and 127.0.0.1, and its key."""
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
        return _pem("CERTIFICATE", der), _key_pem(key)


def _der_of(pem: bytes, kind: bytes) -> bytes:
    """The DER value in a PEM block of that kind (ValueError unless it is one whole value)."""
    try:
        body = pem.split(b"-----BEGIN " + kind + b"-----")[1].split(b"-----END " + kind + b"-----")[0]
        der = base64.b64decode(body, validate=False)
        (value,) = _der_items(der, 0, len(der))
    except (IndexError, TypeError, ValueError):  # (binascii.Error is a ValueError)
        raise ValueError(f"not a whole PEM {kind.decode().lower()}") from None
    if value[0] != 0x30:
        raise ValueError(f"not a PEM {kind.decode().lower()}")
    return der


def kept_folder() -> Path | None:
    """Where a lab without a folder of its own keeps its CA and keys between starts:
    ``$XDG_CACHE_HOME/maillab/tls`` (``~/.cache/maillab/tls``), made with mode 0700; None when
    it cannot be made, or is not safe to use: not a real folder (a symbolic link), another
    user's, or open to others (group or world access), at that level or the one above."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None
    folder = Path(base) / "maillab" / "tls"
    try:
        os.makedirs(base, 0o700, exist_ok=True)  # (the XDG base folder itself may be missing)
    except OSError:
        return None
    for level in (folder.parent, folder):
        try:
            os.mkdir(level, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
        info = os.lstat(level)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None
    return folder


def _dns_name(hostname: str) -> bytes:
    """A host name as a certificate carries it: ASCII, international names in IDNA form."""
    try:
        return hostname.encode("ascii")
    except UnicodeEncodeError:
        return hostname.encode("idna")


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def _key_id(key) -> bytes:
    """The key identifier of RFC 5280 4.2.1.2 (1): SHA-1 of the public key's bits."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return hashlib.sha1(point).digest()


def _signed(key, subject: bytes, issuer: bytes, signer, extensions: list[bytes]) -> bytes:
    """A version 3 certificate (RFC 5280 4.1) of ``key`` for ``subject``, signed by ``signer``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    serial = int.from_bytes(os.urandom(16), "big") >> 1  # positive, at most 20 bytes
    tbs = _seq(_der(0xA0, _integer(2)), _integer(serial), _ECDSA_SHA256, issuer,
               _seq(_time(VALID_FROM), _time(VALID_UNTIL)), subject, spki,
               _der(0xA3, _seq(*extensions)))
    signature = signer.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _seq(tbs, _ECDSA_SHA256, _der(0x03, b"\x00" + signature))
