"""`bazar bench --compare OLD.json NEW.json`: before and after, without running anything.

Rows are matched on (scenario, series, clients); the old names of the first `bazar bench`
(`info`, `search`) count as `info-hit` and `search-hit`, and its JSON (a bare list of rows) is
read as well as today's `{"meta", "results"}`. For each metric the table gives old, new and
new / old; a row found in one file only is listed with dashes for the other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from bazar.bench.scenarios import canonical

Key = tuple[str, str | None, int]
METRICS = (
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("throughput_rps", "req/s"),
    ("server_cpu_ms_per_request_total", "CPU ms/req"),
)


@dataclass(frozen=True, slots=True)
class Change:
    old: float | None
    new: float | None

    @property
    def ratio(self) -> float | None:
        """new / old; None unless both are known and old is not 0."""
        if self.old is None or self.new is None or self.old == 0:
            return None
        return self.new / self.old


@dataclass(frozen=True, slots=True)
class Comparison:
    key: Key
    changes: dict[str, Change]  # by metric field


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of a `bazar bench --output` file, old or new format.

    Raises: OSError if it cannot be read, ValueError if it is not such a file.
    """
    document = json.loads(path.read_text(encoding="utf-8"))
    rows = document.get("results") if isinstance(document, dict) else document
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: not a bazar bench results file")
    for row in rows:
        if not isinstance(row.get("scenario"), str) or not isinstance(row.get("concurrency"), int):
            raise ValueError(f"{path}: a row without scenario and concurrency")
    return rows


def key_of(row: Mapping[str, Any]) -> Key:
    return canonical(row["scenario"]), row.get("series"), row["concurrency"]


def _value(row: Mapping[str, Any] | None, metric: str) -> float | None:
    value = None if row is None else row.get(metric)
    return float(value) if isinstance(value, int | float) else None


def compare(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[Comparison]:
    """Every row of either file, in the new file's order, then the old file's leftovers."""
    old_by_key = {key_of(row): row for row in old}
    new_by_key = {key_of(row): row for row in new}
    keys = list(dict.fromkeys([*new_by_key, *old_by_key]))
    return [
        Comparison(
            key,
            {
                metric: Change(
                    _value(old_by_key.get(key), metric), _value(new_by_key.get(key), metric)
                )
                for metric, _ in METRICS
            },
        )
        for key in keys
    ]


def _cell(change: Change, metric: str) -> str:
    digits = 0 if metric == "throughput_rps" else 3

    def text(value: float | None) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    ratio = change.ratio
    shown = f"{text(change.old)} -> {text(change.new)}"
    return shown if ratio is None else f"{shown} ({ratio:.2f}x)"


def compare_table(comparisons: Sequence[Comparison], old_name: str, new_name: str) -> Table:
    table = Table(title=f"{old_name} -> {new_name} (new / old)", title_justify="left")
    table.add_column("scenario")
    table.add_column("clients", justify="right")
    for _, title in METRICS:
        table.add_column(title, justify="right")
    for comparison in comparisons:
        scenario, series, clients = comparison.key
        label = scenario if series is None else f"{scenario} {series}"
        cells = [_cell(comparison.changes[metric], metric) for metric, _ in METRICS]
        table.add_row(label, str(clients), *cells)
    return table
