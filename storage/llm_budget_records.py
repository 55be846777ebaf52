"""The values of the token budgets (`storage.llm_budget`): periods, reservations, a budget's
status, one call's usage, totals, and the settlement of a reservation. Plain frozen values,
checked when made; every one names its tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage.errors import Conflict, InvalidRequest

PERIODS = ("month", "day", "total")
DEFAULT_PERIOD = "month"
DEFAULT_RESERVATION_TTL_S = 600.0


class TokenBudgetExceeded(Conflict):
    """The tenant's budget for this period cannot cover the estimate; `details` has the
    limit, the tokens used and reserved, and the estimate."""

    code = "token_budget_exceeded"


def period_key(period: str, at: datetime) -> str:
    """The counters a call at `at` goes to: "2026-12" (month), "2026-12-04" (day), "total"."""
    if period == "month":
        return at.strftime("%Y-%m")
    if period == "day":
        return at.strftime("%Y-%m-%d")
    if period == "total":
        return "total"
    raise InvalidRequest(f"budget period {period!r} is not one of {PERIODS}", {"period": period})


@dataclass(frozen=True)
class Reservation:
    """Tokens set aside for one call of `tenant`, in the period `period_key`."""

    id: str
    tenant: str
    period_key: str
    tokens: int
    expires_at: datetime


@dataclass(frozen=True)
class BudgetStatus:
    """A tenant's budget in the current period; `limit_tokens` None means unlimited."""

    tenant: str
    period: str
    period_key: str
    limit_tokens: int | None
    used_tokens: int
    reserved_tokens: int

    @property
    def remaining_tokens(self) -> int | None:
        if self.limit_tokens is None:
            return None
        return max(0, self.limit_tokens - self.used_tokens - self.reserved_tokens)


@dataclass(frozen=True)
class UsageRecord:
    """What one model call used: tokens in and out, and its cost (None when unpriced)."""

    tenant: str
    deployment: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: float | None = None
    task_id: str | None = None

    def __post_init__(self) -> None:
        _check_tenant(self.tenant)
        for name in ("input_tokens", "output_tokens"):
            value = getattr(self, name)
            if value < 0:
                raise InvalidRequest(f"{name} must not be negative, not {value}", {name: value})
        if self.cost is not None and self.cost < 0:
            raise InvalidRequest(f"cost must not be negative, not {self.cost}",
                                 {"cost": self.cost})

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class UsageTotals:
    """The sum of some calls' usage."""

    calls: int
    input_tokens: int
    output_tokens: int
    cost: float


def _check_tenant(tenant: str) -> str:
    if not tenant or len(tenant) > 64:
        raise InvalidRequest(f"tenant {tenant!r} must be 1 to 64 characters", {"tenant": tenant})
    return tenant


@dataclass(frozen=True)
class Settlement:
    """One write of a batch: `reservation.tokens` taken off its row (given back, or replaced by
    the usage), and `usage` counted and recorded. Either may be None, not both. A usage
    without a reservation counts in its tenant's current period of `period` when given (a
    recent read is good enough), else of the period read from the store."""

    reservation: Reservation | None = None
    usage: UsageRecord | None = None
    period: str | None = None  # without a reservation: the tenant's budget period, if known

    def __post_init__(self) -> None:
        if self.reservation is None and self.usage is None:
            raise InvalidRequest("a settlement needs a reservation, a usage or both", {})
        if (self.reservation is not None and self.usage is not None
                and self.usage.tenant != self.reservation.tenant):
            raise InvalidRequest("a reservation is reconciled with the usage of its own tenant",
                                 {"tenant": self.reservation.tenant})
