"""The lab's certificates (maillab.certificates, used by maillab.tls' LabCA), written out in DER.

What a TLS client checks is checked here with other implementations: ``cryptography`` parses
every certificate and verifies its signature, ``openssl verify`` accepts the chain for a TLS
server; a CA kept on disk by an older maillab (made with trustme, another subject name) still
signs certificates for new hosts; international host names travel in IDNA form. Real clients
(curl, openssl s_client, swaks, Thunderbird) talk to the lab in test_tls, test_serve and
test_thunderbird.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import require_tool

from maillab.tls import LabCA


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def lab_ca(tmp_path):
    ca = LabCA(["mail.example.com", "mail.example.net"], directory=tmp_path / "tls")
    yield ca
    ca.close()


def test_the_ca_is_a_ca_and_signs_itself(lab_ca):
    ca = load(lab_ca.ca_file)
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert ca.signature_hash_algorithm.name == "sha256"
    now = datetime.datetime.now(datetime.timezone.utc)
    assert ca.not_valid_before_utc < now < ca.not_valid_after_utc


@pytest.mark.parametrize("host", ["mail.example.com", "mail.example.net"])
def test_a_server_certificate_names_its_host_and_is_signed_by_the_ca(lab_ca, tmp_path, host):
    ca, leaf = load(lab_ca.ca_file), load(tmp_path / "tls" / f"{host}.pem")
    leaf.verify_directly_issued_by(ca)
    assert leaf.issuer == ca.subject
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == host
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", host]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier \
        == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())
    key = serialization.load_pem_private_key((tmp_path / "tls" / f"{host}.key").read_bytes(), None)
    assert key.public_key() == leaf.public_key()
    assert leaf.serial_number != ca.serial_number


def test_openssl_accepts_the_chain_for_a_tls_server(lab_ca, tmp_path):
    openssl = require_tool("openssl")
    out = subprocess.run([openssl, "verify", "-CAfile", str(lab_ca.ca_file), "-purpose", "sslserver",
                          "-verify_hostname", "mail.example.net", str(tmp_path / "tls" / "mail.example.net.pem")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr


def test_a_ca_kept_by_an_older_lab_signs_certificates_for_new_hosts(tmp_path):
    # An older maillab (trustme) named its CA differently; the new host's certificate must name
    # that CA as its issuer byte for byte, or no client finds the chain.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "maillab"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "lab CA #older"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Ελληνικό όνομα")])
    old = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(7).not_valid_before(datetime.datetime(2020, 1, 1))
           .not_valid_after(datetime.datetime(2999, 1, 1))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(key, hashes.SHA256()))
    folder = tmp_path / "tls"
    folder.mkdir()
    (folder / "maillab-ca.pem").write_bytes(old.public_bytes(serialization.Encoding.PEM))
    (folder / "maillab-ca.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ca = LabCA(["mail.example.org"], directory=folder)
    assert load(ca.ca_file) == old
    leaf = load(folder / "mail.example.org.pem")
    assert leaf.issuer.public_bytes() == old.subject.public_bytes()
    leaf.verify_directly_issued_by(old)
    ca.server_context("mail.example.org")  # its key matches its certificate


def test_an_international_host_name_travels_in_idna_form(tmp_path):
    ca = LabCA(["mail.παράδειγμα.ελ"], directory=tmp_path / "tls")
    leaf = load(tmp_path / "tls" / "mail.παράδειγμα.ελ.pem")
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName)[1] == "mail.xn--hxajbheg2az3al.xn--qxam"
    ca.server_context("mail.παράδειγμα.ελ")


def test_a_temporary_ca_keeps_its_key_in_memory_and_goes_with_close():
    ca = LabCA(["mail.example.com"])
    folder = ca.directory
    assert sorted(p.name for p in folder.iterdir()) == [
        "mail.example.com.key", "mail.example.com.pem", "maillab-ca.pem"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())
    ca.server_context("mail.example.com")
    ca.close()
    assert not folder.exists()
