from __future__ import annotations

import pickle

import pytest

from serve_apps.errors import Forbidden, PayloadTooLarge, RateLimited, Unauthenticated
from storage.errors import YmeraError


@pytest.mark.parametrize(("error", "code"), [
    (Unauthenticated, "unauthenticated"),
    (Forbidden, "forbidden"),
    (RateLimited, "rate_limited"),
    (PayloadTooLarge, "payload_too_large"),
])
def test_each_error_has_its_code_and_pickles(error: type[YmeraError], code: str) -> None:
    exc = error("no", {"why": "rule"})
    copy = pickle.loads(pickle.dumps(exc))
    assert isinstance(exc, YmeraError) and exc.code == code
    assert type(copy) is error and copy.message == "no" and copy.details == {"why": "rule"}


def test_rate_limited_keeps_retry_after_across_pickling() -> None:
    exc = RateLimited("slow down", {"limit": 10}, retry_after_s=2.5)
    copy = pickle.loads(pickle.dumps(exc))
    assert copy.retry_after_s == 2.5 and copy.details == {"limit": 10} and str(copy) == "slow down"
    assert RateLimited("slow down").retry_after_s == 1.0
