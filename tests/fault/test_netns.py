"""Every process on a host of its own: one cluster file runs the service across network
namespaces, and it goes on when a replica is cut off the network (docs/contract.md §4
`bazar serve`, docs/contract.md §5 "beyond one machine", docs/contract.md §3.5).

Goal: the test fails if `bazar serve` cannot run the front end and the four replicas on
separate hosts, each at the address the cluster file gives it; if, once the catalog primary's
link goes down, a read fails, writes do not resume without it, or `/cluster` does not list it
down with another primary in a newer epoch; if, once its link is back, it does not rejoin in
sync; or if, after the load, an acknowledged purchase is lost, a key sold twice, orders differ
from sales, the stock is not linearizable or the live replicas differ.

Method: as root, `bazar.testing.netns` makes a bridge and one namespace per process, each
joined by a veth pair and at its own address of a private 10.213.X.0/24 that exists only in
these namespaces (and on the bridge, through which the test process reaches them). One
cluster file names those addresses, with the seed's ports; each process is
`ip netns exec NS python -m bazar serve ...` (`bazar.testing.cluster.ServedCluster`): the
replicas listen at their address from the file, the front end on 0.0.0.0 (`--host`) as in a
container. The failover harness (`bazar.testing.harness`, `clients`) buys and reads through
the front end: 8 buyers retrying their keys, 4 readers, a Jepsen-shaped history. The cut is
`ip link set <veth> down` on the root side of the primary's pair: nothing reaches it, it
reaches nothing. Waits are deadlines on observable conditions (writes resumed, the view);
no latency is asserted. Skipped when namespaces cannot be made (not root, no iproute2, no
permission). Everything made is removed by the context managers, processes first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bazar.config import Cluster as Plan
from bazar.config import Node, ReplicatedTier, Tier, write_cluster
from bazar.testing import netns
from bazar.testing.clients import Ledger, hold_load_until, wait_for_acks
from bazar.testing.cluster import ServedCluster
from bazar.testing.harness import (
    STOCKS,
    TOPIC,
    Nemesis,
    check_after_load,
    check_reads,
    describe_windows,
    expect,
    failover_load,
    listed,
    recorded,
    replica_in_role,
    wait_dropped,
    wait_writes_resume,
    windows,
)
from bazar.testing.workload import write_catalog

# The seed's processes and ports; each host has its own address, so every one keeps its port.
PROCESSES: dict[str, tuple[Tier, int]] = {
    "frontend": ("frontend", 8002),
    "catalog-1": ("catalog", 8003),
    "catalog-2": ("catalog", 8004),
    "order-1": ("order", 8001),
    "order-2": ("order", 8005),
}
ACKS_BEFORE_CUT = 50
ACKS_AFTER_HEAL = 50
LOAD_AFTER_CUT_S = 2.0
REJOIN_DEADLINE_S = 10.0


def plan(directory: Path, hosts: dict[str, netns.Host]) -> Plan:
    """The one cluster file: every process at its host's address."""
    nodes = {
        name: Node(name=name, tier=tier, host=hosts[name].address, port=port)
        for name, (tier, port) in PROCESSES.items()
    }

    def tier_nodes(tier: ReplicatedTier) -> tuple[Node, ...]:
        return tuple(node for node in nodes.values() if node.tier == tier)

    catalog = write_catalog(directory / "catalog.json", STOCKS, TOPIC)
    return Plan(
        data_dir=str(directory / "data"),
        frontend=nodes["frontend"],
        catalog=tier_nodes("catalog"),
        order=tier_nodes("order"),
        catalog_file=str(catalog),
    )


@contextlib.contextmanager
def cluster_on_hosts(
    directory: Path, network: netns.Network, ledger: Ledger
) -> Iterator[tuple[ServedCluster, dict[str, netns.Host]]]:
    """Each process in a namespace of its own, from one cluster file, every replica in sync."""
    hosts = {name: network.add_host() for name in PROCESSES}
    config = directory / "cluster.toml"
    write_cluster(plan(directory, hosts), config)
    cluster = ServedCluster(
        config,
        prefixes={name: host.prefix for name, host in hosts.items()},
        hosts={"frontend": "0.0.0.0"},
    )
    with cluster, recorded(cluster, directory, ledger):
        yield cluster, hosts


@pytest.fixture
def network() -> Iterator[netns.Network]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"cannot run processes on hosts of their own: {reason}")
    with netns.Network() as made:
        yield made


def test_each_process_on_its_own_host_and_a_cut_off_primary_costs_no_read(
    tmp_path: Path, network: netns.Network
) -> None:
    """Five namespaces, one cluster file: buys and reads through the front end; the catalog
    primary's link down under load: no read fails, writes resume on the promoted backup, it is
    listed down; its link up: it rejoins as an in-sync backup; nothing lost, replicas equal."""
    ledger = Ledger()
    with cluster_on_hosts(tmp_path, network, ledger) as (cluster, hosts):
        for name, host in hosts.items():
            assert cluster.processes[name].pid in network.pids(host), f"{name} not in its host"
        info = cluster.cluster_info()
        for replica in (*info["catalog"]["replicas"], *info["order"]["replicas"]):
            url = urlsplit(replica["url"])
            assert url.hostname == hosts[replica["name"]].address, replica
            assert cluster.request("GET", "/health", base=replica["url"])[0] == 200, replica
        nemesis = Nemesis(cluster)
        name = replica_in_role(cluster, "catalog", "primary")
        epoch = info["catalog"]["epoch"]
        with failover_load(cluster, ledger):
            wait_for_acks(ledger, ACKS_BEFORE_CUT, 0.0, "before the cut")
            cut = nemesis.mark(f"{name}'s link down")
            network.cut(hosts[name])
            resumed_s = wait_writes_resume(ledger, cut)
            view = wait_dropped(cluster, name, epoch, primary=True)
            hold_load_until(cut.at_s + LOAD_AFTER_CUT_S, "the load after the cut")
            healed = nemesis.mark(f"{name}'s link up")
            network.heal(hosts[name])
            expect(
                lambda: listed(cluster, name, ("in_sync",), epoch_above=view["epoch"]),
                REJOIN_DEADLINE_S,
                f"{name} in sync again once its link is up, in an epoch above {view['epoch']}",
                lambda: str(cluster.cluster_info()["catalog"]),
            )
            wait_for_acks(ledger, ACKS_AFTER_HEAL, healed.at_s, "since the link came back")
        print(f"{cut.what}: first acknowledgement +{resumed_s:.3f} s; view {view}")
        print(describe_windows(windows(ledger, nemesis.events)))
        check_reads(ledger, nemesis.events)
        print(check_after_load(cluster, ledger))
