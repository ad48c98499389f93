"""Bounded fuzzing of the SMTP servers (the long runs are bench/fuzz_smtp.py).

Each input goes to a real LabSMTP over loopback on a fresh connection; a failure is a reply that
reports an exception, a refusal without a hint, a reply that is not one printable line, a
session that does not end, or an error in the lab's log (see bench/fuzz_smtp.py).
"""

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import maillab
from maillab.smtp import malformed, printable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from fuzz_smtp import TOKENS, SmtpFuzzer, _LAB_OPTIONS  # noqa: E402

BOUNDED = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])

pieces = st.one_of(st.sampled_from(TOKENS), st.binary(max_size=40))
lines = st.lists(pieces, min_size=1, max_size=6).map(b"\r\n".join)


@pytest.fixture(scope="module")
def fuzzer():
    with maillab.MailLab(ports="any", options=dict(_LAB_OPTIONS)) as lab:
        yield SmtpFuzzer(lab)


messages = st.lists(st.one_of(pieces, st.sampled_from([b"", b".", b"..", b"From: x", b" folded"])),
                    max_size=8).map(b"\r\n".join)


@pytest.mark.parametrize("target, inputs", [
    ("session", lines),  # anything after the greeting
    ("envelope", pieces),  # MAIL FROM:<anything>
    ("recipient", pieces),  # RCPT TO:<anything>, logged in
    ("auth", lines),  # AUTH anything, and what follows
    ("message", messages),  # DATA with any text
])
def test_the_server_copes_with_any_input(fuzzer, target, inputs):
    @BOUNDED
    @given(data=inputs)
    def copes(data):
        assert getattr(fuzzer, target)(data) is None

    copes()


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(address=st.text(max_size=60))
def test_an_address_is_accepted_or_refused_in_one_printable_line(address):
    reply = malformed(address)
    assert reply is None or (reply.startswith("553 5.1.3 ") and printable(reply) == reply)


@pytest.mark.parametrize("argument", [b"\x1c", b"\x1d", b"\x1f \x1e", b"\x0b\x0c"])
def test_auth_with_only_unicode_whitespace_names_no_mechanism(fuzzer, argument):
    # bench/fuzz.py found "AUTH \x1c": str.split() sees \x1c-\x1f as spaces, so aiosmtpd found
    # no mechanism and raised IndexError (a 451 internal error) instead of answering 501.
    assert fuzzer.auth(argument + b"\r\n") is None
    replies, _ended = fuzzer._converse(b"EHLO x\r\nAUTH " + argument + b"\r\nQUIT\r\n")
    assert replies[-2].startswith(b"501 "), replies
