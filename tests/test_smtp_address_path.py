"""MAIL FROM/RCPT TO addresses: the quick path for ``<local@domain>`` gives the parser's answer.

LabSMTP reads the address every client sends (``<name@example.com>``, maybe followed by
parameters such as ``SIZE=``) with one regular expression instead of the email package's
RFC 5322 parser, and leaves everything else to the parser. Whatever the text, the answer must
be aiosmtpd's own: these tests compare the two on addresses built to sit on the edge of the
quick path (dots, spaces, tabs, comments, brackets, line ends, non-ASCII letters).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from test_fast_paths import aiosmtpd_getaddr, lab_getaddr

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
ODD = '. @<>()[]"\\\t\n\x0b\u00a0é,;:'

# A local part or a domain: mostly atoms and dots, sometimes a character the quick path refuses.
parts = st.text(alphabet=st.sampled_from(ATEXT + "." * 6 + ODD), min_size=0, max_size=8)
# What may come before the "<" and after the ">".
lead = st.sampled_from(["", " ", "  ", "\t", " \t", "\x0b", "\u00a0", "(c)", " (c) "])
tail = st.sampled_from(["", " SIZE=100", " SIZE=100 BODY=8BITMIME", "  SIZE=1", " \tSIZE=1",
                        "\tSIZE=1", " ", "  ", "\n", "\r\n", " (comment) SIZE=1", "(c)", "x",
                        ">", " \u00a0SIZE=1", " é", " <b@c.example>"])


@settings(max_examples=600, deadline=None, derandomize=True)
@given(lead, parts, parts, tail, st.sampled_from([0, 3]))
def test_an_angle_address_reads_as_the_parser_reads_it(before, local, domain, after, limit):
    arg = f"{before}<{local}@{domain}>{after}"
    if arg.lstrip().startswith("<>"):
        return  # the null path, which the lab accepts and aiosmtpd refuses (test_fast_paths)
    assert lab_getaddr(arg, limit) == aiosmtpd_getaddr(arg, limit), arg


EDGES = ["<a@b.example>", "<a.b@c.example> SIZE=5", "<a@b.example>\n", "<a@b.example> (x) SIZE=5",
         "<a@b.example>  SIZE=5", "<a@b.example>\tSIZE=5", "<a@b.example> \tSIZE=5",
         "<a@b.example> ", "\x0b<a@b.example>", " \x0b<a@b.example>", "<.a@b.example>",
         "<a.@b.example>", "<a..b@c.example>", "<a@b..example>", "<a@.b>", "<a@b.>",
         "<a@b.example> \u2028SIZE=1", "<a@b.example>x", "<Ab@C.Example>"]


def test_edges_of_the_quick_path_read_as_the_parser_reads_them():
    for arg in EDGES:
        for limit in (0, 1):
            assert lab_getaddr(arg, limit) == aiosmtpd_getaddr(arg, limit), (arg, limit)


def test_the_usual_address_takes_the_quick_path(monkeypatch):
    # The point of the quick path: the parser is not called for what clients usually send.
    from maillab.smtp import LabSMTP

    def no_parser(*args):
        raise AssertionError("the parser was called")

    monkeypatch.setattr(LabSMTP, "_parsed_address", staticmethod(no_parser))
    assert lab_getaddr("<bob@example.com> SIZE=1024 BODY=8BITMIME") == (
        "bob@example.com", "SIZE=1024 BODY=8BITMIME")
    assert lab_getaddr("<first.last+tag@mail.example.net>") == ("first.last+tag@mail.example.net", "")
