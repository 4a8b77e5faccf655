"""The one clock every process steps its cores with: monotonic milliseconds (the cores take
time as `now_ms: int` and never read a clock; the simulator gives them its own)."""

from __future__ import annotations

import time


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000
