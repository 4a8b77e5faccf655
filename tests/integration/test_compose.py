"""The container files agree with the Compose specification and the cluster file
(docs/contract.md §5).

No Docker engine runs here, so nothing is built or started: `compose.yaml` is validated
against a pinned copy of the Compose specification's JSON schema (deploy/README.md says where
it comes from), and its services, the Dockerfile and `deploy/cluster.toml` are checked
against each other, each command parsed by `bazar`'s own argument parser.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bazar import cli
from bazar.config import ADMIN_TOKEN_ENV, CLUSTER_SECRET_ENV, Cluster, Node, load_cluster

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
CLUSTER_FILE = ROOT / "deploy" / "cluster.toml"
SCHEMA_FILE = ROOT / "deploy" / "compose-spec.schema.json"
SCHEMA_SHA256 = "89f4bdc4ba651ff024118917a7cdb67d9d78c1af4bab9b12ec2fc85f5b7d90d3"
IMAGE_CLUSTER_FILE = "/etc/bazar/cluster.toml"
"""Where the Dockerfile puts deploy/cluster.toml, and what every container serves from."""

SEED_SERVICES = {
    "feweb": 8002,
    "orderweb": 8001,
    "orderweb2": 8005,
    "catalogweb": 8003,
    "catalogweb2": 8004,
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_cluster(CLUSTER_FILE)


def serve_arguments(command: list[str]) -> argparse.Namespace:
    """A container's command as `bazar` parses it; it must be `bazar serve ...`."""
    assert command[0] == "bazar", command
    arguments = cli._parser().parse_args(command[1:])
    assert arguments.command == "serve", command
    return arguments


def container_ports(service: dict[str, Any]) -> set[int]:
    """The ports a service's container listens on, from `expose` and `ports` (short syntax)."""
    ports = {int(str(port).split("/")[0]) for port in service.get("expose", [])}
    for mapping in service.get("ports", []):
        ports.add(int(str(mapping).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_vendored_schema_is_the_pinned_compose_spec() -> None:
    """The schema is the pinned upstream copy, unedited, and a valid draft-07 schema."""
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(schema)


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(compose))
    assert not errors, [f"{list(error.path)}: {error.message}" for error in errors]


def test_schema_refuses_what_compose_refuses(compose: dict[str, Any]) -> None:
    """The validation is not vacuous: an unknown service key and a wrong type are refused."""
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA_FILE.read_text()))
    unknown_key = json.loads(json.dumps(compose))
    unknown_key["services"]["feweb"]["listen"] = "0.0.0.0"
    wrong_type = json.loads(json.dumps(compose))
    wrong_type["services"]["orderweb"]["expose"] = "8001"
    assert not validator.is_valid(unknown_key)
    assert not validator.is_valid(wrong_type)


def test_services_are_the_seeds_names_and_ports(compose: dict[str, Any]) -> None:
    ports = {name: container_ports(service) for name, service in compose["services"].items()}
    assert ports == {name: {port} for name, port in SEED_SERVICES.items()}


def test_every_process_of_the_cluster_file_has_its_service_and_no_other(
    compose: dict[str, Any], cluster: Cluster
) -> None:
    """Each container runs `bazar serve TIER --config <the cluster file> --name NAME` for the
    process that the cluster file puts at that service's name and port, and listens on every
    interface (its peers reach it by the service name)."""
    served: dict[str, Node] = {}
    for name, service in compose["services"].items():
        arguments = serve_arguments(service["command"])
        assert arguments.config == IMAGE_CLUSTER_FILE, name
        assert arguments.host == "0.0.0.0", name
        node = cluster.node(arguments.name)
        assert node.tier == arguments.tier, name
        assert node.host == name, f"{node.name} is at {node.host}, not the service {name}"
        assert container_ports(service) == {node.port}, name
        assert node.name not in served, f"{node.name} runs in {name} and {served[node.name]}"
        served[node.name] = node
    assert set(served) == {node.name for node in cluster.nodes()}


def test_each_container_keeps_its_data_in_a_volume_of_its_own(
    compose: dict[str, Any], cluster: Cluster
) -> None:
    volumes = set(compose["volumes"])
    sources = []
    for name, service in compose["services"].items():
        mounts = [str(mount).split(":") for mount in service["volumes"]]
        data = [source for source, target, *_ in mounts if target == cluster.data_dir]
        assert len(data) == 1, f"{name} mounts no volume (or several) at {cluster.data_dir}"
        assert data[0] in volumes, f"{name}: {data[0]} is not a named volume"
        sources.append(data[0])
    assert len(set(sources)) == len(sources)


def test_every_container_gets_the_same_required_secrets(compose: dict[str, Any]) -> None:
    """Without them each container would generate its own secret and none would trust another:
    compose refuses to start unless both variables are set (`${VAR:?...}`)."""
    environments = [service["environment"] for service in compose["services"].values()]
    for variable in (CLUSTER_SECRET_ENV, ADMIN_TOKEN_ENV):
        values = {environment[variable] for environment in environments}
        assert len(values) == 1, values
        assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]*\}}", values.pop())


def test_dockerfile_installs_from_the_lock_and_serves_from_the_cluster_file(
    cluster: Cluster,
) -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = [shlex.split(arguments) for keyword, arguments in instructions if keyword == "RUN"]
    lock_installs = [run for run in runs if run[:2] == ["pip", "install"] and "-r" in run]
    assert len(lock_installs) == 1
    assert "--require-hashes" in lock_installs[0]
    assert lock_installs[0][lock_installs[0].index("-r") + 1] == "requirements.lock"
    copies = [shlex.split(arguments) for keyword, arguments in instructions if keyword == "COPY"]
    assert any(copy[-2:] == ["deploy/cluster.toml", IMAGE_CLUSTER_FILE] for copy in copies)
    commands = [json.loads(arguments) for keyword, arguments in instructions if keyword == "CMD"]
    assert len(commands) == 1
    arguments = serve_arguments(commands[0])
    assert arguments.config == IMAGE_CLUSTER_FILE
    assert cluster.node(arguments.name).tier == arguments.tier
    assert not [keyword for keyword, _ in instructions if keyword == "ENTRYPOINT"]
