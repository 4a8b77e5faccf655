"""Round robin over the replicas that may serve a read (the lab's choice), without I/O.

The caller tries the replicas in the order given and moves to the next one on a connection
error or timeout, so one dead replica costs no failed read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class RoundRobin:
    turn: int = 0

    def order(self, healthy: Sequence[str], others: Sequence[str] = ()) -> list[str]:
        """Healthy replicas first, rotated one step per call; then the others, as a last try."""
        self.turn += 1
        if not healthy:
            return list(others)
        start = self.turn % len(healthy)
        rotated = [*healthy[start:], *healthy[:start]]
        assert len(rotated) == len(healthy)
        return [*rotated, *others]
