"""The views file: where the front end keeps each tier's current view."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from bazar.config import REPLICATED_TIERS, Cluster
from bazar.frontend.views import initial_view
from bazar.wire import Member, View

_views_decoder = msgspec.json.Decoder(dict[str, View])


class ViewStore:
    """The views file, behind the small interface a shared store (etcd) could also offer:
    `load`, and `compare_and_set` on a tier's epoch. Written to a temporary file, fsynced,
    renamed, directory fsynced: a view is durable before anyone hears of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._views: dict[str, View] = {}

    def load(self, cluster: Cluster) -> dict[str, View]:
        if self.path.exists():
            self._views = _views_decoder.decode(self.path.read_bytes())
            return dict(self._views)
        views: dict[str, View] = {
            tier: initial_view(
                tier, tuple(Member(name=n.name, url=n.url) for n in cluster.replicas(tier))
            )
            for tier in REPLICATED_TIERS
        }
        self._write(views)
        self._views = views
        return dict(views)

    def compare_and_set(self, expected_epoch: int, view: View) -> bool:
        """Store `view` if its tier's stored epoch is still `expected_epoch`."""
        current = self._views.get(view.tier)
        if current is None or current.epoch != expected_epoch:
            return False
        views = {**self._views, view.tier: view}
        self._write(views)
        self._views = views
        return True

    def _write(self, views: dict[str, View]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as handle:
            handle.write(msgspec.json.encode(views))
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
