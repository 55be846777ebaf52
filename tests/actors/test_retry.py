import random

import pytest

from actors.retry import RetryPolicy


def test_backoff_doubles_is_capped_and_jittered_downwards():
    policy = RetryPolicy(max_attempts=10, backoff_base_s=0.5, backoff_max_s=4.0, jitter=0.5)
    rng = random.Random(7)
    delays = [[policy.delay_after(n, rng) for _ in range(200)] for n in range(1, 7)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for samples, ceiling in zip(delays, ceilings):
        assert all(ceiling * 0.5 <= d <= ceiling for d in samples)
        assert max(samples) - min(samples) > ceiling * 0.3  # really jittered


def test_no_jitter_is_exact_and_huge_attempt_numbers_do_not_overflow():
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=30.0, jitter=0.0)
    assert [policy.delay_after(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert policy.delay_after(10_000) == 30.0


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"jitter": 1.5},
                                    {"backoff_base_s": -1}])
def test_invalid_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)
