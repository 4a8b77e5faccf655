"""The `bazar` command's wiring (`bazar.cli`), without starting anything.

`bazar up` runs with a fake supervisor, so a test sees the cluster file it writes and nothing
is spawned; the membership commands run with the client functions replaced by recorders, so a
test sees what the command line passed them (the admin token above all). What the client then
does with it is tested against a scripted server in `test_client.py`.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from bazar import cli, client, supervisor
from bazar.config import ADMIN_TOKEN_ENV, CLUSTER_FILE, CLUSTER_SECRET_ENV, Cluster, load_cluster


class FakeSupervisor:
    """Stands in for `Supervisor`: remembers the cluster it was given and starts nothing."""

    started: ClassVar[list[Cluster]] = []
    demo: ClassVar[list[bool]] = []

    def __init__(
        self,
        cluster: Cluster,
        cluster_file: Path,
        *,
        restart: bool,
        log_format: str = "text",
        demo: bool = False,
    ) -> None:
        assert cluster_file.exists()
        self.cluster = cluster
        FakeSupervisor.demo.append(demo)

    def run(self) -> int:
        FakeSupervisor.started.append(self.cluster)
        return 0


@pytest.fixture
def no_secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    monkeypatch.delenv(CLUSTER_SECRET_ENV, raising=False)


@pytest.fixture
def fake_supervisor(monkeypatch: pytest.MonkeyPatch, no_secrets_in_env: None) -> None:
    monkeypatch.setattr(supervisor, "Supervisor", FakeSupervisor)
    FakeSupervisor.started.clear()
    FakeSupervisor.demo.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def up(data_dir: Path, *arguments: str) -> int:
    return cli.run(["up", "--data-dir", str(data_dir), "--port", str(free_port()), *arguments])


# ---------------------------------------------------------------- bazar up --min-in-sync


@pytest.mark.usefixtures("fake_supervisor")
def test_up_writes_min_in_sync_to_the_cluster_file(tmp_path: Path) -> None:
    assert (
        up(tmp_path, "--catalog-replicas", "3", "--order-replicas", "3", "--min-in-sync", "2") == 0
    )
    written = load_cluster(tmp_path / CLUSTER_FILE)
    assert written.min_in_sync == 2
    assert "min_in_sync = 2" in (tmp_path / CLUSTER_FILE).read_text()
    assert FakeSupervisor.started == [written]


@pytest.mark.usefixtures("fake_supervisor")
def test_up_defaults_to_one_replica_in_sync(tmp_path: Path) -> None:
    assert up(tmp_path) == 0
    assert load_cluster(tmp_path / CLUSTER_FILE).min_in_sync == 1


@pytest.mark.usefixtures("fake_supervisor")
def test_up_warns_when_min_in_sync_exceeds_a_service_s_replicas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert up(tmp_path, "--order-replicas", "1", "--min-in-sync", "2") == 0
    assert "writes are refused until replicas are added" in capsys.readouterr().err
    assert load_cluster(tmp_path / CLUSTER_FILE).min_in_sync == 2


@pytest.mark.usefixtures("fake_supervisor")
@pytest.mark.parametrize("value", ["0", "-1", "1.5", "two"])
def test_up_refuses_a_min_in_sync_below_one_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        up(tmp_path, "--min-in-sync", value)
    assert exited.value.code == 2
    assert "--min-in-sync" in capsys.readouterr().err
    assert FakeSupervisor.started == []


@pytest.mark.usefixtures("fake_supervisor")
def test_a_cluster_file_with_min_in_sync_below_one_is_refused(tmp_path: Path) -> None:
    assert up(tmp_path) == 0
    path = tmp_path / CLUSTER_FILE
    path.write_text("min_in_sync = 0\n" + path.read_text())  # top level, before any table
    with pytest.raises(msgspec.ValidationError, match="min_in_sync must be at least 1"):
        load_cluster(path)


# ---------------------------------------------------------------- [limits] replicas_max


@pytest.mark.usefixtures("fake_supervisor")
def test_up_writes_replicas_max_to_the_cluster_file(tmp_path: Path) -> None:
    assert up(tmp_path / "default") == 0
    assert load_cluster(tmp_path / "default" / CLUSTER_FILE).limits.replicas_max == 9
    assert up(tmp_path / "three", "--replicas-max", "3") == 0
    assert load_cluster(tmp_path / "three" / CLUSTER_FILE).limits.replicas_max == 3


@pytest.mark.usefixtures("fake_supervisor")
@pytest.mark.parametrize(
    "arguments",
    [("--catalog-replicas", "10"), ("--order-replicas", "4", "--replicas-max", "3")],
    ids=["catalog-10", "order-4-of-3"],
)
def test_up_refuses_more_replicas_than_replicas_max_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: tuple[str, ...]
) -> None:
    assert up(tmp_path, *arguments) == 2
    assert "more than limits.replicas_max" in capsys.readouterr().err
    assert FakeSupervisor.started == []
    assert not (tmp_path / CLUSTER_FILE).exists()


@pytest.mark.usefixtures("fake_supervisor")
@pytest.mark.parametrize(
    "arguments",
    [("--replicas-max", "0"), ("--catalog-replicas", "0"), ("--order-replicas", "-1")],
    ids=["replicas-max-0", "catalog-0", "order-minus-1"],
)
def test_up_refuses_counts_below_one_as_a_usage_error(
    tmp_path: Path, arguments: tuple[str, ...]
) -> None:
    with pytest.raises(SystemExit) as exited:
        up(tmp_path, *arguments)
    assert exited.value.code == 2
    assert FakeSupervisor.started == []


@pytest.mark.usefixtures("fake_supervisor")
@pytest.mark.parametrize(
    ("replicas_max", "error"),
    [(1, "catalog lists 2 replicas, more than limits.replicas_max = 1"), (0, "at least 1")],
)
def test_a_cluster_file_beyond_its_replicas_max_is_refused(
    tmp_path: Path, replicas_max: int, error: str
) -> None:
    assert up(tmp_path, "--replicas-max", "2") == 0
    path = tmp_path / CLUSTER_FILE
    text = path.read_text()
    assert "replicas_max = 2" in text
    path.write_text(text.replace("replicas_max = 2", f"replicas_max = {replicas_max}"))
    with pytest.raises(msgspec.ValidationError, match=error):
        load_cluster(path)


# ---------------------------------------------------------------- bazar up --demo


@pytest.mark.usefixtures("fake_supervisor")
def test_up_turns_the_teaching_console_on_only_with_demo(tmp_path: Path) -> None:
    assert up(tmp_path / "plain") == 0
    assert up(tmp_path / "demo", "--demo") == 0
    assert FakeSupervisor.demo == [False, True]


# ---------------------------------------------------------------- replica add|remove, switchover


class Recorder:
    """Stands in for a client command: records its arguments, returns a given status."""

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        self.calls.append((args, kwargs))
        return self.status


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch, no_secrets_in_env: None) -> dict[str, Recorder]:
    recorders = {"add": Recorder(), "remove": Recorder(1), "switchover": Recorder(3)}
    monkeypatch.setattr(client, "replica_add_command", recorders["add"])
    monkeypatch.setattr(client, "replica_remove_command", recorders["remove"])
    monkeypatch.setattr(client, "switchover_command", recorders["switchover"])
    return recorders


def test_replica_add_passes_its_options_and_returns_the_client_s_status(
    tmp_path: Path, commands: dict[str, Recorder]
) -> None:
    (tmp_path / "admin.token").write_text("from-file\n")
    argv = ["replica", "add", "order", "--replica-url", "http://10.0.0.7:8006"]
    argv += ["--url", "http://127.0.0.1:9002", "--data-dir", str(tmp_path), "--timeout", "5"]
    assert cli.run([*argv, "--json"]) == 0
    assert commands["add"].calls == [
        (
            ("http://127.0.0.1:9002", "order"),
            {
                "replica_url": "http://10.0.0.7:8006",
                "token": "from-file",
                "timeout_s": 5.0,
                "as_json": True,
            },
        )
    ]


def test_replica_remove_and_switchover_default_to_the_local_front_end(
    tmp_path: Path, commands: dict[str, Recorder]
) -> None:
    (tmp_path / "admin.token").write_text("from-file\n")
    assert cli.run(["replica", "remove", "catalog", "catalog-2", "--data-dir", str(tmp_path)]) == 1
    assert cli.run(["switchover", "order", "--to", "order-2", "--data-dir", str(tmp_path)]) == 3
    defaults = {"token": "from-file", "timeout_s": client.MEMBERSHIP_TIMEOUT_S, "as_json": False}
    assert commands["remove"].calls == [((client.DEFAULT_URL, "catalog", "catalog-2"), defaults)]
    assert commands["switchover"].calls == [
        ((client.DEFAULT_URL, "order"), {"to": "order-2", **defaults})
    ]


def test_the_admin_token_comes_from_the_environment_before_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commands: dict[str, Recorder]
) -> None:
    (tmp_path / "admin.token").write_text("from-file\n")
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "from-env")
    assert cli.run(["switchover", "catalog", "--data-dir", str(tmp_path)]) == 3
    assert commands["switchover"].calls[0][1]["token"] == "from-env"


@pytest.mark.parametrize("content", [None, "", "\n"], ids=["no-file", "empty", "blank"])
def test_no_admin_token_reaches_the_client_as_none(
    tmp_path: Path, commands: dict[str, Recorder], content: str | None
) -> None:
    if content is not None:
        (tmp_path / "admin.token").write_text(content)
    assert cli.run(["switchover", "catalog", "--data-dir", str(tmp_path)]) == 3
    assert commands["switchover"].calls[0][1]["token"] is None


def test_an_unreadable_admin_token_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], commands: dict[str, Recorder]
) -> None:
    (tmp_path / "admin.token").mkdir()
    assert cli.run(["replica", "add", "catalog", "--data-dir", str(tmp_path)]) == 2
    assert "cannot read the admin token" in capsys.readouterr().err
    assert commands["add"].calls == []


@pytest.mark.parametrize(
    "argv",
    [
        ["replica", "add", "books"],
        ["replica", "add"],
        ["replica", "remove", "catalog"],
        ["replica", "move", "catalog"],
        ["switchover"],
        ["switchover", "catalog", "--timeout", "0"],
        ["switchover", "catalog", "--timeout", "-5"],
        ["switchover", "catalog", "--timeout", "soon"],
        ["switchover", "catalog", "--timeout", "nan"],
    ],
    ids=" ".join,
)
def test_bad_membership_arguments_are_usage_errors(
    commands: dict[str, Recorder], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.run(argv)
    assert exited.value.code == 2
    assert all(not recorder.calls for recorder in commands.values())
