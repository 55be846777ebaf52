"""`actors.autoscaler`: how many replicas a backlog wants, and when a pool may act on it."""

from __future__ import annotations

import pytest

from actors.autoscaler import Autoscaler, wanted_replicas
from actors.config import AutoscaleConfig


@pytest.mark.parametrize(("backlog", "target", "low", "high", "wanted"), [
    (0, 4, 1, 8, 1),     # idle: the minimum
    (0, 4, 0, 8, 0),     # scale to zero when allowed
    (1, 4, 0, 8, 1),     # one task wakes a pool from zero
    (9, 4, 1, 8, 3),     # ceil(9 / 4)
    (100, 4, 1, 8, 8),   # never above the maximum
    (5, 1, 2, 2, 2),     # pinned
])
def test_the_backlog_wants_a_replica_per_target_within_bounds(backlog, target, low, high,
                                                              wanted):
    assert wanted_replicas(backlog, target, low, high) == wanted


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_growth_waits_out_the_upscale_delay_and_shrinking_the_idle_period():
    clock = Clock()
    scaler = Autoscaler(AutoscaleConfig(upscale_delay_s=1.0, downscale_delay_s=10.0), clock)

    assert scaler.decide("p", desired=1, wanted=4) is None
    clock.now += 1.0
    assert scaler.decide("p", desired=1, wanted=4) == 4

    assert scaler.decide("p", desired=4, wanted=1) is None
    clock.now += 9.0
    assert scaler.decide("p", desired=4, wanted=1) is None
    clock.now += 1.0
    assert scaler.decide("p", desired=4, wanted=1) == 1


def test_a_shrink_goes_no_lower_than_the_busiest_moment_of_the_idle_period():
    clock = Clock()
    scaler = Autoscaler(AutoscaleConfig(upscale_delay_s=0.0, downscale_delay_s=10.0), clock)

    for wanted in (1, 3, 2, 1):
        assert scaler.decide("p", desired=4, wanted=wanted) is None
        clock.now += 3.0
    assert scaler.decide("p", desired=4, wanted=1) == 3


def test_a_burst_during_the_idle_period_starts_it_again():
    clock = Clock()
    scaler = Autoscaler(AutoscaleConfig(upscale_delay_s=5.0, downscale_delay_s=10.0), clock)

    assert scaler.decide("p", desired=4, wanted=1) is None
    clock.now += 8.0
    assert scaler.decide("p", desired=4, wanted=4) is None  # busy again: no shrink pending
    clock.now += 3.0
    assert scaler.decide("p", desired=4, wanted=1) is None  # a fresh idle period
    clock.now += 9.0
    assert scaler.decide("p", desired=4, wanted=1) is None
    clock.now += 1.0
    assert scaler.decide("p", desired=4, wanted=1) == 1


def test_pools_are_timed_apart_and_a_hand_set_size_forgets_the_pending_wish():
    clock = Clock()
    scaler = Autoscaler(AutoscaleConfig(upscale_delay_s=2.0, downscale_delay_s=2.0), clock)

    assert scaler.decide("a", desired=1, wanted=3) is None
    clock.now += 1.0
    assert scaler.decide("b", desired=1, wanted=3) is None
    clock.now += 1.0
    assert scaler.decide("a", desired=1, wanted=3) == 3
    assert scaler.decide("b", desired=1, wanted=3) is None

    scaler.forget("b")
    clock.now += 1.5
    assert scaler.decide("b", desired=1, wanted=3) is None
