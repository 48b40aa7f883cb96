"""The Redactor and `printable` (archiver/scrub.py); end to end in tests/test_e2e_hostile.py."""

from __future__ import annotations

from archiver.scrub import Redactor, dsn_secrets, json_text, printable


def test_printable_shows_c0_c1_and_del_as_four_characters() -> None:
    assert printable("\x1b]0;PWNED\x07\x1b[2K\rok\x7f\x9b\n") == "\\x1b]0;PWNED\\x07\\x1b[2K\\x0dok\\x7f\\x9b\\x0a"
    assert printable("plain é ✓") == "plain é ✓"
    assert json_text({"m": "\x1b\x9b"}, indent=None) == '{"m": "\\u001b\\u009b"}'


def test_a_secret_is_redacted_as_written_json_escaped_and_url_quoted() -> None:
    r = Redactor(["sk/abc+123\"x", "short"])
    assert r.text('key sk/abc+123"x, quoted sk%2Fabc%2B123%22x') == "key [redacted], quoted [redacted]"
    assert r.bytes(b'{"msg": "bad sk/abc+123\\"x"}') == b'{"msg": "bad [redacted]"}'
    assert r.text("short stays") == "short stays"  # under MIN_SECRET: it would match ordinary words


def test_the_dsn_password_is_a_secret_in_both_forms() -> None:
    assert "s3cr%40t" in dsn_secrets("postgresql://app:s3cr%40t@db/x") and "s3cr@t" in dsn_secrets(
        "postgresql://app:s3cr%40t@db/x")
    assert dsn_secrets("host=db password='p w' user=a") == ["p w"]
