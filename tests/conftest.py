"""Shared fixtures: real clusters on loopback, stopped by process group at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bazar.testing.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 2+2 cluster shared by a test module (tests must not depend on each other's stock)."""
    running = Cluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own for one test."""
    running = Cluster(tmp_path / "cluster").start()
    try:
        yield running
    finally:
        running.stop()
