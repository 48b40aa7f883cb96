"""archiver.pacing.retry_after: both forms of Retry-After (RFC 9110 §10.2.3), and bad values.

The HTTP-date form end to end is in test_e2e_paths.py; these pin the parsing itself.
"""

from __future__ import annotations

import email.utils
import time

import pytest

from archiver.pacing import retry_after


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


@pytest.mark.xfail(strict=True, raises=ValueError, reason=(
    "bug: a Retry-After that is neither seconds nor a date raises ValueError from "
    "email.utils.parsedate_to_datetime; on a provider's 429 the poller logs 'unexpected error' "
    "and polls again at once instead of pausing the entry"))
def test_garbage_is_no_hint() -> None:
    assert retry_after({"Retry-After": "soon, honestly"}) is None


@pytest.mark.xfail(strict=True, reason=(
    "bug: 'inf' parses as float('inf'); a provider's 429 with it pauses the entry forever "
    "(TokenBucket.pause(inf)); delay-seconds is a non-negative integer"))
def test_infinity_is_no_hint() -> None:
    assert retry_after({"Retry-After": "inf"}) is None
