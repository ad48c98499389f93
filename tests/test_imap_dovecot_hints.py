"""Differential checks (against Dovecot 2.3) of answers whose hints were reworded: the status
word and response code must be Dovecot's, whatever the human text says. See test_imap_dovecot."""

from test_imap_dovecot import compare, servers  # noqa: F401  (the fixture)

GREEK = "Φίλοι".encode()


def test_sequence_numbers_in_an_empty_folder(servers):  # noqa: F811
    compare(servers, [b"LOGIN alice alice-pw", b"CREATE Empty", b"SELECT Empty",
                      b"STORE 1:* +FLAGS (\\Seen)", b"STORE 1 +FLAGS (\\Seen)", b"FETCH 1:* FLAGS",
                      b"COPY 1:* INBOX", b"UID STORE 1:* +FLAGS (\\Seen)", b"UID FETCH 1:* FLAGS"])


def test_raw_utf8_folder_names(servers):  # noqa: F811
    compare(servers, [b"LOGIN alice alice-pw", b"CREATE " + GREEK, b'CREATE "' + GREEK + b'"',
                      b"SELECT " + GREEK, b'SELECT "' + GREEK + b'"', b"CREATE &A6YDrwO7A78DuQ-",
                      b"SELECT &A6YDrwO7A78DuQ-"])
