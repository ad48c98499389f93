"""IMAP LANGUAGE (RFC 5255) and POP3 LANG (RFC 6856): a learner asks the server itself for Greek.

Only the human-readable text changes (after the status word and the response code, in UTF-8);
status words, response codes and data stay as they are; without the command every reply stays
ASCII English, whatever the learner's language.
"""

import imaplib
import poplib

import pytest

import maillab
from maillab import i18n, serverlang


@pytest.fixture(scope="module")
def lab():
    with maillab.MailLab(ports="any") as lab:
        lab.store.account("alice").folder("INBOX").deliver(
            b"From: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
        yield lab


def password(lab, login="alice"):
    return lab.account(login).password


# ----------------------------------------------------------------------------- IMAP

def imap(lab) -> imaplib.IMAP4:
    return imaplib.IMAP4(lab.host, lab.imap_port, timeout=10)


def raw(M: imaplib.IMAP4, command: str) -> tuple[list[bytes], bytes]:
    """Send a command by hand (as a learner types it); (untagged lines, tagged line)."""
    tag = M._new_tag()
    M.send(tag + b" " + command.encode() + b"\r\n")
    untagged = []
    while not (line := M.readline()).startswith(tag + b" "):
        untagged.append(line)
    return untagged, line


MISTAKES = ["SELECT nosuch", "FETCH 1 FLAGZ", "STORE 9 +FLAGS (\\Seen)", "FOO", "COPY 1 nosuch"]


def test_imap_language_lists_the_languages_with_i_default(lab):
    M = imap(lab)
    assert "LANGUAGE" in M.capabilities
    untagged, done = raw(M, "LANGUAGE")
    assert untagged == [b"* LANGUAGE (i-default en el)\r\n"]
    assert done.split()[1] == b"OK"
    M.shutdown()


def test_imap_language_el_turns_the_text_greek_and_nothing_else(lab):
    M, english = imap(lab), imap(lab)
    untagged, done = raw(M, 'LANGUAGE "el-GR"')  # RFC 4647 lookup: el-GR -> el
    assert untagged == [b"* LANGUAGE (el)\r\n"]
    assert done.split(b" ", 2)[1] == b"OK" and "Ελληνικά" in done.decode("utf-8")
    _u, refused = raw(M, "LOGIN alice wrong")
    _u, refused_en = raw(english, "LOGIN alice wrong")
    greek, plain = refused.decode("utf-8"), refused_en.decode("ascii")
    # the status word and the code stay; the text is the catalog's Greek
    assert greek.split()[1:3] == plain.split()[1:3] == ["NO", "[AUTHENTICATIONFAILED]"]
    assert "Η πιστοποίηση απέτυχε" in greek and not greek.isascii()
    for client in (M, english):
        raw(client, f"LOGIN alice {password(lab)}")
    # data is data: the same bytes in both sessions
    for command in ["EXAMINE INBOX", "FETCH 1:* (FLAGS RFC822.SIZE BODY.PEEK[])", 'LIST "" *',
                    "SEARCH ALL", "STATUS INBOX (MESSAGES UNSEEN)"]:
        got, _d = raw(M, command)
        want, _d = raw(english, command)
        data = [line for line in got if not line.startswith(b"* OK")]
        assert data == [line for line in want if not line.startswith(b"* OK")], command
    _u, missing = raw(M, "SELECT nosuch")
    assert missing.split()[1:3] == [b"NO", b"[NONEXISTENT]"]
    assert "δεν υπάρχει φάκελος" in missing.decode("utf-8")
    for client in (M, english):
        client.shutdown()


def test_imap_language_without_a_match_keeps_the_language_and_says_no(lab):
    M = imap(lab)
    untagged, done = raw(M, "LANGUAGE fr de")
    assert untagged == [] and done.split()[1] == b"NO" and done.isascii()
    untagged, done = raw(M, "LANGUAGE fr-CA el")  # the first one offered wins
    assert untagged == [b"* LANGUAGE (el)\r\n"]
    untagged, done = raw(M, "LANGUAGE xx")  # refused in the language in use: Greek stays
    assert untagged == [] and done.split()[1] == b"NO"
    _u, still = raw(M, "SELECT nosuch")
    assert not still.isascii()
    untagged, done = raw(M, 'LANGUAGE "*"')  # "*": the language in use
    assert untagged == [b"* LANGUAGE (el)\r\n"]
    untagged, done = raw(M, "LANGUAGE i-default")  # back to the default: ASCII English
    assert untagged == [b"* LANGUAGE (i-default)\r\n"] and done.isascii()
    _u, back = raw(M, "SELECT nosuch")
    assert back.isascii() and b"log in first" in back
    _u, bad = raw(M, "LANGUAGE el_GR")
    assert bad.split()[1] == b"BAD"
    M.shutdown()


def test_imap_language_default_is_the_labs_learner_language(lab, monkeypatch):
    monkeypatch.setattr(i18n, "_learner_language", "el")  # as maillab.start(lang="el")
    M = imap(lab)
    untagged, _done = raw(M, "LANGUAGE default")
    assert untagged == [b"* LANGUAGE (el)\r\n"]
    M.shutdown()


def test_without_language_every_imap_reply_is_ascii_english_even_in_a_greek_lab(lab, monkeypatch):
    monkeypatch.setattr(i18n, "_learner_language", "el")
    M = imap(lab)
    lines = [M.welcome]
    for command in ["NOOP", "SELECT INBOX", f"LOGIN alice {password(lab)}"] + \
            ["SELECT INBOX"] + MISTAKES + ["LOGOUT"]:
        untagged, done = raw(M, command)
        lines += untagged + [done]
    assert all(line.isascii() for line in lines), [line for line in lines if not line.isascii()]
    assert any(b"no folder named nosuch" in line for line in lines)
    M.shutdown()


def test_an_idle_greek_session_is_logged_out_in_greek():
    from maillab.imap.testing import ImapTestServer
    with ImapTestServer(options={"imap_timeout": 0.3}) as srv:
        M = imaplib.IMAP4(srv.host, srv.port, timeout=10)
        raw(M, "LANGUAGE el")
        raw(M, "LOGIN alice alice-pw")
        bye = M.readline().decode("utf-8")
        assert bye.startswith("* BYE ") and not bye.isascii()
        events = [line.text for line in srv.transcript() if line.who == "*"]
        assert any("imap_timeout" in e and e.isascii() for e in events)  # the lab's own words
        M.shutdown()


# ----------------------------------------------------------------------------- POP3

def pop3(lab) -> poplib.POP3:
    return poplib.POP3(lab.host, lab.pop3_port, timeout=10)


def test_pop3_capa_lists_lang_and_utf8_and_lang_lists_the_languages(lab):
    P = pop3(lab)
    caps = P.capa()
    assert "LANG" in caps and caps.get("UTF8") == ["USER"]
    resp, listing, _octets = P._longcmd("LANG")
    assert resp.startswith(b"+OK")
    assert listing == [f"{tag} {serverlang.name(tag)}".encode() for tag in ("i-default", "en", "el")]
    assert P._shortcmd("UTF8").startswith(b"+OK")
    P.quit()


def test_pop3_lang_el_turns_the_text_greek_and_nothing_else(lab):
    P = pop3(lab)
    answer = P._shortcmd("LANG el").decode("utf-8")
    assert answer.startswith("+OK el ") and "Ελληνικά" in answer  # the tag in use, then the text
    with pytest.raises(poplib.error_proto) as refused:
        P._shortcmd("PASS x")  # PASS before USER
    assert refused.value.args[0].decode("utf-8").startswith("-ERR δώσε πρώτα")
    P.user("alice")
    with pytest.raises(poplib.error_proto) as wrong:
        P.pass_("wrong")
    assert wrong.value.args[0].startswith(b"-ERR [AUTH] ") and not wrong.value.args[0].isascii()

    def data(client):  # "+OK count octets", listings, message bytes: never translated
        return client.stat(), client.uidl()[1], client.retr(1)[1], client._shortcmd("LIST 1")

    P.user("alice")
    P.pass_(password(lab))
    greek_data = data(P)
    with pytest.raises(poplib.error_proto):
        P._shortcmd("LANG xx")  # not offered: -ERR, the language stays
    with pytest.raises(poplib.error_proto) as unknown:
        P._shortcmd("FOO")
    assert not unknown.value.args[0].isascii()
    assert P._shortcmd("LANG en").decode("ascii").startswith("+OK en ")
    with pytest.raises(poplib.error_proto) as unknown:
        P._shortcmd("FOO")
    assert unknown.value.args[0].isascii()
    P.quit()
    english = pop3(lab)
    english.user("alice")
    english.pass_(password(lab))
    assert data(english) == greek_data
    english.quit()


def test_pop3_lang_refusals(lab):
    P = pop3(lab)
    with pytest.raises(poplib.error_proto) as none:
        P._shortcmd("LANG xx")
    assert none.value.args[0].startswith(b"-ERR i-default ")  # the language in use stays
    with pytest.raises(poplib.error_proto) as bad:
        P._shortcmd("LANG el GR")
    assert bad.value.args[0].startswith(b"-ERR syntax error")
    P.quit()


def test_without_lang_every_pop3_reply_is_ascii_english_even_in_a_greek_lab(lab, monkeypatch):
    monkeypatch.setattr(i18n, "_learner_language", "el")
    P = pop3(lab)
    lines = [P.getwelcome()]
    for command in ["CAPA", "PASS x", "STAT", "FOO", "USER alice", "PASS wrong", "USER alice",
                    f"PASS {password(lab)}", "STAT", "LIST", "RETR 9", "TOP 1 0", "NOOP"]:
        P._putcmd(command)
        line = P._getline()[0]
        lines.append(line)
        if line.startswith(b"+OK") and command.split()[0] in ("CAPA", "LIST", "TOP"):
            while (line := P._getline()[0]) != b".":
                lines.append(line)
    assert all(line.isascii() for line in lines), [line for line in lines if not line.isascii()]
    P.quit()


# ----------------------------------------------------------------------------- session cells

@pytest.mark.parametrize("protocol, text", [
    ("imap", "a1 LANGUAGE\na2 LANGUAGE el\na3 SELECT Nowhere\na4 LOGOUT\n"),
    ("pop3", "LANG\nLANG el\nUSER alice\nPASS wrong\nQUIT\n"),
])
def test_a_session_cell_knows_the_language_commands_and_reads_their_answers(lab, protocol, text):
    """%%imap / %%pop3 treat LANGUAGE and LANG as commands (no "not a command" remark), read the
    multi-line language list of a bare LANG whole, and show the Greek text after the switch."""
    from maillab.sessions import run_session

    result = run_session(protocol, "example.com", text, lab=lab)
    shown = str(result)
    assert "is not an IMAP command" not in shown and "is not a POP3 command" not in shown
    assert any("\u0370" <= ch <= "\u03ff" for ch in shown)  # the server's Greek text
    if protocol == "pop3":
        listing = shown.split("C: LANG\n", 1)[1].split("C: LANG el", 1)[0]
        assert "el" in listing and "\nS: .\n" in listing  # the list up to its final dot


def test_after_language_el_the_switch_and_the_usual_completions_are_greek(lab):
    """RFC 5255: the tagged OK of LANGUAGE is already in the new language, and so are the
    usual texts of later tagged OKs ("SELECT completed", "Logged in")."""
    M = imap(lab)
    _untagged, switched = raw(M, "LANGUAGE el")
    _u, login = raw(M, f"LOGIN alice {password(lab)}")
    _u, select = raw(M, "SELECT INBOX")
    raw(M, "LOGOUT")
    for line in (switched, login, select):
        assert any("\u0370" <= ch <= "\u03ff" for ch in line.decode("utf-8")), line
    assert b" OK [READ-WRITE] SELECT" in select
