"""archiver.pacing.retry_after: both forms of Retry-After (RFC 9110 §10.2.3), and bad values.

The HTTP-date form end to end is in test_e2e_paths.py; these pin the parsing itself.
"""

from __future__ import annotations

import email.utils
import time

import pytest

from archiver.pacing import MAX_RETRY_AFTER, retry_after


def test_seconds() -> None:
    assert retry_after({"Retry-After": "120"}) == 120.0
    assert retry_after({"Retry-After": "0"}) == 0.0


def test_http_date_ahead() -> None:
    wait = retry_after({"Retry-After": email.utils.formatdate(time.time() + 10, usegmt=True)})
    assert wait is not None and 8.5 <= wait <= 10.0


def test_http_date_past_is_no_wait() -> None:
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_absent() -> None:
    assert retry_after({}) is None
    assert retry_after({"Retry-After": ""}) is None


@pytest.mark.parametrize("value", ["soon, honestly", "inf", "nan", "-inf", "Wed, 32 Foo 2015 99:99:99 GMT"])
def test_a_value_that_is_neither_is_no_hint(value: str) -> None:
    """Garbage once raised out of the paced request, and 'inf' paused an entry for good."""
    assert retry_after({"Retry-After": value}) is None


def test_beyond_an_hour_is_held_to_an_hour() -> None:
    assert retry_after({"Retry-After": "86400"}) == MAX_RETRY_AFTER == 3600.0
    far = email.utils.formatdate(time.time() + 7 * 86400, usegmt=True)
    assert retry_after({"Retry-After": far}) == MAX_RETRY_AFTER
