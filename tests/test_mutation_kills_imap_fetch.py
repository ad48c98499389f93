"""How the IMAP server reads a message for FETCH: MIME headers with comments and quoted strings,
the MIME tree, BODYSTRUCTURE, ENVELOPE and sections, as a client receives them. Each test was
shown to fail on a planted bug (bench/mutation.py, docs/mutation.md) that the rest of the
suite let through."""

from __future__ import annotations

import pytest

from maillab.imap import fetch as fetchmod
from maillab.net import ServerContext
from maillab.store import to_crlf
from maillab.transcript import Recorder
from test_imap_core import Client, store  # noqa: F401  (store: a fixture)


def fetch(store, message: bytes, items: str) -> bytes:
    """What a client receives for ``FETCH 1 <items>`` of this one message in alice's INBOX."""
    store.account("alice").folder("INBOX").deliver(to_crlf(message))
    c = Client(ServerContext(store, Recorder(), "mail.example.com", "example.com")).login()
    assert b"a OK" in c.cmd("a SELECT INBOX")
    out = c.cmd(f"a FETCH 1 {items}")
    assert out.endswith(b"a OK FETCH completed\r\n"), out
    return out


# ----------------------------------------------------------------------------- MIME headers

@pytest.mark.parametrize("value, params", [
    (b"text/plain (a \\) comment); charset=utf-8", [(b"charset", b"utf-8")]),  # \) inside
    (b"text/plain (x (nested) y) ; charset=utf-8", [(b"charset", b"utf-8")]),
    (b'text/plain; name="a\\"b.txt"', [(b"name", b'a"b.txt')]),  # an escaped quote
    (b'text/plain; name="a\\\\b.txt"', [(b"name", b"a\\b.txt")]),  # an escaped backslash
    (b"text/plain\r; charset=utf-8", [(b"charset", b"utf-8")]),  # a stray CR ends an atom
    (b"text/plain; charset=", []),  # a parameter without its value, at the end
    (b"text/plain; charset=; format=flowed", [(b"format", b"flowed")]),
])
def test_comments_and_quoted_strings_in_a_content_type(value, params):
    assert fetchmod.parse_content_type(value) == (b"text", b"plain", params)
