"""The same `bazar bench` run against clusters built from several git revisions, one after
the other in one run: the before/after of an optimisation on the same machine, minutes apart.

Each revision gets a detached worktree (`.` is the working tree as it is) and a fresh 2+2
cluster (`bazar.testing.cluster`, `PYTHONPATH` pointing at that revision's `src`); the load
generator is always this checkout's `bazar bench`, so only the servers differ. With
`--rounds 2` the revisions alternate (A B A B), which shows how much of a difference is noise.
Every cluster and worktree is removed at the end; the JSON files stay.

Run: .venv/bin/python bench/revisions.py before=b9a43ad after=. --out /tmp/bazar-revs \
        --scenario info-hit purchase --concurrency 1 32 --duration 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bazar.testing.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def source_of(revision: str, scratch: Path) -> Iterator[Path]:
    """The `src` directory of `revision` (a temporary worktree), or of this checkout for `.`."""
    if revision == ".":
        yield ROOT / "src"
        return
    tree = scratch / f"tree-{revision}"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(tree), revision], check=True)
    try:
        yield tree / "src"
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=False)


@contextlib.contextmanager
def cluster_from(src: Path, data_dir: Path) -> Iterator[Cluster]:
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)  # inherited by `bazar up` and every replica
    try:
        cluster = Cluster(data_dir).start()
    finally:
        if previous is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = previous
    try:
        yield cluster
    finally:
        cluster.stop()


def bench(cluster: Cluster, output: Path, options: list[str]) -> None:
    token = cluster.admin_token
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-m", "bazar", "bench", "--url", cluster.url]
    command += ["--admin-token", token, "--output", str(output), *options]
    subprocess.run(command, check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="LABEL=REV (REV `.` is the working tree)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON files")
    parser.add_argument("--rounds", type=int, default=1)
    args, options = parser.parse_known_args()
    pairs = [item.split("=", 1) for item in args.revisions]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bazar-revs-") as scratch:
        for round_number in range(1, args.rounds + 1):
            for label, revision in pairs:
                with source_of(revision, Path(scratch)) as src:
                    data_dir = Path(scratch) / f"data-{label}-{round_number}"
                    output = args.out / f"{label}-{round_number}.json"
                    print(f"== {label} ({revision}), round {round_number}", flush=True)
                    with cluster_from(src, data_dir) as cluster:
                        bench(cluster, output, options)
    first = pairs[0][0]
    for round_number in range(1, args.rounds + 1):
        for label, _ in pairs[1:]:
            old, new = (args.out / f"{name}-{round_number}.json" for name in (first, label))
            print(f"== {old.stem} -> {new.stem}", flush=True)
            compare = [sys.executable, "-m", "bazar", "bench", "--compare", str(old), str(new)]
            subprocess.run(compare, check=False)


if __name__ == "__main__":
    main()
