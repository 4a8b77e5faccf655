"""Money: costs are exact cents on disk and on the wire between tiers (integers), a
number of the currency with at most two decimals at the edge."""

from __future__ import annotations

from decimal import Decimal

COST_CENTS_MAX = 10**15


def cost_to_cents(cost: int | float) -> int | None:
    """Exact cents of a non-negative cost with at most two decimals, else None."""
    if isinstance(cost, bool) or cost < 0:
        return None
    exact = Decimal(repr(cost)) * 100
    if exact != exact.to_integral_value() or exact > COST_CENTS_MAX:
        return None
    return int(exact)


def cents_to_cost(cents: int) -> float:
    return cents / 100
