"""The webmail speaks the lab's language: a Greek lab's pages are Greek, an English lab's English.

The webmail runs on the lab's protocol thread, where ``_()`` answers in English (what goes on
the wire stays English); its pages ask for the learner's language themselves. Each page of a
Greek lab is read as a pupil would read it (its text and the attributes written for people)
and held to the same check as the catalogs: no English prose left (maillab.i18n.checks).
"""

from __future__ import annotations

import pytest

import maillab
from maillab import i18n
from maillab.i18n import checks, state
from maillab.i18n.edition import Edition
from maillab.webmail.testing import WebClient, csrf_of, fresh_account, make_message
from test_i18n_edition import ROOT

ALLOWED = state.allowed_latin(Edition(ROOT, "el"))


@pytest.fixture
def restore_language():
    saved = i18n._learner_language
    yield
    i18n._learner_language = saved


def lab_in(lang: str):
    return maillab.MailLab(ports="any", lang=lang).start()


def deliver(lab, address: str, raw: bytes, folder: str = "INBOX"):
    return lab.store.find_address(address).folder(folder).deliver(raw, ())


def visit_every_page(lab) -> dict[str, str]:
    """name -> HTML of every kind of page a learner meets: login (also with an error and after
    logging out), a folder, a message, compose (also refused), error pages, notices."""
    user, password = fresh_account(lab)
    # Greek content, so that any English on the pages is the webmail's own
    deliver(lab, user, make_message(sender="Bob <bob@example.com>", to=user,
                                    subject="Καλημέρα", text="Τα λέμε στο σχολείο."))
    deliver(lab, user, make_message(sender="Maria <maria@example.net>", to=user,
                                    subject="Εργασία", text="Η άσκηση 3 είναι για το IMAP."))
    web = WebClient(lab.webmail_url)
    pages = {"login": web.get("login").text}
    pages["login, wrong password"] = web.login(user, "wrong").text
    assert web.login(user, password).status_code == 303
    pages["inbox"] = web.get("mail?f=INBOX").text
    pages["message"] = web.get("read?f=INBOX&uid=1").text
    pages["compose"] = web.get("compose").text
    pages["reply"] = web.get("compose?mode=reply&f=INBOX&uid=1").text
    refused = web.post("send", {"csrf": web.csrf("compose"), "to": "", "subject": "x", "body": "x"})
    pages["compose, no recipient"] = refused.text
    sent = web.post("send", {"csrf": web.csrf("compose"), "to": "bob@example.com",
                             "subject": "Γεια", "body": "Γεια σου, Bob."})
    pages["notice: sent"] = web.follow(sent).text
    pages["sent folder"] = web.get("mail?f=Sent").text
    for n, uids in (("one", ["1"]), ("two", ["1", "2"])):
        moved = web.post("action", {"csrf": web.csrf(), "f": "INBOX", "op": "read", "uid": uids})
        pages[f"notice: {n} marked"] = web.follow(moved).text
    trashed = web.post("action", {"csrf": web.csrf(), "f": "INBOX", "op": "delete", "uid": ["2"]})
    pages["notice: moved to trash"] = web.follow(trashed).text
    pages["error: no such page"] = web.get("nothing-here").text
    pages["error: no such folder"] = web.get("mail?f=Nowhere").text
    pages["error: no such message"] = web.get("read?f=INBOX&uid=999").text
    pages["error: method"] = web.post("compose").text
    pages["error: bad number"] = web.get("read?f=INBOX&uid=x").text
    pages["error: expired form"] = web.post("action", {"csrf": "nonsense", "f": "INBOX"}).text
    logout = web.post("logout", {"csrf": web.csrf()})
    pages["logged out"] = web.follow(logout).text
    return pages


def test_a_greek_labs_webmail_pages_are_greek_everywhere(restore_language):
    lab = lab_in("el")
    try:
        pages = visit_every_page(lab)
    finally:
        lab.stop()
    for name, html in pages.items():
        assert '<html lang="el">' in html, name
        english = checks.english_in_texts(checks.page_texts(html), ALLOWED)
        assert not english, f"{name}: English left {english}"
    # the words a Greek mail program uses; IMAP's folder names stay as they are in the links
    assert "Σύνδεση" in pages["login"] and "Εισερχόμενα" in pages["inbox"]
    assert "Απεσταλμένα" in pages["inbox"] and "Κάδος" in pages["inbox"]
    assert "mail?f=Sent" in pages["inbox"] and "mail?f=Trash" in pages["inbox"]
    # one message, two messages: the plural forms of the notices
    assert "1 μήνυμα σημειώθηκε ως αναγνωσμένο" in pages["notice: one marked"]
    assert "2 μηνύματα σημειώθηκαν ως αναγνωσμένα" in pages["notice: two marked"]
    assert "1 μήνυμα μετακινήθηκε στον Κάδο" in pages["notice: moved to trash"]


def test_an_english_labs_webmail_stays_english(restore_language):
    lab = lab_in("en")
    try:
        user, password = fresh_account(lab)
        web = WebClient(lab.webmail_url)
        login = web.get("login").text
        assert web.login(user, password).status_code == 303
        inbox = web.get("mail?f=INBOX").text
        deliver(lab, user, make_message(to=user))
        marked = web.follow(web.post("action", {"csrf": csrf_of(inbox), "f": "INBOX",
                                                "op": "read", "uid": ["1"]})).text
    finally:
        lab.stop()
    assert '<html lang="en">' in login and "Log In" in login and "Email Address" in login
    assert '<html lang="en">' in inbox and "Inbox" in inbox and "Sent" in inbox
    assert "1 message marked as read." in marked


def test_the_webmail_can_be_given_its_own_language(restore_language):
    # a webmail told its language keeps it whatever the learner's (options={"webmail": {...}})
    lab = maillab.MailLab(ports="any", lang="en", options={"webmail": {"lang": "el"}}).start()
    try:
        page = WebClient(lab.webmail_url).get("login").text
    finally:
        lab.stop()
    assert '<html lang="el">' in page and "Σύνδεση" in page
